//! Issue 7 (first slice): /rest/v1 over tables and functions, with the request's role
//! and claims deciding access through GRANTs and RLS. Real cluster, real binary.

use pgstack_gateway::config::Secret;
use pgstack_gateway::keys;
use pgstack_shared::{JwtClaims, Role};
use pgstack_tests::{Gateway, TestCluster, JWT_SECRET};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

const USER_A: &str = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
const USER_B: &str = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb";

const FIXTURE: &str = r#"
CREATE TABLE public.todos (
    id bigserial PRIMARY KEY,
    title text NOT NULL,
    done boolean NOT NULL DEFAULT false,
    owner uuid DEFAULT auth.uid(),
    priority int,
    tags text[] NOT NULL DEFAULT '{}',
    meta jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.todos ENABLE ROW LEVEL SECURITY;
CREATE POLICY read_public_or_own ON public.todos FOR SELECT TO anon, authenticated
    USING (owner IS NULL OR owner = auth.uid());
CREATE POLICY insert_own ON public.todos FOR INSERT TO authenticated WITH CHECK (owner = auth.uid());
CREATE POLICY change_own ON public.todos FOR UPDATE TO authenticated USING (owner = auth.uid());
CREATE POLICY delete_own ON public.todos FOR DELETE TO authenticated USING (owner = auth.uid());
GRANT SELECT ON public.todos TO anon;
GRANT ALL ON public.todos TO authenticated, service_role;
GRANT USAGE ON SEQUENCE public.todos_id_seq TO authenticated, service_role;
INSERT INTO public.todos (title, done, owner, priority, tags, meta) VALUES
    ('public one', false, NULL, 1, '{home}', '{"size": "s", "n": 1}'),
    ('public two', true, NULL, NULL, '{work,home}', '{"size": "l", "n": 2}'),
    ('a private', false, 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 3, '{work}', NULL),
    ('b private', false, 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', 2, '{}', NULL);

CREATE TABLE public.items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2), body text);
GRANT ALL ON public.items TO anon, authenticated, service_role;
INSERT INTO public.items VALUES
    (1, 'Laptop', 999.00, 'a fast laptop for work'),
    (2, 'Mouse', 19.99, 'a small wireless mouse'),
    (3, 'Desk', 250.00, 'a standing desk');

