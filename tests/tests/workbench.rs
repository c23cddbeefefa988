//! Issue 18: the SQL workbench APIs end to end — the real gateway, its own cluster,
//! and a second scratch cluster as the remote target (a third, TLS-only one for the
//! TLS modes). Rowsel's /proxy (query policy, paging, execute, sessions,
//! transactions, cancel), Poge's /poge/api (cache, pools, schema, error codes), who
//! may use them, and hostile SQL.

use std::time::{Duration, Instant};

use pgstack_gateway::config::Secret;
use pgstack_gateway::keys;
use pgstack_shared::Role;
use pgstack_tests::{Gateway, TestCluster, JWT_SECRET, PASSWORD};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const TARGET_FIXTURE: &str = r#"
create table items (id bigint primary key, name text not null, note text, price numeric, tags text[], doc jsonb, raw bytea, ok boolean);
insert into items select i, 'item ' || i, null, 12345678901234567890.5 + i, array['a', 'b'], jsonb_build_object('n', i), '\xdeadbeef', i % 2 = 0
  from generate_series(1, 450) i;
create table big (id int primary key, blob text);
insert into big select i, repeat(md5(i::text), 160) from generate_series(1, 2000) i; -- 5 KB a row, 10 MB
create table audit (id serial primary key, at timestamptz default now());
create function bump() returns int language sql as $$ insert into audit default values returning id $$;
create table child (id int primary key, item_id bigint references items(id));
create index items_name on items (name);
"#;

struct Env {
    gw: Gateway,
    http: Client,
    service: String,
    target: TestCluster,
    _tc: TestCluster,
}

fn service_key() -> String {
    keys::mint(Role::ServiceRole, &Secret::new(JWT_SECRET)).unwrap()
}

fn user_token(sub: &str) -> String {
    let claims = json!({"sub": sub, "role": "authenticated", "aud": "authenticated", "exp": keys::now() + 3600});
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes())).unwrap()
}

async fn start(extra: &[(&str, &str)]) -> Env {
    let tc = TestCluster::start().await.unwrap();
    let target = TestCluster::start_bare().unwrap();
    target.superuser().await.unwrap().batch_execute(TARGET_FIXTURE).await.unwrap();
    let mut env = vec![("WORKBENCH_ENABLED", "true"), ("WORKBENCH_ALLOW_PRIVATE", "true")];
    env.extend_from_slice(extra);
    let gw = Gateway::serve(&tc, &env).await.unwrap();
    Env { gw, http: Client::new(), service: service_key(), target, _tc: tc }
}

impl Env {
    fn conn(&self) -> Value {
        json!({"engine": "postgres", "host": "127.0.0.1", "port": self.target.cluster.running_port().unwrap(), "database": "postgres",
               "username": "postgres", "password": PASSWORD, "ssl_mode": "disable"})
    }

    fn poge(&self) -> Value {
        json!({"host": "127.0.0.1", "port": self.target.cluster.running_port().unwrap(), "user": "postgres", "password": PASSWORD,
               "database": "postgres", "sslMode": "disable"})
    }

    async fn call(&self, method: reqwest::Method, path: &str, key: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let mut r = self.http.request(method, self.gw.url(path));
        if let Some(k) = key {
            r = r.header("apikey", k).bearer_auth(k);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let res = r.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON ({status}): {text}")))
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(&self.service), Some(body)).await
    }

