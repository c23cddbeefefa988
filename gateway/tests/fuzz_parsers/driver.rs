//! The fuzz driver: one target = one property over generated inputs, checked on a
//! small-stack thread (unbounded recursion crashes the test instead of hiding behind
//! the main thread's 8 MiB), with a time bound per input and a watchdog for hangs.
//!
//! Environment:
//! - `FUZZ_CASES` (default 2000): cases per target in the bounded (CI) mode;
//! - `FUZZ_SECONDS`: long mode, each target generates cases until that many seconds
//!   are spent (e.g. 1800 for 30 minutes per target);
//! - `FUZZ_SEED`: fixed RNG seed (printed with every result, to replay a run);
//! - `FUZZ_STACK_KB`: the worker's stack (default 256 KiB);
//! - `FUZZ_TIME_BOUND_MS`: the per-input bound (default 200 ms in debug builds,
//!   50 ms in release builds). An input over it in wall time runs again and is judged
//!   by the thread's CPU time (a loaded machine is not a failure).
//!
//! Every target prints `target <name>: <N> executions, 0 failures ...` (visible with
//! `-- --nocapture`); a failure panics with the shrunk input and the seed.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};

/// Stack of the thread a target runs on. The gateway's handlers run on tokio worker
/// threads with 2 MiB; a parser must fit well within that.
pub const SMALL_STACK: usize = 256 * 1024;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The time one input may take.
pub fn time_bound() -> Duration {
    let default = if cfg!(debug_assertions) { 200 } else { 50 };
    Duration::from_millis(env_u64("FUZZ_TIME_BOUND_MS").unwrap_or(default))
}

fn seed_for(name: &str) -> u64 {
    env_u64("FUZZ_SEED").unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        name.bytes().fold(nanos, |h, b| h.rotate_left(5) ^ u64::from(b))
    })
}

fn shorten(s: String) -> String {
    const MAX: usize = 6000;
    if s.len() <= MAX {
        return s;
    }
    let mut cut = MAX;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes in all)", &s[..cut], s.len())
}

/// CPU time the calling thread has used (Linux), if known.
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse::<u64>().ok().map(Duration::from_nanos)
}

/// Text of a panic payload.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>().map(|s| (*s).to_owned()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_else(|| "(non-text panic)".into())
}

/// Panics of the code under test are reported with the shrunk input; printing each
/// one while proptest shrinks would only bury that report.
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let worker = std::thread::current().name().is_some_and(|n| n.starts_with("fuzz-") && !n.starts_with("fuzz-gen-"));
            if !worker {
                previous(info);
            }
        }));
    });
}

