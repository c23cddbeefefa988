//! The hub: one bounded broadcast channel per query id / ad-hoc channel, shared by
//! all its sockets. Each NOTIFY is parsed once (for its query id) and its text is
//! shared by reference; a socket that falls behind the bounded queue gets an overflow.
//!
//! The queue is bounded in frames (WS_CLIENT_QUEUE) and in bytes: a frame stays in
//! memory until every socket of its channel has read it, so the bytes a channel holds
//! are the backlog of its slowest socket. Past WS_CLIENT_QUEUE_BYTES (or, every
//! channel together, WS_QUEUE_MAX_TOTAL_BYTES) the oldest frames are emptied; a socket
//! that reaches an emptied frame has lagged, exactly as past the frame count.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// A frame for every socket of a channel; `origin` is the sending client (0 =
/// the database) so a client does not get its own broadcast back.
#[derive(Clone)]
pub struct Frame {
    /// Sender client number, 0 for server messages.
    pub origin: u64,
    payload: Arc<Payload>,
}

impl Frame {
    /// The JSON text; `None` when it was dropped from a backlog over the byte limits
    /// (the reader lagged).
    pub fn text(&self) -> Option<Utf8Bytes> {
        self.payload.text.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A frame's text, counted in its channel's and the hub's queued bytes while held.
struct Payload {
    text: Mutex<Option<Utf8Bytes>>,
    len: usize,
    channel_bytes: Arc<AtomicUsize>,
    total_bytes: Arc<AtomicUsize>,
}

impl Payload {
    fn release(&self) {
        self.channel_bytes.fetch_sub(self.len, Ordering::AcqRel);
        self.total_bytes.fetch_sub(self.len, Ordering::AcqRel);
    }

    /// Drops the text (readers that reach it have lagged).
    fn evict(&self) {
        if self.text.lock().unwrap_or_else(|e| e.into_inner()).take().is_some() {
            self.release();
        }
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        if self.text.get_mut().map(|t| t.is_some()).unwrap_or(false) {
            self.release();
        }
    }
}

/// WS_CLIENT_QUEUE_BYTES / WS_QUEUE_MAX_TOTAL_BYTES.
pub struct QueueLimits {
    /// Bytes one channel holds for its slowest socket.
    pub per_client: AtomicUsize,
    /// Bytes every channel holds together.
    pub total: AtomicUsize,
}

/// One query id or ad-hoc channel.
pub struct Channel {
    /// Its name.
    pub name: String,
    /// Fan-out to its sockets.
    pub tx: broadcast::Sender<Frame>,
    /// Presence: client id → (last state, its size in bytes).
    presence: Mutex<HashMap<String, (Value, usize)>>,
    /// Last seq seen on NOTIFY (for overflow frames).
    pub last_seq: AtomicI64,
    /// WS_CLIENT_QUEUE (frames the broadcast ring holds).
    capacity: usize,
    /// Frames published and possibly still held, oldest first.
    backlog: Mutex<VecDeque<Weak<Payload>>>,
    /// Bytes of frames held (not yet read by every socket).
    bytes: Arc<AtomicUsize>,
    /// The hub's queued bytes, every channel together.
    queued_total: Arc<AtomicUsize>,
    queue_limits: Arc<QueueLimits>,
    /// The hub's presence bytes (all channels), released when this channel goes.
    presence_bytes: Arc<AtomicUsize>,
    limits: Arc<PresenceLimits>,
}

/// WS_PRESENCE_MAX_BYTES / WS_PRESENCE_MAX_TOTAL_BYTES.
pub struct PresenceLimits {
    /// Largest state of one client (its JSON text), bytes.
    pub per_client: AtomicUsize,
    /// All presence states this gateway holds, bytes.
    pub total: AtomicUsize,
}

/// Why a presence state was not stored.
#[derive(Debug, PartialEq, Eq)]
pub enum PresenceError {
    /// Larger than WS_PRESENCE_MAX_BYTES: (size, limit).
    TooLarge(usize, usize),
    /// WS_PRESENCE_MAX_TOTAL_BYTES reached.
    Full,
}

impl PresenceError {
    /// The message of the error frame.
    pub fn message(&self) -> String {
        match self {
            PresenceError::TooLarge(n, max) => format!("presence state too large: {n} bytes, at most {max} (WS_PRESENCE_MAX_BYTES)"),
            PresenceError::Full => "presence capacity of this server is exhausted; try again later".to_owned(),
        }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        let held: usize = self.presence.get_mut().map(|p| p.values().map(|(_, n)| *n).sum()).unwrap_or(0);
        self.presence_bytes.fetch_sub(held, Ordering::AcqRel);
    }
}

impl Channel {
    /// Stores a client's presence state within the per-client and per-gateway limits.
    pub fn presence_set(&self, client_id: &str, state: Value) -> Result<(), PresenceError> {
        let size = state.to_string().len();
        let max = self.limits.per_client.load(Ordering::Relaxed);
        if size > max {
            return Err(PresenceError::TooLarge(size, max));
        }
        let mut p = self.presence.lock().unwrap_or_else(|e| e.into_inner());
        let old = p.get(client_id).map(|(_, n)| *n).unwrap_or(0);
        // Reserve the new size first; the old one is released once the state is replaced.
        let before = self.presence_bytes.fetch_add(size, Ordering::AcqRel);
        if before.saturating_sub(old) + size > self.limits.total.load(Ordering::Relaxed) {
            self.presence_bytes.fetch_sub(size, Ordering::AcqRel);
            return Err(PresenceError::Full);
        }
        self.presence_bytes.fetch_sub(old, Ordering::AcqRel);
        p.insert(client_id.to_owned(), (state, size));
        Ok(())
    }

    /// Removes a client's presence state.
    pub fn presence_remove(&self, client_id: &str) {
        let mut p = self.presence.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, n)) = p.remove(client_id) {
            self.presence_bytes.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// client id → state.
    pub fn presence_snapshot(&self) -> Vec<(String, Value)> {
        let p = self.presence.lock().unwrap_or_else(|e| e.into_inner());
        p.iter().map(|(k, (v, _))| (k.clone(), v.clone())).collect()
    }

    /// Sends to every socket of the channel. Past the byte limits the oldest frames
    /// still held (those the slowest sockets have not read) are emptied first.
    pub fn publish(&self, origin: u64, text: String) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let len = text.len();
        self.bytes.fetch_add(len, Ordering::AcqRel);
        self.queued_total.fetch_add(len, Ordering::AcqRel);
        let payload = Arc::new(Payload { text: Mutex::new(Some(Utf8Bytes::from(text))), len, channel_bytes: self.bytes.clone(), total_bytes: self.queued_total.clone() });
        let per_client = self.queue_limits.per_client.load(Ordering::Relaxed);
        let total = self.queue_limits.total.load(Ordering::Relaxed);
        let mut backlog = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
        backlog.push_back(Arc::downgrade(&payload));
        // The newest frame is always kept: a socket that keeps up never lags.
        while backlog.len() > 1 {
            let front_gone = backlog.front().is_some_and(|w| w.strong_count() == 0);
            let over = self.bytes.load(Ordering::Acquire) > per_client || self.queued_total.load(Ordering::Acquire) > total;
            if !front_gone && !over {
                break;
            }
            if let Some(old) = backlog.pop_front().and_then(|w| w.upgrade()) {
                old.evict();
            }
        }
        // Frames leave in order (every socket reads in order), so stale entries are at
        // the front; this only sweeps the odd one left behind.
        if backlog.len() > 2 * self.capacity + 64 {
            backlog.retain(|w| w.strong_count() > 0);
        }
        let _ = self.tx.send(Frame { origin, payload });
    }

    /// Bytes held for this channel's sockets.
    pub fn queued_bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
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
    /// Bytes of presence state held, every channel together.
    presence_bytes: Arc<AtomicUsize>,
    /// Presence limits (defaults until `set_presence_limits`).
    presence_limits: Arc<PresenceLimits>,
    /// Bytes of frames queued for sockets, every channel together.
    queued_total: Arc<AtomicUsize>,
    /// Queue byte limits (defaults until `set_queue_limits`).
    queue_limits: Arc<QueueLimits>,
    /// Broadcast / presence relay to other gateways, once started.
    pub relay: std::sync::OnceLock<Arc<dyn Outbound>>,
    /// The LISTEN connection has been up at least once (deltas reach the hub).
    listening: tokio::sync::watch::Sender<bool>,
    /// When the hub was made (the wait for LISTEN counts from here).
    started: std::time::Instant,
}

/// Where a socket's broadcast and presence frames go beyond this gateway (the relay
/// between gateways, `super::relay`): `kind` is broadcast / join / state / leave.
pub trait Outbound: Send + Sync {
    fn send(&self, kind: &str, channel: &str, client_id: &str, frame: &str);
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

impl Slot {
    /// The client's address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
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
            presence_bytes: Arc::new(AtomicUsize::new(0)),
            presence_limits: Arc::new(PresenceLimits { per_client: AtomicUsize::new(4 * 1024), total: AtomicUsize::new(64 * 1024 * 1024) }),
            queued_total: Arc::new(AtomicUsize::new(0)),
            queue_limits: Arc::new(QueueLimits { per_client: AtomicUsize::new(1024 * 1024), total: AtomicUsize::new(256 * 1024 * 1024) }),
            relay: std::sync::OnceLock::new(),
            listening: tokio::sync::watch::Sender::new(false),
            started: std::time::Instant::now(),
        })
    }

    /// The LISTEN connection is up: deltas published from now on reach the hub.
    pub fn set_listening(&self) {
        self.listening.send_replace(true);
    }

    /// Waits until the LISTEN connection has been up, at most until `limit` after
    /// the hub started, so that a socket told "subscribed" gets every delta
    /// committed afterwards; past that (Postgres unreachable at start) sockets are
    /// subscribed at once, and the first connect overflows them.
    pub async fn wait_listening(&self, limit: Duration) {
        let left = limit.saturating_sub(self.started.elapsed());
        if *self.listening.borrow() || left.is_zero() {
            return;
        }
        let mut rx = self.listening.subscribe();
        let _ = tokio::time::timeout(left, rx.wait_for(|up| *up)).await;
    }

    /// Sets WS_PRESENCE_MAX_BYTES and WS_PRESENCE_MAX_TOTAL_BYTES.
    pub fn set_presence_limits(&self, per_client: usize, total: usize) {
        self.presence_limits.per_client.store(per_client, Ordering::Relaxed);
        self.presence_limits.total.store(total, Ordering::Relaxed);
    }

    /// Sets WS_CLIENT_QUEUE_BYTES and WS_QUEUE_MAX_TOTAL_BYTES.
    pub fn set_queue_limits(&self, per_client: usize, total: usize) {
        self.queue_limits.per_client.store(per_client.max(1), Ordering::Relaxed);
        self.queue_limits.total.store(total.max(1), Ordering::Relaxed);
    }

    /// Bytes of frames queued for sockets, every channel together.
    pub fn queued_bytes(&self) -> usize {
        self.queued_total.load(Ordering::Acquire)
    }

    /// Bytes of presence state this gateway holds.
    pub fn presence_bytes(&self) -> usize {
        self.presence_bytes.load(Ordering::Acquire)
    }

    /// A new client number.
    pub fn client_number(&self) -> u64 {
        self.next_client.fetch_add(1, Ordering::Relaxed)
    }

    /// The channel, created on first use.
    pub fn channel(&self, name: &str) -> Arc<Channel> {
        let mut m = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Channel {
                    name: name.to_owned(),
                    tx: broadcast::channel(self.queue).0,
                    presence: Mutex::new(HashMap::new()),
                    last_seq: AtomicI64::new(0),
                    capacity: self.queue,
                    backlog: Mutex::new(VecDeque::new()),
                    bytes: Arc::new(AtomicUsize::new(0)),
                    queued_total: self.queued_total.clone(),
                    queue_limits: self.queue_limits.clone(),
                    presence_bytes: self.presence_bytes.clone(),
                    limits: self.presence_limits.clone(),
                })
            })
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
        let Ok(head) = serde_json::from_str::<pgstack_shared::notify::LiveQueryHead>(payload) else {
            tracing::warn!("ignoring a malformed live-query notification");
            return;
        };
        if let Some(ch) = self.existing(&head.query_id) {
            if let Some(seq) = head.seq {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_is_bounded_per_client_and_per_gateway() {
        let hub = Hub::new(4);
        hub.set_presence_limits(64, 100);
        let a = hub.channel("_channel_a");
        let b = hub.channel("_channel_b");
        let big = json!({"s": "x".repeat(100)});
        assert!(matches!(a.presence_set("1", big), Err(PresenceError::TooLarge(_, 64))));
        assert_eq!(hub.presence_bytes(), 0);
        let fifty = json!({"s": "x".repeat(42)});
        assert_eq!(fifty.to_string().len(), 50);
        a.presence_set("1", fifty.clone()).unwrap();
        // Replacing one's own state counts once.
        a.presence_set("1", fifty.clone()).unwrap();
        assert_eq!(hub.presence_bytes(), 50);
        b.presence_set("2", fifty.clone()).unwrap();
        assert_eq!(hub.presence_bytes(), 100);
        assert_eq!(b.presence_set("3", json!({})), Err(PresenceError::Full));
        assert_eq!(hub.presence_bytes(), 100);
        a.presence_remove("1");
        assert_eq!(hub.presence_bytes(), 50);
        b.presence_set("3", json!({})).unwrap();
        // A dropped channel releases what its clients held.
        drop(b);
        hub.release("_channel_b");
        assert_eq!(hub.presence_bytes(), 0);
    }

    #[test]
    fn a_slow_socket_holds_at_most_the_byte_limit() {
        let hub = Hub::new(256);
        hub.set_queue_limits(10_000, 1 << 30);
        let ch = hub.channel("_channel_x");
        let mut slow = ch.tx.subscribe();
        let mut fast = ch.tx.subscribe();
        for _ in 0..100 {
            ch.publish(0, "x".repeat(1000));
            assert!(fast.try_recv().unwrap().text().is_some(), "a socket that keeps up gets every frame");
            assert!(ch.queued_bytes() <= 10_000, "{}", ch.queued_bytes());
        }
        assert_eq!(hub.queued_bytes(), 10_000);
        // The slow socket finds the oldest frames emptied (it lagged), the newest intact.
        let (mut kept, mut emptied) = (0, 0);
        while let Ok(f) = slow.try_recv() {
            if f.text().is_some() {
                kept += 1;
            } else {
                emptied += 1;
            }
        }
        assert_eq!((kept, emptied), (10, 90));
        assert_eq!(hub.queued_bytes(), 0, "frames read by every socket are released");
    }

    #[test]
    fn the_gateway_total_cuts_backlogs() {
        let hub = Hub::new(256);
        hub.set_queue_limits(10_000, 15_000);
        let (a, b) = (hub.channel("_channel_a"), hub.channel("_channel_b"));
        let (_ra, _rb) = (a.tx.subscribe(), b.tx.subscribe());
        for _ in 0..20 {
            a.publish(0, "x".repeat(1000));
        }
        assert_eq!(a.queued_bytes(), 10_000);
        for _ in 0..20 {
            b.publish(0, "y".repeat(1000));
            assert!(hub.queued_bytes() <= 16_000, "{}", hub.queued_bytes());
        }
        assert!(b.queued_bytes() >= 1000, "the newest frame is always kept");
        // Nobody left: a channel without sockets queues nothing.
        drop((_ra, _rb));
        assert_eq!(hub.queued_bytes(), 0);
        a.publish(0, "z".repeat(1000));
        assert_eq!(hub.queued_bytes(), 0);
    }
}
