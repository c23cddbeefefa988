//! Issue 14 ("Safe to expose"), miscellaneous items: live queries and RLS, broadcast
//! on live-query channels, presence limits, the Deno worker's environment and
//! internal headers, webhook SSRF (IPv6 forms, proxies), and one `pgstack dev` per
//! state folder.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use pgstack_gateway::config::Secret;
use pgstack_gateway::keys;
use pgstack_shared::{JwtClaims, Role};
use pgstack_tests::{connect, eventually, pgstack_bin, Gateway, TestCluster, JWT_SECRET};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

fn anon_and_service() -> (String, String) {
    let s = Secret::new(JWT_SECRET);
    (keys::mint(Role::Anon, &s).unwrap(), keys::mint(Role::ServiceRole, &s).unwrap())
}

fn user_token(sub: &str) -> String {
    let mut c = JwtClaims::api_key(Role::Authenticated, keys::now(), 600);
    c.sub = Some(sub.into());
    keys::sign(&c, &Secret::new(JWT_SECRET)).unwrap()
}

fn ws_url(gw: &Gateway, path: &str) -> String {
    format!("{}{path}", gw.base.replacen("http://", "ws://", 1))
}

async fn open(gw: &Gateway, path: &str) -> Ws {
    connect_async(ws_url(gw, path)).await.unwrap_or_else(|e| panic!("connect {path}: {e}")).0
}

