//! Issue 4, gateway side: WS /ws/{query_id} relays the extension's deltas; every
//! refusal happens before the upgrade with `{"error": ...}`; broadcast and presence on
//! ad-hoc channels; a lost LISTEN connection becomes an overflow for every client.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use pgstack_gateway::config::Secret;
use pgstack_gateway::keys;
use pgstack_shared::{JwtClaims, Role};
use pgstack_tests::{eventually, Gateway, TestCluster, JWT_SECRET};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

const FIXTURE: &str = r#"
CREATE TABLE public.orders (id int PRIMARY KEY, status text NOT NULL, amount int);
INSERT INTO public.orders VALUES (1, 'pending', 10);
SELECT pgr.subscribe('active_orders', 'SELECT id, status, amount FROM orders WHERE status = ''pending''');
SELECT pgr.subscribe('team_orders', 'SELECT id FROM orders', 'delta', '{"role": "authenticated", "app_metadata.team": ["red"]}');
"#;

struct Env {
    tc: TestCluster,
    gw: Gateway,
    anon: String,
    service: String,
}

async fn start(extra: &[(&str, &str)]) -> Env {
    let tc = TestCluster::start().await.unwrap();
    tc.superuser().await.unwrap().batch_execute(FIXTURE).await.unwrap();
    let s = Secret::new(JWT_SECRET);
    let (anon, service) = (keys::mint(Role::Anon, &s).unwrap(), keys::mint(Role::ServiceRole, &s).unwrap());
    let mut env = vec![("ANON_KEY", anon.as_str()), ("SERVICE_ROLE_KEY", service.as_str())];
    env.extend_from_slice(extra);
    let gw = Gateway::serve(&tc, &env).await.unwrap();
    Env { tc, gw, anon, service }
}

fn ws_url(gw: &Gateway, path: &str) -> String {
    format!("{}{path}", gw.base.replacen("http://", "ws://", 1))
}

async fn open(gw: &Gateway, path: &str) -> Ws {
    connect_async(ws_url(gw, path)).await.unwrap_or_else(|e| panic!("connect {path}: {e}")).0
}

