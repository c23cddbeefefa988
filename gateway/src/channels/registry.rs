//! Who is joined to which topic on this gateway: broadcast fan-out, presence state
//! and diffs, the postgres_changes subscriptions, and the relay to other gateways
//! (`NOTIFY pgr_realtime`, applied by [`super::inbound`]).
//!
//! Public and private channels of one name are different topics (as Supabase):
//! neither sees the other's broadcasts or presence.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::queue::{Outgoing, SocketTx};
use super::subscription::Subscription;

/// A topic: the name after `realtime:`, public or private.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct TopicKey {
    pub private: bool,
    pub name: String,
}

impl TopicKey {
    /// The channel topic clients use.
    pub fn topic(&self) -> String {
        format!("realtime:{}", self.name)
    }
}

/// A joined channel on this gateway.
struct Member {
    socket: SocketTx,
    /// `config.broadcast.self`.
    self_broadcast: bool,
    /// Receives broadcasts (private channels: the read policy allowed it).
    reads_broadcast: bool,
    /// Receives presence (enabled in the join, and allowed on private channels).
    reads_presence: bool,
}

/// One tracked presence.
#[derive(Clone)]
struct Meta {
    phx_ref: String,
    /// The member that tracked it here, or the gateway it came from.
    owner: Owner,
    meta: Value,
}

#[derive(Clone, PartialEq)]
enum Owner {
    Local(u64),
    Remote(String),
}

#[derive(Default)]
struct Topic {
    members: HashMap<u64, Member>,
    /// presence key → metas.
    presence: BTreeMap<String, Vec<Meta>>,
}

/// Everything joined on this gateway.
pub struct Registry {
    topics: Mutex<HashMap<TopicKey, Topic>>,
    /// postgres_changes subscriptions by member id.
    pub subscriptions: Mutex<HashMap<u64, Arc<Subscription>>>,
    /// postgres_changes bindings held per client address (see [`BindingBudget`]).
    bindings_by_ip: Mutex<HashMap<std::net::IpAddr, usize>>,
    /// This gateway's id in relayed messages.
    pub gateway: String,
    relay: mpsc::Sender<String>,
    /// The relay queue's receiving end, until `super::spawn` takes it.
    relay_rx: Mutex<Option<mpsc::Receiver<String>>>,
    /// Other gateways: when they were last heard of.
    peers: Mutex<HashMap<String, Instant>>,
    /// Key of the relay's signatures.
    key: OnceLock<Vec<u8>>,
    /// Database checks of joins and private-channel writes running at once (they
    /// share the gateway's pool with every other product).
    pub checks: tokio::sync::Semaphore,
}

/// Concurrent join / write checks against the database.
const MAX_CHECKS: usize = 4;
/// Presences one topic holds on this gateway (local and relayed).
pub const MAX_PRESENCES: usize = 10_000;

/// Relayed messages larger than this stay on this gateway (NOTIFY's limit is 8000).
pub const MAX_RELAYED: usize = 7800;

impl Registry {
    /// An empty registry.
    pub fn new() -> Arc<Registry> {
        let (relay, rx) = mpsc::channel(4096);
        let r = Registry {
            topics: Mutex::new(HashMap::new()),
            subscriptions: Mutex::new(HashMap::new()),
            bindings_by_ip: Mutex::new(HashMap::new()),
            gateway: format!("{:016x}", rand::random::<u64>()),
            relay,
            relay_rx: Mutex::new(Some(rx)),
            peers: Mutex::new(HashMap::new()),
            key: OnceLock::new(),
            checks: tokio::sync::Semaphore::new(MAX_CHECKS),
        };
        Arc::new(r)
    }

    /// Sets the key relayed messages are signed with (the JWT secret).
    pub fn set_key(&self, key: &str) {
        let _ = self.key.set(key.as_bytes().to_vec());
    }

