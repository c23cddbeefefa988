//! Abuse client for bench/abuse.sh (issues 14 and 20): runs one abusive scenario
//! against a running gateway over real loopback sockets while a sampler measures, every
//! second, /health latency, a password sign-in's latency, the gateway's RSS and open
//! descriptors (from /proc/<pid>), the backends it holds (pg_stat_activity) and the
//! webhook outbox's size. Prints one JSON line per scenario; `report` turns those lines
//! into markdown tables.
//!
//!   abuse setup                 tables, users, bucket, webhook (idempotent)
//!   abuse run <scenario>        baseline, the scenario, then AFTER seconds of quiet
//!   abuse report <file.jsonl>   markdown tables with PASS / FAIL per target
//!
//! Settings come from the environment (set by the script): API, ANON, SERVICE, SU
//! (superuser URL), GW_PID, POOL_BOUND (3 × DB_POOL_SIZE + 1: the three pools and the LISTEN
//! connection), AFTER (seconds measured after the scenario, default 60), QUICK=1 (small
//! counts), RPORT (the webhook receiver's port, setup only).
//!
//! Abusive traffic comes from 127.0.0.2 … 127.0.0.251 (so the per-IP limiters alone do
//! not make a scenario trivial); the sampler's /health and sign-in come from 127.0.0.254,
//! setup from 127.0.0.1. Every scenario is bounded in count and in time.

#[path = "abuse/raw.rs"]
mod raw;
#[path = "abuse/scenarios.rs"]
mod scenarios;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::task::JoinSet;

/// The sampler's own address (its sign-ins have their own AUTH_RATE_LIMIT bucket).
pub const SAMPLER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 254);
/// Number of abusive source addresses (127.0.0.2 ..= 127.0.0.251).
pub const ABUSER_IPS: usize = 250;
/// The sampler's user (created by `setup`).
pub const SAMPLER_EMAIL: &str = "sampler@abuse.test";
pub const SAMPLER_PASSWORD: &str = "sampler-password-0123";
/// Password of the users the hashing scenario creates and targets.
pub const VICTIM_PASSWORD: &str = "victim-password-0123";

/// The i-th abusive source address.
pub fn abuser_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % ABUSER_IPS) as u8))
}

/// Settings from the environment.
#[derive(Clone)]
pub struct Env {
    pub api: String,
    pub anon: String,
    pub service: String,
    pub su: String,
    pub pid: u32,
    pub pool_bound: i64,
    pub after: u64,
    pub quick: bool,
}

impl Env {
    fn load() -> anyhow::Result<Env> {
        let var = |k: &str| std::env::var(k).with_context(|| format!("{k} is not set"));
        let api = var("API")?;
        // All traffic stays on loopback.
        if !api.starts_with("http://127.") {
            bail!("API must be http://127.x.y.z:port (loopback only), not {api}");
        }
        Ok(Env {
            api: api.trim_end_matches('/').to_owned(),
            anon: var("ANON")?,
            service: var("SERVICE")?,
            su: var("SU")?,
            pid: std::env::var("GW_PID").ok().and_then(|p| p.parse().ok()).unwrap_or(0),
            pool_bound: std::env::var("POOL_BOUND").ok().and_then(|p| p.parse().ok()).unwrap_or(0),
            after: std::env::var("AFTER").ok().and_then(|p| p.parse().ok()).unwrap_or(60),
            quick: std::env::var("QUICK").is_ok_and(|q| !q.is_empty() && q != "0"),
        })
    }
    /// `full` normally, `quick` with QUICK=1.
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }
    /// host:port of the API.
    pub fn host(&self) -> String {
        self.api.trim_start_matches("http://").to_owned()
    }
}

/// A client builder for plain HTTP on loopback, with one shared TLS connector: each
/// client would otherwise build its own OpenSSL context (~70 ms of CPU each).
pub fn plain_http() -> reqwest::ClientBuilder {
    static TLS: std::sync::OnceLock<Option<native_tls::TlsConnector>> = std::sync::OnceLock::new();
    let b = reqwest::Client::builder();
    match TLS.get_or_init(|| native_tls::TlsConnector::new().ok()) {
        Some(tls) => b.use_preconfigured_tls(tls.clone()),
        None => b,
    }
}

