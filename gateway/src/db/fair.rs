//! Fair shares of a pool under contention.
//!
//! A pool hands its connections out first come, first served: a client that keeps
//! many slow requests in flight (the anon key is public; a 20-term full-text filter
//! runs for the whole 3 s statement timeout) fills the queue, and everyone behind it
//! waits out the pool's timeout and gets a 503. The gate in front of a pool admits
//! requests at once while a connection is free; once all are taken, waiting requests
//! are queued per client (IP address, IPv6 by /64) and a freed connection goes to
//! the next *client* in turn, not the next request. One client alone still gets the
//! whole pool, so throughput is unchanged; under attack, a legitimate request waits
//! for the next connection to free up, not for the attacker's queue.
//!
//! Every pool of the gateway is a [`FairPool`]. Who is asking is the request's client
//! key, set once per request by [`as_client`] (the router's outermost layer); work
//! outside a request (background tasks, a response body streamed after its handler
//! returned) counts as one more client, `None`.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool::managed::{PoolError, TimeoutType};
use tokio::sync::oneshot;

use super::error::DbError;
use super::pipeline::{Lease, Step, StepResult, WireError, WirePool};

/// Who is asking: the client's address (see `http::rate_limit::client_key`), or
/// None for the gateway's own work.
pub type ClientKey = Option<IpAddr>;

tokio::task_local! {
    static CLIENT: ClientKey;
}

/// Runs `f` (one request) as `client`'s: the pools it takes connections from give
/// it a fair share.
pub async fn as_client<F: Future>(client: ClientKey, f: F) -> F::Output {
    CLIENT.scope(client, f).await
}

/// The client of the request being served here (None outside a request).
pub fn current_client() -> ClientKey {
    CLIENT.try_with(|c| *c).ok().flatten()
}

/// A pool behind a [`FairGate`] of its size.
#[derive(Clone)]
pub struct FairPool<P> {
    pool: P,
    gate: Arc<FairGate>,
}

/// A pooled connection and its place in the gate; the place is given up after the
/// connection went back to the pool.
pub struct Fair<C> {
    conn: C,
    share: Share,
}

impl<C> Fair<C> {
    /// The connection and the place, apart (the place must outlive the connection's
    /// return to the pool: drop it last).
    pub fn into_parts(self) -> (C, Share) {
        (self.conn, self.share)
    }
}

impl<C> std::ops::Deref for Fair<C> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.conn
    }
}

impl<C> std::ops::DerefMut for Fair<C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.conn
    }
}

impl<P> FairPool<P> {
    /// `pool` behind a gate of `size` places; a request waits at most `wait` for one.
    pub fn new(pool: P, size: usize, wait: Duration) -> Self {
        FairPool { pool, gate: FairGate::new(size, wait) }
    }
    /// The pool itself, bypassing the gate (tests, statistics).
    pub fn inner(&self) -> &P {
        &self.pool
    }
    /// Requests holding a place and waiting.
    pub fn load(&self) -> (usize, usize) {
        self.gate.load()
    }
    async fn place<E>(&self) -> Result<Share, PoolError<E>> {
        self.gate.enter(current_client()).await.map_err(|_| PoolError::Timeout(TimeoutType::Wait))
    }
}

impl FairPool<deadpool_postgres::Pool> {
    /// A connection, once it is this client's turn.
    pub async fn get(&self) -> Result<Fair<deadpool_postgres::Object>, deadpool_postgres::PoolError> {
        let share = self.place().await?;
        Ok(Fair { conn: self.pool.get().await?, share })
    }
}

impl FairPool<WirePool> {
    /// A pipeline connection, once it is this client's turn.
    pub async fn get(&self) -> Result<Fair<Lease>, PoolError<std::io::Error>> {
        let share = self.place().await?;
        Ok(Fair { conn: Lease::get(&self.pool).await?, share })
    }

    /// Runs `steps` as one pipeline, once it is this client's turn: on a shared
    /// connection when `share` (read-only pipelines only) and one may take it,
    /// else on a connection of its own (writes commit side by side: one connection
    /// would wait for each commit's WAL flush in turn).
    pub async fn pipeline(&self, steps: &[Step<'_>], share: bool) -> Result<Vec<StepResult>, DbError> {
        // Shared connections need no place: what joins them is fast by construction
        // (see `mux`), and the gate is as wide as the leased connections.
        if share {
            if let Some(out) = self.pool.shared.run(steps).await {
                return Ok(out?);
            }
        }
        let place = self.place::<std::io::Error>().await?;
        let mut conn = Lease::get(&self.pool).await?;
        let started = std::time::Instant::now();
        let out = conn.pipeline(steps).await;
        if share && !matches!(out, Err(WireError::Io(_))) {
            // How long its shape takes decides whether it may share a connection.
            self.pool.shared.timed(super::pipeline::mux::shape(steps), started.elapsed());
        }
        drop(conn);
        drop(place);
        Ok(out?)
    }
}

/// The gate in front of one pool (capacity = the pool's size).
pub struct FairGate {
    capacity: usize,
    wait: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    in_use: usize,
    /// Waiting requests per client, oldest first.
    waiting: HashMap<ClientKey, VecDeque<oneshot::Sender<Share>>>,
    /// Clients with waiting requests, in turn order.
    turn: VecDeque<ClientKey>,
}

/// A place in the pool; dropping it frees the place (for the next client in turn).
pub struct Share {
    gate: Option<Arc<FairGate>>,
}

impl Drop for Share {
    fn drop(&mut self) {
        if let Some(gate) = self.gate.take() {
            gate.release();
        }
    }
}

impl FairGate {
    /// A gate for a pool of `capacity`; requests wait at most `wait` for a place.
    pub fn new(capacity: usize, wait: Duration) -> Arc<FairGate> {
        Arc::new(FairGate { capacity: capacity.max(1), wait, state: Mutex::new(State::default()) })
    }