CREATE FUNCTION public.add(a int, b int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT a + b';
CREATE FUNCTION public.search_items(term text) RETURNS SETOF public.items LANGUAGE sql STABLE
    AS $$ SELECT * FROM public.items WHERE name ILIKE '%' || term || '%' OR body ILIKE '%' || term || '%' $$;
CREATE FUNCTION public.item_names() RETURNS SETOF text LANGUAGE sql STABLE AS $$ SELECT name FROM public.items ORDER BY id $$;
CREATE FUNCTION public.bump(n int DEFAULT 1) RETURNS int LANGUAGE sql VOLATILE AS 'SELECT n + 1';
CREATE FUNCTION public.rename_item(i int, n text) RETURNS text LANGUAGE sql VOLATILE
    AS 'UPDATE public.items SET name = n WHERE id = i RETURNING name';
CREATE FUNCTION public.ping() RETURNS void LANGUAGE sql AS '';
CREATE FUNCTION public.price_band(public.items) RETURNS text LANGUAGE sql STABLE
    AS $$ SELECT CASE WHEN $1.price > 100 THEN 'high' ELSE 'low' END $$;
CREATE FUNCTION public.plus_one(n int, OUT plus int) LANGUAGE sql AS 'SELECT n + 1';
CREATE FUNCTION public.pt402() RETURNS int LANGUAGE plpgsql
    AS $$ BEGIN RAISE SQLSTATE 'PT402' USING MESSAGE = 'Payment Required', DETAIL = 'Quota exceeded'; END $$;
CREATE FUNCTION public.with_headers() RETURNS int LANGUAGE plpgsql AS $$ BEGIN
    PERFORM set_config('response.headers', '[{"X-Ratelimit": "5"}, {"Set-Cookie": "a=1"}, {"Set-Cookie": "b=2"}]', true);
    PERFORM set_config('response.status', '202', true);
    RETURN 1; END $$;
CREATE FUNCTION public.whoami() RETURNS text LANGUAGE sql STABLE AS $$ SELECT coalesce(auth.uid()::text, auth.role()) $$;
CREATE FUNCTION public.fail() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'nope: %', 42; END $$;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO anon, authenticated, service_role;
"#;

struct Rest {
    http: Client,
    gw: Gateway,
    anon: String,
    service: String,
    a: String,
    b: String,
    _tc: TestCluster,
}

fn user_token(sub: &str) -> String {
    let mut c = JwtClaims::api_key(Role::Authenticated, keys::now(), 600);
    c.sub = Some(sub.into());
    c.aud = Some("authenticated".into());
    keys::sign(&c, &Secret::new(JWT_SECRET)).unwrap()
}

impl Rest {
    async fn start() -> Rest {
        let tc = TestCluster::start().await.unwrap();
        tc.superuser().await.unwrap().batch_execute(FIXTURE).await.unwrap();
        let secret = Secret::new(JWT_SECRET);
        let anon = keys::mint(Role::Anon, &secret).unwrap();
        let service = keys::mint(Role::ServiceRole, &secret).unwrap();
        let gw = Gateway::serve(&tc, &[("ANON_KEY", &anon), ("SERVICE_ROLE_KEY", &service)]).await.unwrap();
        Rest { http: Client::new(), gw, anon, service, a: user_token(USER_A), b: user_token(USER_B), _tc: tc }
    }

    async fn req(&self, method: Method, path: &str, token: &str, headers: &[(&str, &str)], body: Option<Value>) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut r = self.http.request(method, self.gw.url(&format!("/rest/v1{path}"))).header("apikey", &self.anon).bearer_auth(token);
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

    async fn get(&self, path: &str, token: &str) -> Value {
        let (st, _, body) = self.req(Method::GET, path, token, &[], None).await;
        assert_eq!(st, StatusCode::OK, "GET {path}: {body}");
        body
    }
}

fn titles(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|r| r["title"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn rls_decides_what_each_caller_sees() {
    let r = Rest::start().await;
    assert_eq!(titles(&r.get("/todos?order=id", &r.anon).await), vec!["public one", "public two"]);
    assert_eq!(titles(&r.get("/todos?order=id", &r.a).await), vec!["public one", "public two", "a private"]);
    assert_eq!(titles(&r.get("/todos?order=id", &r.b).await), vec!["public one", "public two", "b private"]);
    assert_eq!(r.get("/todos", &r.service).await.as_array().unwrap().len(), 4);

    // anon cannot write at all (no grant): 401; a user cannot write rows of another.
    let (st, _, e) = r.req(Method::POST, "/todos", &r.anon, &[], Some(json!({"title": "x"}))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{e}");
    assert_eq!(e["code"], "42501");
    let (st, _, e) = r.req(Method::POST, "/todos", &r.a, &[], Some(json!({"title": "x", "owner": USER_B}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{e}");
    assert_eq!(e["code"], "42501");
    assert!(e["message"].as_str().unwrap().contains("row-level security"), "{e}");
    let (st, _, body) = r.req(Method::PATCH, "/todos?title=eq.b%20private", &r.a, &[("prefer", "return=representation")], Some(json!({"done": true}))).await;
    assert_eq!((st, body), (StatusCode::OK, json!([])));
    let (st, _, _) = r.req(Method::DELETE, "/todos?title=eq.b%20private", &r.a, &[], None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(titles(&r.get("/todos?title=eq.b%20private", &r.b).await), vec!["b private"]);

    // The request's claims reach Postgres.
    let (st, _, who) = r.req(Method::POST, "/rpc/whoami", &r.a, &[], Some(json!({}))).await;
    assert_eq!((st, who), (StatusCode::OK, json!(USER_A)));
    let (_, _, who) = r.req(Method::POST, "/rpc/whoami", &r.anon, &[], Some(json!({}))).await;
    assert_eq!(who, json!("anon"));
    let dbg = r.get("/rls-debug", &r.a).await;
    assert_eq!((dbg["role"].as_str(), dbg["claims"]["sub"].as_str()), (Some("authenticated"), Some(USER_A)));
}

#[tokio::test]
async fn filters_cover_every_operator() {
    let r = Rest::start().await;
    let t = &r.service;
    let cases: &[(&str, &[&str])] = &[
        ("title=eq.public%20one", &["public one"]),
        ("title=neq.public%20one&owner=is.null", &["public two"]),
        ("priority=gt.1", &["a private", "b private"]),
        ("priority=gte.2", &["a private", "b private"]),
        ("priority=lt.2", &["public one"]),
        ("priority=lte.2", &["public one", "b private"]),
        ("title=like.*private", &["a private", "b private"]),
        ("title=ilike.PUBLIC*", &["public one", "public two"]),
        ("title=match.%5Ea%20", &["a private"]),
        ("title=imatch.%5EB", &["b private"]),
        ("priority=is.null", &["public two"]),
        ("priority=not.is.null&owner=not.is.null", &["a private", "b private"]),
        ("done=is.true", &["public two"]),
        ("priority=isdistinct.1", &["public two", "a private", "b private"]),
        ("priority=in.(1,3)", &["public one", "a private"]),
        ("priority=not.in.(1,3)", &["b private"]),
        ("id=in.()", &[]),
        ("tags=cs.%7Bwork%7D", &["public two", "a private"]),
        ("tags=cd.%7Bhome,work%7D&tags=neq.%7B%7D", &["public one", "public two", "a private"]),
        ("tags=ov.%7Bhome%7D", &["public one", "public two"]),
        ("tags=ov.(work)", &["public two", "a private"]),
        ("title=fts.private", &["a private", "b private"]),
        ("title=fts(english).privates", &["a private", "b private"]),
        ("title=plfts.public%20two", &["public two"]),
        ("title=phfts(english).public%20one", &["public one"]),
        ("title=wfts.public%20-two", &["public one"]),
        ("meta->>size=eq.l", &["public two"]),
        ("meta->n=eq.1", &["public one"]),
        ("priority=eq(any).%7B1,2%7D", &["public one", "b private"]),
        ("title=like(all).%7B*private,b*%7D", &["b private"]),
        ("title=like(any).%7Ba*,b*%7D", &["a private", "b private"]),
        ("or=(priority.eq.1,title.eq.b%20private)", &["public one", "b private"]),
        ("or=(done.is.true,and(priority.gt.1,title.like.a*))", &["public two", "a private"]),
        ("not.or=(priority.is.null,priority.gte.2)", &["public one"]),
        ("and=(owner.not.is.null,or(priority.eq.3,priority.eq.9))", &["a private"]),
        ("priority=gt.0&priority=lt.3", &["public one", "b private"]),
    ];
    for (q, want) in cases {
        let got = r.get(&format!("/todos?select=title&order=id&{q}"), t).await;
        assert_eq!(titles(&got), want.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "{q}");
    }
}

#[tokio::test]
async fn ranges_are_compared_as_ranges() {
    let r = Rest::start().await;
    r._tc
        .superuser()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE public.slots (id int PRIMARY KEY, during int4range);
         GRANT SELECT ON public.slots TO service_role;
         INSERT INTO public.slots VALUES (1, '[1,5)'), (2, '[5,10)'), (3, '[20,30)');",
        )
        .await
        .unwrap();
    let (st, _, ok) = r.req(Method::POST, "/../api/catalog/refresh", &r.service, &[], None).await;
    let _ = (st, ok);
    let res = r.http.post(r.gw.url("/api/catalog/refresh")).bearer_auth(&r.service).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"ok": true}));
    let ids = |v: Value| v.as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect::<Vec<_>>();
    let t = &r.service;
    assert_eq!(ids(r.get("/slots?select=id&during=sl.[10,15)&order=id", t).await), vec![1, 2]);
    assert_eq!(ids(r.get("/slots?select=id&during=sr.[6,7)&order=id", t).await), vec![3]);
    assert_eq!(ids(r.get("/slots?select=id&during=adj.[10,20)&order=id", t).await), vec![2, 3]);
    // PostgREST: nxl = &> (does not extend to the left of), nxr = &< (... right of).
    assert_eq!(ids(r.get("/slots?select=id&during=nxl.[6,8)&order=id", t).await), vec![3]);
    assert_eq!(ids(r.get("/slots?select=id&during=nxr.[4,8)&order=id", t).await), vec![1]);
    assert_eq!(ids(r.get("/slots?select=id&during=ov.[4,6)&order=id", t).await), vec![1, 2]);
    assert_eq!(ids(r.get("/slots?select=id&during=cs.[2,3)&order=id", t).await), vec![1]);
    assert_eq!(ids(r.get("/slots?select=id&during=cd.[0,12)&order=id", t).await), vec![1, 2]);
    // Only the service key may refresh the catalog.
    let res = r.http.post(r.gw.url("/api/catalog/refresh")).bearer_auth(&r.anon).send().await.unwrap();
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn select_order_paging_count_and_single_object() {
    let r = Rest::start().await;
    let t = &r.service;
    let rows = r.get("/todos?select=id,label:title,priority::text,size:meta->>size&order=priority.desc.nullslast,id&limit=2", t).await;
    assert_eq!(rows, json!([{"id": 3, "label": "a private", "priority": "3", "size": null}, {"id": 4, "label": "b private", "priority": "2", "size": null}]));
    let rows = r.get("/todos?select=title&order=priority.asc.nullsfirst&limit=1", t).await;
    assert_eq!(titles(&rows), vec!["public two"]);

    let (st, h, body) = r.req(Method::GET, "/todos?select=id&order=id&limit=2&offset=1", t, &[("prefer", "count=exact")], None).await;
    assert_eq!(st, StatusCode::PARTIAL_CONTENT);
    assert_eq!(h["content-range"], "1-2/4");
    assert_eq!(h["content-type"], "application/json; charset=utf-8");
    assert_eq!(body, json!([{"id": 2}, {"id": 3}]));
    let (st, h, _) = r.req(Method::GET, "/todos?select=id", t, &[("prefer", "count=exact")], None).await;
    assert_eq!((st, h["content-range"].to_str().unwrap()), (StatusCode::OK, "0-3/4"));
    let (st, h, _) = r.req(Method::GET, "/todos?select=id&id=gt.100", t, &[("prefer", "count=exact")], None).await;
    assert_eq!((st, h["content-range"].to_str().unwrap()), (StatusCode::OK, "*/0"));
    let (st, _, e) = r.req(Method::GET, "/todos?offset=10", t, &[("prefer", "count=exact")], None).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::RANGE_NOT_SATISFIABLE, Some("PGRST103")));
    let (st, h, body) = r.req(Method::HEAD, "/todos", &r.anon, &[("prefer", "count=exact")], None).await;
    assert_eq!((st, h["content-range"].to_str().unwrap(), body), (StatusCode::OK, "0-1/2", Value::Null));

    let obj = [("accept", "application/vnd.pgrst.object+json")];
    let (st, _, one) = r.req(Method::GET, "/todos?select=title&id=eq.1", t, &obj, None).await;
    assert_eq!((st, one), (StatusCode::OK, json!({"title": "public one"})));
    let (st, _, e) = r.req(Method::GET, "/todos?select=title", t, &obj, None).await;
    assert_eq!((st, e["code"].as_str(), e["details"].as_str()), (StatusCode::NOT_ACCEPTABLE, Some("PGRST116"), Some("The result contains 4 rows")));
    let (st, _, e) = r.req(Method::GET, "/todos?id=eq.99", t, &obj, None).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::NOT_ACCEPTABLE, Some("PGRST116")));
}

#[tokio::test]
async fn inserts_upserts_updates_and_deletes() {
    let r = Rest::start().await;
    let a = &r.a;
    // Default: return=minimal → 201, empty body.
    let (st, h, body) = r.req(Method::POST, "/todos", a, &[], Some(json!({"title": "mine"}))).await;
    assert_eq!((st, body), (StatusCode::CREATED, Value::Null));
    assert!(h.get("content-type").is_none());
    // Objects with different keys need columns= (PGRST102 otherwise, as PostgREST;
    // supabase-js always sends it). With missing=default, keys absent from some
    // objects take the column default (owner comes from auth.uid()); without it they
    // are NULL.
    let ragged = json!([{"title": "n1", "owner": USER_A}, {"title": "n2", "done": true, "owner": USER_A}]);
    let (st, _, e) = r.req(Method::POST, "/todos", a, &[], Some(ragged.clone())).await;
    assert_eq!((st, e["code"].as_str(), e["message"].as_str()), (StatusCode::BAD_REQUEST, Some("PGRST102"), Some("All object keys must match")));
    let (st, _, e) = r.req(Method::POST, "/todos?columns=title,done,owner", a, &[], Some(ragged)).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::BAD_REQUEST, Some("23502")));
    let (st, _, rows) = r
        .req(
            Method::POST,
            "/todos?columns=title,done&select=title,done,owner",
            a,
            &[("prefer", "return=representation,missing=default")],
            Some(json!([{"title": "x1"}, {"title": "x2", "done": true}])),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{rows}");
    assert_eq!(rows, json!([{"title": "x1", "done": false, "owner": USER_A}, {"title": "x2", "done": true, "owner": USER_A}]));
    // columns= limits what is taken from the objects.
    let (st, _, rows) =
        r.req(Method::POST, "/todos?columns=title&select=title,done", a, &[("prefer", "return=representation")], Some(json!([{"title": "c1", "done": true}]))).await;
    assert_eq!((st, rows), (StatusCode::CREATED, json!([{"title": "c1", "done": false}])));

    // Conflicts and upserts on items (primary key id).
    let s = &r.service;
    let (st, _, e) = r.req(Method::POST, "/items", s, &[], Some(json!({"id": 1, "name": "dup"}))).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::CONFLICT, Some("23505")));
    assert!(e["error"].as_str().unwrap().contains("duplicate key"), "{e}");
    let (st, _, rows) = r
        .req(
            Method::POST,
            "/items?select=id,name",
            s,
            &[("prefer", "resolution=merge-duplicates, return=representation")],
            Some(json!([{"id": 1, "name": "Laptop Pro"}, {"id": 9, "name": "New"}])),
        )
        .await;
    assert_eq!((st, rows), (StatusCode::CREATED, json!([{"id": 1, "name": "Laptop Pro"}, {"id": 9, "name": "New"}])));
    let (st, _, rows) = r
        .req(
            Method::POST,
            "/items?select=id,name",
            s,
            &[("prefer", "resolution=ignore-duplicates,return=representation")],
            Some(json!([{"id": 2, "name": "ignored"}, {"id": 10, "name": "Ten"}])),
        )
        .await;
    assert_eq!((st, rows), (StatusCode::CREATED, json!([{"id": 10, "name": "Ten"}])));
    let (st, _, rows) = r
        .req(Method::POST, "/items?on_conflict=id&select=name", s, &[("prefer", "resolution=merge-duplicates,return=representation")], Some(json!({"id": 10, "name": "Ten!"})))
        .await;
    assert_eq!((st, rows), (StatusCode::OK, json!([{"name": "Ten!"}])), "an upsert that only updated answers 200 (PostgREST)");
    let (st, _, rows) = r.req(Method::POST, "/items", s, &[("prefer", "resolution=merge-duplicates,return=representation")], Some(json!([]))).await;
    assert_eq!((st, rows), (StatusCode::OK, json!([])), "an upsert of nothing");

    // PUT: create or replace the one row its primary-key filter names.
    let rep = [("prefer", "return=representation")];
    let (st, _, rows) = r.req(Method::PUT, "/items?id=eq.20&select=id,name", s, &rep, Some(json!({"id": 20, "name": "Lamp"}))).await;
    assert_eq!((st, rows), (StatusCode::CREATED, json!([{"id": 20, "name": "Lamp"}])));
    let (st, _, rows) = r.req(Method::PUT, "/items?id=eq.20&select=id,name", s, &rep, Some(json!([{"id": 20, "name": "Lamp 2"}]))).await;
    assert_eq!((st, rows), (StatusCode::OK, json!([{"id": 20, "name": "Lamp 2"}])));
    let (st, _, body) = r.req(Method::PUT, "/items?id=eq.20", s, &[], Some(json!({"id": 20, "name": "Lamp 3"}))).await;
    assert_eq!((st, body), (StatusCode::NO_CONTENT, Value::Null));
    for (path, payload, code) in [
        ("/items?name=eq.Lamp", json!({"id": 20, "name": "Lamp"}), "PGRST105"),
        ("/items?id=gt.20", json!({"id": 21, "name": "x"}), "PGRST105"),
        ("/items?id=eq.20", json!({"id": 21, "name": "x"}), "PGRST115"),
        ("/items?id=eq.20&limit=1", json!({"id": 20, "name": "x"}), "PGRST114"),
        ("/items?id=eq.20", json!([{"name": "no key"}]), "PGRST115"),
        ("/items?id=eq.20", json!([{"id": 21, "name": "a"}, {"id": 22, "name": "b"}]), "PGRST115"),
        // Two rows with the URL's key: Postgres refuses to upsert a row twice (a
        // client error here; PostgREST answers 500).
        ("/items?id=eq.20", json!([{"id": 20, "name": "a"}, {"id": 20, "name": "b"}]), "21000"),
    ] {
        let (st, _, e) = r.req(Method::PUT, path, s, &[], Some(payload)).await;
        assert!(st.is_client_error(), "{path}: {st}");
        assert_eq!(e["code"], code, "{path}: {e}");
    }
    // Under a singular Accept too, a key mismatch is PostgREST's PGRST115 (its PUT
    // check comes before the singular one).
    let (st, _, e) = r
        .req(Method::PUT, "/items?id=eq.20", s, &[("prefer", "return=representation"), ("accept", "application/vnd.pgrst.object+json")], Some(json!({"id": 21, "name": "x"})))
        .await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::BAD_REQUEST, Some("PGRST115")), "{e}");
    assert_eq!(r.get("/items?id=eq.20&select=name", s).await, json!([{"name": "Lamp 3"}]), "a refused PUT wrote nothing");
    // PostgREST's PUT writes the body's rows whose keys equal the URL's (compared as
    // the column's type: 020 is 20), the others are left out.
    let (st, _, rows) = r.req(Method::PUT, "/items?id=eq.020&select=id,name", s, &rep, Some(json!([{"id": 21, "name": "skipped"}, {"id": 20, "name": "Lamp 4"}]))).await;
    assert_eq!((st, rows), (StatusCode::OK, json!([{"id": 20, "name": "Lamp 4"}])));
    assert_eq!(r.get("/items?id=eq.21", s).await, json!([]));
    assert_eq!(r.req(Method::DELETE, "/items?id=eq.20", s, &[], None).await.0, StatusCode::NO_CONTENT);

    // PATCH / DELETE need a filter.
    let (st, _, e) = r.req(Method::PATCH, "/items", s, &[], Some(json!({"name": "all"}))).await;
    assert_eq!((st, e["code"].as_str(), e["error"].as_str()), (StatusCode::BAD_REQUEST, Some("21000"), Some("UPDATE requires a WHERE clause")));
    assert_eq!(r.req(Method::DELETE, "/items", s, &[], None).await.0, StatusCode::BAD_REQUEST);
    let (st, _, body) = r.req(Method::PATCH, "/items?id=eq.2", s, &[], Some(json!({"price": 21.5}))).await;
    assert_eq!((st, body), (StatusCode::NO_CONTENT, Value::Null));
    let (st, _, rows) = r.req(Method::PATCH, "/items?id=eq.2&select=id,price", s, &[("prefer", "return=representation")], Some(json!({"name": "Mouse 2"}))).await;
    assert_eq!((st, rows), (StatusCode::OK, json!([{"id": 2, "price": 21.50}])));
    let (st, _, rows) = r.req(Method::DELETE, "/items?id=in.(9,10)&select=id&order=id", s, &[("prefer", "return=representation")], None).await;
    assert_eq!((st, rows), (StatusCode::OK, json!([{"id": 9}, {"id": 10}])));
    let (st, h, _) = r.req(Method::DELETE, "/items?id=eq.3", s, &[("prefer", "count=exact")], None).await;
    assert_eq!((st, h["content-range"].to_str().unwrap()), (StatusCode::NO_CONTENT, "*/1"));
    assert_eq!(r.get("/items?select=id&order=id", s).await, json!([{"id": 1}, {"id": 2}]));

    // Bad payloads are 400s, never 500s.
    let many = vec!["id"; 1700].join(",");
    let (st, _, e) = r.req(Method::GET, &format!("/items?select={many}"), s, &[], None).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::BAD_REQUEST, Some("54011")), "a select list past Postgres's 1664 entries: {e}");
    let (st, _, e) = r.req(Method::POST, "/items", s, &[], Some(json!({"nope": 1}))).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::BAD_REQUEST, Some("PGRST204")));
    let (st, _, e) = r.req(Method::POST, "/items", s, &[], Some(json!({"id": "not a number", "name": "x"}))).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::BAD_REQUEST, Some("22P02")));
    let (st, _, e) = r.req(Method::POST, "/items", s, &[], Some(json!({"id": 50}))).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::BAD_REQUEST, Some("23502")));
    let raw = r.http.post(r.gw.url("/rest/v1/items")).header("apikey", &r.service).bearer_auth(s).body("{oops").send().await.unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    let (st, _, e) = r.req(Method::POST, "/items", s, &[], Some(json!(42))).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::BAD_REQUEST, Some("PGRST102")));
}

