//! Auth's errors are GoTrue's dialect of the gateway's errors.

pub use crate::error::gotrue::*;