/// Runs `check` on inputs from the strategy `make` builds. Inputs are generated on a
/// generator thread with a large stack (proptest's recursive strategies need it in
/// debug builds) and checked on a worker thread with `stack` bytes, so only the code
/// under test runs on the small stack. `check` fails with `prop_assert!` or by
/// panicking; each call must also return within [`time_bound`].
pub fn fuzz<S, M, F>(name: &'static str, stack: usize, make: M, check: F)
where
    S: Strategy + 'static,
    S::Value: Debug + Clone + Send + 'static,
    M: FnOnce() -> S + Send + 'static,
    F: Fn(S::Value) -> Result<(), TestCaseError> + Send + 'static,
{
    quiet_panics();
    let seconds = env_u64("FUZZ_SECONDS");
    let cases = env_u64("FUZZ_CASES").unwrap_or(2000).max(1);
    let stack = env_u64("FUZZ_STACK_KB").map_or(stack, |kb| kb as usize * 1024);
    let seed = seed_for(name);
    let executions = Arc::new(AtomicU64::new(0));
    let current: Arc<Mutex<Option<S::Value>>> = Arc::new(Mutex::new(None));
    let (tx, rx) = mpsc::channel::<Result<(), String>>();
    let started = Instant::now();

    // The worker: runs the code under test on the small stack.
    let (to_worker, inputs) = mpsc::channel::<S::Value>();
    let (to_runner, verdicts) = mpsc::channel::<Result<(), TestCaseError>>();
    std::thread::Builder::new()
        .name(format!("fuzz-{name}"))
        .stack_size(stack)
        .spawn(move || {
            let bound = time_bound();
            let run = |v: S::Value| {
                let t = Instant::now();
                let verdict = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(v))) {
                    Ok(r) => r,
                    Err(p) => Err(TestCaseError::fail(format!("panicked: {}", panic_text(p.as_ref())))),
                };
                (verdict, t.elapsed())
            };
            for v in inputs {
                let (mut verdict, took) = run(v.clone());
                // Over the bound in wall time: once more, judged by the thread's CPU
                // time, so that a busy machine is not a failure.
                if verdict.is_ok() && took > bound {
                    let cpu = thread_cpu();
                    let (again, wall) = run(v);
                    let spent = match (cpu, thread_cpu()) {
                        (Some(a), Some(b)) => b.saturating_sub(a),
                        _ => wall,
                    };
                    verdict = again.and_then(|()| {
                        if spent > bound {
                            Err(TestCaseError::fail(format!("took {spent:?} of CPU time ({wall:?} wall; {took:?} the first time), over the {bound:?} bound per input")))
                        } else {
                            Ok(())
                        }
                    });
                }
                if to_runner.send(verdict).is_err() {
                    break;
                }
            }
        })
        .expect("spawn the fuzz worker");

    // The generator: proptest's runner (generation, shrinking).
    {
        let (executions, current) = (executions.clone(), current.clone());
        std::thread::Builder::new()
            .name(format!("fuzz-gen-{name}"))
            .stack_size(64 * 1024 * 1024)
            .spawn(move || {
                let strategy = make();
                // Long mode runs batches until the budget is spent, each with its own
                // seed (a runner stops after `cases` successes, so each batch needs a
                // fresh one); batch 0 uses the run's seed.
                let batch = if seconds.is_some() { 500 } else { cases };
                let mut batch_no = 0u64;
                let result = loop {
                    let batch_seed = seed.wrapping_add(batch_no.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                    let config = Config {
                        cases: u32::try_from(batch).unwrap_or(u32::MAX),
                        failure_persistence: None,
                        rng_seed: RngSeed::Fixed(batch_seed),
                        max_shrink_iters: 4096,
                        source_file: None,
                        ..Config::default()
                    };
                    let run = TestRunner::new(config).run(&strategy, |v| {
                        *current.lock().unwrap_or_else(|e| e.into_inner()) = Some(v.clone());
                        executions.fetch_add(1, Ordering::Relaxed);
                        to_worker.send(v).map_err(|_| TestCaseError::fail("the worker died"))?;
                        verdicts.recv().map_err(|_| TestCaseError::fail("the worker died"))?
                    });
                    if let Err(e) = run {
                        let replay = format!("replay: FUZZ_SEED={batch_seed} FUZZ_CASES={batch}");
                        break Err(match e {
                            TestError::Fail(why, input) => format!("{why}\n{replay}\nminimal failing input: {}", shorten(format!("{input:?}"))),
                            TestError::Abort(why) => format!("aborted: {why}\n{replay}"),
                        });
                    }
                    batch_no += 1;
                    match seconds {
                        Some(s) if started.elapsed() < Duration::from_secs(s) => continue,
                        _ => break Ok(()),
                    }
                };
                let _ = tx.send(result);
            })
            .expect("spawn the fuzz generator");
    }
    // A hang is a failure too: the watchdog reports the input being processed.
    let budget = Duration::from_secs(seconds.unwrap_or(0) + 600);
    let outcome = rx.recv_timeout(budget);
    let n = executions.load(Ordering::Relaxed);
    let took = started.elapsed();
    match outcome {
        Ok(Ok(())) => println!("target {name}: {n} executions, 0 failures ({took:.1?}, seed {seed})"),
        Ok(Err(msg)) => panic!("target {name}: 1 failure after {n} executions (seed {seed}):\n{msg}"),
        Err(RecvTimeoutError::Timeout) => {
            let input = current.lock().unwrap_or_else(|e| e.into_inner()).clone();
            panic!("target {name}: no answer for {budget:?} after {n} executions (seed {seed}); input being processed: {}", shorten(format!("{input:?}")))
        }
        Err(RecvTimeoutError::Disconnected) => panic!("target {name}: the fuzz thread died after {n} executions (seed {seed})"),
    }
}
