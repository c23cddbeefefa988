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
        (format!("{user}x"), "PGRST301", "JWT cryptographic operation failed"),
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
