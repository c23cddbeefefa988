//! Issue 7: PostgREST's settings and wire details for users moving from PostgREST —
//! DB_ANON_ROLE (key-less requests), any role in the token's `role` claim (reserved
//! ones refused), optional `exp`, DB_PRE_REQUEST, DB_TX_END, REST_ERROR_FORMAT,
//! Preference-Applied, the Range request header, Location on headers-only inserts.

use pgstack_tests::{Gateway, TestCluster, JWT_SECRET};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

const FIXTURE: &str = r#"
CREATE ROLE web_anon NOLOGIN;
CREATE ROLE editor NOLOGIN;
CREATE ROLE outsider NOLOGIN;  -- not granted to the login role
GRANT web_anon, editor TO authenticator;
CREATE TABLE public.notes (id serial PRIMARY KEY, body text NOT NULL);
CREATE TABLE public.pairs (a int, b int, note text, PRIMARY KEY (a, b));
INSERT INTO public.notes (body) SELECT 'note ' || g FROM generate_series(1, 10) g;
GRANT SELECT ON public.notes TO web_anon;
CREATE VIEW public.typed AS SELECT 1 AS id, true AS ok, ARRAY['a1', 'b'] AS tags, '{"a": [1, 2]}'::jsonb AS j, 'back\slash' AS s, NULL::int AS n;
GRANT SELECT ON public.typed TO web_anon, editor;
CREATE FUNCTION public.words() RETURNS SETOF text LANGUAGE sql AS $$SELECT unnest(ARRAY['a b', 'c'])$$;
GRANT EXECUTE ON FUNCTION public.words() TO web_anon, editor;
CREATE FUNCTION public.pair(OUT x int, OUT y text) LANGUAGE sql AS $$SELECT 1, 'a b'$$;
CREATE FUNCTION public.five() RETURNS int LANGUAGE sql AS 'SELECT 5';
GRANT EXECUTE ON FUNCTION public.pair(), public.five() TO web_anon, editor;
CREATE VIEW public.notes_view AS SELECT id, body FROM public.notes;
GRANT ALL ON public.notes, public.pairs, public.notes_view TO editor;
GRANT USAGE ON SEQUENCE public.notes_id_seq TO editor;
CREATE FUNCTION public.gate() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('request.headers', true)::json ->> 'x-blocked' = 'yes' THEN
        RAISE SQLSTATE 'PT403' USING MESSAGE = 'blocked by pre-request';
    END IF;
END $$;
GRANT EXECUTE ON FUNCTION public.gate() TO web_anon, editor;
CREATE FUNCTION public.slow() RETURNS int LANGUAGE sql AS 'SELECT 1 FROM pg_sleep(0.6)';
GRANT EXECUTE ON FUNCTION public.slow() TO web_anon, editor;
-- A statement timeout per role, set the Postgres way.
ALTER ROLE web_anon SET statement_timeout = '200ms';
-- Computed relationships: ROWS 1 makes a set-returning one to-one.
CREATE TABLE public.designers (id int PRIMARY KEY, name text);
CREATE TABLE public.games (id int PRIMARY KEY, name text, designer_id int REFERENCES public.designers);
INSERT INTO public.designers VALUES (1, 'Sid'), (2, 'Hiro');
INSERT INTO public.games VALUES (1, 'Civ', 1), (2, 'FF', 2), (3, 'FF2', 2);
CREATE FUNCTION public.maker(public.games) RETURNS SETOF public.designers LANGUAGE sql STABLE ROWS 1
    AS $$SELECT * FROM public.designers WHERE id = $1.designer_id$$;
CREATE FUNCTION public.made(public.designers) RETURNS SETOF public.games LANGUAGE sql STABLE
    AS $$SELECT * FROM public.games WHERE designer_id = $1.id$$;
GRANT SELECT ON public.designers, public.games TO web_anon;
CREATE FUNCTION public.raise_no_detail() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    RAISE SQLSTATE 'PGRST' USING MESSAGE = '{"code": "X1", "message": "m"}';
END $$;
CREATE FUNCTION public.vary_own() RETURNS int LANGUAGE sql AS $$
    SELECT set_config('response.headers', '[{"Vary": "Accept, X-Mine"}]', true)::text IS NOT NULL::int$$;
GRANT EXECUTE ON FUNCTION public.raise_no_detail(), public.vary_own() TO web_anon;
-- Set-returning functions that write: a count must not run them twice.
CREATE TABLE public.calls (n serial PRIMARY KEY);
CREATE FUNCTION public.bump_rows() RETURNS SETOF public.notes LANGUAGE sql
    AS $$INSERT INTO public.calls DEFAULT VALUES; SELECT * FROM public.notes WHERE id <= 3 ORDER BY id$$;
CREATE FUNCTION public.bump_values() RETURNS SETOF int LANGUAGE sql
    AS $$INSERT INTO public.calls DEFAULT VALUES; SELECT g FROM generate_series(1, 3) g$$;
GRANT ALL ON public.calls TO editor;
-- Media types of their own: domains named after them.
CREATE DOMAIN public."application/octet-stream" AS bytea;
CREATE DOMAIN public."*/*" AS bytea;
CREATE FUNCTION public.echo_bytes(bytea) RETURNS public."application/octet-stream" LANGUAGE sql AS 'SELECT $1';
CREATE FUNCTION public.any_type() RETURNS public."*/*" LANGUAGE sql AS $$SELECT 'any'::public."*/*"$$;
CREATE FUNCTION public.typed_any() RETURNS public."*/*" LANGUAGE sql
    AS $$SELECT set_config('response.headers', '[{"Content-Type": "image/x-test"}]', true)::bytea::public."*/*"$$;
