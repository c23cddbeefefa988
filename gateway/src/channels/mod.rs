//! The Supabase Realtime protocol (what @supabase/realtime-js speaks), beside the
//! contract's `/ws` live queries:
//!
//! * `GET /realtime/v1/websocket?apikey=…&vsn=1.0.0|2.0.0`: Phoenix channels
//!   (`frame`), one task per socket (`socket`), topics joined on this gateway
//!   (`registry`): broadcast, presence, private channels authorised by RLS on
//!   `realtime.messages` (`auth`), postgres_changes checked per subscriber under RLS
//!   (`changes`).
//! * `POST /realtime/v1/api/broadcast` and `/api/broadcast/{topic}/events/{event}`.
//! * Across gateways: everything goes through `NOTIFY pgr_realtime` — captured row
//!   changes and SQL broadcasts (`realtime.send`) from the extension, broadcasts and
//!   presence relayed by each gateway (`inbound`).

pub mod auth;
pub mod changes;
pub mod frame;
pub mod queue;
pub mod registry;
pub mod socket;
pub mod subscription;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::sync::{broadcast, mpsc};

use crate::listener::Event;
use crate::AppState;
use registry::{Registry, TopicKey};

/// NOTIFY channel of the extension's changes and messages and of the relay.
pub const CHANNEL: &str = "pgr_realtime";
const BEAT: Duration = Duration::from_secs(5);
const DEAD_AFTER: Duration = Duration::from_secs(15);

/// Per-socket limits (settings `REALTIME_*`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_channels: usize,
    pub joins_per_sec: u32,
    pub events_per_sec: u32,
    pub max_payload: usize,
    pub max_presence: usize,
    pub queue: usize,
    pub write_timeout: Duration,
}

impl Limits {
    fn from(c: &crate::config::Config) -> Limits {
        Limits {
            max_channels: c.realtime_max_channels,
            joins_per_sec: c.realtime_max_joins_per_second,
            events_per_sec: c.realtime_max_events_per_second,
            max_payload: c.realtime_max_payload_bytes,
            max_presence: c.ws_presence_max_bytes,
            queue: c.realtime_client_queue,
            write_timeout: Duration::from_secs(c.ws_write_timeout_secs),
        }
    }
}

/// `/realtime/v1/websocket`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/websocket", get(connect))
}

/// `/realtime/v1/api/...`: plain HTTP (the router puts them under the body limits and
/// the request timeout).
pub fn api_routes() -> Router<AppState> {
    Router::new().route("/api/broadcast", post(broadcast_batch)).route("/api/broadcast/{topic}/events/{event}", post(broadcast_one))
}

fn refusal(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({"error": msg, "message": msg}))).into_response()
}

