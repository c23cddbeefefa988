//! The connection pool, and the one check of whether Postgres answers.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::config::Config;

/// How long /health waits for Postgres before calling it unreachable.
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Builds the pool. No connection is opened yet: the gateway starts (degraded)
/// even while Postgres is down, and connects once it is up.
pub fn pool(config: &Config) -> anyhow::Result<Pool> {
    let mut pg = pg_config(config)?;
    pg.application_name("pgstack");
    let mgr = Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Ok(Pool::builder(mgr)
        .max_size(config.db_pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(2)))
        .build()?)
}

/// The pipeline pool for REST requests ([`crate::pgwire`]): same DATABASE_URL and
/// size as the main pool, connected lazily.
pub fn wire_pool(config: &Config) -> anyhow::Result<crate::pgwire::WirePool> {
    crate::pgwire::pool(pg_config(config)?, config.db_pool_size, config.response_max_bytes)
}

/// DATABASE_URL with the gateway's connection defaults: a connect timeout, and
/// `client_connection_check_interval` so that a backend whose connection the gateway
/// closed stops its statement within a second instead of running on unattended.
pub fn pg_config(config: &Config) -> anyhow::Result<tokio_postgres::Config> {
    let mut pg: tokio_postgres::Config = config.database_url.parse()?;
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(Duration::from_secs(3));
    }
    let check = "-c client_connection_check_interval=1000";
    let options = match pg.get_options() {
        Some(o) if o.contains("client_connection_check_interval") => o.to_owned(),
        Some(o) => format!("{o} {check}"),
        None => check.to_owned(),
    };
    pg.options(&options);
    Ok(pg)
}

/// True when a pooled connection answers `SELECT 1` within [`PING_TIMEOUT`].
/// A broken connection is dropped here, so the next call dials afresh.
pub async fn ping(pool: &Pool) -> bool {
    let attempt = async {
        let client = pool.get().await.ok()?;
        match client.simple_query("SELECT 1").await {
            Ok(_) => Some(()),
            Err(_) => {
                // Keep a dead connection out of the pool.
                let _ = deadpool_postgres::Object::take(client);
                None
            }
        }
    };
    matches!(tokio::time::timeout(PING_TIMEOUT, attempt).await, Ok(Some(())))
}

/// A pooled connection for one request that may be abandoned mid-statement (the
/// client went away, a timeout). Dropped while armed, it cancels the running
/// statement and waits for the connection to be idle before it goes back to the
/// pool, so neither a runaway query nor a backend beyond the pool's size outlives the
/// request. [`Guarded::finish`] disarms it once the request's work is done.
pub struct Guarded {
    client: Option<deadpool_postgres::Object>,
    armed: bool,
}

impl Guarded {
    /// Takes a connection from `pool`.
    pub async fn get(pool: &Pool) -> Result<Guarded, deadpool_postgres::PoolError> {
        Ok(Guarded { client: Some(pool.get().await?), armed: true })
    }
    /// The work finished normally: the connection goes back as it is.
    pub fn finish(mut self) {
        self.armed = false;
    }
}

impl std::ops::Deref for Guarded {
    type Target = deadpool_postgres::Object;
    fn deref(&self) -> &Self::Target {
        self.client.as_ref().expect("held until dropped")
    }
}

impl std::ops::DerefMut for Guarded {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.client.as_mut().expect("held until dropped")
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else { return };
        if !self.armed || client.is_closed() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        rt.spawn(async move {
            let token = client.cancel_token();
            let _ = tokio::time::timeout(Duration::from_secs(5), token.cancel_query(NoTls)).await;
            // Queued behind the cancelled statement (and a dropped transaction's
            // ROLLBACK): once this answers, the backend is idle.
            if tokio::time::timeout(Duration::from_secs(10), client.simple_query("SELECT 1")).await.map(|r| r.is_ok()) != Ok(true) {
                drop(deadpool_postgres::Object::take(client));
            }
        });
    }
}
