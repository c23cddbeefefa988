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

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::error::DbError;

/// Who is asking: the client's address (see `http::rate_limit::client_key`), or
/// None for the gateway's own work.
pub type ClientKey = Option<IpAddr>;

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
    /// client's queue. After `wait`: the pool's own 503 (DbError::NoConnection).
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
            _ => Err(DbError::NoConnection(format!("no free connection within {:?}", self.wait))),
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
