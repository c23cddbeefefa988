//! Stable machine codes that travel beside the contract's `{"error": "<message>"}`.
//!
//! REST uses PostgREST's codes (PGRSTnnn) or the SQLSTATE; auth uses GoTrue's
//! snake_case codes; the rest of the gateway uses the codes below.

/// An unknown route.
pub const NOT_FOUND: &str = "not_found";
/// PostgreSQL could not be reached.
pub const DATABASE_UNAVAILABLE: &str = "database_unavailable";
/// An unexpected failure; details are in the gateway's log, never in the response.
pub const INTERNAL: &str = "internal_error";
/// A request body or parameter that cannot be understood.
pub const BAD_REQUEST: &str = "bad_request";
