//! One connected client: frames out from its channel's queue, broadcast and presence
//! in, ping every 30 s. A client that falls behind its bounded queue gets an
//! overflow (re-fetch) instead of unbounded memory.
//!
//! A client frame that is refused (a broadcast on a live-query channel that does not
//! allow it, a presence state over WS_PRESENCE_MAX_BYTES or past the gateway's total)
//! gets `{"type": "error", "error": msg, "message": msg}` back on that socket only; the
//! socket stays open and nothing is relayed. So does a frame larger than
//! WS_MAX_MESSAGE_BYTES, and a broadcast or presence frame past the socket's
//! WS_BROADCAST_RATE (token bucket).
//!
//! A client that lags (WS_CLIENT_QUEUE frames or WS_CLIENT_QUEUE_BYTES behind) on a
//! live query gets an overflow; on a `_channel_*` channel, where there is nothing to
//! re-fetch, it is closed with 1008. A write that stalls WS_WRITE_TIMEOUT (a peer that
//! stopped reading) drops the socket.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::Receiver;

/// Frames written before one flush when a client's queue has several waiting.
const MAX_BATCH: usize = 64;
/// Close code for a client too slow for its channel (policy violation).
pub const CLOSE_TOO_SLOW: u16 = 1008;

use super::hub::{Channel, Frame, Hub, Slot};

/// Per-socket limits from the configuration.
#[derive(Clone, Copy)]
pub struct Limits {
    /// WS_MAX_MESSAGE_BYTES.
    pub max_message: usize,
    /// WS_BROADCAST_RATE: frames, per seconds.
    pub rate: (u32, u64),
    /// WS_WRITE_TIMEOUT.
    pub write_timeout: Duration,
}

/// A token bucket of `n` frames refilled over `per_secs` (also the Supabase Realtime
/// sockets' join and event limits).
pub struct Bucket {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    last: Instant,
}

impl Bucket {
    pub fn new((n, per_secs): (u32, u64)) -> Bucket {
        let burst = f64::from(n.max(1));
        Bucket { tokens: burst, burst, per_sec: burst / per_secs.max(1) as f64, last: Instant::now() }
    }

    pub fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_sec).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

type Sink = SplitSink<WebSocket, Message>;

/// What writing a batch of queued frames came to.
enum Sent {
    Ok,
    /// The socket is gone (or the channel closed).
    Gone,
    /// A `_channel_*` client lagged: to be closed.
    TooSlow,
}

