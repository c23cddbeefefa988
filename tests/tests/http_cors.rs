//! CORS: ALLOWED_ORIGINS decides which browser origins may call; the strict default
//! (empty list) allows none, ALLOW_PERMISSIVE_CORS allows any.

use pgstack_tests::{Gateway, TestCluster};

async fn preflight(gw: &Gateway, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, gw.url("/rest/v1/items"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "apikey,authorization,content-type,prefer,x-client-info")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn allowed_origins_get_cors_headers_and_others_do_not() {
    let tc = TestCluster::start().await.unwrap();
    let gw = Gateway::serve(&tc, &[("ALLOWED_ORIGINS", "https://app.example.com, https://admin.example.com")]).await.unwrap();
    let ok = preflight(&gw, "https://app.example.com").await;
    assert_eq!(ok.headers()["access-control-allow-origin"], "https://app.example.com");
    let allowed = ok.headers()["access-control-allow-headers"].to_str().unwrap().to_owned();
    for h in ["apikey", "authorization", "prefer", "x-client-info", "accept-profile", "x-upsert"] {
        assert!(allowed.contains(h), "{h} missing from {allowed}");
    }
    let get = reqwest::Client::new().get(gw.url("/health")).header("origin", "https://app.example.com").send().await.unwrap();
    assert!(get.headers()["access-control-expose-headers"].to_str().unwrap().contains("content-range"));
    let no = preflight(&gw, "https://evil.example.com").await;
    assert!(no.headers().get("access-control-allow-origin").is_none());

    let strict = Gateway::serve(&tc, &[]).await.unwrap();
    assert!(preflight(&strict, "https://app.example.com").await.headers().get("access-control-allow-origin").is_none());
    let open = Gateway::serve(&tc, &[("ALLOW_PERMISSIVE_CORS", "true")]).await.unwrap();
    assert_eq!(preflight(&open, "https://anything.example").await.headers()["access-control-allow-origin"], "*");
}

/// With CORS on, only real preflights (Access-Control-Request-Method) are the CORS
/// layer's; a plain OPTIONS reaches REST, which answers PostgREST's way: 200, no
/// body, `Allow` from what the relation or function takes; 404 for unknown ones.
#[tokio::test]
async fn plain_options_lists_the_allowed_methods() {
    let tc = TestCluster::start().await.unwrap();
    tc.superuser()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE public.items (id int PRIMARY KEY, name text);
             CREATE TABLE public.log (msg text);
             CREATE VIEW public.item_count AS SELECT count(*) AS n FROM public.items;
             CREATE VIEW public.item_names AS SELECT id, name FROM public.items;
             CREATE FUNCTION public.bump() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 1';
             CREATE FUNCTION public.peek() RETURNS int LANGUAGE sql STABLE AS 'SELECT 1';
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO anon;",
        )
        .await
        .unwrap();
    let secret = pgstack_gateway::config::Secret::new(pgstack_tests::JWT_SECRET);
    let anon = pgstack_gateway::keys::mint(pgstack_shared::Role::Anon, &secret).unwrap();
    let gw = Gateway::serve(&tc, &[("ANON_KEY", &anon), ("ALLOWED_ORIGINS", "https://app.example.com")]).await.unwrap();
    let options = |path: &str| reqwest::Client::new().request(reqwest::Method::OPTIONS, gw.url(&format!("/rest/v1{path}"))).header("apikey", &anon).send();
    for (path, allow) in [
        ("/items", "OPTIONS,GET,HEAD,POST,PUT,PATCH,DELETE"),
        ("/log", "OPTIONS,GET,HEAD,POST,PATCH,DELETE"),
        // The view shows the table's primary key, so it has one (PostgREST's view
        // key inference) and takes PUT.
        ("/item_names", "OPTIONS,GET,HEAD,POST,PUT,PATCH,DELETE"),
        ("/item_count", "OPTIONS,GET,HEAD"),
        ("/rpc/bump", "OPTIONS,POST"),
        ("/rpc/peek", "OPTIONS,GET,HEAD,POST"),
    ] {
        let res = options(path).await.unwrap();
        let (status, headers) = (res.status(), res.headers().clone());
        assert_eq!(status, 200, "{path}: {:?}", res.text().await);
        assert_eq!(headers["allow"], allow, "{path}");
        assert_eq!(headers["content-length"], "0", "{path}");
    }
    assert_eq!(options("/nope").await.unwrap().status(), 404);
    assert_eq!(options("/rpc/nope").await.unwrap().status(), 404);
    // A preflight is still the CORS layer's.
    let pre = preflight(&gw, "https://app.example.com").await;
    assert_eq!(pre.headers()["access-control-allow-origin"], "https://app.example.com");
    assert!(pre.headers().get("allow").is_none());
}
