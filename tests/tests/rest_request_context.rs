//! Issue 16: JWT handling and the request context as PostgREST does them — claim
//! validation with its messages and WWW-Authenticate, JWT_AUD, and the `request.*`
//! settings a function or policy reads (`request.cookies`, `request.headers` without
//! the Cookie header, `request.method`, `request.path`, `request.jwt.claims` with the
//! role inserted).

use pgstack_tests::{Gateway, TestCluster, JWT_SECRET};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const FIXTURE: &str = r#"
CREATE FUNCTION public.context() RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'cookies', current_setting('request.cookies', true)::json,
        'headers', current_setting('request.headers', true)::json,
        'method', current_setting('request.method', true),
        'path', current_setting('request.path', true),
        'claims', current_setting('request.jwt.claims', true)::json,
        'role', current_user)
$$;
GRANT EXECUTE ON FUNCTION public.context() TO anon, authenticated;
CREATE TABLE public.items (id int PRIMARY KEY, tags int[], name text, "a.b c" text, ":odd::name" text);
INSERT INTO public.items VALUES (1, '{1,2,3}', 'one', 'x', 'y'), (2, '{2}', 'two', 'z', 'w'), (3, '{3}', 'three', NULL, NULL);
GRANT ALL ON public.items TO anon;
CREATE FUNCTION public.teapot() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE SQLSTATE 'PGRST' USING
        MESSAGE = '{"code":"T1","message":"short and stout","details":"d","hint":"h"}',
        DETAIL = '{"status":418,"status_text":"I Am A Teapot","headers":{"X-Pot":"yes"}}';
END $$;
GRANT EXECUTE ON FUNCTION public.teapot() TO anon;
CREATE FUNCTION public.items_location() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('response.headers', json_build_array(json_build_object('Location', '/items/' || NEW.id))::text, true);
    RETURN NEW;
END $$;
CREATE TRIGGER items_location AFTER INSERT ON public.items FOR EACH ROW EXECUTE FUNCTION public.items_location();
"#;

fn token(claims: Value) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes())).unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

