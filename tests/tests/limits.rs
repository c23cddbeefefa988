//! Issue 20: resource limits against the real gateway — connection caps and header
//! deadlines on raw sockets, DB_MAX_ROWS, RESPONSE_MAX_BYTES, REQUEST_TIMEOUT, the
//! request roles' statement timeouts, and abandoned requests whose statements are
//! cancelled without the gateway ever holding more backends than its pools.

use std::time::{Duration, Instant};

use pgstack_gateway::config::Secret;
use pgstack_gateway::keys;
use pgstack_shared::Role;
use pgstack_tests::{Gateway, TestCluster, JWT_SECRET};
use reqwest::{Client, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FIXTURE: &str = r#"
CREATE TABLE public.rows (id int PRIMARY KEY, pad text);
INSERT INTO public.rows SELECT g, repeat('x', 200) FROM generate_series(1, 40) g;
GRANT SELECT ON public.rows TO anon, authenticated, service_role;
CREATE FUNCTION public.slow(s float8) RETURNS int LANGUAGE sql AS 'SELECT 1 FROM pg_sleep(s)';
GRANT EXECUTE ON FUNCTION public.slow(float8) TO anon, authenticated, service_role;
"#;

struct L {
    http: Client,
    gw: Gateway,
    anon: String,
    service: String,
    tc: TestCluster,
}

impl L {
    async fn start(extra: &[(&str, &str)]) -> L {
        let tc = TestCluster::start().await.unwrap();
        tc.superuser().await.unwrap().batch_execute(FIXTURE).await.unwrap();
        let s = Secret::new(JWT_SECRET);
        let anon = keys::mint(Role::Anon, &s).unwrap();
        let service = keys::mint(Role::ServiceRole, &s).unwrap();
        let mut env: Vec<(&str, &str)> = vec![("ANON_KEY", &anon), ("SERVICE_ROLE_KEY", &service)];
        env.extend_from_slice(extra);
        let gw = Gateway::serve(&tc, &env).await.unwrap();
        L { http: Client::new(), gw, anon, service, tc }
    }

    async fn get(&self, path: &str, key: &str) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let res = self.http.get(self.gw.url(path)).header("apikey", &self.anon).bearer_auth(key).send().await.unwrap();
        let (st, h) = (res.status(), res.headers().clone());
        let t = res.text().await.unwrap();
        (st, h, serde_json::from_str(&t).unwrap_or(Value::String(t)))
    }

    /// Connections the gateway's login role holds (client backends: a parallel
    /// query's workers are not connections), and those running `slow`.
    async fn backends(&self) -> (i64, i64) {
        let su = self.tc.superuser().await.unwrap();
        let r = su
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE state = 'active' AND query ILIKE '%slow%')
                   FROM pg_stat_activity WHERE usename = 'authenticator' AND backend_type = 'client backend'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    }

    fn port(&self) -> u16 {
        self.gw.base.rsplit(':').next().unwrap().parse().unwrap()
    }
}

/// A client bound to another loopback address (its own per-IP budget).
fn client_from(ip: &str) -> Client {
    Client::builder().local_address(ip.parse::<std::net::IpAddr>().unwrap()).build().unwrap()
}

#[tokio::test]
async fn half_sent_requests_are_closed_at_the_header_deadline() {
    let l = L::start(&[("HTTP_HEADER_READ_TIMEOUT", "1")]).await;
    let mut s = TcpStream::connect(("127.0.0.1", l.port())).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the half-sent request was still open after 5 s");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    // An idle kept-alive connection is closed after the same deadline.
    let mut s = TcpStream::connect(("127.0.0.1", l.port())).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut first = [0u8; 12];
    s.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "an idle keep-alive connection stayed open");
}