/// GET /realtime/v1/websocket: the key is checked before the upgrade.
async fn connect(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    peer: crate::auth::ClientInfo,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let token = headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::to_owned).or_else(|| q.get("apikey").cloned());
    let Some(token) = token else { return refusal(StatusCode::UNAUTHORIZED, "API key is missing") };
    if let Err(reason) = auth::viewer(&token, &s.config) {
        let msg = reason.split_once(": ").map(|(_, m)| m.to_owned()).unwrap_or(reason);
        return refusal(StatusCode::UNAUTHORIZED, &msg);
    }
    let Some(vsn) = frame::Vsn::parse(q.get("vsn").map(String::as_str)) else {
        return refusal(StatusCode::BAD_REQUEST, "unsupported vsn (1.0.0 or 2.0.0)");
    };
    let ip = peer.ip.and_then(|i| i.parse().ok()).unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    let slot = match s.hub.reserve(ip, s.config.ws_max_connections, s.config.ws_max_connections_per_ip) {
        Ok(slot) => slot,
        Err(crate::realtime::hub::CapError::PerIp) => return refusal(StatusCode::TOO_MANY_REQUESTS, "Too many connected users"),
        Err(crate::realtime::hub::CapError::Global) => return refusal(StatusCode::SERVICE_UNAVAILABLE, "Too many connected users"),
    };
    let Ok(ws) = ws else { return refusal(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade request") };
    let limits = Limits::from(&s.config);
    let reg = s.channels.clone();
    ws.max_message_size(frame::MAX_FRAME)
        .max_frame_size(frame::MAX_FRAME)
        .read_buffer_size(8 * 1024)
        .on_upgrade(move |socket| socket::run(socket, s, reg, vsn, token, limits, slot))
}

/// The REST caller: `Authorization: Bearer`, else the `apikey` header.
fn rest_viewer(s: &AppState, headers: &HeaderMap, q: &HashMap<String, String>) -> Result<auth::Viewer, Response> {
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer "))).map(str::to_owned);
    let token = bearer.or_else(|| headers.get("apikey").and_then(|v| v.to_str().ok()).map(str::to_owned)).or_else(|| q.get("apikey").cloned());
    let Some(token) = token else { return Err((StatusCode::UNAUTHORIZED, Json(json!({"message": "Unauthorized"}))).into_response()) };
    auth::viewer(&token, &s.config).map_err(|_| (StatusCode::UNAUTHORIZED, Json(json!({"message": "Unauthorized"}))).into_response())
}

/// Largest batch of the REST broadcast.
const MAX_BATCH: usize = 100;

/// 422 in Realtime's shape.
fn unprocessable(m: &str) -> Response {
    (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"errors": {"messages": [m]}, "message": m}))).into_response()
}

/// POST /realtime/v1/api/broadcast `{"messages": [{topic, event, payload, private}]}`.
async fn broadcast_batch(State(s): State<AppState>, Query(q): Query<HashMap<String, String>>, headers: HeaderMap, body: Bytes) -> Response {
    let v = match rest_viewer(&s, &headers, &q) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if body.len() > s.config.realtime_max_payload_bytes * 4 {
        return (StatusCode::PAYLOAD_TOO_LARGE, Json(json!({"message": "Payload too large"}))).into_response();
    }
    let Ok(doc) = serde_json::from_slice::<Value>(&body) else { return unprocessable("body must be JSON: {\"messages\": [...]}") };
    let Some(msgs) = doc["messages"].as_array() else { return unprocessable("messages must be a list") };
    if msgs.len() > MAX_BATCH {
        return (StatusCode::TOO_MANY_REQUESTS, Json(json!({"message": "Too many messages to broadcast, please reduce the batch size"}))).into_response();
    }
    let mut parsed = Vec::new();
    for m in msgs {
        let (Some(topic), Some(event)) = (m["topic"].as_str(), m["event"].as_str()) else { return unprocessable("each message needs a topic and an event") };
        if topic.is_empty() || topic.len() > 255 || event.len() > 255 {
            return unprocessable("topic must be 1-255 bytes, event at most 255");
        }
        // Read as Supabase casts it (true, "true", "1", 1); anything that is not a
        // boolean is refused rather than sent to the public topic.
        let Some(private) = bool_flag(&m["private"]) else { return unprocessable("private must be a boolean") };
        if m.get("payload").is_some_and(|p| p.to_string().len() > s.config.realtime_max_payload_bytes) {
            return (StatusCode::PAYLOAD_TOO_LARGE, Json(json!({"message": "Payload too large"}))).into_response();
        }
        parsed.push((TopicKey { private, name: topic.to_owned() }, event.to_owned(), m.get("payload").cloned().unwrap_or(json!({}))));
    }
    let mut allowed: HashMap<String, bool> = HashMap::new();
    for (key, event, payload) in parsed {
        if key.private {
            let ok = match allowed.get(&key.name) {
                Some(ok) => *ok,
                None => {
                    let ok = auth::may_write(&s, &v.who, &key.name, "broadcast").await;
                    allowed.insert(key.name.clone(), ok);
                    ok
                }
            };
            if !ok {
                continue; // dropped, still 202 (as Supabase)
            }
        }
        s.channels.broadcast(&key, None, &json!({"type": "broadcast", "event": event, "payload": payload}));
    }
    StatusCode::ACCEPTED.into_response()
}

