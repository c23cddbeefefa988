//! The SQL workbench: the backends of database tools on the gateway, each at its
//! seed's base path — the Rowsel proxy (`/proxy`, seed 003), Poge (`/poge/api`,
//! seed 000) and the saved database configurations (`/api/database-configs`,
//! `/api/db`, seed 001).
//!
//! request → [`access`] (enabled, credential grants it) → body → [`target`] (which
//! server, checked by the SSRF policy in [`pools`]) → [`crate::db::classify`] (PostgreSQL's
//! parser decides what the SQL is) → [`run`] (read-only transaction, timeout,
//! paging) → the product's answer, errors in its dialect ([`error`]).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use serde::de::DeserializeOwned;

pub mod access;
pub mod allowed;
pub mod cache;
pub mod configs;
pub mod error;
pub mod poge;
pub mod pools;
pub mod proxy;
pub mod run;
pub mod schema;
pub mod sessions;
pub mod target;
pub mod tunnel;

use crate::config::workbench::WorkbenchConfig;
use crate::AppState;
use error::WbError;

/// The workbench's shared parts.
pub struct Workbench {
    /// Its settings.
    pub cfg: WorkbenchConfig,
    /// One pool per target.
    pub pools: Arc<pools::Pools>,
    /// Open sessions.
    pub sessions: sessions::Sessions,
    /// Poge's read cache.
    pub cache: cache::ReadCache,
    /// Requests served at once (WORKBENCH_CONCURRENCY).
    pub running: Arc<tokio::sync::Semaphore>,
}

impl Workbench {
    /// From the settings; `db` is the gateway's own database (remembered host keys).
    pub fn new(cfg: &WorkbenchConfig, db: deadpool_postgres::Pool) -> Arc<Workbench> {
        Arc::new(Workbench {
            pools: pools::Pools::new(cfg, Arc::new(DbKnownHosts(db))),
            sessions: sessions::Sessions::new(cfg.max_sessions, Duration::from_secs(cfg.session_idle_secs)),
            cache: cache::ReadCache::new(Duration::from_secs(cfg.cache_ttl_secs), cfg.cache_max_bytes),
            running: Arc::new(tokio::sync::Semaphore::new(cfg.concurrency)),
            cfg: cfg.clone(),
        })
    }
}

/// SSH host keys remembered in `workbench.known_hosts`.
struct DbKnownHosts(deadpool_postgres::Pool);

impl DbKnownHosts {
    async fn run(&self, host: &str, port: u16, remember: Option<&str>) -> Result<Option<String>, String> {
        let mut c = self.0.get().await.map_err(|e| e.to_string())?;
        let tx = c.transaction().await.map_err(|e| e.to_string())?;
        tx.batch_execute("SET LOCAL ROLE pgstack_workbench_admin").await.map_err(|e| e.to_string())?;
        let port = i32::from(port);
        if let Some(fp) = remember {
            tx.execute("insert into workbench.known_hosts (host, port, fingerprint) values ($1, $2, $3) on conflict do nothing", &[&host, &port, &fp])
                .await
                .map_err(|e| e.to_string())?;
        }
        let row = tx.query_opt("select fingerprint from workbench.known_hosts where host = $1 and port = $2", &[&host, &port]).await.map_err(|e| e.to_string())?;
        tx.commit().await.map_err(|e| e.to_string())?;
        Ok(row.map(|r| r.get(0)))
    }
}

impl tunnel::KnownHosts for DbKnownHosts {
    fn get(&self, host: &str, port: u16) -> futures_util::future::BoxFuture<'_, Result<Option<String>, String>> {
        let host = host.to_owned();
        Box::pin(async move { self.run(&host, port, None).await })
    }
    fn remember(&self, host: &str, port: u16, fingerprint: &str) -> futures_util::future::BoxFuture<'_, Result<String, String>> {
        let (host, fp) = (host.to_owned(), fingerprint.to_owned());
        Box::pin(async move { self.run(&host, port, Some(&fp)).await?.ok_or_else(|| "the key was not kept".to_owned()) })
    }
}

/// Every workbench route, behind the access check.
pub fn routes(state: &AppState) -> Router<AppState> {
    let gate = axum::middleware::from_fn_with_state(state.clone(), access::gate);
    Router::new().nest("/proxy", proxy::routes()).nest("/poge/api", poge::routes()).nest("/api", configs::routes()).route_layer(gate)
}

/// Closes idle connections, pools and sessions every few seconds.
pub fn spawn(state: &AppState) {
    if !state.config.workbench.enabled {
        return;
    }
    let wb = state.workbench.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            wb.pools.reap();
            wb.sessions.reap();
        }
    });
}

/// A JSON response serialized straight from `body`.
pub fn json_response<T: serde::Serialize>(status: axum::http::StatusCode, body: &T) -> axum::response::Response {
    use axum::response::IntoResponse;
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(axum::http::header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => {
            WbError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "ERR_INTERNAL", format!("cannot render the answer: {e}")).respond(crate::error::Dialect::for_path("/proxy"))
        }
    }
}

/// A JSON body, or a clear 400.
pub fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, WbError> {
    if body.is_empty() {
        return Err(WbError::invalid("a JSON body is required"));
    }
    serde_json::from_slice(body).map_err(|e| WbError::invalid(format!("invalid JSON body: {e}")))
}

/// `2025-12-17T00:00:00.000Z`.
pub fn iso8601(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (secs, ms) = (d.as_secs() as i64, d.subsec_millis());
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso_dates() {
        let at = |s: u64| super::iso8601(std::time::UNIX_EPOCH + std::time::Duration::from_millis(s));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(1_765_929_600_123), "2025-12-17T00:00:00.123Z");
        assert_eq!(at(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
