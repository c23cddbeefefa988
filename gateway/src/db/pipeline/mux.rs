//! Shared pipeline connections: the pipelines of several requests on one connection.
//!
//! A connection leased to one request at a time leaves its backend asleep between
//! requests: every request wakes it (a context switch on each side, the costliest part
//! of a read by key on a small machine). Here a few connections take the pipelines of
//! many requests back to back: each request's pipeline is still its own implicit
//! transaction (it ends with its own Sync), written by one writer task in arrival
//! order, and one reader task hands each pipeline's results to its request in that
//! order. Under load the backend reads several pipelines per wake-up and never waits.
//!
//! A request only joins a connection that is idle or moving (its current pipeline
//! began less than [`STALL`] ago) and has fewer than [`DEPTH`] pipelines waiting;
//! otherwise it takes a connection of its own from the pool (the lease path), so a
//! slow statement holds up at most the few pipelines sent behind it before it was
//! seen to be slow. A request that goes away has its statement cancelled once it is
//! the one running; a pipeline hit by that cancel instead (it had just begun) was
//! rolled back and is sent again.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::{encode, other, send_cancel, CancelKey, Gather, Step, StepResult, Stream, WireConn, WireError, MAX_STATEMENTS};

/// Pipelines a connection may have in flight before requests look elsewhere.
const DEPTH: usize = 32;
/// A connection whose current pipeline began longer ago than this takes no more
/// (a read by key takes Postgres ~50 µs).
const STALL: Duration = Duration::from_millis(1);
/// How long a shape that was slow keeps off the shared connections.
const SLOW_FOR: Duration = Duration::from_secs(10);
/// How long after a failed connect before the slot dials again.
const REDIAL: Duration = Duration::from_secs(1);
/// A write gathers the pipelines waiting for it up to this many bytes.
const WRITE_BATCH: usize = 256 * 1024;

type Outcome = Result<Vec<StepResult>, WireError>;

/// One pipeline sent and not yet answered.
struct Pending {
    id: u64,
    reply: Option<oneshot::Sender<Outcome>>,
    /// The statements this pipeline parses (text, name), in order.
    fresh: Vec<(String, String)>,
    steps: usize,
    /// Its statements' names, in order (see [`State::slow`]).
    shape: String,
    /// Its request went away: its results are read and dropped.
    abandoned: bool,
}

/// What the request side and the reader share.
struct State {
    /// Statement text → name, from the moment its Parse is written (a name whose
    /// Parse did not run is removed when its pipeline's answer is read).
    statements: HashMap<String, String>,
    next_statement: u64,
    next_id: u64,
    pending: VecDeque<Pending>,
    /// The connection failed: nothing more is sent.
    dead: bool,
    /// A cancel went out for the pipeline with this id (the front one then).
    cancelled: Option<u64>,
    /// When the last cancel went out (it may strike the pipeline after its target).
    last_cancel: Option<Instant>,
    /// When the front pipeline became the front one.
    front_since: Instant,
    /// Shapes of pipelines that ran longer than [`STALL`] the last time (and when):
    /// for [`SLOW_FOR`] they take connections of their own, and a connection with
    /// one in flight takes no more.
    slow: HashMap<String, Instant>,
}

impl State {
    fn is_slow(&self, shape: &str) -> bool {
        self.slow.get(shape).is_some_and(|t| t.elapsed() < SLOW_FOR)
    }
}

/// One shared connection.
pub struct Mux {
    state: Mutex<State>,
    writes: mpsc::UnboundedSender<BytesMut>,
    /// Pipelines sent and not yet answered (also readable without the lock).
    load: AtomicUsize,
    cancel: Option<CancelKey>,
}

