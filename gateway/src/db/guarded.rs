//! A pooled connection that cancels its statement when the request is abandoned.

use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use tokio_postgres::NoTls;

use super::fair::{Fair, FairPool};

/// A pooled connection for one request that may be abandoned mid-statement (the
/// client went away, a timeout). Dropped while armed, it cancels the running
/// statement and waits for the connection to be idle before it goes back to the
/// pool, so neither a runaway query nor a backend beyond the pool's size outlives the
/// request. [`Guarded::finish`] disarms it once the request's work is done. Its place
/// in the pool's fair gate is given up only once the connection is back.
pub struct Guarded {
    client: Option<Fair<Object>>,
    armed: bool,
}

impl Guarded {
    /// Takes a connection from `pool`, in this client's turn.
    pub async fn get(pool: &FairPool<Pool>) -> Result<Guarded, deadpool_postgres::PoolError> {
        Ok(Guarded { client: Some(pool.get().await?), armed: true })
    }
    /// The work finished normally: the connection goes back as it is.
    pub fn finish(mut self) {
        self.armed = false;
    }
}

impl std::ops::Deref for Guarded {
    type Target = Object;
    fn deref(&self) -> &Self::Target {
        self.client.as_deref().expect("held until dropped")
    }
}

impl std::ops::DerefMut for Guarded {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.client.as_deref_mut().expect("held until dropped")
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        if !self.armed || client.is_closed() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // The place in the gate goes with the connection: the next client gets it once
        // the backend is idle again.
        let (client, share) = client.into_parts();
        rt.spawn(async move {
            let token = client.cancel_token();
            let _ = tokio::time::timeout(Duration::from_secs(5), token.cancel_query(NoTls)).await;
            // Queued behind the cancelled statement (and a dropped transaction's
            // ROLLBACK): once this answers, the backend is idle.
            if tokio::time::timeout(Duration::from_secs(10), client.simple_query("SELECT 1")).await.map(|r| r.is_ok()) != Ok(true) {
                drop(Object::take(client));
            }
            drop(share);
        });
    }
}
