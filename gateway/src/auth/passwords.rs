//! Password rules and hashing: argon2id with OWASP parameters (m=19 MiB, t=2, p=1);
//! bcrypt hashes (`$2a$`, `$2b$`, `$2y$`) imported from Supabase verify too.
//! Hashing runs on the blocking pool, never on the async workers, and at most
//! PASSWORD_HASH_CONCURRENCY hashes (default: the number of cores) run at once in a
//! gateway: every argon2 run takes 19 MiB, so unbounded concurrency is a memory and
//! CPU flood. Others wait in line up to PASSWORD_HASH_QUEUE_TIMEOUT seconds, then get
//! 429 `over_request_rate_limit` with `Retry-After`. Sign-in verification takes the
//! same line.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use super::error::{AuthError, AuthResult};

/// Shortest password accepted (contract).
pub const MIN_LEN: usize = 8;
/// Longest password accepted (contract), in characters.
pub const MAX_LEN: usize = 256;
/// Longest password accepted, in bytes (256 four-byte characters). Longer input is
/// refused before any hashing; at sign-in it simply cannot match.
pub const MAX_BYTES: usize = 1024;

fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

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
    priority: VecDeque<Waiter>,
    normal: VecDeque<Waiter>,
    next_id: u64,
}

/// The line hashes wait in: `free` slots, handed to waiters (priority first) as
/// running hashes end.
struct Gate {
    line: Mutex<Line>,
    wait: Duration,
}

impl Gate {
    fn new(slots: usize, wait: Duration) -> Gate {
        Gate { line: Mutex::new(Line { free: slots.max(1), ..Default::default() }), wait }
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
}

fn gate() -> &'static Gate {
    GATE.get_or_init(|| Gate::new(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2), Duration::from_secs(5)))
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
async fn gated<T: Send + 'static>(lane: Lane, f: impl FnOnce() -> T + Send + 'static) -> AuthResult<T> {
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

/// The contract's length rule, counted in characters (and at most [`MAX_BYTES`]).
pub fn check(password: &str) -> AuthResult<()> {
    let n = password.chars().count();
    if n < MIN_LEN {
        return Err(AuthError::new(axum::http::StatusCode::BAD_REQUEST, "weak_password", format!("password must be at least {MIN_LEN} characters")));
    }
    if n > MAX_LEN || password.len() > MAX_BYTES {
        return Err(AuthError::new(axum::http::StatusCode::BAD_REQUEST, "weak_password", format!("password must be at most {MAX_LEN} characters")));
    }
    Ok(())
}

/// An argon2id PHC string for `password` (call [`check`] first).
pub async fn hash(password: String) -> AuthResult<String> {
    if password.len() > MAX_BYTES {
        return Err(AuthError::invalid_body("password too long"));
    }
    gated(Lane::Normal, move || {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        argon2().hash_password(password.as_bytes(), &salt).map(|h| h.to_string())
    })
    .await?
    .map_err(|e| AuthError::internal(anyhow::anyhow!("argon2: {e}")))
}

/// The hash of a new password when one is given, after the length rule.
pub async fn checked_hash(password: Option<String>) -> AuthResult<Option<String>> {
    match password {
        Some(pw) => {
            check(&pw)?;
            Ok(Some(hash(pw).await?))
        }
        None => Ok(None),
    }
}

/// True when `password` matches `stored` (argon2 PHC or bcrypt). With no stored
/// hash a dummy verification still runs, so unknown accounts take as long as known
/// ones. A password over [`MAX_BYTES`] matches nothing and is not hashed. 429 when
/// the hashing line is full.
pub async fn verify(password: String, stored: Option<String>) -> AuthResult<bool> {
    verify_in(Lane::Normal, password, stored).await
}

/// [`verify`] in the given line (sign-ins: [`sign_in_lane`]).
pub async fn verify_in(lane: Lane, password: String, stored: Option<String>) -> AuthResult<bool> {
    if password.len() > MAX_BYTES {
        return Ok(false);
    }
    gated(lane, move || match stored.as_deref() {
        Some(h) if h.starts_with("$2a$") || h.starts_with("$2b$") || h.starts_with("$2y$") => bcrypt::verify(&password, h).unwrap_or(false),
        Some(h) => match PasswordHash::new(h) {
            Ok(parsed) => argon2().verify_password(password.as_bytes(), &parsed).is_ok(),
            Err(_) => false,
        },
        None => {
            let _ = argon2().hash_password(password.as_bytes(), &SaltString::from_b64("c29tZXNhbHRzb21lc2FsdA").unwrap());
            false
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn argon2id_round_trip_with_owasp_parameters() {
        let h = hash("correct horse battery".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify("correct horse battery".into(), Some(h.clone())).await.unwrap());
        assert!(!verify("wrong horse battery".into(), Some(h)).await.unwrap());
        assert!(!verify("anything".into(), None).await.unwrap());
    }

    #[tokio::test]
    async fn imported_bcrypt_hashes_verify() {
        let h = bcrypt::hash("imported-password", 4).unwrap();
        assert!(verify("imported-password".into(), Some(h.clone())).await.unwrap());
        assert!(!verify("other-password".into(), Some(h)).await.unwrap());
        assert!(!verify("x".into(), Some("not a hash".into())).await.unwrap());
    }

    #[test]
    fn length_rules_follow_the_contract() {
        assert_eq!(check("1234567").unwrap_err().message, "password must be at least 8 characters");
        assert!(check("12345678").is_ok());
        assert!(check(&"é".repeat(256)).is_ok());
        assert_eq!(check(&"a".repeat(257)).unwrap_err().message, "password must be at most 256 characters");
    }

    #[tokio::test]
    async fn oversized_passwords_are_never_hashed() {
        assert!(!verify("a".repeat(MAX_BYTES + 1), None).await.unwrap());
        assert_eq!(hash("a".repeat(MAX_BYTES + 1)).await.unwrap_err().status, axum::http::StatusCode::BAD_REQUEST);
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
}
