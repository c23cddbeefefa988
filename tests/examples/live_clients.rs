//! Live-query subscribers for bench/live.sh: opens N WebSockets to /ws/{query} on one
//! thread, records the commit-to-frame latency of every delta from the row's `sent_us`
//! (epoch microseconds, set by the writer with `clock_timestamp()`), and on SIGTERM
//! prints one JSON line: frames, frames per second, per-frame and per-message
//! last-arrival percentiles.
//!
//!   live_clients <ws url> <subscribers>
//!
//! A single-threaded tokio runtime keeps the load client to one core, so the gateway
//! and Postgres keep the other; frames are parsed with borrowed serde structs.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

#[derive(Deserialize)]
struct Delta {
    seq: Option<i64>,
    #[serde(default)]
    inserted: Vec<Row>,
}

#[derive(Deserialize)]
struct Row {
    sent_us: i64,
}

/// One received delta: (seq, latency in µs).
type Sample = (i64, i64);

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

fn pct(sorted: &[i64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((p * sorted.len() as f64) as usize).min(sorted.len() - 1);
    Some((sorted[i] as f64 / 100.0).round() / 10.0)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or_else(|| anyhow::anyhow!("usage: live_clients <ws url> <subscribers>"))?;
    let n: usize = args.next().unwrap_or_else(|| "1".into()).parse()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // A small read buffer: tungstenite zero-fills the whole buffer on each read.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    rt.block_on(async move {
        let (tx, mut rx) = mpsc::unbounded_channel::<Sample>();
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<()>();
        for _ in 0..n {
            let (url, tx, ready_tx) = (url.clone(), tx.clone(), ready_tx.clone());
            tokio::spawn(async move {
                let (ws, _) = match tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true).await {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("connect: {e}");
                        return;
                    }
                };
                let _ = ready_tx.send(());
                let (_sink, mut stream) = ws.split();
                while let Some(Ok(msg)) = stream.next().await {
                    let Message::Text(text) = msg else { continue };
                    let now = now_us();
                    let Ok(d) = serde_json::from_str::<Delta>(text.as_str()) else { continue };
                    let Some(seq) = d.seq else { continue };
                    for row in d.inserted {
                        let _ = tx.send((seq, now - row.sent_us));
                    }
                }
            });
        }
        drop(tx);
        for _ in 0..n {
            if ready_rx.recv().await.is_none() {
                anyhow::bail!("a subscriber failed to connect");
            }
        }
        println!("ready");

        let mut all: Vec<i64> = Vec::new();
        let mut per_seq: HashMap<i64, i64> = HashMap::new();
        let (mut first, mut last) = (0i64, 0i64);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                s = rx.recv() => {
                    let Some((seq, lat)) = s else { break };
                    let now = now_us();
                    if first == 0 { first = now; }
                    last = now;
                    all.push(lat);
                    let e = per_seq.entry(seq).or_insert(lat);
                    *e = (*e).max(lat);
                }
                _ = term.recv() => break,
            }
        }
        all.sort_unstable();
        let mut last_arrival: Vec<i64> = per_seq.values().copied().collect();
        last_arrival.sort_unstable();
        let secs = (last - first) as f64 / 1e6;
        let out = serde_json::json!({
            "subscribers": n,
            "messages": per_seq.len(),
            "frames": all.len(),
            "frames_per_sec": if secs > 0.0 { Some((all.len() as f64 / secs).round()) } else { None },
            "p50_ms": pct(&all, 0.5), "p99_ms": pct(&all, 0.99),
            "last_arrival_p50_ms": pct(&last_arrival, 0.5), "last_arrival_p99_ms": pct(&last_arrival, 0.99),
        });
        println!("{out}");
        Ok(())
    })
}
