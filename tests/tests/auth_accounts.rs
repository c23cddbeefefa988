//! Issue 3: /auth/v1 accounts and sessions against a real cluster and the real binary:
//! signup, password sign-in, user, refresh rotation and reuse detection, logout
//! scopes, anonymous sign-in, admin users. Statuses and messages from the contract.

use std::time::Duration;

use pgstack_gateway::config::Secret;
use pgstack_tests::{Gateway, TestCluster, JWT_SECRET};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

struct Api {
    http: Client,
    gw: Gateway,
    service_key: String,
    anon_key: String,
    _tc: TestCluster,
}

impl Api {
    async fn start(extra: &[(&str, &str)]) -> Api {
        let tc = TestCluster::start().await.unwrap();
        let secret = Secret::new(JWT_SECRET);
        let anon_key = pgstack_gateway::keys::mint(pgstack_shared::Role::Anon, &secret).unwrap();
        let service_key = pgstack_gateway::keys::mint(pgstack_shared::Role::ServiceRole, &secret).unwrap();
        let mut env: Vec<(&str, &str)> = vec![("ANON_KEY", &anon_key), ("SERVICE_ROLE_KEY", &service_key)];
        env.extend_from_slice(extra);
        let gw = Gateway::serve(&tc, &env).await.unwrap();
        Api { http: Client::new(), gw, service_key, anon_key, _tc: tc }
    }

    async fn call(&self, method: &str, path: &str, bearer: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method.parse().unwrap(), self.gw.url(path)).header("apikey", &self.anon_key);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) })
    }

    async fn signup(&self, email: &str, password: &str) -> Value {
        let (st, body) = self.call("POST", "/auth/v1/signup", None, Some(json!({"email": email, "password": password}))).await;
        assert_eq!(st, StatusCode::CREATED, "{body}");
        body
    }

    async fn sign_in(&self, email: &str, password: &str) -> (StatusCode, Value) {
        self.call("POST", "/auth/v1/token?grant_type=password", None, Some(json!({"email": email, "password": password}))).await
    }

    async fn refresh(&self, token: &str) -> (StatusCode, Value) {
        self.call("POST", "/auth/v1/token?grant_type=refresh_token", None, Some(json!({"refresh_token": token}))).await
    }
}

fn assert_error(got: &(StatusCode, Value), status: u16, message: &str) {
    assert_eq!(got.0.as_u16(), status, "{}", got.1);
    assert_eq!(got.1["error"], message, "{}", got.1);
    assert_eq!(got.1["message"], message);
    assert!(got.1["code"].is_string() && got.1["error_code"] == got.1["code"], "{}", got.1);
}

