//! Types the gateway and the extension agree on. Pure data, no IO.
//!
//! - [`role`]: the Postgres roles a request can run as.
//! - [`claims`]: the JWT claims the gateway verifies and hands to Postgres in
//!   `request.jwt.claims`.
//! - [`notify`]: the payloads the extension sends on NOTIFY channels.
//! - [`error_code`]: stable machine codes carried beside the contract's `{"error": ...}`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod claims;
pub mod error_code;
pub mod notify;
pub mod role;

pub use claims::JwtClaims;
pub use role::Role;