CREATE FUNCTION public.shout(text) RETURNS text LANGUAGE sql AS 'SELECT upper($1)';
CREATE DOMAIN public."image/inner" AS bytea;
CREATE DOMAIN public."image/outer" AS public."image/inner";
CREATE FUNCTION public.nested_bytes() RETURNS public."image/outer" LANGUAGE plpgsql
    AS $$BEGIN PERFORM set_config('bytea_output', 'escape', true); RETURN '\x00ff41'; END$$;
CREATE FUNCTION public.no_bytes() RETURNS public."application/octet-stream" LANGUAGE sql AS 'SELECT NULL::bytea';
GRANT EXECUTE ON FUNCTION public.nested_bytes(), public.no_bytes() TO web_anon;
GRANT EXECUTE ON FUNCTION public.echo_bytes(bytea), public.any_type(), public.typed_any(), public.shout(text) TO web_anon;
GRANT USAGE ON SEQUENCE public.calls_n_seq TO editor;
"#;

struct Env {
    http: Client,
    gw: Gateway,
    _tc: TestCluster,
}

fn token(claims: Value) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes())).unwrap()
}

async fn start() -> Env {
    let tc = TestCluster::start().await.unwrap();
    tc.superuser().await.unwrap().batch_execute(FIXTURE).await.unwrap();
    let gw = Gateway::serve(
        &tc,
        &[
            ("DB_ANON_ROLE", "web_anon"),
            ("DB_PRE_REQUEST", "public.gate"),
            ("DB_TX_END", "commit-allow-override"),
            ("REST_ERROR_FORMAT", "postgrest"),
            ("JWT_REQUIRE_EXP", "false"),
            ("ALLOWED_ORIGINS", "http://example.com"),
            ("DB_PLAN_ENABLED", "true"),
        ],
    )
    .await
    .unwrap();
    Env { http: Client::new(), gw, _tc: tc }
}

impl Env {
    async fn req(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Option<Value>) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut r = self.http.request(method, self.gw.url(&format!("/rest/v1{path}")));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let res = r.send().await.unwrap();
        let (st, h) = (res.status(), res.headers().clone());
        let text = res.text().await.unwrap();
        (st, h, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) })
    }
}

