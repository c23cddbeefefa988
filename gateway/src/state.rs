//! Shared state handed to every handler.

use std::sync::Arc;

use crate::auth::mailer::Mailer;
use crate::config::Config;
use crate::db::fair::FairPool;
use crate::db::schema_cache::CacheHandle;

/// Cheap to clone (one reference count): handlers' extractors clone it on every
/// request.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What every handler shares.
pub struct Shared {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Connections as the gateway's login role (every pool gives each client a fair
    /// share once all its connections are taken: `db::fair`).
    pub pool: FairPool<deadpool_postgres::Pool>,
    /// Pipeline connections (same role) for REST's one-round-trip requests.
    pub wire: FairPool<crate::db::pipeline::WirePool>,
    /// Connections for REST's multi-statement transactions (batch, `tx=rollback`,
    /// max-affected): REST's own, so slow REST work never starves auth, storage or
    /// /health on `pool`.
    pub rest_tx: FairPool<deadpool_postgres::Pool>,
    /// Tables, views and functions of the exposed schemas.
    pub schema_cache: CacheHandle,
    /// Outgoing e-mail.
    pub mailer: Mailer,
    /// WebSocket fan-out.
    pub hub: Arc<crate::realtime::hub::Hub>,
    /// Supabase Realtime channels joined on this gateway.
    pub channels: Arc<crate::channels::registry::Registry>,
    /// Where webhooks may go.
    pub webhook_policy: Arc<crate::ssrf::Policy>,
    /// Where object content lives.
    pub storage_backend: crate::storage::backend::Backend,
    /// Edge functions catalog.
    pub functions: Arc<crate::functions::Catalog>,
    /// The Deno worker.
    pub deno: Arc<crate::functions::deno::DenoWorker>,
    /// HTTP client to the Deno worker (loopback).
    pub functions_http: reqwest::Client,
    /// OAuth providers' HTTP client and discovery cache.
    pub oauth: Arc<crate::auth::oauth::client::OAuthRuntime>,
    /// The SQL workbench's pools, sessions and cache.
    pub workbench: Arc<crate::workbench::Workbench>,
    /// The agent API's per-token database selections.
    pub agent: crate::agent::Agent,
}

impl AppState {
    /// Builds the state from a configuration and a pool.
    pub fn new(config: Config, pool: deadpool_postgres::Pool, wire: crate::db::pipeline::WirePool, rest_tx: deadpool_postgres::Pool, mailer: Mailer) -> Self {
        let config_queue = config.ws_client_queue;
        let config_backend_disk = config.storage_backend == "disk";
        let config_root = config.storage_root.clone();
        let config_workbench = config.workbench.clone();
        let workbench_db = pool.clone();
        let agent_state = crate::agent::Agent::new(&config);
        let deno = Arc::new(crate::functions::deno::DenoWorker::new(config.deno_path.clone(), config.function_memory_mb).expect("a temporary folder for function modules"));
        let webhook_policy =
            Arc::new(crate::ssrf::Policy { allow_private: config.webhook_allow_private, allowed_hosts: config.webhook_allowed_hosts.clone(), setting: "WEBHOOK_ALLOWED_HOSTS" });
        let fair = |size| (size, crate::db::POOL_WAIT);
        let (size, wait) = fair(config.db_pool_size);
        // The pipeline pool's gate is as wide as its leased connections: reads on the
        // shared ones need no place.
        let leased = wire.leased.status().max_size;
        let (pool, wire, rest_tx) = (FairPool::new(pool, size, wait), FairPool::new(wire, leased, wait), FairPool::new(rest_tx, size, wait));
        AppState(Arc::new(Shared {
            config: Arc::new(config),
            pool,
            wire,
            rest_tx,
            schema_cache: CacheHandle::default(),
            hub: crate::realtime::hub::Hub::new(config_queue),
            channels: crate::channels::registry::Registry::new(),
            webhook_policy,
            functions: Arc::new(crate::functions::Catalog::default()),
            deno,
            functions_http: reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().expect("HTTP client"),
            storage_backend: if config_backend_disk {
                crate::storage::backend::Backend::Disk(std::path::PathBuf::from(&config_root))
            } else {
                crate::storage::backend::Backend::Database
            },
            mailer,
            oauth: Arc::new(crate::auth::oauth::client::OAuthRuntime::new()),
            workbench: crate::workbench::Workbench::new(&config_workbench, workbench_db),
            agent: agent_state,
        }))
    }
}