#[tokio::test]
async fn signup_sign_in_and_user_follow_the_contract() {
    let api = Api::start(&[]).await;
    let s = api.signup("Jane@Example.com", "strongpassword123").await;
    assert_eq!(s["token_type"], "bearer");
    assert_eq!(s["expires_in"], 3600);
    assert!(s["refresh_token"].as_str().unwrap().len() >= 32);
    assert_eq!(s["user"]["email"], "jane@example.com");
    assert_eq!(s["user"]["role"], "authenticated");
    assert_eq!(s["user"]["aud"], "authenticated");
    assert_eq!(s["user"]["app_metadata"]["provider"], "email");
    assert_eq!(s["user"]["identities"][0]["provider"], "email");
    assert!(s["user"]["created_at"].is_string() && s["user"]["updated_at"].is_string());

    // The access token carries Supabase's claims, signed with JWT_SECRET.
    let claims = pgstack_gateway::keys::verify(s["access_token"].as_str().unwrap(), &Secret::new(JWT_SECRET)).unwrap();
    assert_eq!(claims.sub.as_deref(), s["user"]["id"].as_str());
    assert_eq!(claims.exp - claims.iat, 3600);
    assert_eq!(claims.extra["email"], "jane@example.com");
    assert!(claims.extra["session_id"].is_string());
    assert_eq!(claims.extra["is_anonymous"], false);

    // Data and validation errors, in the contract's words.
    let (st, b) = api.call("POST", "/auth/v1/signup", None, Some(json!({"email": "meta@example.com", "password": "strongpassword123", "data": {"full_name": "Jane Doe"}}))).await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(b["user"]["user_metadata"]["full_name"], "Jane Doe");
    assert_error(&api.call("POST", "/auth/v1/signup", None, Some(json!({"email": "JANE@example.com", "password": "strongpassword123"}))).await, 409, "email already registered");
    assert_error(&api.call("POST", "/auth/v1/signup", None, Some(json!({"email": "not-an-email", "password": "strongpassword123"}))).await, 400, "invalid email address");
    assert_error(&api.call("POST", "/auth/v1/signup", None, Some(json!({"email": "x@example.com", "password": "short"}))).await, 400, "password must be at least 8 characters");
    assert_error(
        &api.call("POST", "/auth/v1/signup", None, Some(json!({"email": "x@example.com", "password": "a".repeat(257)}))).await,
        400,
        "password must be at most 256 characters",
    );
    let raw = api.http.post(api.gw.url("/auth/v1/signup")).header("content-type", "application/json").body("{not json").send().await.unwrap();
    assert_eq!(raw.status(), 400);
    assert_eq!(raw.headers()["x-supabase-api-version"], "2024-01-01");
    assert_eq!(raw.json::<Value>().await.unwrap()["error"], "invalid request body");

    // Password sign-in.
    let (st, signed) = api.sign_in("JANE@example.com", "strongpassword123").await;
    assert_eq!(st, StatusCode::OK, "{signed}");
    assert_eq!(signed["user"]["id"], s["user"]["id"]);
    assert!(signed["user"]["last_sign_in_at"].is_string());
    assert_error(&api.sign_in("jane@example.com", "wrongpassword").await, 401, "invalid email or password");
    assert_error(&api.sign_in("nobody@example.com", "strongpassword123").await, 401, "invalid email or password");

    // GET /user with the user's token; API keys and no token are refused.
    let token = signed["access_token"].as_str().unwrap();
    let (st, me) = api.call("GET", "/auth/v1/user", Some(token), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(me["email"], "jane@example.com");
    assert_eq!(api.call("GET", "/auth/v1/user", Some(&api.anon_key), None).await.0, StatusCode::UNAUTHORIZED);
    let bare = api.http.get(api.gw.url("/auth/v1/user")).send().await.unwrap();
    assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(api.call("GET", "/auth/v1/user", Some("not.a.jwt"), None).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn update_user_changes_password_metadata_and_email() {
    let api = Api::start(&[]).await;
    let s = api.signup("upd@example.com", "firstpassword1").await;
    let token = s["access_token"].as_str().unwrap().to_owned();
    let (st, u) = api.call("PUT", "/auth/v1/user", Some(&token), Some(json!({"password": "secondpassword2", "data": {"a": 1}}))).await;
    assert_eq!(st, StatusCode::OK, "{u}");
    assert_eq!(u["user_metadata"]["a"], 1);
    let (st, u) = api.call("PATCH", "/auth/v1/user", Some(&token), Some(json!({"data": {"b": 2}}))).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(u["user_metadata"], json!({"a": 1, "b": 2}));
    assert_eq!(api.sign_in("upd@example.com", "firstpassword1").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(api.sign_in("upd@example.com", "secondpassword2").await.0, StatusCode::OK);
    assert_error(&api.call("PUT", "/auth/v1/user", Some(&token), Some(json!({"password": "short"}))).await, 400, "password must be at least 8 characters");

    api.signup("taken@example.com", "somepassword1").await;
    assert_eq!(api.call("PUT", "/auth/v1/user", Some(&token), Some(json!({"email": "taken@example.com"}))).await.0, StatusCode::CONFLICT);
    // A new address applies only once confirmed from both addresses (tests/security_auth.rs);
    // without SMTP no confirmation can be sent, so the change does not start.
    let (st, u) = api.call("PUT", "/auth/v1/user", Some(&token), Some(json!({"email": "New@Example.com"}))).await;
    assert_eq!((st, u["error_code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("email_send_failed")), "{u}");
    assert_eq!(api.sign_in("new@example.com", "secondpassword2").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(api.sign_in("upd@example.com", "secondpassword2").await.0, StatusCode::OK);
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_session() {
    let api = Api::start(&[("REFRESH_TOKEN_REUSE_INTERVAL", "1")]).await;
    let s = api.signup("rot@example.com", "strongpassword123").await;
    let t1 = s["refresh_token"].as_str().unwrap().to_owned();

    let (st, r2) = api.refresh(&t1).await;
    assert_eq!(st, StatusCode::OK, "{r2}");
    let t2 = r2["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(t1, t2);
    assert_eq!(r2["user"]["email"], "rot@example.com");
    let c1 = pgstack_gateway::keys::verify(s["access_token"].as_str().unwrap(), &Secret::new(JWT_SECRET)).unwrap();
    let c2 = pgstack_gateway::keys::verify(r2["access_token"].as_str().unwrap(), &Secret::new(JWT_SECRET)).unwrap();
    assert_eq!(c1.extra["session_id"], c2.extra["session_id"], "refresh keeps the session");

    // Inside the grace window the old token still works (concurrent tabs) ...
    let (st, sibling) = api.refresh(&t1).await;
    assert_eq!(st, StatusCode::OK, "{sibling}");
    // ... and two concurrent refreshes of one token both succeed.
    let t2b = sibling["refresh_token"].as_str().unwrap().to_owned();
    let (a, b) = tokio::join!(api.refresh(&t2b), api.refresh(&t2b));
    assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK), "{} {}", a.1, b.1);

    // After the window, reuse revokes the whole session: even the newest token dies.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reuse = api.refresh(&t1).await;
    assert_eq!(reuse.0, StatusCode::UNAUTHORIZED);
    assert_eq!(reuse.1["code"], "refresh_token_already_used");
    let newest = a.1["refresh_token"].as_str().unwrap();
    assert_error(&api.refresh(newest).await, 401, "invalid refresh token");
    assert_eq!(api.refresh(&t2).await.0, StatusCode::UNAUTHORIZED);

    assert_error(&api.refresh("no-such-token").await, 401, "invalid refresh token");
    assert_error(&api.call("POST", "/auth/v1/token?grant_type=refresh_token", None, Some(json!({}))).await, 401, "invalid refresh token");
    assert_eq!(api.call("POST", "/auth/v1/token?grant_type=magic", None, Some(json!({}))).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn logout_scopes_end_sessions() {
    let api = Api::start(&[]).await;
    api.signup("out@example.com", "strongpassword123").await;
    let (_, a) = api.sign_in("out@example.com", "strongpassword123").await;
    let (_, b) = api.sign_in("out@example.com", "strongpassword123").await;
    let (_, c) = api.sign_in("out@example.com", "strongpassword123").await;
    let tok = |v: &Value, k: &str| v[k].as_str().unwrap().to_owned();

    // supabase-js: JSON content type, empty body.
    let res = api.http.post(api.gw.url("/auth/v1/logout?scope=local")).bearer_auth(tok(&a, "access_token")).header("content-type", "application/json").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(api.refresh(&tok(&a, "refresh_token")).await.0, StatusCode::UNAUTHORIZED);
    let gone = api.call("GET", "/auth/v1/user", Some(&tok(&a, "access_token")), None).await;
    assert_eq!(gone.0, StatusCode::FORBIDDEN);
    assert_eq!(gone.1["code"], "session_not_found");
    assert_eq!(api.call("GET", "/auth/v1/user", Some(&tok(&b, "access_token")), None).await.0, StatusCode::OK);

    assert_eq!(api.call("POST", "/auth/v1/logout?scope=others", Some(&tok(&b, "access_token")), None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(api.refresh(&tok(&c, "refresh_token")).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(api.refresh(&tok(&b, "refresh_token")).await.0, StatusCode::OK);

    let (_, d) = api.sign_in("out@example.com", "strongpassword123").await;
    assert_eq!(api.call("POST", "/auth/v1/logout?scope=global", Some(&tok(&d, "access_token")), None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(api.call("GET", "/auth/v1/user", Some(&tok(&b, "access_token")), None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(api.call("POST", "/auth/v1/logout?scope=bogus", Some(&tok(&d, "access_token")), None).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(api.http.post(api.gw.url("/auth/v1/logout")).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn anonymous_sign_in_is_off_by_default() {
    let api = Api::start(&[]).await;
    assert_eq!(api.call("POST", "/auth/v1/anonymous", None, Some(json!({}))).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(api.call("POST", "/auth/v1/signup", None, Some(json!({"data": {}}))).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(api.call("GET", "/auth/v1/settings", None, None).await.1["external"]["anonymous_users"], false);
}

#[tokio::test]
async fn anonymous_sign_in_when_allowed() {
    let api = Api::start(&[("ALLOW_ANONYMOUS_SIGNIN", "true")]).await;
    let (st, s) = api.call("POST", "/auth/v1/anonymous", None, Some(json!({}))).await;
    assert_eq!(st, StatusCode::OK, "{s}");
    let claims = pgstack_gateway::keys::verify(s["access_token"].as_str().unwrap(), &Secret::new(JWT_SECRET)).unwrap();
    assert_eq!(claims.role, pgstack_shared::Role::Anon, "the contract's /anonymous mints an anon-role JWT");
    assert_eq!(claims.extra["is_anonymous"], true);

    // supabase-js signInAnonymously: POST /signup without email.
    let (st, s) = api.call("POST", "/auth/v1/signup", None, Some(json!({"data": {"nick": "x"}, "gotrue_meta_security": {}}))).await;
    assert_eq!(st, StatusCode::OK, "{s}");
    assert_eq!(s["user"]["is_anonymous"], true);
    assert_eq!(s["user"]["role"], "authenticated");
    assert_eq!(s["user"]["user_metadata"]["nick"], "x");
    assert_eq!(api.refresh(s["refresh_token"].as_str().unwrap()).await.0, StatusCode::OK);
}

#[tokio::test]
async fn admin_users_need_the_service_key() {
    let api = Api::start(&[]).await;
    let svc = api.service_key.clone();
    let user_token = api.signup("plain@example.com", "strongpassword123").await["access_token"].as_str().unwrap().to_owned();
    for bearer in [api.anon_key.as_str(), user_token.as_str()] {
        assert_eq!(api.call("GET", "/auth/v1/admin/users", Some(bearer), None).await.0, StatusCode::FORBIDDEN);
    }

    let (st, u) = api
        .call(
            "POST",
            "/auth/v1/admin/users",
            Some(&svc),
            Some(json!({"email": "made@example.com", "password": "initialpassword", "email_confirm": true, "user_metadata": {"k": "v"}, "unknown": 1})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{u}");
    assert_eq!(u["email"], "made@example.com");
    assert!(u["email_confirmed_at"].is_string());
    assert_eq!(u["user_metadata"]["k"], "v");
    assert_eq!(api.sign_in("made@example.com", "initialpassword").await.0, StatusCode::OK);
    assert_eq!(api.call("POST", "/auth/v1/admin/users", Some(&svc), Some(json!({"email": "made@example.com"}))).await.0, StatusCode::CONFLICT);
    assert_eq!(api.call("POST", "/auth/v1/admin/users", Some(&svc), Some(json!({"email": "r@example.com", "role": "postgres"}))).await.0, StatusCode::BAD_REQUEST);
    let (st, svc_user) = api.call("POST", "/auth/v1/admin/users", Some(&svc), Some(json!({"email": "svc@example.com", "role": "service_role"}))).await;
    assert_eq!((st, svc_user["role"].as_str()), (StatusCode::CREATED, Some("service_role")));

    // supabase-py sends empty page parameters.
    let res = api.http.get(api.gw.url("/auth/v1/admin/users?page=&per_page=")).bearer_auth(&svc).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-total-count"], "3");
    let list: Value = res.json().await.unwrap();
    assert_eq!(list["users"].as_array().unwrap().len(), 3);
    let (_, page2) = api.call("GET", "/auth/v1/admin/users?page=2&per_page=2", Some(&svc), None).await;
    assert_eq!(page2["users"].as_array().unwrap().len(), 1);
    assert_eq!(api.call("GET", "/auth/v1/admin/users?page=0", Some(&svc), None).await.0, StatusCode::BAD_REQUEST);

    let id = u["id"].as_str().unwrap();
    let (st, del) = api.call("DELETE", &format!("/auth/v1/admin/users/{id}"), Some(&svc), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(del["id"], id);
    assert_error(&api.call("DELETE", &format!("/auth/v1/admin/users/{id}"), Some(&svc), None).await, 404, "user not found");
    assert_eq!(api.call("DELETE", "/auth/v1/admin/users/not-a-uuid", Some(&svc), None).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(api.sign_in("made@example.com", "initialpassword").await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn secrets_are_hashed_at_rest_and_bcrypt_imports_sign_in() {
    let api = Api::start(&[]).await;
    let s = api.signup("rest@example.com", "strongpassword123").await;
    let db = api._tc.superuser().await.unwrap();
    let refresh = s["refresh_token"].as_str().unwrap();
    let clear: i64 = db.query_one("SELECT count(*) FROM auth.refresh_tokens WHERE token_hash = $1", &[&refresh]).await.unwrap().get(0);
    assert_eq!(clear, 0, "refresh token stored in clear");
    let pw: String = db.query_one("SELECT encrypted_password FROM auth.users WHERE email = 'rest@example.com'", &[]).await.unwrap().get(0);
    assert!(pw.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{pw}");

    // A user imported from Supabase with a bcrypt hash ("imported-pass-1", cost 4).
    let hash = bcrypt_hash("imported-pass-1");
    db.execute("INSERT INTO auth.users (email, encrypted_password, email_confirmed_at) VALUES ('old@example.com', $1, now())", &[&hash]).await.unwrap();
    assert_eq!(api.sign_in("old@example.com", "imported-pass-1").await.0, StatusCode::OK);
    assert_eq!(api.sign_in("old@example.com", "imported-pass-2").await.0, StatusCode::UNAUTHORIZED);

    // The request roles cannot read the auth tables.
    let err = db.batch_execute("SET ROLE authenticated; SELECT * FROM auth.users").await.unwrap_err();
    assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{err:?}");
}

fn bcrypt_hash(pw: &str) -> String {
    bcrypt::hash(pw, 4).unwrap()
}

#[tokio::test]
async fn auth_routes_are_rate_limited_per_ip() {
    let api = Api::start(&[("AUTH_RATE_LIMIT", "3/h"), ("ANONYMOUS_RATE_LIMIT", "1/h"), ("ALLOW_ANONYMOUS_SIGNIN", "true")]).await;
    for _ in 0..3 {
        assert_eq!(api.sign_in("x@example.com", "whatever-password").await.0, StatusCode::UNAUTHORIZED);
    }
    let res = api.http.post(api.gw.url("/auth/v1/token?grant_type=password")).json(&json!({"email": "x@example.com", "password": "whatever-password"})).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "over_request_rate_limit");
    // The same bucket covers signup; anonymous sign-in has its own.
    assert_eq!(api.call("POST", "/auth/v1/signup", None, Some(json!({"email": "y@example.com", "password": "strongpassword123"}))).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(api.call("POST", "/auth/v1/anonymous", None, Some(json!({}))).await.0, StatusCode::OK);
    assert_eq!(api.call("POST", "/auth/v1/anonymous", None, Some(json!({}))).await.0, StatusCode::TOO_MANY_REQUESTS);
    // Routes outside the limit keep working.
    assert_eq!(api.call("GET", "/auth/v1/settings", None, None).await.0, StatusCode::OK);
}
