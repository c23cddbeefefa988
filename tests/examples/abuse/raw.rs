//! Scenarios on raw sockets: slow uploads (1 byte every 5 s), a flood of connections
//! that send half a request line, and WebSocket pairs where one peer stops reading.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{sleep_until, timeout};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::{abuser_ip, Env, Hist};

fn count(var: &str, default: usize) -> usize {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A TCP connection to the gateway from `ip`.
async fn connect(env: &Env, ip: IpAddr) -> std::io::Result<TcpStream> {
    let addr: SocketAddr = env.host().parse().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(ip, 0))?;
    let s = timeout(Duration::from_secs(5), sock.connect(addr)).await.map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = s.set_nodelay(true);
    Ok(s)
}

fn io_key(e: &std::io::Error) -> String {
    if e.raw_os_error() == Some(24) {
        "client_out_of_descriptors".into()
    } else {
        format!("connect_error:{:?}", e.kind())
    }
}

/// "503" from the first line of a response, or "no_status".
fn status_of(buf: &[u8]) -> String {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(line).split_whitespace().nth(1).unwrap_or("no_status").to_owned()
}

/// p50 and max of some seconds, rounded to 0.1.
fn spread(mut v: Vec<f64>) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_by(f64::total_cmp);
    let r = |x: f64| (x * 10.0).round() / 10.0;
    json!({"p50_s": r(v[v.len() / 2]), "max_s": r(v[v.len() - 1])})
}

/// How a held socket ended: (outcome, seconds after connecting).
async fn hold(mut s: TcpStream, hold_for: Duration, trickle: Option<Duration>) -> (String, f64) {
    let t = Instant::now();
    let deadline = tokio::time::Instant::now() + hold_for;
    let (mut rd, mut wr) = s.split();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 1024];
    let mut next = tokio::time::Instant::now() + trickle.unwrap_or(Duration::from_secs(86_400));
    loop {
        tokio::select! {
            r = rd.read(&mut tmp) => match r {
                Ok(0) if buf.is_empty() => return ("closed_without_response".into(), t.elapsed().as_secs_f64()),
                Ok(0) => return (status_of(&buf), t.elapsed().as_secs_f64()),
                Ok(k) => {
                    buf.extend_from_slice(&tmp[..k]);
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        return (status_of(&buf), t.elapsed().as_secs_f64());
                    }
                }
                Err(_) if buf.is_empty() => return ("reset".into(), t.elapsed().as_secs_f64()),
                Err(_) => return (status_of(&buf), t.elapsed().as_secs_f64()),
            },
            _ = sleep_until(next) => {
                if wr.write_all(b"x").await.is_err() {
                    return ("write_failed".into(), t.elapsed().as_secs_f64());
                }
                next += trickle.unwrap_or(Duration::from_secs(86_400));
            }
            _ = sleep_until(deadline) => return ("still_open_at_end".into(), t.elapsed().as_secs_f64()),
        }
    }
}

/// Opens `n` sockets (512 connecting at once), sends `head` on each and holds each
/// until the server answers or closes, or `hold_for` passes after its connect. Returns
/// the outcome counts and when the server acted.
async fn held_sockets(env: &Env, n: usize, hold_for: Duration, head: impl Fn(usize) -> String, trickle: Option<Duration>) -> Value {
    let hist = Hist::default();
    let times = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(tokio::sync::Semaphore::new(512));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let (env, hist, times, gate, head) = (env.clone(), hist.clone(), times.clone(), gate.clone(), head(i));
        set.spawn(async move {
            let permit = gate.acquire_owned().await;
            let mut s = match connect(&env, abuser_ip(i)).await {
                Ok(s) => s,
                Err(e) => return hist.bump(io_key(&e)),
            };
            if s.write_all(head.as_bytes()).await.is_err() {
                return hist.bump("write_failed");
            }
            drop(permit);
            let (outcome, secs) = hold(s, hold_for, trickle).await;
            if outcome != "still_open_at_end" {
                times.lock().unwrap().push(secs);
            }
            hist.bump(outcome);
        });
    }
    while set.join_next().await.is_some() {}
    let times = std::mem::take(&mut *times.lock().unwrap());
    json!({"connections": n, "outcomes": hist.json(), "server_acted_after": spread(times)})
}

