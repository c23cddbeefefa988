//! Delivery worker: claims due outbox events (SKIP LOCKED, under a lease), POSTs
//! them, records the outcome. Wakes on NOTIFY 'pgr_webhooks' and every second (for
//! retries and leases that ran out); on start it resumes whatever is due.
//! Retries and the attempt budget are the database's (`pgr.webhook_done_many`,
//! setting `pgstack.webhook_max_attempts`, default 3: immediately, after 1 s, after
//! 4 s; then the event is kept as dead), so every gateway applies the same.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ssrf::{Policy, Resolver};
use crate::AppState;

/// NOTIFY channel the outbox trigger uses.
pub const CHANNEL: &str = "pgr_webhooks";
const BATCH: i32 = 64;

/// `sha256=<hex HMAC-SHA256 of body>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The HTTP client for deliveries: policy-checking resolver, no redirects, timeout,
/// and no proxy from HTTP_PROXY / HTTPS_PROXY / ALL_PROXY (a proxy resolves and
/// connects on our behalf, where the resolver's check does not apply).
pub fn client(policy: Arc<Policy>, timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .dns_resolver(Arc::new(Resolver(policy)))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .user_agent("pgstack-webhooks/1.0")
        .build()
        .expect("webhook HTTP client")
}

/// Starts the worker, and the outbox pruning (`retention`).
pub fn spawn(s: AppState, events: &crate::listener::Buses) {
    super::retention::spawn(s.clone());
    let mut rx = events.subscribe(CHANNEL);
    tokio::spawn(async move {
        let timeout = Duration::from_secs(s.config.webhook_timeout_secs);
        let http = client(s.webhook_policy.clone(), timeout);
        let lease = (s.config.webhook_timeout_secs as i32) * 2 + 5;
        loop {
            loop {
                match drain_once(&s, &http, lease).await {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "webhook outbox not reachable");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = rx.recv() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
}

/// Claims and delivers one batch; returns how many were claimed.
async fn drain_once(s: &AppState, http: &reqwest::Client, lease: i32) -> anyhow::Result<usize> {
    let client = s.pool.get().await?;
    let rows = client.query("SELECT id, url, secret, body, attempts, extract(epoch FROM created_at)::bigint FROM pgr.webhook_claim($1, $2)", &[&BATCH, &lease]).await?;
    drop(client);
    let n = rows.len();
    let deliveries = rows.into_iter().map(|r| {
        let (id, url, secret, body, attempts, ts): (i64, String, String, String, i32, i64) = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
        async move {
            let error = send(s, http, id, &url, &secret, body, ts).await.err();
            if let Some(e) = &error {
                tracing::warn!(event = id, attempt = attempts, error = %e, "webhook delivery failed");
            }
            (id, error)
        }
    });
    let outcomes = futures_util::future::join_all(deliveries).await;
    // One statement records the whole batch's outcomes.
    let ids: Vec<i64> = outcomes.iter().map(|o| o.0).collect();
    let oks: Vec<bool> = outcomes.iter().map(|o| o.1.is_none()).collect();
    let errors: Vec<Option<String>> = outcomes.iter().map(|o| o.1.clone()).collect();
    let client = s.pool.get().await?;
    client.execute("SELECT pgr.webhook_done_many($1, $2, $3)", &[&ids, &oks, &errors]).await?;
    Ok(n)
}

async fn send(s: &AppState, http: &reqwest::Client, id: i64, url: &str, secret: &str, body: String, ts: i64) -> Result<(), String> {
    let url = s.webhook_policy.check_url(url)?;
    let mut req = http.post(url).header("content-type", "application/json").header("x-webhook-id", id.to_string()).header("x-webhook-timestamp", ts.to_string());
    if !secret.is_empty() {
        req = req.header("x-webhook-signature", signature(secret, body.as_bytes()));
    }
    let res = req.body(body).send().await.map_err(|e| {
        if e.is_timeout() {
            "timed out".to_owned()
        } else {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg = format!("{msg}: {s}");
                src = s.source();
            }
            msg
        }
    })?;
    if res.status().is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", res.status().as_u16()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(signature("Jefe", b"what do ya want for nothing?"), "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
