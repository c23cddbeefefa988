//! Issue 6 (webhooks): registration (service key only, SSRF-checked), the durable
//! outbox written in the writing transaction, delivery with signature and headers,
//! retries (immediately, +1 s, +4 s), dead events kept with their error, resume after
//! a gateway restart. The receiver is a real HTTP server on loopback.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use pgstack_gateway::config::Secret;
use pgstack_gateway::keys;
use pgstack_shared::Role;
use pgstack_tests::{eventually, Gateway, TestCluster, JWT_SECRET};
use serde_json::{json, Value};
use sha2::Sha256;

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    fail_first: Arc<Mutex<usize>>,
}

impl Receiver {
    /// Serves on 127.0.0.1; answers 500 to the first `fail_first` requests.
    async fn start(fail_first: usize) -> (Receiver, u16) {
        let r = Receiver { fail_first: Arc::new(Mutex::new(fail_first)), ..Default::default() };
        let state = r.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let state = state.clone();
                async move {
                    state.got.lock().unwrap().push((headers, body));
                    let mut left = state.fail_first.lock().unwrap();
                    if *left > 0 {
                        *left -= 1;
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (r, port)
    }
    fn bodies(&self) -> Vec<Value> {
        self.got.lock().unwrap().iter().map(|(_, b)| serde_json::from_str(b).unwrap()).collect()
    }
}

struct Env {
    tc: TestCluster,
    gw: Gateway,
    service: String,
    anon: String,
    port: u16,
}

async fn start(port: u16) -> Env {
    start_with(port, "").await
}

/// `start`, with `sql` run by the superuser before the gateway connects.
async fn start_with(port: u16, sql: &str) -> Env {
    let tc = TestCluster::start().await.unwrap();
    let su = tc.superuser().await.unwrap();
    su.batch_execute(
        "CREATE TABLE public.orders (id int PRIMARY KEY, status text, amount numeric(10,2));
         CREATE TABLE public.other (id int PRIMARY KEY);",
    )
    .await
    .unwrap();
    su.batch_execute(sql).await.unwrap();
    let s = Secret::new(JWT_SECRET);
    let (service, anon) = (keys::mint(Role::ServiceRole, &s).unwrap(), keys::mint(Role::Anon, &s).unwrap());
    let allowed = format!("127.0.0.1:{port}");
    let gw = Gateway::serve(&tc, &[("WEBHOOK_ALLOWED_HOSTS", &allowed), ("WEBHOOK_TIMEOUT", "2")]).await.unwrap();
    Env { tc, gw, service, anon, port }
}

impl Env {
    async fn call(&self, method: &str, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = reqwest::Client::new().request(method.parse().unwrap(), self.gw.url(path)).header("apikey", key);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let res = r.send().await.unwrap();
        let st = res.status().as_u16();
        (st, res.json().await.unwrap_or(Value::Null))
    }
    async fn register(&self, body: Value) -> Value {
        let (st, v) = self.call("POST", "/rest/v1/webhooks", &self.service, Some(body)).await;
        assert_eq!(st, 201, "{v}");
        v
    }
    fn hook(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }
}

#[tokio::test]
async fn deliveries_are_signed_and_shaped_as_the_contract() {
    let (rx, port) = Receiver::start(0).await;
    let e = start(port).await;
    let w = e.register(json!({"url": e.hook(), "events": ["INSERT", "UPDATE", "DELETE"], "table_name": "orders", "secret": "whsec_test"})).await;
    assert_eq!((w["table_name"].as_str(), w["active"].as_bool()), (Some("orders"), Some(true)));
    assert!(w.get("secret").is_none(), "the secret is never returned");
    let db = e.tc.superuser().await.unwrap();
    db.batch_execute("INSERT INTO orders VALUES (42, 'pending', 149.99)").await.unwrap();
    db.batch_execute("UPDATE orders SET status = 'paid' WHERE id = 42").await.unwrap();
    db.batch_execute("DELETE FROM orders WHERE id = 42").await.unwrap();
    db.batch_execute("BEGIN; INSERT INTO orders VALUES (43, 'x', 1); ROLLBACK").await.unwrap();
    assert!(eventually(Duration::from_secs(10), || async { rx.bodies().len() >= 3 }).await, "deliveries: {:?}", rx.bodies());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut bodies = rx.bodies();
    bodies.sort_by_key(|b| ["INSERT", "UPDATE", "DELETE"].iter().position(|x| b["event"] == *x));
    assert_eq!(
        bodies,
        vec![
            json!({"event": "INSERT", "table": "orders", "record": {"id": 42, "status": "pending", "amount": 149.99}}),
            json!({"event": "UPDATE", "table": "orders", "record": {"id": 42, "status": "paid", "amount": 149.99}, "old_record": {"id": 42, "status": "pending", "amount": 149.99}}),
            json!({"event": "DELETE", "table": "orders", "old_record": {"id": 42, "status": "paid", "amount": 149.99}}),
        ],
        "a rolled-back insert must not be delivered"
    );
    for (headers, body) in rx.got.lock().unwrap().iter() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_test").unwrap();
        mac.update(body.as_bytes());
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(headers["x-webhook-signature"], expected.as_str());
        assert_eq!(headers["user-agent"], "pgstack-webhooks/1.0");
        assert_eq!(headers["content-type"], "application/json");
        assert!(headers.contains_key("x-webhook-id") && headers.contains_key("x-webhook-timestamp"));
    }
}

#[tokio::test]
async fn failures_are_retried_then_kept_as_dead() {
    let (rx, port) = Receiver::start(2).await;
    let e = start(port).await;
    e.register(json!({"url": e.hook(), "table_name": "orders"})).await;
    let db = e.tc.superuser().await.unwrap();
    db.batch_execute("INSERT INTO orders VALUES (1, 'a', 1)").await.unwrap();
    // 500, then +1 s 500, then +4 s 200.
    assert!(eventually(Duration::from_secs(15), || async { rx.got.lock().unwrap().len() >= 3 }).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.got.lock().unwrap().len(), 3);
    assert!(rx.got.lock().unwrap().iter().all(|(h, _)| h.get("x-webhook-signature").is_none()), "no secret, no signature");
    let row = db.query_one("SELECT status, attempts FROM pgr.webhook_outbox", &[]).await.unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, i32>(1)), ("delivered".into(), 3));

    // A receiver that always fails: dead after 3 attempts, listed with its error.
    *rx.fail_first.lock().unwrap() = 100;
    db.batch_execute("INSERT INTO orders VALUES (2, 'b', 2)").await.unwrap();
    let dead =
        eventually(Duration::from_secs(15), || async { e.call("GET", "/rest/v1/webhooks/events?status=dead", &e.service, None).await.1.as_array().is_some_and(|a| !a.is_empty()) })
            .await;
    assert!(dead);
    let (_, list) = e.call("GET", "/rest/v1/webhooks/events?status=dead", &e.service, None).await;
    assert_eq!((list[0]["attempts"].as_i64(), list[0]["last_error"].as_str()), (Some(3), Some("HTTP 500")));
    assert_eq!(list[0]["body"]["record"]["id"], 2);
}

