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
//! Only read-only pipelines share (a write's commit waits for its WAL flush: one
//! connection would flush them in turn), and only those of a *shape* (their
//! statements' texts) whose last pipeline ended within [`FAST`] — a new shape runs
//! on a connection of its own first, so a slow scan, however new its text, is not
//! put in front of others. A request joins a connection that is idle or moving (its
//! current pipeline began less than [`STALL`] ago) with fewer than [`DEPTH`]
//! pipelines in flight; otherwise it leases a connection of its own from the pool.
//! A pipeline still queued behind another after [`RESCUE`] is withdrawn (it only
//! reads: should it still run, its answer is dropped) and sent on a connection of its
//! own, so a read that turns out slow holds up the ones behind it for at most that.
//! A request that goes away has its statement cancelled if it still runs [`STALL`]
//! after it became the one running; a pipeline rolled back for a reason of ours (a
//! cancel meant for the one before it, a statement another pipeline did not get to
//! parse, a failed connection) is sent again on a connection of its own.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::{encode, other, send_cancel, unknown, CancelKey, Gather, Step, StepResult, Stream, WireConn, WireError, MAX_STATEMENTS};

/// Pipelines a connection may have in flight before requests look elsewhere.
const DEPTH: usize = 32;
/// A connection whose current pipeline began longer ago than this takes no more
/// (a read by key takes Postgres ~50 µs).
const STALL: Duration = Duration::from_millis(1);
/// A pipeline still queued this long after it was sent (behind one that runs long)
/// is withdrawn and sent on a connection of its own (twice the p99 of a read by key
/// under full load on 2 cores).
const RESCUE: Duration = Duration::from_millis(5);
/// A pipeline shape joins the shared connections once one of its pipelines ended
/// within this (a slow one, e.g. a scan, would hold up those sent after it).
const FAST: Duration = Duration::from_millis(5);
/// Shapes remembered (then forgotten all at once).
const MAX_SHAPES: usize = 10_000;
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
    /// Its request went away: its results are read and dropped.
    abandoned: bool,
}

/// What the request side and the reader share.
struct State {
    /// Statement text → name, from the moment its Parse is written (a name whose
    /// Parse did not run is removed when its pipeline's answer is read).
    statements: super::Statements,
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
}

/// One shared connection.
pub struct Mux {
    state: Mutex<State>,
    writes: mpsc::UnboundedSender<BytesMut>,
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
                statements: super::Statements::default(),
                next_statement: 0,
                next_id: 0,
                pending: VecDeque::new(),
                dead: false,
                cancelled: None,
                last_cancel: None,
                front_since: Instant::now(),
            }),
            writes: tx,
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

    /// The pipelines in flight (answered or not, abandoned ones included) if this
    /// connection may take another one now.
    fn free(&self, now: Instant) -> Option<usize> {
        let st = self.lock();
        let load = st.pending.len();
        (!st.dead && (load == 0 || (load < DEPTH && now.duration_since(st.front_since) < STALL))).then_some(load)
    }

    fn is_dead(&self) -> bool {
        self.lock().dead
    }

    /// Encodes and queues `steps` as one pipeline; the receiver gets its results.
    fn submit(&self, steps: &[Step<'_>]) -> Result<(u64, oneshot::Receiver<Outcome>), WireError> {
        let mut st = self.lock();
        if st.dead {
            return Err(WireError::Io(other("the shared connection is closed")));
        }
        if st.statements.len() + steps.len() > MAX_STATEMENTS && st.statements.len() + unknown(steps, &st.statements) > MAX_STATEMENTS {
            let mut buf = BytesMut::new();
            frontend::query("DEALLOCATE ALL", &mut buf)?;
            let id = st.next_id;
            st.next_id += 1;
            if st.pending.is_empty() {
                st.front_since = Instant::now();
            }
            st.pending.push_back(Pending { id, reply: None, fresh: Vec::new(), steps: 1, abandoned: true });
            st.statements.clear();
            self.send(&mut st, buf)?;
        }
        let mut buf = BytesMut::with_capacity(1024);
        let State { statements, next_statement, .. } = &mut *st;
        let fresh = encode(steps, statements, next_statement, &mut buf)?;
        for (text, name) in &fresh {
            st.statements.insert(text.clone(), name.clone());
        }
        let (tx, rx) = oneshot::channel();
        let id = st.next_id;
        st.next_id += 1;
        if st.pending.is_empty() {
            st.front_since = Instant::now();
        }
        st.pending.push_back(Pending { id, reply: Some(tx), fresh, steps: steps.len(), abandoned: false });
        self.send(&mut st, buf)?;
        Ok((id, rx))
    }

    fn send(&self, st: &mut State, buf: BytesMut) -> Result<(), WireError> {
        if self.writes.send(buf).is_err() {
            fail(st);
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
            self.cancel_later(id);
        }
    }

    /// Withdraws pipeline `id` if it is not the front one (not running yet): its
    /// answer will be dropped. False when it is the front one.
    fn withdraw(&self, id: u64) -> bool {
        let mut st = self.lock();
        if st.pending.front().is_none_or(|p| p.id == id) {
            return false;
        }
        match st.pending.iter_mut().find(|p| p.id == id) {
            Some(p) => {
                p.abandoned = true;
                true
            }
            None => false,
        }
    }

    /// Cancels abandoned pipeline `id` if it is still running after [`STALL`] (most
    /// end sooner: a cancel would then strike the pipeline after it).
    fn cancel_later(self: &Arc<Self>, id: u64) {
        let mux = Arc::downgrade(self);
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        rt.spawn(async move {
            tokio::time::sleep(STALL).await;
            let Some(mux) = mux.upgrade() else { return };
            let mut st = mux.lock();
            if st.pending.front().is_some_and(|p| p.id == id) {
                mux.cancel_front(&mut st);
            }
        });
    }

    /// Cancels the front pipeline's statement (its request went away).
    fn cancel_front(&self, st: &mut State) {
        let (Some(front), Some(key)) = (st.pending.front(), self.cancel.clone()) else { return };
        if st.cancelled == Some(front.id) {
            return;
        }
        st.cancelled = Some(front.id);
        st.last_cancel = Some(Instant::now());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = send_cancel(&key).await;
            });
        }
    }
}