    async fn query(&self, sql: &str, extra: Value) -> (StatusCode, Value) {
        let mut b = json!({"connection": self.conn(), "sql": sql});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            b[k] = v;
        }
        self.post("/proxy/v1/query", b).await
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn rowsel_query_policy_paging_and_types() {
    let e = start(&[]).await;

    let (st, h) = e.call(reqwest::Method::GET, "/proxy/health", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{h}");
    let (st, h) = e.call(reqwest::Method::GET, "/proxy/health", Some(&e.service), None).await;
    assert_eq!((st, h["status"].as_str()), (StatusCode::OK, Some("ok")), "{h}");
    assert!(h["data"]["version"].is_string());

    let (st, t) = e.post("/proxy/v1/test-connection", json!({"connection": e.conn()})).await;
    assert_eq!(st, StatusCode::OK, "{t}");
    let (st, sc) = e.post("/proxy/v1/schema", json!({"connection": e.conn(), "schemas": ["public"]})).await;
    assert_eq!(st, StatusCode::OK, "{sc}");
    let tables = sc["data"]["schemas"][0]["tables"].as_array().unwrap();
    let items = tables.iter().find(|t| t["name"] == "items").unwrap();
    assert_eq!((items["primary_key"].clone(), items["columns"][0]["name"].as_str()), (json!(["id"]), Some("id")));
    assert_eq!(sc["data"]["schemas"].as_array().unwrap().len(), 1, "only the schemas asked for");
    assert!(t["data"]["server_version"].as_str().unwrap().starts_with("15"));

    // Types: numbers stay numbers with every digit, json is json, bytea is hex.
    let sql = "select id, name, note, price, tags, doc, raw, ok, 9007199254740993::bigint as big from items where id = $1";
    let raw = e
        .http
        .post(e.gw.url("/proxy/v1/query"))
        .bearer_auth(&e.service)
        .json(&json!({"connection": e.conn(), "sql": sql, "params": [3]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(raw.contains(r#""price":12345678901234567893.5"#), "numeric keeps its digits: {raw}");
    let (st, q) = e.query(sql, json!({"params": [3]})).await;
    assert_eq!(st, StatusCode::OK, "{q}");
    let row = &q["data"]["rows"][0];
    assert_eq!((row["id"].as_i64(), row["name"].as_str(), row["note"].is_null()), (Some(3), Some("item 3"), true));
    assert_eq!((row["tags"].clone(), row["doc"].clone(), row["raw"].as_str(), row["ok"].as_bool()), (json!(["a", "b"]), json!({"n": 3}), Some("\\xdeadbeef"), Some(false)));
    assert_eq!(row["big"].to_string(), "9007199254740993");
    let cols = q["data"]["columns"].as_array().unwrap();
    assert_eq!(cols[0], json!({"name": "id", "data_type": "INT8", "nullable": false}));
    assert_eq!(cols[2], json!({"name": "note", "data_type": "TEXT", "nullable": true}));
    assert_eq!(cols[4]["data_type"], "TEXT[]");
    assert_eq!(cols[8]["nullable"], Value::Null, "an expression's nullability is not known");
    assert_eq!(q["data"]["stats"]["read_only"], true);
    assert_eq!(q["data"]["stats"]["limit_enforced"], true);

    // Paging: 200 by default, has_next by one more row, at most 500.
    let (_, p) = e.query("select id from items order by id", json!({})).await;
    assert_eq!(p["data"]["page"], json!({"page_size": 200, "offset": 0, "returned": 200, "has_next": true}));
    let (_, p) = e.query("select id from items order by id", json!({"offset": 400, "page_size": 100})).await;
    assert_eq!(p["data"]["page"]["returned"], 50);
    assert_eq!(p["data"]["page"]["has_next"], false);
    assert_eq!(p["data"]["rows"][0]["id"], 401);
    let (st, p) = e.query("select 1", json!({"page_size": 501})).await;
    assert_eq!((st, code(&p)), (StatusCode::BAD_REQUEST, "ERR_INVALID_REQUEST"), "{p}");

    // 10 MB table: one page comes back, not the table.
    let (st, b) = e.query("select * from big", json!({})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(b["data"]["page"]["returned"], 200);
    assert!(b.to_string().len() < 1_200_000, "one page of big rows");
    // Paging the whole 10 MB table keeps the gateway's memory flat.
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", e.gw.pid().unwrap())).unwrap();
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").parse::<u64>().unwrap()
    };
    let before = rss();
    for page in 0..4 {
        let (st, b) = e.query("select * from big order by id", json!({"page_size": 500, "offset": page * 500})).await;
        assert_eq!((st, b["data"]["page"]["returned"].as_u64()), (StatusCode::OK, Some(500)));
    }
    let grown = rss().saturating_sub(before);
    assert!(grown < 40_000, "the gateway grew by {grown} kB while paging 10 MB");

    // SHOW and EXPLAIN are reads.
    let (st, s) = e.query("show server_version_num", json!({})).await;
    assert_eq!(st, StatusCode::OK, "{s}");
    assert!(s["data"]["rows"][0]["server_version_num"].as_str().unwrap().starts_with("15"));
    let (st, x) = e.query("explain (format json) select * from items", json!({})).await;
    assert_eq!(st, StatusCode::OK, "{x}");
    assert!(x["data"]["rows"][0]["QUERY PLAN"].is_array());

    // Hostile SQL: refused by the parser before it reaches the database.
    for sql in [
        "select 1; drop table items",
        "with d as (delete from items returning *) select * from d",
        "select * into stolen from items",
        "select * from items for update",
        "select * from (select * from items for share) s",
        "select 1 /* ; */ ; delete from items",
        "select $$ ; $$ ; delete from items",
        "select 1 -- \n; delete from items",
        "explain analyze delete from items",
        "insert into items (id, name) values (1000, 'x')",
        "begin",
    ] {
        let (st, r) = e.query(sql, json!({})).await;
        assert_eq!((st, code(&r)), (StatusCode::BAD_REQUEST, "ERR_READ_ONLY_QUERY_REQUIRED"), "{sql}: {r}");
        assert_eq!(r["status"], "error");
        assert_eq!(r["error"]["hint"], "Use SELECT or read-only WITH.");
    }
    // A function that writes, called from a read: the read-only transaction refuses it.
    let (st, r) = e.query("select bump()", json!({})).await;
    assert_eq!((st, code(&r), r["error"]["sqlstate"].as_str()), (StatusCode::BAD_REQUEST, "ERR_READ_ONLY_QUERY_REQUIRED", Some("25006")), "{r}");
    let su = e.target.superuser().await.unwrap();
    let n: i64 = su.query_one("select count(*) from items", &[]).await.unwrap().get(0);
    let audits: i64 = su.query_one("select count(*) from audit", &[]).await.unwrap().get(0);
    assert_eq!((n, audits), (450, 0), "nothing was changed");
    let stolen: Option<String> = su.query_one("select to_regclass('stolen')::text", &[]).await.unwrap().get(0);
    assert!(stolen.is_none());

    // Syntax errors and unknown tables are ERR_SQL_INVALID with the SQLSTATE.
    let (st, r) = e.query("selec 1", json!({})).await;
    assert_eq!((st, code(&r)), (StatusCode::BAD_REQUEST, "ERR_SQL_INVALID"), "{r}");
    let (st, r) = e.query("select * from nope", json!({})).await;
    assert_eq!((st, code(&r), r["error"]["sqlstate"].as_str()), (StatusCode::BAD_REQUEST, "ERR_SQL_INVALID", Some("42P01")), "{r}");

    // The statement timeout is enforced by the server.
    let started = Instant::now();
    let (st, r) = e.query("select pg_sleep(20)", json!({"timeout_ms": 300})).await;
    assert_eq!((st, code(&r), r["error"]["retryable"].as_bool()), (StatusCode::GATEWAY_TIMEOUT, "ERR_QUERY_TIMEOUT", Some(true)), "{r}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let (st, r) = e.query("select 1", json!({"timeout_ms": 30_001})).await;
    assert_eq!((st, code(&r)), (StatusCode::BAD_REQUEST, "ERR_INVALID_REQUEST"), "{r}");

    // Connection errors.
    let mut bad = e.conn();
    bad["password"] = json!("wrong");
    let (st, r) = e.post("/proxy/v1/query", json!({"connection": bad, "sql": "select 1"})).await;
    assert_eq!((st, code(&r), r["error"]["sqlstate"].as_str()), (StatusCode::BAD_REQUEST, "ERR_AUTH_REJECTED", Some("28P01")), "{r}");
    let mut closed = e.conn();
    closed["port"] = json!(pgstack_gateway::dev::cluster::free_port(None).unwrap());
    let (st, r) = e.post("/proxy/v1/test-connection", json!({"connection": closed})).await;
    assert_eq!((st, code(&r)), (StatusCode::BAD_GATEWAY, "ERR_DB_UNREACHABLE"), "{r}");
    let (st, r) = e.post("/proxy/v1/query", json!({"connection": e.conn(), "sql": "select 1", "extra": 1})).await;
    assert_eq!((st, code(&r)), (StatusCode::BAD_REQUEST, "ERR_INVALID_REQUEST"), "{r}");
    let (st, r) = e.call(reqwest::Method::POST, "/proxy/v1/query", Some(&e.service), None).await;
    assert_eq!((st, code(&r)), (StatusCode::BAD_REQUEST, "ERR_INVALID_REQUEST"), "{r}");
    let mut tunnel = e.conn();
    tunnel["tunnel"] = json!({"type": "ssh", "host": "127.0.0.1", "port": 22, "username": "x", "auth": {"method": "private_key", "private_key": "x"}});
    let (st, r) = e.post("/proxy/v1/query", json!({"connection": tunnel, "sql": "select 1"})).await;
    assert_eq!((st, code(&r)), (StatusCode::BAD_REQUEST, "ERR_SSH_TUNNEL_FAILED"), "{r}");
    let (st, r) = e.call(reqwest::Method::GET, "/proxy/v1/nope", Some(&e.service), None).await;
    assert_eq!((st, code(&r), r["status"].as_str()), (StatusCode::NOT_FOUND, "ERR_NOT_FOUND", Some("error")), "{r}");
}

#[tokio::test]
async fn rowsel_execute_sessions_transactions_and_cancel() {
    let e = start(&[("WORKBENCH_ROLES", "authenticated")]).await;

    let (st, r) = e.post("/proxy/v1/execute", json!({"connection": e.conn(), "sql": "delete from items where id = 1"})).await;
    assert_eq!((st, code(&r)), (StatusCode::BAD_REQUEST, "ERR_CONFIRMATION_REQUIRED"), "{r}");
    let (st, r) = e.post("/proxy/v1/execute", json!({"connection": e.conn(), "sql": "delete from items where id = 1; delete from items", "confirm": true})).await;
    assert_eq!((st, code(&r)), (StatusCode::BAD_REQUEST, "ERR_SINGLE_STATEMENT_REQUIRED"), "{r}");
    let (st, r) = e.post("/proxy/v1/execute", json!({"connection": e.conn(), "sql": "delete from items where id = $1 returning id, name", "params": [1], "confirm": true})).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!((r["data"]["command"].as_str(), r["data"]["rows_affected"].as_u64()), (Some("DELETE"), Some(1)));
    assert_eq!(r["data"]["rows"], json!([{"id": 1, "name": "item 1"}]));
    let (st, r) = e.post("/proxy/v1/execute", json!({"connection": e.conn(), "sql": "create table made (a int)", "confirm": true})).await;
    assert_eq!((st, r["data"]["command"].as_str()), (StatusCode::OK, Some("CREATE")), "{r}");
    let (st, r) = e.post("/proxy/v1/execute", json!({"connection": e.conn(), "sql": "insert into items (id, name) values (2, 'dup')", "confirm": true})).await;
    assert_eq!((st, code(&r), r["error"]["sqlstate"].as_str()), (StatusCode::CONFLICT, "ERR_SQL_FAILED", Some("23505")), "{r}");
    assert!(r["error"]["detail"].as_str().unwrap().contains("already exists"), "{r}");

    // Nothing one request leaves on a pooled connection reaches the next one.
    for sql in ["select set_config('application_name', 'evil', false)", "create temp table items (id int)", "select pg_advisory_lock(42)"] {
        let (st, r) = e.post("/proxy/v1/execute", json!({"connection": e.conn(), "sql": sql, "confirm": true})).await;
        assert_eq!(st, StatusCode::OK, "{sql}: {r}");
    }
    for _ in 0..12 {
        let (_, r) = e.query("select current_setting('application_name') as app, (select count(*) from items) as n, pg_try_advisory_lock(42) as free", json!({})).await;
        assert_eq!(r["data"]["rows"][0]["app"], "pgstack-workbench", "{r}");
        assert_eq!(r["data"]["rows"][0]["n"], 449, "no temp table shadows items: {r}");
        assert_eq!(r["data"]["rows"][0]["free"], true, "no advisory lock left behind: {r}");
    }

    // A session: a transaction only it sees, rolled back.
    let (st, s) = e.post("/proxy/v1/sessions", json!({"connection": e.conn()})).await;
    assert_eq!(st, StatusCode::CREATED, "{s}");
    let id = s["data"]["session_id"].as_str().unwrap().to_owned();
    let sp = |p: &str| format!("/proxy/v1/sessions/{id}/{p}");
    let (st, info) = e.call(reqwest::Method::GET, &format!("/proxy/v1/sessions/{id}"), Some(&e.service), None).await;
    assert_eq!((st, info["data"]["in_transaction"].as_bool(), info["data"]["busy"].as_bool()), (StatusCode::OK, Some(false), Some(false)), "{info}");
    let (st, r) = e.post(&sp("transaction"), json!({"action": "begin"})).await;
    assert_eq!((st, r["data"]["in_transaction"].as_bool()), (StatusCode::OK, Some(true)), "{r}");
    let (st, r) = e.post(&sp("transaction"), json!({"action": "begin"})).await;
    assert_eq!((st, code(&r)), (StatusCode::CONFLICT, "ERR_TRANSACTION_STATE"));
    let (st, r) = e.post(&sp("execute"), json!({"sql": "insert into items (id, name) values (9001, 'in tx')", "confirm": true})).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    let (_, inside) = e.post(&sp("query"), json!({"sql": "select count(*) as n from items where id = 9001"})).await;
    assert_eq!(inside["data"]["rows"][0]["n"], 1, "{inside}");
    let (st, r) = e.post(&sp("query"), json!({"sql": "with d as (delete from items returning 1) select 1"})).await;
    assert_eq!((st, code(&r)), (StatusCode::BAD_REQUEST, "ERR_READ_ONLY_QUERY_REQUIRED"));
    let (st, r) = e.post(&sp("query"), json!({"sql": "select bump()"})).await;
    assert_eq!(code(&r), "ERR_READ_ONLY_QUERY_REQUIRED", "a read inside the transaction is read-only too: {st} {r}");
    let (_, inside) = e.post(&sp("query"), json!({"sql": "select count(*) as n from items where id = 9001"})).await;
    assert_eq!(inside["data"]["rows"][0]["n"], 1, "the failed read did not abort the transaction: {inside}");
    let (_, outside) = e.query("select count(*) as n from items where id = 9001", json!({})).await;
    assert_eq!(outside["data"]["rows"][0]["n"], 0);
    let (st, _) = e.post(&sp("transaction"), json!({"action": "rollback"})).await;
    assert_eq!(st, StatusCode::OK);
    let (_, after) = e.post(&sp("query"), json!({"sql": "select count(*) as n from items where id = 9001"})).await;
    assert_eq!(after["data"]["rows"][0]["n"], 0);
    let (st, r) = e.post(&sp("transaction"), json!({"action": "commit"})).await;
    assert_eq!((st, code(&r)), (StatusCode::CONFLICT, "ERR_TRANSACTION_STATE"));

    // Sessions belong to their caller.
    let user = user_token("00000000-0000-0000-0000-0000000000aa");
    let (st, r) = e.call(reqwest::Method::POST, &sp("query"), Some(&user), Some(json!({"sql": "select 1"}))).await;
    assert_eq!((st, code(&r)), (StatusCode::NOT_FOUND, "ERR_SESSION_NOT_FOUND"), "{r}");
    let (st, _) = e.call(reqwest::Method::POST, "/proxy/v1/query", Some(&user), Some(json!({"connection": e.conn(), "sql": "select 1"}))).await;
    assert_eq!(st, StatusCode::OK, "WORKBENCH_ROLES grants authenticated");

    // Cancel: a real cancel request ends the running statement.
    let http = e.http.clone();
    let (url, key) = (e.gw.url(&sp("query")), e.service.clone());
    let running = tokio::spawn(async move {
        let r = http.post(url).bearer_auth(&key).header("apikey", &key).json(&json!({"sql": "select pg_sleep(25)", "timeout_ms": 30000})).send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (st, r) = e.post(&sp("query"), json!({"sql": "select 1"})).await;
    assert_eq!((st, code(&r)), (StatusCode::CONFLICT, "ERR_SESSION_BUSY"), "{r}");
    let started = Instant::now();
    let (st, c) = e.post(&sp("cancel"), json!({})).await;
    assert_eq!((st, c["data"]["cancelled"].as_bool()), (StatusCode::OK, Some(true)), "{c}");
    let (st, r) = tokio::time::timeout(Duration::from_secs(10), running).await.unwrap().unwrap();
    assert_eq!((st, code(&r)), (StatusCode::CONFLICT, "ERR_QUERY_CANCELLED"), "{r}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let (st, c) = e.post(&sp("cancel"), json!({})).await;
    assert_eq!((st, c["data"]["cancelled"].as_bool()), (StatusCode::OK, Some(false)));

    let (st, _) = e.call(reqwest::Method::DELETE, &format!("/proxy/v1/sessions/{id}"), Some(&e.service), None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, r) = e.post(&sp("query"), json!({"sql": "select 1"})).await;
    assert_eq!((st, code(&r)), (StatusCode::NOT_FOUND, "ERR_SESSION_NOT_FOUND"));
    let (st, r) = e.post("/proxy/v1/sessions/not-a-uuid/query", json!({"sql": "select 1"})).await;
    assert_eq!((st, code(&r)), (StatusCode::NOT_FOUND, "ERR_SESSION_NOT_FOUND"));
}

#[tokio::test]
async fn poge_cache_pools_schema_and_errors() {
    let e = start(&[]).await;
    let q = |sql: &str| {
        let mut b = e.poge();
        b["query"] = json!(sql);
        b
    };

    let (st, r) = e.post("/poge/api/query", q("select id, name from items where id <= 3 order by id")).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!((r["cached"].as_bool(), r["data"]["rowCount"].as_u64(), r["data"]["command"].as_str()), (Some(false), Some(3), Some("SELECT")));
    assert_eq!(r["data"]["fields"][0]["name"], "id");
    assert_eq!(r["data"]["fields"][0]["dataTypeID"], 20);
    assert!(r["executionTime"].is_u64());
    let (_, again) = e.post("/poge/api/query", q("select id, name from items where id <= 3 order by id")).await;
    assert_eq!(again["cached"], true);
    assert_eq!(again["data"], r["data"]);
    let (_, stats) = e.call(reqwest::Method::GET, "/poge/api/stats/cache", Some(&e.service), None).await;
    assert_eq!((stats["data"]["hits"].as_u64(), stats["data"]["misses"].as_u64(), stats["data"]["entries"].as_u64()), (Some(1), Some(1), Some(1)), "{stats}");

    // A write through the API drops that database's answers.
    let (st, w) = e.post("/poge/api/query", q("update items set name = 'renamed' where id = 2")).await;
    assert_eq!((st, w["data"]["rowCount"].as_u64(), w["data"]["command"].as_str()), (StatusCode::OK, Some(1), Some("UPDATE")), "{w}");
    let (_, fresh) = e.post("/poge/api/query", q("select id, name from items where id <= 3 order by id")).await;
    assert_eq!((fresh["cached"].as_bool(), fresh["data"]["rows"][1]["name"].as_str()), (Some(false), Some("renamed")));
    // Other credentials never share an answer.
    let mut other = q("select id, name from items where id <= 3 order by id");
    other["password"] = json!("wrong");
    let (st, r) = e.post("/poge/api/query", other).await;
    assert_eq!((st, r["code"].as_str()), (StatusCode::BAD_REQUEST, Some("28P01")), "{r}");
    assert!(r["error"].is_string() && r["details"].is_string());

    let (_, pools) = e.call(reqwest::Method::GET, "/poge/api/stats/pools", Some(&e.service), None).await;
    assert_eq!(pools["data"]["pools"].as_array().unwrap().len(), 1, "a pool that never connected is dropped: {pools}");
    let p = &pools["data"]["pools"][0];
    assert!(p["key"].as_str().unwrap().starts_with("postgres@127.0.0.1:"), "{pools}");
    assert!(p["total"].as_u64().unwrap() >= 1 && p["max"] == 10, "{pools}");
    assert!(!pools.to_string().contains(PASSWORD), "no password in statistics");
    let (_, cleared) = e.post("/poge/api/stats/cache/clear", json!({})).await;
    assert_eq!(cleared["data"]["cleared"], 1);

    let (st, s) = e.post("/poge/api/schema", e.poge()).await;
    assert_eq!(st, StatusCode::OK, "{s}");
    let public = s["data"]["schemas"].as_array().unwrap().iter().find(|x| x["name"] == "public").unwrap();
    let items = public["tables"].as_array().unwrap().iter().find(|t| t["name"] == "items").unwrap();
    assert_eq!(items["primary_key"], json!(["id"]));
    assert!(items["indexes"].as_array().unwrap().iter().any(|i| i["name"] == "items_name"));
    assert_eq!(items["columns"][1], json!({"name": "name", "type": "text", "nullable": false, "default": null, "position": 2}));
    let child = public["tables"].as_array().unwrap().iter().find(|t| t["name"] == "child").unwrap();
    assert_eq!(child["foreign_keys"][0]["referenced_table"], "items");

    let (st, t) = e.post("/poge/api/test-connection", e.poge()).await;
    assert_eq!((st, t["data"]["connected"].as_bool()), (StatusCode::OK, Some(true)), "{t}");

    let mut refused = e.poge();
    refused["port"] = json!(pgstack_gateway::dev::cluster::free_port(None).unwrap());
    let (st, r) = e.post("/poge/api/test-connection", refused).await;
    assert_eq!((st, r["code"].as_str()), (StatusCode::BAD_GATEWAY, Some("ECONNREFUSED")), "{r}");
    let mut nodb = e.poge();
    nodb["database"] = json!("nope");
    let (_, r) = e.post("/poge/api/test-connection", nodb).await;
    assert_eq!(r["code"], "3D000", "{r}");
    let mut unknown = e.poge();
    unknown["host"] = json!("no-such-host.invalid");
    let (_, r) = e.post("/poge/api/test-connection", unknown).await;
    assert_eq!(r["code"], "ENOTFOUND", "{r}");
    let (st, r) = e.post("/poge/api/query", q("select 1; delete from items")).await;
    assert_eq!((st, r["code"].as_str()), (StatusCode::BAD_REQUEST, Some("ERR_SINGLE_STATEMENT_REQUIRED")), "{r}");
    let (st, r) = e.post("/poge/api/query", q("set role postgres")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{r}");
}

#[tokio::test]
async fn who_may_use_it_and_where_it_may_connect() {
    let tc = TestCluster::start().await.unwrap();
    let target_port = tc.cluster.running_port().unwrap();
    let service = service_key();
    let anon = keys::mint(Role::Anon, &Secret::new(JWT_SECRET)).unwrap();
    let http = Client::new();
    let body = json!({"connection": {"engine": "postgres", "host": "127.0.0.1", "port": target_port, "database": "postgres", "username": "postgres", "password": PASSWORD}, "sql": "select 1"});

    // Off by default: 404 in the seed's envelope.
    let off = Gateway::serve(&tc, &[]).await.unwrap();
    let r = http.post(off.url("/proxy/v1/query")).bearer_auth(&service).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "ERR_WORKBENCH_DISABLED");
    drop(off);

    // On, without private targets: loopback is refused before any connection.
    let gw = Gateway::serve(&tc, &[("WORKBENCH_ENABLED", "true")]).await.unwrap();
    let r = http.post(gw.url("/proxy/v1/query")).bearer_auth(&service).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "ERR_TARGET_FORBIDDEN");
    let r = http.post(gw.url("/poge/api/query")).bearer_auth(&service).json(&json!({"host": "10.1.2.3", "user": "x", "database": "y", "query": "select 1"})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let b: Value = r.json().await.unwrap();
    assert!(b["error"].is_string() && b["details"].is_string() && b["code"].is_string(), "{b}");

    // The anon key, a plain user token and no key are refused.
    for (key, status) in
        [(Some(anon.as_str()), StatusCode::FORBIDDEN), (Some(user_token("00000000-0000-0000-0000-0000000000ab").as_str()), StatusCode::FORBIDDEN), (None, StatusCode::UNAUTHORIZED)]
    {
        let mut rq = http.post(gw.url("/proxy/v1/query")).json(&body);
        if let Some(k) = key {
            rq = rq.bearer_auth(k).header("apikey", k);
        }
        let r = rq.send().await.unwrap();
        assert_eq!(r.status(), status);
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["status"], "error", "{b}");
    }
    let user = user_token("00000000-0000-0000-0000-0000000000ad");
    let gw2 = Gateway::serve(&tc, &[("WORKBENCH_ENABLED", "true"), ("WORKBENCH_ROLES", "authenticated")]).await.unwrap();
    let r = http.get(gw2.url("/poge/api/stats/pools")).bearer_auth(&user).header("apikey", &user).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "pool statistics are the service key's");
    let r = http.get(gw2.url("/poge/api/stats/cache")).bearer_auth(&user).header("apikey", &user).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "cache numbers are anyone's");
    let r = http.get(gw.url("/poge/api/stats/pools")).header("apikey", &anon).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["code"], "ERR_FORBIDDEN", "{b}");
}

/// A TLS-only cluster (self-signed certificate, `hostssl` lines only).
async fn tls_only_cluster() -> TestCluster {
    let tc = TestCluster::start_bare().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (key, crt) = (dir.path().join("server.key"), dir.path().join("server.crt"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl (scripts/install-deps.sh installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let su = tc.superuser().await.unwrap();
    let data: String = su.query_one("show data_directory", &[]).await.unwrap().get(0);
    let hba: String = su.query_one("show hba_file", &[]).await.unwrap().get(0);
    // Written by the server itself, so they belong to its OS user with its umask.
    for (path, text) in [(format!("{data}/server.key"), std::fs::read_to_string(&key).unwrap()), (format!("{data}/server.crt"), std::fs::read_to_string(&crt).unwrap())] {
        su.batch_execute(&format!("copy (select unnest(string_to_array(rtrim($pem${text}$pem$, E'\\n'), E'\\n'))) to '{path}'")).await.unwrap();
    }
    // COPY leaves the key readable by others, which the server refuses (the tests run as root).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(format!("{data}/server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let rules = "local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostssl all all ::1/128 scram-sha-256\n";
    su.batch_execute(&format!("copy (select unnest(string_to_array(rtrim($r${rules}$r$, E'\\n'), E'\\n'))) to '{hba}'")).await.unwrap();
    su.batch_execute("alter system set ssl = on").await.unwrap();
    su.batch_execute("select pg_reload_conf()").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    tc
}

#[tokio::test]
async fn tls_modes_against_a_tls_only_server() {
    let tc = TestCluster::start().await.unwrap();
    let tls = tls_only_cluster().await;
    let gw = Gateway::serve(&tc, &[("WORKBENCH_ENABLED", "true"), ("WORKBENCH_ALLOW_PRIVATE", "true")]).await.unwrap();
    let service = service_key();
    let http = Client::new();
    let port = tls.cluster.running_port().unwrap();
    let mut results = Vec::new();
    for mode in ["disable", "require", "prefer"] {
        let conn = json!({"engine": "postgres", "host": "127.0.0.1", "port": port, "database": "postgres", "username": "postgres", "password": PASSWORD, "ssl_mode": mode});
        let r = http
            .post(gw.url("/proxy/v1/query"))
            .bearer_auth(&service)
            .json(&json!({"connection": conn, "sql": "select ssl from pg_stat_ssl where pid = pg_backend_pid()"}))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let b: Value = r.json().await.unwrap();
        results.push((mode, status, b));
    }
    assert_eq!(results[0].1, StatusCode::BAD_REQUEST, "plain TCP is refused by the server: {}", results[0].2);
    assert_eq!(results[0].2["error"]["sqlstate"], "28000", "{}", results[0].2);
    for (mode, status, b) in &results[1..] {
        assert_eq!(*status, StatusCode::OK, "{mode}: {b}");
        assert_eq!(b["data"]["rows"][0]["ssl"], true, "{mode} connected with TLS");
    }
    let poge = json!({"host": "127.0.0.1", "port": port, "user": "postgres", "password": PASSWORD, "database": "postgres", "sslMode": "require", "query": "select 1 as one"});
    let r = http.post(gw.url("/poge/api/query")).bearer_auth(&service).json(&poge).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// A real OpenSSH server on loopback: a generated host key, the test user's
/// authorised key, TCP forwarding on. Killed on drop.
struct Sshd {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &std::path::Path) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    let out = std::process::Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(path).output().expect("ssh-keygen (openssh-client)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

impl Sshd {
    /// Starts sshd on `port` (a free one when None) with the keys in `dir` (made when missing).
    async fn start(dir: tempfile::TempDir, port: Option<u16>) -> Sshd {
        let d = dir.path();
        if !d.join("host_key").exists() {
            keygen(&d.join("host_key"));
        }
        if !d.join("user_key").exists() {
            keygen(&d.join("user_key"));
            std::fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).unwrap();
        }
        let port = port.unwrap_or_else(|| pgstack_gateway::dev::cluster::free_port(None).unwrap());
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {h}\nPidFile {p}\nAuthorizedKeysFile {a}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nAllowTcpForwarding yes\nStrictModes no\nUsePAM no\nLogLevel VERBOSE\n",
            h = d.join("host_key").display(),
            p = d.join("sshd.pid").display(),
            a = d.join("authorized_keys").display()
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let child = std::process::Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(d.join("sshd.log")).unwrap())
            .spawn()
            .expect("/usr/sbin/sshd (openssh-server; scripts/install-deps.sh installs it)");
        let ready = pgstack_tests::eventually(Duration::from_secs(15), || async move { tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() }).await;
        assert!(ready, "sshd did not listen: {}", std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default());
        Sshd { child, port, dir }
    }

    fn user_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("user_key")).unwrap()
    }

    fn host_key_line(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host_key.pub")).unwrap().trim().to_owned()
    }

    fn tunnel(&self, host: &str, check: &str) -> Value {
        json!({"type": "ssh", "host": host, "port": self.port, "username": whoami(), "auth": {"method": "private_key", "private_key": self.user_key()}, "host_key_check": check})
    }
}

fn whoami() -> String {
    String::from_utf8(std::process::Command::new("id").arg("-un").output().unwrap().stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn ssh_tunnels_through_a_real_sshd() {
    let e = start(&[]).await;
    let ssh = Sshd::start(tempfile::tempdir().unwrap(), None).await;
    let through = |tunnel: Value, db: &str| {
        let mut c = e.conn();
        c["database"] = json!(db);
        c["tunnel"] = tunnel;
        c
    };

    // accept_new: the first use remembers the bastion's key.
    let (st, r) = e.post("/proxy/v1/query", json!({"connection": through(ssh.tunnel("127.0.0.1", "accept_new"), "postgres"), "sql": "select count(*) as n from items"})).await;
    assert_eq!((st, r["data"]["rows"][0]["n"].as_i64()), (StatusCode::OK, Some(450)), "{r}");
    let gw_db = e._tc.superuser().await.unwrap();
    let kept: String = gw_db.query_one("select fingerprint from workbench.known_hosts where host = '127.0.0.1'", &[]).await.unwrap().get(0);
    assert!(kept.starts_with("SHA256:"), "{kept}");

    // strict: a host never seen is refused; a pinned key or a remembered one passes.
    let (st, r) = e.post("/proxy/v1/test-connection", json!({"connection": through(ssh.tunnel("localhost", "strict"), "postgres")})).await;
    assert_eq!((st, code(&r)), (StatusCode::BAD_GATEWAY, "ERR_SSH_TUNNEL_FAILED"), "{r}");
    assert!(r["message"].as_str().unwrap().contains("not known"), "{r}");
    let mut pinned = ssh.tunnel("localhost", "strict");
    pinned["host_key"] = json!(ssh.host_key_line());
    let (st, r) = e.post("/proxy/v1/test-connection", json!({"connection": through(pinned, "postgres")})).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    let (st, r) = e.post("/proxy/v1/test-connection", json!({"connection": through(ssh.tunnel("127.0.0.1", "strict"), "template1")})).await;
    assert_eq!(st, StatusCode::OK, "a remembered key passes strict: {r}");

    // A wrong user key.
    let mut wrong = ssh.tunnel("127.0.0.1", "accept_new");
    let other = tempfile::tempdir().unwrap();
    keygen(&other.path().join("k"));
    wrong["auth"]["private_key"] = json!(std::fs::read_to_string(other.path().join("k")).unwrap());
    let (st, r) = e.post("/proxy/v1/test-connection", json!({"connection": through(wrong, "postgres")})).await;
    assert_eq!((st, code(&r)), (StatusCode::BAD_GATEWAY, "ERR_SSH_TUNNEL_FAILED"), "{r}");
    let mut garbage = ssh.tunnel("127.0.0.1", "accept_new");
    garbage["auth"]["private_key"] = json!("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n-----END OPENSSH PRIVATE KEY-----");
    let (st, r) = e.post("/proxy/v1/test-connection", json!({"connection": through(garbage, "postgres")})).await;
    assert_eq!((st, code(&r)), (StatusCode::BAD_REQUEST, "ERR_SSH_TUNNEL_FAILED"), "{r}");

    // A session and a real cancel, both through the tunnel.
    let (st, s) = e.post("/proxy/v1/sessions", json!({"connection": through(ssh.tunnel("127.0.0.1", "accept_new"), "postgres")})).await;
    assert_eq!(st, StatusCode::CREATED, "{s}");
    let id = s["data"]["session_id"].as_str().unwrap().to_owned();
    let (http, url, key) = (e.http.clone(), e.gw.url(&format!("/proxy/v1/sessions/{id}/query")), e.service.clone());
    let running = tokio::spawn(async move {
        let r = http.post(url).bearer_auth(&key).header("apikey", &key).json(&json!({"sql": "select pg_sleep(25)", "timeout_ms": 30000})).send().await.unwrap();
        r.json::<Value>().await.unwrap()
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (st, c) = e.post(&format!("/proxy/v1/sessions/{id}/cancel"), json!({})).await;
    assert_eq!((st, c["data"]["cancelled"].as_bool()), (StatusCode::OK, Some(true)), "{c}");
    let r = tokio::time::timeout(Duration::from_secs(10), running).await.unwrap().unwrap();
    assert_eq!(code(&r), "ERR_QUERY_CANCELLED", "{r}");

    // The bastion's key changes (same address): accept_new refuses it.
    let dir = tempfile::tempdir().unwrap();
    for f in ["user_key", "user_key.pub", "authorized_keys"] {
        std::fs::copy(ssh.dir.path().join(f), dir.path().join(f)).unwrap();
    }
    let port = ssh.port;
    let user_key = ssh.user_key();
    drop(ssh);
    let rotated = Sshd::start(dir, Some(port)).await;
    assert_eq!(rotated.user_key(), user_key);
    let (st, r) = e.post("/proxy/v1/test-connection", json!({"connection": through(rotated.tunnel("127.0.0.1", "accept_new"), "template0x")})).await;
    assert_eq!((st, code(&r)), (StatusCode::BAD_GATEWAY, "ERR_SSH_TUNNEL_FAILED"), "{r}");
    assert!(r["message"].as_str().unwrap().contains("changed"), "{r}");
}

#[tokio::test]
async fn saved_database_configurations() {
    let e = start(&[("WORKBENCH_SECRET_KEY", "workbench-test-key-0123456789-abcdefghij"), ("WORKBENCH_ROLES", "authenticated")]).await;
    let port = e.target.cluster.running_port().unwrap();
    let conn = json!({"host": "127.0.0.1", "port": port, "database": "postgres", "username": "postgres", "password": PASSWORD, "ssl": false});
    let (st, a) = e
        .post(
            "/api/database-configs",
            json!({"name": "Target", "description": "scratch", "provider": "postgresql", "connection_config": conn,
        "settings": {"allowed_tables": ["public.items", "public.child"]}, "is_primary": true, "is_active": true}),
        )
        .await;
    assert_eq!((st, a["success"].as_bool()), (StatusCode::CREATED, Some(true)), "{a}");
    assert!(!a.to_string().contains(PASSWORD), "the password is never returned: {a}");
    assert_eq!(a["data"]["connection_config"]["has_password"], true);
    let id = a["data"]["id"].as_str().unwrap().to_owned();
    let stored: Vec<u8> = e._tc.superuser().await.unwrap().query_one("select password_enc from workbench.database_configs where id::text = $1", &[&id]).await.unwrap().get(0);
    assert!(!String::from_utf8_lossy(&stored).contains(PASSWORD), "encrypted at rest");

    // One primary at a time.
    let (st, b) = e.post("/api/database-configs", json!({"name": "Second", "connection_config": conn, "is_primary": true, "is_active": false})).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let (_, first) = e.call(reqwest::Method::GET, &format!("/api/database-configs/{id}"), Some(&e.service), None).await;
    assert_eq!(first["data"]["is_primary"], false);
    let (_, list) = e.call(reqwest::Method::GET, "/api/database-configs?activeOnly=true", Some(&e.service), None).await;
    assert_eq!((list["count"].as_u64(), list["data"][0]["name"].as_str()), (Some(1), Some("Target")), "{list}");

    // PATCH keeps the password unless one is given.
    let (st, p) = e.call(reqwest::Method::PATCH, &format!("/api/database-configs/{id}"), Some(&e.service), Some(json!({"name": "Renamed", "is_primary": true}))).await;
    assert_eq!((st, p["data"]["name"].as_str(), p["data"]["is_primary"].as_bool()), (StatusCode::OK, Some("Renamed"), Some(true)), "{p}");

    // Schema: only the allowed tables; freshness by age and by DDL.
    let (st, f) = e.call(reqwest::Method::GET, &format!("/api/database-configs/{id}/freshness"), Some(&e.service), None).await;
    assert_eq!((st, f["needs_refresh"].as_bool(), f["reason"].as_str()), (StatusCode::OK, Some(true), Some("never_refreshed")), "{f}");
    let (st, r) = e.post(&format!("/api/database-configs/{id}/refresh-schema"), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    let names: Vec<&str> = r["schema"]["tables"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["child", "items"], "{r}");
    assert_eq!(r["schema"]["tables"][1]["columns"][0], json!({"name": "id", "type": "bigint", "nullable": false}));
    assert!(r["refreshed_at"].as_str().unwrap().ends_with('Z'));
    let (_, f) = e.call(reqwest::Method::GET, &format!("/api/database-configs/{id}/freshness"), Some(&e.service), None).await;
    assert_eq!((f["needs_refresh"].as_bool(), f["age_hours"].as_u64()), (Some(false), Some(0)), "{f}");
    e.target.superuser().await.unwrap().batch_execute("alter table items add column added int").await.unwrap();
    let (_, f) = e.call(reqwest::Method::GET, &format!("/api/database-configs/{id}/freshness"), Some(&e.service), None).await;
    assert_eq!((f["needs_refresh"].as_bool(), f["reason"].as_str()), (Some(true), Some("schema_changed")), "{f}");

    // Queries may name the configuration instead of a connection; its allowed tables hold.
    let (st, r) = e.post("/proxy/v1/query", json!({"config_id": id, "sql": "select count(*) as n from items i join child c on c.item_id = i.id"})).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    for sql in
        ["select * from big", "select * from public.audit", "with x as (select 1) select * from x, pg_catalog.pg_authid", "select * from items where id in (select id from big)"]
    {
        let (st, r) = e.post("/proxy/v1/query", json!({"config_id": id, "sql": sql})).await;
        assert_eq!((st, code(&r)), (StatusCode::FORBIDDEN, "ERR_PERMISSION_DENIED"), "{sql}: {r}");
    }
    let (st, r) = e.post("/proxy/v1/query", json!({"config_id": id, "sql": "with items as (select 1 as n) select n from items"})).await;
    assert_eq!(st, StatusCode::OK, "a CTE is not a table: {r}");
    for sql in ["drop table big", "do $$ begin execute 'delete from big'; end $$", "comment on table big is 'x'"] {
        let (st, r) = e.post("/proxy/v1/execute", json!({"config_id": id, "sql": sql, "confirm": true})).await;
        assert_eq!((st, code(&r)), (StatusCode::FORBIDDEN, "ERR_PERMISSION_DENIED"), "{sql}: {r}");
    }
    // Another caller granted the workbench sees none of these configurations.
    let user = user_token("00000000-0000-0000-0000-0000000000cc");
    let (st, r) = e.call(reqwest::Method::GET, &format!("/api/database-configs/{id}"), Some(&user), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{r}");
    let (_, r) = e.call(reqwest::Method::GET, "/api/database-configs", Some(&user), None).await;
    assert_eq!(r["count"], 0, "{r}");
    let (st, r) = e.call(reqwest::Method::POST, "/proxy/v1/query", Some(&user), Some(json!({"config_id": id, "sql": "select 1 from items"}))).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{r}");
    let (st, r) = e.call(reqwest::Method::PATCH, &format!("/api/database-configs/{id}"), Some(&user), Some(json!({"connection_config": {"host": "attacker.example"}}))).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{r}");
    let (st, r) = e.call(reqwest::Method::DELETE, &format!("/api/database-configs/{id}"), Some(&user), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "nor delete it: {r}");
    let (st, _) = e.call(reqwest::Method::GET, &format!("/api/database-configs/{id}"), Some(&e.service), None).await;
    assert_eq!(st, StatusCode::OK, "still there");
    // Pointing a configuration elsewhere needs its password again.
    let (st, r) = e.call(reqwest::Method::PATCH, &format!("/api/database-configs/{id}"), Some(&e.service), Some(json!({"connection_config": {"host": "localhost"}}))).await;
    assert_eq!((st, r["code"].as_str()), (StatusCode::BAD_REQUEST, Some("ERR_INVALID_REQUEST")), "{r}");
    let (st, r) = e.post("/proxy/v1/query", json!({"config_id": b["data"]["id"], "sql": "select 1"})).await;
    assert_eq!((st, code(&r)), (StatusCode::CONFLICT, "ERR_CONFIG_NOT_FOUND"), "an inactive configuration: {r}");

    // Stateless tests.
    let mut t = conn.clone();
    t["allowed_tables"] = json!(["public.items"]);
    let (st, r) = e.post("/api/db/test-postgres", t.clone()).await;
    assert_eq!((st, r["tested_table"].as_str(), r["tested_table_accessible"].as_bool()), (StatusCode::OK, Some("public.items"), Some(true)), "{r}");
    assert!(r["latency_ms"].is_u64());
    t["allowed_tables"] = json!(["public.nope'; drop table items; --"]);
    let (st, r) = e.post("/api/db/test-postgres", t).await;
    assert_eq!((st, r["tested_table_accessible"].as_bool()), (StatusCode::OK, Some(false)), "{r}");
    let (st, d) = e.post("/api/db/discover-postgres-schema", conn.clone()).await;
    assert_eq!(st, StatusCode::OK, "{d}");
    let public = d["schemas"].as_array().unwrap().iter().find(|s| s["name"] == "public").unwrap();
    assert!(public["tables"].as_array().unwrap().iter().any(|t| t["full_name"] == "public.big"), "{d}");
    let mut bad = conn.clone();
    bad["password"] = json!("wrong");
    let (st, r) = e.post("/api/db/test-postgres", bad).await;
    assert_eq!((st, r["success"].as_bool(), r["code"].as_str()), (StatusCode::BAD_REQUEST, Some(false), Some("ERR_AUTH_REJECTED")), "{r}");

    // Soft delete.
    let (st, _) = e.call(reqwest::Method::DELETE, &format!("/api/database-configs/{id}"), Some(&e.service), None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, r) = e.call(reqwest::Method::GET, &format!("/api/database-configs/{id}"), Some(&e.service), None).await;
    assert_eq!((st, r["success"].as_bool()), (StatusCode::NOT_FOUND, Some(false)), "{r}");
    let (_, all) = e.call(reqwest::Method::GET, "/api/database-configs?includeDeleted=true", Some(&e.service), None).await;
    assert_eq!(all["count"], 2);
    assert!(all["data"].as_array().unwrap().iter().any(|c| c["id"] == json!(id) && c["deleted_at"].is_string()));
    let (st, r) = e.call(reqwest::Method::GET, "/api/database-configs/not-a-uuid", Some(&e.service), None).await;
    assert_eq!((st, r["code"].as_str()), (StatusCode::NOT_FOUND, Some("ERR_CONFIG_NOT_FOUND")));
    let anon = keys::mint(Role::Anon, &Secret::new(JWT_SECRET)).unwrap();
    let (st, r) = e.call(reqwest::Method::GET, "/api/database-configs", Some(&anon), None).await;
    assert_eq!((st, r["success"].as_bool()), (StatusCode::FORBIDDEN, Some(false)), "{r}");
    let (st, r) = e.post("/api/database-configs", json!({"name": "x", "provider": "mysql", "connection_config": conn})).await;
    assert_eq!((st, r["code"].as_str()), (StatusCode::BAD_REQUEST, Some("ERR_INVALID_REQUEST")), "{r}");
}
