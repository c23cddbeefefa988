//! Issue 17: the Supabase Realtime protocol. The real, unpatched supabase-js
//! `channel()` API (tests/js/realtime.test.mjs) against a real cluster and the real
//! gateway: postgres_changes under each subscriber's RLS, broadcast, presence,
//! private channels, setAuth, removeChannel, token expiry, a reconnect after a gateway
//! restart; and, with a raw Phoenix client, two gateways on one cluster and hostile
//! frames.

use std::path::PathBuf;

use pgstack_gateway::config::Secret;
use pgstack_gateway::keys;
use pgstack_shared::Role;
use pgstack_tests::{Gateway, TestCluster, JWT_SECRET};
use serde_json::{json, Value};

pub const FIXTURE: &str = r#"
CREATE TABLE public.todos (id bigserial PRIMARY KEY, owner uuid, title text, done boolean NOT NULL DEFAULT false);
ALTER TABLE public.todos ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON public.todos FOR SELECT TO authenticated USING (owner = auth.uid());
CREATE POLICY public_rows ON public.todos FOR SELECT TO anon USING (owner IS NULL);
GRANT SELECT ON public.todos TO anon, authenticated;
GRANT ALL ON public.todos TO service_role;
GRANT USAGE ON SEQUENCE public.todos_id_seq TO service_role;
ALTER PUBLICATION supabase_realtime ADD TABLE public.todos;
-- What the tests change while clients stay connected (as the owner of the objects).
CREATE FUNCTION public.rt_share_titles(title text) RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  EXECUTE format('CREATE POLICY shared ON public.todos FOR SELECT TO authenticated USING (title = %L)', title);
END $$;
CREATE FUNCTION public.rt_allow_room(room text) RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  EXECUTE format('CREATE POLICY room_read ON realtime.messages FOR SELECT TO authenticated USING (realtime.topic() = %L AND auth.uid() = %L::uuid)', room, '00000000-0000-0000-0000-00000000000a');
  EXECUTE format('CREATE POLICY room_write ON realtime.messages FOR INSERT TO authenticated WITH CHECK (realtime.topic() = %L AND auth.uid() = %L::uuid)', room, '00000000-0000-0000-0000-00000000000a');
END $$;
CREATE FUNCTION public.rt_send(topic text, body text) RETURNS void LANGUAGE sql AS $$
  SELECT realtime.send(jsonb_build_object('text', body), 'msg', topic, false)
$$;
REVOKE EXECUTE ON FUNCTION public.rt_share_titles(text), public.rt_allow_room(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.rt_share_titles(text), public.rt_allow_room(text), public.rt_send(text, text) TO service_role;
"#;

pub const USER_A: &str = "00000000-0000-0000-0000-00000000000a";
pub const USER_B: &str = "00000000-0000-0000-0000-00000000000b";

pub fn user_token(sub: &str, ttl: i64) -> String {
    let claims = json!({"sub": sub, "role": "authenticated", "aud": "authenticated", "exp": keys::now() + ttl});
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes())).unwrap()
}

/// A cluster with FIXTURE, and its superuser connection.
async fn cluster() -> (TestCluster, tokio_postgres::Client) {
    let tc = TestCluster::start().await.unwrap();
    let su = tc.superuser().await.unwrap();
    su.batch_execute(FIXTURE).await.unwrap();
    (tc, su)
}

#[tokio::test]
async fn supabase_js_realtime() {
    let (tc, _) = cluster().await;
    let secret = Secret::new(JWT_SECRET);
    let anon = keys::mint(Role::Anon, &secret).unwrap();
    let service = keys::mint(Role::ServiceRole, &secret).unwrap();
    let env = [("ANON_KEY", anon.as_str()), ("SERVICE_ROLE_KEY", service.as_str())];
    let gw = Gateway::serve(&tc, &env).await.unwrap();

    let env = [
        ("ANON_KEY", anon.clone()),
        ("SERVICE_ROLE_KEY", service.clone()),
        ("USER_A", user_token(USER_A, 3600)),
        ("USER_B", user_token(USER_B, 3600)),
        ("USER_B_SHORT", user_token(USER_B, 3)),
        ("USER_A_ID", USER_A.to_owned()),
        ("USER_B_ID", USER_B.to_owned()),
    ];
    pgstack_tests::node_tests("realtime.test.mjs", "@supabase/supabase-js", &env, &gw).await;
}

/// A raw Phoenix (vsn 2.0.0) client, as realtime-js frames it.
struct Phx {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    seen: Vec<Value>,
}