/// POST /realtime/v1/api/broadcast/{topic}/events/{event}[?private=true]: the body is
/// the payload.
async fn broadcast_one(
    State(s): State<AppState>,
    Path((topic, event)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v = match rest_viewer(&s, &headers, &q) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if body.len() > s.config.realtime_max_payload_bytes {
        return (StatusCode::PAYLOAD_TOO_LARGE, Json(json!({"message": "Payload too large"}))).into_response();
    }
    if topic.is_empty() || topic.len() > 255 || event.len() > 255 {
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"message": "topic must be 1-255 bytes, event at most 255"}))).into_response();
    }
    let payload: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(p) => p,
            Err(_) => return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Json(json!({"message": "the payload must be JSON"}))).into_response(),
        }
    };
    let private = match q.get("private") {
        None => Some(false),
        Some(p) => bool_flag(&Value::String(p.clone())),
    };
    let Some(private) = private else { return unprocessable("private must be a boolean") };
    let key = TopicKey { private, name: topic };
    if key.private && !auth::may_write(&s, &v.who, &key.name, "broadcast").await {
        return (StatusCode::FORBIDDEN, Json(json!({"message": "Unauthorized"}))).into_response();
    }
    s.channels.broadcast(&key, None, &json!({"type": "broadcast", "event": event, "payload": payload}));
    StatusCode::ACCEPTED.into_response()
}

/// Starts the relay sender, the inbound reader of `pgr_realtime` and the
/// postgres_changes dispatcher.
pub fn spawn(s: &AppState, events: &crate::listener::Buses) {
    let reg = s.channels.clone();
    reg.set_key(s.config.jwt_secret.expose());
    let Some(relay_rx) = reg.take_relay() else { return };
    // Relay: this gateway's broadcasts and presence to the others.
    let pool = s.pool.clone();
    let mut relay_rx = relay_rx;
    tokio::spawn(async move {
        let mut batch = Vec::new();
        while relay_rx.recv_many(&mut batch, 64).await > 0 {
            // Whatever queued meanwhile goes in one statement (in order).
            let msgs = std::mem::take(&mut batch);
            match pool.get().await {
                Ok(c) => {
                    if let Err(e) = c.execute("SELECT pg_notify('pgr_realtime', m) FROM unnest($1::text[]) WITH ORDINALITY AS x(m, i) ORDER BY i", &[&msgs]).await {
                        tracing::warn!(error = %e, n = msgs.len(), "realtime relay messages not sent");
                    }
                }
                Err(e) => tracing::warn!(error = %e, n = msgs.len(), "realtime relay messages not sent"),
            }
        }
    });
    let beat = reg.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(BEAT);
        loop {
            tick.tick().await;
            let mut m = Map::new();
            m.insert("k".into(), "beat".into());
            beat.relay(m);
            beat.reap(DEAD_AFTER);
        }
    });
    let retention = s.config.realtime_messages_retention_secs;
    if retention > 0 {
        let pool = s.pool.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PRUNE_EVERY);
            loop {
                tick.tick().await;
                prune(&pool, retention).await;
            }
        });
    }
    let (changes_tx, changes_rx) = mpsc::channel::<Value>(65_536);
    tokio::spawn(changes::run(s.clone(), reg.clone(), changes_rx));
    let (messages_tx, messages_rx) = mpsc::channel::<uuid::Uuid>(MESSAGE_QUEUE);
    tokio::spawn(read_messages(s.clone(), reg.clone(), messages_rx));
    let mut rx = events.subscribe(CHANNEL);
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(Event::Notify { payload, .. }) => inbound(&reg, &changes_tx, &messages_tx, &payload),
                Ok(Event::Connected) => {
                    // Listening (again): ask the other gateways for their presences.
                    let mut m = Map::new();
                    m.insert("k".into(), "hello".into());
                    reg.relay(m);
                }
                Err(broadcast::error::RecvError::Lagged(n)) => lost_logged(n),
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// How often old realtime.messages rows are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Rows deleted per statement while pruning.
const PRUNE_BATCH: i32 = 10_000;

