//! Issue 19: the database agent API — MCP over HTTP driven by the official MCP
//! TypeScript SDK (tests/js/mcp.test.mjs) with RLS deciding per user, raw JSON-RPC
//! edge cases, and the seed's REST paths with their errors.

use pgstack_gateway::config::Secret;
use pgstack_gateway::keys;
use pgstack_shared::Role;
use pgstack_tests::{Gateway, TestCluster, JWT_SECRET};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const FIXTURE: &str = r#"
insert into auth.users (id, email) values ('00000000-0000-0000-0000-00000000000a', 'alice@example.com'), ('00000000-0000-0000-0000-00000000000b', 'bob@example.com');
create table notes (id int primary key, owner_id uuid not null, body text not null);
alter table notes enable row level security;
create policy own on notes for select to authenticated using (owner_id = auth.uid());
grant select on notes to authenticated;
insert into notes values (1, '00000000-0000-0000-0000-00000000000a', 'a1'), (2, '00000000-0000-0000-0000-00000000000a', 'a2'),
                         (3, '00000000-0000-0000-0000-00000000000b', 'b1');
create table secrets (id int primary key, value text);
insert into secrets values (1, 'hidden');
"#;

const USER_A: &str = "00000000-0000-0000-0000-00000000000a";
const USER_B: &str = "00000000-0000-0000-0000-00000000000b";

fn user_token(sub: &str, extra: Value) -> String {
    let mut claims = json!({"sub": sub, "role": "authenticated", "aud": "authenticated", "email": format!("{sub}@example.com"), "exp": keys::now() + 3600});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        claims[k] = v;
    }
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes())).unwrap()
}

async fn start() -> (TestCluster, Gateway) {
    let tc = TestCluster::start().await.unwrap();
    tc.superuser().await.unwrap().batch_execute(FIXTURE).await.unwrap();
    let gw = Gateway::serve(&tc, &[]).await.unwrap();
    (tc, gw)
}

#[tokio::test]
async fn the_official_mcp_sdk_under_rls() {
    let (_tc, gw) = start().await;
    let env = [("USER_A", user_token(USER_A, json!({}))), ("USER_B", user_token(USER_B, json!({}))), ("USER_A_ID", USER_A.to_owned()), ("USER_B_ID", USER_B.to_owned())];
    pgstack_tests::node_tests("mcp.test.mjs", "@modelcontextprotocol/sdk", &env, &gw).await;
}