/// Status of a refused upgrade.
async fn refused(gw: &Gateway, path: &str, headers: &[(&'static str, &str)]) -> (u16, Value) {
    let mut req = ws_url(gw, path).into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(*k, v.parse().unwrap());
    }
    match connect_async(req).await {
        Ok(_) => panic!("{path} was accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            let body = res.body().as_ref().map(|b| serde_json::from_slice(b).unwrap()).unwrap_or(Value::Null);
            (res.status().as_u16(), body)
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

async fn recv(ws: &mut Ws) -> Value {
    recv_within(ws, Duration::from_secs(5)).await
}

async fn recv_within(ws: &mut Ws, wait: Duration) -> Value {
    loop {
        let m = tokio::time::timeout(wait, ws.next()).await.expect("a frame").unwrap().unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

async fn quiet(ws: &mut Ws) {
    if let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(Duration::from_millis(300), ws.next()).await {
        panic!("unexpected frame {t}");
    }
}

fn user_token(claims: Value) -> String {
    let mut c = JwtClaims::api_key(Role::Authenticated, keys::now(), 600);
    c.sub = Some("2b1c7a52-0f1e-4a8e-9d55-1f0e6a4b9c10".into());
    if let Value::Object(m) = claims {
        c.extra.extend(m);
    }
    keys::sign(&c, &Secret::new(JWT_SECRET)).unwrap()
}

#[tokio::test]
async fn deltas_reach_every_subscriber_in_order() {
    let e = start(&[]).await;
    let mut a = open(&e.gw, &format!("/ws/active_orders?apikey={}", e.anon)).await;
    let mut b = open(&e.gw, &format!("/ws/active_orders?token={}", e.service)).await;
    for ws in [&mut a, &mut b] {
        let hello = recv(ws).await;
        assert_eq!((hello["type"].as_str(), hello["query_id"].as_str()), (Some("subscribed"), Some("active_orders")));
    }
    let db = e.tc.superuser().await.unwrap();
    db.batch_execute("INSERT INTO orders VALUES (2, 'pending', 20)").await.unwrap();
    db.batch_execute("UPDATE orders SET status = 'shipped' WHERE id = 1").await.unwrap();
    db.batch_execute("BEGIN; DELETE FROM orders; ROLLBACK").await.unwrap();
    for ws in [&mut a, &mut b] {
        assert_eq!(recv(ws).await, json!({"query_id": "active_orders", "seq": 1, "inserted": [{"id": 2, "status": "pending", "amount": 20}], "deleted": []}));
        assert_eq!(recv(ws).await, json!({"query_id": "active_orders", "seq": 2, "inserted": [], "deleted": [{"id": 1, "status": "pending", "amount": 10}]}));
        quiet(ws).await;
    }
    // Authorization header works too.
    let mut req = ws_url(&e.gw, "/ws/active_orders").into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", e.anon).parse().unwrap());
    let (mut c, _) = connect_async(req).await.unwrap();
    assert_eq!(recv(&mut c).await["type"], "subscribed");
}

#[tokio::test]
async fn refusals_happen_before_the_upgrade() {
    let e = start(&[("WS_MAX_CONNECTIONS_PER_IP", "2"), ("ALLOWED_ORIGINS", "https://app.example.com")]).await;
    let (st, body) = refused(&e.gw, "/ws/active_orders", &[]).await;
    assert_eq!(st, 401);
    assert!(body["error"].as_str().unwrap().contains("authentication required"), "{body}");
    assert_eq!(refused(&e.gw, "/ws/active_orders?token=not.a.jwt", &[]).await.0, 401);
    let (st, body) = refused(&e.gw, &format!("/ws/nope?apikey={}", e.anon), &[]).await;
    assert_eq!((st, body["error"].as_str().is_some()), (404, true));
    assert_eq!(refused(&e.gw, &format!("/ws/team_orders?apikey={}", e.anon), &[]).await.0, 403);
    let blue = user_token(json!({"app_metadata": {"team": "blue"}}));
    assert_eq!(refused(&e.gw, &format!("/ws/team_orders?token={blue}"), &[]).await.0, 403);
    let red = user_token(json!({"app_metadata": {"team": "red"}}));
    let mut ok = open(&e.gw, &format!("/ws/team_orders?token={red}")).await;
    assert_eq!(recv(&mut ok).await["type"], "subscribed");
    let (st, _) = refused(&e.gw, &format!("/ws/active_orders?apikey={}", e.anon), &[("origin", "https://evil.example.com")]).await;
    assert_eq!(st, 403);
    let mut allowed = ws_url(&e.gw, &format!("/ws/active_orders?apikey={}", e.anon)).into_client_request().unwrap();
    allowed.headers_mut().insert("origin", "https://app.example.com".parse().unwrap());
    let (_second, _) = connect_async(allowed).await.expect("allowed origin");
    // Two connections are open from 127.0.0.1: the third is over the per-IP cap.
    let (st, body) = refused(&e.gw, &format!("/ws/active_orders?apikey={}", e.anon), &[]).await;
    assert_eq!(st, 429, "{body}");
    drop(ok);
    assert!(
        eventually(Duration::from_secs(5), || async { connect_async(ws_url(&e.gw, &format!("/ws/active_orders?apikey={}", e.anon))).await.is_ok() }).await,
        "a closed connection frees its slot"
    );
}

#[tokio::test]
async fn global_cap_and_authenticated_only_mode() {
    let e = start(&[("WS_MAX_CONNECTIONS", "1"), ("REQUIRE_AUTHENTICATED_WS", "true")]).await;
    assert_eq!(refused(&e.gw, &format!("/ws/active_orders?apikey={}", e.anon), &[]).await.0, 401);
    let _first = open(&e.gw, &format!("/ws/active_orders?token={}", user_token(json!({})))).await;
    assert_eq!(refused(&e.gw, &format!("/ws/active_orders?token={}", e.service), &[]).await.0, 503);
}

/// A client message over 1 MiB closes that client's socket; nobody else is affected
/// and nothing is relayed.
#[tokio::test]
async fn an_oversized_client_message_closes_only_that_socket() {
    let e = start(&[]).await;
    let path = format!("/ws/_channel_big?apikey={}", e.anon);
    let mut a = open(&e.gw, &path).await;
    recv(&mut a).await;
    let mut b = open(&e.gw, &path).await;
    recv(&mut b).await;
    let huge = json!({"type": "broadcast", "payload": "x".repeat(2 * 1024 * 1024)}).to_string();
    let _ = a.send(Message::Text(huge.into())).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match a.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the oversized sender is disconnected");
    quiet(&mut b).await;
    b.send(Message::Text(json!({"type": "broadcast", "payload": 1}).to_string().into())).await.unwrap();
    let mut c = open(&e.gw, &path).await;
    assert_eq!(recv(&mut c).await["type"], "subscribed", "the gateway still serves");
}

#[tokio::test]
async fn broadcast_and_presence_on_ad_hoc_channels() {
    let e = start(&[]).await;
    let path = format!("/ws/_channel_lobby?apikey={}", e.anon);
    let mut a = open(&e.gw, &path).await;
    let a_id = recv(&mut a).await["client_id"].as_str().unwrap().to_owned();
    let mut b = open(&e.gw, &path).await;
    let b_id = recv(&mut b).await["client_id"].as_str().unwrap().to_owned();

    a.send(Message::Text(json!({"type": "broadcast", "payload": {"cursor": [1, 2]}}).to_string().into())).await.unwrap();
    assert_eq!(recv(&mut b).await, json!({"type": "broadcast", "from": a_id, "payload": {"cursor": [1, 2]}}));
    quiet(&mut a).await;

    a.send(Message::Text(json!({"type": "presence", "state": {"username": "jane"}}).to_string().into())).await.unwrap();
    assert_eq!(recv(&mut b).await, json!({"type": "presence_join", "channel": "_channel_lobby", "client_id": a_id, "state": {"username": "jane"}}));
    a.send(Message::Text(json!({"type": "presence", "state": {"username": "jane", "idle": true}}).to_string().into())).await.unwrap();
    assert_eq!(recv(&mut b).await["type"], "presence_state");

    let state: Value = reqwest::get(e.gw.url(&format!("/ws/_presence/_channel_lobby?apikey={}", e.anon))).await.unwrap().json().await.unwrap();
    assert_eq!(state, json!({ a_id.clone(): {"username": "jane", "idle": true} }));
    let no_auth = reqwest::get(e.gw.url("/ws/_presence/_channel_lobby")).await.unwrap();
    assert_eq!(no_auth.status(), 401);

    a.close(None).await.unwrap();
    assert_eq!(recv(&mut b).await, json!({"type": "presence_leave", "channel": "_channel_lobby", "client_id": a_id}));
    let _ = b_id;
}

#[tokio::test]
async fn a_lost_listen_connection_means_overflow_for_everyone() {
    let e = start(&[]).await;
    let mut a = open(&e.gw, &format!("/ws/active_orders?apikey={}", e.anon)).await;
    assert_eq!(recv(&mut a).await["type"], "subscribed");
    e.tc.cluster.stop().unwrap();
    e.tc.cluster.start().unwrap();
    // The LISTEN connection retries with backoff (at most 2 s apart) while Postgres
    // restarts: allow for a slow restart on a loaded machine.
    let m = recv_within(&mut a, Duration::from_secs(15)).await;
    assert_eq!((m["type"].as_str(), m["fetch"].as_bool()), (Some("overflow"), Some(true)));
    // And deltas flow again.
    e.tc.superuser().await.unwrap().batch_execute("INSERT INTO orders VALUES (7, 'pending', 1)").await.unwrap();
    let m = recv(&mut a).await;
    assert_eq!(m["inserted"][0]["id"], 7);
}

#[tokio::test]
async fn broadcast_and_presence_cross_gateways_and_a_dead_gateway_leaves() {
    let e = start(&[]).await;
    let mut second = Gateway::serve(&e.tc, &[("ANON_KEY", &e.anon), ("SERVICE_ROLE_KEY", &e.service)]).await.unwrap();
    let path = format!("/ws/_channel_room?apikey={}", e.anon);
    let mut a = open(&e.gw, &path).await;
    let a_id = recv(&mut a).await["client_id"].as_str().unwrap().to_owned();
    let mut b = open(&second, &path).await;
    recv(&mut b).await;
    // Let both LISTEN connections settle.
    tokio::time::sleep(Duration::from_millis(300)).await;

    a.send(Message::Text(json!({"type": "broadcast", "payload": {"n": 1}}).to_string().into())).await.unwrap();
    assert_eq!(recv(&mut b).await, json!({"type": "broadcast", "from": a_id, "payload": {"n": 1}}));
    b.send(Message::Text(json!({"type": "presence", "state": {"user": "bob"}}).to_string().into())).await.unwrap();
    let joined = recv(&mut a).await;
    assert_eq!((joined["type"].as_str(), joined["state"]["user"].as_str()), (Some("presence_join"), Some("bob")));
    let b_id = joined["client_id"].as_str().unwrap().to_owned();
    // The first gateway's presence endpoint lists the client of the second one.
    let state: Value = reqwest::get(e.gw.url(&format!("/ws/_presence/_channel_room?apikey={}", e.anon))).await.unwrap().json().await.unwrap();
    assert_eq!(state, json!({ b_id.clone(): {"user": "bob"} }));

    // The second gateway dies without a goodbye: its clients leave within ~15 s.
    std::process::Command::new("kill").args(["-9", &second.pid().unwrap().to_string()]).status().unwrap();
    let _ = second.terminate().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), a.next()).await.expect("presence_leave").unwrap().unwrap();
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["type"] == "presence_leave" {
                assert_eq!(v["client_id"], b_id.as_str());
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline);
    }
    let state: Value = reqwest::get(e.gw.url(&format!("/ws/_presence/_channel_room?apikey={}", e.anon))).await.unwrap().json().await.unwrap();
    assert_eq!(state, json!({}));
}

#[tokio::test]
async fn a_slow_consumer_gets_an_overflow_while_a_fast_one_gets_everything() {
    let e = start(&[("WS_CLIENT_QUEUE", "64")]).await;
    let db = e.tc.superuser().await.unwrap();
    db.batch_execute(
        "CREATE TABLE public.blobs (id int PRIMARY KEY, body text);
         INSERT INTO public.blobs VALUES (1, repeat('a', 3400));
         SELECT pgr.subscribe('blobs', 'SELECT id, body FROM blobs');",
    )
    .await
    .unwrap();
    const N: i64 = 3000;
    let mut fast = open(&e.gw, &format!("/ws/blobs?apikey={}", e.anon)).await;
    let mut slow = open(&e.gw, &format!("/ws/blobs?apikey={}", e.anon)).await;
    assert_eq!(recv(&mut fast).await["type"], "subscribed");
    assert_eq!(recv(&mut slow).await["type"], "subscribed");
    // The fast client reads as frames come: every seq, in order.
    let reader = tokio::spawn(async move {
        let mut expected = 1;
        while expected <= N {
            // All frames arrive at the writer's commit, which takes a while.
            let f = match tokio::time::timeout(Duration::from_secs(60), fast.next()).await.expect("a frame").unwrap().unwrap() {
                Message::Text(t) => serde_json::from_str::<Value>(t.as_str()).unwrap(),
                _ => continue,
            };
            assert_eq!(f["seq"].as_i64(), Some(expected), "fast client: {}", f["type"]);
            assert!(f["type"].is_null(), "the fast client never overflows");
            expected += 1;
        }
    });
    // ~7 KB per frame, ~20 MB in all: more than the socket buffers of a client that
    // does not read. One transaction per frame, as writers would send them.
    let upd = db.prepare("UPDATE blobs SET body = repeat(chr(65 + $1 % 26), 3400) WHERE id = 1").await.unwrap();
    for i in 1..=N as i32 {
        db.execute(&upd, &[&i]).await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(60), reader).await.expect("the fast client got every frame").unwrap();
    // The slow client now reads what is left: some deltas, an overflow (re-fetch), and
    // never all of them — the gateway did not buffer without bound.
    let (mut deltas, mut overflow) = (0, false);
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(2), slow.next()).await {
        if let Message::Text(t) = m {
            let f: Value = serde_json::from_str(t.as_str()).unwrap();
            match f["type"].as_str() {
                Some("overflow") => {
                    assert_eq!((f["query_id"].as_str(), f["fetch"].as_bool()), (Some("blobs"), Some(true)));
                    overflow = true;
                }
                _ => deltas += 1,
            }
        }
    }
    assert!(overflow, "the slow client was told to re-fetch");
    assert!(deltas < N, "the slow client got {deltas} of {N} frames, not all of them");
}