/// Deletes realtime.messages rows older than `retention` seconds, in batches.
async fn prune(pool: &crate::db::fair::FairPool<deadpool_postgres::Pool>, retention: u64) {
    let secs = retention.min(i32::MAX as u64) as f64;
    loop {
        let gone = match pool.get().await {
            Ok(c) => c.query_one("SELECT realtime._prune(make_interval(secs => $1), $2)", &[&secs, &PRUNE_BATCH]).await.map(|r| r.get::<_, i64>(0)),
            Err(e) => {
                tracing::warn!(error = %e, "realtime.messages not pruned");
                return;
            }
        };
        match gone {
            Ok(n) if n >= i64::from(PRUNE_BATCH) => continue,
            Ok(n) => {
                if n > 0 {
                    tracing::info!(rows = n, "pruned realtime.messages");
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "realtime.messages not pruned");
                return;
            }
        }
    }
}

/// A boolean of a join's config or a broadcast (`private`, `self`, `ack`, …) as
/// Supabase's boolean cast reads it: `None` if it is not one.
pub(super) fn bool_flag(v: &Value) -> Option<bool> {
    match v {
        Value::Null => Some(false),
        Value::Bool(b) => Some(*b),
        Value::Number(n) if n.as_u64() == Some(1) => Some(true),
        Value::Number(n) if n.as_u64() == Some(0) => Some(false),
        Value::String(t) if t.eq_ignore_ascii_case("true") || t == "1" => Some(true),
        Value::String(t) if t.eq_ignore_ascii_case("false") || t == "0" => Some(false),
        _ => None,
    }
}

/// Announced broadcast messages waiting to be read back.
const MESSAGE_QUEUE: usize = 16_384;
/// Messages read back in one statement at most.
const MESSAGE_BATCH: usize = 1024;
/// Delivered message ids remembered before old ones are dropped.
const DELIVERED_KEPT: usize = 200_000;

/// Reads announced messages back from realtime.messages by id, in batches, and
/// delivers those that exist: a NOTIFY on `pgr_realtime` can be sent by any database
/// role, so only what was committed to the table (under its INSERT policies) counts.
async fn read_messages(st: AppState, reg: Arc<Registry>, mut rx: mpsc::Receiver<uuid::Uuid>) {
    let mut ids = Vec::new();
    // Messages already delivered (an id announced again is a replay), kept for
    // longer than the read-back window of realtime._messages (10 minutes).
    let mut delivered: HashMap<uuid::Uuid, std::time::Instant> = HashMap::new();
    while rx.recv_many(&mut ids, MESSAGE_BATCH).await > 0 {
        let mut batch = std::mem::take(&mut ids);
        // Each id once, in the order announced, and never one already delivered.
        let mut seen = std::collections::HashSet::new();
        batch.retain(|id| !delivered.contains_key(id) && seen.insert(*id));
        if batch.is_empty() {
            continue;
        }
        let rows = match st.pool.get().await {
            Ok(c) => c.query("SELECT m FROM realtime._messages($1) AS m", &[&batch]).await.map_err(anyhow::Error::from),
            Err(e) => Err(anyhow::Error::from(e)),
        };
        let rows = match rows {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, n = batch.len(), "realtime messages not read back");
                continue;
            }
        };
        // In the order they were announced.
        let mut found: HashMap<String, Value> =
            rows.iter().filter_map(|r| serde_json::from_str::<Value>(&r.get::<_, String>(0)).ok()).map(|m| (m["id"].as_str().unwrap_or("").to_owned(), m)).collect();
        // In the order they were announced.
        let now = std::time::Instant::now();
        for id in batch {
            if let Some(m) = found.remove(&id.to_string()) {
                delivered.insert(id, now);
                deliver_message(&reg, &m);
            }
        }
        if delivered.len() > DELIVERED_KEPT {
            delivered.retain(|_, at| at.elapsed() < Duration::from_secs(15 * 60));
        }
    }
}