/// One HTTP client per abusive address.
pub fn abuser_clients() -> anyhow::Result<Vec<reqwest::Client>> {
    (0..ABUSER_IPS).map(|i| Ok(plain_http().local_address(abuser_ip(i)).pool_idle_timeout(Duration::from_secs(5)).build()?)).collect()
}

/// Counts of outcomes ("201", "429", "timeout", ...).
#[derive(Clone, Default)]
pub struct Hist(Arc<Mutex<BTreeMap<String, u64>>>);

impl Hist {
    pub fn bump(&self, key: impl Into<String>) {
        *self.0.lock().unwrap().entry(key.into()).or_insert(0) += 1;
    }
    pub fn json(&self) -> Value {
        json!(self.0.lock().unwrap().clone())
    }
}

/// A reqwest error as a short outcome key.
pub fn err_key(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect_error".into()
    } else if e.is_body() || e.is_decode() {
        "body_error".into()
    } else {
        "error".into()
    }
}

// ---------------------------------------------------------------------------------
// The sampler

const BASE: u8 = 0;
const ATTACK: u8 = 1;
const AFTER: u8 = 2;

/// One measurement: kind ("health", "signin", "rss_kib", "fds", "backends", "outbox").
#[derive(Clone)]
struct Rec {
    phase: u8,
    kind: &'static str,
    value: f64,
    ok: bool,
}

struct Sampler {
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    recs: Arc<Mutex<Vec<Rec>>>,
    task: tokio::task::JoinHandle<JoinSet<()>>,
}

/// (VmRSS KiB, open descriptors, soft descriptor limit) of a process.
pub fn proc_stats(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0);
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let limit = limits.lines().find(|l| l.starts_with("Max open files")).and_then(|l| l.split_whitespace().nth(3)?.parse().ok()).unwrap_or(0);
    (rss, fds, limit)
}

