//! The floor every product stands on: connection pools, the pipeline client of the
//! REST hot path, running statements as the caller, the one SQLSTATE → HTTP table,
//! and SQL text built from quoted identifiers and bind parameters only.
//!
//! - [`pool`]: the pools (requests, REST pipeline, REST transactions) and `/health`'s ping.
//! - [`guarded`]: a pooled connection that cancels its statement if abandoned.
//! - [`pipeline`]: one round trip per request (setup + statement under one Sync).
//! - [`caller`]: the role, claims and `request.*` settings of a transaction.
//! - [`classify`]: what a piece of SQL is (one statement; a read or not), by PostgreSQL's parser.
//! - [`fair`]: fair shares of a pool among clients under contention.
//! - [`error`]: [`DbError`] and [`error::http_status`].
//! - [`schema_cache`]: the tables, columns, keys, functions and types of the exposed schemas.
//! - [`sql`]: the statement builder, identifier quoting.
//!
//! Nothing here knows a product; products (rest, auth, storage, ...) import from here.

pub mod caller;
pub mod classify;
pub mod error;
pub mod fair;
pub mod guarded;
pub mod pipeline;
pub mod pool;
pub mod schema_cache;
pub mod sql;

pub use caller::RequestInfo;
pub use error::DbError;
pub use guarded::Guarded;
pub use pool::{pg_config, ping, pool, wire_pool, PING_TIMEOUT, POOL_WAIT};