/// Counts `n` lost items and logs the total at most every 10 s (a flood must not
/// become a flood of log lines): `Some(total)` when it is time to log.
fn throttled(count: &std::sync::atomic::AtomicU64, last: &Mutex<Option<std::time::Instant>>, n: u64) -> Option<u64> {
    let total = count.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
    let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
    if last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
        return None;
    }
    *last = Some(std::time::Instant::now());
    count.store(0, std::sync::atomic::Ordering::Relaxed);
    Some(total)
}

/// "Queue full" for announced messages, throttled.
fn queue_full_logged() {
    static DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static LAST: Mutex<Option<std::time::Instant>> = Mutex::new(None);
    if let Some(n) = throttled(&DROPPED, &LAST, 1) {
        tracing::error!(dropped = n, "realtime message queue full: broadcast messages were not delivered");
    }
}

/// Notifications the listener bus dropped because this loop fell behind, throttled.
fn lost_logged(n: u64) {
    static MISSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static LAST: Mutex<Option<std::time::Instant>> = Mutex::new(None);
    if let Some(n) = throttled(&MISSED, &LAST, n) {
        tracing::error!(missed = n, "realtime notifications lost: the gateway fell behind");
    }
}

/// One notification on `pgr_realtime`.
fn inbound(reg: &Arc<Registry>, changes: &mpsc::Sender<Value>, messages: &mpsc::Sender<uuid::Uuid>, payload: &str) {
    // From the extension (row changes, realtime.send): plain JSON; from gateways:
    // signed (see Registry::relay), and only those kinds.
    let (v, from_gateway) = if payload.starts_with('{') {
        let Ok(v) = serde_json::from_str::<Value>(payload) else { return };
        (v, false)
    } else {
        let Some(body) = reg.verified(payload) else {
            tracing::warn!("an unsigned or forged realtime relay message was ignored");
            return;
        };
        let Ok(v) = serde_json::from_str::<Value>(body) else { return };
        (v, true)
    };
    if from_gateway != matches!(v["k"].as_str(), Some("b" | "p" | "beat" | "hello")) {
        return;
    }
    if v["k"] == "c" {
        if changes.try_send(v).is_err() {
            tracing::error!("postgres_changes queue full: a change was not delivered");
        }
        return;
    }
    let g = v["g"].as_str();
    if g == Some(reg.gateway.as_str()) {
        return;
    }
    let key = || TopicKey { private: v["private"].as_bool().unwrap_or(true), name: v["topic"].as_str().unwrap_or_default().to_owned() };
    match v["k"].as_str() {
        // Any role can NOTIFY: a message is delivered as read back from its table.
        Some("m") => {
            if let Some(id) = v["id"].as_str().and_then(|i| uuid::Uuid::parse_str(i).ok()) {
                if messages.try_send(id).is_err() {
                    queue_full_logged();
                }
            }
        }
        Some("b") => {
            if let Some(g) = g {
                reg.heard_from(g);
            }
            reg.broadcast_local(&key(), None, &v["payload"]);
        }
        Some("p") => {
            if let (Some(g), Some(entries)) = (g, v["entries"].as_object()) {
                reg.remote_presence(g, &key(), v["kind"].as_str().unwrap_or("join"), entries);
            }
        }
        Some("beat") => {
            if let Some(g) = g {
                reg.heard_from(g);
            }
        }
        Some("hello") => {
            // A gateway started: it learns this one's presences.
            for m in reg.local_presences() {
                reg.relay(m);
            }
        }
        _ => {}
    }
}

/// A message inserted into realtime.messages (realtime.send): to this gateway's
/// members of its topic, with its id as `meta`.
fn deliver_message(reg: &Registry, m: &Value) {
    let k = TopicKey { private: m["private"].as_bool().unwrap_or(true), name: m["topic"].as_str().unwrap_or_default().to_owned() };
    let payload = json!({"type": "broadcast", "event": m["event"], "payload": m["payload"], "meta": {"id": m["id"]}});
    reg.broadcast_local(&k, None, &payload);
}