impl Mux {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the writer and reader tasks of an authenticated connection.
    fn start(conn: WireConn) -> Arc<Mux> {
        let (tx, rx) = mpsc::unbounded_channel();
        let max = conn.max_message;
        let mux = Arc::new(Mux {
            state: Mutex::new(State {
                statements: HashMap::new(),
                next_statement: 0,
                next_id: 0,
                pending: VecDeque::new(),
                dead: false,
                cancelled: None,
                last_cancel: None,
                front_since: Instant::now(),
                slow: HashMap::new(),
            }),
            writes: tx,
            load: AtomicUsize::new(0),
            cancel: conn.cancel.clone(),
        });
        let read = conn.read;
        match conn.stream {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                tokio::spawn(write_loop(w, rx, Arc::downgrade(&mux)));
                tokio::spawn(read_loop(r, read, mux.clone(), max));
            }
            Stream::Unix(s) => {
                let (r, w) = s.into_split();
                tokio::spawn(write_loop(w, rx, Arc::downgrade(&mux)));
                tokio::spawn(read_loop(r, read, mux.clone(), max));
            }
        }
        mux
    }

    /// The load if this connection may take another pipeline now.
    fn free(&self, now: Instant) -> Option<usize> {
        let load = self.load.load(Ordering::Relaxed);
        if load == 0 {
            return Some(0);
        }
        if load >= DEPTH {
            return None;
        }
        let st = self.lock();
        (!st.dead && now.duration_since(st.front_since) < STALL && !st.pending.iter().any(|p| st.is_slow(&p.shape))).then_some(load)
    }

    fn is_dead(&self) -> bool {
        self.lock().dead
    }

    /// Encodes and queues `steps` as one pipeline; the receiver gets its results.
    /// None when pipelines of its shape were slow (it takes a connection of its own).
    fn submit(&self, steps: &[Step<'_>]) -> Result<Option<(u64, oneshot::Receiver<Outcome>)>, WireError> {
        let mut st = self.lock();
        if st.dead {
            return Err(WireError::Io(other("the shared connection is closed")));
        }
        if st.statements.len() + steps.len() > MAX_STATEMENTS {
            let mut buf = BytesMut::new();
            frontend::query("DEALLOCATE ALL", &mut buf)?;
            let id = st.next_id;
            st.next_id += 1;
            st.pending.push_back(Pending { id, reply: None, fresh: Vec::new(), steps: 1, shape: String::new(), abandoned: true });
            st.statements.clear();
            st.slow.clear();
            self.send(&mut st, buf)?;
        }
        let mut buf = BytesMut::with_capacity(1024);
        let State { statements, next_statement, .. } = &mut *st;
        let (fresh, shape) = encode(steps, statements, next_statement, &mut buf)?;
        if st.is_slow(&shape) {
            return Ok(None);
        }
        for (text, name) in &fresh {
            st.statements.insert(text.clone(), name.clone());
        }
        let (tx, rx) = oneshot::channel();
        let id = st.next_id;
        st.next_id += 1;
        if st.pending.is_empty() {
            st.front_since = Instant::now();
        }
        st.pending.push_back(Pending { id, reply: Some(tx), fresh, steps: steps.len(), shape, abandoned: false });
        self.load.fetch_add(1, Ordering::Relaxed);
        self.send(&mut st, buf)?;
        Ok(Some((id, rx)))
    }

    fn send(&self, st: &mut State, buf: BytesMut) -> Result<(), WireError> {
        if self.writes.send(buf).is_err() {
            fail(self, st);
            return Err(WireError::Io(other("the shared connection is closed")));
        }
        Ok(())
    }

    /// The request of pipeline `id` went away: its answer is dropped, and its
    /// statement cancelled if it is the one running.
    fn abandon(self: &Arc<Self>, id: u64) {
        let mut st = self.lock();
        let Some(p) = st.pending.iter_mut().find(|p| p.id == id) else { return };
        p.abandoned = true;
        if st.pending.front().map(|p| p.id) == Some(id) {
            self.cancel_front(&mut st);
        }
    }

    /// Cancels the front pipeline's statement (its request went away).
    fn cancel_front(&self, st: &mut State) {
        let (Some(front), Some(key)) = (st.pending.front(), self.cancel.clone()) else { return };
        if st.cancelled == Some(front.id) {
            return;
        }
        st.cancelled = Some(front.id);
        st.last_cancel = Some(Instant::now());
        tokio::spawn(async move {
            let _ = send_cancel(&key).await;
        });
    }
}

/// Marks the connection failed and answers every pipeline in flight.
fn fail(mux: &Mux, st: &mut State) {
    st.dead = true;
    for p in st.pending.drain(..) {
        if let Some(reply) = p.reply {
            mux.load.fetch_sub(1, Ordering::Relaxed);
            let _ = reply.send(Err(WireError::Io(other("the shared connection failed"))));
        }
    }
}

