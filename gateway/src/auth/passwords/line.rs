//! The line password operations wait in: at most PASSWORD_HASH_CONCURRENCY run at
//! once (default: the number of cores), on the blocking pool; the others wait up to
//! PASSWORD_HASH_QUEUE_TIMEOUT seconds, then get 429 with `Retry-After`. Returning
//! clients' sign-ins wait in a priority line ahead of everything else.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::auth::error::{AuthError, AuthResult};

/// Which line a password operation waits in (see [`sign_in_lane`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// A sign-in from a client whose last sign-in succeeded.
    Priority,
    /// Everything else.
    Normal,
}

struct Waiter {
    id: u64,
    tx: tokio::sync::oneshot::Sender<()>,
}

#[derive(Default)]
struct Line {
    free: usize,
    /// Most waiters in the normal line (see [`WAITERS_PER_SLOT`]).
    max_normal: usize,
    priority: VecDeque<Waiter>,
    normal: VecDeque<Waiter>,
    next_id: u64,
}

/// Waiters per slot in the normal line. A hash takes ~20 ms per core, so 64 waiters
/// per slot are served within about 1.3 s; a longer line could not be served within
/// the wait anyway, and each request waiting in it holds its connection, body and
/// state (300 waiting sign-ups were ~25 MiB). Beyond it: 429 at once. The priority
/// line (returning clients) has no such cap: it is not the attacker's.
const WAITERS_PER_SLOT: usize = 64;

/// The line hashes wait in: `free` slots, handed to waiters (priority first) as
/// running hashes end.
struct Gate {
    line: Mutex<Line>,
    wait: Duration,
}

impl Gate {
    fn new(slots: usize, wait: Duration) -> Gate {
        let slots = slots.max(1);
        Gate { line: Mutex::new(Line { free: slots, max_normal: slots * WAITERS_PER_SLOT, ..Default::default() }), wait }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Line> {
        self.line.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot ended: to the first waiter still waiting, else back to the pool.
    fn release(&self) {
        let mut line = self.lock();
        loop {
            let next = match line.priority.pop_front() {
                Some(w) => Some(w),
                None => line.normal.pop_front(),
            };
            match next {
                Some(w) => {
                    if w.tx.send(()).is_ok() {
                        return;
                    }
                }
                None => {
                    line.free += 1;
                    return;
                }
            }
        }
    }
}

/// A running password operation's slot.
struct Permit(&'static Gate);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// A place in the line. Dropped without its slot (timeout, request gone), it leaves
/// the line — or passes on a slot that was handed to it meanwhile.
struct Waiting {
    gate: &'static Gate,
    id: u64,
    lane: Lane,
    rx: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        let mut line = self.gate.lock();
        let q = if self.lane == Lane::Priority { &mut line.priority } else { &mut line.normal };
        if let Some(pos) = q.iter().position(|w| w.id == self.id) {
            q.remove(pos);
            return;
        }
        drop(line);
        // Handed a slot under the lock before we took it: pass it on.
        if rx.try_recv().is_ok() {
            self.gate.release();
        }
    }
}

static GATE: OnceLock<Gate> = OnceLock::new();

/// Sets the gateway-wide bound (first call wins; the router calls it at start).
pub fn configure(concurrency: usize, wait_secs: u64) {
    let _ = GATE.set(Gate::new(concurrency, Duration::from_secs(wait_secs.max(1))));
    super::memory::start_trimming();
}

fn gate() -> &'static Gate {
    GATE.get_or_init(|| Gate::new(crate::config::cores(), Duration::from_secs(5)))
}

/// A slot, or 429 when none frees up in time.
async fn permit(lane: Lane) -> AuthResult<Permit> {
    acquire(gate(), lane).await
}

async fn acquire(g: &'static Gate, lane: Lane) -> AuthResult<Permit> {
    let mut waiting = {
        let mut line = g.lock();
        if line.free > 0 {
            line.free -= 1;
            return Ok(Permit(g));
        }
        if lane == Lane::Normal && line.normal.len() >= line.max_normal {
            drop(line);
            tracing::warn!("password hashing line is full; request refused");
            return Err(AuthError::too_many("too many password operations in progress, try again later", g.wait.as_secs()));
        }
        let id = line.next_id;
        line.next_id += 1;
        let (tx, rx) = tokio::sync::oneshot::channel();
        match lane {
            Lane::Priority => line.priority.push_back(Waiter { id, tx }),
            Lane::Normal => line.normal.push_back(Waiter { id, tx }),
        }
        Waiting { gate: g, id, lane, rx: Some(rx) }
    };
    let rx = waiting.rx.as_mut().expect("set above");
    if let Ok(Ok(())) = tokio::time::timeout(g.wait, rx).await {
        waiting.rx = None;
        return Ok(Permit(g));
    }
    drop(waiting);
    tracing::warn!("password hashing is saturated; request refused");
    Err(AuthError::too_many("too many password operations in progress, try again later", g.wait.as_secs()))
}

/// Runs `f` on the blocking pool holding a slot (kept until `f` ends, even when
/// the request is dropped meanwhile).
pub(super) async fn gated<T: Send + 'static>(lane: Lane, f: impl FnOnce() -> T + Send + 'static) -> AuthResult<T> {
    let p = permit(lane).await?;
    tokio::task::spawn_blocking(move || {
        let out = f();
        drop(p);
        out
    })
    .await
    .map_err(AuthError::internal)
}