    fn sign(&self, body: &str) -> String {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.key.get().map(Vec::as_slice).unwrap_or_default()).expect("HMAC takes any key");
        mac.update(body.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The JSON of a relayed message whose signature holds.
    pub fn verified<'a>(&self, text: &'a str) -> Option<&'a str> {
        use hmac::Mac;
        let (sig, body) = text.split_once('.')?;
        let sig = hex::decode(sig).ok()?;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.key.get().map(Vec::as_slice).unwrap_or_default()).ok()?;
        mac.update(body.as_bytes());
        mac.verify_slice(&sig).ok()?;
        Some(body)
    }

    /// The relay queue (once).
    pub fn take_relay(&self) -> Option<mpsc::Receiver<String>> {
        self.relay_rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn topics(&self) -> std::sync::MutexGuard<'_, HashMap<TopicKey, Topic>> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message for the other gateways.
    pub fn relay(&self, mut msg: Map<String, Value>) {
        msg.insert("g".into(), Value::String(self.gateway.clone()));
        let body = Value::Object(msg).to_string();
        // `<hmac>.<json>`: gateways share the JWT secret, so a database role that can
        // only pg_notify cannot pass for a gateway (broadcasts into private topics,
        // presence).
        let text = format!("{}.{body}", self.sign(&body));
        if text.len() > MAX_RELAYED {
            tracing::warn!(bytes = text.len(), "realtime message too large for NOTIFY: delivered on this gateway only");
            return;
        }
        if self.relay.try_send(text).is_err() {
            // At most one line a second: a flood must not become a log flood too.
            static LAST: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
            let now = crate::keys::now();
            if LAST.swap(now, std::sync::atomic::Ordering::Relaxed) != now {
                tracing::warn!("realtime relay queue full: messages delivered on this gateway only");
            }
        }
    }

    /// Adds a member to a topic.
    pub fn join(&self, key: &TopicKey, member: u64, socket: &SocketTx, self_broadcast: bool, reads_broadcast: bool, reads_presence: bool) {
        let mut t = self.topics();
        let topic = t.entry(key.clone()).or_default();
        topic.members.insert(member, Member { socket: socket.clone(), self_broadcast, reads_broadcast, reads_presence });
    }

    /// Changes what a member may read (after a new token).
    pub fn set_reads(&self, key: &TopicKey, member: u64, reads_broadcast: bool, reads_presence: bool) {
        if let Some(m) = self.topics().get_mut(key).and_then(|t| t.members.get_mut(&member)) {
            m.reads_broadcast = reads_broadcast;
            m.reads_presence = reads_presence;
        }
    }

    /// Removes a member: its presences leave (a diff to the others) and its
    /// postgres_changes subscription ends.
    pub fn leave(&self, key: &TopicKey, member: u64) {
        self.subscriptions.lock().unwrap_or_else(|e| e.into_inner()).remove(&member);
        let leaves = {
            let mut t = self.topics();
            let Some(topic) = t.get_mut(key) else { return };
            topic.members.remove(&member);
            let leaves = take_presences(topic, |m| m.owner == Owner::Local(member));
            if topic.members.is_empty() && topic.presence.is_empty() {
                t.remove(key);
            }
            leaves
        };
        if !leaves.is_empty() {
            self.presence_diff(key, Map::new(), leaves.clone());
            self.relay(relay_presence(key, "leave", &leaves));
        }
    }

    /// The topic's presence state (`presence_state`'s payload).
    pub fn presence_state(&self, key: &TopicKey) -> Value {
        let t = self.topics();
        let mut out = Map::new();
        if let Some(topic) = t.get(key) {
            for (k, metas) in &topic.presence {
                out.insert(k.clone(), json!({"metas": metas.iter().map(meta_json).collect::<Vec<_>>()}));
            }
        }
        Value::Object(out)
    }

    /// Tracks (replaces) the member's presence under `presence_key`; false when the
    /// topic already holds [`MAX_PRESENCES`].
    pub fn track(&self, key: &TopicKey, member: u64, presence_key: &str, meta: Value) -> bool {
        let phx_ref = format!("{:x}", rand::random::<u64>());
        let (joins, leaves) = {
            let mut t = self.topics();
            let topic = t.entry(key.clone()).or_default();
            let mine = topic.presence.values().flatten().filter(|m| m.owner == Owner::Local(member)).count();
            if topic.presence.values().map(Vec::len).sum::<usize>() - mine >= MAX_PRESENCES {
                return false;
            }
            let leaves = take_presences(topic, |m| m.owner == Owner::Local(member));
            let m = Meta { phx_ref, owner: Owner::Local(member), meta };
            let mut joins = Map::new();
            joins.insert(presence_key.to_owned(), json!({"metas": [meta_json(&m)]}));
            topic.presence.entry(presence_key.to_owned()).or_default().push(m);
            (joins, leaves)
        };
        self.presence_diff(key, joins.clone(), leaves.clone());
        if !leaves.is_empty() {
            self.relay(relay_presence(key, "leave", &leaves));
        }
        self.relay(relay_presence(key, "join", &joins));
        true
    }

    /// Untracks the member's presence.
    pub fn untrack(&self, key: &TopicKey, member: u64) {
        let leaves = {
            let mut t = self.topics();
            let Some(topic) = t.get_mut(key) else { return };
            take_presences(topic, |m| m.owner == Owner::Local(member))
        };
        if !leaves.is_empty() {
            self.presence_diff(key, Map::new(), leaves.clone());
            self.relay(relay_presence(key, "leave", &leaves));
        }
    }

    /// Sends a presence diff to the topic's members that read presence.
    fn presence_diff(&self, key: &TopicKey, joins: Map<String, Value>, leaves: Map<String, Value>) {
        let frame = Outgoing::new(None, None, &key.topic(), "presence_diff", json!({"joins": joins, "leaves": leaves}).to_string());
        let t = self.topics();
        if let Some(topic) = t.get(key) {
            for m in topic.members.values().filter(|m| m.reads_presence) {
                m.socket.send(frame.clone());
            }
        }
    }

    /// Delivers a broadcast to this gateway's members of `key` (not to `from` unless
    /// it asked for its own broadcasts).
    pub fn broadcast_local(&self, key: &TopicKey, from: Option<u64>, payload: &Value) {
        let frame = Outgoing::new(None, None, &key.topic(), "broadcast", payload.to_string());
        let t = self.topics();
        if let Some(topic) = t.get(key) {
            for (id, m) in &topic.members {
                if m.reads_broadcast && (Some(*id) != from || m.self_broadcast) {
                    m.socket.send(frame.clone());
                }
            }
        }
    }

    /// A broadcast for every gateway: delivered here, relayed to the others.
    pub fn broadcast(&self, key: &TopicKey, from: Option<u64>, payload: &Value) {
        self.broadcast_local(key, from, payload);
        let mut m = Map::new();
        m.insert("k".into(), "b".into());
        m.insert("topic".into(), key.name.clone().into());
        m.insert("private".into(), key.private.into());
        m.insert("payload".into(), payload.clone());
        self.relay(m);
    }

    /// Applies presence relayed by gateway `g`.
    pub fn remote_presence(&self, g: &str, key: &TopicKey, kind: &str, entries: &Map<String, Value>) {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).insert(g.to_owned(), Instant::now());
        let (mut joins, mut leaves) = (Map::new(), Map::new());
        {
            let mut t = self.topics();
            let topic = t.entry(key.clone()).or_default();
            let mut total: usize = topic.presence.values().map(Vec::len).sum();
            for (pkey, v) in entries {
                let metas = v["metas"].as_array().cloned().unwrap_or_default();
                for m in metas {
                    let Some(phx_ref) = m["phx_ref"].as_str().map(str::to_owned) else { continue };
                    let mut meta = m.clone();
                    if let Some(o) = meta.as_object_mut() {
                        o.remove("phx_ref");
                    }
                    let list = topic.presence.entry(pkey.clone()).or_default();
                    if kind == "join" {
                        if total >= MAX_PRESENCES {
                            continue;
                        }
                        if !list.iter().any(|x| x.phx_ref == phx_ref) {
                            total += 1;
                            list.push(Meta { phx_ref, owner: Owner::Remote(g.to_owned()), meta });
                            push_meta(&mut joins, pkey, m);
                        }
                    } else if let Some(i) = list.iter().position(|x| x.phx_ref == phx_ref) {
                        list.remove(i);
                        push_meta(&mut leaves, pkey, m);
                    }
                }
                if topic.presence.get(pkey).is_some_and(Vec::is_empty) {
                    topic.presence.remove(pkey);
                }
            }
            if topic.members.is_empty() && topic.presence.is_empty() {
                t.remove(key);
            }
        }
        if !joins.is_empty() || !leaves.is_empty() {
            self.presence_diff(key, joins, leaves);
        }
    }

    /// Another gateway is alive.
    pub fn heard_from(&self, g: &str) {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).insert(g.to_owned(), Instant::now());
    }

    /// Presences of gateways silent for `dead_after` leave.
    pub fn reap(&self, dead_after: std::time::Duration) {
        let gone: Vec<String> = {
            let mut p = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            let gone: Vec<String> = p.iter().filter(|(_, t)| t.elapsed() > dead_after).map(|(g, _)| g.clone()).collect();
            for g in &gone {
                p.remove(g);
            }
            gone
        };
        for g in gone {
            let diffs: Vec<(TopicKey, Map<String, Value>)> = {
                let mut t = self.topics();
                let d: Vec<(TopicKey, Map<String, Value>)> =
                    t.iter_mut().map(|(k, topic)| (k.clone(), take_presences(topic, |m| m.owner == Owner::Remote(g.clone())))).filter(|(_, l)| !l.is_empty()).collect();
                t.retain(|_, topic| !topic.members.is_empty() || !topic.presence.is_empty());
                d
            };
            for (k, leaves) in diffs {
                self.presence_diff(&k, Map::new(), leaves);
            }
        }
    }

    /// Every presence tracked here, as relay messages (for a gateway that starts).
    pub fn local_presences(&self) -> Vec<Map<String, Value>> {
        let t = self.topics();
        let mut out = Vec::new();
        for (k, topic) in t.iter() {
            let mut joins = Map::new();
            for (pkey, metas) in &topic.presence {
                for m in metas.iter().filter(|m| matches!(m.owner, Owner::Local(_))) {
                    push_meta(&mut joins, pkey, meta_json(m));
                }
            }
            if !joins.is_empty() {
                out.push(relay_presence(k, "join", &joins));
            }
        }
        out
    }
}