/// Status and body of a refused upgrade.
async fn refused(gw: &Gateway, path: &str) -> (u16, Value) {
    match connect_async(ws_url(gw, path)).await {
        Ok(_) => panic!("{path} was accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            let body = res.body().as_ref().map(|b| serde_json::from_slice(b).unwrap()).unwrap_or(Value::Null);
            (res.status().as_u16(), body)
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

async fn recv(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("a frame").unwrap().unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

async fn quiet(ws: &mut Ws) {
    if let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(Duration::from_millis(400), ws.next()).await {
        panic!("unexpected frame {t}");
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

const NOTES: &str = r#"
CREATE TABLE public.notes (id int PRIMARY KEY, owner uuid NOT NULL, body text NOT NULL);
ALTER TABLE public.notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_notes ON public.notes USING (owner = auth.uid());
GRANT SELECT ON public.notes TO anon, authenticated;
CREATE VIEW public.notes_view AS SELECT id, body FROM public.notes;
INSERT INTO public.notes VALUES (1, '2b1c7a52-0f1e-4a8e-9d55-1f0e6a4b9c10', 'alice''s secret');
CREATE TABLE public.orders (id int PRIMARY KEY, status text NOT NULL);
INSERT INTO public.orders VALUES (1, 'pending');
"#;

/// A live query over an RLS table would send every row to every subscriber: refused
/// unless an audience gates it or it is registered public on purpose.
#[tokio::test]
async fn live_queries_over_rls_tables_need_an_audience_or_public() {
    let tc = TestCluster::start().await.unwrap();
    let db = tc.superuser().await.unwrap();
    db.batch_execute(NOTES).await.unwrap();
    for q in ["SELECT id, owner, body FROM notes", "SELECT id, body FROM notes_view", "SELECT o.id FROM orders o WHERE EXISTS (SELECT 1 FROM notes n WHERE n.id = o.id)"] {
        let err = db.execute("SELECT pgr.subscribe('all_notes', $1)", &[&q]).await.unwrap_err();
        let msg = err.as_db_error().map(|e| format!("{} {}", e.message(), e.hint().unwrap_or(""))).unwrap_or_default();
        assert!(msg.contains("row-level security") && msg.contains("public => true"), "{q}: {msg}");
        // An empty audience admits everybody: no gate either.
        assert!(db.execute("SELECT pgr.subscribe('all_notes', $1, audience => '{}')", &[&q]).await.is_err(), "{q}");
    }
    assert_eq!(db.query_one("SELECT count(*) FROM pgr.subscriptions", &[]).await.unwrap().get::<_, i64>(0), 0);
    // Deliberate exposure: an audience, or public => true. Tables without RLS: as before.
    db.batch_execute(
        r#"SELECT pgr.subscribe('team_notes', 'SELECT id, body FROM notes', audience => '{"role": "service_role"}');
           SELECT pgr.subscribe('public_notes', 'SELECT id, body FROM notes_view', public => true);
           SELECT pgr.subscribe('orders_feed', 'SELECT id, status FROM orders');"#,
    )
    .await
    .unwrap();
    let public: bool = db.query_one("SELECT public FROM pgr.subscriptions WHERE query_id = 'public_notes'", &[]).await.unwrap().get(0);
    assert!(public);

    let (anon, service) = anon_and_service();
    let gw = Gateway::serve(&tc, &[]).await.unwrap();
    assert_eq!(refused(&gw, &format!("/ws/team_notes?apikey={anon}")).await.0, 403);
    let mut ws = open(&gw, &format!("/ws/public_notes?apikey={anon}")).await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    let mut ws = open(&gw, &format!("/ws/orders_feed?apikey={anon}")).await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");

    // RLS enabled after registration: the gateway refuses the ungated query (but not
    // the service key, which bypasses RLS anyway).
    db.batch_execute("ALTER TABLE public.orders ENABLE ROW LEVEL SECURITY").await.unwrap();
    let (st, body) = refused(&gw, &format!("/ws/orders_feed?apikey={anon}")).await;
    assert_eq!(st, 403);
    assert!(body["error"].as_str().unwrap().contains("row-level security"), "{body}");
    assert_eq!(refused(&gw, &format!("/ws/orders_feed?token={}", user_token("2b1c7a52-0f1e-4a8e-9d55-1f0e6a4b9c10"))).await.0, 403);
    let st = reqwest::get(gw.url(&format!("/ws/_presence/orders_feed?apikey={anon}"))).await.unwrap().status().as_u16();
    assert_eq!(st, 403);
    let mut ws = open(&gw, &format!("/ws/orders_feed?apikey={service}")).await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
}

/// Live-query channels are server-to-client: a client broadcast gets an error frame
/// and reaches nobody, unless the query was registered with allow_broadcast.
#[tokio::test]
async fn broadcast_on_live_query_channels_is_opt_in() {
    let tc = TestCluster::start().await.unwrap();
    tc.superuser()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE public.orders (id int PRIMARY KEY, status text NOT NULL);
             SELECT pgr.subscribe('orders_feed', 'SELECT id, status FROM orders');
             SELECT pgr.subscribe('orders_chat', 'SELECT id FROM orders', allow_broadcast => true);",
        )
        .await
        .unwrap();
    let (anon, _) = anon_and_service();
    let gw = Gateway::serve(&tc, &[]).await.unwrap();

    let path = format!("/ws/orders_feed?apikey={anon}");
    let mut a = open(&gw, &path).await;
    recv(&mut a).await;
    let mut b = open(&gw, &path).await;
    recv(&mut b).await;
    send(&mut a, json!({"type": "broadcast", "payload": {"type": "overflow", "fake": true}})).await;
    let err = recv(&mut a).await;
    assert_eq!(err["type"], "error", "{err}");
    assert!(err["error"].as_str().unwrap().contains("broadcast is not allowed"), "{err}");
    assert_eq!(err["message"], err["error"]);
    quiet(&mut b).await;
    // The socket stays usable (presence is still allowed on query channels).
    send(&mut a, json!({"type": "presence", "state": {"user": "a"}})).await;
    assert_eq!(recv(&mut b).await["type"], "presence_join");

    let path = format!("/ws/orders_chat?apikey={anon}");
    let mut a = open(&gw, &path).await;
    let a_id = recv(&mut a).await["client_id"].clone();
    let mut b = open(&gw, &path).await;
    recv(&mut b).await;
    send(&mut a, json!({"type": "broadcast", "payload": 1})).await;
    assert_eq!(recv(&mut b).await, json!({"type": "broadcast", "from": a_id, "payload": 1}));
    quiet(&mut a).await;
}

/// Presence state is bounded per connection and per gateway; over a bound the sender
/// gets an error frame and nobody else is affected.
#[tokio::test]
async fn presence_state_is_bounded() {
    let tc = TestCluster::start().await.unwrap();
    let (anon, _) = anon_and_service();
    let gw = Gateway::serve(&tc, &[("WS_PRESENCE_MAX_BYTES", "1024"), ("WS_PRESENCE_MAX_TOTAL_BYTES", "3000")]).await.unwrap();
    let path = format!("/ws/_channel_room?apikey={anon}");
    let mut watcher = open(&gw, &path).await;
    recv(&mut watcher).await;

    let mut a = open(&gw, &path).await;
    let a_id = recv(&mut a).await["client_id"].clone();
    send(&mut a, json!({"type": "presence", "state": {"blob": "x".repeat(2000)}})).await;
    let err = recv(&mut a).await;
    assert_eq!(err["type"], "error", "{err}");
    assert!(err["error"].as_str().unwrap().contains("WS_PRESENCE_MAX_BYTES"), "{err}");
    quiet(&mut watcher).await;
    let state: Value = reqwest::get(gw.url(&format!("/ws/_presence/_channel_room?apikey={anon}"))).await.unwrap().json().await.unwrap();
    assert_eq!(state, json!({}));
    // The same socket may still join with a small state.
    send(&mut a, json!({"type": "presence", "state": {"user": "a"}})).await;
    assert_eq!(recv(&mut watcher).await, json!({"type": "presence_join", "channel": "_channel_room", "client_id": a_id, "state": {"user": "a"}}));

    // 911 bytes each: with a's 12, three fit in the gateway's 3000, a fourth does not.
    let blob = |c: &str| json!({"type": "presence", "state": {"blob": c.repeat(900)}});
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = open(&gw, &path).await;
        recv(&mut c).await;
        send(&mut c, blob("y")).await;
        assert_eq!(recv(&mut watcher).await["type"], "presence_join");
        clients.push(c);
    }
    let mut d = open(&gw, &path).await;
    recv(&mut d).await;
    send(&mut d, blob("z")).await;
    let mut err = recv(&mut d).await;
    while err["type"] == "presence_state" {
        err = recv(&mut d).await;
    }
    assert_eq!(err["type"], "error", "{err}");
    assert!(err["error"].as_str().unwrap().contains("capacity"), "{err}");
    quiet(&mut watcher).await;
    // A client leaving frees its share.
    drop(clients.remove(0));
    assert_eq!(recv(&mut watcher).await["type"], "presence_leave");
    send(&mut d, blob("z")).await;
    assert_eq!(recv(&mut watcher).await["type"], "presence_join");
}

fn deno() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js/node_modules/@deno/linux-x64-glibc/deno");
    assert!(p.exists(), "deno not installed: run scripts/install-deps.sh (npm ci in tests/js)");
    p
}

/// A function reads only its own env (never the gateway's secrets), and client
/// headers with the internal prefix never reach the worker.
#[tokio::test]
async fn functions_see_no_gateway_secrets_and_no_spoofed_internal_headers() {
    let tc = TestCluster::start().await.unwrap();
    tc.superuser()
        .await
        .unwrap()
        .batch_execute(
            r#"INSERT INTO pgr.functions (name, source, verify_jwt, env) VALUES
               ('peek', 'Deno.serve((req) => Response.json({
                   jwt: Deno.env.get("JWT_SECRET") ?? null, db: Deno.env.get("DATABASE_URL") ?? null,
                   service: Deno.env.get("SERVICE_ROLE_KEY") ?? null, own: Deno.env.get("OWN") ?? null,
                   keys: Object.keys(Deno.env.toObject()).sort(), path: new URL(req.url).pathname,
                   internal: [...req.headers.keys()].filter((k) => k.startsWith("x-pgstack")) }));', false, '{"OWN": "mine"}'),
               ('other', 'Deno.serve(() => new Response("other"));', false, '{"OTHER_SECRET": "theirs"}');"#,
        )
        .await
        .unwrap();
    let (_, service) = anon_and_service();
    // A proxy in the environment is not used to reach the worker on loopback (it would
    // see every invocation, Authorization headers included).
    let deno = deno();
    let env = [
        ("DENO_PATH", deno.to_str().unwrap()),
        ("SERVICE_ROLE_KEY", &service),
        ("SMTP_PASS", "hunter2"),
        ("HTTP_PROXY", "http://127.0.0.1:9"),
        ("http_proxy", "http://127.0.0.1:9"),
    ];
    let gw = Gateway::serve(&tc, &env).await.unwrap();
    let res = reqwest::Client::new()
        .get(gw.url("/functions/v1/peek/sub"))
        .header("x-pgstack-function", "other")
        .header("X-Pgstack-Path", "/spoofed")
        .header("x-pgstack-env", r#"{"OWN": "spoofed"}"#)
        .header("x-pgstack-version", "0")
        .header("x-pgstack-anything", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!((&v["jwt"], &v["db"], &v["service"]), (&Value::Null, &Value::Null, &Value::Null), "{v}");
    assert_eq!(v["own"], "mine", "{v}");
    assert_eq!(v["path"], "/peek/sub", "{v}");
    assert_eq!(v["internal"], json!([]), "{v}");
    let keys: Vec<&str> = v["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    for k in &keys {
        assert!(!["JWT_SECRET", "DATABASE_URL", "SERVICE_ROLE_KEY", "SMTP_PASS", "OTHER_SECRET", "LISTEN_ADDR", "RUST_LOG"].contains(k), "{k} leaked: {keys:?}");
    }
    assert!(keys.contains(&"OWN"), "{keys:?}");
}

/// Webhook URLs with internal IPv6 forms are refused at registration; deliveries do not
/// go through HTTP_PROXY (a proxy would connect to any name for us).
#[tokio::test]
async fn webhooks_refuse_ipv6_tricks_and_ignore_proxy_env() {
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = proxy.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    let tc = TestCluster::start().await.unwrap();
    tc.superuser().await.unwrap().batch_execute("CREATE TABLE public.orders (id int PRIMARY KEY)").await.unwrap();
    let (_, service) = anon_and_service();
    let env = [
        ("SERVICE_ROLE_KEY", service.as_str()),
        ("HTTP_PROXY", &proxy_url),
        ("http_proxy", &proxy_url),
        ("HTTPS_PROXY", &proxy_url),
        ("ALL_PROXY", &proxy_url),
        ("WEBHOOK_TIMEOUT", "2"),
    ];
    let gw = Gateway::serve(&tc, &env).await.unwrap();
    let call = |method: &'static str, path: &'static str, body: Option<Value>| {
        let (gw_url, service) = (gw.url(path), service.clone());
        async move {
            let mut r = reqwest::Client::new().request(method.parse().unwrap(), gw_url).header("apikey", &service).bearer_auth(&service);
            if let Some(b) = body {
                r = r.json(&b);
            }
            let res = r.send().await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    for url in [
        "http://[::127.0.0.1]:9000/x",
        "http://[64:ff9b::7f00:1]/x",
        "http://[2002:7f00:1::1]/x",
        "http://[fec0::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://[::]/x",
        "http://[2001::1]/x",
        "http://[64:ff9b:1::a00:1]/x",
        "http://[fd12::1]/x",
        "http://localhost:9000/x",
    ] {
        let (st, v) = call("POST", "/rest/v1/webhooks", Some(json!({"url": url, "table_name": "orders"}))).await;
        assert_eq!(st, 400, "{url}: {v}");
        assert!(v["message"].as_str().unwrap_or_default().contains("internal"), "{url}: {v}");
    }

    // A name that does not resolve: accepted (checked again at delivery), never sent
    // to the proxy.
    let (st, v) = call("POST", "/rest/v1/webhooks", Some(json!({"url": "http://hook.pgstack-test.invalid/x", "table_name": "orders"}))).await;
    assert_eq!(st, 201, "{v}");
    tc.superuser().await.unwrap().batch_execute("INSERT INTO public.orders VALUES (1)").await.unwrap();
    let call_ref = &call;
    let failed = eventually(Duration::from_secs(30), move || async move {
        let (_, v) = call_ref("GET", "/rest/v1/webhooks/events?status=dead", None).await;
        v.as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    assert!(failed, "the delivery did not fail");
    let (_, v) = call("GET", "/rest/v1/webhooks/events?status=dead", None).await;
    assert!(v[0]["last_error"].as_str().unwrap_or_default().contains("resolve"), "{v}");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "a delivery went through HTTP_PROXY");
}

/// A second `pgstack dev` on the same folder exits at once, naming the first one, and
/// leaves the first one's cluster running.
#[tokio::test]
async fn a_second_dev_on_one_folder_leaves_the_first_alone() {
    use std::os::unix::fs::PermissionsExt;
    let project = tempfile::tempdir().unwrap();
    std::fs::set_permissions(project.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = project.path().join(".pgstack");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let env = [("PGSTACK_DIR", state.display().to_string()), ("LISTEN_ADDR", listen.clone())];
    let mut first = Gateway::spawn(&["dev"], &env).await.unwrap();
    let su_url = first.stdout().lines().find_map(|l| l.trim().strip_prefix("Superuser URL:").map(|v| v.trim().to_owned())).expect("superuser url");

    let mut cmd = tokio::process::Command::new(pgstack_bin().unwrap());
    cmd.arg("dev").stdin(std::process::Stdio::null()).kill_on_drop(true);
    for k in ["DATABASE_URL", "JWT_SECRET", "ANON_KEY", "SERVICE_ROLE_KEY", "PGSTACK_CONFIG"] {
        cmd.env_remove(k);
    }
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output()).await.expect("the second dev exits").unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("already running") && text.contains(&first.pid().unwrap().to_string()), "{text}");
    assert!(!text.contains("stopping PostgreSQL"), "{text}");

    // The first one still serves, with its database.
    let r = reqwest::get(first.url("/health")).await.unwrap();
    let h = r.json::<Value>().await.unwrap();
    assert_eq!((&h["status"], &h["pg_connected"]), (&json!("ok"), &json!(true)), "{h}");
    connect(&su_url).await.unwrap().query_one("SELECT 1", &[]).await.unwrap();
    assert!(first.terminate().await.unwrap().success(), "{}", first.stderr());

    // Once the first is gone the folder is free again.
    let mut again = Gateway::spawn(&["dev"], &env).await.unwrap();
    assert!(again.terminate().await.unwrap().success());
}