async fn write_loop(mut w: impl AsyncWrite + Unpin, mut rx: mpsc::UnboundedReceiver<BytesMut>, mux: std::sync::Weak<Mux>) {
    let mut out = BytesMut::with_capacity(16 * 1024);
    while let Some(first) = rx.recv().await {
        out.extend_from_slice(&first);
        while out.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(more) => out.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if w.write_all(&out).await.is_err() {
            if let Some(m) = mux.upgrade() {
                fail(&m, &mut m.lock());
            }
            return;
        }
        out.clear();
    }
}

async fn read_loop(mut r: impl AsyncRead + Unpin, mut buf: BytesMut, mux: Arc<Mux>, max: usize) {
    let mut gather: Option<Gather> = None;
    let end = loop {
        if buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if len > max {
                // One message over the limit: read away in pieces, never held.
                let Some(g) = front_gather(&mux, &mut gather, max) else { break other("an oversized message outside any pipeline") };
                g.too_large = true;
                mux.cancel_front(&mut mux.lock());
                if let Err(e) = skip(&mut r, &mut buf, 1 + len).await {
                    break e;
                }
                continue;
            }
        }
        match backend::Message::parse(&mut buf) {
            Ok(Some(message)) => {
                let Some(g) = front_gather(&mux, &mut gather, max) else {
                    match message {
                        backend::Message::NoticeResponse(_) | backend::Message::ParameterStatus(_) | backend::Message::NotificationResponse(_) => continue,
                        _ => break other("a message outside any pipeline"),
                    }
                };
                let was_too_large = g.too_large;
                match g.take(message) {
                    // The rows went over the limit: the rest of the statement is
                    // cancelled (its answer is the limit's error).
                    Ok(false) if g.too_large && !was_too_large => mux.cancel_front(&mut mux.lock()),
                    Ok(false) => {}
                    Ok(true) => {
                        let done = gather.take().expect("a pipeline being gathered");
                        answer(&mux, done);
                    }
                    Err(WireError::Io(e)) => break e,
                    Err(e) => break other(&e.to_string()),
                }
            }
            Ok(None) => {
                if buf.capacity() - buf.len() < 4096 {
                    buf.reserve(16 * 1024);
                }
                match r.read_buf(&mut buf).await {
                    Ok(0) => break other("Postgres closed the connection"),
                    Ok(_) => {}
                    Err(e) => break e,
                }
            }
            Err(e) => break e,
        }
    };
    tracing::debug!(error = %end, "a shared pipeline connection ended");
    fail(&mux, &mut mux.lock());
}

/// The gatherer of the front pipeline (None when nothing is in flight).
fn front_gather<'g>(mux: &Mux, gather: &'g mut Option<Gather>, max: usize) -> Option<&'g mut Gather> {
    if gather.is_none() {
        let steps = mux.lock().pending.front()?.steps;
        *gather = Some(Gather::new(steps, max));
    }
    gather.as_mut()
}

/// The front pipeline's answer is complete: forget the statements it did not
/// parse, hand over its results, and cancel the next one if its request is gone.
fn answer(mux: &Mux, done: Gather) {
    let mut st = mux.lock();
    let Some(p) = st.pending.pop_front() else { return };
    for (text, name) in p.fresh.iter().skip(done.parsed) {
        if st.statements.get(text) == Some(name) {
            st.statements.remove(text);
        }
    }
    let now = Instant::now();
    if now.duration_since(st.front_since) > STALL {
        st.slow.insert(p.shape, now);
    } else if !st.slow.is_empty() {
        st.slow.remove(&p.shape);
    }
    st.front_since = now;
    let struck = st.last_cancel.is_some_and(|t| t.elapsed() < STRUCK);
    if st.pending.front().is_some_and(|f| f.abandoned && f.reply.is_some()) {
        mux.cancel_front(&mut st);
    }
    let Some(reply) = p.reply else { return };
    mux.load.fetch_sub(1, Ordering::Relaxed);
    drop(st);
    let mut out = done.finish();
    if struck {
        // A cancel meant for the pipeline before this one may have struck it.
        if let Err(WireError::Db(f)) = &out {
            if f.code == "57014" && f.message.contains("user request") {
                out = Err(WireError::Db(super::DbFields { code: RESEND.to_owned(), ..f.clone() }));
            }
        }
    }
    let _ = reply.send(out);
}

/// How long after a cancel a pipeline cancelled "due to user request" is taken
/// for one struck by it.
const STRUCK: Duration = Duration::from_secs(10);