#[tokio::test]
async fn rpc_calls_functions() {
    let r = Rest::start().await;
    let t = &r.anon;
    let (st, _, v) = r.req(Method::POST, "/rpc/add", t, &[], Some(json!({"a": 1, "b": 2}))).await;
    assert_eq!((st, v), (StatusCode::OK, json!(3)));
    assert_eq!(r.get("/rpc/add?a=20&b=22", t).await, json!(42));
    let v = r.get("/rpc/search_items?term=laptop", t).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["name"], "Laptop");
    let v = r.get("/rpc/search_items?term=a&select=name&order=name.desc&limit=2", t).await;
    assert_eq!(v, json!([{"name": "Mouse"}, {"name": "Laptop"}]));
    let v = r.get("/rpc/search_items?term=a&id=gt.1&select=id&order=id", t).await;
    assert_eq!(v, json!([{"id": 2}, {"id": 3}]));
    assert_eq!(r.get("/rpc/item_names", t).await, json!(["Laptop", "Mouse", "Desk"]));
    let (st, _, v) = r.req(Method::POST, "/rpc/bump", t, &[], None).await;
    assert_eq!((st, v), (StatusCode::OK, json!(2)));

    // GET runs functions in a READ ONLY transaction: one that writes is refused (and
    // wrote nothing); other methods than GET / HEAD / POST are refused up front.
    assert_eq!(r.get("/rpc/bump?n=5", t).await, json!(6), "a volatile function that only reads works on GET");
    let (st, _, e) = r.req(Method::GET, "/rpc/rename_item?i=1&n=Hacked", t, &[], None).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("25006")), "{e}");
    assert_eq!(r.get("/items?id=eq.1&select=name", t).await, json!([{"name": "Laptop"}]), "the refused GET changed nothing");
    let (st, _, v) = r.req(Method::POST, "/rpc/rename_item", t, &[], Some(json!({"i": 1, "n": "Notebook"}))).await;
    assert_eq!((st, v), (StatusCode::OK, json!("Notebook")));
    // void → 204; a single OUT parameter → an object; an array body binds its first object.
    let (st, _, v) = r.req(Method::POST, "/rpc/ping", t, &[], Some(json!({}))).await;
    assert_eq!((st, v), (StatusCode::NO_CONTENT, Value::Null));
    assert_eq!(r.get("/rpc/plus_one?n=5", t).await, json!({"plus": 6}));
    // Computed columns: a function of the row type reads like a column.
    assert_eq!(
        r.get("/items?select=id,price_band&order=price_band,id", t).await,
        json!([{"id": 1, "price_band": "high"}, {"id": 3, "price_band": "high"}, {"id": 2, "price_band": "low"}])
    );
    let (st, _, e) = r.req(Method::GET, "/items?order=id.asc.nullslasttt", t, &[], None).await;
    assert_eq!(
        (st, e["code"].as_str(), e["message"].as_str()),
        (StatusCode::BAD_REQUEST, Some("PGRST100"), Some("\"failed to parse order (id.asc.nullslasttt)\" (line 1, column 17)"))
    );
    let (st, _, e) = r.req(Method::GET, "/rpc/add?a=1&z=2", t, &[], None).await;
    assert_eq!((st, e["hint"].as_str()), (StatusCode::NOT_FOUND, Some("Perhaps you meant to call the function public.add(a, b)")));
    let (st, _, v) = r.req(Method::POST, "/rpc/add", t, &[], Some(json!([{"a": 1, "b": 2}, {"a": 5, "b": 5}]))).await;
    assert_eq!((st, v), (StatusCode::OK, json!(3)));
    // RAISE SQLSTATE 'PTnnn' picks the status; response.headers / response.status GUCs apply.
    let (st, _, e) = r.req(Method::POST, "/rpc/pt402", t, &[], Some(json!({}))).await;
    assert_eq!((st, e["code"].as_str(), e["details"].as_str()), (StatusCode::PAYMENT_REQUIRED, Some("PT402"), Some("Quota exceeded")));
    let (st, h, v) = r.req(Method::POST, "/rpc/with_headers", t, &[], Some(json!({}))).await;
    assert_eq!((st, v), (StatusCode::ACCEPTED, json!(1)));
    assert_eq!(h["x-ratelimit"], "5");
    assert_eq!(h.get_all("set-cookie").iter().count(), 2);
    let (st, _, e) = r.req(Method::DELETE, "/rpc/bump", t, &[], None).await;
    assert_eq!((st, e["code"].as_str(), e["message"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("PGRST101"), Some("Cannot use the DELETE method on RPC")));
    let (st, _, e) = r.req(Method::POST, "/rpc/nope", t, &[], Some(json!({}))).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::NOT_FOUND, Some("PGRST202")));
    let (st, _, e) = r.req(Method::POST, "/rpc/add", t, &[], Some(json!({"a": 1}))).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::NOT_FOUND, Some("PGRST202")));
    let (st, _, e) = r.req(Method::POST, "/rpc/add", t, &[], Some(json!({"a": 1, "b": 2, "c": 3}))).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::NOT_FOUND, Some("PGRST202")));
    let (st, _, e) = r.req(Method::POST, "/rpc/fail", t, &[], Some(json!({}))).await;
    assert_eq!((st, e["code"].as_str(), e["message"].as_str()), (StatusCode::BAD_REQUEST, Some("P0001"), Some("nope: 42")));
}

