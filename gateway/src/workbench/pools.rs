//! One pool per distinct target (server, database, user, password, TLS mode,
//! tunnel) with Poge's limits: WORKBENCH_POOL_SIZE clients (10), 5 s to connect,
//! connections idle for 30 s closed, a pool unused for 5 minutes dropped, at most
//! WORKBENCH_MAX_POOLS pools (the least recently used idle one makes room).
//!
//! The address is checked by the SSRF policy when the pool is made, and the pool
//! connects to that checked address only (no second DNS lookup can redirect it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use serde::Serialize;
use tokio_postgres::CancelToken;

use super::error::WbError;
use super::target::{Key, Target};
use super::tunnel::{KnownHosts, SshLink, TunnelConnect};
use crate::config::workbench::WorkbenchConfig;
use crate::error::code::workbench as code;
use crate::ssrf::Policy;

/// Time to open a connection (Poge: 5 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections are closed after this (Poge: 30 s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A pool nobody used for this long is dropped.
const POOL_IDLE: Duration = Duration::from_secs(300);

struct Entry {
    pool: Pool,
    label: String,
    cancel: CancelVia,
    last_used: Instant,
}

/// How a cancel request reaches the server: straight, or through the pool's tunnel.
#[derive(Clone)]
pub struct CancelVia {
    tls: postgres_native_tls::MakeTlsConnector,
    tunnel: Option<(Arc<SshLink>, String, u16)>,
}

/// Cancels one connection's running statement.
#[derive(Clone)]
pub struct Canceller {
    token: CancelToken,
    via: CancelVia,
}

impl Canceller {
    /// Sends PostgreSQL's cancel request (a connection of its own).
    pub async fn cancel(&self) -> Result<(), WbError> {
        let sent = async {
            match &self.via.tunnel {
                None => self.token.cancel_query(self.via.tls.clone()).await.map_err(|e| WbError::from_pg(&e)),
                Some((link, host, port)) => {
                    use tokio_postgres::tls::MakeTlsConnect;
                    let stream = link.stream(host, *port).await.map_err(|m| WbError::new(StatusCode::BAD_GATEWAY, code::SSH_TUNNEL_FAILED, m))?;
                    let mut tls = self.via.tls.clone();
                    let connector = <postgres_native_tls::MakeTlsConnector as MakeTlsConnect<russh::ChannelStream<russh::client::Msg>>>::make_tls_connect(&mut tls, host)
                        .map_err(|e| WbError::new(StatusCode::BAD_GATEWAY, code::DB_UNREACHABLE, e.to_string()))?;
                    self.token.cancel_query_raw(stream, connector).await.map_err(|e| WbError::from_pg(&e))
                }
            }
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, sent).await {
            Ok(r) => r,
            Err(_) => Err(WbError::new(StatusCode::BAD_GATEWAY, code::DB_UNREACHABLE, "the cancel request timed out").net("ETIMEDOUT")),
        }
    }
}

/// Every target's pool.
pub struct Pools {
    map: Mutex<HashMap<Key, Entry>>,
    known_hosts: Arc<dyn KnownHosts>,
    policy: Policy,
    max_pools: usize,
    pool_size: usize,
}

/// One pool's numbers.
#[derive(Debug, Serialize)]
pub struct PoolStats {
    /// `user@host:port/database`.
    pub key: String,
    /// Open connections.
    pub total: usize,
    /// Open connections not in use.
    pub idle: usize,
    /// Requests waiting for a connection.
    pub waiting: usize,
    /// Most connections.
    pub max: usize,
    /// Seconds since it was last used.
    #[serde(rename = "idleSeconds")]
    pub idle_seconds: u64,
}

impl Pools {
    /// Empty, with the settings' limits.
    pub fn new(cfg: &WorkbenchConfig, known_hosts: Arc<dyn KnownHosts>) -> Arc<Pools> {
        Arc::new(Pools {
            map: Mutex::new(HashMap::new()),
            known_hosts,
            policy: Policy { allow_private: cfg.allow_private, allowed_hosts: cfg.allowed_hosts.clone(), setting: "WORKBENCH_ALLOWED_HOSTS (or WORKBENCH_ALLOW_PRIVATE=true)" },
            max_pools: cfg.max_pools,
            pool_size: cfg.pool_size,
        })
    }

