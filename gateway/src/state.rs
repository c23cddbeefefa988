//! Shared state handed to every handler.

use std::sync::Arc;

use crate::config::Config;

/// Cheap to clone: everything inside is shared.
#[derive(Clone)]
pub struct AppState {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Connections as the gateway's login role.
    pub pool: deadpool_postgres::Pool,
}

impl AppState {
    /// Builds the state from a configuration and a pool.
    pub fn new(config: Config, pool: deadpool_postgres::Pool) -> Self {
        AppState { config: Arc::new(config), pool }
    }
}
