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