#[tokio::test]
async fn connections_over_the_caps_get_a_503_and_others_go_on() {
    let l = L::start(&[("HTTP_MAX_CONNECTIONS_PER_IP", "5"), ("HTTP_MAX_CONNECTIONS", "8")]).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(TcpStream::connect(("127.0.0.1", l.port())).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut s = TcpStream::connect(("127.0.0.1", l.port())).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.to_ascii_lowercase().contains("retry-after: 1"), "{text}");
    let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert!(body["error"].is_string());
    // Another address is not affected by this one's cap...
    let other = client_from("127.0.0.2");
    let res = other.get(l.gw.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    drop(res);
    // ...until the total cap is reached.
    for ip in ["127.0.0.3", "127.0.0.3", "127.0.0.4"] {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        held.push(sock.connect(format!("127.0.0.1:{}", l.port()).parse().unwrap()).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let res = client_from("127.0.0.5").get(l.gw.url("/health")).send().await;
    match res {
        Ok(r) => assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE),
        Err(e) => panic!("the refusal must be an HTTP answer: {e:?}"),
    }
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = l.http.get(l.gw.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "capacity comes back when connections close");
}

#[tokio::test]
async fn reads_are_capped_by_rows_and_bytes() {
    let l = L::start(&[("DB_MAX_ROWS", "7"), ("RESPONSE_MAX_BYTES", "4096")]).await;
    let (st, _, v) = l.get("/rest/v1/rows?select=id&order=id", &l.anon).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 7, "DB_MAX_ROWS caps an unlimited read");
    let (_, _, v) = l.get("/rest/v1/rows?select=id&order=id&limit=3", &l.anon).await;
    assert_eq!(v.as_array().unwrap().len(), 3, "a smaller limit still applies");
    let (_, _, v) = l.get("/rest/v1/rows?select=id&order=id&limit=100", &l.service).await;
    assert_eq!(v.as_array().unwrap().len(), 7, "a larger limit is capped, for every role");
    // 7 rows of 200 bytes fit in 4 KiB; the padded select does not.
    let (st, _, v) = l.get("/rest/v1/rows?select=id,pad,p2:pad,p3:pad&order=id", &l.anon).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["code"], "PGRST413");
    assert!(v["error"].is_string());
    // Many small rows count with what holding them costs, and a batch's read (a
    // transaction, not the pipeline) is bounded the same way.
    let res = l
        .http
        .post(l.gw.url("/rest/v1/batch"))
        .header("apikey", &l.anon)
        .bearer_auth(&l.service)
        .json(&serde_json::json!({"atomic": true, "operations": [{"id": "r", "method": "GET", "path": "/rest/v1/rows?select=id,pad,p2:pad,p3:pad&order=id"}]}))
        .send()
        .await
        .unwrap();
    let (st, v) = (res.status(), res.json::<serde_json::Value>().await.unwrap());
    assert!(st.is_client_error() && v.to_string().contains("RESPONSE_MAX_BYTES"), "{st} {v}");
    // A column aliased like the gateway's own row alias is just a column.
    let (st, _, v) = l.get("/rest/v1/rows?select=_pgs_t:id&id=eq.1", &l.anon).await;
    assert_eq!((st, v), (StatusCode::OK, serde_json::json!([{"_pgs_t": 1}])));
    // The connection that saw the oversized result is not reused out of step.
    for _ in 0..10 {
        let (st, _, v) = l.get("/rest/v1/rows?select=id&id=eq.1", &l.anon).await;
        assert_eq!((st, v), (StatusCode::OK, serde_json::json!([{"id": 1}])));
    }
}

