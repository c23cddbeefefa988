//! Issue 16: PostgREST behaviours beyond the shared cases — its own PGRST100 parse
//! errors (Parsec's position and alternatives), JSON paths into composite and array
//! columns (`to_jsonb`), functions with TABLE / OUT parameters answering objects,
//! uniform bulk bodies (PGRST102) unless `columns=` is given, and its JSON body error.

use pgstack_gateway::config::Secret;
use pgstack_gateway::keys;
use pgstack_shared::Role;
use pgstack_tests::{Gateway, TestCluster, JWT_SECRET};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const FIXTURE: &str = r#"
CREATE TYPE public.dims AS (w int, h int, meta jsonb);
CREATE TABLE public.boxes (id int PRIMARY KEY, d public.dims, tags text[], doc jsonb, name text);
INSERT INTO public.boxes VALUES
  (1, row(2, 3, '{"k": {"z": 5}}'), '{a,b}', '{"n": 1}', 'small'),
  (2, row(7, 1, '{"k": {"z": 9}}'), '{c}', '{"n": 2}', 'wide');
CREATE TABLE public.loose (a int, b text);
CREATE FUNCTION public.one_col() RETURNS TABLE (x int) LANGUAGE sql AS $$ SELECT 1 UNION ALL SELECT 2 $$;
CREATE FUNCTION public.one_out(OUT y int) LANGUAGE sql AS $$ SELECT 5 $$;
CREATE FUNCTION public.two_out(OUT y int, OUT z text) LANGUAGE sql AS $$ SELECT 5, 'five' $$;
CREATE FUNCTION public.ints() RETURNS SETOF int LANGUAGE sql AS $$ SELECT 7 $$;
CREATE TABLE public.counters (id serial PRIMARY KEY, n int NOT NULL DEFAULT 7, label text);
CREATE TABLE public.keys_only (id int PRIMARY KEY);
INSERT INTO public.keys_only VALUES (1), (2);
CREATE FUNCTION public.words(VARIADIC v text[]) RETURNS text[] LANGUAGE sql AS $$ SELECT v $$;
GRANT ALL ON public.boxes, public.loose, public.counters, public.keys_only TO anon;
GRANT USAGE ON SEQUENCE public.counters_id_seq TO anon;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO anon;
"#;

async fn call(http: &Client, gw: &Gateway, method: reqwest::Method, path: &str, body: Option<&str>) -> (StatusCode, Value) {
    call_with(http, gw, method, path, body, &[("content-type", "application/json"), ("prefer", "return=representation")]).await
}

async fn call_with(http: &Client, gw: &Gateway, method: reqwest::Method, path: &str, body: Option<&str>, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    let anon = keys::mint(Role::Anon, &Secret::new(JWT_SECRET)).unwrap();
    let mut r = http.request(method, gw.url(&format!("/rest/v1{path}"))).header("apikey", anon);
    if let Some(b) = body {
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r = r.body(b.to_owned());
    }
    let res = r.send().await.unwrap();
    let st = res.status();
    (st, res.json().await.unwrap_or(Value::Null))
}

/// A cluster with `fixture` and a gateway on it.
async fn start(fixture: &str) -> (TestCluster, Gateway) {
    let tc = TestCluster::start().await.unwrap();
    tc.superuser().await.unwrap().batch_execute(fixture).await.unwrap();
    let gw = Gateway::serve(&tc, &[]).await.unwrap();
    (tc, gw)
}

