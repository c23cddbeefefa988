//! Issue 14: hostile input against the real gateway. Each case asserts the status and
//! the contract's JSON body, and after every one the process must still answer
//! /health and the fixture rows must be unchanged (nothing read past RLS, nothing
//! written).

use pgstack_gateway::config::Secret;
use pgstack_gateway::keys;
use pgstack_shared::{JwtClaims, Role};
use pgstack_tests::{Gateway, TestCluster, JWT_SECRET};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

const ALICE: &str = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
const BOB: &str = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb";

const FIXTURE: &str = r#"
CREATE TABLE public.notes (id bigserial PRIMARY KEY, owner uuid NOT NULL, body text NOT NULL, data jsonb);
ALTER TABLE public.notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON public.notes FOR ALL TO authenticated USING (owner = auth.uid()) WITH CHECK (owner = auth.uid());
GRANT SELECT, INSERT, UPDATE, DELETE ON public.notes TO authenticated;
GRANT USAGE ON SEQUENCE public.notes_id_seq TO authenticated;
GRANT ALL ON public.notes TO service_role;
INSERT INTO public.notes (owner, body, data) VALUES
    ('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 'alice secret', '{"k": "v", "n": [1, 2]}'),
    ('bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', 'bob secret', '{"k": "w"}');
CREATE TABLE public.open (id int PRIMARY KEY, name text);
GRANT SELECT ON public.open TO anon, authenticated;
INSERT INTO public.open VALUES (1, 'one'), (2, 'two');
"#;

struct H {
    http: Client,
    gw: Gateway,
    anon: String,
    service: String,
    _tc: TestCluster,
}

fn sign(claims: Value) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes())).unwrap()
}

fn user(sub: &str) -> String {
    let mut c = JwtClaims::api_key(Role::Authenticated, keys::now(), 600);
    c.sub = Some(sub.into());
    keys::sign(&c, &Secret::new(JWT_SECRET)).unwrap()
}

impl H {
    async fn start() -> H {
        let tc = TestCluster::start().await.unwrap();
        tc.superuser().await.unwrap().batch_execute(FIXTURE).await.unwrap();
        let s = Secret::new(JWT_SECRET);
        let anon = keys::mint(Role::Anon, &s).unwrap();
        let service = keys::mint(Role::ServiceRole, &s).unwrap();
        let gw = Gateway::serve(&tc, &[("ANON_KEY", &anon), ("SERVICE_ROLE_KEY", &service)]).await.unwrap();
        H { http: Client::new(), gw, anon, service, _tc: tc }
    }

    async fn send(&self, method: Method, path: &str, headers: HeaderMap, body: Option<Vec<u8>>) -> (StatusCode, HeaderMap, Value) {
        let mut r = self.http.request(method, self.gw.url(path)).headers(headers);
        if let Some(b) = body {
            r = r.body(b);
        }
        let res = r.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let (st, h) = (res.status(), res.headers().clone());
        let text = res.text().await.unwrap();
        let v = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text:?}")) };
        (st, h, v)
    }

    fn keys(&self, bearer: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("apikey", HeaderValue::from_str(&self.anon).unwrap());
        h.insert("authorization", HeaderValue::from_str(&format!("Bearer {bearer}")).unwrap());
        h
    }

    async fn get(&self, path: &str, bearer: &str) -> (StatusCode, Value) {
        let (st, _, v) = self.send(Method::GET, path, self.keys(bearer), None).await;
        (st, v)
    }

    /// The process answers and the fixture is as it was.
    async fn still_healthy(&self, after: &str) {
        let (st, _, v) = self.send(Method::GET, "/health", HeaderMap::new(), None).await;
        assert_eq!((st, &v["status"]), (StatusCode::OK, &json!("ok")), "after {after}");
        let (st, rows) = self.get("/rest/v1/notes?select=owner,body&order=id", &self.service).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(rows, json!([{"owner": ALICE, "body": "alice secret"}, {"owner": BOB, "body": "bob secret"}]), "after {after}");
    }
}

/// A 4xx with the contract's JSON body (`error`, and PostgREST's `code` on REST).
#[track_caller]
fn refused(case: &str, st: StatusCode, v: &Value, status: StatusCode, code: Option<&str>) {
    assert_eq!(st, status, "{case}: {v}");
    assert!(v["error"].is_string() && v["message"].is_string(), "{case}: {v}");
    if let Some(c) = code {
        assert_eq!(v["code"], c, "{case}: {v}");
    }
}

