//! Cross-cutting HTTP layers and extractors: request ids, access logs, the caller.

pub mod body;
pub mod caller;
pub mod cors;
pub mod edge;
pub mod errors;
pub mod rate_limit;
pub mod server;
pub mod service;
pub mod timeout;
pub mod trace;