    /// A connection to `t`, from its pool (made on first use).
    pub async fn connect(&self, t: &Target) -> Result<Lease, WbError> {
        let key = t.key();
        let found = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.get_mut(&key).map(|e| {
                e.last_used = Instant::now();
                (e.pool.clone(), e.cancel.clone())
            })
        };
        let (pool, via) = match found {
            Some(p) => p,
            None => self.open(t, key).await?,
        };
        let got = pool.get().await;
        if got.is_err() && pool.status().size == 0 {
            // Never connected (wrong password, no such database, down): no pool kept.
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            if map.get(&key).is_some_and(|e| e.pool.status().size == 0) {
                if let Some(e) = map.remove(&key) {
                    e.pool.close();
                }
            }
        }
        let obj = match got {
            Ok(o) => o,
            Err(deadpool_postgres::PoolError::Backend(e)) => return Err(WbError::from_pg(&e)),
            Err(deadpool_postgres::PoolError::Timeout(deadpool::managed::TimeoutType::Create)) => {
                return Err(WbError::new(StatusCode::BAD_GATEWAY, code::DB_UNREACHABLE, "Connection timed out").net("ETIMEDOUT"))
            }
            Err(deadpool_postgres::PoolError::Timeout(_)) => {
                return Err(WbError::new(StatusCode::SERVICE_UNAVAILABLE, code::CAPACITY, "every connection to this database is busy").hint("Retry shortly."))
            }
            Err(e) => return Err(WbError::new(StatusCode::BAD_GATEWAY, code::DB_UNREACHABLE, format!("cannot connect: {e}")).net("ECONNRESET")),
        };
        let canceller = Canceller { token: obj.cancel_token(), via };
        // Busy until the handler says its work ended cleanly: a lease dropped early (an
        // error mid-way, the client gone) is closed, never pooled in an unknown state.
        Ok(Lease { obj: Some(obj), canceller, busy: true })
    }

    /// The checked address of `host:port`.
    async fn resolve(&self, host: &str, port: u16) -> Result<std::net::SocketAddr, WbError> {
        let addrs = match tokio::time::timeout(CONNECT_TIMEOUT, self.policy.resolve(host, port)).await {
            Err(_) => return Err(WbError::new(StatusCode::BAD_GATEWAY, code::DB_UNREACHABLE, format!("resolving {host} timed out")).net("ENOTFOUND")),
            Ok(Err(e)) if e.starts_with("cannot resolve") => return Err(WbError::new(StatusCode::BAD_GATEWAY, code::DB_UNREACHABLE, e).net("ENOTFOUND")),
            Ok(Err(e)) => return Err(WbError::new(StatusCode::FORBIDDEN, code::TARGET_FORBIDDEN, e)),
            Ok(Ok(a)) => a,
        };
        addrs.first().copied().ok_or_else(|| WbError::new(StatusCode::BAD_GATEWAY, code::DB_UNREACHABLE, format!("{host} has no address")).net("ENOTFOUND"))
    }

    async fn open(&self, t: &Target, key: Key) -> Result<(Pool, CancelVia), WbError> {
        let tls = t.tls()?;
        // Fast: the statements themselves leave the connection clean (reads roll back
        // and release advisory locks, other statements are followed by a reset, see
        // `run`), and the statement cache survives for repeated reads.
        let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let (mgr, via) = match t.tunnel_spec()? {
            None => {
                let addr = self.resolve(&t.host, t.port).await?;
                (Manager::from_config(t.pg_config(addr, CONNECT_TIMEOUT), tls.clone(), manager_config), CancelVia { tls: tls.clone(), tunnel: None })
            }
            Some(spec) => {
                // The bastion is checked like any target; the database behind it is
                // reached as the bastion sees it.
                let addr = self.resolve(&spec.host, spec.port).await?;
                let link = SshLink::open(&spec, addr, self.known_hosts.as_ref()).await?;
                let connect = TunnelConnect { link: link.clone(), db_host: t.host.clone(), db_port: t.port, tls: tls.clone() };
                let via = CancelVia { tls: tls.clone(), tunnel: Some((link, t.host.clone(), t.port)) };
                (Manager::from_connect(t.pg_config_tunnelled(CONNECT_TIMEOUT), connect, manager_config), via)
            }
        };
        let pool = Pool::builder(mgr)
            .max_size(self.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(CONNECT_TIMEOUT + Duration::from_secs(1)))
            .recycle_timeout(Some(Duration::from_secs(2)))
            .build()
            .map_err(|e| WbError::new(StatusCode::INTERNAL_SERVER_ERROR, "ERR_INTERNAL", e.to_string()))?;
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = map.get_mut(&key) {
            // Another request made it meanwhile.
            e.last_used = Instant::now();
            return Ok((e.pool.clone(), e.cancel.clone()));
        }
        if map.len() >= self.max_pools {
            let victim = map.iter().filter(|(_, e)| e.pool.status().size == e.pool.status().available).min_by_key(|(_, e)| e.last_used).map(|(k, _)| *k);
            match victim {
                Some(k) => {
                    if let Some(e) = map.remove(&k) {
                        e.pool.close();
                    }
                }
                None => {
                    return Err(WbError::new(StatusCode::SERVICE_UNAVAILABLE, code::CAPACITY, format!("{} databases are in use at once (WORKBENCH_MAX_POOLS)", self.max_pools))
                        .hint("Retry shortly."))
                }
            }
        }
        map.insert(key, Entry { pool: pool.clone(), label: t.label(), cancel: via.clone(), last_used: Instant::now() });
        Ok((pool, via))
    }

    /// Closes idle connections and drops unused pools; called periodically.
    pub fn reap(&self) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, e| {
            e.pool.retain(|_, m| m.last_used() < IDLE_TIMEOUT);
            let s = e.pool.status();
            let keep = s.size > 0 || e.last_used.elapsed() < POOL_IDLE;
            if !keep {
                e.pool.close();
            }
            keep
        });
    }

    /// Every pool's numbers, busiest first.
    pub fn stats(&self) -> Vec<PoolStats> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<PoolStats> = map
            .values()
            .map(|e| {
                let s = e.pool.status();
                PoolStats { key: e.label.clone(), total: s.size, idle: s.available, waiting: s.waiting, max: s.max_size, idle_seconds: e.last_used.elapsed().as_secs() }
            })
            .collect();
        out.sort_by(|a, b| (b.total - b.idle).cmp(&(a.total - a.idle)).then(a.key.cmp(&b.key)));
        out
    }
}

