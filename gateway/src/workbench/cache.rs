//! Poge's read cache: answers of read-only queries keyed by target, SQL and
//! parameters, kept for WORKBENCH_CACHE_TTL within WORKBENCH_CACHE_MAX_BYTES (oldest
//! first out), dropped for a target as soon as a write runs on it through the API.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::target::Key;

struct Entry {
    target: Key,
    body: Arc<str>,
    at: Instant,
}

#[derive(Default)]
struct Inner {
    map: HashMap<[u8; 32], Entry>,
    order: VecDeque<[u8; 32]>,
    bytes: usize,
}

/// The cache.
pub struct ReadCache {
    inner: Mutex<Inner>,
    ttl: Duration,
    max_bytes: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

/// Its numbers.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheStats {
    /// Answers served from the cache.
    pub hits: u64,
    /// Reads that ran.
    pub misses: u64,
    /// hits / (hits + misses), 0 when nothing was asked.
    pub hit_rate: f64,
    /// Answers kept.
    pub entries: usize,
    /// Their size.
    pub size_bytes: usize,
    /// The size limit.
    pub max_bytes: usize,
    /// Seconds an answer is kept.
    pub ttl_seconds: u64,
    /// Answers pushed out by the size limit, expired or invalidated.
    pub evictions: u64,
}

/// The key of one read.
pub fn key_of(target: Key, sql: &str, params: &serde_json::Value) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(target.0);
    h.update((sql.len() as u64).to_le_bytes());
    h.update(sql.as_bytes());
    h.update(params.to_string().as_bytes());
    h.finalize().into()
}

impl ReadCache {
    /// Empty.
    pub fn new(ttl: Duration, max_bytes: usize) -> ReadCache {
        ReadCache { inner: Mutex::new(Inner::default()), ttl, max_bytes, hits: AtomicU64::new(0), misses: AtomicU64::new(0), evictions: AtomicU64::new(0) }
    }

    fn enabled(&self) -> bool {
        !self.ttl.is_zero() && self.max_bytes > 0
    }

    /// A kept answer (counts a hit or a miss).
    pub fn get(&self, key: &[u8; 32]) -> Option<Arc<str>> {
        let found = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            match inner.map.get(key) {
                Some(e) if e.at.elapsed() < self.ttl => Some(e.body.clone()),
                Some(_) => {
                    if let Some(e) = inner.map.remove(key) {
                        inner.bytes -= e.body.len();
                        self.evictions.fetch_add(1, Ordering::Relaxed);
                    }
                    None
                }
                None => None,
            }
        };
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Keeps an answer (not when it alone is over a tenth of the cache).
    pub fn put(&self, key: [u8; 32], target: Key, body: Arc<str>) {
        if !self.enabled() || body.len() > self.max_bytes / 10 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = inner.map.insert(key, Entry { target, body: body.clone(), at: Instant::now() }) {
            inner.bytes -= old.body.len();
        } else {
            inner.order.push_back(key);
        }
        inner.bytes += body.len();
        while inner.bytes > self.max_bytes {
            let Some(k) = inner.order.pop_front() else { break };
            if let Some(e) = inner.map.remove(&k) {
                inner.bytes -= e.body.len();
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        if inner.order.len() > 2 * inner.map.len() + 64 {
            let Inner { map, order, .. } = &mut *inner;
            order.retain(|k| map.contains_key(k));
        }
    }

    /// Drops every answer of `target` (a write ran on it).
    pub fn invalidate(&self, target: Key) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let before = inner.map.len();
        let mut freed = 0;
        inner.map.retain(|_, e| {
            let keep = e.target != target;
            if !keep {
                freed += e.body.len();
            }
            keep
        });
        inner.bytes -= freed;
        self.evictions.fetch_add((before - inner.map.len()) as u64, Ordering::Relaxed);
    }

    /// Drops everything; the number of answers dropped.
    pub fn clear(&self) -> usize {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let n = inner.map.len();
        *inner = Inner::default();
        n
    }

    /// The numbers.
    pub fn stats(&self) -> CacheStats {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (hits, misses) = (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed));
        CacheStats {
            hits,
            misses,
            hit_rate: if hits + misses == 0 { 0.0 } else { hits as f64 / (hits + misses) as f64 },
            entries: inner.map.len(),
            size_bytes: inner.bytes,
            max_bytes: self.max_bytes,
            ttl_seconds: self.ttl.as_secs(),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_size_and_invalidation() {
        let c = ReadCache::new(Duration::from_secs(60), 1000);
        let (a, b) = (Key([1; 32]), Key([2; 32]));
        let k1 = key_of(a, "select 1", &serde_json::json!([]));
        assert!(c.get(&k1).is_none());
        c.put(k1, a, Arc::from("x".repeat(50)));
        assert_eq!(c.get(&k1).as_deref(), Some("x".repeat(50).as_str()));
        let k2 = key_of(b, "select 1", &serde_json::json!([]));
        assert_ne!(k1, k2, "the target is part of the key");
        c.put(k2, b, Arc::from("y"));
        c.invalidate(a);
        assert!(c.get(&k1).is_none());
        assert!(c.get(&k2).is_some());
        for i in 0..100 {
            c.put(key_of(b, &format!("select {i}"), &serde_json::json!([])), b, Arc::from("z".repeat(90)));
        }
        let s = c.stats();
        assert!(s.size_bytes <= 1000 && s.entries <= 12, "{s:?}");
        assert_eq!((s.hits, s.misses), (2, 2));
        c.put(key_of(b, "big", &serde_json::json!([])), b, Arc::from("w".repeat(200)));
        assert!(c.get(&key_of(b, "big", &serde_json::json!([]))).is_none(), "an answer over a tenth of the cache is not kept");
        assert!(c.clear() > 0);
        assert_eq!(c.stats().entries, 0);
    }

    #[test]
    fn expired_answers_are_misses() {
        let c = ReadCache::new(Duration::from_millis(1), 1000);
        let k = key_of(Key([1; 32]), "select 1", &serde_json::json!(null));
        c.put(k, Key([1; 32]), Arc::from("x"));
        std::thread::sleep(Duration::from_millis(5));
        assert!(c.get(&k).is_none());
    }
}
