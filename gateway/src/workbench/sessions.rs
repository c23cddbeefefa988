//! Sessions (Rowsel `/v1/sessions`): one connection held for a caller, where
//! queries, executes and an explicit transaction run one after the other; an idle
//! session is closed after WORKBENCH_SESSION_IDLE. A session belongs to the caller
//! that opened it: anyone else gets "not found". `cancel` sends PostgreSQL's cancel
//! request for the statement running in it, without waiting for that statement.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use super::error::WbError;
use super::pools::{Canceller, Lease};
use crate::error::code::workbench as code;

/// Sessions one caller may hold at once.
const PER_OWNER: usize = 8;

/// The longest a session lives, used or not.
const MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// One open session.
pub struct Session {
    /// Its id.
    pub id: uuid::Uuid,
    /// Who opened it.
    pub owner: String,
    /// `user@host:port/database`.
    pub label: String,
    /// The connection; locked while a statement runs.
    pub conn: tokio::sync::Mutex<Lease>,
    canceller: Canceller,
    /// Inside BEGIN … COMMIT/ROLLBACK.
    pub in_transaction: AtomicBool,
    last_used: Mutex<Instant>,
    /// When it was opened.
    pub created: std::time::SystemTime,
}

impl Session {
    /// Notes a use.
    pub fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_used.lock().unwrap_or_else(|e| e.into_inner()).elapsed()
    }

    /// Whether a statement is running.
    pub fn busy(&self) -> bool {
        self.conn.try_lock().is_err()
    }

    /// Sends a cancel request for the running statement; false when none runs.
    pub async fn cancel(&self) -> Result<bool, WbError> {
        if !self.busy() {
            return Ok(false);
        }
        self.canceller.cancel().await.map(|()| true)
    }
}

/// Every open session.
pub struct Sessions {
    map: Mutex<HashMap<uuid::Uuid, Arc<Session>>>,
    max: usize,
    idle: Duration,
}

impl Sessions {
    /// No sessions; at most `max`, closed after `idle`.
    pub fn new(max: usize, idle: Duration) -> Sessions {
        Sessions { map: Mutex::new(HashMap::new()), max, idle }
    }

    /// The idle limit.
    pub fn idle_limit(&self) -> Duration {
        self.idle
    }

    /// Opens a session on a leased connection.
    pub fn open(&self, owner: &str, label: String, lease: Lease) -> Result<Arc<Session>, WbError> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.max {
            return Err(WbError::new(StatusCode::SERVICE_UNAVAILABLE, code::CAPACITY, format!("{} sessions are open (WORKBENCH_SESSIONS)", self.max))
                .hint("Close a session or retry later."));
        }
        if map.values().filter(|s| s.owner == owner).count() >= PER_OWNER {
            return Err(WbError::new(StatusCode::TOO_MANY_REQUESTS, code::CAPACITY, format!("a caller may hold {PER_OWNER} sessions at once")).hint("Close a session first."));
        }
        let s = Arc::new(Session {
            id: uuid::Uuid::new_v4(),
            owner: owner.to_owned(),
            label,
            canceller: lease.canceller.clone(),
            conn: tokio::sync::Mutex::new(lease),
            in_transaction: AtomicBool::new(false),
            last_used: Mutex::new(Instant::now()),
            created: std::time::SystemTime::now(),
        });
        map.insert(s.id, s.clone());
        Ok(s)
    }

    /// The caller's session `id`, without counting as a use.
    pub fn peek(&self, owner: &str, id: &str) -> Result<Arc<Session>, WbError> {
        let not_found = || WbError::new(StatusCode::NOT_FOUND, code::SESSION_NOT_FOUND, "no such session").hint("Sessions close after being idle; open a new one.");
        let id: uuid::Uuid = id.parse().map_err(|_| not_found())?;
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&id) {
            Some(s) if s.owner == owner => Ok(s.clone()),
            _ => Err(not_found()),
        }
    }

    /// The caller's session `id`, for a statement (a use).
    pub fn get(&self, owner: &str, id: &str) -> Result<Arc<Session>, WbError> {
        let not_found = || WbError::new(StatusCode::NOT_FOUND, code::SESSION_NOT_FOUND, "no such session").hint("Sessions close after being idle; open a new one.");
        let id: uuid::Uuid = id.parse().map_err(|_| not_found())?;
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&id) {
            Some(s) if s.owner == owner => {
                s.touch();
                Ok(s.clone())
            }
            _ => Err(not_found()),
        }
    }

    /// Closes the caller's session `id`; its connection is closed, not pooled (it
    /// may hold a transaction or settings).
    pub async fn close(&self, owner: &str, id: &str) -> Result<(), WbError> {
        let s = self.get(owner, id)?;
        self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(&s.id);
        let _ = s.cancel().await;
        end(s);
        Ok(())
    }

    /// Closes sessions idle for longer than the limit.
    pub fn reap(&self) {
        let idle = self.idle;
        let gone: Vec<Arc<Session>> = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            let old = |s: &Session| s.created.elapsed().unwrap_or_default() > MAX_LIFETIME;
            let ids: Vec<uuid::Uuid> = map.values().filter(|s| (!s.busy() && s.idle_for() > idle) || old(s)).map(|s| s.id).collect();
            ids.iter().filter_map(|id| map.remove(id)).collect()
        };
        for s in gone {
            end(s);
        }
    }

    /// Open sessions.
    pub fn count(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Closes the session's connection (never back to the pool: it may hold a
/// transaction, settings or temp tables) once the statement running in it, if any,
/// has ended (a session past its lifetime has it cancelled first).
fn end(s: Arc<Session>) {
    tokio::spawn(async move {
        if s.busy() {
            let _ = s.canceller.cancel().await;
        }
        let mut lease = s.conn.lock().await;
        lease.close();
    });
}

/// Marks the session in or out of a transaction.
pub fn set_transaction(s: &Session, on: bool) {
    s.in_transaction.store(on, Ordering::SeqCst);
}