async fn rpc(http: &Client, gw: &Gateway, token: Option<&str>, body: Value) -> (StatusCode, Value) {
    let mut r = http.post(gw.url("/mcp/v1")).header("accept", "application/json, text/event-stream");
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let res = r.body(body.to_string()).header("content-type", "application/json").send().await.unwrap();
    let st = res.status();
    let text = res.text().await.unwrap();
    (st, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({st}): {text}")) })
}

#[tokio::test]
async fn json_rpc_edges_and_the_rest_side() {
    let (_tc, gw) = start().await;
    let http = Client::new();
    let a = user_token(USER_A, json!({}));
    let anon = keys::mint(Role::Anon, &Secret::new(JWT_SECRET)).unwrap();

    // Who may call.
    let (st, b) = rpc(&http, &gw, None, json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})).await;
    assert_eq!((st, b["error"]["code"].as_i64()), (StatusCode::UNAUTHORIZED, Some(-32001)), "{b}");
    let (st, _) = rpc(&http, &gw, Some(&anon), json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // initialize negotiates the version; an unknown one gets the newest.
    let (st, b) = rpc(&http, &gw, Some(&a), json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "pgedge-nla-web", "version": "1"}}})).await;
    assert_eq!((st, b["result"]["protocolVersion"].as_str()), (StatusCode::OK, Some("2024-11-05")), "{b}");
    let (_, b) = rpc(&http, &gw, Some(&a), json!({"jsonrpc": "2.0", "id": "x", "method": "initialize", "params": {"protocolVersion": "1999-01-01"}})).await;
    assert_eq!((b["id"].as_str(), b["result"]["protocolVersion"].as_str()), (Some("x"), Some("2025-11-25")));

    // Notifications: 202, no body. Batches answer each request.
    let (st, b) = rpc(&http, &gw, Some(&a), json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
    assert_eq!((st, b), (StatusCode::ACCEPTED, Value::Null));
    let (st, b) = rpc(
        &http,
        &gw,
        Some(&a),
        json!([
            {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "execute_sql", "arguments": {"sql": "select count(*) as n from notes"}}},
            {"jsonrpc": "2.0", "id": 3, "method": "nope"},
            {"jsonrpc": "1.0", "id": 4, "method": "ping"},
            {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "execute_sql", "arguments": {"sql": 5}}},
            {"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {"name": "nope"}},
        ]),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let by_id = |id: i64| b.as_array().unwrap().iter().find(|m| m["id"] == id).cloned().unwrap();
    assert_eq!(b.as_array().unwrap().len(), 6, "{b}");
    assert_eq!(by_id(1)["result"]["tools"].as_array().unwrap().len(), 4);
    assert_eq!(by_id(2)["result"]["structuredContent"]["rows"][0]["n"], 2, "user A sees two notes");
    assert_eq!(by_id(3)["error"]["code"], -32601);
    assert_eq!(by_id(4)["error"]["code"], -32600);
    assert_eq!(by_id(5)["error"]["code"], -32602);
    assert_eq!(by_id(6)["error"]["code"], -32602);
    let (st, b) = rpc(&http, &gw, Some(&a), json!("not an object")).await;
    assert_eq!((st, b["error"]["code"].as_i64()), (StatusCode::OK, Some(-32600)));
    let res = http.post(gw.url("/mcp/v1")).bearer_auth(&a).body("{nope").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], -32700);
    let res = http.post(gw.url("/mcp/v1")).bearer_auth(&a).header("mcp-protocol-version", "1999-01-01").body("{}").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(http.get(gw.url("/mcp/v1")).bearer_auth(&a).send().await.unwrap().status(), StatusCode::METHOD_NOT_ALLOWED);
    let too_many: Vec<Value> = (0..40).map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "ping"})).collect();
    let (st, _) = rpc(&http, &gw, Some(&a), Value::Array(too_many)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // A JSON value nested deeper than JSON readers go: a tool error, not a 500.
    let deep = format!("select '{}1{}'::jsonb as v", "[".repeat(200), "]".repeat(200));
    let (st, b) = rpc(&http, &gw, Some(&a), json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "execute_sql", "arguments": {"sql": deep}}})).await;
    assert_eq!((st, b["result"]["isError"].as_bool()), (StatusCode::OK, Some(true)), "{b}");
    let (st, b) = rpc(&http, &gw, Some(&a), json!({"jsonrpc": "2.0", "id": 7, "method": "resources/read", "params": {"uri": format!("pg://{}", "x".repeat(100_000))}})).await;
    assert_eq!((st, b["error"]["code"].as_i64()), (StatusCode::OK, Some(-32002)));
    assert!(b.to_string().len() < 1000, "the URI is not echoed whole");

    // A statement that runs too long ends at the timeout, as a tool error.
    let (_, b) =
        rpc(&http, &gw, Some(&a), json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "execute_sql", "arguments": {"sql": "select * from secrets"}}}))
            .await;
    assert_eq!(b["result"]["isError"], true, "no grant on secrets: {b}");
    assert!(b["result"]["content"][0]["text"].as_str().unwrap().contains("42501"), "{b}");

    // REST side: databases, selection, bound tokens, user info.
    let get = |path: &str, token: &str| {
        let (http, url, token) = (http.clone(), gw.url(path), token.to_owned());
        async move {
            let r = http.get(url).bearer_auth(token).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let post = |path: &str, token: &str, body: Value| {
        let (http, url, token) = (http.clone(), gw.url(path), token.to_owned());
        async move {
            let r = http.post(url).bearer_auth(token).json(&body).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let (st, d) = get("/api/databases", &a).await;
    assert_eq!((st, d["current"].as_str(), d["databases"][0]["name"].as_str()), (StatusCode::OK, Some("default"), Some("default")), "{d}");
    assert_eq!(d["databases"][0]["user"], "authenticated");
    let (st, r) = post("/api/databases/select", &a, json!({"name": "default"})).await;
    assert_eq!((st, r["success"].as_bool(), r["current"].as_str()), (StatusCode::OK, Some(true), Some("default")), "{r}");
    let (st, r) = post("/api/databases/select", &a, json!({})).await;
    assert_eq!((st, r["error"].as_str()), (StatusCode::BAD_REQUEST, Some("Database name is required")));
    let (st, r) = post("/api/databases/select", &a, json!({"name": "analytics"})).await;
    assert_eq!((st, r["error"].as_str()), (StatusCode::NOT_FOUND, Some("Database not found")));
    let bound = user_token(USER_A, json!({"database": "analytics"}));
    let (st, r) = post("/api/databases/select", &bound, json!({"name": "default"})).await;
    assert_eq!((st, r["error"].as_str()), (StatusCode::FORBIDDEN, Some("API token is bound to a different database")));
    let (_, d) = get("/api/databases", &bound).await;
    assert_eq!(d["databases"], json!([]), "a bound token sees only its database");
    let (st, u) = get("/api/user/info", &a).await;
    assert_eq!((st, u["username"].as_str()), (StatusCode::OK, Some("00000000-0000-0000-0000-00000000000a@example.com")));
    let r = http.get(gw.url("/api/user/info")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.json::<Value>().await.unwrap()["success"], false);

    // /health carries the seed's fields beside the contract's.
    let h: Value = http.get(gw.url("/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!((h["status"].as_str(), h["server"].as_str()), (Some("ok"), Some("pgstack")));
    assert!(h["version"].is_string());
}

#[tokio::test]
async fn conversations_are_each_users_own_and_chats_compact() {
    let (tc, gw) = start().await;
    let http = Client::new();
    let (a, b) = (user_token(USER_A, json!({})), user_token(USER_B, json!({})));
    let call = |method: reqwest::Method, path: &str, token: &str, body: Option<Value>| {
        let (http, url, token) = (http.clone(), gw.url(path), token.to_owned());
        async move {
            let mut r = http.request(method, url).bearer_auth(token);
            if let Some(b) = body {
                r = r.json(&b);
            }
            let r = r.send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    use reqwest::Method;
    let messages = json!([{"role": "user", "content": "Show me the users table"}, {"role": "assistant", "content": "Here's the schema for the users table..."}]);
    let (st, c) =
        call(Method::POST, "/api/conversations", &a, Some(json!({"provider": "anthropic", "model": "claude-sonnet-4-20250514", "connection": "default", "messages": messages})))
            .await;
    assert_eq!(st, StatusCode::CREATED, "{c}");
    assert_eq!(
        (c["title"].as_str(), c["username"].as_str(), c["connection"].as_str()),
        (Some("Show me the users table"), Some("00000000-0000-0000-0000-00000000000a@example.com"), Some("default"))
    );
    assert!(c["id"].as_str().unwrap().starts_with("conv_") && c["created_at"].as_str().unwrap().ends_with('Z'));
    let id = c["id"].as_str().unwrap().to_owned();
    let (_, other) = call(Method::POST, "/api/conversations", &b, Some(json!({"messages": [{"role": "user", "content": "B's question"}]}))).await;

    let (st, l) = call(Method::GET, "/api/conversations?limit=50&offset=0", &a, None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(l["conversations"].as_array().unwrap().len(), 1, "A sees only A's: {l}");
    assert_eq!(l["conversations"][0]["preview"], "Show me the users table");
    let (st, _) = call(Method::GET, &format!("/api/conversations/{id}"), &b, None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "B cannot read A's conversation");
    let (st, _) = call(Method::DELETE, &format!("/api/conversations/{id}"), &b, None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "nor delete it");
    let (st, g) = call(Method::GET, &format!("/api/conversations/{id}"), &a, None).await;
    assert_eq!((st, g["messages"].as_array().unwrap().len()), (StatusCode::OK, 2));

    let (st, p) = call(Method::PUT, &format!("/api/conversations/{id}"), &a, Some(json!({"messages": [{"role": "user", "content": "only one now"}]}))).await;
    assert_eq!((st, p["messages"].as_array().unwrap().len(), p["provider"].as_str()), (StatusCode::OK, 1, Some("anthropic")), "{p}");
    let (st, r) = call(Method::PATCH, &format!("/api/conversations/{id}"), &a, Some(json!({"title": "Renamed"}))).await;
    assert_eq!((st, r["success"].as_bool()), (StatusCode::OK, Some(true)));
    let (_, g) = call(Method::GET, &format!("/api/conversations/{id}"), &a, None).await;
    assert_eq!(g["title"], "Renamed");
    let (st, _) = call(Method::PATCH, &format!("/api/conversations/{id}"), &a, Some(json!({"title": ""}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = call(Method::POST, "/api/conversations", &a, Some(json!({"messages": [{"role": "hacker", "content": 1}]}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = call(Method::GET, "/api/conversations?limit=0", &a, None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = call(Method::DELETE, "/api/conversations", &a, None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "DELETE without ?all=true");

    // The table's RLS is the protection: B's rows survive A's delete-all.
    call(Method::POST, "/api/conversations", &a, Some(json!({"messages": []}))).await;
    let (st, d) = call(Method::DELETE, "/api/conversations?all=true", &a, None).await;
    assert_eq!((st, d["deleted"].as_u64()), (StatusCode::OK, Some(2)), "{d}");
    let left: i64 = tc.superuser().await.unwrap().query_one("select count(*) from agent.conversations", &[]).await.unwrap().get(0);
    assert_eq!(left, 1);
    let (_, g) = call(Method::GET, &format!("/api/conversations/{}", other["id"].as_str().unwrap()), &b, None).await;
    assert_eq!(g["title"], "B's question");

    // Compaction through the API.
    let mut chat = vec![json!({"role": "user", "content": "Show me the users table"})];
    for i in 0..60 {
        chat.push(json!({"role": "assistant", "content": format!("SELECT * FROM orders WHERE id = {i} -- and some more words to count")}));
        chat.push(json!({"role": "user", "content": "ok"}));
    }
    let (st, out) =
        call(Method::POST, "/api/chat/compact", &a, Some(json!({"messages": chat, "max_tokens": 300, "recent_window": 4, "options": {"token_counter_type": "anthropic"}}))).await;
    assert_eq!(st, StatusCode::OK, "{out}");
    assert_eq!(out["compaction_info"]["original_count"], 121);
    assert!(out["compaction_info"]["tokens_saved"].as_u64().unwrap() > 0);
    assert!(out["summary"]["description"].as_str().unwrap().contains("orders"));
    let (st, _) = call(Method::POST, "/api/chat/compact", &a, Some(json!({"messages": [], "options": {"token_counter_type": "gpt9"}}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

/// The LLM stand-in (tests/js/llm_standin.mjs: a scripted local server speaking
/// OpenAI's, Anthropic's and Ollama's wire formats — not a model).
async fn standin() -> (tokio::process::Child, u16) {
    use tokio::io::AsyncBufReadExt;
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js/llm_standin.mjs");
    let mut child = tokio::process::Command::new("node").arg(script).stdout(std::process::Stdio::piped()).kill_on_drop(true).spawn().expect("node");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap().unwrap();
    let port = line.strip_prefix("READY ").unwrap().trim().parse().unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port)
}

/// A streamed chat's events.
async fn sse(http: &Client, gw: &Gateway, token: &str, body: Value) -> Vec<Value> {
    let r = http.post(gw.url("/api/llm/chat")).bearer_auth(token).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    text.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect()
}

#[tokio::test]
async fn the_llm_proxy_and_query_database_through_each_wire_format() {
    let tc = TestCluster::start().await.unwrap();
    tc.superuser().await.unwrap().batch_execute(FIXTURE).await.unwrap();
    let (_llm, port) = standin().await;
    let (openai, ollama) = (format!("http://127.0.0.1:{port}/v1"), format!("http://127.0.0.1:{port}"));
    let http = Client::new();
    let a = user_token(USER_A, json!({}));
    let b = user_token(USER_B, json!({}));
    for (provider, env) in [
        ("openai", vec![("LLM_OPENAI_API_KEY", "sk-openai-test"), ("LLM_OPENAI_URL", openai.as_str()), ("LLM_DEFAULT_MODEL", "gpt-standin")]),
        ("anthropic", vec![("LLM_ANTHROPIC_API_KEY", "sk-ant-test"), ("LLM_ANTHROPIC_URL", ollama.as_str()), ("LLM_DEFAULT_MODEL", "claude-standin")]),
        ("ollama", vec![("LLM_OLLAMA_URL", ollama.as_str()), ("LLM_DEFAULT_MODEL", "llama-standin")]),
    ] {
        let gw = Gateway::serve(&tc, &env).await.unwrap();
        let p: Value = http.get(gw.url("/api/llm/providers")).bearer_auth(&a).send().await.unwrap().json().await.unwrap();
        assert_eq!((p["providers"][0]["name"].as_str(), p["default_provider"].as_str()), (Some(provider), Some(provider)), "{p}");
        assert!(!p.to_string().contains("sk-"), "keys are never returned: {p}");
        let m: Value = http.get(gw.url(&format!("/api/llm/models?provider={provider}"))).bearer_auth(&a).send().await.unwrap().json().await.unwrap();
        assert!(m["models"][0]["id"].as_str().unwrap_or_else(|| panic!("{provider}: {m}")).contains("standin"), "{m}");
        let c: Value = http
            .post(gw.url("/api/llm/chat"))
            .bearer_auth(&a)
            .json(&json!({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "how many notes?"}]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(c["provider"], provider, "{c}");
        assert!(c["message"]["content"].as_str().unwrap().contains("SELECT count(*)"), "{c}");
        let t: Value = http
            .post(gw.url("/api/llm/chat"))
            .bearer_auth(&a)
            .json(&json!({"messages": [{"role": "user", "content": "count notes"}], "tools": ["execute_sql"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!((t["tool_calls"][0]["name"].as_str(), t["tool_calls"][0]["arguments"]["sql"].as_str()), (Some("execute_sql"), Some("SELECT count(*) AS n FROM notes")), "{t}");
        // Streaming: server-sent events, the text in pieces, then done.
        let text = http
            .post(gw.url("/api/llm/chat"))
            .bearer_auth(&a)
            .json(&json!({"messages": [{"role": "user", "content": "how many notes?"}], "stream": true}))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let events: Vec<Value> = text.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
        let deltas: String = events.iter().filter(|e| e["type"] == "delta").map(|e| e["content"].as_str().unwrap()).collect();
        assert_eq!(deltas, "```sql\nSELECT count(*) AS n FROM notes\n```", "{provider}: {text}");
        assert!(events.iter().filter(|e| e["type"] == "delta").count() >= 3, "{text}");
        assert_eq!((events.last().unwrap()["type"].as_str(), events.last().unwrap()["provider"].as_str()), (Some("done"), Some(provider)), "{text}");
        // A streamed turn that asks for a tool: the call assembled from its pieces.
        let events = sse(&http, &gw, &a, json!({"messages": [{"role": "user", "content": "count notes"}], "tools": ["execute_sql"], "stream": true})).await;
        let call = events.iter().find(|e| e["type"] == "tool_call").unwrap_or_else(|| panic!("{provider}: {events:?}"));
        assert_eq!((call["name"].as_str(), call["arguments"]["sql"].as_str()), (Some("execute_sql"), Some("SELECT count(*) AS n FROM notes")), "{provider}: {events:?}");
        let done = events.last().unwrap();
        assert_eq!((done["type"].as_str(), done["tool_calls"][0]["name"].as_str()), (Some("done"), Some("execute_sql")), "{events:?}");
        // The server-side loop: the gateway runs the call as the caller (RLS decides:
        // A counts 2 notes, B 1), hands the result back in the provider's format (the
        // stand-in refuses a malformed one) and returns the model's final answer.
        for (token, n) in [(&a, 2), (&b, 1)] {
            let r = http
                .post(gw.url("/api/llm/chat"))
                .bearer_auth(token)
                .json(&json!({"messages": [{"role": "user", "content": "count notes"}], "run_tools": true}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{provider}");
            let t: Value = r.json().await.unwrap();
            let answer = t["message"]["content"].as_str().unwrap_or_else(|| panic!("{provider}: {t}"));
            assert!(answer.starts_with("Tool said: SQL: SELECT count(*) AS n FROM notes") && answer.contains(&format!("[{{\"n\":{n}}}]")), "{provider}: {t}");
            assert_eq!((t["rounds"].as_u64(), t["tool_results"][0]["is_error"].as_bool(), t["tool_calls"].as_array().map(Vec::len)), (Some(1), Some(false), Some(0)), "{t}");
            let events = sse(&http, &gw, token, json!({"messages": [{"role": "user", "content": "count notes"}], "run_tools": true, "stream": true})).await;
            let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).filter(|k| *k != "delta").collect();
            assert_eq!(kinds, ["tool_call", "tool_result", "done"], "{provider}: {events:?}");
            let result = events.iter().find(|e| e["type"] == "tool_result").unwrap();
            assert!(result["content"].as_str().unwrap().contains(&format!("[{{\"n\":{n}}}]")), "{result}");
            let text: String = events.iter().filter(|e| e["type"] == "delta").map(|e| e["content"].as_str().unwrap()).collect();
            assert!(text.starts_with("Tool said: SQL: SELECT count(*)"), "{provider}: {text}");
            assert_eq!(events.last().unwrap()["rounds"], 1);
        }
        // max_tool_rounds out of range.
        let r = http
            .post(gw.url("/api/llm/chat"))
            .bearer_auth(&a)
            .json(&json!({"messages": [{"role": "user", "content": "x"}], "run_tools": true, "max_tool_rounds": 99}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = http.post(gw.url("/api/llm/chat")).bearer_auth(&a).json(&json!({"messages": [{"role": "user", "content": "x"}], "tools": ["drop_database"]})).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        // query_database end to end: the LLM writes the SQL, it runs as user A under RLS.
        let (_, r) = rpc(
            &http,
            &gw,
            Some(&a),
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "query_database", "arguments": {"query": "How many notes are there?"}}}),
        )
        .await;
        let res = &r["result"];
        assert_eq!(res["isError"], false, "{r}");
        assert_eq!(
            (res["structuredContent"]["sql"].as_str(), res["structuredContent"]["rows"][0]["n"].as_i64()),
            (Some("SELECT count(*) AS n FROM notes"), Some(2)),
            "A sees her two notes: {r}"
        );
        assert!(res["content"][0]["text"].as_str().unwrap().starts_with("SQL: SELECT count(*)"));
        let bad = http.get(gw.url("/api/llm/models?provider=gpt9")).bearer_auth(&a).send().await.unwrap();
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    }
    // Wrong key and a provider that is down: 502 naming the provider, never a 500.
    let closed = format!("http://127.0.0.1:{}", pgstack_gateway::dev::cluster::free_port(None).unwrap());
    let gw = Gateway::serve(&tc, &[("LLM_OPENAI_API_KEY", "sk-wrong"), ("LLM_OPENAI_URL", openai.as_str()), ("LLM_OLLAMA_URL", closed.as_str())]).await.unwrap();
    let r = http
        .post(gw.url("/api/llm/chat"))
        .bearer_auth(&a)
        .json(&json!({"provider": "openai", "model": "x", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert!(r.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("Incorrect API key"));
    let r = http.get(gw.url("/api/llm/models?provider=ollama")).bearer_auth(&a).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let r = http.get(gw.url("/api/llm/models?provider=anthropic")).bearer_auth(&a).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "not configured");
    let r = http.post(gw.url("/api/llm/chat")).bearer_auth(&a).json(&json!({"provider": "openai", "messages": []})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

/// Saved workbench configurations are agent databases: each user sees its own (the
/// service key all), selects one, and the tools run there as the configuration's user
/// within its allowed_tables. API tokens made by the service key are stored hashed,
/// carry their user's claims and may be bound to one database (403 on switching).
#[tokio::test]
async fn saved_databases_and_api_tokens() {
    let tc = TestCluster::start().await.unwrap();
    tc.superuser().await.unwrap().batch_execute(FIXTURE).await.unwrap();
    let target = TestCluster::start_bare().unwrap();
    target.superuser().await.unwrap().batch_execute("create table items (id int primary key, name text); insert into items values (1, 'x'), (2, 'y'); create table payroll (id int, pay int); insert into payroll values (1, 100);").await.unwrap();
    let gw = Gateway::serve(
        &tc,
        &[
            ("WORKBENCH_ENABLED", "true"),
            ("WORKBENCH_ALLOW_PRIVATE", "true"),
            ("WORKBENCH_ROLES", "authenticated"),
            ("WORKBENCH_SECRET_KEY", "agent-test-key-0123456789-abcdefghijkl"),
        ],
    )
    .await
    .unwrap();
    let http = Client::new();
    let (a, b) = (user_token(USER_A, json!({})), user_token(USER_B, json!({})));
    let service = keys::mint(Role::ServiceRole, &Secret::new(JWT_SECRET)).unwrap();
    let call = |method: reqwest::Method, path: &str, token: &str, body: Option<Value>| {
        let mut r = http.request(method, gw.url(path)).bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let res = r.send().await.unwrap();
            let st = res.status();
            (st, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // A saves a configuration of the target limited to `items`.
    let conn = json!({"host": "127.0.0.1", "port": target.cluster.running_port().unwrap(), "database": "postgres", "username": "postgres", "password": pgstack_tests::PASSWORD, "ssl": false});
    let (st, cfg) =
        call(reqwest::Method::POST, "/api/database-configs", &a, Some(json!({"name": "shop", "connection_config": conn, "settings": {"allowed_tables": ["public.items"]}}))).await;
    assert_eq!(st, StatusCode::CREATED, "{cfg}");
    let (_, d) = call(reqwest::Method::GET, "/api/databases", &a, None).await;
    let names: Vec<&str> = d["databases"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["default", "shop"], "{d}");
    assert_eq!(d["databases"][1]["user"], "postgres");
    assert!(!d.to_string().contains(pgstack_tests::PASSWORD));
    let (_, d) = call(reqwest::Method::GET, "/api/databases", &b, None).await;
    assert_eq!(d["databases"].as_array().unwrap().len(), 1, "B does not see A's configuration: {d}");
    let (st, r) = call(reqwest::Method::POST, "/api/databases/select", &b, Some(json!({"name": "shop"}))).await;
    assert_eq!((st, r["error"].as_str()), (StatusCode::FORBIDDEN, Some("Access denied to this database")), "{r}");
    // A selects it: the tools run on the target, within allowed_tables.
    let (st, r) = call(reqwest::Method::POST, "/api/databases/select", &a, Some(json!({"name": "shop"}))).await;
    assert_eq!((st, r["current"].as_str()), (StatusCode::OK, Some("shop")), "{r}");
    let tool = |token: String, sql: &str| {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "execute_sql", "arguments": {"sql": sql}}});
        let (http, gw) = (&http, &gw);
        async move {
            let (st, v) = rpc(http, gw, Some(&token), body).await;
            assert!(v["result"].is_object(), "{st}: {v}");
            v["result"].clone()
        }
    };
    let r = tool(a.clone(), "select count(*) as n from items").await;
    assert_eq!((r["isError"].as_bool(), r["structuredContent"]["rows"][0]["n"].as_i64()), (Some(false), Some(2)), "{r}");
    let r = tool(a.clone(), "select * from payroll").await;
    assert_eq!(r["isError"], true, "outside allowed_tables: {r}");
    assert!(r["content"][0]["text"].as_str().unwrap().contains("payroll"), "{r}");
    let r = tool(a.clone(), "delete from items").await;
    assert_eq!(r["isError"], true, "reads only: {r}");
    let r = tool(b.clone(), "select count(*) as n from notes").await;
    assert_eq!(r["structuredContent"]["rows"][0]["n"], 1, "B stays on this cluster under RLS: {r}");
    // A CTE named like a table outside allowed_tables does not hide the table.
    for sql in ["with payroll as (select * from payroll) select * from payroll", "select * from payroll where exists (with payroll as (select 1) select 1 from payroll)"] {
        let r = tool(a.clone(), sql).await;
        assert_eq!(r["isError"], true, "{sql}: {r}");
        assert!(!r.to_string().contains("100"), "{r}");
    }
    // On this cluster nothing may switch the role or the claims the SQL runs as.
    for sql in [
        "select set_config('role', 'service_role', true) as r, (select count(*) from notes) as n",
        "select query_to_xml('select * from notes', true, false, '') as x",
        "select * from pg_catalog.set_config('request.jwt.claims', '{\"sub\":\"00000000-0000-0000-0000-00000000000a\"}', true)",
    ] {
        let r = tool(b.clone(), sql).await;
        assert_eq!(r["isError"], true, "{sql}: {r}");
        assert!(r["content"][0]["text"].as_str().unwrap().contains("cannot be called here"), "{r}");
    }
    let (_, schema) = rpc(&http, &gw, Some(&a), json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_schema_info", "arguments": {}}})).await;
    let text = schema["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("\"items\"") && !text.contains("payroll"), "only allowed tables are shown: {text}");

    // API tokens: only the service key makes them.
    let (st, _) = call(reqwest::Method::POST, "/api/tokens", &a, Some(json!({"name": "bot"}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, r) = call(reqwest::Method::POST, "/api/tokens", &service, Some(json!({"name": "bot", "user_id": USER_A, "database": "nowhere"}))).await;
    assert_eq!((st, r["error"].as_str()), (StatusCode::NOT_FOUND, Some("Database not found")), "{r}");
    let (st, r) = call(reqwest::Method::POST, "/api/tokens", &service, Some(json!({"name": "bot", "user_id": "00000000-0000-0000-0000-0000000000ff"}))).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{r}");
    let (st, r) = call(reqwest::Method::POST, "/api/tokens", &service, Some(json!({"name": "bot", "role": "postgres"}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{r}");
    let (st, made) = call(reqwest::Method::POST, "/api/tokens", &service, Some(json!({"name": "a-bot", "user_id": USER_A, "database": "default"}))).await;
    assert_eq!(st, StatusCode::CREATED, "{made}");
    let token = made["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("pgsa_") && token.len() >= 40, "{made}");
    let stored: Vec<u8> = tc.superuser().await.unwrap().query_one("select token_hash from agent.api_tokens where name = 'a-bot'", &[]).await.unwrap().get(0);
    assert_eq!(stored.len(), 32);
    assert!(!String::from_utf8_lossy(&stored).contains(&token[5..]), "stored hashed");
    let (_, list) = call(reqwest::Method::GET, "/api/tokens", &service, None).await;
    assert_eq!((list["tokens"][0]["name"].as_str(), list["tokens"][0]["database"].as_str()), (Some("a-bot"), Some("default")), "{list}");
    assert!(!list.to_string().contains(&token), "never shown again: {list}");
    // The token acts as A (RLS: A's two notes), is bound to `default`.
    let r = tool(token.clone(), "select count(*) as n from notes").await;
    assert_eq!(r["structuredContent"]["rows"][0]["n"], 2, "{r}");
    let (st, u) = call(reqwest::Method::GET, "/api/user/info", &token, None).await;
    assert_eq!((st, u["username"].as_str()), (StatusCode::OK, Some("alice@example.com")), "{u}");
    let (st, r) = call(reqwest::Method::POST, "/api/databases/select", &token, Some(json!({"name": "shop"}))).await;
    assert_eq!((st, r["error"].as_str()), (StatusCode::FORBIDDEN, Some("API token is bound to a different database")), "{r}");
    let (_, d) = call(reqwest::Method::GET, "/api/databases", &token, None).await;
    assert_eq!((d["databases"].as_array().unwrap().len(), d["current"].as_str()), (1, Some("default")), "{d}");
    // A token bound to the saved configuration runs there, bound by its id: a
    // configuration B names the same later does not take its place.
    let (_, shop_token) = call(reqwest::Method::POST, "/api/tokens", &service, Some(json!({"name": "shop-bot", "user_id": USER_A, "database": "shop"}))).await;
    assert_eq!(shop_token["database"], cfg["data"]["id"], "{shop_token}");
    let shop_token = shop_token["token"].as_str().unwrap().to_owned();
    let r = tool(shop_token.clone(), "select count(*) as n from items").await;
    assert_eq!(r["structuredContent"]["rows"][0]["n"], 2, "{r}");
    let (st, _) = call(reqwest::Method::POST, "/api/database-configs", &b, Some(json!({"name": "shop", "is_primary": true, "connection_config": conn}))).await;
    assert_eq!(st, StatusCode::CREATED);
    let (_, d) = call(reqwest::Method::GET, "/api/databases", &service, None).await;
    assert_eq!(d["databases"][1]["config_id"], cfg["data"]["id"], "the oldest keeps the name: {d}");
    assert!(d["databases"][2]["name"].as_str().unwrap().starts_with("shop#"), "{d}");
    let (_, a_cfg) = call(reqwest::Method::GET, &format!("/api/database-configs/{}", cfg["data"]["id"].as_str().unwrap()), &a, None).await;
    assert_eq!(a_cfg["data"]["is_primary"], false, "A's flags are A's: {a_cfg}");
    let r = tool(shop_token.clone(), "select count(*) as n from items").await;
    assert_eq!(r["structuredContent"]["rows"][0]["n"], 2, "{r}");
    // A service_role API token is not the service key: it cannot make tokens.
    let (_, svc_token) =
        call(reqwest::Method::POST, "/api/tokens", &service, Some(json!({"name": "svc", "role": "service_role", "database": "default", "expires_in_days": 1}))).await;
    let (st, _) = call(reqwest::Method::POST, "/api/tokens", svc_token["token"].as_str().unwrap(), Some(json!({"name": "escaped", "role": "service_role"}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // A banned user's tokens stop working; a deleted user's are gone.
    tc.superuser().await.unwrap().batch_execute(&format!("update auth.users set banned_until = now() + interval '1 day' where id = '{USER_A}'")).await.unwrap();
    let (st, _) = call(reqwest::Method::GET, "/api/databases", &shop_token, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "banned");
    let (st, _) = call(reqwest::Method::GET, "/api/databases", &a, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "a banned user's own JWT, still unexpired");
    let ghost = user_token("00000000-0000-0000-0000-0000000000ff", json!({}));
    let (st, _) = call(reqwest::Method::GET, "/api/databases", &ghost, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "a validly signed JWT of a user that does not exist (deleted)");
    tc.superuser().await.unwrap().batch_execute(&format!("update auth.users set banned_until = null where id = '{USER_A}'")).await.unwrap();
    let (st, _) = call(reqwest::Method::GET, "/api/databases", &shop_token, None).await;
    assert_eq!(st, StatusCode::OK);
    // Unknown, revoked and forged tokens: 401.
    let (st, _) = call(reqwest::Method::GET, "/api/databases", "pgsa_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = call(reqwest::Method::GET, "/api/databases", "pgsa_'; drop table notes; --", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = call(reqwest::Method::DELETE, &format!("/api/tokens/{}", made["id"].as_str().unwrap()), &service, None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = call(reqwest::Method::GET, "/api/databases", &token, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "revoked at once");
    let (st, _) = call(reqwest::Method::DELETE, &format!("/api/tokens/{}", made["id"].as_str().unwrap()), &service, None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // An expired token.
    let (_, old) = call(reqwest::Method::POST, "/api/tokens", &service, Some(json!({"name": "old", "user_id": USER_B, "expires_in_days": 1}))).await;
    tc.superuser().await.unwrap().batch_execute("update agent.api_tokens set expires_at = now() - interval '1 second' where name = 'old'").await.unwrap();
    let (st, _) = call(reqwest::Method::GET, "/api/databases", old["token"].as_str().unwrap(), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}
