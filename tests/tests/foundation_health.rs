//! Issue 2: GET /health follows the database: 200 ok, 503 degraded while the cluster
//! is down, 200 again when it returns, with no gateway restart.

use std::time::Duration;

use pgstack_tests::{eventually, Gateway, TestCluster};
use serde_json::{json, Value};

async fn health(client: &reqwest::Client, gw: &Gateway) -> (u16, Value) {
    let r = client.get(gw.url("/health")).send().await.expect("gateway answers");
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("JSON body");
    // The seed 002 fields ride beside the contract's.
    assert_eq!((&body["server"], body["version"].is_string()), (&json!("pgstack"), true), "{body}");
    (status, json!({ "status": body["status"], "pg_connected": body["pg_connected"] }))
}

#[tokio::test]
async fn health_turns_degraded_while_postgres_is_down_and_recovers() {
    let tc = TestCluster::start().await.unwrap();
    let mut gw = Gateway::serve(&tc, &[]).await.unwrap();
    let http = reqwest::Client::new();

    assert_eq!(health(&http, &gw).await, (200, json!({"status": "ok", "pg_connected": true})));

    tc.cluster.stop().unwrap();
    assert_eq!(health(&http, &gw).await, (503, json!({"status": "degraded", "pg_connected": false})));
    // Stays degraded (and answers quickly) while the server is away.
    let t = std::time::Instant::now();
    assert_eq!(health(&http, &gw).await.0, 503);
    assert!(t.elapsed() < Duration::from_secs(5), "degraded answer took {:?}", t.elapsed());

    tc.cluster.start().unwrap();
    let back = eventually(Duration::from_secs(20), || async { health(&http, &gw).await.0 == 200 }).await;
    assert!(back, "health did not recover after the cluster restarted");
    assert_eq!(health(&http, &gw).await.1, json!({"status": "ok", "pg_connected": true}));

    let status = gw.terminate().await.unwrap();
    assert!(status.success(), "gateway exit status {status:?}");
}

#[tokio::test]
async fn gateway_starts_degraded_when_postgres_is_not_up_yet() {
    let tc = TestCluster::start().await.unwrap();
    tc.cluster.stop().unwrap();
    let gw = Gateway::serve(&tc, &[]).await.unwrap();
    let http = reqwest::Client::new();
    assert_eq!(health(&http, &gw).await.0, 503);
    tc.cluster.start().unwrap();
    assert!(eventually(Duration::from_secs(20), || async { health(&http, &gw).await.0 == 200 }).await);
}

#[tokio::test]
async fn unknown_routes_answer_json_404_with_a_request_id() {
    let tc = TestCluster::start().await.unwrap();
    let gw = Gateway::serve(&tc, &[]).await.unwrap();
    let r = reqwest::get(gw.url("/nope?token=secret-in-query")).await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let id = r.headers().get("x-request-id").expect("x-request-id").to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "no route for /nope");
    assert_eq!(body["message"], body["error"]);

    // One structured line per request with id, method, path and status; the query
    // string (which may carry tokens) is never logged.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = gw.stderr();
    let line = logs.lines().find(|l| l.contains(&id) && l.contains("status=404")).unwrap_or_else(|| panic!("no access log line in:\n{logs}"));
    assert!(line.contains("method=GET") && line.contains("path=/nope"), "{line}");
    assert!(line.contains("latency_ms="), "{line}");
    assert!(!logs.contains("secret-in-query"));

    // A client's own request id is kept: answered and logged with it.
    let r = reqwest::Client::new().get(gw.url("/nope")).header("x-request-id", "client-chosen-id-7").send().await.unwrap();
    assert_eq!(r.headers().get("x-request-id").unwrap(), "client-chosen-id-7");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(gw.stderr().lines().any(|l| l.contains("client-chosen-id-7") && l.contains("status=404")));
    // One that could pass for more fields of the log line, or is long, is replaced.
    for bad in ["abc method=GET path=/rest/v1/secret status=200".to_owned(), "x".repeat(200)] {
        let r = reqwest::Client::new().get(gw.url("/nope")).header("x-request-id", &bad).send().await.unwrap();
        let id = r.headers().get("x-request-id").unwrap().to_str().unwrap().to_owned();
        assert!(id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'), "{id}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!gw.stderr().contains("path=/rest/v1/secret"));
}
