//! Functions in schema `pgr`: runtime helpers (live queries join them later).

use pgrx::prelude::*;

#[pg_schema]
mod pgr {
    use pgrx::prelude::*;

    /// The version of the installed extension build. The gateway compares it with
    /// its own to warn when `ALTER EXTENSION pgstack UPDATE` is due.
    #[pg_extern(immutable, parallel_safe)]
    fn version() -> &'static str {
        env!("CARGO_PKG_VERSION")
    }
}
