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
    let mut pg: tokio_postgres::Config = config.database_url.parse()?;
    pg.application_name("pgstack");
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(Duration::from_secs(3));
    }
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
    let mut pg: tokio_postgres::Config = config.database_url.parse()?;
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(Duration::from_secs(3));
    }
    crate::pgwire::pool(pg, config.db_pool_size)
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
