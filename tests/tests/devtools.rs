//! Contract, dev-only endpoints: /api/sql only with ENABLE_SQL_ENDPOINT=true and the
//! service key; /api/demo mounted with ENABLE_DEMO_ENDPOINT=true or a SERVICE_ROLE_KEY,
//! requiring the service role; both off by default.

use pgstack_gateway::config::Secret;
use pgstack_gateway::keys;
use pgstack_shared::Role;
use pgstack_tests::{Gateway, TestCluster, JWT_SECRET};
use serde_json::{json, Value};

async fn post(gw: &Gateway, path: &str, key: Option<&str>, body: Value) -> (u16, Value) {
    let mut r = reqwest::Client::new().post(gw.url(path)).json(&body);
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let res = r.send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn dev_endpoints_are_off_by_default() {
    let tc = TestCluster::start().await.unwrap();
    let service = keys::mint(Role::ServiceRole, &Secret::new(JWT_SECRET)).unwrap();
    let gw = Gateway::serve(&tc, &[]).await.unwrap();
    assert_eq!(post(&gw, "/api/sql", Some(&service), json!({"query": "SELECT 1"})).await.0, 404);
    assert_eq!(post(&gw, "/api/demo", Some(&service), json!({})).await.0, 404);
}

#[tokio::test]
async fn sql_and_demo_when_enabled() {
    let tc = TestCluster::start().await.unwrap();
    let s = Secret::new(JWT_SECRET);
    let (service, anon) = (keys::mint(Role::ServiceRole, &s).unwrap(), keys::mint(Role::Anon, &s).unwrap());
    let gw = Gateway::serve(&tc, &[("ENABLE_SQL_ENDPOINT", "true"), ("SERVICE_ROLE_KEY", &service)]).await.unwrap();
    let (st, rows) = post(&gw, "/api/sql", Some(&service), json!({"query": "SELECT 1 AS one, NULL::text AS nothing, current_user AS who"})).await;
    assert_eq!((st, rows), (200, json!([{"one": "1", "nothing": null, "who": "service_role"}])));
    assert_eq!(post(&gw, "/api/sql", Some(&anon), json!({"query": "SELECT 1"})).await.0, 403);
    assert_eq!(post(&gw, "/api/sql", None, json!({"query": "SELECT 1"})).await.0, 401);
    let (st, e) = post(&gw, "/api/sql", Some(&service), json!({"query": "SELECT * FROM nope"})).await;
    assert_eq!((st, e["code"].as_str()), (404, Some("42P01")));
    assert_eq!(post(&gw, "/api/sql", Some(&service), json!({"nope": 1})).await.0, 400);

    // SERVICE_ROLE_KEY configured → /api/demo mounted, service role required.
    assert_eq!(post(&gw, "/api/demo", Some(&anon), json!({})).await.0, 403);
    let (st, v) = post(&gw, "/api/demo", Some(&service), json!({"action": "insert", "label": "a", "value": 5})).await;
    assert_eq!((st, v), (200, json!({"ok": true, "action": "insert", "rows": 1})));
    assert_eq!(post(&gw, "/api/demo", Some(&service), json!({"action": "update"})).await.1["rows"], 1);
    let (_, rows) = post(&gw, "/api/sql", Some(&service), json!({"query": "SELECT label, value FROM pgr.demo"})).await;
    assert_eq!(rows, json!([{"label": "a", "value": "6"}]));
    assert_eq!(post(&gw, "/api/demo", Some(&service), json!({"action": "explode"})).await.0, 400);
    assert_eq!(post(&gw, "/api/demo", Some(&service), json!({"action": "reset"})).await.1["rows"], 1);
}