/// Marks a pipeline that was rolled back for a reason of ours: send it again.
const RESEND: &str = "pgstack-resend";

/// Reads away `n` bytes (from `buf` first), holding no more than a small buffer.
async fn skip(r: &mut (impl AsyncRead + Unpin), buf: &mut BytesMut, n: usize) -> std::io::Result<()> {
    if buf.len() >= n {
        let _ = buf.split_to(n);
        return Ok(());
    }
    let mut remaining = n - buf.len();
    buf.clear();
    let mut scratch = vec![0u8; 64 * 1024];
    while remaining > 0 {
        let take = remaining.min(scratch.len());
        let got = r.read(&mut scratch[..take]).await?;
        if got == 0 {
            return Err(other("Postgres closed the connection"));
        }
        remaining -= got;
    }
    Ok(())
}

/// Abandons a pipeline when its request's future is dropped before the answer.
struct Waiting<'m> {
    mux: &'m Arc<Mux>,
    id: u64,
    done: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.mux.abandon(self.id);
        }
    }
}

enum Slot {
    Empty(Option<Instant>),
    Connecting,
    Ready(Arc<Mux>),
}

/// The shared connections of a pool.
pub struct MuxSet {
    slots: Vec<Mutex<Slot>>,
    config: tokio_postgres::Config,
    max_message: usize,
}

impl MuxSet {
    /// `n` shared connections (dialled when first wanted), none when `n` is 0.
    pub fn new(config: tokio_postgres::Config, n: usize, max_message: usize) -> Arc<MuxSet> {
        Arc::new(MuxSet { slots: (0..n).map(|_| Mutex::new(Slot::Empty(None))).collect(), config, max_message })
    }

    /// The least loaded connection that may take a pipeline now; dials empty slots
    /// in the background (this request does not wait for them).
    fn pick(self: &Arc<Self>) -> Option<Arc<Mux>> {
        let now = Instant::now();
        let mut best: Option<(usize, Arc<Mux>)> = None;
        for (i, slot) in self.slots.iter().enumerate() {
            let mux = {
                let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
                if matches!(&*s, Slot::Ready(m) if m.is_dead()) {
                    *s = Slot::Empty(None);
                }
                match &*s {
                    Slot::Ready(m) => m.clone(),
                    Slot::Empty(retry) => {
                        if retry.is_none_or(|t| now >= t) {
                            *s = Slot::Connecting;
                            self.dial(i);
                        }
                        continue;
                    }
                    Slot::Connecting => continue,
                }
            };
            if let Some(load) = mux.free(now) {
                if best.as_ref().is_none_or(|(l, _)| load < *l) {
                    best = Some((load, mux));
                }
            }
        }
        best.map(|(_, m)| m)
    }

    fn dial(self: &Arc<Self>, i: usize) {
        let set = self.clone();
        tokio::spawn(async move {
            let slot = match WireConn::connect(&set.config).await {
                Ok(mut c) => {
                    c.max_message = set.max_message;
                    Slot::Ready(Mux::start(c))
                }
                Err(e) => {
                    tracing::debug!(error = %e, "dialling a shared pipeline connection failed");
                    Slot::Empty(Some(Instant::now() + REDIAL))
                }
            };
            *set.slots[i].lock().unwrap_or_else(|p| p.into_inner()) = slot;
        });
    }

    /// Runs `steps` on a shared connection; None when none may take it now (the
    /// caller leases a connection of its own).
    pub async fn run(self: &Arc<Self>, steps: &[Step<'_>]) -> Option<Outcome> {
        let mut resent = false;
        loop {
            let mux = self.pick()?;
            let (id, rx) = match mux.submit(steps) {
                Ok(x) => x?,
                Err(e) => return Some(Err(e)),
            };
            let mut waiting = Waiting { mux: &mux, id, done: false };
            let out = rx.await.unwrap_or_else(|_| Err(WireError::Io(other("the shared connection failed"))));
            waiting.done = true;
            match out {
                // Rolled back, not by its own doing: a statement another pipeline
                // parsed did not come to be, or a cancel meant for the one before.
                Err(WireError::Db(f)) if !resent && (f.code == "26000" || f.code == RESEND) => resent = true,
                Err(WireError::Db(f)) if f.code == RESEND => return Some(Err(WireError::Db(super::DbFields { code: "57014".into(), ..f }))),
                other => return Some(other),
            }
        }
    }
}