fn meta_json(m: &Meta) -> Value {
    let mut v = match &m.meta {
        Value::Object(o) => o.clone(),
        _ => Map::new(),
    };
    v.insert("phx_ref".into(), Value::String(m.phx_ref.clone()));
    Value::Object(v)
}

fn push_meta(into: &mut Map<String, Value>, key: &str, meta: Value) {
    let e = into.entry(key.to_owned()).or_insert_with(|| json!({"metas": []}));
    if let Some(a) = e["metas"].as_array_mut() {
        a.push(meta);
    }
}

/// Removes the presences `which` selects; returns them as a `leaves` map.
fn take_presences(topic: &mut Topic, which: impl Fn(&Meta) -> bool) -> Map<String, Value> {
    let mut leaves = Map::new();
    topic.presence.retain(|k, metas| {
        metas.retain(|m| {
            if which(m) {
                push_meta(&mut leaves, k, meta_json(m));
                false
            } else {
                true
            }
        });
        !metas.is_empty()
    });
    leaves
}

fn relay_presence(key: &TopicKey, kind: &str, entries: &Map<String, Value>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("k".into(), "p".into());
    m.insert("kind".into(), kind.into());
    m.insert("topic".into(), key.name.clone().into());
    m.insert("private".into(), key.private.into());
    m.insert("entries".into(), Value::Object(entries.clone()));
    m
}

