//! Broadcast and presence across gateways. Each gateway relays its clients' broadcast
//! and presence frames through Postgres (`NOTIFY pgr_relay`) and republishes what the
//! others relay. Gateways announce themselves every 5 s; one silent for 15 s is taken
//! for dead and its clients leave every presence list (`presence_leave`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::hub::{Hub, Outbound};

/// NOTIFY channel between gateways.
pub const CHANNEL: &str = "pgr_relay";
const BEAT: Duration = Duration::from_secs(5);
const DEAD_AFTER: Duration = Duration::from_secs(15);
/// Frames larger than this stay local (NOTIFY payloads are limited to 8000 bytes).
const MAX_RELAYED: usize = 7800;
/// Relay messages waiting for the database (at most ~30 MiB); past it they are
/// dropped (delivered locally only) rather than queued without bound.
const MAX_PENDING: usize = 4096;

/// This gateway's side of the relay.
pub struct Relay {
    /// Random id of this gateway process.
    pub gateway: String,
    tx: mpsc::Sender<String>,
    /// Other gateways: last beat, and the (channel, client) presences they own.
    remote: Mutex<HashMap<String, Remote>>,
}

/// Another gateway: when it last beat, and the (channel, client) presences it owns.
type Remote = (Instant, Vec<(String, String)>);

impl Outbound for Relay {
    /// Queues one relay message (sent by the relay task).
    fn send(&self, kind: &str, channel: &str, client_id: &str, frame: &str) {
        let msg = json!({"g": self.gateway, "k": kind, "c": channel, "id": client_id, "f": frame}).to_string();
        if msg.len() > MAX_RELAYED {
            tracing::warn!(channel, "frame too large to relay to other gateways; delivered locally only");
            return;
        }
        if self.tx.try_send(msg).is_err() {
            tracing::debug!(channel, "relay queue full; frame delivered locally only");
        }
    }
}

impl Relay {
    /// Applies a message relayed by another gateway.
    pub fn receive(&self, hub: &Hub, payload: &str) {
        let Ok(v) = serde_json::from_str::<Value>(payload) else { return };
        let (Some(g), Some(kind)) = (v["g"].as_str(), v["k"].as_str()) else { return };
        if g == self.gateway {
            return;
        }
        let (c, id, frame) = (v["c"].as_str().unwrap_or(""), v["id"].as_str().unwrap_or(""), v["f"].as_str().unwrap_or(""));
        let mut remote = self.remote.lock().unwrap_or_else(|e| e.into_inner());
        let entry = remote.entry(g.to_owned()).or_insert_with(|| (Instant::now(), Vec::new()));
        entry.0 = Instant::now();
        match kind {
            "broadcast" => {
                if let Some(ch) = hub.existing(c) {
                    ch.publish(0, frame.to_owned());
                }
            }
            "join" | "state" => {
                let state = serde_json::from_str::<Value>(frame).ok().map(|f| f["state"].clone()).unwrap_or(Value::Null);
                let ch = hub.channel(c);
                // The same limits as for local clients: past them the state is dropped.
                if let Err(e) = ch.presence_set(id, state) {
                    tracing::debug!(channel = c, error = %e.message(), "relayed presence state not kept");
                    return;
                }
                if !entry.1.iter().any(|(cc, ii)| cc == c && ii == id) {
                    entry.1.push((c.to_owned(), id.to_owned()));
                }
                ch.publish(0, frame.to_owned());
            }
            "leave" => {
                entry.1.retain(|(cc, ii)| !(cc == c && ii == id));
                if let Some(ch) = hub.existing(c) {
                    ch.presence_remove(id);
                    ch.publish(0, frame.to_owned());
                }
            }
            _ => {}
        }
    }

    /// Removes the presences of gateways that went silent.
    fn reap(&self, hub: &Hub) {
        let dead: Vec<(String, Vec<(String, String)>)> = {
            let mut remote = self.remote.lock().unwrap_or_else(|e| e.into_inner());
            let gone: Vec<String> = remote.iter().filter(|(_, (seen, _))| seen.elapsed() > DEAD_AFTER).map(|(g, _)| g.clone()).collect();
            gone.into_iter().filter_map(|g| remote.remove(&g).map(|(_, p)| (g, p))).collect()
        };
        for (g, presences) in dead {
            tracing::warn!(gateway = %g, "a gateway went silent; its clients leave presence");
            for (c, id) in presences {
                if let Some(ch) = hub.existing(&c) {
                    ch.presence_remove(&id);
                    ch.publish(0, json!({"type": "presence_leave", "channel": c, "client_id": id}).to_string());
                }
            }
        }
    }
}

/// Creates the relay and its tasks: sending through the pool, heartbeats, reaping.
pub fn start(pool: crate::db::fair::FairPool<deadpool_postgres::Pool>, hub: Arc<Hub>) -> Arc<Relay> {
    let (tx, mut rx) = mpsc::channel::<String>(MAX_PENDING);
    let relay = Arc::new(Relay { gateway: format!("{:016x}", rand::random::<u64>()), tx, remote: Mutex::new(HashMap::new()) });
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            match pool.get().await {
                Ok(c) => {
                    if let Err(e) = c.execute("SELECT pg_notify('pgr_relay', $1)", &[&msg]).await {
                        tracing::debug!(error = %e, "relay message not sent");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "relay message not sent"),
            }
        }
    });
    let beat = relay.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(BEAT);
        loop {
            tick.tick().await;
            beat.send("beat", "", "", "");
            beat.reap(&hub);
        }
    });
    relay
}
