//! The hub: one bounded broadcast channel per query id / ad-hoc channel, shared by
//! all its sockets. Each NOTIFY is parsed once (for its query id) and its text is
//! shared by reference; a socket that falls behind the bounded queue gets an overflow.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// A frame for every socket of a channel; `origin` is the sending client (0 =
/// the database) so a client does not get its own broadcast back.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Sender client number, 0 for server messages.
    pub origin: u64,
    /// The JSON text.
    pub text: Utf8Bytes,
}

/// One query id or ad-hoc channel.
pub struct Channel {
    /// Its name.
    pub name: String,
    /// Fan-out to its sockets.
    pub tx: broadcast::Sender<Frame>,
    /// Presence: client id → last state.
    pub presence: Mutex<HashMap<String, Value>>,
    /// Last seq seen on NOTIFY (for overflow frames).
    pub last_seq: AtomicI64,
}

impl Channel {
    /// Sends to every socket of the channel.
    pub fn publish(&self, origin: u64, text: String) {
        let _ = self.tx.send(Frame { origin, text: Utf8Bytes::from(text) });
    }

    /// The overflow frame telling clients to re-fetch.
    pub fn overflow_frame(&self) -> String {
        json!({"type": "overflow", "query_id": self.name, "seq": self.last_seq.load(Ordering::Relaxed), "fetch": true}).to_string()
    }
}

/// All channels and connection counts.
pub struct Hub {
    channels: Mutex<HashMap<String, Arc<Channel>>>,
    queue: usize,
    next_client: AtomicU64,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Broadcast / presence relay to other gateways, once started.
    pub relay: std::sync::OnceLock<Arc<super::relay::Relay>>,
}

/// Why a connection slot was refused.
pub enum CapError {
    /// WS_MAX_CONNECTIONS_PER_IP reached.
    PerIp,
    /// WS_MAX_CONNECTIONS reached.
    Global,
}

/// A reserved connection slot, released on drop.
pub struct Slot {
    hub: Arc<Hub>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.hub.total.fetch_sub(1, Ordering::AcqRel);
        if let Ok(mut m) = self.hub.per_ip.lock() {
            if let Some(n) = m.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.ip);
                }
            }
        }
    }
}

impl Hub {
    /// A hub whose per-socket queues hold `queue` frames.
    pub fn new(queue: usize) -> Arc<Hub> {
        Arc::new(Hub {
            channels: Mutex::new(HashMap::new()),
            queue: queue.max(1),
            next_client: AtomicU64::new(1),
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            relay: std::sync::OnceLock::new(),
        })
    }

    /// A new client number.
    pub fn client_number(&self) -> u64 {
        self.next_client.fetch_add(1, Ordering::Relaxed)
    }

    /// The channel, created on first use.
    pub fn channel(&self, name: &str) -> Arc<Channel> {
        let mut m = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(name.to_owned())
            .or_insert_with(|| Arc::new(Channel { name: name.to_owned(), tx: broadcast::channel(self.queue).0, presence: Mutex::new(HashMap::new()), last_seq: AtomicI64::new(0) }))
            .clone()
    }

    /// The channel if some socket uses it.
    pub fn existing(&self, name: &str) -> Option<Arc<Channel>> {
        self.channels.lock().ok()?.get(name).cloned()
    }

    /// Drops a channel nobody listens to any more.
    pub fn release(&self, name: &str) {
        if let Ok(mut m) = self.channels.lock() {
            if m.get(name).is_some_and(|c| c.tx.receiver_count() == 0) {
                m.remove(name);
            }
        }
    }

    /// Every channel (for resyncs after a lost LISTEN connection).
    pub fn all(&self) -> Vec<Arc<Channel>> {
        self.channels.lock().map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    /// Reserves a connection slot for `ip` within both caps.
    pub fn reserve(self: &Arc<Self>, ip: IpAddr, max_total: usize, max_per_ip: usize) -> Result<Slot, CapError> {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let mine = per_ip.get(&ip).copied().unwrap_or(0);
        if mine >= max_per_ip {
            return Err(CapError::PerIp);
        }
        if self.total.load(Ordering::Acquire) >= max_total {
            return Err(CapError::Global);
        }
        self.total.fetch_add(1, Ordering::AcqRel);
        per_ip.insert(ip, mine + 1);
        Ok(Slot { hub: self.clone(), ip })
    }

    /// Relays one NOTIFY payload of channel 'pgr' to the sockets of its query id.
    pub fn relay(&self, payload: &str) {
        let Ok(v) = serde_json::from_str::<Value>(payload) else {
            tracing::warn!("ignoring a malformed live-query notification");
            return;
        };
        let Some(qid) = v.get("query_id").and_then(Value::as_str) else { return };
        if let Some(ch) = self.existing(qid) {
            if let Some(seq) = v.get("seq").and_then(Value::as_i64) {
                ch.last_seq.store(seq, Ordering::Relaxed);
            }
            ch.publish(0, payload.to_owned());
        }
    }

    /// After the LISTEN connection was lost, nobody may silently miss a change: every
    /// query channel gets an overflow.
    pub fn resync_all(&self) {
        for ch in self.all() {
            if !ch.name.starts_with("_channel_") {
                ch.publish(0, ch.overflow_frame());
            }
        }
    }
}
