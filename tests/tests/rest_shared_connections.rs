//! Issue 16 (speed): REST pipelines share a few connections (db/pipeline/mux.rs) —
//! each request keeps its own transaction and its own answer, a slow statement does
//! not hold up the reads sent after it, a request that fails before its statement
//! was parsed does not break the requests that reuse that statement, and a request
//! that goes away has its statement cancelled. Real cluster, real gateway.

use std::time::{Duration, Instant};

use pgstack_gateway::config::Secret;
use pgstack_gateway::keys;
use pgstack_shared::Role;
use pgstack_tests::{Gateway, TestCluster, JWT_SECRET};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const FIXTURE: &str = r#"
CREATE TABLE public.things (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO public.things SELECT g, 'thing ' || g FROM generate_series(1, 500) g;
GRANT SELECT, INSERT ON public.things TO anon, service_role;
CREATE FUNCTION public.slow(s float8) RETURNS int LANGUAGE sql AS 'SELECT 1 FROM pg_sleep(s)';
GRANT EXECUTE ON FUNCTION public.slow(float8) TO anon, service_role;
-- The pre-request function refuses requests that carry `x-refuse: yes`: their
-- pipeline fails before its statement is parsed.
CREATE FUNCTION public.gate() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('request.headers', true)::json->>'x-refuse' = 'yes' THEN
    RAISE EXCEPTION 'refused by the gate' USING ERRCODE = 'P0001';
  END IF;
END $$;
GRANT EXECUTE ON FUNCTION public.gate() TO anon, service_role;
"#;

struct S {
    http: Client,
    gw: Gateway,
    anon: String,
    service: String,
    tc: TestCluster,
}

impl S {
    async fn start() -> S {
        let tc = TestCluster::start().await.unwrap();
        tc.superuser().await.unwrap().batch_execute(FIXTURE).await.unwrap();
        let s = Secret::new(JWT_SECRET);
        let anon = keys::mint(Role::Anon, &s).unwrap();
        let service = keys::mint(Role::ServiceRole, &s).unwrap();
        let gw = Gateway::serve(&tc, &[("ANON_KEY", &anon), ("SERVICE_ROLE_KEY", &service), ("DB_PRE_REQUEST", "public.gate")]).await.unwrap();
        S { http: Client::new(), gw, anon, service, tc }
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        get(&self.http, &self.gw.url(path), &self.anon, false).await
    }
}

async fn get(http: &Client, url: &str, key: &str, refuse: bool) -> (StatusCode, Value) {
    let mut req = http.get(url).header("apikey", key).bearer_auth(key);
    if refuse {
        req = req.header("x-refuse", "yes");
    }
    let res = req.send().await.unwrap();
    let st = res.status();
    let t = res.text().await.unwrap();
    (st, serde_json::from_str(&t).unwrap_or(Value::String(t)))
}

#[tokio::test]
async fn concurrent_requests_keep_their_own_transaction_and_answer() {
    let s = S::start().await;
    // Reads by key, inserts (every third one a duplicate key: its own 409, rolled back
    // alone) and refused requests, all at once.
    let mut tasks = Vec::new();
    for i in 0..240 {
        let (http, base, anon) = (s.http.clone(), s.gw.url("/rest/v1/things"), s.anon.clone());
        tasks.push(tokio::spawn(async move {
            match i % 4 {
                0 | 1 => {
                    let id = 1 + (i * 7) % 500;
                    let (st, v) = get(&http, &format!("{base}?id=eq.{id}&select=id,name"), &anon, i % 8 == 1).await;
                    if i % 8 == 1 {
                        assert_eq!((st, v["message"].as_str()), (StatusCode::BAD_REQUEST, Some("refused by the gate")), "{v}");
                    } else {
                        assert_eq!((st, v), (StatusCode::OK, json!([{"id": id, "name": format!("thing {id}")}])));
                    }
                    0
                }
                _ => {
                    let id = if i % 3 == 0 { 1 + i % 500 } else { 1000 + i };
                    let res = http
                        .post(&base)
                        .header("apikey", &anon)
                        .bearer_auth(&anon)
                        .header("Prefer", "return=representation")
                        .json(&json!({"id": id, "name": format!("new {i}")}))
                        .send()
                        .await
                        .unwrap();
                    let st = res.status();
                    let v: Value = res.json().await.unwrap();
                    if id < 1000 {
                        assert_eq!(st, StatusCode::CONFLICT, "{v}");
                        assert!(v["details"].as_str().unwrap_or_default().contains(&format!("(id)=({id})")), "{id}: {v}");
                        0
                    } else {
                        assert_eq!((st, v), (StatusCode::CREATED, json!([{"id": id, "name": format!("new {i}")}])));
                        1
                    }
                }
            }
        }));
    }
    let mut created = 0;
    for t in tasks {
        created += t.await.unwrap();
    }
    let su = s.tc.superuser().await.unwrap();
    let n: i64 = su.query_one("SELECT count(*) FROM public.things WHERE id >= 1000", &[]).await.unwrap().get(0);
    assert_eq!(n, created as i64);
}

#[tokio::test]
async fn a_statement_whose_parse_did_not_run_is_parsed_again() {
    let s = S::start().await;
    // Each round a statement no one sent before (a new alias), run once (on a
    // connection of its own, as every new shape), then sent together: one request
    // refused by the pre-request function (its pipeline ends before the statement's
    // Parse on the shared connection) and others reusing the statement.
    for round in 0..30 {
        let url = s.gw.url(&format!("/rest/v1/things?id=eq.{}&select=r{round}:name", round + 1));
        assert_eq!(get(&s.http, &url, &s.anon, false).await.0, StatusCode::OK);
        let mut tasks = Vec::new();
        for k in 0..4 {
            let (http, url, anon) = (s.http.clone(), url.clone(), s.anon.clone());
            tasks.push(tokio::spawn(async move { (k, get(&http, &url, &anon, k == 0).await) }));
        }
        for t in tasks {
            let (k, (st, v)) = t.await.unwrap();
            if k == 0 {
                assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
            } else {
                assert_eq!((st, &v), (StatusCode::OK, &json!([{format!("r{round}"): format!("thing {}", round + 1)}])), "round {round}");
            }
        }
    }
}

#[tokio::test]
async fn a_slow_statement_does_not_hold_up_the_reads_after_it() {
    let s = S::start().await;
    let mut slow = Vec::new();
    for _ in 0..3 {
        let (http, url, anon) = (s.http.clone(), s.gw.url("/rest/v1/rpc/slow?s=2"), s.anon.clone());
        slow.push(tokio::spawn(async move { get(&http, &url, &anon, false).await }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in 1..=20 {
        let t = Instant::now();
        let (st, v) = s.get(&format!("/rest/v1/things?id=eq.{id}&select=id")).await;
        assert_eq!((st, v), (StatusCode::OK, json!([{"id": id}])));
        assert!(t.elapsed() < Duration::from_millis(1500), "a read waited {:?} behind the slow statements", t.elapsed());
    }
    for t in slow {
        assert_eq!(t.await.unwrap(), (StatusCode::OK, json!(1)));
    }
}

#[tokio::test]
async fn a_request_that_goes_away_has_its_statement_cancelled_and_the_next_ones_run() {
    let s = S::start().await;
    // service_role has no statement timeout: only the cancel ends these.
    for _ in 0..3 {
        let _ = tokio::time::timeout(Duration::from_millis(300), s.http.get(s.gw.url("/rest/v1/rpc/slow?s=30")).header("apikey", &s.anon).bearer_auth(&s.service).send()).await;
    }
    let su = s.tc.superuser().await.unwrap();
    let running = || async {
        let r = su.query_one("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query ILIKE '%slow%' AND usename = 'authenticator'", &[]).await.unwrap();
        r.get::<_, i64>(0)
    };
    let ok = pgstack_tests::eventually(Duration::from_secs(5), || async { running().await == 0 }).await;
    assert!(ok, "abandoned statements still run: {}", running().await);
    // Every connection answers again, each request with its own rows.
    for id in [1, 250, 500] {
        assert_eq!(s.get(&format!("/rest/v1/things?id=eq.{id}&select=id")).await, (StatusCode::OK, json!([{"id": id}])));
    }
}

#[tokio::test]
async fn reads_queued_behind_one_that_turns_out_slow_are_sent_elsewhere() {
    let s = S::start().await;
    // One shape, fast with one argument and slow with another: once seen fast it
    // shares a connection, and the reads sent just after a slow one queue behind it.
    let call = |secs: &str| s.gw.url(&format!("/rest/v1/rpc/slow?s={secs}"));
    for _ in 0..3 {
        assert_eq!(get(&s.http, &call("0"), &s.anon, false).await, (StatusCode::OK, json!(1)));
    }
    // Eight clients read without pause for 2.5 s; a slow call comes in the middle.
    let until = Instant::now() + Duration::from_millis(2500);
    let mut fast = Vec::new();
    for _ in 0..8 {
        let (http, url, anon) = (s.http.clone(), call("0"), s.anon.clone());
        fast.push(tokio::spawn(async move {
            let (mut worst, mut n) = (Duration::ZERO, 0);
            while Instant::now() < until {
                let t = Instant::now();
                assert_eq!(get(&http, &url, &anon, false).await, (StatusCode::OK, json!(1)));
                worst = worst.max(t.elapsed());
                n += 1;
            }
            (worst, n)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&s.http, &call("1.5"), &s.anon, false).await, (StatusCode::OK, json!(1)));
    for f in fast {
        let (worst, n) = f.await.unwrap();
        assert!(n > 10, "{n} reads");
        assert!(worst < Duration::from_millis(1000), "a read waited {worst:?} behind the slow one");
    }
}
