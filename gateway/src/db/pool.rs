//! The connection pools (deadpool over tokio-postgres, and the pipeline pool), their
//! connection settings, and the one check of whether Postgres answers.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::config::Config;

/// How long /health waits for Postgres before calling it unreachable.
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a request waits for a pooled connection before a 503.
pub const POOL_WAIT: Duration = Duration::from_secs(5);

/// Builds the pool. No connection is opened yet: the gateway starts (degraded)
/// even while Postgres is down, and connects once it is up.
pub fn pool(config: &Config) -> anyhow::Result<Pool> {
    let mut pg = pg_config(config)?;
    pg.application_name("pgstack");
    let mgr = Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Ok(Pool::builder(mgr)
        .max_size(config.db_pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(2)))
        .build()?)
}

/// The pipeline pool for REST requests ([`super::pipeline`]): same DATABASE_URL and
/// size as the main pool, connected lazily.
pub fn wire_pool(config: &Config) -> anyhow::Result<super::pipeline::WirePool> {
    // One shared connection per four cores: the fewer, the more pipelines each
    // wake-up of its backend serves (measured on 2 cores: 1 shared connection
    // 18.5–19.6k reads by key per second, 2: 15.2–15.8k, 4: 11.4–12.6k; none, 12.9k).
    super::pipeline::pool(pg_config(config)?, config.db_pool_size, crate::config::cores().div_ceil(4), config.response_max_bytes)
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
pub async fn ping(pool: &super::fair::FairPool<Pool>) -> bool {
    let attempt = async {
        let client = pool.get().await.ok()?;
        match client.simple_query("SELECT 1").await {
            Ok(_) => Some(()),
            Err(_) => {
                // Keep a dead connection out of the pool.
                let _ = deadpool_postgres::Object::take(client.into_parts().0);
                None
            }
        }
    };
    matches!(tokio::time::timeout(PING_TIMEOUT, attempt).await, Ok(Some(())))
}
