//! The cost of one password check on this machine, for bench/auth.sh: runs the
//! gateway's own argon2id verification (m=19 MiB, t=2, p=1) N times on C threads and
//! prints `p50_ms p99_ms per_second`.
//!
//!     cargo run --release -p pgstack-gateway --example hash_cost -- [N] [C]

use std::time::Instant;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let c: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let hash = pgstack_gateway::auth::passwords::hash("bench-password-1".into()).await.expect("hash");
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..c {
        let hash = hash.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for _ in 0..n / c {
                let t = Instant::now();
                assert!(pgstack_gateway::auth::passwords::verify("bench-password-1".into(), Some(hash.clone())).await.expect("verify"));
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        }));
    }
    let mut all: Vec<f64> = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!("{:.1} {:.1} {:.0}", pct(0.5), pct(0.99), all.len() as f64 / secs);
}