/// A pooled connection in use. A lease dropped while a statement runs (the client
/// went away, the request timed out) cancels the statement on the server and
/// closes the connection instead of returning it mid-transaction to the pool.
pub struct Lease {
    obj: Option<Object>,
    /// Cancels the running statement.
    pub canceller: Canceller,
    busy: bool,
}

impl Lease {
    /// The client.
    pub fn client(&self) -> &deadpool_postgres::ClientWrapper {
        self.obj.as_ref().expect("a lease holds its connection until closed, and a closed session is never used")
    }

    /// Marks the start and end of work that leaves the connection in an unknown
    /// state if interrupted (a new lease is busy).
    pub fn set_busy(&mut self, busy: bool) {
        self.busy = busy;
    }

    /// The work ended with the connection in a known state: it may go back to the pool.
    pub fn done(&mut self) {
        self.busy = false;
    }

    /// Closes the connection instead of pooling it (its session state was changed).
    pub fn discard(mut self) {
        self.close();
    }

    /// Closes the connection now; the lease is empty afterwards.
    pub fn close(&mut self) {
        if let Some(o) = self.obj.take() {
            drop(Object::take(o));
        }
    }

    /// Whether the connection was closed.
    pub fn is_closed(&self) -> bool {
        self.obj.is_none()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.busy || self.obj.is_none() {
            return;
        }
        if let Some(o) = self.obj.take() {
            drop(Object::take(o));
        }
        let canceller = self.canceller.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        rt.spawn(async move {
            let _ = canceller.cancel().await;
        });
    }
}
