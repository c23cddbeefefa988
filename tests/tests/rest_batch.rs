//! Contract: POST /rest/v1/batch — atomic (200, or 422 with error and
//! failed_operation, all rolled back), partial (207, savepoint per operation),
//! `{{id.field}}` references, bounded size, and the caller's role throughout.

use pgstack_gateway::config::Secret;
use pgstack_gateway::keys;
use pgstack_shared::Role;
use pgstack_tests::{Gateway, TestCluster, JWT_SECRET};
use reqwest::StatusCode;
use serde_json::{json, Value};

const FIXTURE: &str = r#"
CREATE TABLE public.orders (id serial PRIMARY KEY, total numeric(10,2) NOT NULL CHECK (total >= 0), note text);
CREATE TABLE public.order_items (id serial PRIMARY KEY, order_id int NOT NULL REFERENCES public.orders, product_id int NOT NULL);
GRANT ALL ON ALL TABLES IN SCHEMA public TO service_role;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO service_role;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO anon;
CREATE FUNCTION public.order_count() RETURNS bigint LANGUAGE sql STABLE AS 'SELECT count(*) FROM public.orders';
GRANT EXECUTE ON FUNCTION public.order_count() TO service_role;
"#;

async fn setup() -> (TestCluster, Gateway, String, String) {
    let tc = TestCluster::start().await.unwrap();
    tc.superuser().await.unwrap().batch_execute(FIXTURE).await.unwrap();
    let s = Secret::new(JWT_SECRET);
    let gw = Gateway::serve(&tc, &[]).await.unwrap();
    (tc, gw, keys::mint(Role::ServiceRole, &s).unwrap(), keys::mint(Role::Anon, &s).unwrap())
}

async fn batch(gw: &Gateway, key: &str, body: Value) -> (StatusCode, Value) {
    let r = reqwest::Client::new().post(gw.url("/rest/v1/batch")).header("apikey", key).json(&body).send().await.unwrap();
    (r.status(), r.json().await.unwrap())
}

async fn count(tc: &TestCluster, table: &str) -> i64 {
    tc.superuser().await.unwrap().query_one(&format!("SELECT count(*) FROM public.{table}"), &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn atomic_batches_commit_together_with_references() {
    let (tc, gw, service, _) = setup().await;
    let (st, body) = batch(
        &gw,
        &service,
        json!({
            "atomic": true,
            "operations": [
                {"id": "create", "method": "POST", "path": "/rest/v1/orders", "body": {"total": 99.99}},
                {"id": "item", "method": "POST", "path": "/rest/v1/order_items", "body": {"order_id": "{{create.id}}", "product_id": 7}},
                {"id": "note", "method": "PATCH", "path": "/rest/v1/orders?id=eq.{{create.id}}", "body": {"note": "order {{create.id}}"}},
                {"id": "read", "method": "GET", "path": "/rest/v1/orders?select=id,note"},
                {"id": "n", "method": "POST", "path": "/rest/v1/rpc/order_count", "body": {}}
            ]
        }),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let r = body["results"].as_array().unwrap();
    assert_eq!(r[0], json!({"id": "create", "status": 201, "data": {"id": 1, "total": 99.99, "note": null}}));
    assert_eq!(r[1], json!({"id": "item", "status": 201, "data": {"id": 1, "order_id": 1, "product_id": 7}}));
    assert_eq!(r[2]["data"], json!([{"id": 1, "total": 99.99, "note": "order 1"}]));
    assert_eq!(r[3]["data"], json!([{"id": 1, "note": "order 1"}]));
    assert_eq!(r[4]["data"], json!(1));
    assert_eq!((count(&tc, "orders").await, count(&tc, "order_items").await), (1, 1));
}

#[tokio::test]
async fn a_failing_atomic_batch_rolls_everything_back() {
    let (tc, gw, service, _) = setup().await;
    let (st, body) = batch(
        &gw,
        &service,
        json!({
            "operations": [
                {"id": "ok", "method": "POST", "path": "/rest/v1/orders", "body": {"total": 5}},
                {"id": "bad", "method": "POST", "path": "/rest/v1/orders", "body": {"total": -1}},
                {"id": "never", "method": "POST", "path": "/rest/v1/orders", "body": {"total": 6}}
            ]
        }),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["failed_operation"], "bad");
    assert_eq!(body["code"], "23514");
    assert!(body["error"].as_str().unwrap().contains("check constraint"), "{body}");
    assert_eq!(count(&tc, "orders").await, 0);

    let (st, body) = batch(
        &gw,
        &service,
        json!({"operations": [
            {"id": "a", "method": "POST", "path": "/rest/v1/orders", "body": {"total": 1}},
            {"id": "b", "method": "POST", "path": "/rest/v1/order_items", "body": {"order_id": "{{zzz.id}}", "product_id": 1}}
        ]}),
    )
    .await;
    assert_eq!((st, body["failed_operation"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("b")));
    assert_eq!(count(&tc, "orders").await, 0);
}

#[tokio::test]
async fn partial_batches_keep_what_succeeded() {
    let (tc, gw, service, _) = setup().await;
    let (st, body) = batch(
        &gw,
        &service,
        json!({
            "atomic": false,
            "operations": [
                {"id": "one", "method": "POST", "path": "/rest/v1/orders", "body": {"total": 1}},
                {"id": "two", "method": "POST", "path": "/rest/v1/order_items", "body": {"order_id": 999, "product_id": 1}},
                {"id": "three", "method": "POST", "path": "/rest/v1/orders", "body": {"total": 3}},
                {"id": "four", "method": "DELETE", "path": "/rest/v1/orders"}
            ]
        }),
    )
    .await;
    assert_eq!(st, StatusCode::MULTI_STATUS, "{body}");
    let statuses: Vec<u64> = body["results"].as_array().unwrap().iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, vec![201, 409, 201, 400]);
    assert_eq!(body["results"][1]["code"], "23503");
    assert_eq!(count(&tc, "orders").await, 2);
    let (st, _) = batch(&gw, &service, json!({"atomic": false, "operations": [{"method": "GET", "path": "/rest/v1/orders"}]})).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn batches_run_as_the_caller_and_are_bounded() {
    let (tc, gw, service, anon) = setup().await;
    let (st, body) = batch(&gw, &anon, json!({"operations": [{"id": "x", "method": "POST", "path": "/rest/v1/orders", "body": {"total": 1}}]})).await;
    assert_eq!((st, body["failed_operation"].as_str(), body["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("x"), Some("42501")));
    assert_eq!(count(&tc, "orders").await, 0);
    let ops: Vec<Value> = (0..101).map(|_| json!({"method": "GET", "path": "/rest/v1/orders"})).collect();
    assert_eq!(batch(&gw, &service, json!({"operations": ops})).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(batch(&gw, &service, json!({"operations": []})).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(batch(&gw, &service, json!({"nope": 1})).await.0, StatusCode::BAD_REQUEST);
    let dup = json!({"operations": [{"id": "a", "method": "GET", "path": "/orders"}, {"id": "a", "method": "GET", "path": "/orders"}]});
    assert_eq!(batch(&gw, &service, dup).await.0, StatusCode::BAD_REQUEST);
    let no_key = reqwest::Client::new().post(gw.url("/rest/v1/batch")).json(&json!({"operations": []})).send().await.unwrap();
    assert_eq!(no_key.status(), StatusCode::UNAUTHORIZED);
}