#[tokio::test]
async fn bad_requests_get_clear_4xx_errors() {
    let r = Rest::start().await;
    let t = &r.anon;
    let (st, _, e) = r.req(Method::GET, "/nope", t, &[], None).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::NOT_FOUND, Some("PGRST205")));
    assert!(e["error"].is_string() && e["message"] == e["error"]);
    let (st, _, e) = r.req(Method::GET, "/todos?select=nope", t, &[], None).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::BAD_REQUEST, Some("42703")));
    let (st, _, e) = r.req(Method::GET, "/todos?nope=eq.1", t, &[], None).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::BAD_REQUEST, Some("42703")));
    // Plans are off by default (DB_PLAN_ENABLED): the plan media type is not offered.
    let (st, _, e) = r.req(Method::GET, "/todos", t, &[("accept", "application/vnd.pgrst.plan+json")], None).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::NOT_ACCEPTABLE, Some("PGRST107")));
    let (st, _, e) = r.req(Method::GET, "/todos?id=zz.1", t, &[], None).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::BAD_REQUEST, Some("PGRST100")));
    let (st, _, e) = r.req(Method::GET, "/todos?id=eq.abc", t, &[], None).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::BAD_REQUEST, Some("22P02")));
    let (st, _, e) = r.req(Method::GET, "/todos?select=id::text;drop", t, &[], None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
    // Aggregates are off, as PostgREST's default; an fts language must be a name.
    let (st, _, e) = r.req(Method::GET, "/todos?select=id.count()", t, &[], None).await;
    assert_eq!((st, e["code"].as_str(), e["message"].as_str()), (StatusCode::BAD_REQUEST, Some("PGRST123"), Some("Use of aggregate functions is not allowed")));
    let (st, _, e) = r.req(Method::GET, "/todos?id=fts(english);drop.x", t, &[], None).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::BAD_REQUEST, Some("PGRST100")));
    let (st, _, e) = r.req(Method::GET, "/todos?or=(id.eq.1", t, &[], None).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::BAD_REQUEST, Some("PGRST100")));
    let (st, _, e) = r.req(Method::GET, "/todos", t, &[("accept-profile", "secret")], None).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::NOT_ACCEPTABLE, Some("PGRST106")));
    let (st, _, e) = r.req(Method::GET, "/todos", t, &[("accept", "text/html")], None).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::NOT_ACCEPTABLE, Some("PGRST107")));
    // Quotes and injection attempts stay values.
    let v = r.get("/todos?title=eq.x%27%3B%20drop%20table%20todos%3B--", &r.service).await;
    assert_eq!(v, json!([]));
    assert_eq!(r.get("/todos?select=id", &r.service).await.as_array().unwrap().len(), 4);

    // No key → 401; a bad or expired JWT → 401 with PostgREST's codes.
    let res = r.http.get(r.gw.url("/rest/v1/todos")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let (st, _, e) = r.req(Method::GET, "/todos", "bad.token.here", &[], None).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("PGRST301")));
    let old = keys::sign(&JwtClaims::api_key(Role::Anon, keys::now() - 7200, 60), &Secret::new(JWT_SECRET)).unwrap();
    let (st, _, e) = r.req(Method::GET, "/todos", &old, &[], None).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("PGRST303")));
}

