//! One connected client: frames out from its channel's queue, broadcast and presence
//! in, ping every 30 s. A client that falls behind its bounded queue gets an
//! overflow (re-fetch) instead of unbounded memory.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

/// Frames written before one flush when a client's queue has several waiting.
const MAX_BATCH: usize = 64;

use super::hub::{Hub, Slot};

/// Runs the socket until either side closes.
pub async fn run(socket: WebSocket, hub: Arc<Hub>, name: String, ad_hoc: bool, _slot: Slot) {
    let me = hub.client_number();
    let client_id = format!("{:016x}{:016x}", me, rand::random::<u64>());
    let channel = hub.channel(&name);
    let mut rx = channel.tx.subscribe();
    let (mut sink, mut stream) = socket.split();

    let mut hello = vec![json!({"type": "subscribed", "query_id": name, "client_id": client_id}).to_string()];
    if let Ok(p) = channel.presence.lock() {
        for (id, state) in p.iter() {
            hello.push(json!({"type": "presence_state", "channel": name, "client_id": id, "state": state}).to_string());
        }
    }
    for text in hello {
        if sink.send(Message::Text(text.into())).await.is_err() {
            return;
        }
    }

    let mut ping = tokio::time::interval(Duration::from_secs(30));
    ping.tick().await;
    let mut joined = false;
    'run: loop {
        tokio::select! {
            frame = rx.recv() => {
                // Under load several frames are waiting: write them all, flush once.
                let mut next = Some(frame);
                let mut written = 0;
                while let Some(frame) = next.take() {
                    let out = match frame {
                        Ok(f) if f.origin == me => None,
                        Ok(f) => Some(f.text),
                        // Too slow: skip what was missed and tell the client to resync
                        // (ad-hoc channels have nothing to re-fetch).
                        Err(RecvError::Lagged(_)) if ad_hoc => None,
                        Err(RecvError::Lagged(_)) => Some(channel.overflow_frame().into()),
                        Err(RecvError::Closed) => break 'run,
                    };
                    if let Some(text) = out {
                        if sink.feed(Message::Text(text)).await.is_err() {
                            break 'run;
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
                    break;
                }
            }
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(t))) => handle(&hub, &channel, me, &client_id, &name, t.as_str(), &mut joined),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
        }
    }
    if joined {
        if let Ok(mut p) = channel.presence.lock() {
            p.remove(&client_id);
        }
        let frame = json!({"type": "presence_leave", "channel": name, "client_id": client_id}).to_string();
        if let Some(r) = hub.relay.get() {
            r.send("leave", &name, &client_id, &frame);
        }
        channel.publish(me, frame);
    }
    drop(rx);
    hub.release(&name);
}

/// A frame from the client: broadcast or presence; anything else is ignored.
fn handle(hub: &Hub, channel: &super::hub::Channel, me: u64, client_id: &str, name: &str, text: &str, joined: &mut bool) {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let relay = hub.relay.get();
    match v.get("type").and_then(Value::as_str) {
        Some("broadcast") => {
            let payload = v.get("payload").cloned().unwrap_or(Value::Null);
            let frame = json!({"type": "broadcast", "from": client_id, "payload": payload}).to_string();
            if let Some(r) = relay {
                r.send("broadcast", name, client_id, &frame);
            }
            channel.publish(me, frame);
        }
        Some("presence") => {
            let state = v.get("state").cloned().unwrap_or_else(|| json!({}));
            if let Ok(mut p) = channel.presence.lock() {
                p.insert(client_id.to_owned(), state.clone());
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
}