/// Slow uploads: headers announcing 1000 bytes, then 1 byte every 5 s.
pub async fn slow_uploads(env: &Env) -> anyhow::Result<Value> {
    let n = count("SLOW_UPLOADS", env.pick(500, 60));
    let secs = env.pick(60, 12);
    let (host, service) = (env.host(), env.service.clone());
    let head = move |i: usize| {
        format!(
            "POST /storage/v1/object/abuse/slow-{i}.bin HTTP/1.1\r\nHost: {host}\r\napikey: {service}\r\nAuthorization: Bearer {service}\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\nx"
        )
    };
    let r = held_sockets(env, n, Duration::from_secs(secs), head, Some(Duration::from_secs(5))).await;
    Ok(json!({"held_for_s": secs, "result": r}))
}

/// Two waves of connections that send half a request line and then nothing.
pub async fn flood(env: &Env) -> anyhow::Result<Value> {
    let n = count("FLOOD_CONNS", env.pick(10_200, 1_500));
    let secs = env.pick(20, 12);
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let own_limit = limits.lines().find(|l| l.starts_with("Max open files")).and_then(|l| l.split_whitespace().nth(3).map(str::to_owned));
    let host = env.host();
    let mut waves = Vec::new();
    for _ in 0..2 {
        let host = host.clone();
        waves.push(held_sockets(env, n, Duration::from_secs(secs), move |i| format!("GET /rest/v1/abuse_notes?id=eq.{i} HTTP/1.1\r\nHost: {host}\r\nX-Pa"), None).await);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(json!({"per_wave": n, "held_for_s": secs, "client_fd_limit": own_limit, "waves": waves}))
}

async fn ws_connect(env: &Env, ip: IpAddr, channel: &str) -> anyhow::Result<tokio_tungstenite::WebSocketStream<TcpStream>> {
    let s = connect(env, ip).await?;
    let url = format!("ws://{}/ws/{channel}?apikey={}", env.host(), env.anon);
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (ws, _) = timeout(Duration::from_secs(10), tokio_tungstenite::client_async_with_config(url, s, Some(config))).await??;
    Ok(ws)
}

/// A broadcast frame whose text is `bytes` long.
fn broadcast_frame(bytes: usize) -> Utf8Bytes {
    let envelope = r#"{"type":"broadcast","payload":""}"#.len();
    format!(r#"{{"type":"broadcast","payload":"{}"}}"#, "x".repeat(bytes.saturating_sub(envelope))).into()
}

/// What the gateway does with one frame of `bytes`: "accepted" (no answer within
/// 1.5 s), "refused: <error>" or "closed".
async fn probe_frame(env: &Env, bytes: usize) -> anyhow::Result<String> {
    let mut ws = ws_connect(env, abuser_ip(0), &format!("_channel_probe_{}", std::process::id())).await?;
    let _ = timeout(Duration::from_secs(5), ws.next()).await;
    if ws.send(Message::Text(broadcast_frame(bytes))).await.is_err() {
        return Ok("closed".into());
    }
    let outcome = match timeout(Duration::from_millis(1500), ws.next()).await {
        Err(_) => "accepted".to_owned(),
        Ok(Some(Ok(Message::Text(t)))) if t.contains(r#""type":"error""#) => format!("refused: {}", t.chars().take(120).collect::<String>()),
        Ok(Some(Ok(_))) => "accepted".to_owned(),
        Ok(_) => "closed".to_owned(),
    };
    let _ = ws.close(None).await;
    Ok(outcome)
}

/// WebSocket pairs on a `_channel_*` channel: one peer stops reading, the other sends
/// broadcast frames of 1 MiB, or of WS_FRAME_BYTES (default 64 KiB, the gateway's
/// default WS_MAX_MESSAGE_BYTES) when the gateway refuses 1 MiB, WS_SEND_RATE a second
/// (default 200: twice the gateway's default WS_BROADCAST_RATE) for the whole phase.
pub async fn ws_backlog(env: &Env) -> anyhow::Result<Value> {
    let pairs = count("WS_PAIRS", env.pick(10, 3));
    let frames = count("WS_FRAMES", env.pick(12_000, 3_000));
    let rate = count("WS_SEND_RATE", 200).max(1);
    let secs = env.pick(60, 8);
    let probe = probe_frame(env, 1024 * 1024).await?;
    let bytes = if probe == "accepted" { 1024 * 1024 } else { count("WS_FRAME_BYTES", 64 * 1024) };
    let frame = broadcast_frame(bytes);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let nonce = std::process::id();
    let (sent_total, sender_outcomes, answers) = (Arc::new(Mutex::new(0u64)), Hist::default(), Hist::default());
    let mut receivers = Vec::new();
    let mut set = tokio::task::JoinSet::new();
    for k in 0..pairs {
        let channel = format!("_channel_abuse_{nonce}_{k}");
        // The peer that stops reading: it reads its first frame (subscribed), then nothing.
        let mut rx = ws_connect(env, abuser_ip(2 * k + 1), &channel).await?;
        let _ = timeout(Duration::from_secs(5), rx.next()).await;
        receivers.push(rx);
        let mut tx = ws_connect(env, abuser_ip(2 * k + 2), &channel).await?;
        let _ = timeout(Duration::from_secs(5), tx.next()).await;
        let (frame, sent_total, sender_outcomes, answers) = (frame.clone(), sent_total.clone(), sender_outcomes.clone(), answers.clone());
        set.spawn(async move {
            let (mut sink, mut stream) = tx.split();
            // What the gateway answers the sender (error frames: size, rate).
            let drain = tokio::spawn(async move {
                while let Some(Ok(m)) = stream.next().await {
                    if let Message::Text(t) = m {
                        let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                        let kind = v["type"].as_str().unwrap_or("?").to_owned();
                        let what = v["error"].as_str().map(|e| format!("{kind}: {}", e.split(':').next().unwrap_or(e))).unwrap_or(kind);
                        answers.bump(what);
                    }
                }
                answers.bump("sender closed by the gateway");
            });
            let mut outcome = "sent all";
            let mut pace = tokio::time::interval(Duration::from_secs(1) / rate as u32);
            for _ in 0..frames {
                pace.tick().await;
                if Instant::now() >= deadline {
                    outcome = "stopped at the time limit";
                    break;
                }
                match timeout(Duration::from_secs(10), sink.send(Message::Text(frame.clone()))).await {
                    Ok(Ok(())) => *sent_total.lock().unwrap() += 1,
                    Ok(Err(_)) => {
                        outcome = "send failed (closed)";
                        break;
                    }
                    Err(_) => {
                        outcome = "send blocked 10 s";
                        break;
                    }
                }
            }
            sender_outcomes.bump(outcome);
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = sink.close().await;
            drain.abort();
        });
    }
    while set.join_next().await.is_some() {}
    let send_secs = started.elapsed().as_secs_f64();
    // What the stalled peers find when they read again: frames still queued for them,
    // or a close from the gateway (read for at most 3 s each).
    let ends = Hist::default();
    let mut queued = Vec::new();
    for mut rx in receivers {
        let mut got = 0u64;
        let end = timeout(Duration::from_secs(3), async {
            loop {
                match rx.next().await {
                    Some(Ok(Message::Close(c))) => return format!("closed by the gateway ({})", c.map(|c| u16::from(c.code)).unwrap_or(0)),
                    None => return "closed by the gateway (no close frame)".to_owned(),
                    Some(Err(_)) => return "reset".to_owned(),
                    Some(Ok(_)) => got += 1,
                }
            }
        })
        .await
        .unwrap_or_else(|_| "still open".to_owned());
        ends.bump(end);
        queued.push(got);
    }
    Ok(json!({
        "pairs": pairs, "probe_1mib_frame": probe, "frame_bytes": frame.len(), "max_frames_per_sender": frames, "send_rate": rate,
        "frames_sent": *sent_total.lock().unwrap(), "senders": sender_outcomes.json(), "gateway_answers_to_senders": answers.json(),
        "send_phase_s": (send_secs * 10.0).round() / 10.0,
        "stalled_peers_then": ends.json(), "frames_stalled_peers_read_after": queued,
    }))
}
