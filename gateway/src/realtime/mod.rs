//! WebSocket fan-out of live-query deltas, broadcast and presence (contract:
//! WebSocket API and Presence).
//!
//! Flow: `gate::admit` (before the upgrade) → `socket` (one task per client) ←
//! `hub` ← the LISTEN connection (`spawn_relay`, channel `pgr`).

pub mod gate;
pub mod hub;
pub mod relay;
pub mod socket;

use std::collections::HashMap;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::listener::Event;
use crate::AppState;
use gate::Refusal;

/// Bytes the socket reader holds at once.
const READ_BUFFER: usize = 4 * 1024;
/// Bytes written to the socket at once (tungstenite's default).
const WRITE_BUFFER: usize = 128 * 1024;
/// Largest server frame besides client frames: a NOTIFY payload (8000 bytes) and
/// its envelope.
const MAX_SERVER_FRAME: usize = 9 * 1024;

/// NOTIFY channel of live-query messages.
pub const CHANNEL: &str = pgstack_shared::notify::LIVE_QUERY_CHANNEL;

/// `/ws/{query_id}` and `/ws/_presence/{channel}`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/_presence/{channel}", get(presence)).route("/{query_id}", get(connect))
}

fn query_token(q: &HashMap<String, String>) -> Option<&str> {
    q.get("token").or_else(|| q.get("apikey")).map(String::as_str)
}

/// GET /ws/{query_id}: the checks, then the upgrade.
async fn connect(
    State(s): State<AppState>,
    Path(query_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    peer: crate::auth::ClientInfo,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let admitted = match gate::admit(&s, &headers, query_token(&q), &query_id).await {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let ip = peer.ip.and_then(|i| i.parse().ok()).unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    let slot = match s.hub.reserve(ip, s.config.ws_max_connections, s.config.ws_max_connections_per_ip) {
        Ok(slot) => slot,
        Err(hub::CapError::PerIp) => return Refusal(StatusCode::TOO_MANY_REQUESTS, "too many WebSocket connections from this address".into()).into_response(),
        Err(hub::CapError::Global) => return Refusal(StatusCode::SERVICE_UNAVAILABLE, "WebSocket connection limit reached".into()).into_response(),
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(_) => return Refusal(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade request".into()).into_response(),
    };
    let hub = s.hub.clone();
    let (ad_hoc, allow_broadcast) = (admitted.ad_hoc, admitted.allow_broadcast);
    let c = &s.config;
    let limits = socket::Limits {
        max_message: c.ws_max_message_bytes,
        rate: (c.ws_broadcast_rate.n, c.ws_broadcast_rate.per_secs),
        write_timeout: std::time::Duration::from_secs(c.ws_write_timeout_secs),
    };
    // Frames up to twice WS_MAX_MESSAGE_BYTES get an error frame; larger ones close
    // the socket before they are buffered whole.
    let max_in = 2 * c.ws_max_message_bytes;
    // The largest frame this socket writes: a client frame relayed with its envelope,
    // a presence state, or a NOTIFY payload.
    let max_out = c.ws_max_message_bytes.max(c.ws_presence_max_bytes).max(MAX_SERVER_FRAME) + 1024;
    // Clients send small frames (broadcast, presence): a small read buffer (the
    // WebSocket reader zero-fills its whole buffer on every read attempt; the 128 KiB
    // default was a quarter of the fan-out's CPU) and a bounded message size. The
    // write buffer is bounded too (tungstenite's default is unbounded): a peer that
    // stops reading holds at most WRITE_BUFFER + two frames here.
    ws.read_buffer_size(READ_BUFFER)
        .max_message_size(max_in)
        .max_frame_size(max_in)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(WRITE_BUFFER + 2 * max_out)
        .on_upgrade(move |socket| socket::run(socket, hub, query_id, ad_hoc, allow_broadcast, limits, slot))
}

/// GET /ws/_presence/{channel}: client id → last state, behind the same gate.
async fn presence(State(s): State<AppState>, Path(channel): Path<String>, Query(q): Query<HashMap<String, String>>, headers: HeaderMap) -> Response {
    if let Err(r) = gate::admit(&s, &headers, query_token(&q), &channel).await {
        return r.into_response();
    }
    let state: serde_json::Map<String, Value> = s.hub.existing(&channel).map(|c| c.presence_snapshot().into_iter().collect()).unwrap_or_default();
    Json(Value::Object(state)).into_response()
}

/// Feeds the hub from the LISTEN connection: deltas to their query's sockets, and an
/// overflow to everyone after a reconnect (changes may have been missed meanwhile).
pub fn spawn_relay(s: &AppState, events: &crate::listener::Buses) {
    let hub = s.hub.clone();
    hub.set_presence_limits(s.config.ws_presence_max_bytes, s.config.ws_presence_max_total_bytes);
    hub.set_queue_limits(s.config.ws_client_queue_bytes, s.config.ws_queue_max_total_bytes);
    let relay = relay::start(s.pool.clone(), hub.clone());
    let _ = hub.relay.set(relay.clone() as std::sync::Arc<dyn hub::Outbound>);
    // Deltas and the relay between gateways come on their own buses.
    let (mut deltas, mut relayed) = (events.subscribe(CHANNEL), events.subscribe(relay::CHANNEL));
    tokio::spawn(async move {
        loop {
            match deltas.recv().await {
                Ok(Event::Notify { payload, .. }) => hub.relay(&payload),
                // Every connect, the first too: a socket subscribed before the LISTEN
                // connection was up may have missed changes (an overflow tells it to
                // re-fetch; none is sent for channels without sockets).
                Ok(Event::Connected) => {
                    hub.resync_all();
                    hub.set_listening();
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    hub.resync_all();
                    hub.set_listening();
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let hub = s.hub.clone();
    tokio::spawn(async move {
        loop {
            match relayed.recv().await {
                Ok(Event::Notify { payload, .. }) => relay.receive(&hub, &payload),
                Ok(Event::Connected) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}