#[tokio::test]
async fn deep_nesting_is_a_parse_error_not_a_crash() {
    let h = H::start().await;
    let alice = user(ALICE);
    let cases = [
        ("embeds 4000 deep", format!("/rest/v1/notes?select={}id{}", "a(".repeat(4000), ")".repeat(4000))),
        ("unclosed or 10000 deep", format!("/rest/v1/notes?or=({}", "or(".repeat(10000))),
        ("closed or 3000 deep", format!("/rest/v1/notes?or=({}id.eq.1{})", "or(".repeat(3000), ")".repeat(3000))),
        ("and/not 3000 deep", format!("/rest/v1/notes?and=({}id.eq.1{})", "not.and(".repeat(3000), ")".repeat(3000))),
        ("embed scope path 3000 deep", format!("/rest/v1/notes?{}id=eq.1", "a.".repeat(3000))),
    ];
    for (case, path) in &cases {
        let (st, v) = h.get(path, &alice).await;
        refused(case, st, &v, StatusCode::BAD_REQUEST, Some("PGRST100"));
        h.still_healthy(case).await;
    }
    // Within the bound, nesting still works.
    let (st, v) = h.get(&format!("/rest/v1/open?or=({}id.eq.1{})&order=id", "or(".repeat(10), ")".repeat(10)), &alice).await;
    assert_eq!((st, v), (StatusCode::OK, json!([{"id": 1, "name": "one"}])));
}

#[tokio::test]
async fn casts_name_catalog_types_and_nothing_else() {
    let h = H::start().await;
    let alice = user(ALICE);
    // The reported injection: the cast closed the select list and unioned.
    for path in [
        "/rest/v1/notes?select=id::text FROM notes _pgs_r UNION SELECT session_user",
        "/rest/v1/notes?select=id::text%20FROM%20pg_user%20_pgs_r%20UNION%20SELECT%20usename",
        "/rest/v1/notes?select=id::text);select 1--",
        "/rest/v1/notes?select=id::int4(1)",
    ] {
        let (st, v) = h.get(path, &alice).await;
        assert!(st == StatusCode::BAD_REQUEST, "{path}: {st} {v}");
        assert!(v["error"].is_string(), "{path}: {v}");
        assert!(!v.to_string().contains("authenticator"), "{path}: {v}");
    }
    // Real types, in their SQL-standard and catalog spellings.
    let (st, v) = h.get("/rest/v1/notes?select=id::text,body::character varying,n:id::double precision,i:id::integer", &alice).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 1, "RLS still decides: {v}");
    assert_eq!(v[0]["id"], "1");
    assert_eq!(v[0]["body"], "alice secret");
    assert_eq!(v[0]["n"].as_f64(), Some(1.0));
    assert_eq!(v[0]["i"], 1);
    let (st, v) = h.get("/rest/v1/notes?select=id::no_such_type", &alice).await;
    refused("unknown type", st, &v, StatusCode::BAD_REQUEST, Some("42704"));
    h.still_healthy("casts").await;
}

#[tokio::test]
async fn json_path_keys_and_aliases_never_become_sql() {
    let h = H::start().await;
    let anon = h.anon.clone();
    // The reported exploit: an unquoted "-" index turned the rest of the line into a
    // comment, and a newline in a quoted alias ended it inside live SQL.
    let exploit = "/rest/v1/notes?select=data->\"-\"->a,\"%0A$1::text) AS a, query_to_xml('select email,encrypted_password from auth.users'||left(set_config('role','pgstack_auth_admin',true),0),true,false,'') AS x FROM (SELECT '{}'::jsonb AS data WHERE $2::text IS NOT NULL) _pgs_r) _pgs_t --\":id";
    for key in [&anon, &user(BOB)] {
        let (st, v) = h.get(exploit, key).await;
        assert_eq!((st, v["code"].as_str()), (StatusCode::BAD_REQUEST, Some("PGRST100")), "{v}");
        assert!(!v.to_string().contains("<row>"), "query_to_xml ran: {v}");
    }
    // "-" and other odd keys are JSON keys, bound as values: rows come back as RLS allows.
    let (st, v) = h.get("/rest/v1/notes?select=body,x:data->\"-\"->a,y:data->-1,z:data->\"--\"&order=id", &user(ALICE)).await;
    assert_eq!((st, v), (StatusCode::OK, json!([{"body": "alice secret", "x": null, "y": null, "z": null}])));
    let (st, v) = h.get("/rest/v1/notes?select=n:data->n->-1", &user(ALICE)).await;
    assert_eq!((st, v), (StatusCode::OK, json!([{"n": 2}])));
    // Aliases are names: no control characters, unquoted ones in the field grammar.
    let (st, v) = h.get("/rest/v1/notes?select=%22a%0Ab%22:body", &user(ALICE)).await;
    refused("newline alias", st, &v, StatusCode::BAD_REQUEST, Some("PGRST100"));
    let (st, v) = h.get("/rest/v1/notes?select=a)b:body", &user(ALICE)).await;
    refused("alias grammar", st, &v, StatusCode::BAD_REQUEST, Some("PGRST100"));
    h.still_healthy("json paths").await;
}

