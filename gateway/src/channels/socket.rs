//! One realtime-js socket: Phoenix frames in (join, leave, heartbeat, broadcast,
//! presence, access_token), frames out from its queue, token expiry watched.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use serde_json::{json, Value};

use super::auth::{self, Viewer};
use super::frame::{self, Msg, Vsn};
use super::queue::{Outgoing, SocketTx};
use super::registry::{Registry, TopicKey};
use super::subscription::{parse_bindings, Subscription, Who};
use super::Limits;
use crate::realtime::socket::Bucket;
use crate::AppState;

/// postgres_changes bindings one socket may hold over all its channels.
const MAX_BINDINGS: usize = 500;

/// A joined channel of this socket.
struct Joined {
    key: TopicKey,
    member: u64,
    join_ref: String,
    who: Arc<Who>,
    exp: Option<i64>,
    token: String,
    presence_key: String,
    presence_enabled: bool,
    ack: bool,
    /// Private channels: write checks, asked once per extension.
    may_broadcast: Option<bool>,
    may_presence: Option<bool>,
    has_changes: bool,
    /// How many postgres_changes bindings it holds.
    bindings: usize,
    /// Its share of the client address's bindings budget, given back when dropped.
    _budget: Option<super::registry::BindingBudget>,
}

struct Conn {
    st: AppState,
    reg: Arc<Registry>,
    tx: SocketTx,
    /// The socket's own key (the `apikey` it connected with).
    socket_token: String,
    channels: HashMap<String, Joined>,
    next_binding: u64,
    joins: Bucket,
    events: Bucket,
    limits: Limits,
    last_seen: Instant,
    /// The client's address (its bindings budget).
    ip: std::net::IpAddr,
}