async fn get(http: &Client, gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut r = http.get(gw.url(&format!("/rest/v1{path}")));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let res = r.send().await.unwrap();
    let (st, h) = (res.status(), res.headers().clone());
    (st, h, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn tokens_are_validated_with_postgrest_messages_and_the_request_context_reaches_postgres() {
    let tc = TestCluster::start().await.unwrap();
    tc.superuser().await.unwrap().batch_execute(FIXTURE).await.unwrap();
    let gw = Gateway::serve(&tc, &[("JWT_AUD", "youraudience")]).await.unwrap();
    let http = Client::new();
    let anon = pgstack_gateway::keys::mint(pgstack_shared::Role::Anon, &pgstack_gateway::config::Secret::new(JWT_SECRET)).unwrap();

    // The context a function sees.
    let user = token(json!({"sub": "11111111-1111-1111-1111-111111111111", "role": "authenticated", "exp": now() + 600, "aud": "youraudience"}));
    let auth = format!("Bearer {user}");
    let (st, _, ctx) = get(&http, &gw, "/rpc/context", &[("apikey", &anon), ("authorization", &auth), ("cookie", "session=abc; theme=dark"), ("x-custom", "Yes")]).await;
    assert_eq!(st, StatusCode::OK, "{ctx}");
    assert_eq!(ctx["cookies"], json!({"session": "abc", "theme": "dark"}));
    assert_eq!(ctx["headers"]["x-custom"], "Yes");
    assert!(ctx["headers"].get("cookie").is_none(), "the Cookie header is not in request.headers: {ctx}");
    assert_eq!((ctx["method"].as_str(), ctx["path"].as_str(), ctx["role"].as_str()), (Some("GET"), Some("/rpc/context"), Some("authenticated")));
    assert_eq!(ctx["claims"]["sub"], "11111111-1111-1111-1111-111111111111");
    // No cookies: an empty object.
    let (_, _, ctx) = get(&http, &gw, "/rpc/context", &[("apikey", &anon)]).await;
    assert_eq!(ctx["cookies"], json!({}));
    assert_eq!(ctx["claims"]["role"], "anon");
    // A token without a role claim: the claims carry the role it runs as.
    let no_role = format!("Bearer {}", token(json!({"exp": now() + 600, "who": "x"})));
    let (st, _, ctx) = get(&http, &gw, "/rpc/context", &[("apikey", &anon), ("authorization", &no_role)]).await;
    assert_eq!((st, &ctx["claims"]), (StatusCode::OK, &json!({"exp": ctx["claims"]["exp"], "who": "x", "role": "anon"})));

    // Refusals: status, code, message and WWW-Authenticate as PostgREST sends them.
    let cases: Vec<(String, &str, &str)> = vec![
        ("a.b".into(), "PGRST301", "Expected 3 parts in JWT; got 2"),
        (format!("{user}x"), "PGRST301", "No suitable key or wrong key type"),
        ("quif.fonv.iuqv".into(), "PGRST301", "JWT cryptographic operation failed"),
        (token(json!({"role": "authenticated", "exp": now() - 3600})), "PGRST303", "JWT expired"),
        (token(json!({"role": "authenticated", "exp": now() + 600, "nbf": now() + 3600})), "PGRST303", "JWT not yet valid"),
        (token(json!({"role": "authenticated", "exp": now() + 600, "iat": now() + 3600})), "PGRST303", "JWT issued at future"),
        (token(json!({"role": "authenticated", "exp": now() + 600, "aud": "someone-else"})), "PGRST303", "JWT not in audience"),
        (token(json!({"role": "authenticated", "exp": now() + 600, "aud": 7})), "PGRST303", "The JWT 'aud' claim must be a string or an array of strings"),
        (token(json!({"role": "authenticated", "exp": "later"})), "PGRST303", "The JWT 'exp' claim must be a number"),
    ];
    for (t, code, message) in cases {
        let (st, h, err) = get(&http, &gw, "/rpc/context", &[("apikey", &anon), ("authorization", &format!("Bearer {t}"))]).await;
        assert_eq!((st, err["code"].as_str(), err["message"].as_str()), (StatusCode::UNAUTHORIZED, Some(code), Some(message)), "{err}");
        assert_eq!(h["www-authenticate"].to_str().unwrap(), format!("Bearer error=\"invalid_token\", error_description=\"{message}\""));
    }
    // Within the 30 s skew, and an audience list that names ours, pass.
    let ok = token(json!({"role": "authenticated", "exp": now() - 5, "aud": ["x", "youraudience"]}));
    let (st, _, err) = get(&http, &gw, "/rpc/context", &[("apikey", &anon), ("authorization", &format!("Bearer {ok}"))]).await;
    assert_eq!(st, StatusCode::OK, "{err}");
}

#[tokio::test]
async fn grammar_raised_status_text_and_headers_from_triggers() {
    let tc = TestCluster::start().await.unwrap();
    tc.superuser().await.unwrap().batch_execute(FIXTURE).await.unwrap();
    let gw = Gateway::serve(&tc, &[]).await.unwrap();
    let http = Client::new();
    let anon = pgstack_gateway::keys::mint(pgstack_shared::Role::Anon, &pgstack_gateway::config::Secret::new(JWT_SECRET)).unwrap();
    let ids = |v: &Value| v.as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect::<Vec<_>>();

    // Logic trees: `not.` on any operator, array braces with commas, whitespace.
    let (st, _, v) = get(&http, &gw, "/items?select=id&and=(tags.not.cs.{1,2},and(id.not.eq.2,name.not.like.*x*))&order=id", &[("apikey", &anon)]).await;
    assert_eq!((st, ids(&v)), (StatusCode::OK, vec![3]), "{v}");
    let (st, _, v) = get(&http, &gw, "/items?select=id&or=( and ( id.in.( 1, 2 ) , name.eq.two ) , id.eq.3 )&order=id", &[("apikey", &anon)]).await;
    assert_eq!((st, ids(&v)), (StatusCode::OK, vec![2, 3]), "{v}");
    // Quoted names with reserved characters in select, casts after them, aliases.
    let (st, _, v) = get(&http, &gw, "/items?select=%22a.b%20c%22,%22:odd::name%22,n:%22a.b%20c%22::text&%22a.b%20c%22=eq.x", &[("apikey", &anon)]).await;
    assert_eq!((st, v), (StatusCode::OK, json!([{"a.b c": "x", ":odd::name": "y", "n": "x"}])));

    // RAISE SQLSTATE 'PGRST' with a status text: the status line carries it.
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    sock.write_all(format!("GET /rest/v1/rpc/teapot HTTP/1.1\r\nHost: x\r\napikey: {anon}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    sock.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 418 I Am A Teapot\r\n"), "{text}");
    assert!(text.to_ascii_lowercase().contains("x-pot: yes"), "{text}");

    // A trigger's response.headers replace the gateway's Location.
    let res = http.post(gw.url("/rest/v1/items")).header("apikey", &anon).header("prefer", "return=headers-only").json(&json!({"id": 7, "name": "seven"})).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let locations: Vec<_> = res.headers().get_all("location").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    assert_eq!(locations, vec!["/items/7"]);
}

/// `Prefer: count=planned` (the planner's estimate, as PostgREST takes it from
/// EXPLAIN) and `count=estimated` (exact up to DB_MAX_ROWS, planned beyond), and
/// VARIADIC functions called with an array body or a repeated query parameter.
#[tokio::test]
async fn planned_and_estimated_counts_and_variadic_functions() {
    let tc = TestCluster::start().await.unwrap();
    tc.superuser()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE public.nums (id int PRIMARY KEY, even bool);
             INSERT INTO public.nums SELECT g, g % 2 = 0 FROM generate_series(1, 500) g;
             ANALYZE public.nums;
             GRANT SELECT ON public.nums TO anon;
             CREATE FUNCTION public.joined(sep text, VARIADIC parts text[]) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT array_to_string(parts, sep)';
             CREATE FUNCTION public.pick(a int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT a';
             CREATE FUNCTION public.keys_of(json) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT count(*)::int FROM json_object_keys($1)';
             GRANT EXECUTE ON FUNCTION public.joined(text, text[]), public.pick(int), public.keys_of(json) TO anon;",
        )
        .await
        .unwrap();
    let gw = Gateway::serve(&tc, &[("DB_MAX_ROWS", "100")]).await.unwrap();
    let http = Client::new();
    let anon = pgstack_gateway::keys::mint(pgstack_shared::Role::Anon, &pgstack_gateway::config::Secret::new(JWT_SECRET)).unwrap();
    let range = |prefer: &'static str, path: &'static str| {
        let (http, gw, anon) = (http.clone(), gw.url(&format!("/rest/v1{path}")), anon.clone());
        async move {
            let res = http.get(gw).header("apikey", anon).header("prefer", prefer).send().await.unwrap();
            (res.status(), res.headers().get("content-range").map(|v| v.to_str().unwrap().to_owned()))
        }
    };
    // The whole (analyzed) table: the estimate is the row count.
    assert_eq!(range("count=planned", "/nums?select=id&limit=10").await, (StatusCode::PARTIAL_CONTENT, Some("0-9/500".into())));
    // A filter: the planner's guess (not counted), still over the page.
    let (st, r) = range("count=planned", "/nums?select=id&even=is.true&limit=10").await;
    let total: i64 = r.as_deref().unwrap().rsplit('/').next().unwrap().parse().unwrap();
    assert_eq!(st, StatusCode::PARTIAL_CONTENT);
    assert!((150..=350).contains(&total), "a planner estimate near 250: {total}");
    // Estimated: exact below DB_MAX_ROWS (100), planned above it.
    assert_eq!(range("count=estimated", "/nums?select=id&id=lte.30&limit=10").await, (StatusCode::PARTIAL_CONTENT, Some("0-9/30".into())));
    assert_eq!(range("count=estimated", "/nums?select=id&limit=10").await, (StatusCode::PARTIAL_CONTENT, Some("0-9/500".into())));
    assert_eq!(range("count=exact", "/nums?select=id&id=lte.30&limit=10").await, (StatusCode::PARTIAL_CONTENT, Some("0-9/30".into())));
    // The same EXPLAIN over a different number of parameters (offset, limit, both),
    // many times: every connection keeps them apart.
    for _ in 0..6 {
        assert_eq!(range("count=planned", "/nums?select=id&offset=1").await.0, StatusCode::PARTIAL_CONTENT);
        assert_eq!(range("count=planned", "/nums?select=id&limit=5").await.0, StatusCode::PARTIAL_CONTENT);
        assert_eq!(range("count=planned", "/nums?select=id&limit=5&offset=2").await.0, StatusCode::PARTIAL_CONTENT);
    }

    // VARIADIC: a JSON array in the body, a repeated parameter on GET.
    let res = http.post(gw.url("/rest/v1/rpc/joined")).header("apikey", &anon).json(&json!({"sep": "-", "parts": ["a", "b", "c"]})).send().await.unwrap();
    assert_eq!((res.status(), res.json::<Value>().await.unwrap()), (StatusCode::OK, json!("a-b-c")));
    let (st, _, v) = get(&http, &gw, "/rpc/joined?sep=%2B&parts=x&parts=y", &[("apikey", &anon)]).await;
    assert_eq!((st, v), (StatusCode::OK, json!("x+y")));
    let (st, _, v) = get(&http, &gw, "/rpc/joined?sep=,&parts=solo", &[("apikey", &anon)]).await;
    assert_eq!((st, v), (StatusCode::OK, json!("solo")));
    // A repeated parameter that is not variadic: the last value counts (PostgREST).
    let (st, _, v) = get(&http, &gw, "/rpc/pick?a=1&a=2", &[("apikey", &anon)]).await;
    assert_eq!((st, v), (StatusCode::OK, json!(2)));
    // JSON null for the VARIADIC argument is a NULL array (PostgREST passes the value).
    let res = http.post(gw.url("/rest/v1/rpc/joined")).header("apikey", &anon).json(&json!({"sep": "-", "parts": null})).send().await.unwrap();
    assert_eq!((res.status(), res.json::<Value>().await.unwrap()), (StatusCode::OK, Value::Null));
    // A single unnamed json parameter takes a body of any width (more members than
    // named arguments can have).
    let wide: serde_json::Map<String, Value> = (0..2000).map(|i| (format!("k{i}"), json!(i))).collect();
    let res = http.post(gw.url("/rest/v1/rpc/keys_of")).header("apikey", &anon).json(&wide).send().await.unwrap();
    assert_eq!((res.status(), res.json::<Value>().await.unwrap()), (StatusCode::OK, json!(2000)));
    // Nesting past 512 levels is refused before Postgres's parser reaches its stack
    // limit (a 400, not its 500).
    let deep = format!("{{\"a\": {}1{}}}", "[".repeat(600), "]".repeat(600));
    let res = http.post(gw.url("/rest/v1/rpc/keys_of")).header("apikey", &anon).header("content-type", "application/json").body(deep).send().await.unwrap();
    assert_eq!((res.status(), res.json::<Value>().await.unwrap()["code"].clone()), (StatusCode::BAD_REQUEST, json!("PGRST102")));
}

/// A write reads response.status / response.headers back unless nothing could have
/// set them: a plain table without triggers or rules. A partitioned table's partitions'
/// triggers, and a trigger created while the gateway runs, still set them.
#[tokio::test]
async fn writes_read_the_response_settings_whenever_code_could_set_them() {
    let tc = TestCluster::start().await.unwrap();
    let su = tc.superuser().await.unwrap();
    su.batch_execute(
        "CREATE TABLE public.plain (id int PRIMARY KEY);
         CREATE TABLE public.parted (id int PRIMARY KEY) PARTITION BY RANGE (id);
         CREATE TABLE public.parted_low PARTITION OF public.parted FOR VALUES FROM (0) TO (100);
         CREATE FUNCTION public.accepted() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM set_config('response.status', '202', true); RETURN NEW; END $$;
         CREATE TRIGGER accepted AFTER INSERT ON public.parted_low FOR EACH ROW EXECUTE FUNCTION public.accepted();
         GRANT INSERT ON public.plain, public.parted TO anon;",
    )
    .await
    .unwrap();
    let gw = Gateway::serve(&tc, &[]).await.unwrap();
    let anon = pgstack_gateway::keys::mint(pgstack_shared::Role::Anon, &pgstack_gateway::config::Secret::new(JWT_SECRET)).unwrap();
    let http = Client::new();
    let post = |table: &str, id: i32| http.post(gw.url(&format!("/rest/v1/{table}"))).header("apikey", &anon).json(&json!({"id": id})).send();
    assert_eq!(post("plain", 1).await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(post("parted", 1).await.unwrap().status(), StatusCode::ACCEPTED);
    // A trigger on the plain table, created now: the schema cache reloads and the
    // next write reads the settings back.
    su.batch_execute("CREATE TRIGGER accepted AFTER INSERT ON public.plain FOR EACH ROW EXECUTE FUNCTION public.accepted();").await.unwrap();
    let ok = pgstack_tests::eventually(std::time::Duration::from_secs(5), || {
        let id = rand_id();
        async move { post("plain", id).await.map(|r| r.status() == StatusCode::ACCEPTED).unwrap_or(false) }
    })
    .await;
    assert!(ok, "the new trigger's response.status was not read back");
}

fn rand_id() -> i32 {
    use std::sync::atomic::{AtomicI32, Ordering};
    static NEXT: AtomicI32 = AtomicI32::new(100);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The statements run since the last reset that set a request up: the extension's
/// one call, or the `set_config` statement (counted under the role they switched to).
async fn setup_statements(su: &tokio_postgres::Client) -> (i64, i64) {
    let row = su
        .query_one(
            "SELECT coalesce(sum(calls) FILTER (WHERE query LIKE 'SELECT pgr.request_setup(%'), 0)::bigint,
                    coalesce(sum(calls) FILTER (WHERE query LIKE 'SELECT FROM (SELECT set_config(''role''%'), 0)::bigint
               FROM pg_stat_statements",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// A request is set up by the extension's `pgr.request_setup` (one call) when it is
/// there, and by the `set_config` statement when the installed extension lacks it
/// (built before it) or it went away while the gateway ran: the same context either way — role, claims, method, path,
/// headers, cookies, `Prefer: timezone`, a role's statement_timeout and, on GET of a
/// function, a read-only transaction.
#[tokio::test]
async fn requests_are_set_up_by_the_extension_function_or_else_by_set_config() {
    // The server inherits it: a Rust backtrace must still never reach a client (pgrx
    // writes one into the DETAIL of an error raised inside the function).
    std::env::set_var("RUST_BACKTRACE", "1");
    let tc = TestCluster::start_with_statement_stats().await.unwrap();
    let su = tc.superuser().await.unwrap();
    su.batch_execute(FIXTURE).await.unwrap();
    su.batch_execute(
        "CREATE FUNCTION public.settings() RETURNS json LANGUAGE sql STABLE AS $$
             SELECT json_build_object('tz', current_setting('timezone'), 'timeout', current_setting('statement_timeout'),
                                      'read_only', current_setting('transaction_read_only'), 'role', current_user) $$;
         GRANT EXECUTE ON FUNCTION public.settings() TO anon, authenticated;
         ALTER ROLE authenticated SET statement_timeout = '4s';",
    )
    .await
    .unwrap();
    let gw = Gateway::serve(&tc, &[]).await.unwrap();
    let http = Client::new();
    let anon = pgstack_gateway::keys::mint(pgstack_shared::Role::Anon, &pgstack_gateway::config::Secret::new(JWT_SECRET)).unwrap();
    let user = format!("Bearer {}", token(json!({"sub": "u-1", "role": "authenticated", "exp": now() + 600})));

    let check = |label: &'static str| {
        let (http, gw, anon, user) = (&http, &gw, &anon, &user);
        async move {
            let (st, _, ctx) = get(http, gw, "/rpc/context", &[("apikey", anon), ("authorization", user), ("cookie", "a=1"), ("x-tag", "t")]).await;
            assert_eq!(st, StatusCode::OK, "{label}: {ctx}");
            assert_eq!(
                (&ctx["cookies"], &ctx["headers"]["x-tag"], &ctx["method"], &ctx["path"], &ctx["role"], &ctx["claims"]["sub"]),
                (&json!({"a": "1"}), &json!("t"), &json!("GET"), &json!("/rpc/context"), &json!("authenticated"), &json!("u-1")),
                "{label}: {ctx}"
            );
            let (st, _, s) = get(http, gw, "/rpc/settings", &[("apikey", anon), ("authorization", user), ("prefer", "timezone=Asia/Tokyo")]).await;
            assert_eq!(st, StatusCode::OK, "{label}: {s}");
            assert_eq!(s, json!({"tz": "Asia/Tokyo", "timeout": "4s", "read_only": "on", "role": "authenticated"}), "{label}");
            // A zone Postgres does not know: its error as is, without a backtrace.
            let (st, _, err) = get(http, gw, "/rpc/settings", &[("apikey", anon), ("prefer", "timezone=Invalid/Zone")]).await;
            assert_eq!((st, &err["code"], &err["details"]), (StatusCode::BAD_REQUEST, &json!("22023"), &Value::Null), "{label}: {err}");
            // POST runs read-write, here as anon.
            let res = http.post(gw.url("/rest/v1/rpc/settings")).header("apikey", anon).json(&json!({})).send().await.unwrap();
            let s: Value = res.json().await.unwrap();
            assert_eq!((&s["read_only"], &s["role"]), (&json!("off"), &json!("anon")), "{label}: {s}");
            // A role the session may not take is refused as before.
            let bad = format!("Bearer {}", token(json!({"role": "postgres", "exp": now() + 600})));
            let (st, _, err) = get(http, gw, "/rpc/context", &[("apikey", anon), ("authorization", &bad)]).await;
            assert!(st.is_client_error(), "{label}: {st} {err}");
        }
    };

    su.batch_execute("SELECT pg_stat_statements_reset()").await.unwrap();
    check("with pgr.request_setup").await;
    let (call, statement) = setup_statements(&su).await;
    assert!(call >= 3 && statement == 0, "set up by the function: {call} calls, {statement} set_config statements");

    // The function dropped behind the gateway's back (the DDL notification that would
    // reload the schema cache switched off): the next request fails over to
    // set_config by itself, and so do the ones after it.
    su.batch_execute(
        "ALTER EVENT TRIGGER pgstack_ddl_end DISABLE; ALTER EVENT TRIGGER pgstack_sql_drop DISABLE;
         ALTER EXTENSION pgstack DROP FUNCTION pgr.request_setup(text, text, text, text, text, text, boolean, text, text);
         DROP FUNCTION pgr.request_setup(text, text, text, text, text, text, boolean, text, text);
         ALTER EVENT TRIGGER pgstack_ddl_end ENABLE; ALTER EVENT TRIGGER pgstack_sql_drop ENABLE;",
    )
    .await
    .unwrap();
    su.batch_execute("SELECT pg_stat_statements_reset()").await.unwrap();
    check("with set_config").await;
    let (call, statement) = setup_statements(&su).await;
    assert!(call == 0 && statement >= 3, "set up by set_config: {call} calls, {statement} set_config statements");
}