#[tokio::test]
async fn slow_statements_end_with_their_request() {
    let l = L::start(&[("REQUEST_TIMEOUT", "2"), ("DB_POOL_SIZE", "4")]).await;
    // anon's statement timeout (3 s, set by the extension) ends a slow anon query.
    let t = Instant::now();
    let (st, _, v) = l.get("/rest/v1/rpc/slow?s=20", &l.anon).await;
    assert!(st == StatusCode::GATEWAY_TIMEOUT, "{st} {v}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // service_role has no statement timeout: REQUEST_TIMEOUT ends it, and cancels it.
    let t = Instant::now();
    let (st, h, v) = l.get("/rest/v1/rpc/slow?s=30", &l.service).await;
    assert_eq!(st, StatusCode::GATEWAY_TIMEOUT, "{v}");
    assert!(v["error"].is_string() && h.contains_key("retry-after"), "{v}");
    // In PostgREST's shape, as every /rest/v1 error (the timeout layer sits inside the
    // nested router, which sees only `/rpc/slow`).
    assert!(v.get("details").is_some() && v.get("hint").is_some() && v["code"].is_string(), "{v}");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    let ok = pgstack_tests::eventually(Duration::from_secs(3), || async { l.backends().await.1 == 0 }).await;
    assert!(ok, "the timed-out statement still runs: {:?}", l.backends().await);
}

#[tokio::test]
async fn abandoned_requests_are_cancelled_and_backends_stay_within_the_pools() {
    let l = L::start(&[("DB_POOL_SIZE", "4")]).await;
    let url = l.gw.url("/rest/v1/rpc/slow?s=30");
    // 40 clients each send a slow request and go away after 300 ms.
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (http, url, anon, service) = (Client::new(), url.clone(), l.anon.clone(), l.service.clone());
        tasks.push(tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_millis(300), http.get(url).header("apikey", anon).bearer_auth(service).send()).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Three pools of 4 and the LISTEN connection, at most — at every moment.
    let mut worst = 0;
    for _ in 0..20 {
        worst = worst.max(l.backends().await.0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(worst <= 13, "the gateway held {worst} backends");
    let ok = pgstack_tests::eventually(Duration::from_secs(5), || async { l.backends().await.1 == 0 }).await;
    assert!(ok, "abandoned statements still run: {:?}", l.backends().await);
    // The pool serves again at once.
    let t = Instant::now();
    let (st, _, _) = l.get("/rest/v1/rows?select=id&id=eq.1", &l.anon).await;
    assert_eq!(st, StatusCode::OK);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let res = l.http.get(l.gw.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn one_client_with_many_slow_requests_does_not_starve_the_others() {
    // Pool of 4. One address keeps 24 anon requests of 2 s in flight (6 pool-fulls,
    // 12 s of work: first come, first served, everyone behind it would wait out the
    // pool's 5 s and get a 503). Another address's read goes to the next free
    // connection instead: within one slow request's time.
    let l = L::start(&[("DB_POOL_SIZE", "4")]).await;
    let greedy = client_from("127.0.0.31");
    let url = l.gw.url("/rest/v1/rpc/slow?s=2");
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let (http, url, anon) = (greedy.clone(), url.clone(), l.anon.clone());
        tasks.push(tokio::spawn(async move {
            let res = http.get(url).header("apikey", &anon).bearer_auth(&anon).send().await?;
            let (st, retry) = (res.status(), res.headers().contains_key("retry-after"));
            let v: Value = res.json().await.unwrap_or(Value::Null);
            Ok::<_, reqwest::Error>((st, retry, v))
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let other = client_from("127.0.0.32");
    for _ in 0..3 {
        let t = Instant::now();
        let res = other.get(l.gw.url("/rest/v1/rows?select=id&id=eq.1")).header("apikey", &l.anon).bearer_auth(&l.anon).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap());
        assert!(t.elapsed() < Duration::from_millis(2600), "the other client waited {:?}", t.elapsed());
    }
    // The greedy client's own requests are served or refused in the contract's shape,
    // none lost: every one has an answer.
    let mut ok = 0;
    for t in tasks {
        let (st, retry, v) = t.await.unwrap().unwrap();
        assert!(st == StatusCode::OK || st == StatusCode::SERVICE_UNAVAILABLE, "{st}");
        if st == StatusCode::SERVICE_UNAVAILABLE {
            // PostgREST's code for a pool that stayed busy, with a time to retry.
            assert!(retry && v["code"] == "PGRST003" && v.get("details").is_some(), "{v}");
        }
        ok += (st == StatusCode::OK) as usize;
    }
    assert!(ok >= 6, "the greedy client still gets its share: {ok} of 24 served");
}

#[tokio::test]
async fn a_batch_gets_no_more_time_than_one_statement() {
    // anon's statement_timeout is 3 s: a batch of ten 1 s calls (10 s of work) ends at
    // 3 s with PostgREST's timeout error, and its statement is cancelled.
    let l = L::start(&[("DB_POOL_SIZE", "4")]).await;
    let ops: Vec<Value> = (0..10).map(|i| serde_json::json!({"id": format!("s{i}"), "method": "POST", "path": "/rpc/slow", "body": {"s": 1.0}})).collect();
    let t = Instant::now();
    let res = l.http.post(l.gw.url("/rest/v1/batch")).header("apikey", &l.anon).bearer_auth(&l.anon).json(&serde_json::json!({"operations": ops})).send().await.unwrap();
    let st = res.status();
    let v: Value = res.json().await.unwrap();
    assert_eq!(st, StatusCode::GATEWAY_TIMEOUT, "{v}");
    assert_eq!(v["code"], "57014", "{v}");
    assert!(v.get("details").is_some() && v.get("hint").is_some(), "{v}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let ok = pgstack_tests::eventually(Duration::from_secs(3), || async { l.backends().await.1 == 0 }).await;
    assert!(ok, "the batch's statement still runs: {:?}", l.backends().await);
    // A batch within the bound still works.
    let ops: Vec<Value> = (0..3).map(|i| serde_json::json!({"id": format!("q{i}"), "method": "POST", "path": "/rpc/slow", "body": {"s": 0.1}})).collect();
    let res = l.http.post(l.gw.url("/rest/v1/batch")).header("apikey", &l.anon).bearer_auth(&l.anon).json(&serde_json::json!({"operations": ops})).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap());
}

#[tokio::test]
async fn unknown_rest_paths_answer_in_postgrest_shape() {
    let l = L::start(&[]).await;
    for path in ["/rest/v1/webhooks/", "/rest/v1/rows/extra/"] {
        let (st, _, v) = l.get(path, &l.anon).await;
        assert!(st == StatusCode::NOT_FOUND || st.is_client_error(), "{path}: {st} {v}");
        assert!(v["code"].is_string() && v.get("details").is_some() && v.get("hint").is_some() && v["message"].is_string(), "{path}: {v}");
    }
}

/// A write's body is held up to three times over while it runs (the rows' JSON, the
/// statement's parameter, the message to Postgres), and the receive budget counts
/// that: many large writes at once are answered 201 or 503 (Retry-After) and the
/// gateway's memory stays bounded (before, a received KiB held one KiB of the budget
/// and 300 such bodies took it to ~1 GB).
#[tokio::test]
async fn many_large_writes_at_once_stay_within_the_body_budget() {
    let l = L::start(&[]).await;
    l.tc.superuser()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE public.big (id serial PRIMARY KEY, kind text, payload jsonb); GRANT ALL ON public.big TO service_role; GRANT USAGE ON SEQUENCE public.big_id_seq TO service_role;")
        .await
        .unwrap();
    let row = serde_json::json!({"kind": "x".repeat(200), "payload": {"a": "y".repeat(100)}});
    // Leaked once: every request sends the same bytes without a copy.
    let body: &'static [u8] = Box::leak(serde_json::to_vec(&vec![row; 5800]).unwrap().into_boxed_slice());
    assert!(body.len() > 1_900_000 && body.len() < 2_000_000);
    let mut tasks = Vec::new();
    for i in 0..120 {
        let http = client_from(&format!("127.0.0.{}", 2 + i % 6));
        let (url, key) = (l.gw.url("/rest/v1/big"), l.service.clone());
        tasks.push(tokio::spawn(async move {
            let res = http.post(url).header("apikey", &key).header("content-type", "application/json").body(body).send().await.unwrap();
            (res.status(), res.headers().contains_key("retry-after"))
        }));
    }
    let (mut created, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            (StatusCode::CREATED, _) => created += 1,
            (StatusCode::SERVICE_UNAVAILABLE, true) => refused += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(created > 0, "{created} created, {refused} refused");
    let status = std::fs::read_to_string(format!("/proc/{}/status", l.gw.pid().unwrap())).unwrap();
    let peak_kb: u64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches(" kB").trim().parse().unwrap();
    assert!(peak_kb < 500 * 1024, "peak RSS {peak_kb} kB with {created} created, {refused} refused");
    // The budget is back: one more goes through.
    let res = l.http.post(l.gw.url("/rest/v1/big")).header("apikey", &l.service).header("content-type", "application/json").body(body).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);

    // The budget counts bytes, not chunks: a 120 kB body in 1-byte chunks goes
    // through (at a KiB or more per chunk it alone outweighed the whole budget).
    let json = format!(r#"{{"kind": "{}"}}"#, "c".repeat(120_000));
    let mut wire =
        format!("POST /rest/v1/big HTTP/1.1\r\nHost: x\r\napikey: {}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n", l.service)
            .into_bytes();
    for b in json.bytes() {
        wire.extend_from_slice(b"1\r\n");
        wire.push(b);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    let mut sock = TcpStream::connect(("127.0.0.1", l.port())).await.unwrap();
    sock.write_all(&wire).await.unwrap();
    let mut answer = Vec::new();
    sock.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{}", &answer[..answer.len().min(300)]);
}