#[tokio::test]
async fn postgrest_parity_beyond_the_shared_cases() {
    let (_tc, gw) = start(FIXTURE).await;
    let http = Client::new();
    let get = |path: &'static str| call(&http, &gw, reqwest::Method::GET, path, None);

    // Parse errors: PostgREST's message and details, hint null.
    for (path, message, details) in [
        ("/boxes?select=id,name::", "\"failed to parse select parameter (id,name::)\" (line 1, column 10)", "unexpected end of input expecting letter or digit"),
        (
            "/boxes?select=id,tags[]",
            "\"failed to parse select parameter (id,tags[])\" (line 1, column 8)",
            "unexpected '[' expecting letter, digit, \"-\", \"->>\", \"->\", \"::\", \".\", \")\", \",\" or end of input",
        ),
        ("/boxes?id=val", "\"failed to parse filter (val)\" (line 1, column 1)", "unexpected \"v\" expecting \"not\" or operator (eq, gt, ...)"),
        ("/boxes?id=eq().1", "\"failed to parse filter (eq().1)\" (line 1, column 4)", "unexpected \")\" expecting operator (eq, gt, ...)"),
        ("/boxes?order=id.ac", "\"failed to parse order (id.ac)\" (line 1, column 4)", "unexpected \"c\" expecting \"asc\", \"desc\", \"nullsfirst\" or \"nullslast\""),
        (
            "/boxes?or=(id.eq.1,not.xor(id.eq.2))",
            "\"failed to parse logic tree ((id.eq.1,not.xor(id.eq.2)))\" (line 1, column 16)",
            "unexpected \"x\" expecting logic operator (and, or)",
        ),
    ] {
        let (st, b) = get(path).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{path}: {b}");
        assert_eq!((b["code"].as_str(), b["message"].as_str(), b["details"].as_str(), &b["hint"]), (Some("PGRST100"), Some(message), Some(details), &Value::Null), "{path}: {b}");
    }

    // JSON paths into a composite and an array read to_jsonb(col), in select, filter and order.
    let (st, b) = get("/boxes?select=id,w:d->w,z:d->meta->k->>z&d->>h=eq.3").await;
    assert_eq!((st, b), (StatusCode::OK, json!([{"id": 1, "w": 2, "z": "5"}])));
    let (_, b) = get("/boxes?select=id&order=d->w.desc").await;
    assert_eq!(b, json!([{"id": 2}, {"id": 1}]));
    let (_, b) = get("/boxes?select=id,first:tags->0&tags->>0=eq.c").await;
    assert_eq!(b, json!([{"id": 2, "first": "c"}]));
    let (_, b) = get("/boxes?select=n:doc->n&doc->n=eq.2").await;
    assert_eq!(b, json!([{"n": 2}]), "json columns keep their own arrows");

    // TABLE / OUT parameters: rows of named columns, as PostgREST.
    assert_eq!(get("/rpc/one_col").await.1, json!([{"x": 1}, {"x": 2}]));
    assert_eq!(get("/rpc/one_col?x=gt.1").await.1, json!([{"x": 2}]));
    assert_eq!(get("/rpc/one_out").await.1, json!({"y": 5}));
    assert_eq!(get("/rpc/two_out").await.1, json!({"y": 5, "z": "five"}));
    assert_eq!(get("/rpc/ints").await.1, json!([7]), "a plain SETOF scalar stays an array of values");

    // Bulk bodies: the same keys in every object unless columns= names them.
    let (st, b) = call(&http, &gw, reqwest::Method::POST, "/loose", Some(r#"[{"a":1},{"b":"x"}]"#)).await;
    assert_eq!((st, b["code"].as_str(), b["message"].as_str()), (StatusCode::BAD_REQUEST, Some("PGRST102"), Some("All object keys must match")), "{b}");
    let (st, b) = call(&http, &gw, reqwest::Method::POST, "/loose?columns=a,b", Some(r#"[{"a":1},{"b":"x"}]"#)).await;
    assert_eq!((st, b), (StatusCode::CREATED, json!([{"a": 1, "b": null}, {"a": null, "b": "x"}])));
    let (st, b) = call(&http, &gw, reqwest::Method::POST, "/loose", Some(r#"[{"a":2,"b":"y"},{"b":"z","a":3}]"#)).await;
    assert_eq!((st, b), (StatusCode::CREATED, json!([{"a": 2, "b": "y"}, {"a": 3, "b": "z"}])), "key order does not matter");
    let (st, b) = call(&http, &gw, reqwest::Method::POST, "/loose", Some(r#"[{"a":1,"#)).await;
    assert_eq!((st, b["code"].as_str(), b["message"].as_str()), (StatusCode::BAD_REQUEST, Some("PGRST102"), Some("Empty or invalid json")), "{b}");
    let (st, b) = call(&http, &gw, reqwest::Method::POST, "/loose?columns=a,,b", Some(r#"[{"a":1}]"#)).await;
    assert_eq!((st, b["code"].as_str()), (StatusCode::BAD_REQUEST, Some("PGRST100")), "{b}");
    assert!(b["message"].as_str().unwrap().starts_with("\"failed to parse columns parameter (a,,b)\""), "{b}");

    // Empty payloads: no body is not a payload; `[{},{}]` is two rows of defaults;
    // PATCH with nothing to set changes nothing (200 [] with a representation).
    let (st, b) = call_with(&http, &gw, reqwest::Method::POST, "/counters", Some(""), &[("content-type", "application/json")]).await;
    assert_eq!((st, b["message"].as_str()), (StatusCode::BAD_REQUEST, Some("Empty or invalid json")), "{b}");
    let (st, b) = call(&http, &gw, reqwest::Method::POST, "/counters", Some("[{},{}]")).await;
    assert_eq!((st, b), (StatusCode::CREATED, json!([{"id": 1, "n": 7, "label": null}, {"id": 2, "n": 7, "label": null}])));
    let (st, b) = call(&http, &gw, reqwest::Method::PATCH, "/counters", Some("[]")).await;
    assert_eq!((st, b), (StatusCode::OK, json!([])), "a no-op, filter or not");
    // Forms: an insert and a VARIADIC call.
    let form = [("content-type", "application/x-www-form-urlencoded"), ("prefer", "return=representation")];
    let (st, b) = call_with(&http, &gw, reqwest::Method::POST, "/counters", Some("n=3&label=form+post"), &form).await;
    assert_eq!((st, b), (StatusCode::CREATED, json!([{"id": 3, "n": 3, "label": "form post"}])));
    let (st, b) = call_with(&http, &gw, reqwest::Method::POST, "/rpc/words", Some("v=hi&v=there"), &form).await;
    assert_eq!((st, b), (StatusCode::OK, json!(["hi", "there"])));
    // Hostile forms and CSV: bounded before anything is built from them.
    let many = "a&".repeat(20_000);
    let (st, b) = call_with(&http, &gw, reqwest::Method::POST, "/rpc/words", Some(&many), &form).await;
    assert_eq!((st, b["code"].as_str()), (StatusCode::BAD_REQUEST, Some("PGRST102")), "{b}");
    let repeated = "a&".repeat(5_000);
    let (st, b) = call_with(&http, &gw, reqwest::Method::POST, "/rpc/nothing_here", Some(&repeated), &form).await;
    assert_eq!((st, b["message"].as_str()), (StatusCode::NOT_FOUND, Some("Could not find the function public.nothing_here(a) in the schema cache")), "each name once: {b}");
    let mut csv = "k".repeat(100_000);
    csv.push_str(&"\n".repeat(100_001));
    let (st, b) = call_with(&http, &gw, reqwest::Method::POST, "/counters", Some(&csv), &[("content-type", "text/csv")]).await;
    assert_eq!((st, b["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("PGRST102")), "a short CSV whose rows would repeat a long header: {b}");
    let (st, b) =
        call_with(&http, &gw, reqwest::Method::POST, "/counters", Some("n,label\n5,csv\n6,NULL\n"), &[("content-type", "text/csv"), ("prefer", "return=representation")]).await;
    assert_eq!((st, b), (StatusCode::CREATED, json!([{"id": 4, "n": 5, "label": "csv"}, {"id": 5, "n": 6, "label": null}])));
    // A singular write touching several rows is refused and rolled back.
    let single = [("content-type", "application/json"), ("accept", "application/vnd.pgrst.object+json")];
    let (st, b) = call_with(&http, &gw, reqwest::Method::PATCH, "/counters?n=eq.7", Some(r#"{"label":"x"}"#), &single).await;
    assert_eq!((st, b["code"].as_str(), b["details"].as_str()), (StatusCode::NOT_ACCEPTABLE, Some("PGRST116"), Some("The result contains 2 rows")), "{b}");
    let (_, b) = get("/counters?label=eq.x").await;
    assert_eq!(b, json!([]), "rolled back");
    // The same with a representation (checked inside the write's own statement).
    let single_rep = [("content-type", "application/json"), ("accept", "application/vnd.pgrst.object+json"), ("prefer", "return=representation")];
    let (st, b) = call_with(&http, &gw, reqwest::Method::PATCH, "/counters?n=eq.7", Some(r#"{"label":"y"}"#), &single_rep).await;
    assert_eq!((st, b["code"].as_str(), b["details"].as_str()), (StatusCode::NOT_ACCEPTABLE, Some("PGRST116"), Some("The result contains 2 rows")), "{b}");
    let (_, b) = get("/counters?label=eq.y").await;
    assert_eq!(b, json!([]), "rolled back");
    let (st, b) = call_with(&http, &gw, reqwest::Method::PATCH, "/counters?id=eq.1", Some(r#"{"label":"one"}"#), &single_rep).await;
    assert_eq!((st, b), (StatusCode::OK, json!({"id": 1, "n": 7, "label": "one"})));
    // A limited PATCH / DELETE is refused, never run on every matching row.
    for method in [reqwest::Method::PATCH, reqwest::Method::DELETE] {
        let (st, b) = call(&http, &gw, method.clone(), "/counters?n=eq.7&limit=1&order=id", Some(r#"{"label":"z"}"#)).await;
        assert_eq!((st, b["code"].as_str()), (StatusCode::BAD_REQUEST, Some("PGRST100")), "{method}: {b}");
    }
    let (_, b) = get("/counters?n=eq.7&select=id,label&order=id").await;
    assert_eq!(b, json!([{"id": 1, "label": "one"}, {"id": 2, "label": null}]), "nothing changed");
    // An upsert of keys only returns every row it met, as PostgREST.
    let upsert = [("content-type", "application/json"), ("prefer", "return=representation,resolution=merge-duplicates")];
    let (st, b) = call_with(&http, &gw, reqwest::Method::POST, "/keys_only", Some(r#"[{"id":1},{"id":2},{"id":3}]"#), &upsert).await;
    assert_eq!((st, b), (StatusCode::CREATED, json!([{"id": 1}, {"id": 2}, {"id": 3}])));
}

const DATAREP: &str = r#"
CREATE DOMAIN public.color AS int CHECK (VALUE >= 0 AND VALUE <= 16777215);
CREATE FUNCTION public.color(json) RETURNS public.color LANGUAGE sql IMMUTABLE AS $$ SELECT public.color($1 #>> '{}') $$;
CREATE FUNCTION public.color(text) RETURNS public.color LANGUAGE sql IMMUTABLE AS $$
  SELECT (('x' || lpad((CASE WHEN substring($1, 1, 1) = '#' THEN substring($1, 2) ELSE $1 END), 8, '0'))::bit(32)::int)::public.color $$;
CREATE FUNCTION public."json"(public.color) RETURNS json LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN $1 IS NULL THEN to_json(''::text) ELSE to_json('#' || lpad(upper(to_hex($1)), 6, '0')) END $$;
CREATE CAST (public.color AS json) WITH FUNCTION public."json"(public.color) AS IMPLICIT;
CREATE CAST (json AS public.color) WITH FUNCTION public.color(json) AS IMPLICIT;
CREATE CAST (text AS public.color) WITH FUNCTION public.color(text) AS IMPLICIT;
CREATE TABLE public.todos (id int PRIMARY KEY, name text, label_color public.color DEFAULT 0);
INSERT INTO public.todos VALUES (1, 'Report', 0), (2, 'Essay', 256), (3, 'Algebra', 123456), (4, 'Opus', NULL);
CREATE TABLE public.pairs (id int PRIMARY KEY, first_id int REFERENCES public.todos);
INSERT INTO public.pairs VALUES (1, 2), (2, 1);
CREATE FUNCTION public.todo(i int) RETURNS public.todos LANGUAGE sql STABLE AS 'SELECT * FROM public.todos WHERE id = i';
GRANT ALL ON public.todos, public.pairs TO anon;
GRANT EXECUTE ON FUNCTION public.todo(int) TO anon;
"#;

/// PostgREST's data representations: a domain's implicit casts by function format
/// its values in responses (domain → json), parse filter values (text → domain) and
/// written values (json → domain).
#[tokio::test]
async fn data_representations_format_parse_and_write() {
    let (tc, gw) = start(DATAREP).await;
    let http = Client::new();
    let get = |path: &'static str| call_with(&http, &gw, reqwest::Method::GET, path, None, &[]);
    assert_eq!(
        get("/todos?select=id,label_color&id=lt.4&order=id").await.1,
        json!([{"id": 1, "label_color": "#000000"}, {"id": 2, "label_color": "#000100"}, {"id": 3, "label_color": "#01E240"}])
    );
    assert_eq!(get("/todos?id=eq.4").await.1, json!([{"id": 4, "name": "Opus", "label_color": ""}]), "the implicit * is formatted column by column");
    assert_eq!(get("/todos?select=id,clr:label_color::text&id=eq.2").await.1, json!([{"id": 2, "clr": "\"#000100\""}]), "a cast applies on top of the format");
    assert_eq!(get("/todos?select=id&label_color=eq.000100").await.1, json!([{"id": 2}]), "the text parser reads filter values");
    assert_eq!(get("/todos?select=id&label_color=in.(000100,01E240)&order=id").await.1, json!([{"id": 2}, {"id": 3}]));
    assert_eq!(get("/todos?select=id&label_color=not.in.(000000,01E240)&order=id").await.1, json!([{"id": 2}]));
    assert_eq!(get("/todos?select=id&label_color=eq(any).{000100,01E240}&order=id").await.1, json!([{"id": 2}, {"id": 3}]), "quantified filters parse each value too");
    assert_eq!(
        get("/pairs?select=id,todos(label_color)&order=id").await.1,
        json!([{"id": 1, "todos": {"label_color": "#000100"}}, {"id": 2, "todos": {"label_color": "#000000"}}])
    );
    // A function returning one row of the table: select= and the formats apply.
    assert_eq!(get("/rpc/todo?i=2&select=id,label_color").await.1, json!({"id": 2, "label_color": "#000100"}));
    assert_eq!(get("/rpc/todo?i=3").await.1, json!({"id": 3, "name": "Algebra", "label_color": "#01E240"}));
    let (st, b) = call(&http, &gw, reqwest::Method::POST, "/todos", Some(r##"{"id": 5, "name": "New", "label_color": "#0000FF"}"##)).await;
    assert_eq!((st, b), (StatusCode::CREATED, json!([{"id": 5, "name": "New", "label_color": "#0000FF"}])), "the json parser reads written values");
    let (st, b) = call(&http, &gw, reqwest::Method::PATCH, "/todos?id=eq.5", Some(r##"{"label_color": "#000010"}"##)).await;
    assert_eq!((st, b), (StatusCode::OK, json!([{"id": 5, "name": "New", "label_color": "#000010"}])));
    let v: i32 = tc.superuser().await.unwrap().query_one("SELECT label_color::int FROM public.todos WHERE id = 5", &[]).await.unwrap().get(0);
    assert_eq!(v, 16, "stored as the domain's own value");
}
