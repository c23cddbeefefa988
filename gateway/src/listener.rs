//! The LISTEN connection: one dedicated connection (never from the pool) that
//! listens on the gateway's channels and forwards notifications to subscribers.
//! It reconnects with backoff; every (re)connect is announced as
//! [`Event::Connected`] so consumers can resync what they may have missed.
//!
//! Each channel has its own bus ([`Buses`]): a burst of live-query deltas cannot push
//! webhook wake-ups or schema reloads out of a shared queue (a consumer that falls
//! behind on its own bus resyncs, as after a reconnect).

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio_postgres::{AsyncMessage, NoTls};

/// Channel PostgREST users already notify: `NOTIFY pgrst, 'reload schema'`; the
/// extension's event trigger sends it after every DDL command.
pub const SCHEMA_CHANNEL: &str = "pgrst";

/// What the listener reports.
#[derive(Debug, Clone)]
pub enum Event {
    /// The connection is (again) up and listening; notifications may have been missed.
    Connected,
    /// A notification.
    Notify {
        /// Channel.
        channel: String,
        /// Payload.
        payload: String,
    },
}

/// One broadcast bus per channel.
#[derive(Clone)]
pub struct Buses(std::sync::Arc<std::collections::HashMap<String, broadcast::Sender<Event>>>);

impl Buses {
    /// The events of `channel` (and every reconnect). A channel the listener was not
    /// started with yields only a closed receiver.
    pub fn subscribe(&self, channel: &str) -> broadcast::Receiver<Event> {
        match self.0.get(channel) {
            Some(tx) => tx.subscribe(),
            None => broadcast::channel(1).1,
        }
    }

    fn send(&self, ev: Event) {
        match &ev {
            Event::Connected => {
                for tx in self.0.values() {
                    let _ = tx.send(Event::Connected);
                }
            }
            Event::Notify { channel, .. } => {
                if let Some(tx) = self.0.get(channel) {
                    let _ = tx.send(ev);
                }
            }
        }
    }
}

/// Starts the listener task for `channels`; returns their buses to subscribe from.
pub fn spawn(database_url: String, channels: Vec<String>) -> Buses {
    let tx = Buses(std::sync::Arc::new(channels.iter().map(|c| (c.clone(), broadcast::channel(1024).0)).collect()));
    let out = tx.clone();
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match run_once(&database_url, &channels, &out).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "LISTEN connection lost"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    });
    tx
}

async fn run_once(url: &str, channels: &[String], out: &Buses) -> anyhow::Result<()> {
    let mut cfg: tokio_postgres::Config = url.parse()?;
    cfg.application_name("pgstack-listener");
    cfg.connect_timeout(Duration::from_secs(3));
    let (client, mut conn) = cfg.connect(NoTls).await?;
    let (msg_tx, mut msg_rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = stream.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = msg_tx.send((n.channel().to_owned(), n.payload().to_owned()));
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    for ch in channels {
        client.batch_execute(&format!("LISTEN {}", crate::db::sql::ident(ch))).await?;
    }
    tracing::info!(channels = ?channels, "listening for notifications");
    out.send(Event::Connected);
    while let Some((channel, payload)) = msg_rx.recv().await {
        out.send(Event::Notify { channel, payload });
    }
    drop(client);
    match driver.await {
        Ok(Ok(())) => anyhow::bail!("connection closed"),
        Ok(Err(e)) => Err(e.into()),
        Err(e) => Err(e.into()),
    }
}

/// Reloads the schema cache on `reload schema` notifications and after reconnects,
/// coalescing bursts (a migration fires many DDL events) into one reload.
pub fn spawn_schema_reloader(state: crate::AppState, events: &Buses) {
    let mut rx = events.subscribe(SCHEMA_CHANNEL);
    tokio::spawn(async move {
        loop {
            let ev = match rx.recv().await {
                Ok(ev) => ev,
                Err(broadcast::error::RecvError::Lagged(_)) => Event::Connected,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let wanted = match &ev {
                Event::Connected => true,
                Event::Notify { channel, payload } => channel == SCHEMA_CHANNEL && (payload.is_empty() || payload == "reload schema"),
            };
            if !wanted {
                continue;
            }
            // Let the burst settle, then drain what queued meanwhile.
            tokio::time::sleep(Duration::from_millis(50)).await;
            while rx.try_recv().is_ok() {}
            if let Err(e) = state.schema_cache.reload(&state.pool, &state.config.db_schemas).await {
                tracing::warn!(error = %e, "schema cache reload failed");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notify(channel: &str, payload: &str) -> Event {
        Event::Notify { channel: channel.into(), payload: payload.into() }
    }

    #[tokio::test]
    async fn each_channel_has_its_own_bus() {
        let buses = Buses(std::sync::Arc::new(["pgr", "pgr_webhooks"].iter().map(|c| (c.to_string(), broadcast::channel(4).0)).collect()));
        let (mut deltas, mut hooks) = (buses.subscribe("pgr"), buses.subscribe("pgr_webhooks"));
        // A flood of deltas overflows only the delta bus ...
        for i in 0..10 {
            buses.send(notify("pgr", &i.to_string()));
        }
        buses.send(notify("pgr_webhooks", "wake"));
        assert!(matches!(deltas.recv().await, Err(broadcast::error::RecvError::Lagged(6))));
        // ... the webhook bus still holds its one event, and reconnects reach both.
        assert!(matches!(hooks.recv().await, Ok(Event::Notify { payload, .. }) if payload == "wake"));
        buses.send(Event::Connected);
        assert!(matches!(hooks.recv().await, Ok(Event::Connected)));
        // A channel the listener does not listen on: a closed receiver, nothing else.
        assert!(matches!(buses.subscribe("other").recv().await, Err(broadcast::error::RecvError::Closed)));
    }
}