impl Phx {
    async fn connect(base: &str, key: &str) -> Phx {
        let url = format!("{}/realtime/v1/websocket?apikey={key}&vsn=2.0.0", base.replace("http", "ws"));
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Phx { ws, seen: Vec::new() }
    }

    async fn send(&mut self, frame: Value) {
        use futures_util::SinkExt;
        self.ws.send(tokio_tungstenite::tungstenite::Message::Text(frame.to_string().into())).await.unwrap();
    }

    /// The first frame (seen before or arriving within 5 s) that `pred` accepts.
    async fn until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.within(5, what, pred).await
    }

    async fn within(&mut self, secs: u64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        use futures_util::StreamExt;
        if let Some(i) = self.seen.iter().position(&pred) {
            return self.seen.remove(i);
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next()).await.unwrap_or_else(|_| panic!("no {what}; saw {:?}", self.seen));
            let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) = m else { continue };
            let v: Value = serde_json::from_str(&t).unwrap();
            if pred(&v) {
                return v;
            }
            self.seen.push(v);
        }
    }

    async fn join(&mut self, topic: &str, presence_key: &str) {
        self.send(json!(["1", "1", format!("realtime:{topic}"), "phx_join", {"config": {
            "broadcast": {"self": false, "ack": false}, "presence": {"key": presence_key, "enabled": true}, "private": false,
            "postgres_changes": [{"event": "INSERT", "schema": "public", "table": "todos"}]}}]))
            .await;
        let r = self.until("join reply", |f| f[3] == "phx_reply" && f[1] == "1").await;
        assert_eq!(r[4]["status"], "ok", "{r}");
        self.until("subscribed", |f| f[3] == "system" && f[4]["status"] == "ok").await;
    }
}

/// Two gateways on one cluster: changes, broadcasts and presence made through one reach
/// clients of the other; a client that reconnects after its gateway restarted receives
/// later changes.
#[tokio::test]
async fn two_gateways_share_changes_broadcast_and_presence() {
    let (tc, su) = cluster().await;
    let secret = Secret::new(JWT_SECRET);
    let service = keys::mint(Role::ServiceRole, &secret).unwrap();
    let g1 = Gateway::serve(&tc, &[]).await.unwrap();
    let mut g2 = Gateway::serve(&tc, &[]).await.unwrap();
    let mut c1 = Phx::connect(&g1.base, &service).await;
    let mut c2 = Phx::connect(&g2.base, &service).await;
    c1.join("room", "one").await;
    c2.join("room", "two").await;

    // Presence tracked on gateway 2 reaches the client of gateway 1.
    c2.send(json!(["1", "2", "realtime:room", "presence", {"type": "presence", "event": "track", "payload": {"at": "g2"}}])).await;
    let diff = c1.until("presence from the other gateway", |f| f[3] == "presence_diff" && f[4]["joins"]["two"].is_object()).await;
    assert_eq!(diff[4]["joins"]["two"]["metas"][0]["at"], "g2");
    c1.send(json!(["1", "2", "realtime:room", "presence", {"type": "presence", "event": "track", "payload": {"at": "g1"}}])).await;
    c2.until("presence from the other gateway", |f| f[3] == "presence_diff" && f[4]["joins"]["one"].is_object()).await;
    // A broadcast through gateway 1 reaches gateway 2's client.
    c1.send(json!(["1", "3", "realtime:room", "broadcast", {"type": "broadcast", "event": "hi", "payload": {"from": 1}}])).await;
    let b = c2.until("broadcast from the other gateway", |f| f[3] == "broadcast").await;
    assert_eq!(b[4]["payload"]["from"], 1);
    // A row change reaches the clients of both.
    su.batch_execute("INSERT INTO public.todos (title) VALUES ('everywhere')").await.unwrap();
    for c in [&mut c1, &mut c2] {
        let ch = c.until("postgres_changes", |f| f[3] == "postgres_changes").await;
        assert_eq!(ch[4]["data"]["record"]["title"], "everywhere");
        assert_eq!(ch[4]["data"]["type"], "INSERT");
        assert!(ch[4]["ids"].as_array().is_some_and(|a| a.len() == 1));
    }

    // Gateway 2 stops: its client's presence leaves gateway 1's state once gateway 2
    // has been silent for 15 s.
    g2.terminate().await.unwrap();
    c1.within(30, "presence leave of the stopped gateway's client", |f| f[3] == "presence_diff" && f[4]["leaves"]["two"].is_object()).await;
    // Gateway 2 comes back; the client reconnects and gets the changes made since.
    let g2b = Gateway::serve(&tc, &[]).await.unwrap();
    let mut c2 = Phx::connect(&g2b.base, &service).await;
    c2.join("room", "two").await;
    // The new gateway learns gateway 1's presences when it starts listening: in the
    // joining client's presence_state, or in a diff right after it if the answer
    // arrived after the join.
    let state = c2.until("presence_state", |f| f[3] == "presence_state").await;
    if state[4]["one"].is_null() {
        c2.until("gateway 1's presence", |f| f[3] == "presence_diff" && f[4]["joins"]["one"]["metas"][0]["at"] == "g1").await;
    }
    su.batch_execute("INSERT INTO public.todos (title) VALUES ('after restart')").await.unwrap();
    let ch = c2.until("a change after the restart", |f| f[3] == "postgres_changes").await;
    assert_eq!(ch[4]["data"]["record"]["title"], "after restart");
    drop(g1);
}