#[tokio::test]
async fn batches_and_json_paths_are_bounded() {
    let h = H::start().await;
    h._tc
        .superuser()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE public.wide (id int PRIMARY KEY, pad text);
         INSERT INTO public.wide SELECT g, repeat('x', 100) FROM generate_series(1, 1000) g;
         GRANT SELECT ON public.wide TO anon;",
        )
        .await
        .unwrap();
    let mut hd = h.keys(&h.service);
    hd.insert("content-type", HeaderValue::from_static("application/json"));
    let (st, _, _) = h.send(Method::POST, "/api/catalog/refresh", hd, None).await;
    assert_eq!(st, StatusCode::OK);
    // 100 reads of ~130 kB each: past the batch's 4 MiB of results, refused whole.
    let ops: Vec<Value> = (0..100).map(|i| json!({"id": format!("r{i}"), "method": "GET", "path": "/wide?select=id,pad"})).collect();
    let mut hd = h.keys(&h.anon);
    hd.insert("content-type", HeaderValue::from_static("application/json"));
    let (st, _, v) = h.send(Method::POST, "/rest/v1/batch", hd.clone(), Some(json!({"operations": ops}).to_string().into_bytes())).await;
    refused("batch results", st, &v, StatusCode::PAYLOAD_TOO_LARGE, Some("PGRST413"));
    let ops: Vec<Value> = (0..3).map(|i| json!({"id": format!("r{i}"), "method": "GET", "path": "/wide?select=id&limit=2"})).collect();
    let (st, _, v) = h.send(Method::POST, "/rest/v1/batch", hd, Some(json!({"operations": ops}).to_string().into_bytes())).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // JSON paths: 64 steps at most (each is an operator Postgres nests).
    let (st, v) = h.get(&format!("/rest/v1/notes?select=x:data{}", "->a".repeat(64)), &user(ALICE)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = h.get(&format!("/rest/v1/notes?select=x:data{}", "->a".repeat(5000)), &user(ALICE)).await;
    refused("5000-step JSON path", st, &v, StatusCode::BAD_REQUEST, Some("PGRST100"));
    h.still_healthy("batches").await;
}

#[tokio::test]
async fn malformed_paths_filters_and_lists_are_400() {
    let h = H::start().await;
    let alice = user(ALICE);
    for (case, path) in [
        ("select json path garbage", "/rest/v1/notes?select=data->>--34"),
        ("select json path bad negative", "/rest/v1/notes?select=data->>-78xy"),
        ("filter json path garbage", "/rest/v1/notes?data->>--34=eq.1"),
        ("filter bad column chars", "/rest/v1/notes?bo!dy=eq.1"),
        ("order json path garbage", "/rest/v1/notes?order=data->--1.desc"),
    ] {
        let (st, v) = h.get(path, &alice).await;
        refused(case, st, &v, StatusCode::BAD_REQUEST, Some("PGRST100"));
    }
    // like(all) with something that is not a list: Postgres's own array parser refuses.
    let (st, v) = h.get("/rest/v1/notes?body=like(all).abc", &alice).await;
    refused("like(all) bad list", st, &v, StatusCode::BAD_REQUEST, Some("22P02"));
    let (st, v) = h.get("/rest/v1/notes?body=like(all).{alice*,*secret}&select=body", &alice).await;
    assert_eq!((st, v), (StatusCode::OK, json!([{"body": "alice secret"}])));
    // JSON paths that are well formed still work.
    let (st, v) = h.get("/rest/v1/notes?select=k:data->>k,first:data->n->0&data->>k=eq.v", &alice).await;
    assert_eq!((st, v), (StatusCode::OK, json!([{"k": "v", "first": 1}])));
    h.still_healthy("filters").await;
}

