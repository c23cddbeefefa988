//! A socket's outgoing queue and the frames in it (encoded once per protocol
//! version, however many sockets get the same frame).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{mpsc, Notify};

use super::frame::Vsn;

/// A server frame, encoded once per protocol version however many sockets get it.
pub struct Outgoing {
    join_ref: Option<String>,
    r#ref: Option<String>,
    topic: String,
    event: String,
    /// The payload as JSON text.
    payload: String,
    /// The frame's text per version, shared (not copied) by every socket that sends it.
    v1: OnceLock<Utf8Bytes>,
    v2: OnceLock<Utf8Bytes>,
}

impl Outgoing {
    pub fn new(join_ref: Option<&str>, r#ref: Option<&str>, topic: &str, event: &str, payload: String) -> Arc<Outgoing> {
        Arc::new(Outgoing {
            join_ref: join_ref.map(str::to_owned),
            r#ref: r#ref.map(str::to_owned),
            topic: topic.to_owned(),
            event: event.to_owned(),
            payload,
            v1: OnceLock::new(),
            v2: OnceLock::new(),
        })
    }

    /// The frame's text in `vsn` (encoded once; clones share the bytes).
    pub fn text(&self, vsn: Vsn) -> &Utf8Bytes {
        let s = |o: &Option<String>| serde_json::to_string(o).unwrap_or_else(|_| "null".into());
        let (t, e) = (serde_json::to_string(&self.topic).unwrap_or_default(), serde_json::to_string(&self.event).unwrap_or_default());
        match vsn {
            Vsn::V2 => self.v2.get_or_init(|| format!("[{},{},{t},{e},{}]", s(&self.join_ref), s(&self.r#ref), self.payload).into()),
            Vsn::V1 => {
                self.v1.get_or_init(|| format!("{{\"join_ref\":{},\"ref\":{},\"topic\":{t},\"event\":{e},\"payload\":{}}}", s(&self.join_ref), s(&self.r#ref), self.payload).into())
            }
        }
    }

    /// Bytes this frame holds.
    pub fn size(&self) -> usize {
        self.payload.len() + self.topic.len() + 64
    }
}

/// Bytes of frames one socket may have queued; past it the socket is closed.
pub const MAX_QUEUED_BYTES: usize = 16 * 1024 * 1024;

/// One socket's outgoing queue, bounded in frames and in bytes. A socket that cannot
/// keep up is closed (the client reconnects and rejoins) rather than losing frames
/// silently or holding memory without bound.
#[derive(Clone)]
pub struct SocketTx {
    pub id: u64,
    tx: mpsc::Sender<Arc<Outgoing>>,
    /// Bytes queued and not yet written.
    queued: Arc<AtomicUsize>,
    /// Wakes the socket to close it.
    pub kill: Arc<Notify>,
}

impl SocketTx {
    pub fn new(capacity: usize) -> (SocketTx, mpsc::Receiver<Arc<Outgoing>>) {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let (tx, rx) = mpsc::channel(capacity.max(16));
        (SocketTx { id: NEXT.fetch_add(1, Ordering::Relaxed), tx, queued: Arc::new(AtomicUsize::new(0)), kill: Arc::new(Notify::new()) }, rx)
    }

    /// Queues a frame; a full queue closes the socket.
    pub fn send(&self, f: Arc<Outgoing>) {
        let size = f.size();
        if self.queued.fetch_add(size, Ordering::Relaxed) + size > MAX_QUEUED_BYTES {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            self.kill.notify_one();
            return;
        }
        if self.tx.try_send(f).is_err() {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            self.kill.notify_one();
        }
    }

    /// A frame left the queue.
    pub fn written(&self, f: &Outgoing) {
        self.queued.fetch_sub(f.size(), Ordering::Relaxed);
    }
}
