//! REST's errors are PostgREST's dialect of the gateway's errors.

pub use crate::error::postgrest::*;