    /// Waits for a place for `client`: at once while one is free, else in the
    /// client's queue. After `wait`: the pool's own 503 (DbError::Busy).
    pub async fn enter(self: &Arc<Self>, client: ClientKey) -> Result<Share, DbError> {
        let rx = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.in_use < self.capacity && st.turn.is_empty() {
                st.in_use += 1;
                return Ok(Share { gate: Some(self.clone()) });
            }
            let (tx, rx) = oneshot::channel();
            let queue = st.waiting.entry(client).or_default();
            queue.push_back(tx);
            if queue.len() == 1 {
                st.turn.push_back(client);
            }
            rx
        };
        match tokio::time::timeout(self.wait, rx).await {
            Ok(Ok(share)) => Ok(share),
            // A place handed over as the wait ended is dropped with the receiver,
            // which passes it on.
            _ => Err(DbError::Busy),
        }
    }

    /// Requests holding a place and waiting (for /health and tests).
    pub fn load(&self) -> (usize, usize) {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (st.in_use, st.waiting.values().map(VecDeque::len).sum())
    }

    fn release(self: Arc<Self>) {
        let mut share = Some(Share { gate: Some(self.clone()) });
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(client) = st.turn.pop_front() {
            let Some(queue) = st.waiting.get_mut(&client) else {
                continue;
            };
            let mut handed = false;
            while let Some(tx) = queue.pop_front() {
                let Some(place) = share.take() else { break };
                match tx.send(place) {
                    Ok(()) => {
                        handed = true;
                        break;
                    }
                    // That request gave up waiting: the next one of this client.
                    Err(back) => share = Some(back),
                }
            }
            if queue.is_empty() {
                st.waiting.remove(&client);
            } else {
                st.turn.push_back(client);
            }
            if handed {
                return;
            }
        }
        st.in_use -= 1;
        drop(st);
        // Nobody waits: the place is free again (not released twice).
        if let Some(mut place) = share {
            place.gate = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> ClientKey {
        Some(IpAddr::from([10, 0, 0, n]))
    }

    #[tokio::test]
    async fn a_lone_client_gets_the_whole_pool() {
        let gate = FairGate::new(3, Duration::from_millis(50));
        let held: Vec<Share> = vec![gate.enter(ip(1)).await.unwrap(), gate.enter(ip(1)).await.unwrap(), gate.enter(ip(1)).await.unwrap()];
        assert_eq!(gate.load(), (3, 0));
        assert!(gate.enter(ip(1)).await.is_err(), "a fourth waits out the timeout");
        drop(held);
        assert_eq!(gate.load(), (0, 0));
    }

    #[tokio::test]
    async fn a_freed_place_goes_to_the_next_client_not_the_next_request() {
        let gate = FairGate::new(1, Duration::from_secs(5));
        let first = gate.enter(ip(1)).await.unwrap();
        // The greedy client queues five requests, then another client one.
        let mut greedy = Vec::new();
        for _ in 0..5 {
            let g = gate.clone();
            greedy.push(tokio::spawn(async move { g.enter(ip(1)).await.map(|s| (1, s)) }));
            tokio::task::yield_now().await;
        }
        let g = gate.clone();
        let other = tokio::spawn(async move { g.enter(ip(2)).await.map(|s| (2, s)) });
        tokio::task::yield_now().await;
        assert_eq!(gate.load(), (1, 6));
        drop(first);
        // The place goes to the greedy client's oldest request (its turn came first) ...
        let (who, share) = tokio::time::timeout(Duration::from_secs(1), greedy.remove(0)).await.unwrap().unwrap().unwrap();
        assert_eq!(who, 1);
        drop(share);
        // ... and the next one to the other client, ahead of four older greedy requests.
        let (who, share) = tokio::time::timeout(Duration::from_secs(1), other).await.unwrap().unwrap().unwrap();
        assert_eq!(who, 2);
        drop(share);
        for t in greedy {
            drop(tokio::time::timeout(Duration::from_secs(1), t).await.unwrap().unwrap().unwrap());
        }
        assert_eq!(gate.load(), (0, 0));
    }

    #[tokio::test]
    async fn a_waiter_that_gave_up_does_not_leak_the_place() {
        let gate = FairGate::new(1, Duration::from_millis(20));
        let first = gate.enter(ip(1)).await.unwrap();
        assert!(gate.enter(ip(2)).await.is_err());
        drop(first);
        assert_eq!(gate.load(), (0, 0));
        let again = gate.enter(ip(2)).await.unwrap();
        assert_eq!(gate.load(), (1, 0));
        drop(again);
    }
}