#[tokio::test]
async fn roles_tokens_and_the_anonymous_role() {
    let e = start().await;
    // No credential at all: DB_ANON_ROLE.
    let (st, _, who) = e.req(Method::GET, "/rls-debug", &[], None).await;
    assert_eq!((st, &who["role"]), (StatusCode::OK, &json!("web_anon")));
    let (st, _, rows) = e.req(Method::GET, "/notes?select=id&id=lt.3&order=id", &[], None).await;
    assert_eq!((st, rows), (StatusCode::OK, json!([{"id": 1}, {"id": 2}])));
    // The anonymous role may not write: 401 (anonymous), PostgREST's exact body.
    let (st, h, err) = e.req(Method::POST, "/notes", &[], Some(json!({"body": "x"}))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(err, json!({"code": "42501", "message": "permission denied for table notes", "details": null, "hint": null}));
    assert_eq!(h["content-type"], "application/json; charset=utf-8");
    assert_eq!(h["proxy-status"], "PostgREST; error=42501");

    // A token naming another role, without exp or iat (PostgREST-style).
    let editor = format!("Bearer {}", token(json!({"role": "editor", "name": "ed"})));
    let (st, _, who) = e.req(Method::GET, "/rls-debug", &[("authorization", &editor)], None).await;
    assert_eq!((st, &who["role"], &who["claims"]["name"]), (StatusCode::OK, &json!("editor"), &json!("ed")));
    let (st, _, _) = e.req(Method::POST, "/notes", &[("authorization", &editor)], Some(json!({"body": "by editor"}))).await;
    assert_eq!(st, StatusCode::CREATED);
    // A role the login role is not a member of is refused by Postgres; reserved roles
    // never reach it.
    let outsider = format!("Bearer {}", token(json!({"role": "outsider"})));
    let (st, _, err) = e.req(Method::GET, "/notes", &[("authorization", &outsider)], None).await;
    assert!(st == StatusCode::FORBIDDEN || st == StatusCode::UNAUTHORIZED, "{st} {err}");
    assert_eq!(err["code"], "42501", "{err}");
    for reserved in ["pgstack_auth_admin", "authenticator", "postgres", "pg_read_all_data"] {
        let t = format!("Bearer {}", token(json!({"role": reserved})));
        let (st, h, err) = e.req(Method::GET, "/notes", &[("authorization", &t)], None).await;
        assert_eq!((st, err["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("PGRST303")), "{reserved}: {err}");
        assert!(h["www-authenticate"].to_str().unwrap().starts_with("Bearer error=\"invalid_token\""));
    }
    // exp: a number in the future.
    let (st, _, err) = e.req(Method::GET, "/notes", &[("authorization", &format!("Bearer {}", token(json!({"role": "editor", "exp": "never"}))))], None).await;
    assert_eq!((st, err["message"].as_str()), (StatusCode::UNAUTHORIZED, Some("The JWT 'exp' claim must be a number")));
    let (st, _, err) = e.req(Method::GET, "/notes", &[("authorization", &format!("Bearer {}", token(json!({"role": "editor", "exp": 1000}))))], None).await;
    assert_eq!((st, err["message"].as_str()), (StatusCode::UNAUTHORIZED, Some("JWT expired")));
    // An empty bearer is an error, not an anonymous request.
    let (st, _, err) = e.req(Method::GET, "/notes", &[("authorization", "Bearer ")], None).await;
    assert_eq!((st, err["code"].as_str(), err["message"].as_str()), (StatusCode::UNAUTHORIZED, Some("PGRST301"), Some("Empty JWT is sent in Authorization header")));
    // A token signed with another secret.
    let forged =
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &json!({"role": "editor"}), &jsonwebtoken::EncodingKey::from_secret(b"another-secret-another-secret-xx")).unwrap();
    let (st, _, err) = e.req(Method::GET, "/notes", &[("authorization", &format!("Bearer {forged}"))], None).await;
    assert_eq!((st, err["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("PGRST301")));

    // ALTER ROLE ... SET statement_timeout applies to requests running as that role.
    let (st, _, err) = e.req(Method::POST, "/rpc/slow", &[], Some(json!({}))).await;
    assert_eq!((st, err["code"].as_str(), err["message"].as_str()), (StatusCode::GATEWAY_TIMEOUT, Some("57014"), Some("canceling statement due to statement timeout")));
    let (st, _, v) = e.req(Method::POST, "/rpc/slow", &[("authorization", &editor)], Some(json!({}))).await;
    assert_eq!((st, v), (StatusCode::OK, json!(1)), "another role has no such timeout");

    // DB_PRE_REQUEST runs in every request's transaction.
    let (st, _, err) = e.req(Method::GET, "/notes", &[("x-blocked", "yes")], None).await;
    assert_eq!((st, err["message"].as_str()), (StatusCode::FORBIDDEN, Some("blocked by pre-request")));
}

#[tokio::test]
async fn preferences_ranges_and_locations() {
    let e = start().await;
    let editor = format!("Bearer {}", token(json!({"role": "editor"})));
    let auth = [("authorization", editor.as_str())];

    // Range request header narrows the page.
    let (st, h, rows) = e.req(Method::GET, "/notes?select=id&order=id", &[("range", "2-4")], None).await;
    assert_eq!((st, rows), (StatusCode::OK, json!([{"id": 3}, {"id": 4}, {"id": 5}])));
    assert_eq!(h["content-range"], "2-4/*");
    let (st, _, rows) = e.req(Method::GET, "/notes?select=id&order=id&limit=2", &[("range", "1-8")], None).await;
    assert_eq!((st, rows), (StatusCode::OK, json!([{"id": 2}])), "rows 0-1 of the query ∩ rows 1-8 of the header");
    let (st, _, err) = e.req(Method::GET, "/notes?select=id", &[("range", "3-1")], None).await;
    assert_eq!((st, err["code"].as_str()), (StatusCode::RANGE_NOT_SATISFIABLE, Some("PGRST103")));

    // Preference-Applied lists what was honoured, in PostgREST's order.
    let h = [auth[0], ("prefer", "count=exact, return=representation")];
    let (st, hd, rows) = e.req(Method::POST, "/notes?select=body", &h, Some(json!({"body": "pref"}))).await;
    assert_eq!((st, rows), (StatusCode::CREATED, json!([{"body": "pref"}])));
    assert_eq!(hd["preference-applied"], "return=representation, count=exact");
    assert_eq!(hd["content-range"], "*/1");

    // tx=rollback (allowed to override): the answer shows the row, nothing is kept.
    let h = [auth[0], ("prefer", "return=representation, tx=rollback")];
    let (st, hd, rows) = e.req(Method::POST, "/notes?select=body", &h, Some(json!({"body": "ghost"}))).await;
    assert_eq!((st, rows), (StatusCode::CREATED, json!([{"body": "ghost"}])));
    assert_eq!(hd["preference-applied"], "return=representation, tx=rollback");
    let (_, _, rows) = e.req(Method::GET, "/notes?body=eq.ghost", &[], None).await;
    assert_eq!(rows, json!([]));

    // return=headers-only: Location from the primary key (also composite), no body.
    let h = [auth[0], ("prefer", "return=headers-only")];
    let (st, hd, body) = e.req(Method::POST, "/notes", &h, Some(json!({"body": "located"}))).await;
    assert_eq!((st, body), (StatusCode::CREATED, Value::Null));
    let loc = hd["location"].to_str().unwrap().to_owned();
    assert!(loc.starts_with("/notes?id=eq."), "{loc}");
    let (_, _, rows) = e.req(Method::GET, &format!("{loc}&select=body"), &[], None).await;
    assert_eq!(rows, json!([{"body": "located"}]));
    let (st, hd, _) = e.req(Method::POST, "/pairs", &h, Some(json!({"a": 1, "b": 2, "note": "x y"}))).await;
    assert_eq!((st, hd["location"].to_str().unwrap()), (StatusCode::CREATED, "/pairs?a=eq.1&b=eq.2"));

    // Inserting through an (auto-updatable) view with a representation.
    let h = [auth[0], ("prefer", "return=representation")];
    let (st, _, rows) = e.req(Method::POST, "/notes_view?select=body", &h, Some(json!({"body": "via view"}))).await;
    assert_eq!((st, rows), (StatusCode::CREATED, json!([{"body": "via view"}])));

    // An update reports its rows as a range; an empty PATCH is a no-op.
    let (st, hd, _) = e.req(Method::PATCH, "/notes?id=lt.4", &auth, Some(json!({"body": "edited"}))).await;
    assert_eq!((st, hd["content-range"].to_str().unwrap()), (StatusCode::NO_CONTENT, "0-2/*"));
    let (st, _, _) = e.req(Method::PATCH, "/notes", &auth, Some(json!({}))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _, err) = e.req(Method::PATCH, "/notes", &auth, Some(json!({"body": "all"}))).await;
    assert_eq!((st, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("21000")), "a real update still needs a filter");

    // Nested paths name nothing.
    let (st, _, err) = e.req(Method::GET, "/notes/1/more", &[], None).await;
    assert_eq!((st, err["code"].as_str()), (StatusCode::NOT_FOUND, Some("PGRST125")));
}

#[tokio::test]
async fn csv_stripped_nulls_and_unsatisfiable_ranges() {
    let e = start().await;
    let editor = format!("Bearer {}", token(json!({"role": "editor"})));
    let raw = |method: Method, path: &str, headers: Vec<(&'static str, String)>, body: &'static str| {
        let mut r = e.http.request(method, e.gw.url(&format!("/rest/v1{path}"))).header("authorization", &editor).body(body);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.send()
    };
    // CSV out: a header from the selected columns, each row in Postgres's own text
    // form as PostgREST renders it (a value with a space is quoted).
    let res = raw(Method::GET, "/notes?select=id,body&id=lt.3&order=id", vec![("accept", "text/csv".into())], "").await.unwrap();
    assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(res.text().await.unwrap(), "id,body\n1,\"note 1\"\n2,\"note 2\"");
    // An output column named like the statement's row alias changes nothing: the
    // rows, their count and the single object stay whole.
    let res = raw(Method::GET, "/notes?select=id,_pgs_t:body&id=lt.3&order=id", vec![("prefer", "count=exact".into())], "").await.unwrap();
    assert_eq!((res.status(), res.headers()["content-range"].to_str().unwrap().to_owned()), (StatusCode::OK, "0-1/2".to_owned()));
    assert_eq!(res.json::<serde_json::Value>().await.unwrap(), serde_json::json!([{"id": 1, "_pgs_t": "note 1"}, {"id": 2, "_pgs_t": "note 2"}]));
    let res = raw(Method::GET, "/notes?select=id,_pgs_t:body&id=eq.2", vec![("accept", "application/vnd.pgrst.object+json".into())], "").await.unwrap();
    assert_eq!(res.json::<serde_json::Value>().await.unwrap(), serde_json::json!({"id": 2, "_pgs_t": "note 2"}));
    // Booleans, arrays, JSON, backslashes and NULL as Postgres writes them.
    let res = raw(Method::GET, "/typed", vec![("accept", "text/csv".into())], "").await.unwrap();
    assert_eq!(res.text().await.unwrap(), "id,ok,tags,j,s,n\n1,t,\"{a1,b}\",\"{\"\"a\"\": [1, 2]}\",\"back\\\\slash\",");
    // A function's set of scalars: PostgREST's column name for them, one per line.
    let res = raw(Method::GET, "/rpc/words", vec![("accept", "text/csv".into())], "").await.unwrap();
    assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(res.text().await.unwrap(), "pgrst_scalar\n\"a b\"\nc");
    // One row (OUT parameters) and one value: CSV as well, JSON without the header.
    for (path, csv, json) in [("/rpc/pair", "x,y\n1,\"a b\"", r#"{"x":1,"y":"a b"}"#), ("/rpc/five", "pgrst_scalar\n5", "5")] {
        let res = raw(Method::GET, path, vec![("accept", "text/csv".into())], "").await.unwrap();
        assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8", "{path}");
        assert_eq!(res.text().await.unwrap(), csv, "{path}");
        let res = raw(Method::GET, path, vec![], "").await.unwrap();
        assert_eq!(res.text().await.unwrap(), json, "{path}");
    }
    // CSV in (NULL is null), CSV representation back, quoting of commas and quotes.
    let res = raw(
        Method::POST,
        "/pairs?select=a,b,note",
        vec![("content-type", "text/csv".into()), ("accept", "text/csv".into()), ("prefer", "return=representation".into())],
        "a,b,note\n7,8,\"x, \"\"y\"\"\"\n9,10,NULL",
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.text().await.unwrap(), "a,b,note\n7,8,\"x, \"\"y\"\"\"\n9,10,");
    let res = raw(Method::POST, "/pairs", vec![("content-type", "text/csv".into())], "a,b\n1").await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.json::<Value>().await.unwrap()["message"], "All lines must have same number of fields");

    // nulls=stripped leaves out null values.
    let (st, h, rows) = e.req(Method::GET, "/pairs?select=a,note&a=eq.9", &[("accept", "application/vnd.pgrst.array+json;nulls=stripped"), ("authorization", &editor)], None).await;
    assert_eq!((st, rows), (StatusCode::OK, json!([{"a": 9}])));
    assert_eq!(h["content-type"], "application/vnd.pgrst.array+json;nulls=stripped; charset=utf-8");

    // Unsatisfiable ranges: 416 with the total in Content-Range.
    let (st, h, err) = e.req(Method::GET, "/notes?offset=100", &[("prefer", "count=exact")], None).await;
    assert_eq!((st, err["code"].as_str()), (StatusCode::RANGE_NOT_SATISFIABLE, Some("PGRST103")));
    assert_eq!(h["content-range"], "*/10");
    let (st, _, err) = e.req(Method::GET, "/notes?limit=-1", &[], None).await;
    assert_eq!((st, err["details"].as_str()), (StatusCode::RANGE_NOT_SATISFIABLE, Some("Limit should be greater than or equal to zero.")));
}

/// REST requests run as one pipeline per request (role setup, pre-request, statement,
/// one Sync): one implicit transaction. On a single pooled connection: a failing
/// statement rolls back the pre-request function's write too, the next request runs
/// with its own role and claims (nothing leaks from the previous one), and errors
/// never leave the connection out of step.
#[tokio::test]
async fn one_round_trip_requests_are_atomic_and_leave_the_connection_clean() {
    let tc = TestCluster::start().await.unwrap();
    let su = tc.superuser().await.unwrap();
    su.batch_execute(FIXTURE).await.unwrap();
    su.batch_execute(
        "CREATE TABLE public.audit_log (id serial PRIMARY KEY, method text, path text, role text);
         GRANT INSERT ON public.audit_log TO web_anon, editor;
         GRANT USAGE ON SEQUENCE public.audit_log_id_seq TO web_anon, editor;
         -- Reads run READ ONLY (as in PostgREST): only writes are audited.
         CREATE FUNCTION public.audit() RETURNS void LANGUAGE plpgsql AS $$
         BEGIN
           IF current_setting('request.method') <> 'GET' THEN
             INSERT INTO public.audit_log (method, path, role)
             VALUES (current_setting('request.method'), current_setting('request.path'), current_user);
           END IF;
         END $$;
         GRANT EXECUTE ON FUNCTION public.audit() TO web_anon, editor;",
    )
    .await
    .unwrap();
    let gw = Gateway::serve(&tc, &[("DB_ANON_ROLE", "web_anon"), ("DB_PRE_REQUEST", "public.audit"), ("DB_POOL_SIZE", "1"), ("JWT_REQUIRE_EXP", "false")]).await.unwrap();
    let e = Env { http: Client::new(), gw, _tc: tc };
    let editor = format!("Bearer {}", token(json!({"role": "editor", "name": "ed"})));
    let audited = |method: &'static str| {
        let su = &su;
        async move { su.query_one("SELECT count(*) FROM public.audit_log WHERE method = $1 AND path = '/notes'", &[&method]).await.unwrap().get::<_, i64>(0) }
    };

    // The statement fails (NOT NULL): the pre-request's audit row goes with it.
    let (st, _, err) = e.req(Method::POST, "/notes", &[("authorization", &editor)], Some(json!({"body": null}))).await;
    assert_eq!((st, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("23502")), "{err}");
    assert_eq!(audited("POST").await, 0, "a failed request leaves nothing behind");
    let (st, _, _) = e.req(Method::POST, "/notes", &[("authorization", &editor)], Some(json!({"body": "kept"}))).await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(audited("POST").await, 1);
    let role: String = su.query_one("SELECT role FROM public.audit_log WHERE method = 'POST'", &[]).await.unwrap().get(0);
    assert_eq!(role, "editor", "the pre-request function ran as the request's role");

    // Same connection, next request without a token: its own role, no leftover claims.
    let (st, _, who) = e.req(Method::GET, "/rls-debug", &[], None).await;
    assert_eq!((st, &who["role"], &who["claims"]["name"]), (StatusCode::OK, &json!("web_anon"), &Value::Null), "{who}");
    let (st, _, err) = e.req(Method::POST, "/notes", &[], Some(json!({"body": "x"}))).await;
    assert_eq!((st, err["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("42501")), "anon still may not write: {err}");

    // Errors of every stage (parse, bind, execute) interleaved with successes: each
    // answer belongs to its own request.
    for i in 0..10 {
        let (st, _, err) = e.req(Method::GET, "/notes?select=nope", &[], None).await;
        assert_eq!((st, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("42703")), "{err}");
        let (st, _, err) = e.req(Method::GET, "/notes?id=eq.not-a-number", &[], None).await;
        assert_eq!((st, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("22P02")), "{err}");
        let (st, _, rows) = e.req(Method::GET, &format!("/notes?select=id&id=eq.{}", i + 1), &[], None).await;
        assert_eq!((st, rows), (StatusCode::OK, json!([{"id": i + 1}])));
    }
    let (st, _, _) = e.req(Method::PATCH, "/notes?id=eq.1", &[("authorization", &editor)], Some(json!({"body": null}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!((audited("POST").await, audited("PATCH").await), (1, 0), "only the successful write was audited");
}

#[tokio::test]
async fn postgrest_details_beyond_the_shared_cases() {
    let e = start().await;
    let editor = format!("Bearer {}", token(json!({"role": "editor"})));
    let auth = [("authorization", editor.as_str())];

    // JWT refusals carry PostgREST's message and details; any HMAC algorithm verifies.
    let wrong = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &json!({"role": "editor"}), &jsonwebtoken::EncodingKey::from_secret(b"wrong secret")).unwrap();
    let (st, h, err) = e.req(Method::GET, "/notes", &[("authorization", &format!("Bearer {wrong}"))], None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(err, json!({"code": "PGRST301", "message": "No suitable key or wrong key type", "details": "None of the keys was able to decode the JWT", "hint": null}));
    assert!(h["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    let unsecured = "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.eyJyb2xlIjoiZWRpdG9yIn0.";
    let (st, _, err) = e.req(Method::GET, "/notes", &[("authorization", &format!("Bearer {unsecured}"))], None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "an unsigned token never authenticates");
    assert_eq!(
        err,
        json!({"code": "PGRST301", "message": "Wrong or unsupported encoding algorithm", "details": "JWT is unsecured but expected 'alg' was not 'none'", "hint": null})
    );
    let (st, _, err) = e.req(Method::GET, "/notes", &[("authorization", "Bearer quif.fonv.iuqv")], None).await;
    assert_eq!((st, err), (StatusCode::UNAUTHORIZED, json!({"code": "PGRST301", "message": "JWT cryptographic operation failed", "details": null, "hint": null})));
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &json!({"role": "editor"}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let (st, _, who) = e.req(Method::GET, "/rls-debug", &[("authorization", &format!("Bearer {hs512}"))], None).await;
    assert_eq!((st, &who["role"]), (StatusCode::OK, &json!("editor")));

    // Vary: on every success (reads, writes, OPTIONS, calls), never on errors, and a
    // function's own Vary replaces it; CORS adds its own only for CORS requests.
    let (_, h, _) = e.req(Method::GET, "/notes?id=eq.1", &[], None).await;
    assert_eq!(h.get_all("vary").iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>(), ["Accept, Prefer, Range"]);
    let (_, h, _) = e.req(Method::OPTIONS, "/notes", &[], None).await;
    assert_eq!((h["vary"].to_str().unwrap(), h.contains_key("allow")), ("Accept, Prefer, Range", true));
    let (st, h, _) = e.req(Method::POST, "/notes", &auth, Some(json!({"body": "v"}))).await;
    assert_eq!((st, h["vary"].to_str().unwrap()), (StatusCode::CREATED, "Accept, Prefer, Range"));
    let (st, h, _) = e.req(Method::GET, "/nope", &[], None).await;
    assert_eq!((st, h.get("vary")), (StatusCode::NOT_FOUND, None));
    let (st, h, v) = e.req(Method::GET, "/rpc/vary_own", &[], None).await;
    assert_eq!((st, v, h.get_all("vary").iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>()), (StatusCode::OK, json!(1), vec!["Accept, X-Mine"]));
    let (_, h, _) = e.req(Method::GET, "/notes?id=eq.1", &[("origin", "http://example.com")], None).await;
    let vary: Vec<&str> = h.get_all("vary").iter().map(|v| v.to_str().unwrap()).collect();
    assert!(vary.contains(&"Accept, Prefer, Range") && vary.iter().any(|v| v.contains("origin")), "{vary:?}");
    assert_eq!(h["access-control-allow-origin"], "http://example.com");

    // The first of a repeated preference wins; return= is applied (and echoed) only by
    // a mutation.
    let h = [auth[0], ("prefer", "return=minimal, return=representation")];
    let (st, hd, body) = e.req(Method::POST, "/notes", &h, Some(json!({"body": "first wins"}))).await;
    assert_eq!((st, body, hd["preference-applied"].to_str().unwrap()), (StatusCode::CREATED, Value::Null, "return=minimal"));
    let (st, hd, _) = e.req(Method::GET, "/notes?id=eq.1", &[("prefer", "return=representation")], None).await;
    assert_eq!((st, hd.get("preference-applied")), (StatusCode::OK, None));
    let (_, hd, _) = e.req(Method::GET, "/rpc/five", &[("prefer", "return=representation")], None).await;
    assert_eq!(hd.get("preference-applied"), None);
    // A location only for a single inserted row.
    let h = [auth[0], ("prefer", "return=headers-only")];
    let (st, hd, _) = e.req(Method::POST, "/notes", &h, Some(json!([{"body": "b1"}, {"body": "b2"}]))).await;
    assert_eq!((st, hd.get("location")), (StatusCode::CREATED, None));

    // A negative offset starts at the first row.
    let (st, _, rows) = e.req(Method::GET, "/notes?select=id&order=id&offset=-4&limit=2", &[], None).await;
    assert_eq!((st, rows), (StatusCode::OK, json!([{"id": 1}, {"id": 2}])));
    // A function result has no planned count; estimated counts exactly.
    let (st, hd, _) = e.req(Method::GET, "/rpc/words?limit=1", &[("prefer", "count=planned")], None).await;
    assert_eq!((st, hd["content-range"].to_str().unwrap()), (StatusCode::OK, "0-0/*"));
    let (st, hd, _) = e.req(Method::GET, "/rpc/words?limit=1", &[("prefer", "count=estimated")], None).await;
    assert_eq!((st, hd["content-range"].to_str().unwrap()), (StatusCode::PARTIAL_CONTENT, "0-0/2"));
    // Counting a function's result runs it once (it may write), for rows and values.
    for f in ["bump_rows?select=id", "bump_values"] {
        let h = [auth[0], ("prefer", "count=exact")];
        let (st, hd, rows) = e.req(Method::POST, &format!("/rpc/{f}&limit=2").replacen('&', "?", usize::from(!f.contains('?'))), &h, Some(json!({}))).await;
        assert_eq!((st, hd["content-range"].to_str().unwrap(), rows.as_array().map(Vec::len)), (StatusCode::PARTIAL_CONTENT, "0-1/3", Some(2)), "{f}");
    }
    let (_, _, calls) = e.req(Method::GET, "/calls?select=n", &auth, None).await;
    assert_eq!(calls.as_array().map(Vec::len), Some(2), "each function ran once: {calls}");
    // A set of values asked for as one object: the value itself; several → 406, and
    // the function's write rolled back.
    let one = [auth[0], ("accept", "application/vnd.pgrst.object+json")];
    let (st, _, v) = e.req(Method::POST, "/rpc/bump_values?limit=1", &one, Some(json!({}))).await;
    assert_eq!((st, v), (StatusCode::OK, json!(1)));
    let (st, _, err) = e.req(Method::POST, "/rpc/bump_values", &one, Some(json!({}))).await;
    assert_eq!((st, err["code"].as_str()), (StatusCode::NOT_ACCEPTABLE, Some("PGRST116")));
    let (_, _, calls) = e.req(Method::GET, "/calls?select=n", &auth, None).await;
    assert_eq!(calls.as_array().map(Vec::len), Some(3), "the refused call wrote nothing: {calls}");
    // CSV of a set of values, counted.
    let csv = [("accept", "text/csv"), ("prefer", "count=exact")];
    let (st, hd, body) = e.req(Method::GET, "/rpc/words?limit=1", &csv, None).await;
    assert_eq!((st, hd["content-range"].to_str().unwrap(), body), (StatusCode::PARTIAL_CONTENT, "0-0/2", json!("pgrst_scalar\n\"a b\"")));
    // max-affected under handling=strict needs a set-returning function.
    let (st, _, err) = e.req(Method::POST, "/rpc/five", &[("prefer", "handling=strict, max-affected=2")], Some(json!({}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        err,
        json!({"code": "PGRST128", "message": "Function must return SETOF or TABLE when max-affected preference is used with handling=strict", "details": null, "hint": null})
    );
    // RAISE SQLSTATE 'PGRST' without a DETAIL.
    let (st, _, err) = e.req(Method::GET, "/rpc/raise_no_detail", &[], None).await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!((err["code"].as_str(), err["details"].as_str()), (Some("PGRST121"), Some("DETAIL is missing in the RAISE statement")));

    // The root: OpenAPI's media type, 406 for anything else, OPTIONS lists its methods.
    let (st, hd, doc) = e.req(Method::GET, "/", &[("accept", "application/openapi+json")], None).await;
    assert_eq!((st, hd["content-type"].to_str().unwrap(), doc["swagger"].as_str()), (StatusCode::OK, "application/openapi+json; charset=utf-8", Some("2.0")));
    let (st, _, err) = e.req(Method::GET, "/", &[("accept", "text/csv")], None).await;
    assert_eq!((st, err["code"].as_str()), (StatusCode::NOT_ACCEPTABLE, Some("PGRST107")));
    let (st, hd, _) = e.req(Method::OPTIONS, "/", &[], None).await;
    assert_eq!((st, hd["allow"].to_str().unwrap()), (StatusCode::OK, "OPTIONS,GET,HEAD"));

    // A computed relationship declared ROWS 1 embeds one object, and orders.
    let (st, _, rows) = e.req(Method::GET, "/games?select=id,maker(name)&order=maker(id).desc,id", &[], None).await;
    assert_eq!(st, StatusCode::OK, "{rows}");
    assert_eq!(rows, json!([{"id": 2, "maker": {"name": "Hiro"}}, {"id": 3, "maker": {"name": "Hiro"}}, {"id": 1, "maker": {"name": "Sid"}}]));
    let (st, _, rows) = e.req(Method::GET, "/designers?select=id,made(id)&id=eq.2", &[], None).await;
    assert_eq!((st, rows), (StatusCode::OK, json!([{"id": 2, "made": [{"id": 2}, {"id": 3}]}])));
    // An aliased embed named by its relation in filters, orders and limits: honoured,
    // with PostgREST's deprecation warning; by its alias, no warning.
    let (st, hd, rows) = e.req(Method::GET, "/designers?id=eq.2&select=id,works:games(id,name)&games.name=like.FF*&games.order=id.desc&games.limit=1", &[], None).await;
    assert_eq!((st, rows), (StatusCode::OK, json!([{"id": 2, "works": [{"id": 3, "name": "FF2"}]}])));
    let w = hd["warning"].to_str().unwrap();
    assert!(w.starts_with("299 pgstack \"Embedded resource was referenced by relation name even though it has an alias.") && w.contains("Update `games` to `works`"), "{w}");
    let (st, hd, rows) = e.req(Method::GET, "/designers?id=eq.2&select=id,works:games(id)&works.order=id.desc&works.limit=1", &[], None).await;
    assert_eq!((st, rows, hd.get("warning")), (StatusCode::OK, json!([{"id": 2, "works": [{"id": 3}]}]), None));
    let (st, _, err) = e.req(Method::GET, "/designers?select=id&games.limit=1", &[], None).await;
    assert_eq!((st, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("PGRST108")), "not embedded at all");
    // Plans (DB_PLAN_ENABLED): the EXPLAIN of the statement, as JSON or text, with
    // PostgREST's Content-Type; ANALYZE runs it in a transaction that is undone.
    let (st, hd, plan) = e.req(Method::GET, "/games?id=eq.1", &[("accept", "application/vnd.pgrst.plan+json")], None).await;
    assert_eq!((st, hd["content-type"].to_str().unwrap()), (StatusCode::OK, "application/vnd.pgrst.plan+json; for=\"application/json\"; charset=utf-8"));
    assert!(plan[0]["Plan"]["Node Type"].is_string(), "{plan}");
    let accept = "application/vnd.pgrst.plan; for=\"application/vnd.pgrst.object\"; options=verbose|analyze";
    let (st, hd, plan) = e.req(Method::GET, "/games?id=eq.1", &[("accept", accept)], None).await;
    assert_eq!(
        (st, hd["content-type"].to_str().unwrap()),
        (StatusCode::OK, "application/vnd.pgrst.plan+text; for=\"application/vnd.pgrst.object+json\"; options=analyze|verbose; charset=utf-8")
    );
    assert!(plan.as_str().is_some_and(|t| t.contains("actual time") && t.contains("Output:")), "{plan}");
    let (_, _, before) = e.req(Method::GET, "/calls?select=n", &auth, None).await;
    let analyze = [auth[0], ("accept", "application/vnd.pgrst.plan+json; options=analyze")];
    let (st, _, plan) = e.req(Method::POST, "/rpc/bump_values", &analyze, Some(json!({}))).await;
    assert_eq!(st, StatusCode::OK, "{plan}");
    assert!(plan[0]["Plan"]["Actual Rows"].is_number(), "{plan}");
    let (_, _, after) = e.req(Method::GET, "/calls?select=n", &auth, None).await;
    assert_eq!(before, after, "an analyzed call's write is undone");
    let (st, _, err) = e.req(Method::POST, "/notes", &[auth[0], ("accept", "application/vnd.pgrst.plan+json")], Some(json!({"body": "p"}))).await;
    assert_eq!((st, err["code"].as_str()), (StatusCode::NOT_ACCEPTABLE, Some("PGRST107")), "plans are for reads and calls");
    let (st, _, _) = e.req(Method::GET, "/games", &[("accept", "application/vnd.pgrst.plan+json; for=\"text/xml\"")], None).await;
    assert_eq!(st, StatusCode::NOT_ACCEPTABLE);

    // A function of one unnamed bytea / text parameter takes a raw body; one
    // returning a media type's domain answers it (bytes untouched, no charset).
    let raw: Vec<u8> = vec![b'h', b'i', 0, 0xff, b'\n'];
    let res = e
        .http
        .post(e.gw.url("/rest/v1/rpc/echo_bytes"))
        .header("content-type", "application/octet-stream")
        .header("accept", "application/octet-stream")
        .body(raw.clone())
        .send()
        .await
        .unwrap();
    assert_eq!((res.status(), res.headers()["content-type"].to_str().unwrap().to_owned()), (StatusCode::OK, "application/octet-stream".to_owned()));
    assert_eq!(res.bytes().await.unwrap().to_vec(), raw);
    let res = e.http.post(e.gw.url("/rest/v1/rpc/echo_bytes")).header("content-type", "application/octet-stream").body(vec![1u8, 2]).send().await.unwrap();
    assert_eq!(res.text().await.unwrap(), "\"\\\\x0102\"", "asked for JSON: the bytea's JSON text");
    // A domain over a bytea domain, whatever bytea_output says; NULL is an empty body;
    // q=0 refuses the type.
    let res = e.http.get(e.gw.url("/rest/v1/rpc/nested_bytes")).header("accept", "image/outer").send().await.unwrap();
    assert_eq!((res.status(), res.headers()["content-type"].to_str().unwrap().to_owned()), (StatusCode::OK, "image/outer".to_owned()));
    assert_eq!(res.bytes().await.unwrap().to_vec(), vec![0u8, 0xff, b'A']);
    let res = e.http.get(e.gw.url("/rest/v1/rpc/no_bytes")).header("accept", "application/octet-stream").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.bytes().await.unwrap().is_empty());
    let (st, hd, _) = e.req(Method::GET, "/rpc/nested_bytes", &[("accept", "image/outer;q=0, application/json")], None).await;
    assert_eq!((st, hd["content-type"].to_str().unwrap()), (StatusCode::OK, "application/json; charset=utf-8"));
    let (st, hd, body) = e.req(Method::GET, "/rpc/any_type", &[("accept", "image/whatever")], None).await;
    assert_eq!((st, hd["content-type"].to_str().unwrap(), body), (StatusCode::OK, "application/octet-stream", json!("any")));
    let (st, hd, _) = e.req(Method::GET, "/rpc/typed_any", &[], None).await;
    assert_eq!((st, hd["content-type"].to_str().unwrap()), (StatusCode::OK, "image/x-test"), "response.headers sets its own type");
    let res = e.http.post(e.gw.url("/rest/v1/rpc/shout")).header("content-type", "text/plain").body("abc").send().await.unwrap();
    assert_eq!(res.text().await.unwrap(), "\"ABC\"");
    let (st, _, err) = e.req(Method::GET, "/rpc/five", &[("accept", "image/png")], None).await;
    assert_eq!((st, err["code"].as_str()), (StatusCode::NOT_ACCEPTABLE, Some("PGRST107")), "a plain function has no image/png");
    let res = e.http.post(e.gw.url("/rest/v1/rpc/shout")).header("content-type", "application/octet-stream").body("abc").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND, "no bytea parameter to take the bytes");

    // A to-one embed with its own limit; ordering by a to-one embed orders by the row
    // it shows (its own filters apply).
    let (st, _, rows) = e.req(Method::GET, "/games?select=id,designers(name)&designers.limit=1&order=id", &[], None).await;
    assert_eq!((st, rows[0].clone()), (StatusCode::OK, json!({"id": 1, "designers": {"name": "Sid"}})));
    let (st, _, rows) = e.req(Method::GET, "/games?select=id,designers(id)&designers.id=neq.1&order=designers(id).desc.nullsfirst,id", &[], None).await;
    assert_eq!(
        (st, rows),
        (StatusCode::OK, json!([{"id": 1, "designers": null}, {"id": 2, "designers": {"id": 2}}, {"id": 3, "designers": {"id": 2}}])),
        "the filtered-out designer orders as null"
    );
    let (st, _, rows) = e.req(Method::GET, "/games?select=id,designers(name)&designers.limit=0&order=designers(name).asc,id", &[], None).await;
    assert_eq!(
        (st, rows),
        (StatusCode::OK, json!([{"id": 1, "designers": null}, {"id": 2, "designers": null}, {"id": 3, "designers": null}])),
        "limit=0 shows nothing to order by"
    );
    let path = "/games?select=id,designers(name,games!inner(id))&designers.games.id=eq.1&order=designers(name).desc.nullsfirst,id";
    let (st, _, rows) = e.req(Method::GET, path, &[], None).await;
    assert_eq!(
        (st, rows),
        (StatusCode::OK, json!([{"id": 2, "designers": null}, {"id": 3, "designers": null}, {"id": 1, "designers": {"name": "Sid", "games": [{"id": 1}]}}])),
        "a nested !inner the embed needs applies to its order"
    );
    let (st, _, rows) = e.req(Method::GET, "/games?select=id,maker(id)&maker.id=neq.2&order=maker(id).asc.nullsfirst,id", &[], None).await;
    assert_eq!((st, rows), (StatusCode::OK, json!([{"id": 2, "maker": null}, {"id": 3, "maker": null}, {"id": 1, "maker": {"id": 1}}])));
    let (st, _, err) = e.req(Method::GET, "/designers?select=id,made(id)&order=made(id)", &[], None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(err["details"], "'designers' and 'made' do not form a many-to-one or one-to-one relationship");
}