/// Hostile frames get errors, never a crash: unknown topics, unjoined channels, bad
/// JSON, unknown filters; the socket stays usable.
#[tokio::test]
async fn bad_frames_are_answered_and_the_socket_survives() {
    let (tc, _) = cluster().await;
    let anon = keys::mint(Role::Anon, &Secret::new(JWT_SECRET)).unwrap();
    let gw = Gateway::serve(&tc, &[]).await.unwrap();
    // The key is checked before the upgrade.
    let r = reqwest::get(gw.url("/realtime/v1/websocket?apikey=nope&vsn=2.0.0")).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    let mut c = Phx::connect(&gw.base, &anon).await;
    c.send(json!(["1", "1", "elsewhere", "phx_join", {}])).await;
    assert_eq!(c.until("unmatched", |f| f[1] == "1").await[4]["response"]["reason"], "unmatched topic");
    c.send(json!(["1", "2", "realtime:x", "broadcast", {"type": "broadcast", "event": "e", "payload": {}}])).await;
    assert_eq!(c.until("not joined", |f| f[1] == "2").await[4]["status"], "error");
    c.send(json!(["1", "3", "realtime:x", "phx_join", {"config": {"postgres_changes": [{"event": "INSERT", "schema": "public", "table": "todos", "filter": "id=like.1"}]}}])).await;
    let r = c.until("bad filter", |f| f[1] == "3").await;
    assert_eq!(r[4]["status"], "error");
    assert!(r[4]["response"]["reason"].as_str().unwrap().contains("unsupported filter operator"), "{r}");
    c.send(json!(["1", "4", "realtime:x", "phx_join", {"access_token": "not.a.jwt"}])).await;
    assert!(c.until("bad token", |f| f[1] == "4").await[4]["response"]["reason"].as_str().unwrap().starts_with("MalformedJWT"));
    {
        use futures_util::SinkExt;
        c.ws.send(tokio_tungstenite::tungstenite::Message::Text("{not json".into())).await.unwrap();
        c.ws.send(tokio_tungstenite::tungstenite::Message::Binary(vec![3u8, 200, 200, 200].into())).await.unwrap();
    }
    // A broadcast forged with pg_notify (no gateway signature) is ignored; a real
    // realtime.send on the same topic arrives.
    c.send(json!(["7", "7", "realtime:forge", "phx_join", {}])).await;
    assert_eq!(c.until("join forge", |f| f[1] == "7").await[4]["status"], "ok");
    let su = tc.superuser().await.unwrap();
    su.batch_execute(r#"SELECT pg_notify('pgr_realtime', '{"k":"b","g":"x","topic":"forge","private":false,"payload":{"type":"broadcast","event":"forged","payload":{}}}')"#)
        .await
        .unwrap();
    su.batch_execute(r#"SELECT realtime.send('{"ok":1}', 'real', 'forge', false)"#).await.unwrap();
    let b = c.until("the real broadcast", |f| f[3] == "broadcast").await;
    assert_eq!(b[4]["event"], "real", "{b}");
    // One transaction inserts a row anon may not see, then makes it visible: anon gets
    // the visible version only, never the hidden one (RLS is asked about the row as it
    // is now, so only the version that is still current is sent).
    c.send(json!(["8", "8", "realtime:tx", "phx_join", {"config": {"postgres_changes": [{"event": "*", "schema": "public", "table": "todos"}]}}])).await;
    c.until("subscribed", |f| f[3] == "system" && f[2] == "realtime:tx" && f[4]["status"] == "ok").await;
    su.batch_execute(&format!(
        "BEGIN; INSERT INTO public.todos (id, owner, title) VALUES (900, '{USER_A}', 'TOPSECRET'); UPDATE public.todos SET owner = NULL, title = 'harmless' WHERE id = 900; COMMIT;"
    ))
    .await
    .unwrap();
    let ch = c.until("the visible version", |f| f[3] == "postgres_changes").await;
    assert_eq!((ch[4]["data"]["type"].as_str(), ch[4]["data"]["record"]["title"].as_str()), (Some("UPDATE"), Some("harmless")), "{ch}");
    c.send(json!([null, "5", "phoenix", "heartbeat", {}])).await;
    assert_eq!(c.until("heartbeat", |f| f[1] == "5").await[4]["status"], "ok");
    assert!(!c.seen.iter().any(|f| f.to_string().contains("TOPSECRET")), "{:?}", c.seen);
    // A table outside supabase_realtime: joined, with the system error Supabase sends.
    c.send(json!(["6", "6", "realtime:y", "phx_join", {"config": {"postgres_changes": [{"event": "*", "schema": "public", "table": "nope"}]}}])).await;
    assert_eq!(c.until("join", |f| f[1] == "6").await[4]["status"], "ok");
    let sys = c.until("system error", |f| f[3] == "system").await;
    assert_eq!(sys[4]["status"], "error");
    assert!(sys[4]["message"].as_str().unwrap().contains("Unable to subscribe"), "{sys}");
}

/// The real supabase-js client outlives a gateway restart: realtime-js reconnects by
/// itself to the same address, rejoins, and receives the changes made after.
#[tokio::test]
async fn supabase_js_reconnects_after_a_gateway_restart() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let (tc, su) = cluster().await;
    let secret = Secret::new(JWT_SECRET);
    let anon = keys::mint(Role::Anon, &secret).unwrap();
    let service = keys::mint(Role::ServiceRole, &secret).unwrap();
    let listen = format!("127.0.0.1:{}", pgstack_gateway::dev::cluster::free_port(None).unwrap());
    let env = [("LISTEN_ADDR", listen.as_str())];
    let mut gw = Gateway::serve(&tc, &env).await.unwrap();
    let js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js");
    let mut node = tokio::process::Command::new("node")
        .arg("realtime_restart.mjs")
        .current_dir(&js)
        .env("PGSTACK_URL", &gw.base)
        .env("ANON_KEY", &anon)
        .env("SERVICE_ROLE_KEY", &service)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = node.stdin.take().unwrap();
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut next = async || tokio::time::timeout(std::time::Duration::from_secs(60), lines.next_line()).await.expect("node said nothing").unwrap().unwrap_or_default();
    assert_eq!(next().await, "SUBSCRIBED");
    gw.terminate().await.unwrap();
    let _gw = Gateway::serve(&tc, &env).await.unwrap();
    stdin.write_all(b"RESTARTED\n").await.unwrap();
    assert_eq!(next().await, "REJOINED");
    su.batch_execute("INSERT INTO public.todos (title) VALUES ('after restart')").await.unwrap();
    assert_eq!(next().await, "OK");
    assert!(node.wait().await.unwrap().success());
}

/// Limits answer with Supabase's frames; vsn 1.0.0 sockets work; broadcast_changes and
/// REPLICA IDENTITY FULL behave as Supabase's.
#[tokio::test]
async fn limits_protocol_v1_broadcast_changes_and_full_identity() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (tc, su) = cluster().await;
    su.batch_execute(
        "CREATE TABLE public.plain (id int PRIMARY KEY, secret text);
         ALTER TABLE public.plain REPLICA IDENTITY FULL;
         GRANT SELECT ON public.plain TO service_role;
         ALTER PUBLICATION supabase_realtime ADD TABLE public.plain;
         INSERT INTO public.plain VALUES (1, 'old');
         CREATE FUNCTION public.plain_broadcast() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM realtime.broadcast_changes('plain-changes', TG_OP, TG_OP, TG_TABLE_NAME, TG_TABLE_SCHEMA, NEW, OLD); RETURN NULL; END $$;
         CREATE TRIGGER plain_broadcast AFTER INSERT OR UPDATE OR DELETE ON public.plain FOR EACH ROW EXECUTE FUNCTION public.plain_broadcast();
         CREATE POLICY read_plain_changes ON realtime.messages FOR SELECT TO service_role USING (realtime.topic() = 'plain-changes');",
    )
    .await
    .unwrap();
    su.batch_execute(
        "INSERT INTO realtime.messages (topic, extension, event, payload, private, inserted_at)
         VALUES ('old', 'broadcast', 'e', '{}', false, now() - interval '4 days'), ('recent', 'broadcast', 'e', '{}', false, now() - interval '1 day')",
    )
    .await
    .unwrap();
    let service = keys::mint(Role::ServiceRole, &Secret::new(JWT_SECRET)).unwrap();
    let env = [("REALTIME_MAX_CHANNELS", "2"), ("REALTIME_MAX_EVENTS_PER_SECOND", "3")];
    let gw = Gateway::serve(&tc, &env).await.unwrap();
    // Messages older than REALTIME_MESSAGES_RETENTION (3 days) are pruned at start.
    let mut left = Vec::new();
    for _ in 0..50 {
        left = su.query("SELECT topic FROM realtime.messages ORDER BY topic", &[]).await.unwrap().iter().map(|r| r.get::<_, String>(0)).collect();
        if left == ["recent"] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(left, ["recent"]);

    // Channels per socket.
    let mut c = Phx::connect(&gw.base, &service).await;
    c.join("one", "a").await;
    c.send(json!(["2", "2", "realtime:two", "phx_join", {}])).await;
    assert_eq!(c.until("second join", |f| f[1] == "2").await[4]["status"], "ok");
    c.send(json!(["3", "3", "realtime:three", "phx_join", {}])).await;
    assert_eq!(c.until("third join", |f| f[1] == "3").await[4]["response"]["reason"], "ChannelRateLimitReached: Too many channels");
    // Events per second: past the limit the channel gets a system error and phx_close.
    for i in 0..5 {
        c.send(json!(["2", format!("b{i}"), "realtime:two", "broadcast", {"type": "broadcast", "event": "e", "payload": {}}])).await;
    }
    let sys = c.until("rate limit", |f| f[3] == "system" && f[2] == "realtime:two").await;
    assert_eq!(sys[4]["message"], "Too many messages per second");
    c.until("phx_close", |f| f[3] == "phx_close" && f[2] == "realtime:two").await;

    // REPLICA IDENTITY FULL without RLS: the whole old row, as Supabase.
    let mut d = Phx::connect(&gw.base, &service).await;
    d.send(json!(["1", "1", "realtime:p", "phx_join", {"config": {"postgres_changes": [{"event": "*", "schema": "public", "table": "plain"}]}}])).await;
    d.until("subscribed", |f| f[3] == "system" && f[4]["status"] == "ok").await;
    su.batch_execute("UPDATE public.plain SET secret = 'new' WHERE id = 1").await.unwrap();
    let ch = d.until("update", |f| f[3] == "postgres_changes").await;
    assert_eq!(ch[4]["data"]["old_record"], json!({"id": 1, "secret": "old"}));
    assert_eq!(ch[4]["data"]["record"], json!({"id": 1, "secret": "new"}));
    // With RLS on, only the key, whatever the replica identity.
    su.batch_execute("ALTER TABLE public.plain ENABLE ROW LEVEL SECURITY; CREATE POLICY all_rows ON public.plain FOR SELECT USING (true); DELETE FROM public.plain WHERE id = 1")
        .await
        .unwrap();
    let del = d.until("delete", |f| f[3] == "postgres_changes" && f[4]["data"]["type"] == "DELETE").await;
    assert_eq!(del[4]["data"]["old_record"], json!({"id": 1}));

    // vsn 1.0.0 (JSON objects) and broadcast_changes on a private channel.
    let url = format!("{}/realtime/v1/websocket?apikey={service}&vsn=1.0.0", gw.base.replace("http", "ws"));
    let (mut v1, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let join = json!({"topic": "realtime:plain-changes", "event": "phx_join", "ref": "1", "join_ref": "1", "payload": {"config": {"private": true}}});
    v1.send(Message::Text(join.to_string().into())).await.unwrap();
    let mut joined = false;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout_at(deadline, v1.next()).await {
        let f: Value = serde_json::from_str(&t).unwrap();
        assert!(f.is_object(), "vsn 1.0.0 frames are objects: {f}");
        if f["event"] == "phx_reply" && f["ref"] == "1" {
            assert_eq!(f["payload"]["status"], "ok", "{f}");
            joined = true;
            su.batch_execute("INSERT INTO public.plain VALUES (2, 'x')").await.unwrap();
        }
        if f["event"] == "broadcast" {
            assert_eq!(f["payload"]["event"], "INSERT");
            assert_eq!(f["payload"]["payload"]["record"], json!({"id": 2, "secret": "x"}));
            assert_eq!(f["payload"]["payload"]["operation"], "INSERT");
            assert!(f["payload"]["meta"]["id"].is_string());
            return assert!(joined);
        }
    }
    panic!("no broadcast_changes message on the private channel");
}

/// A viewer whose RLS policy errors on its own claims gets nothing, and never keeps
/// the other subscribers from their changes.
/// A cluster with a published table whose rows each viewer sees by its `grp` claim.
async fn scores_cluster() -> (TestCluster, tokio_postgres::Client) {
    let tc = TestCluster::start().await.unwrap();
    let su = tc.superuser().await.unwrap();
    su.batch_execute(
        "CREATE TABLE public.scores (id serial PRIMARY KEY, grp int NOT NULL);
         ALTER TABLE public.scores ENABLE ROW LEVEL SECURITY;
         CREATE POLICY by_group ON public.scores FOR SELECT TO authenticated USING (grp = (auth.jwt() ->> 'grp')::int);
         GRANT SELECT ON public.scores TO authenticated;
         ALTER PUBLICATION supabase_realtime ADD TABLE public.scores;",
    )
    .await
    .unwrap();
    (tc, su)
}

#[tokio::test]
async fn a_viewer_whose_policy_errors_does_not_stop_the_others() {
    let (tc, su) = scores_cluster().await;
    let token = |grp: Value| {
        let claims = json!({"sub": USER_A, "role": "authenticated", "grp": grp, "exp": keys::now() + 3600});
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes())).unwrap()
    };
    let gw = Gateway::serve(&tc, &[]).await.unwrap();
    let join = json!(["1", "1", "realtime:s", "phx_join", {"config": {"postgres_changes": [{"event": "INSERT", "schema": "public", "table": "scores"}]}}]);
    // Several viewers whose claims make the policy fail (checked alone once they
    // failed, side by side), and one whose claims are fine.
    let mut bads = Vec::new();
    for claim in ["not a number", "x", "1.5"] {
        bads.push(Phx::connect(&gw.base, &token(json!(claim))).await);
    }
    let mut good = Phx::connect(&gw.base, &token(json!(1))).await;
    for c in bads.iter_mut().chain([&mut good]) {
        c.send(join.clone()).await;
        c.until("subscribed", |f| f[3] == "system" && f[4]["status"] == "ok").await;
    }
    for i in 0..3 {
        su.batch_execute("INSERT INTO public.scores (grp) VALUES (1)").await.unwrap();
        let ch = good.until("the good viewer's change", |f| f[3] == "postgres_changes").await;
        assert_eq!(ch[4]["data"]["record"]["id"], i + 1);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for bad in &mut bads {
        bad.send(json!([null, "hb", "phoenix", "heartbeat", {}])).await;
        bad.until("heartbeat", |f| f[1] == "hb").await;
        assert!(!bad.seen.iter().any(|f| f[3] == "postgres_changes"), "{:?}", bad.seen);
    }
}

/// Many viewers (their checks split over pipelines side by side): each receives
/// exactly the rows its own claims let it see, whichever pipeline checked it.
#[tokio::test]
async fn many_viewers_each_see_only_their_rows() {
    let (tc, su) = scores_cluster().await;
    let gw = Gateway::serve(&tc, &[("WS_MAX_CONNECTIONS_PER_IP", "1000")]).await.unwrap();
    let join = json!(["1", "1", "realtime:s", "phx_join", {"config": {"postgres_changes": [{"event": "INSERT", "schema": "public", "table": "scores"}]}}]);
    let mut viewers = Vec::new();
    for i in 0..40 {
        let claims = json!({"sub": format!("00000000-0000-0000-0000-{i:012}"), "role": "authenticated", "grp": i % 4, "exp": keys::now() + 3600});
        let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes())).unwrap();
        let mut c = Phx::connect(&gw.base, &token).await;
        c.send(join.clone()).await;
        c.until("subscribed", |f| f[3] == "system" && f[4]["status"] == "ok").await;
        viewers.push(c);
    }
    // Rows of groups 0..4, several per batch.
    su.batch_execute("INSERT INTO public.scores (grp) SELECT g % 4 FROM generate_series(0, 11) g").await.unwrap();
    for (i, c) in viewers.iter_mut().enumerate() {
        for _ in 0..3 {
            let ch = c.until("a change of the viewer's group", |f| f[3] == "postgres_changes").await;
            assert_eq!(ch[4]["data"]["record"]["grp"], i % 4, "viewer {i}: {ch}");
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for (i, c) in viewers.iter_mut().enumerate() {
        c.send(json!([null, "hb", "phoenix", "heartbeat", {}])).await;
        c.until("heartbeat", |f| f[1] == "hb").await;
        assert!(!c.seen.iter().any(|f| f[3] == "postgres_changes"), "viewer {i} saw more: {:?}", c.seen);
    }
}

/// From an attack review: a published table in a schema the gateway's login cannot
/// use does not cost other subscribers their changes; a broadcast announced by a bare
/// NOTIFY (any database role can send one) is not delivered, while realtime.send's
/// messages are, however large; a REST broadcast's `private` is a boolean as Supabase
/// casts it ("true" goes to the private topic, anything else is refused); a socket
/// holds at most 500 postgres_changes bindings.
#[tokio::test]
async fn hostile_databases_and_inputs_do_not_leak_or_stall_changes() {
    let (tc, su) = cluster().await;
    su.batch_execute(
        "CREATE SCHEMA app; GRANT USAGE ON SCHEMA app TO anon, authenticated, service_role;
         CREATE TABLE app.items (id bigint PRIMARY KEY, v text); GRANT SELECT ON app.items TO anon, authenticated, service_role;
         ALTER PUBLICATION supabase_realtime ADD TABLE app.items;
         CREATE ROLE mallory LOGIN PASSWORD 'mallory';",
    )
    .await
    .unwrap();
    let service = keys::mint(Role::ServiceRole, &Secret::new(JWT_SECRET)).unwrap();
    let anon = keys::mint(Role::Anon, &Secret::new(JWT_SECRET)).unwrap();
    let gw = Gateway::serve(&tc, &[]).await.unwrap();
    let mut victim = Phx::connect(&gw.base, &service).await;
    victim.join("room", "v").await;
    let mut other = Phx::connect(&gw.base, &anon).await;
    other.send(json!(["1", "1", "realtime:app", "phx_join", {"config": {"postgres_changes": [{"event": "*", "schema": "app", "table": "items"}]}}])).await;
    other.until("app join", |f| f[3] == "phx_reply" && f[1] == "1").await;
    // One transaction touching both tables: the victim still gets its change.
    su.batch_execute("BEGIN; INSERT INTO public.todos (title) VALUES ('mixed batch'); INSERT INTO app.items VALUES (1, 'x'); COMMIT;").await.unwrap();
    let f = victim.until("todos change", |f| f[3] == "postgres_changes").await;
    assert_eq!(f[4]["data"]["record"]["title"], "mixed batch", "{f}");
    other.until("app change", |f| f[3] == "postgres_changes").await;

    // A forged announcement (a NOTIFY by a role with no grants) is not delivered; a
    // real realtime.send of 9 000 bytes is.
    victim.send(json!(["2", "2", "realtime:bus", "phx_join", {"config": {"private": false}}])).await;
    victim.until("bus join", |f| f[3] == "phx_reply" && f[1] == "2").await;
    let mut cfg: tokio_postgres::Config = tc.superuser_url().parse().unwrap();
    cfg.user("mallory").password("mallory");
    let (mallory, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    mallory
        .batch_execute(
            r#"SELECT pg_notify('pgr_realtime', '{"k":"m","id":"00000000-0000-0000-0000-000000000001","topic":"bus","event":"forged","private":false,"payload":{"x":1}}')"#,
        )
        .await
        .unwrap();
    su.batch_execute("SELECT realtime.send(jsonb_build_object('pad', repeat('x', 9000)), 'big', 'bus', false)").await.unwrap();
    let f = victim.until("the large message", |f| f[3] == "broadcast" && f[2] == "realtime:bus").await;
    assert_eq!((f[4]["event"].as_str(), f[4]["payload"]["pad"].as_str().map(str::len)), (Some("big"), Some(9000)), "{f}");
    assert!(!victim.seen.iter().any(|f| f[4]["event"] == "forged"), "{:?}", victim.seen);
    // Announcing a real message's id again does not deliver it again.
    let id = f[4]["meta"]["id"].as_str().unwrap_or_else(|| panic!("{f}")).to_owned();
    mallory.batch_execute(&format!(r#"SELECT pg_notify('pgr_realtime', '{{"k":"m","id":"{id}"}}')"#)).await.unwrap();
    su.batch_execute("SELECT realtime.send('{}'::jsonb, 'after', 'bus', false)").await.unwrap();
    victim.until("the next message", |f| f[3] == "broadcast" && f[4]["event"] == "after").await;
    assert!(!victim.seen.iter().any(|f| f[4]["event"] == "big"), "a replayed id was delivered again: {:?}", victim.seen);

    // REST broadcast: "true" is private (the public topic of that name hears nothing),
    // a value that is not a boolean is refused.
    let http = reqwest::Client::new();
    let send = |private: Value| {
        http.post(format!("{}/realtime/v1/api/broadcast", gw.base))
            .bearer_auth(&service)
            .header("apikey", &service)
            .json(&json!({"messages": [{"topic": "bus", "event": "rest", "payload": {}, "private": private}]}))
            .send()
    };
    assert_eq!(send(json!("maybe")).await.unwrap().status(), reqwest::StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(send(json!("true")).await.unwrap().status(), reqwest::StatusCode::ACCEPTED);
    assert_eq!(send(json!(false)).await.unwrap().status(), reqwest::StatusCode::ACCEPTED);
    let f = victim.until("the public REST broadcast", |f| f[3] == "broadcast" && f[4]["event"] == "rest").await;
    assert_eq!(f[2], "realtime:bus");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!victim.seen.iter().any(|f| f[4]["event"] == "rest"), "the private one reached the public topic: {:?}", victim.seen);

    // An `in` filter of 100 values is accepted (as Supabase).
    let values: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    other.send(json!(["9", "9", "realtime:in100", "phx_join", {"config": {"postgres_changes": [{"event": "*", "schema": "public", "table": "todos", "filter": format!("id=in.({})", values.join(","))}]}}])).await;
    let r = other.until("in-100 join", |f| f[3] == "phx_reply" && f[1] == "9").await;
    assert_eq!(r[4]["status"], "ok", "{r}");
    // At most 500 postgres_changes bindings per socket.
    let mut greedy = Phx::connect(&gw.base, &anon).await;
    let hundred: Vec<Value> = (0..100).map(|i| json!({"event": "*", "schema": "public", "table": "todos", "filter": format!("id=eq.{i}")})).collect();
    for n in 1..=6 {
        let r#ref = n.to_string();
        greedy.send(json!([r#ref, r#ref, format!("realtime:g{n}"), "phx_join", {"config": {"postgres_changes": hundred}}])).await;
        let r = greedy.until("greedy join", |f| f[3] == "phx_reply" && f[1] == r#ref.as_str()).await;
        if n <= 5 {
            assert_eq!(r[4]["status"], "ok", "{r}");
        } else {
            assert_eq!(r[4]["status"], "error", "{r}");
            assert!(r[4]["response"]["reason"].as_str().unwrap().contains("at most 500"), "{r}");
        }
    }
    // And at most 10 000 per client address over all its sockets (held already: the
    // greedy socket's 500 and the subscribers' 3): given back when a socket closes.
    let mut sockets = vec![greedy];
    let mut refused = None;
    'fill: for s in 1..=20 {
        let mut c = Phx::connect(&gw.base, &anon).await;
        for n in 1..=5 {
            let r#ref = format!("{s}-{n}");
            c.send(json!([r#ref, r#ref, format!("realtime:s{s}c{n}"), "phx_join", {"config": {"postgres_changes": hundred}}])).await;
            let r = c.until("budget join", |f| f[3] == "phx_reply" && f[1] == r#ref.as_str()).await;
            if r[4]["status"] != "ok" {
                refused = Some((s, n, r));
                sockets.push(c);
                break 'fill;
            }
        }
        sockets.push(c);
    }
    let (s, n, r) = refused.expect("the address budget refused a join");
    // 503 + 94 joins of 100 = 9 903 fit; the 95th (socket 19, join 5) does not.
    assert_eq!((s, n), (19, 5), "{r}");
    assert!(r[4]["response"]["reason"].as_str().unwrap().contains("per client address"), "{r}");
    drop(sockets.remove(1));
    let last = sockets.last_mut().unwrap();
    for _ in 0..50 {
        last.send(json!(["again", "again", "realtime:again", "phx_join", {"config": {"postgres_changes": hundred}}])).await;
        let r = last.until("join after a close", |f| f[3] == "phx_reply" && f[1] == "again").await;
        if r[4]["status"] == "ok" {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("a closed socket's bindings were not given back");
}
