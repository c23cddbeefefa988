//! Pipeline connections in a pool: checking one out for a request ([`Lease`]) and
//! getting it back in step when the request ended before its pipeline did.

use std::time::Duration;

use super::WireConn;

/// A pipeline connection checked out for one request. When the request ends before
/// its pipeline did (the client went away, a timeout), dropping the lease cancels
/// the statement and waits for the backend to be idle *while the connection stays
/// checked out*: the pool cannot open a replacement beside a backend that is still
/// busy, so the gateway never holds more backends than its pool size.
pub struct Lease(Option<deadpool::managed::Object<WireManager>>);

impl Lease {
    /// Takes a connection from `pool`.
    pub async fn get(pool: &WirePool) -> Result<Lease, deadpool::managed::PoolError<std::io::Error>> {
        Ok(Lease(Some(pool.leased.get().await?)))
    }
}

impl std::ops::Deref for Lease {
    type Target = WireConn;
    fn deref(&self) -> &WireConn {
        self.0.as_ref().expect("lease holds its connection until dropped")
    }
}

impl std::ops::DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut WireConn {
        self.0.as_mut().expect("lease holds its connection until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(mut obj) = self.0.take() else { return };
        if obj.is_usable() {
            return; // back to the pool
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            if !obj.recover().await {
                tracing::debug!("closing a pipeline connection that could not be recovered");
                drop(deadpool::managed::Object::take(obj));
            }
        });
    }
}

/// deadpool manager for [`WireConn`].
pub struct WireManager {
    config: tokio_postgres::Config,
    max_message: usize,
}

impl deadpool::managed::Manager for WireManager {
    type Type = WireConn;
    type Error = std::io::Error;

    async fn create(&self) -> Result<WireConn, std::io::Error> {
        let mut c = WireConn::connect(&self.config).await?;
        c.max_message = self.max_message;
        Ok(c)
    }

    async fn recycle(&self, conn: &mut WireConn, _: &deadpool::managed::Metrics) -> deadpool::managed::RecycleResult<std::io::Error> {
        if conn.is_usable() {
            Ok(())
        } else {
            Err(deadpool::managed::RecycleError::message("connection interrupted mid-request"))
        }
    }
}

/// The pipeline connections: a few shared by many requests' pipelines
/// ([`super::mux`]), the rest leased to one request at a time.
#[derive(Clone)]
pub struct WirePool {
    /// Connections leased one request at a time.
    pub leased: deadpool::managed::Pool<WireManager>,
    /// Shared connections.
    pub shared: std::sync::Arc<super::mux::MuxSet>,
}

/// Builds the pool (lazily connected) from the same settings as the main pool:
/// `size` connections in all, of which `shared` are shared (at most half).
/// `max_message`: the largest result message (one row) read into memory.
pub fn pool(config: tokio_postgres::Config, size: usize, shared: usize, max_message: usize) -> anyhow::Result<WirePool> {
    let shared = shared.min(size / 2);
    let leased = deadpool::managed::Pool::builder(WireManager { config: config.clone(), max_message })
        .max_size(size - shared)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(crate::db::POOL_WAIT))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(2)))
        .build()?;
    Ok(WirePool { leased, shared: super::mux::MuxSet::new(config, shared, max_message) })
}
