//! Cross-cutting HTTP layers: request ids and access logs.

pub mod trace;