#[tokio::test]
async fn the_attempt_budget_and_the_payload_limit_are_the_databases_settings() {
    let (rx, port) = Receiver::start(1000).await;
    let settings = "DO $$ BEGIN
                      EXECUTE format('ALTER DATABASE %I SET pgstack.webhook_max_attempts = 2', current_database());
                      EXECUTE format('ALTER DATABASE %I SET pgstack.webhook_max_payload_bytes = 2048', current_database());
                    END $$;";
    let e = start_with(port, settings).await;
    e.register(json!({"url": e.hook(), "table_name": "orders"})).await;
    let db = e.tc.superuser().await.unwrap();
    db.batch_execute("INSERT INTO orders VALUES (7, repeat('x', 5000), 1); INSERT INTO orders VALUES (8, 'small', 2)").await.unwrap();
    // Two attempts each (the database's budget, not the gateway's 3), then dead.
    let dead = || async { e.call("GET", "/rest/v1/webhooks/events?status=dead", &e.service, None).await.1.as_array().map_or(0, Vec::len) };
    assert!(eventually(Duration::from_secs(15), || async { dead().await == 2 }).await, "{:?}", rx.bodies());
    let (_, list) = e.call("GET", "/rest/v1/webhooks/events?status=dead", &e.service, None).await;
    let mut list = list.as_array().unwrap().clone();
    list.sort_by_key(|ev| ev["body"]["record"]["id"].as_i64());
    assert!(list.iter().all(|ev| ev["attempts"] == 2), "{list:?}");
    assert_eq!(rx.got.lock().unwrap().len(), 4);
    // The 5000-byte row's event carries its primary key only; the small one is whole.
    assert_eq!(list[0]["body"], json!({"event": "INSERT", "table": "orders", "truncated": true, "record": {"id": 7}}));
    assert_eq!(list[1]["body"], json!({"event": "INSERT", "table": "orders", "record": {"id": 8, "status": "small", "amount": 2.00}}));
    // A role cannot raise the limits for itself.
    db.batch_execute("SELECT pgr.webhook_max_attempts()").await.unwrap();
    let err = db.batch_execute("SET ROLE authenticated; SET pgstack.webhook_max_attempts = 50").await.unwrap_err();
    let msg = err.as_db_error().map(|d| d.message().to_owned()).unwrap_or_default();
    assert!(msg.contains("permission denied"), "{msg}");
    db.batch_execute("RESET ROLE").await.unwrap();
}