#[tokio::test]
async fn schema_cache_follows_ddl_without_a_restart() {
    let r = Rest::start().await;
    let (st, _, _) = r.req(Method::GET, "/later", &r.service, &[], None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    r._tc
        .superuser()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE public.later (id int PRIMARY KEY, v text); GRANT ALL ON public.later TO service_role;
         INSERT INTO public.later VALUES (1, 'appeared');",
        )
        .await
        .unwrap();
    let appeared =
        pgstack_tests::eventually(std::time::Duration::from_secs(10), || async { r.req(Method::GET, "/later?select=v", &r.service, &[], None).await.0 == StatusCode::OK }).await;
    assert!(appeared, "the new table never became visible");
    assert_eq!(r.get("/later?select=v", &r.service).await, json!([{"v": "appeared"}]));
    r._tc.superuser().await.unwrap().batch_execute("ALTER TABLE public.later ADD COLUMN w int DEFAULT 7").await.unwrap();
    let added =
        pgstack_tests::eventually(std::time::Duration::from_secs(10), || async { r.req(Method::GET, "/later?select=w", &r.service, &[], None).await.0 == StatusCode::OK }).await;
    assert!(added, "the new column never became visible");
}

#[tokio::test]
async fn openapi_describes_what_the_role_can_see() {
    let r = Rest::start().await;
    r._tc
        .superuser()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE public.hidden (id int PRIMARY KEY); GRANT SELECT ON public.hidden TO service_role;
         CREATE FUNCTION public.internal() RETURNS int LANGUAGE sql AS 'SELECT 1';
         REVOKE EXECUTE ON FUNCTION public.internal() FROM PUBLIC;",
        )
        .await
        .unwrap();
    let res = r.http.post(r.gw.url("/api/catalog/refresh")).bearer_auth(&r.service).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let anon = r.get("/", &r.anon).await;
    assert_eq!(anon["swagger"], "2.0");
    let paths = anon["paths"].as_object().unwrap();
    assert!(paths.contains_key("/todos") && paths.contains_key("/items"), "{:?}", paths.keys());
    assert!(!paths.contains_key("/hidden"), "anon must not see tables it cannot select");
    assert!(paths.contains_key("/rpc/add") && !paths.contains_key("/rpc/internal"));
    assert!(paths["/rpc/bump"].get("get").is_none(), "volatile functions are POST only");
    let todo = &anon["definitions"]["todos"];
    assert_eq!(todo["properties"]["id"]["format"], "int64");
    assert_eq!(todo["required"], json!(["title"]));
    let service = r.get("/", &r.service).await;
    assert!(service["paths"].as_object().unwrap().contains_key("/hidden"));
    assert!(!service["paths"].as_object().unwrap().contains_key("/rpc/internal"), "EXECUTE was revoked from everyone");
}