/// Writes the frame received and whatever else is waiting (up to MAX_BATCH), then
/// flushes once.
async fn forward(sink: &mut Sink, rx: &mut Receiver<Frame>, channel: &Channel, first: Result<Frame, RecvError>, me: u64, ad_hoc: bool) -> Sent {
    let mut next = Some(first);
    let mut written = 0;
    // One overflow for a run of missed frames (a lag, then emptied frames).
    let mut lagged = false;
    while let Some(frame) = next.take() {
        // An emptied frame was dropped from a backlog over the byte limits: the
        // same as a lag past the frame count.
        let frame = match frame {
            Ok(f) if f.origin == me => None,
            Ok(f) => Some(f.text().ok_or(RecvError::Lagged(1))),
            Err(e) => Some(Err(e)),
        };
        let out = match frame {
            None => None,
            Some(Ok(text)) => {
                lagged = false;
                Some(text)
            }
            // Too slow: skip what was missed and tell the client to resync; an
            // ad-hoc channel has nothing to re-fetch, so its client is closed.
            Some(Err(RecvError::Lagged(_))) if ad_hoc => return Sent::TooSlow,
            Some(Err(RecvError::Lagged(_))) if lagged => None,
            Some(Err(RecvError::Lagged(_))) => {
                lagged = true;
                Some(channel.overflow_frame().into())
            }
            Some(Err(RecvError::Closed)) => return Sent::Gone,
        };
        if let Some(text) = out {
            if sink.feed(Message::Text(text)).await.is_err() {
                return Sent::Gone;
            }
            written += 1;
        }
        if written < MAX_BATCH {
            next = match rx.try_recv() {
                Ok(f) => Some(Ok(f)),
                Err(TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
                Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
                Err(TryRecvError::Empty) => None,
            };
        }
    }
    if sink.flush().await.is_err() {
        return Sent::Gone;
    }
    Sent::Ok
}

/// Sends one message within the write timeout.
async fn send(sink: &mut Sink, msg: Message, limits: &Limits) -> bool {
    matches!(tokio::time::timeout(limits.write_timeout, sink.send(msg)).await, Ok(Ok(())))
}

/// Runs the socket until either side closes.
pub async fn run(socket: WebSocket, hub: Arc<Hub>, name: String, ad_hoc: bool, allow_broadcast: bool, limits: Limits, _slot: Slot) {
    // "subscribed" promises every delta committed after it: not before the gateway
    // listens (right after start).
    hub.wait_listening(Duration::from_secs(5)).await;
    let me = hub.client_number();
    let client_id = format!("{:016x}{:016x}", me, rand::random::<u64>());
    let channel = hub.channel(&name);
    let mut rx = channel.tx.subscribe();
    let (mut sink, mut stream) = socket.split();

    let mut hello = vec![json!({"type": "subscribed", "query_id": name, "client_id": client_id}).to_string()];
    for (id, state) in channel.presence_snapshot() {
        hello.push(json!({"type": "presence_state", "channel": name, "client_id": id, "state": state}).to_string());
    }
    for text in hello {
        if !send(&mut sink, Message::Text(text.into()), &limits).await {
            return;
        }
    }

    let mut ping = tokio::time::interval(Duration::from_secs(30));
    ping.tick().await;
    let mut joined = false;
    let mut bucket = Bucket::new(limits.rate);
    loop {
        tokio::select! {
            frame = rx.recv() => {
                // A peer that stopped reading stalls the write: dropped after the timeout.
                match tokio::time::timeout(limits.write_timeout, forward(&mut sink, &mut rx, &channel, frame, me, ad_hoc)).await {
                    Ok(Sent::Ok) => {}
                    Ok(Sent::Gone) | Err(_) => break,
                    Ok(Sent::TooSlow) => {
                        let reason = "too slow: more than WS_CLIENT_QUEUE frames or WS_CLIENT_QUEUE_BYTES behind";
                        let close = Message::Close(Some(CloseFrame { code: CLOSE_TOO_SLOW, reason: reason.into() }));
                        let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close)).await;
                        break;
                    }
                }
            }
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(t))) => {
                    let client = Client { me, client_id: &client_id, name: &name, allow_broadcast, max_message: limits.max_message };
                    if let Some(reply) = handle(&hub, &channel, &client, t.as_str(), &mut joined, &mut bucket) {
                        if !send(&mut sink, Message::Text(reply.into()), &limits).await {
                            break;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if !send(&mut sink, Message::Ping(Vec::new().into()), &limits).await {
                    break;
                }
            }
        }
    }
    if joined {
        channel.presence_remove(&client_id);
        let frame = json!({"type": "presence_leave", "channel": name, "client_id": client_id}).to_string();
        if let Some(r) = hub.relay.get() {
            r.send("leave", &name, &client_id, &frame);
        }
        channel.publish(me, frame);
    }
    drop(rx);
    hub.release(&name);
}

/// Who sent a frame.
struct Client<'a> {
    me: u64,
    client_id: &'a str,
    name: &'a str,
    allow_broadcast: bool,
    max_message: usize,
}

/// The error frame sent back to one client.
fn error_frame(msg: &str) -> String {
    json!({"type": "error", "error": msg, "message": msg}).to_string()
}

/// A frame from the client: broadcast or presence; anything else is ignored. Returns
/// the error frame for this client when the frame is refused.
fn handle(hub: &Hub, channel: &Channel, c: &Client<'_>, text: &str, joined: &mut bool, bucket: &mut Bucket) -> Option<String> {
    if text.len() > c.max_message {
        return Some(error_frame(&format!("message too large: {} bytes, at most {} (WS_MAX_MESSAGE_BYTES)", text.len(), c.max_message)));
    }
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return None;
    };
    let rate_limited = || Some(error_frame("too many broadcast / presence frames on this socket: frame dropped (WS_BROADCAST_RATE)"));
    let relay = hub.relay.get();
    let (me, client_id, name) = (c.me, c.client_id, c.name);
    match v.get("type").and_then(Value::as_str) {
        Some("broadcast") => {
            if !c.allow_broadcast {
                return Some(error_frame("broadcast is not allowed on this live-query channel (register it with allow_broadcast => true, or use a _channel_* channel)"));
            }
            if !bucket.take() {
                return rate_limited();
            }
            let payload = v.get("payload").cloned().unwrap_or(Value::Null);
            let frame = json!({"type": "broadcast", "from": client_id, "payload": payload}).to_string();
            if let Some(r) = relay {
                r.send("broadcast", name, client_id, &frame);
            }
            channel.publish(me, frame);
        }
        Some("presence") => {
            if !bucket.take() {
                return rate_limited();
            }
            let state = v.get("state").cloned().unwrap_or_else(|| json!({}));
            if let Err(e) = channel.presence_set(client_id, state.clone()) {
                return Some(error_frame(&e.message()));
            }
            let kind = if *joined { "presence_state" } else { "presence_join" };
            *joined = true;
            let frame = json!({"type": kind, "channel": name, "client_id": client_id, "state": state}).to_string();
            if let Some(r) = relay {
                r.send(if kind == "presence_join" { "join" } else { "state" }, name, client_id, &frame);
            }
            channel.publish(me, frame);
        }
        _ => {}
    }
    None
}
