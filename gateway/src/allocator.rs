//! The process allocator (mimalloc) and how it gives memory back.
//!
//! A request allocates many small, short-lived buffers (headers, JSON, SQL text);
//! glibc malloc showed as 14% of the gateway's CPU under load, so the binary uses
//! mimalloc. What mimalloc frees is "purged" back to the kernel after a delay; two
//! settings decide whether a spike (a flood of connections, a big batch) leaves the
//! process bigger for good (issue 20: RSS within +64 MiB 60 s after):
//!
//! - **Decommit, later.** A purge that only resets pages (MADV_FREE) keeps them in
//!   RSS until the kernel is short of memory, so the gateway stayed ~130 MiB bigger
//!   after a flood. A purge that decommits right away (mimalloc's 10 ms default)
//!   faults pages back in on the next request: a 100-row insert's p99 went from 16 to
//!   72 ms. So: decommit, but only memory unused for `PURGE_DELAY_MS` (arenas: 10×
//!   that), which steady load reuses long before.
//! - **Collect when idle.** mimalloc purges a thread's memory when that thread next
//!   allocates; a tokio worker that has gone quiet after a spike may not for minutes.
//!   Each worker, when it parks, collects at most once per `COLLECT_EVERY`.
//!
//! Each option can still be set through mimalloc's own environment variables
//! (MIMALLOC_PURGE_DECOMMITS, MIMALLOC_PURGE_DELAY, ...), for measurements.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc.h `mi_option_e` indexes (v2).
const PURGE_DECOMMITS: i32 = 5;
const ABANDONED_PAGE_PURGE: i32 = 12;
const PURGE_DELAY: i32 = 15;

const PURGE_DELAY_MS: i64 = 1000;
const COLLECT_EVERY: Duration = Duration::from_secs(1);

/// Set the options, before any other thread exists.
pub fn configure() {
    let set = |env: &str, option: i32, value: i64| {
        if std::env::var_os(env).is_none() {
            // SAFETY: sets a process-wide integer option; mimalloc reads options atomically.
            unsafe { libmimalloc_sys::mi_option_set(option, value as _) };
        }
    };
    set("MIMALLOC_PURGE_DECOMMITS", PURGE_DECOMMITS, 1);
    set("MIMALLOC_PURGE_DELAY", PURGE_DELAY, PURGE_DELAY_MS);
    // A thread that ends (tokio's blocking pool, after 10 s idle) purges what it held.
    set("MIMALLOC_ABANDONED_PAGE_PURGE", ABANDONED_PAGE_PURGE, 1);
    // PGSTACK_NO_IDLE_COLLECT=1 turns the idle collection off (measurements).
    IDLE_COLLECT.store(std::env::var_os("PGSTACK_NO_IDLE_COLLECT").is_none(), Ordering::Relaxed);
}

static IDLE_COLLECT: AtomicBool = AtomicBool::new(false);

thread_local! {
    static LAST_COLLECT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Called by each runtime worker when it parks (nothing to run): at most once per
/// `COLLECT_EVERY`, free this thread's unused pages and purge what has expired.
pub fn on_park() {
    if !IDLE_COLLECT.load(Ordering::Relaxed) {
        return;
    }
    LAST_COLLECT.with(|last| {
        let now = Instant::now();
        if last.get().is_some_and(|t| now.duration_since(t) < COLLECT_EVERY) {
            return;
        }
        last.set(Some(now));
        // SAFETY: mi_collect only walks this thread's heap and the shared arenas.
        unsafe { libmimalloc_sys::mi_collect(false) };
    });
}
