//! Issue 6: webhook deliveries lose nothing — signatures verify with the contract's
//! Node snippet; retries come at about 0 / 1 / 4 s; a receiver that is down longer
//! than the retries gets the dead events again on request; a gateway killed with
//! SIGKILL mid-delivery leaves the event to the next gateway (same event id); two
//! gateways deliver each event once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use pgstack_gateway::config::Secret;
use pgstack_gateway::keys;
use pgstack_shared::Role;
use pgstack_tests::{eventually, Gateway, TestCluster, JWT_SECRET};
use serde_json::{json, Value};

#[derive(Clone, Default)]
struct Hits(Arc<Mutex<Vec<(Instant, HeaderMap, String)>>>);

impl Hits {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn ids(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().map(|(_, h, _)| h["x-webhook-id"].to_str().unwrap().to_owned()).collect()
    }
}

/// A receiver on `port` (0 = any) that fails the first `fail` requests and waits
/// `delay` before answering.
async fn receiver(port: u16, fail: usize, delay: Duration) -> (Hits, u16) {
    let hits = Hits::default();
    let left = Arc::new(Mutex::new(fail));
    let h = hits.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let (h, left) = (h.clone(), left.clone());
            async move {
                h.0.lock().unwrap().push((Instant::now(), headers, body));
                tokio::time::sleep(delay).await;
                let mut l = left.lock().unwrap();
                if *l > 0 {
                    *l -= 1;
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (hits, port)
}

async fn cluster() -> (TestCluster, String) {
    let tc = TestCluster::start().await.unwrap();
    tc.superuser().await.unwrap().batch_execute("CREATE TABLE public.orders (id int PRIMARY KEY, note text)").await.unwrap();
    (tc, keys::mint(Role::ServiceRole, &Secret::new(JWT_SECRET)).unwrap())
}

async fn gateway(tc: &TestCluster, port: u16, timeout: &str) -> Gateway {
    let allowed = format!("127.0.0.1:{port}");
    Gateway::serve(tc, &[("WEBHOOK_ALLOWED_HOSTS", &allowed), ("WEBHOOK_TIMEOUT", timeout)]).await.unwrap()
}

async fn register(gw: &Gateway, service: &str, port: u16, secret: &str) {
    let r = reqwest::Client::new()
        .post(gw.url("/rest/v1/webhooks"))
        .bearer_auth(service)
        .json(&json!({"url": format!("http://127.0.0.1:{port}/hook"), "table_name": "orders", "secret": secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn the_contract_node_snippet_verifies_signatures_and_retries_keep_their_rhythm() {
    let (tc, service) = cluster().await;
    let (hits, port) = receiver(0, 2, Duration::ZERO).await;
    let gw = gateway(&tc, port, "2").await;
    register(&gw, &service, port, "whsec_node").await;
    let db = tc.superuser().await.unwrap();
    db.batch_execute("INSERT INTO orders VALUES (1, 'first')").await.unwrap();
    assert!(eventually(Duration::from_secs(15), || async { hits.len() >= 3 }).await);
    let times: Vec<Instant> = hits.0.lock().unwrap().iter().map(|(t, _, _)| *t).collect();
    let (g1, g2) = ((times[1] - times[0]).as_secs_f64(), (times[2] - times[1]).as_secs_f64());
    assert!((0.9..2.6).contains(&g1), "first retry after {g1:.2}s");
    assert!((3.9..5.6).contains(&g2), "second retry after {g2:.2}s");
    assert_eq!(hits.ids().iter().collect::<std::collections::HashSet<_>>().len(), 1, "one event, one id");

    db.batch_execute("INSERT INTO orders VALUES (2, 'second'), (3, 'third'); UPDATE orders SET note = 'x'").await.unwrap();
    assert!(eventually(Duration::from_secs(10), || async { hits.len() >= 8 }).await);
    let signed: Vec<Value> = hits.0.lock().unwrap().iter().map(|(_, h, b)| json!({"body": b, "signature": h["x-webhook-signature"].to_str().unwrap()})).collect();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js/verify_webhook.mjs");
    let mut node = tokio::process::Command::new("node").arg(&script).arg("whsec_node").stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    use tokio::io::AsyncWriteExt;
    node.stdin.take().unwrap().write_all(Value::Array(signed.clone()).to_string().as_bytes()).await.unwrap();
    let out = node.wait_with_output().await.unwrap();
    assert!(out.status.success(), "node: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("verified {}", signed.len()));
}

#[tokio::test]
async fn a_receiver_down_longer_than_the_retries_loses_nothing() {
    let (tc, service) = cluster().await;
    let port = pgstack_gateway::dev::cluster::free_port(None).unwrap();
    let gw = gateway(&tc, port, "2").await;
    register(&gw, &service, port, "").await;
    tc.superuser().await.unwrap().batch_execute("INSERT INTO orders SELECT g, 'while down' FROM generate_series(1, 3) g").await.unwrap();
    let events = |status: &'static str| {
        let (gw, service) = (&gw, &service);
        async move { reqwest::Client::new().get(gw.url(&format!("/rest/v1/webhooks/events?status={status}"))).bearer_auth(service).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    assert!(eventually(Duration::from_secs(15), || async { events("dead").await.as_array().unwrap().len() == 3 }).await);
    let dead = events("dead").await;
    assert!(dead[0]["last_error"].as_str().unwrap().contains("onnect"), "{dead}");
    // The receiver comes back (10 s after the first attempt); the operator retries.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (hits, _) = receiver(port, 0, Duration::ZERO).await;
    let r: Value = reqwest::Client::new().post(gw.url("/rest/v1/webhooks/events/retry")).bearer_auth(&service).send().await.unwrap().json().await.unwrap();
    assert_eq!(r, json!({"retried": 3}));
    assert!(eventually(Duration::from_secs(10), || async { hits.len() == 3 }).await, "got {}", hits.len());
    let mut ids: Vec<i64> = hits.0.lock().unwrap().iter().map(|(_, _, b)| serde_json::from_str::<Value>(b).unwrap()["record"]["id"].as_i64().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, vec![1, 2, 3]);
    assert_eq!(events("delivered").await.as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_gateway_killed_mid_delivery_hands_the_event_on() {
    let (tc, service) = cluster().await;
    let (hits, port) = receiver(0, 0, Duration::from_millis(1500)).await;
    let first = gateway(&tc, port, "2").await;
    register(&first, &service, port, "").await;
    tc.superuser().await.unwrap().batch_execute("INSERT INTO orders VALUES (1, 'in flight')").await.unwrap();
    assert!(eventually(Duration::from_secs(5), || async { hits.len() == 1 }).await);
    // SIGKILL while the receiver is still answering: no outcome was recorded.
    std::process::Command::new("kill").args(["-9", &first.pid().unwrap().to_string()]).status().unwrap();
    let _second = gateway(&tc, port, "2").await;
    assert!(eventually(Duration::from_secs(20), || async { hits.len() >= 2 }).await, "the event was never delivered again");
    let ids = hits.ids();
    assert_eq!(ids[0], ids[1], "a redelivery carries the same event id");
    let db = tc.superuser().await.unwrap();
    assert!(eventually(Duration::from_secs(5), || async { db.query_one("SELECT status FROM pgr.webhook_outbox", &[]).await.unwrap().get::<_, String>(0) == "delivered" }).await);
}

#[tokio::test]
async fn two_gateways_deliver_each_event_once() {
    let (tc, service) = cluster().await;
    let (hits, port) = receiver(0, 0, Duration::from_millis(20)).await;
    let a = gateway(&tc, port, "5").await;
    let _b = gateway(&tc, port, "5").await;
    register(&a, &service, port, "").await;
    let db = tc.superuser().await.unwrap();
    for i in 0..8 {
        db.batch_execute(&format!("INSERT INTO orders SELECT g, 'batch' FROM generate_series({}, {}) g", i * 10, i * 10 + 9)).await.unwrap();
    }
    assert!(eventually(Duration::from_secs(20), || async { hits.len() >= 80 }).await, "got {}", hits.len());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for id in hits.ids() {
        *seen.entry(id).or_default() += 1;
    }
    assert_eq!(seen.len(), 80);
    assert!(seen.values().all(|n| *n == 1), "duplicates: {:?}", seen.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>());
}
