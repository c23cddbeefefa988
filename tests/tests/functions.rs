//! Issue 6 (edge functions): the catalog in the extension, a real Deno runtime (npm
//! package `deno`, see tests/js), the in-database runtime, and the failure modes: a
//! throwing function, a timeout, Deno missing (503), Deno killed (502, then recovery).

use std::path::PathBuf;
use std::time::Duration;

use pgstack_gateway::config::Secret;
use pgstack_gateway::keys;
use pgstack_shared::{JwtClaims, Role};
use pgstack_tests::{Gateway, TestCluster, JWT_SECRET};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn deno() -> PathBuf {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js/node_modules");
    let p = base.join("@deno/linux-x64-glibc/deno");
    assert!(p.exists(), "deno not installed: run scripts/install-deps.sh (npm ci in tests/js)");
    p
}

const FIXTURE: &str = r#"
INSERT INTO pgr.functions (name, source, verify_jwt) VALUES
 ('hello', 'Deno.serve(() => new Response("hello world"));', true),
 ('echo', 'Deno.serve(async (req) => { const u = new URL(req.url); const text = await req.text();
     return Response.json({ method: req.method, path: u.pathname, query: u.search, body: text ? JSON.parse(text) : null,
                            auth: req.headers.get("authorization") !== null }); });', true),
 ('claims', 'Deno.serve((req) => { const t = (req.headers.get("authorization") ?? "").replace("Bearer ", "");
     const p = JSON.parse(atob(t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
     return Response.json({ sub: p.sub ?? null, role: p.role }); });', true),
 ('boom', 'Deno.serve(() => { throw new Error("boom: something broke"); });', true),
 ('slow', 'Deno.serve(async () => { await new Promise((r) => setTimeout(r, 5000)); return new Response("late"); });', true),
 ('spin', 'Deno.serve(() => { while (true) {} });', true),
 ('open', 'export default { fetch: () => new Response("no key needed", { status: 202 }) };', false),
 ('envy', 'Deno.serve(() => Response.json({ greeting: Deno.env.get("GREETING") ?? null, home: Deno.env.get("HOME") !== undefined }));', true),
 ('teapot', 'export default () => new Response("short and stout", { status: 418, headers: { "x-kind": "teapot" } });', true);
CREATE FUNCTION public.order_total(req jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('status', 201, 'headers', jsonb_build_object('x-from', 'postgres'),
                              'body', jsonb_build_object('got', req -> 'body', 'role', current_user::text, 'path', req ->> 'path'))
$$;
INSERT INTO pgr.functions (name, runtime, entrypoint, verify_jwt) VALUES ('order-total', 'plv8', 'public.order_total(jsonb)', true);
"#;

async fn setup(deno_path: &str) -> (TestCluster, Gateway, String, String) {
    let tc = TestCluster::start().await.unwrap();
    tc.superuser().await.unwrap().batch_execute(FIXTURE).await.unwrap();
    let s = Secret::new(JWT_SECRET);
    let gw = Gateway::serve(&tc, &[("DENO_PATH", deno_path), ("FUNCTION_TIMEOUT_MS", "2000")]).await.unwrap();
    (tc, gw, keys::mint(Role::Anon, &s).unwrap(), keys::mint(Role::ServiceRole, &s).unwrap())
}

async fn call(gw: &Gateway, method: &str, path: &str, key: Option<&str>, body: Option<Value>) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut r = reqwest::Client::new().request(method.parse().unwrap(), gw.url(path));
    if let Some(k) = key {
        r = r.bearer_auth(k).header("apikey", k);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let res = r.send().await.unwrap();
    (res.status(), res.headers().clone(), res.text().await.unwrap())
}

#[tokio::test]
async fn deno_functions_answer_and_fail_cleanly() {
    let (_tc, gw, anon, service) = setup(deno().to_str().unwrap()).await;
    let (st, _, body) = call(&gw, "POST", "/functions/v1/hello", Some(&anon), None).await;
    assert_eq!((st, body.as_str()), (StatusCode::OK, "hello world"));
    let (st, _, body) = call(&gw, "POST", "/functions/v1/echo/sub/path?x=1", Some(&anon), Some(json!({"a": [1, 2]}))).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!({"method": "POST", "path": "/echo/sub/path", "query": "?x=1", "body": {"a": [1, 2]}, "auth": true}));
    let (_, _, body) = call(&gw, "GET", "/functions/v1/echo", Some(&anon), None).await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["method"], "GET");

    let mut c = JwtClaims::api_key(Role::Authenticated, keys::now(), 600);
    c.sub = Some("2b1c7a52-0f1e-4a8e-9d55-1f0e6a4b9c10".into());
    let user = keys::sign(&c, &Secret::new(JWT_SECRET)).unwrap();
    let (_, _, body) = call(&gw, "POST", "/functions/v1/claims", Some(&user), None).await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!({"sub": "2b1c7a52-0f1e-4a8e-9d55-1f0e6a4b9c10", "role": "authenticated"}));

    // verify_jwt: a key is required (401), except for functions that opt out.
    assert_eq!(call(&gw, "POST", "/functions/v1/hello", None, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&gw, "POST", "/functions/v1/hello", Some("bad.jwt.value"), None).await.0, StatusCode::UNAUTHORIZED);
    let (st, _, body) = call(&gw, "GET", "/functions/v1/open", None, None).await;
    assert_eq!((st, body.as_str()), (StatusCode::ACCEPTED, "no key needed"));
    // Per-function env vars from the catalog, beside the worker's own environment.
    _tc.superuser().await.unwrap().batch_execute("UPDATE pgr.functions SET env = '{\"GREETING\": \"hi from the catalog\"}' WHERE name = 'envy'").await.unwrap();
    call(&gw, "POST", "/functions/v1/_refresh", Some(&service), None).await;
    let (_, _, body) = call(&gw, "POST", "/functions/v1/envy", Some(&anon), None).await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!({"greeting": "hi from the catalog", "home": true}));
    let (_, _, body) = call(&gw, "POST", "/functions/v1/hello", Some(&anon), None).await;
    assert_eq!(body, "hello world");
    let (st, h, body) = call(&gw, "POST", "/functions/v1/teapot", Some(&anon), None).await;
    assert_eq!((st.as_u16(), h["x-kind"].to_str().unwrap(), body.as_str()), (418, "teapot", "short and stout"));
    assert_eq!(call(&gw, "POST", "/functions/v1/nope", Some(&anon), None).await.0, StatusCode::NOT_FOUND);

    // A throwing function: 500 with its message.
    let (st, _, body) = call(&gw, "POST", "/functions/v1/boom", Some(&anon), None).await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"], "boom: something broke");

    // Timeouts (async or a busy loop): 504, and the next call is served again.
    for f in ["slow", "spin"] {
        let (st, h, _) = call(&gw, "POST", &format!("/functions/v1/{f}"), Some(&anon), None).await;
        assert_eq!((st, h["x-relay-error"].to_str().unwrap()), (StatusCode::GATEWAY_TIMEOUT, "true"), "{f}");
        assert_eq!(call(&gw, "POST", "/functions/v1/hello", Some(&anon), None).await.0, StatusCode::OK, "after {f}");
    }

    // Catalog: list and refresh with the service key only.
    let (st, _, body) = call(&gw, "GET", "/functions/v1/", Some(&service), None).await;
    assert_eq!(st, StatusCode::OK);
    let list: Value = serde_json::from_str(&body).unwrap();
    assert!(list.as_array().unwrap().contains(&json!({"name": "hello", "runtime": "deno", "status": "active", "verify_jwt": true})), "{list}");
    assert!(list.as_array().unwrap().contains(&json!({"name": "order-total", "runtime": "plv8", "status": "active", "verify_jwt": true})));
    assert_eq!(call(&gw, "GET", "/functions/v1/", Some(&anon), None).await.0, StatusCode::FORBIDDEN);
    let (st, _, body) = call(&gw, "POST", "/functions/v1/_refresh", Some(&service), None).await;
    assert_eq!((st, body.as_str()), (StatusCode::OK, r#"{"ok":true}"#));

    // A changed source is picked up after _refresh.
    _tc.superuser().await.unwrap().batch_execute("UPDATE pgr.functions SET source = 'Deno.serve(() => new Response(\"hello v2\"));' WHERE name = 'hello'").await.unwrap();
    call(&gw, "POST", "/functions/v1/_refresh", Some(&service), None).await;
    assert_eq!(call(&gw, "POST", "/functions/v1/hello", Some(&anon), None).await.2, "hello v2");
}

/// A gateway killed with SIGKILL leaves no Deno worker behind.
#[tokio::test]
async fn the_worker_does_not_outlive_a_killed_gateway() {
    let (_tc, mut gw, anon, _) = setup(deno().to_str().unwrap()).await;
    assert_eq!(call(&gw, "POST", "/functions/v1/hello", Some(&anon), None).await.0, StatusCode::OK);
    let parent = gw.pid().unwrap().to_string();
    let out = std::process::Command::new("pgrep").args(["-P", &parent, "-f", "_runner.ts"]).output().unwrap();
    let worker = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(!worker.is_empty(), "the gateway started a worker");
    std::process::Command::new("kill").args(["-9", &parent]).status().unwrap();
    let _ = gw.terminate().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{worker}")).exists() {
        let zombie = std::fs::read_to_string(format!("/proc/{worker}/stat")).map(|s| s.contains(") Z ")).unwrap_or(true);
        if zombie {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "Deno worker {worker} still runs after its gateway was killed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_killed_deno_answers_502_then_recovers() {
    let (_tc, gw, anon, _) = setup(deno().to_str().unwrap()).await;
    assert_eq!(call(&gw, "POST", "/functions/v1/hello", Some(&anon), None).await.0, StatusCode::OK);
    let in_flight = {
        let (gw_url, anon) = (gw.url("/functions/v1/slow"), anon.clone());
        tokio::spawn(async move { reqwest::Client::new().post(gw_url).bearer_auth(anon).send().await.unwrap().status() })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Only this gateway's worker: the Deno child of its process.
    let parent = gw.pid().unwrap().to_string();
    let killed = std::process::Command::new("pkill").args(["-9", "-P", &parent, "-f", "_runner.ts"]).status().unwrap();
    assert!(killed.success());
    assert_eq!(in_flight.await.unwrap(), StatusCode::BAD_GATEWAY);
    assert_eq!(call(&gw, "POST", "/functions/v1/hello", Some(&anon), None).await.0, StatusCode::OK, "restarted");
}

#[tokio::test]
async fn deno_missing_is_503_and_in_database_functions_still_run() {
    let (_tc, gw, anon, _) = setup("/nonexistent/deno").await;
    let (st, h, body) = call(&gw, "POST", "/functions/v1/hello", Some(&anon), None).await;
    assert_eq!((st, h["x-relay-error"].to_str().unwrap()), (StatusCode::SERVICE_UNAVAILABLE, "true"));
    assert!(body.contains("DENO_PATH"), "{body}");
    let (st, h, body) = call(&gw, "POST", "/functions/v1/order-total", Some(&anon), Some(json!({"items": 3}))).await;
    assert_eq!((st, h["x-from"].to_str().unwrap()), (StatusCode::CREATED, "postgres"));
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!({"got": {"items": 3}, "role": "anon", "path": "/order-total"}));
}