#[tokio::test]
async fn credentials_that_are_present_must_be_valid() {
    let h = H::start().await;
    let mut basic = HeaderMap::new();
    basic.insert("apikey", HeaderValue::from_str(&h.anon).unwrap());
    basic.insert("authorization", HeaderValue::from_static("Basic YWxhZGRpbjpvcGVuc2VzYW1l"));
    let (st, _, v) = h.send(Method::GET, "/rest/v1/open", basic, None).await;
    refused("basic auth", st, &v, StatusCode::UNAUTHORIZED, None);

    let mut odd = HeaderMap::new();
    odd.insert("apikey", HeaderValue::from_str(&h.anon).unwrap());
    let mut bytes = format!("Bearer {}", h.anon).into_bytes();
    bytes.insert(20, 0xC3);
    odd.insert("authorization", HeaderValue::from_bytes(&bytes).unwrap());
    let (st, _, v) = h.send(Method::GET, "/rest/v1/open", odd, None).await;
    refused("non-ASCII bearer", st, &v, StatusCode::UNAUTHORIZED, None);

    let mut bad_apikey = HeaderMap::new();
    bad_apikey.insert("apikey", HeaderValue::from_bytes(b"\xffnot-a-key").unwrap());
    let (st, _, v) = h.send(Method::GET, "/rest/v1/open", bad_apikey, None).await;
    refused("non-ASCII apikey", st, &v, StatusCode::UNAUTHORIZED, None);

    // Role claims that are not roles a request may take.
    for role in ["none", "NONE", "public", "session_user", "authenticator", "pg_read_all_data", "postgres"] {
        let t = sign(json!({"role": role, "exp": keys::now() + 600}));
        let (st, v) = h.get("/rest/v1/notes", &t).await;
        refused(role, st, &v, StatusCode::UNAUTHORIZED, None);
    }
    // Tokens without exp are refused unless JWT_REQUIRE_EXP=false.
    let (st, v) = h.get("/rest/v1/open", &sign(json!({"role": "anon"}))).await;
    refused("no exp", st, &v, StatusCode::UNAUTHORIZED, None);
    // A role that exists but that the login role is not a member of: Postgres refuses.
    h._tc.superuser().await.unwrap().batch_execute("CREATE ROLE outsider NOLOGIN; GRANT SELECT ON public.notes TO outsider").await.unwrap();
    let t = sign(json!({"role": "outsider", "exp": keys::now() + 600}));
    let (st, v) = h.get("/rest/v1/notes", &t).await;
    assert!(st.is_client_error() && v["error"].is_string(), "{st} {v}");
    assert!(!v.to_string().contains("secret"), "{v}");
    h.still_healthy("credentials").await;
}

#[tokio::test]
async fn every_layer_answers_errors_in_json() {
    let h = H::start().await;
    // Body over the 2 MiB limit by one byte (axum's extractor), on a raw socket: the
    // whole body is sent before the answer is read, so the close cannot race it.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let port: u16 = h.gw.base.rsplit(':').next().unwrap().parse().unwrap();
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let head = format!(
            "POST /rest/v1/open HTTP/1.1\r\nHost: x\r\napikey: {k}\r\nAuthorization: Bearer {k}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            2 * 1024 * 1024 + 1,
            k = h.service
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&vec![b' '; 2 * 1024 * 1024 + 1]).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
        let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap_or(Value::Null);
        assert!(body["error"].is_string(), "{text}");
    }
    // Query-string extractor: a duplicated field.
    let (st, _, v) = h.send(Method::POST, "/auth/v1/token?grant_type=password&grant_type=refresh_token", h.keys(&h.anon), Some(b"{}".to_vec())).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error_code"].is_string() && v["msg"].is_string(), "auth dialect: {v}");
    // Method routing.
    let (st, _, v) = h.send(Method::PUT, "/health", HeaderMap::new(), None).await;
    refused("405", st, &v, StatusCode::METHOD_NOT_ALLOWED, None);
    let (st, _, v) = h.send(Method::PATCH, "/storage/v1/bucket", h.keys(&h.service), None).await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED, "{v}");
    assert_eq!(v["statusCode"], "405", "storage dialect: {v}");
    // A WebSocket route hit without an upgrade.
    let (st, _, v) = h.send(Method::GET, "/ws/anything", h.keys(&h.anon), None).await;
    assert!(st.is_client_error() && v["error"].is_string(), "{st} {v}");
    h.still_healthy("layers").await;
}