/// Runs the socket until it closes.
pub async fn run(mut ws: WebSocket, st: AppState, reg: Arc<Registry>, vsn: Vsn, socket_token: String, limits: Limits, slot: crate::realtime::hub::Slot) {
    let ip = slot.ip();
    let _slot = slot;
    // A join answered "ok" promises the changes committed after it: not before the
    // gateway listens (right after start; at most 5 s).
    st.hub.wait_listening(std::time::Duration::from_secs(5)).await;
    let (tx, mut rx) = SocketTx::new(limits.queue);
    let mut c = Conn {
        st,
        reg,
        tx,
        socket_token,
        channels: HashMap::new(),
        next_binding: 0,
        joins: Bucket::new((limits.joins_per_sec, 1)),
        events: Bucket::new((limits.events_per_sec, 1)),
        limits,
        last_seen: Instant::now(),
        ip,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let kill = c.tx.kill.clone();
    loop {
        tokio::select! {
            m = ws.recv() => {
                let m = match m {
                    Some(Ok(m)) => m,
                    _ => break,
                };
                c.last_seen = Instant::now();
                let msg = match m {
                    Message::Text(t) => frame::decode_text(vsn, t.as_str()),
                    Message::Binary(b) => frame::decode_binary(&b),
                    Message::Close(_) => break,
                    _ => continue,
                };
                match msg {
                    Ok(msg) => {
                        if c.handle(msg).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        // Nothing to reply to: the frame's refs are unknown.
                        tracing::debug!(error = e.0, "unreadable realtime frame");
                    }
                }
            }
            out = rx.recv() => {
                let Some(out) = out else { break };
                c.tx.written(&out);
                if !send(&mut ws, &out, vsn, limits.write_timeout).await {
                    break;
                }
                // Drain what is queued before waiting again.
                let mut n = 0;
                while let Ok(more) = rx.try_recv() {
                    c.tx.written(&more);
                    if !send(&mut ws, &more, vsn, limits.write_timeout).await {
                        n = usize::MAX;
                        break;
                    }
                    n += 1;
                    if n >= 256 {
                        break;
                    }
                }
                if n == usize::MAX {
                    break;
                }
            }
            _ = tick.tick() => {
                c.expire();
                // realtime-js sends a heartbeat every 25 s: a socket silent for longer
                // than IDLE is gone.
                if c.last_seen.elapsed() > IDLE {
                    let _ = ws.send(Message::Close(Some(CloseFrame { code: 1000, reason: "heartbeat timeout".into() }))).await;
                    break;
                }
            }
            _ = kill.notified() => {
                let _ = ws.send(Message::Close(Some(CloseFrame { code: 1013, reason: "client too slow: too many frames queued".into() }))).await;
                break;
            }
        }
    }
    // Conn's Drop leaves every channel (also when a handler panicked).
    drop(c);
}

impl Drop for Conn {
    fn drop(&mut self) {
        for (_, j) in self.channels.drain() {
            self.reg.leave(&j.key, j.member);
        }
    }
}

/// A socket with no frame from its client for this long is closed.
const IDLE: Duration = Duration::from_secs(60);

async fn send(ws: &mut WebSocket, out: &Outgoing, vsn: Vsn, timeout: Duration) -> bool {
    matches!(tokio::time::timeout(timeout, ws.send(Message::Text(out.text(vsn).clone()))).await, Ok(Ok(())))
}

/// Reasons a join fails, as Supabase words them.
fn join_error(reason: impl Into<String>) -> Value {
    json!({"reason": reason.into()})
}

impl Conn {
    fn push(&self, m: Msg) {
        self.tx.send(Outgoing::new(m.join_ref.as_deref(), m.r#ref.as_deref(), &m.topic, &m.event, m.payload.to_string()));
    }

    fn reply(&self, to: &Msg, status: &str, response: Value) {
        self.push(Msg::reply(to, status, response));
    }

    fn system(&self, j: &Joined, extension: &str, status: &str, message: &str) {
        let payload = json!({"extension": extension, "status": status, "message": message, "channel": j.key.name});
        self.push(Msg::push(Some(&j.join_ref), &j.key.topic(), "system", payload));
    }

    /// Closes a channel from the server side (system error, then phx_close).
    fn shut(&mut self, topic: &str, message: &str) {
        if let Some(j) = self.channels.remove(topic) {
            self.system(&j, "system", "error", message);
            self.push(Msg { join_ref: Some(j.join_ref.clone()), r#ref: Some(j.join_ref.clone()), topic: topic.into(), event: "phx_close".into(), payload: json!({}) });
            self.reg.leave(&j.key, j.member);
        }
    }

    /// Channels whose token expired are closed.
    fn expire(&mut self) {
        let now = crate::keys::now();
        let gone: Vec<(String, i64)> = self.channels.iter().filter_map(|(t, j)| j.exp.filter(|e| *e < now).map(|e| (t.clone(), now - e))).collect();
        for (t, ago) in gone {
            self.shut(&t, &format!("Token has expired {ago} seconds ago"));
        }
    }

    /// Handles one client frame; Err closes the socket.
    async fn handle(&mut self, m: Msg) -> Result<(), ()> {
        if m.topic == "phoenix" {
            if m.event == "heartbeat" {
                self.reply(&m, "ok", json!({}));
            }
            return Ok(());
        }
        match m.event.as_str() {
            "phx_join" => return self.join(m).await,
            "phx_leave" => {
                if let Some(j) = self.channels.remove(&m.topic) {
                    self.reply(&m, "ok", json!({}));
                    self.push(Msg { join_ref: Some(j.join_ref.clone()), r#ref: Some(j.join_ref.clone()), topic: m.topic.clone(), event: "phx_close".into(), payload: json!({}) });
                    self.reg.leave(&j.key, j.member);
                } else {
                    self.reply(&m, "error", json!({"reason": "unmatched topic"}));
                }
                return Ok(());
            }
            _ => {}
        }
        if !self.channels.contains_key(&m.topic) {
            self.reply(&m, "error", json!({"reason": "unmatched topic"}));
            return Ok(());
        }
        match m.event.as_str() {
            "broadcast" => self.broadcast(m).await,
            "presence" => self.presence(m).await,
            "access_token" => self.access_token(m).await,
            _ => self.reply(&m, "error", json!({"reason": format!("unknown event '{}'", m.event)})),
        }
        Ok(())
    }

    async fn join(&mut self, m: Msg) -> Result<(), ()> {
        let Some(name) = m.topic.strip_prefix("realtime:") else {
            self.reply(&m, "error", json!({"reason": "unmatched topic"}));
            return Ok(());
        };
        if !self.joins.take() {
            self.reply(&m, "error", join_error("ClientJoinRateLimitReached: Too many joins per second"));
            return Ok(());
        }
        if name.is_empty() {
            self.reply(&m, "error", join_error("TopicNameRequired: You must provide a topic name"));
            return Ok(());
        }
        if name.len() > 255 {
            self.reply(&m, "error", join_error("TopicNameTooLong: topic names are at most 255 bytes"));
            return Ok(());
        }
        // A second join of a joined topic replaces the first.
        if let Some(old) = self.channels.remove(&m.topic) {
            self.push(Msg { join_ref: Some(old.join_ref.clone()), r#ref: Some(old.join_ref.clone()), topic: m.topic.clone(), event: "phx_close".into(), payload: json!({}) });
            self.reg.leave(&old.key, old.member);
        }
        if self.channels.len() >= self.limits.max_channels {
            self.reply(&m, "error", join_error("ChannelRateLimitReached: Too many channels"));
            return Ok(());
        }
        let p = &m.payload;
        let token = match p["access_token"].as_str() {
            Some(t) if !t.is_empty() && !t.starts_with("sb_") => t.to_owned(),
            _ => self.socket_token.clone(),
        };
        let viewer = match auth::viewer(&token, &self.st.config) {
            Ok(v) => v,
            Err(reason) => {
                self.reply(&m, "error", join_error(reason));
                return Ok(());
            }
        };
        let cfg = &p["config"];
        let flag = |v: &Value| super::bool_flag(v) == Some(true);
        let private = flag(&cfg["private"]);
        let self_broadcast = flag(&cfg["broadcast"]["self"]);
        let ack = flag(&cfg["broadcast"]["ack"]);
        let presence_enabled = flag(&cfg["presence"]["enabled"]) || cfg["presence"]["key"].as_str().is_some_and(|k| !k.is_empty());
        let presence_key = match cfg["presence"]["key"].as_str() {
            Some(k) if !k.is_empty() => k.chars().take(255).collect(),
            _ => uuid::Uuid::new_v4().to_string(),
        };
        let (echo, bindings) = match parse_bindings(&cfg["postgres_changes"], &mut self.next_binding) {
            Ok(b) => b,
            Err(e) => {
                self.reply(&m, "error", join_error(format!("InvalidJoinPayload: {e}")));
                return Ok(());
            }
        };
        // postgres_changes bindings are matched against every change: a socket holds
        // at most MAX_BINDINGS of them over all its channels.
        let held: usize = self.channels.values().map(|j| j.bindings).sum();
        if held + bindings.len() > MAX_BINDINGS {
            self.reply(&m, "error", join_error(format!("InvalidJoinPayload: at most {MAX_BINDINGS} postgres_changes per connection")));
            return Ok(());
        }
        let budget = if bindings.is_empty() {
            None
        } else {
            match self.reg.reserve_bindings(self.ip, bindings.len()) {
                Some(b) => Some(b),
                None => {
                    self.reply(&m, "error", join_error(format!("InvalidJoinPayload: at most {} postgres_changes per client address", super::registry::MAX_BINDINGS_PER_IP)));
                    return Ok(());
                }
            }
        };
        // Only joins that ask the database wait for a place among the checks.
        let _permit = if private || !bindings.is_empty() { Some(self.reg.checks.acquire().await) } else { None };
        let (reads_broadcast, reads_presence) = if private {
            match auth::read_policies(&self.st, &viewer.who, name).await {
                Ok((b, p)) if b || p => (b, p && presence_enabled),
                Ok(_) => {
                    self.reply(&m, "error", join_error(format!("Unauthorized: You do not have permissions to read from this Channel topic: {name}")));
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "private channel read check failed");
                    self.reply(&m, "error", join_error("Unknown Error on Channel"));
                    return Ok(());
                }
            }
        } else {
            (true, presence_enabled)
        };
        let key = TopicKey { private, name: name.to_owned() };
        let member = rand::random::<u64>();
        let join_ref = m.join_ref.clone().or_else(|| m.r#ref.clone()).unwrap_or_default();
        self.reg.join(&key, member, &self.tx, self_broadcast, reads_broadcast, reads_presence);
        let has_changes = !bindings.is_empty();
        let j = Joined {
            bindings: bindings.len(),
            _budget: budget,
            key: key.clone(),
            member,
            join_ref: join_ref.clone(),
            who: viewer.who.clone(),
            exp: viewer.exp,
            token,
            presence_key,
            presence_enabled,
            ack,
            may_broadcast: None,
            may_presence: None,
            has_changes,
        };
        self.reply(&m, "ok", json!({"postgres_changes": echo}));
        if reads_presence {
            self.push(Msg::push(Some(&join_ref), &m.topic, "presence_state", self.reg.presence_state(&key)));
        }
        if has_changes {
            match published(&self.st, &bindings).await {
                Ok(missing) if missing.is_empty() => {
                    let sub = Subscription { socket: self.tx.clone(), topic: m.topic.clone(), bindings, who: viewer.who.clone(), exp: viewer.exp };
                    self.reg.subscriptions.lock().unwrap_or_else(|e| e.into_inner()).insert(member, Arc::new(sub));
                    self.system(&j, "postgres_changes", "ok", "Subscribed to PostgreSQL");
                }
                Ok(missing) => {
                    let msg = format!(
                        "{{:error, \"Unable to subscribe to changes with given parameters. Please check Realtime is enabled for the given connect parameters: [{}]\"}}",
                        missing.join(", ")
                    );
                    self.system(&j, "postgres_changes", "error", &msg);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "postgres_changes subscription check failed");
                    self.system(&j, "postgres_changes", "error", "Realtime was unable to connect to the project database");
                }
            }
        }
        self.channels.insert(m.topic.clone(), j);
        Ok(())
    }

    async fn broadcast(&mut self, m: Msg) {
        if !self.events.take() {
            let topic = m.topic.clone();
            self.shut(&topic, "Too many messages per second");
            return;
        }
        let size = m.payload.to_string().len();
        let Some(j) = self.channels.get(&m.topic) else { return };
        let ack = j.ack;
        if size > self.limits.max_payload {
            if ack {
                self.reply(&m, "error", json!("payload_size_exceeded"));
            }
            return;
        }
        if j.key.private && !self.may(&m.topic, "broadcast").await {
            return; // dropped without a reply, as Supabase
        }
        let Some(j) = self.channels.get(&m.topic) else { return };
        // {type, event, payload}: a string event; the server's own `meta` (message ids
        // of SQL broadcasts) cannot be forged by a client.
        let (Some(event), Some(body)) = (m.payload["event"].as_str(), m.payload.get("payload")) else {
            if ack {
                self.reply(&m, "error", json!({"reason": "a broadcast needs a string event and a payload"}));
            }
            return;
        };
        let payload = json!({"type": "broadcast", "event": event, "payload": body});
        self.reg.broadcast(&j.key, Some(j.member), &payload);
        if ack {
            self.reply(&m, "ok", json!({}));
        }
    }

    async fn presence(&mut self, m: Msg) {
        if !self.events.take() {
            let topic = m.topic.clone();
            self.shut(&topic, "Too many presence messages per second");
            return;
        }
        let Some(j) = self.channels.get(&m.topic) else { return };
        if j.key.private && !self.may(&m.topic, "presence").await {
            self.reply(&m, "error", json!({}));
            return;
        }
        let Some(j) = self.channels.get(&m.topic) else { return };
        match m.payload["event"].as_str() {
            Some("track") => {
                let meta = m.payload.get("payload").cloned().unwrap_or(json!({}));
                if !meta.is_object() {
                    self.reply(&m, "error", json!({"reason": "Presence track payload must be a map"}));
                    return;
                }
                if meta.to_string().len() > self.limits.max_presence {
                    self.shut(&m.topic.clone(), "Track message size exceeded");
                    return;
                }
                if self.reg.track(&j.key, j.member, &j.presence_key, meta) {
                    self.reply(&m, "ok", json!({}));
                } else {
                    self.reply(&m, "error", json!({"reason": "too many presences on this channel"}));
                }
            }
            Some("untrack") => {
                self.reg.untrack(&j.key, j.member);
                self.reply(&m, "ok", json!({}));
            }
            _ => self.reply(&m, "error", json!({"reason": "presence event must be track or untrack"})),
        }
    }

    /// Write policy of a private channel for `extension`, asked once.
    async fn may(&mut self, topic: &str, extension: &str) -> bool {
        let Some(j) = self.channels.get(topic) else { return false };
        let known = if extension == "broadcast" { j.may_broadcast } else { j.may_presence };
        if let Some(k) = known {
            return k;
        }
        let (who, name) = (j.who.clone(), j.key.name.clone());
        let ok = {
            let _permit = self.reg.checks.acquire().await;
            auth::may_write(&self.st, &who, &name, extension).await
        };
        if let Some(j) = self.channels.get_mut(topic) {
            if extension == "broadcast" {
                j.may_broadcast = Some(ok);
            } else {
                j.may_presence = Some(ok);
            }
        }
        ok
    }

    async fn access_token(&mut self, m: Msg) {
        if !self.events.take() {
            let topic = m.topic.clone();
            self.shut(&topic, "Too many messages per second");
            return;
        }
        let Some(token) = m.payload["access_token"].as_str().map(str::to_owned) else { return };
        let Some(j) = self.channels.get(&m.topic) else { return };
        if token.is_empty() || token.starts_with("sb_") || token == j.token {
            return;
        }
        let v: Viewer = match auth::viewer(&token, &self.st.config) {
            Ok(v) => v,
            Err(reason) => {
                let msg = reason.split_once(": ").map(|(_, r)| r.to_owned()).unwrap_or(reason);
                self.shut(&m.topic.clone(), &msg);
                return;
            }
        };
        let (key, member, presence_enabled) = (j.key.clone(), j.member, j.presence_enabled);
        if key.private {
            let reads = {
                let _permit = self.reg.checks.acquire().await;
                auth::read_policies(&self.st, &v.who, &key.name).await
            };
            match reads {
                Ok((b, p)) if b || p => self.reg.set_reads(&key, member, b, p && presence_enabled),
                Ok(_) => {
                    self.shut(&m.topic.clone(), &format!("You no longer have permission to read from this Channel topic: {}", key.name));
                    return;
                }
                Err(_) => {
                    self.shut(&m.topic.clone(), "Realtime was unable to connect to the project database");
                    return;
                }
            }
        }
        if let Some(j) = self.channels.get_mut(&m.topic) {
            j.who = v.who.clone();
            j.exp = v.exp;
            j.token = token;
            j.may_broadcast = None;
            j.may_presence = None;
            if j.has_changes {
                if let Some(s) = self.reg.subscriptions.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&member) {
                    *s = Arc::new(Subscription { who: v.who, exp: v.exp, ..(**s).clone() });
                }
            }
        }
    }
}

/// The bindings whose tables are not in the publication supabase_realtime
/// (described as Supabase does), or none. One query for all of them.
async fn published(st: &AppState, bindings: &[super::subscription::Binding]) -> anyhow::Result<Vec<String>> {
    let c = st.pool.get().await?;
    let schemas: Vec<&str> = bindings.iter().map(|b| b.schema.as_str()).collect();
    let tables: Vec<Option<&str>> = bindings.iter().map(|b| b.table.as_deref()).collect();
    let rows = c
        .query(
            "SELECT EXISTS (SELECT 1 FROM pg_publication_tables p WHERE p.pubname = 'supabase_realtime' AND p.schemaname = x.s AND (x.t IS NULL OR p.tablename = x.t))
               FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS x(s, t, i) ORDER BY x.i",
            &[&schemas, &tables],
        )
        .await?;
    Ok(bindings
        .iter()
        .zip(rows)
        .filter(|(_, r)| !r.get::<_, bool>(0))
        .map(|(b, _)| format!("event: {:?}, schema: {}, table: {}", b.event, b.schema, b.table.as_deref().unwrap_or("*")))
        .collect())
}