#[tokio::test]
async fn events_committed_while_the_gateway_is_down_are_delivered_on_start() {
    let (rx, port) = Receiver::start(0).await;
    let mut e = start(port).await;
    e.register(json!({"url": e.hook(), "table_name": "orders", "events": ["INSERT"]})).await;
    e.gw.terminate().await.unwrap();
    let db = e.tc.superuser().await.unwrap();
    db.batch_execute("INSERT INTO orders VALUES (7, 'while down', 1); UPDATE orders SET status = 'ignored'").await.unwrap();
    let allowed = format!("127.0.0.1:{}", e.port);
    e.gw = Gateway::serve(&e.tc, &[("WEBHOOK_ALLOWED_HOSTS", &allowed)]).await.unwrap();
    assert!(eventually(Duration::from_secs(10), || async { !rx.bodies().is_empty() }).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.bodies(), vec![json!({"event": "INSERT", "table": "orders", "record": {"id": 7, "status": "while down", "amount": 1.00}})]);
}

#[tokio::test]
async fn registration_rules() {
    let (_rx, port) = Receiver::start(0).await;
    let e = start(port).await;
    assert_eq!(e.call("POST", "/rest/v1/webhooks", &e.anon, Some(json!({"url": e.hook()}))).await.0, 403);
    assert_eq!(reqwest::Client::new().get(e.gw.url("/rest/v1/webhooks")).send().await.unwrap().status(), 401);
    for bad in ["ftp://example.com/x", "http://169.254.169.254/latest", "http://127.0.0.1:1/other", "http://10.0.0.1/", "nonsense"] {
        let (st, v) = e.call("POST", "/rest/v1/webhooks", &e.service, Some(json!({"url": bad}))).await;
        assert_eq!(st, 400, "{bad}: {v}");
    }
    assert_eq!(e.call("POST", "/rest/v1/webhooks", &e.service, Some(json!({"url": e.hook(), "events": ["TRUNCATE"]}))).await.0, 400);
    assert_eq!(e.call("POST", "/rest/v1/webhooks", &e.service, Some(json!({"url": e.hook(), "table_name": "nope"}))).await.0, 400);
    // Defaults: every event, every table (`*` is a matcher only).
    let star = e.register(json!({"url": e.hook()})).await;
    assert_eq!((star["events"].clone(), star["table_name"].as_str()), (json!(["*"]), Some("*")));
    let a = e.register(json!({"url": e.hook(), "table_name": "orders"})).await;
    let b = e.register(json!({"url": e.hook(), "table_name": "orders"})).await;
    let (st, list) = e.call("GET", "/rest/v1/webhooks", &e.service, None).await;
    assert_eq!((st, list.as_array().unwrap().len()), (200, 3));
    let db = e.tc.superuser().await.unwrap();
    let triggers = || async { db.query_one("SELECT count(*) FROM pg_trigger WHERE tgname = 'pgr_webhook'", &[]).await.unwrap().get::<_, i64>(0) };
    assert_eq!(triggers().await, 1, "one trigger on orders, none for *");
    let (st, v) = e.call("DELETE", &format!("/rest/v1/webhooks/{}", a["id"].as_str().unwrap()), &e.service, None).await;
    assert_eq!((st, v), (200, json!({"message": "webhook deleted"})));
    assert_eq!(triggers().await, 1);
    e.call("DELETE", &format!("/rest/v1/webhooks/{}", b["id"].as_str().unwrap()), &e.service, None).await;
    assert_eq!(triggers().await, 0, "the last webhook of a table removes its trigger");
    assert_eq!(e.call("DELETE", &format!("/rest/v1/webhooks/{}", b["id"].as_str().unwrap()), &e.service, None).await.0, 404);
    assert_eq!(e.call("DELETE", "/rest/v1/webhooks/not-a-uuid", &e.service, None).await.0, 400);
}

#[tokio::test]
async fn a_table_named_webhooks_is_the_clients_and_the_api_the_service_roles() {
    let e = start(9).await;
    e.tc.superuser()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE public.webhooks (id int PRIMARY KEY, name text);
             INSERT INTO public.webhooks VALUES (1, 'the app''s own row');
             GRANT SELECT, INSERT ON public.webhooks TO anon;",
        )
        .await
        .unwrap();
    // The schema cache reloads on DDL.
    let seen = pgstack_tests::eventually(std::time::Duration::from_secs(5), || async { e.call("GET", "/rest/v1/webhooks?select=name", &e.anon, None).await.0 == 200 }).await;
    assert!(seen, "{:?}", e.call("GET", "/rest/v1/webhooks?select=name", &e.anon, None).await);
    let (st, rows) = e.call("GET", "/rest/v1/webhooks?select=name", &e.anon, None).await;
    assert_eq!((st, rows), (200, json!([{"name": "the app's own row"}])));
    let (st, v) = e.call("POST", "/rest/v1/webhooks", &e.anon, Some(json!({"id": 2, "name": "inserted"}))).await;
    assert_eq!(st, 201, "{v}");
    // The service role still reaches the contract's webhook API at the same path.
    let (st, list) = e.call("GET", "/rest/v1/webhooks", &e.service, None).await;
    assert_eq!((st, list), (200, json!([])));
}