/// Marks the connection failed and answers every pipeline in flight.
fn fail(st: &mut State) {
    st.dead = true;
    for p in st.pending.drain(..) {
        if let Some(reply) = p.reply {
            let _ = reply.send(Err(WireError::Io(other("the shared connection failed"))));
        }
    }
}

async fn write_loop(mut w: impl AsyncWrite + Unpin, mut rx: mpsc::UnboundedReceiver<BytesMut>, mux: std::sync::Weak<Mux>) {
    let mut out = BytesMut::new();
    while let Some(first) = rx.recv().await {
        out.unsplit(first); // (takes `first` whole: `out` is empty here)
        while out.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(more) => out.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if w.write_all(&out).await.is_err() {
            if let Some(m) = mux.upgrade() {
                fail(&mut m.lock());
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
    fail(&mut mux.lock());
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
fn answer(mux: &Arc<Mux>, done: Gather) {
    let mut st = mux.lock();
    let Some(p) = st.pending.pop_front() else { return };
    for (text, name) in p.fresh.iter().skip(done.parsed) {
        if st.statements.get(text) == Some(name) {
            st.statements.remove(text);
        }
    }
    st.front_since = Instant::now();
    let struck = st.last_cancel.is_some_and(|t| t.elapsed() < STRUCK);
    if let Some(next) = st.pending.front().filter(|f| f.abandoned && f.reply.is_some()).map(|f| f.id) {
        mux.cancel_later(next);
    }
    let Some(reply) = p.reply else { return };
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
    /// Pipeline shapes (a hash of their statements) → whether the last one ended
    /// within [`FAST`].
    shapes: Mutex<HashMap<u64, bool>>,
    config: tokio_postgres::Config,
    max_message: usize,
}

impl MuxSet {
    /// `n` shared connections (dialled when first wanted), none when `n` is 0.
    pub fn new(config: tokio_postgres::Config, n: usize, max_message: usize) -> Arc<MuxSet> {
        Arc::new(MuxSet { slots: (0..n).map(|_| Mutex::new(Slot::Empty(None))).collect(), shapes: Mutex::new(HashMap::new()), config, max_message })
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

    /// Runs the read-only `steps` on a shared connection; None when none may take
    /// it now, or when it must be sent again (the caller leases a connection of its
    /// own).
    pub async fn run(self: &Arc<Self>, steps: &[Step<'_>]) -> Option<Outcome> {
        let shape = shape(steps);
        if !self.is_fast(shape) {
            return None;
        }
        let mux = self.pick()?;
        let started = Instant::now();
        let (id, rx) = mux.submit(steps).ok()?;
        let mut waiting = Waiting { mux: &mux, id, done: false };
        let mut rx = std::pin::pin!(rx);
        let answer = match tokio::time::timeout(RESCUE, &mut rx).await {
            Ok(answer) => answer,
            // Still queued behind a pipeline that runs long: withdrawn (its answer,
            // should it still run, is dropped) and sent on a connection of its own.
            Err(_) if mux.withdraw(id) => {
                waiting.done = true;
                return None;
            }
            // It is the one running (or about to be answered): waits for it.
            Err(_) => rx.await,
        };
        let out = answer.unwrap_or_else(|_| Err(WireError::Io(other("the shared connection failed"))));
        waiting.done = true;
        match out {
            // Rolled back (or never run), not by its own doing: the connection failed,
            // a statement another pipeline parsed did not come to be, or a cancel meant
            // for the pipeline before struck it. It only read: sent again on a
            // connection of its own.
            Err(WireError::Io(_)) => None,
            Err(WireError::Db(f)) if f.code == "26000" || f.code == RESEND => None,
            other => {
                self.timed(shape, started.elapsed());
                Some(other)
            }
        }
    }

    /// Whether pipelines of `shape` may share a connection: they were seen to end
    /// within [`FAST`] the last time (on a connection of their own at first).
    fn is_fast(&self, shape: u64) -> bool {
        self.shapes.lock().unwrap_or_else(|p| p.into_inner()).get(&shape).is_some_and(|fast| *fast)
    }

    /// Records how long a pipeline of `shape` took.
    pub fn timed(&self, shape: u64, took: Duration) {
        let mut shapes = self.shapes.lock().unwrap_or_else(|p| p.into_inner());
        if shapes.len() >= MAX_SHAPES && !shapes.contains_key(&shape) {
            shapes.clear();
        }
        shapes.insert(shape, took <= FAST);
    }
}

/// A pipeline's shape: a hash of its statements' texts (not their parameters).
pub fn shape(steps: &[Step<'_>]) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    static SEED: std::sync::LazyLock<foldhash::fast::RandomState> = std::sync::LazyLock::new(Default::default);
    let mut h = SEED.build_hasher();
    for step in steps {
        step.sql.hash(&mut h);
        step.text_params.hash(&mut h);
    }
    h.finish()
}