/// postgres_changes bindings one client address may hold over all its sockets (each
/// is matched against every change and holds its filter in memory).
pub const MAX_BINDINGS_PER_IP: usize = 10_000;

/// `n` bindings held by a channel of a client at `ip`, given back when dropped (the
/// channel left, was replaced, or its socket closed).
pub struct BindingBudget {
    reg: Arc<Registry>,
    ip: std::net::IpAddr,
    n: usize,
}

impl Registry {
    /// Takes `n` bindings of `ip`'s budget, if they fit.
    pub fn reserve_bindings(self: &Arc<Self>, ip: std::net::IpAddr, n: usize) -> Option<BindingBudget> {
        let mut m = self.bindings_by_ip.lock().unwrap_or_else(|e| e.into_inner());
        let held = m.entry(ip).or_insert(0);
        if *held + n > MAX_BINDINGS_PER_IP {
            return None;
        }
        *held += n;
        Some(BindingBudget { reg: self.clone(), ip, n })
    }
}

impl Drop for BindingBudget {
    fn drop(&mut self) {
        let mut m = self.reg.bindings_by_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = m.get_mut(&self.ip) {
            *held = held.saturating_sub(self.n);
            if *held == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::Vsn;
    use super::*;

    fn key(n: &str) -> TopicKey {
        TopicKey { private: false, name: n.into() }
    }

    #[test]
    fn frames_encode_in_both_versions() {
        let f = Outgoing::new(Some("1"), None, "realtime:a", "broadcast", r#"{"x":1}"#.into());
        assert_eq!(f.text(Vsn::V2).as_str(), r#"["1",null,"realtime:a","broadcast",{"x":1}]"#);
        let v: Value = serde_json::from_str(f.text(Vsn::V1).as_str()).unwrap();
        assert_eq!(v, json!({"join_ref": "1", "ref": null, "topic": "realtime:a", "event": "broadcast", "payload": {"x": 1}}));
    }

    #[tokio::test]
    async fn broadcast_skips_the_sender_unless_self_and_private_topics_are_apart() {
        let reg = Registry::new();
        let (a, mut ra) = SocketTx::new(16);
        let (b, mut rb) = SocketTx::new(16);
        let (c, mut rc) = SocketTx::new(16);
        reg.join(&key("room"), 1, &a, false, true, false);
        reg.join(&key("room"), 2, &b, true, true, false);
        reg.join(&TopicKey { private: true, name: "room".into() }, 3, &c, true, true, false);
        reg.broadcast(&key("room"), Some(1), &json!({"type": "broadcast", "event": "e", "payload": {}}));
        reg.broadcast(&key("room"), Some(2), &json!({"type": "broadcast", "event": "e", "payload": {}}));
        assert_eq!(
            ra.try_recv().map(|f| f.text(Vsn::V2).as_str().to_owned()).ok(),
            Some(r#"[null,null,"realtime:room","broadcast",{"event":"e","payload":{},"type":"broadcast"}]"#.into())
        );
        assert!(ra.try_recv().is_err());
        assert!(rb.try_recv().is_ok() && rb.try_recv().is_ok());
        assert!(rc.try_recv().is_err());
    }

    #[test]
    fn relayed_messages_are_signed() {
        let reg = Registry::new();
        reg.set_key("k1");
        let mut rx = reg.take_relay().unwrap();
        reg.relay(Map::from_iter([("k".to_owned(), json!("beat"))]));
        let text = rx.try_recv().unwrap();
        let body = reg.verified(&text).expect("own signature");
        assert_eq!(serde_json::from_str::<Value>(body).unwrap()["k"], "beat");
        assert!(reg.verified(&text.replacen("beat", "hello", 1)).is_none());
        assert!(reg.verified(r#"{"k":"b","topic":"x","payload":{}}"#).is_none());
        let other = Registry::new();
        other.set_key("k2");
        assert!(other.verified(&text).is_none());
    }

    #[tokio::test]
    async fn presence_tracks_diffs_and_leaves_with_the_member() {
        let reg = Registry::new();
        let (a, mut ra) = SocketTx::new(16);
        reg.join(&key("room"), 1, &a, false, true, true);
        assert!(reg.track(&key("room"), 1, "u1", json!({"online": true})));
        let state = reg.presence_state(&key("room"));
        assert_eq!(state["u1"]["metas"][0]["online"], true);
        assert!(state["u1"]["metas"][0]["phx_ref"].is_string());
        let diff: Value = serde_json::from_str(ra.try_recv().unwrap().text(Vsn::V2).as_str()).unwrap();
        assert_eq!(diff[3], "presence_diff");
        assert_eq!(diff[4]["joins"]["u1"]["metas"][0]["online"], true);
        // Re-tracking replaces: the old meta leaves, the new one joins.
        assert!(reg.track(&key("room"), 1, "u1", json!({"online": false})));
        let diff: Value = serde_json::from_str(ra.try_recv().unwrap().text(Vsn::V2).as_str()).unwrap();
        assert_eq!((diff[4]["leaves"]["u1"]["metas"][0]["online"].clone(), diff[4]["joins"]["u1"]["metas"][0]["online"].clone()), (json!(true), json!(false)));
        reg.leave(&key("room"), 1);
        assert_eq!(reg.presence_state(&key("room")), json!({}));
        // Remote presences join and are reaped with their gateway.
        reg.join(&key("room"), 2, &a, false, true, true);
        let mut entries = Map::new();
        entries.insert("u9".into(), json!({"metas": [{"phx_ref": "r1", "x": 1}]}));
        reg.remote_presence("g2", &key("room"), "join", &entries);
        assert_eq!(reg.presence_state(&key("room"))["u9"]["metas"][0]["x"], 1);
        std::thread::sleep(std::time::Duration::from_millis(5));
        reg.reap(std::time::Duration::from_millis(1));
        assert_eq!(reg.presence_state(&key("room")), json!({}));
    }
}