/// What this gateway saw of a client's sign-ins (per
/// [`crate::http::rate_limit::client_key`]): its last success and last failure.
#[derive(Clone, Copy, Default)]
struct Seen {
    success: Option<Instant>,
    failure: Option<Instant>,
}

static SEEN: OnceLock<Mutex<HashMap<IpAddr, Seen>>> = OnceLock::new();
/// How long a successful sign-in vouches for its client.
const TRUST: Duration = Duration::from_secs(24 * 3600);
const MAX_SEEN: usize = 100_000;

fn seen() -> std::sync::MutexGuard<'static, HashMap<IpAddr, Seen>> {
    SEEN.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner())
}

fn key(ip: Option<&str>) -> Option<IpAddr> {
    ip.and_then(|i| i.parse::<IpAddr>().ok()).map(crate::http::rate_limit::client_key)
}

/// The line for a sign-in from `ip`: the priority line for a client whose last
/// sign-in here succeeded (within a day) and that has failed none since. Floods —
/// wrong passwords, sign-ups, password changes, from however many addresses — then
/// delay a returning user's sign-in by the hashes already running, not by the queue.
pub fn sign_in_lane(ip: Option<&str>) -> Lane {
    let Some(k) = key(ip) else { return Lane::Normal };
    match seen().get(&k) {
        Some(Seen { success: Some(ok), failure }) if ok.elapsed() < TRUST && failure.is_none_or(|f| f < *ok) => Lane::Priority,
        _ => Lane::Normal,
    }
}

/// Records a sign-in's outcome for its client.
pub fn note_sign_in(ip: Option<&str>, ok: bool) {
    let Some(k) = key(ip) else { return };
    let mut m = seen();
    if m.len() >= MAX_SEEN && !m.contains_key(&k) {
        m.retain(|_, s| s.success.is_some_and(|t| t.elapsed() < TRUST));
        if m.len() >= MAX_SEEN {
            return;
        }
    }
    let e = m.entry(k).or_default();
    if ok {
        e.success = Some(Instant::now());
    } else {
        e.failure = Some(Instant::now());
    }
}

#[cfg(test)]
mod gate_tests {
    use super::*;

    fn gate(slots: usize, wait_ms: u64) -> &'static Gate {
        Box::leak(Box::new(Gate::new(slots, Duration::from_millis(wait_ms))))
    }

    #[tokio::test]
    async fn priority_sign_ins_pass_the_queue_and_timeouts_leave_it() {
        let g = gate(1, 2000);
        let running = acquire(g, Lane::Normal).await.unwrap();
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, lane) in [(0, Lane::Normal), (1, Lane::Normal), (2, Lane::Priority), (3, Lane::Normal)] {
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                let p = acquire(g, lane).await.unwrap();
                order.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(p);
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(running);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![2, 0, 1, 3], "the priority waiter first, then in order");
        // A waiter that times out leaves the line; the slot count stays right.
        let g = gate(1, 100);
        let held = acquire(g, Lane::Normal).await.unwrap();
        assert!(acquire(g, Lane::Normal).await.is_err());
        drop(held);
        let a = acquire(g, Lane::Normal).await.unwrap();
        assert!(acquire(g, Lane::Priority).await.is_err(), "one slot only");
        drop(a);
        assert_eq!(g.lock().free, 1);
    }

    #[tokio::test]
    async fn an_abandoned_waiter_passes_its_slot_on() {
        let g = gate(1, 5000);
        let held = acquire(g, Lane::Normal).await.unwrap();
        let abandoned = tokio::spawn(acquire(g, Lane::Normal));
        tokio::time::sleep(Duration::from_millis(20)).await;
        abandoned.abort();
        let _ = abandoned.await;
        drop(held);
        let again = tokio::time::timeout(Duration::from_millis(500), acquire(g, Lane::Normal)).await;
        assert!(matches!(again, Ok(Ok(_))), "the slot was not lost");
    }

    #[tokio::test]
    async fn a_full_normal_line_refuses_at_once_and_priority_still_waits() {
        let g = gate(1, 5000);
        let held = acquire(g, Lane::Normal).await.unwrap();
        let mut queued = Vec::new();
        for _ in 0..WAITERS_PER_SLOT {
            queued.push(tokio::spawn(acquire(g, Lane::Normal)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(g.lock().normal.len(), WAITERS_PER_SLOT);
        let t = std::time::Instant::now();
        let refused = acquire(g, Lane::Normal).await;
        assert!(refused.is_err_and(|e| e.status == axum::http::StatusCode::TOO_MANY_REQUESTS));
        assert!(t.elapsed() < Duration::from_millis(100), "refused at once, not after the wait");
        // A returning client's sign-in still queues, ahead of the full line.
        let priority = tokio::spawn(acquire(g, Lane::Priority));
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        let p = tokio::time::timeout(Duration::from_secs(1), priority).await.unwrap().unwrap().unwrap();
        drop(p);
        for q in queued {
            drop(q.await.unwrap().unwrap());
        }
        assert_eq!(g.lock().free, 1);
    }
}