impl Sampler {
    async fn start(env: &Env) -> anyhow::Result<Sampler> {
        let http = plain_http().local_address(IpAddr::V4(SAMPLER_IP)).build()?;
        let (db, conn) = tokio_postgres::connect(&env.su, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        let db = Arc::new(db);
        let (phase, stop, recs) = (Arc::new(AtomicU8::new(BASE)), Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
        let (p, s, r, env) = (phase.clone(), stop.clone(), recs.clone(), env.clone());
        let task = tokio::spawn(async move {
            let mut probes = JoinSet::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while !s.load(Ordering::Relaxed) {
                tick.tick().await;
                let ph = p.load(Ordering::Relaxed);
                let (rss, fds, _) = proc_stats(env.pid);
                r.lock().unwrap().extend([Rec { phase: ph, kind: "rss_kib", value: rss as f64, ok: true }, Rec { phase: ph, kind: "fds", value: fds as f64, ok: true }]);
                let (h, rr) = (http.clone(), r.clone());
                let url = format!("{}/health", env.api);
                probes.spawn(async move {
                    let t = Instant::now();
                    let ok = match h.get(url).timeout(Duration::from_secs(10)).send().await {
                        Ok(res) => res.status().is_success() && res.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    rr.lock().unwrap().push(Rec { phase: ph, kind: "health", value: t.elapsed().as_secs_f64() * 1000.0, ok });
                });
                let (h, rr) = (http.clone(), r.clone());
                let url = format!("{}/auth/v1/token?grant_type=password", env.api);
                let anon = env.anon.clone();
                probes.spawn(async move {
                    let t = Instant::now();
                    let body = json!({"email": SAMPLER_EMAIL, "password": SAMPLER_PASSWORD});
                    let ok = match h.post(url).header("apikey", anon).json(&body).timeout(Duration::from_secs(10)).send().await {
                        Ok(res) => res.status().is_success() && res.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    rr.lock().unwrap().push(Rec { phase: ph, kind: "signin", value: t.elapsed().as_secs_f64() * 1000.0, ok });
                });
                let (d, rr) = (db.clone(), r.clone());
                probes.spawn(async move {
                    let q = "SELECT (SELECT count(*) FROM pg_stat_activity WHERE usename = 'authenticator' AND backend_type = 'client backend'), count(*), count(*) FILTER (WHERE status::text <> 'delivered') FROM pgr.webhook_outbox";
                    if let Ok(Ok(row)) = tokio::time::timeout(Duration::from_secs(10), d.query_one(q, &[])).await {
                        let (b, o, p): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
                        rr.lock().unwrap().extend([
                            Rec { phase: ph, kind: "backends", value: b as f64, ok: true },
                            Rec { phase: ph, kind: "outbox", value: o as f64, ok: true },
                            Rec { phase: ph, kind: "outbox_undelivered", value: p as f64, ok: true },
                        ]);
                    }
                });
                while probes.try_join_next().is_some() {}
            }
            probes
        });
        Ok(Sampler { phase, stop, recs, task })
    }

    fn set(&self, phase: u8) {
        self.phase.store(phase, Ordering::Relaxed);
    }

    /// Stops sampling and waits for the probes still in flight (each has a timeout).
    async fn finish(self) -> Vec<Rec> {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(mut probes) = self.task.await {
            while probes.join_next().await.is_some() {}
        }
        let recs = self.recs.lock().unwrap().clone();
        recs
    }
}

fn max_of(recs: &[Rec], kind: &str, phases: &[u8]) -> Option<f64> {
    recs.iter().filter(|r| r.kind == kind && phases.contains(&r.phase)).map(|r| r.value).fold(None, |m, v| Some(m.map_or(v, |m: f64| m.max(v))))
}

// ---------------------------------------------------------------------------------
// One scenario run

async fn run(env: &Env, name: &str) -> anyhow::Result<Value> {
    if env.pid == 0 || env.pool_bound == 0 {
        bail!("GW_PID and POOL_BOUND must be set");
    }
    let sampler = Sampler::start(env).await?;
    tokio::time::sleep(Duration::from_secs(env.pick(3, 2))).await;
    let (rss_base, _, fd_limit) = proc_stats(env.pid);
    sampler.set(ATTACK);
    let limit = Duration::from_secs(env.pick(150, 40));
    let started = Instant::now();
    eprintln!("[{name}] attack (at most {}s)", limit.as_secs());
    let details = match tokio::time::timeout(limit, scenarios::run(env, name)).await {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => json!({"error": format!("{e:#}")}),
        Err(_) => json!({"cut": format!("stopped at the scenario's time limit ({}s)", limit.as_secs())}),
    };
    let attack_secs = started.elapsed().as_secs_f64();
    sampler.set(AFTER);
    eprintln!("[{name}] attack done in {attack_secs:.1}s; measuring {}s after", env.after);
    let (rss_end_attack, _, _) = proc_stats(env.pid);
    tokio::time::sleep(Duration::from_secs(env.after)).await;
    let (rss_after, _, _) = proc_stats(env.pid);
    let recs = sampler.finish().await;
    let during = [ATTACK, AFTER];
    let lat = |kind: &str| {
        let rs: Vec<&Rec> = recs.iter().filter(|r| r.kind == kind && during.contains(&r.phase)).collect();
        let max = rs.iter().map(|r| r.value).fold(0.0f64, f64::max);
        let fails = rs.iter().filter(|r| !r.ok).count();
        (max, fails, rs.len())
    };
    let (h_max, h_fail, h_n) = lat("health");
    let (s_max, s_fail, s_n) = lat("signin");
    let mib = |kib: f64| (kib / 1024.0 * 10.0).round() / 10.0;
    let rss_peak = max_of(&recs, "rss_kib", &during).unwrap_or(0.0).max(rss_end_attack as f64);
    let series = |kind: &str| -> Vec<i64> { recs.iter().filter(|r| r.kind == kind).map(|r| r.value as i64).collect() };
    let (outbox_series, undelivered) = (series("outbox"), series("outbox_undelivered"));
    let peak_limit = if name == "hashing" { 64.0 } else { 256.0 };
    let out = json!({
        "scenario": name,
        "attack_secs": (attack_secs * 10.0).round() / 10.0,
        "after_secs": env.after,
        "health_max_ms": h_max.round() as i64, "health_failed": h_fail, "health_samples": h_n,
        "signin_max_ms": s_max.round() as i64, "signin_failed": s_fail, "signin_samples": s_n,
        "rss_base_mib": mib(rss_base as f64),
        "rss_peak_delta_mib": mib(rss_peak - rss_base as f64),
        "rss_after_delta_mib": mib(rss_after as f64 - rss_base as f64),
        "rss_peak_limit_mib": peak_limit,
        "fds_max": max_of(&recs, "fds", &during).unwrap_or(0.0) as i64,
        "fd_limit": fd_limit,
        "backends_max": max_of(&recs, "backends", &during).unwrap_or(0.0) as i64,
        "pool_bound": env.pool_bound,
        "outbox_start": outbox_series.first(), "outbox_max": outbox_series.iter().max(), "outbox_end": outbox_series.last(),
        "outbox_undelivered_max": undelivered.iter().max(), "outbox_undelivered_end": undelivered.last(),
        "details": details,
    });
    Ok(out)
}

// ---------------------------------------------------------------------------------
// The report

fn verdicts(r: &Value) -> Vec<(&'static str, bool)> {
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    vec![
        ("health<1s", f("health_max_ms") < 1000.0 && f("health_failed") == 0.0 && f("health_samples") > 0.0),
        ("signin<1s", f("signin_max_ms") < 1000.0 && f("signin_failed") == 0.0 && f("signin_samples") > 0.0),
        ("rss peak", f("rss_peak_delta_mib") < f("rss_peak_limit_mib")),
        ("rss after<+64MiB", f("rss_after_delta_mib") < 64.0),
        ("fds<80%", f("fds_max") < 0.8 * f("fd_limit")),
        ("backends<=pools+1", f("backends_max") <= f("pool_bound")),
    ]
}

/// "+1.5" / "-0.3".
fn signed(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x >= 0.0 => format!("+{x}"),
        Some(x) => format!("{x}"),
        None => "?".into(),
    }
}

fn report(path: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let rows: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let pf = |b: bool| if b { "PASS" } else { "**FAIL**" };
    println!("| scenario | attack | max /health | max sign-in | peak RSS Δ | RSS Δ after | max fds / limit | max backends / bound | result |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let v = verdicts(r);
        let failed: Vec<&str> = v.iter().filter(|(_, ok)| !ok).map(|(n, _)| *n).collect();
        let fails = |k: &str| match r[k].as_u64() {
            Some(0) | None => String::new(),
            Some(n) => format!(" ({n} failed)"),
        };
        println!(
            "| {} | {} s | {} ms{} {} | {} ms{} {} | {} MiB (< +{}) {} | {} MiB after {} s {} | {} / {} {} | {} / {} {} | {} |",
            r["scenario"].as_str().unwrap_or("?"),
            r["attack_secs"],
            r["health_max_ms"],
            fails("health_failed"),
            pf(v[0].1),
            r["signin_max_ms"],
            fails("signin_failed"),
            pf(v[1].1),
            signed(&r["rss_peak_delta_mib"]),
            r["rss_peak_limit_mib"],
            pf(v[2].1),
            signed(&r["rss_after_delta_mib"]),
            r["after_secs"],
            pf(v[3].1),
            r["fds_max"],
            r["fd_limit"],
            pf(v[4].1),
            r["backends_max"],
            r["pool_bound"],
            pf(v[5].1),
            if failed.is_empty() { "PASS".to_owned() } else { format!("FAIL: {}", failed.join(", ")) },
        );
    }
    println!();
    println!("Per scenario (outcome counts; RSS baseline; webhook outbox rows at start / max / end, and undelivered max / end):");
    println!();
    for r in &rows {
        println!(
            "- **{}** (RSS baseline {} MiB; outbox {} / {} / {}, undelivered {} / {}): `{}`",
            r["scenario"].as_str().unwrap_or("?"),
            r["rss_base_mib"],
            r["outbox_start"],
            r["outbox_max"],
            r["outbox_end"],
            r["outbox_undelivered_max"],
            r["outbox_undelivered_end"],
            r["details"]
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match args.first().map(String::as_str) {
        Some("report") => report(args.get(1).context("usage: abuse report <file.jsonl>")?),
        Some("setup") => rt.block_on(async { scenarios::setup(&Env::load()?).await }),
        Some("run") => {
            let name = args.get(1).context("usage: abuse run <scenario>")?.clone();
            let env = Env::load()?;
            let out = rt.block_on(run(&env, &name))?;
            println!("{out}");
            // Sockets a scenario left behind (ignored reads, held streams) close now.
            rt.shutdown_timeout(Duration::from_secs(1));
            Ok(())
        }
        _ => bail!("usage: abuse setup | abuse run <scenario> | abuse report <file.jsonl>"),
    }
}
