//! Issue 15: multi-statement auth flows are one statement each (one round trip, one
//! transaction) — counted by pg_stat_statements on a real cluster, through the real
//! gateway. Their behaviour is covered in auth_accounts.rs and auth_email.rs.

use pgstack_gateway::config::Secret;
use pgstack_tests::{Gateway, TestCluster, JWT_SECRET};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

struct T {
    http: Client,
    gw: Gateway,
    anon: String,
    tc: TestCluster,
}

impl T {
    async fn start() -> T {
        let tc = TestCluster::start_with_statement_stats().await.unwrap();
        let secret = Secret::new(JWT_SECRET);
        let anon = pgstack_gateway::keys::mint(pgstack_shared::Role::Anon, &secret).unwrap();
        let service = pgstack_gateway::keys::mint(pgstack_shared::Role::ServiceRole, &secret).unwrap();
        let gw = Gateway::serve(&tc, &[("ANON_KEY", &anon), ("SERVICE_ROLE_KEY", &service)]).await.unwrap();
        T { http: Client::new(), gw, anon, tc }
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let res = self.http.post(self.gw.url(path)).header("apikey", &self.anon).json(&body).send().await.unwrap();
        let st = res.status();
        (st, res.json().await.unwrap_or(Value::Null))
    }

    /// Runs `f`'s request and returns the statements that touched the auth schema
    /// meanwhile (as the gateway's login role or the auth admin role it switches to):
    /// (calls, their texts).
    async fn auth_statements<F: std::future::Future<Output = (StatusCode, Value)>>(&self, f: F) -> ((StatusCode, Value), i64, String) {
        let su = self.tc.superuser().await.unwrap();
        su.batch_execute("SELECT pg_stat_statements_reset()").await.unwrap();
        let out = f.await;
        let row = su
            .query_one(
                "SELECT coalesce(sum(s.calls), 0)::bigint, coalesce(string_agg(s.query, ' | '), '')
                   FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
                  WHERE r.rolname IN ('authenticator', 'pgstack_auth_admin')
                    AND (s.query ILIKE '%auth%' OR s.query ~* '^\\s*(BEGIN|COMMIT|ROLLBACK|START)')",
                &[],
            )
            .await
            .unwrap();
        (out, row.get(0), row.get(1))
    }
}

#[tokio::test]
async fn a_refresh_grant_is_one_statement() {
    let t = T::start().await;
    let (st, body) = t.post("/auth/v1/signup", json!({"email": "rt@example.com", "password": "round-trip-password-1"})).await;
    assert!(st.is_success(), "{st} {body}");
    let (st, session) = t.post("/auth/v1/token?grant_type=password", json!({"email": "rt@example.com", "password": "round-trip-password-1"})).await;
    assert_eq!(st, StatusCode::OK, "{session}");
    let token = session["refresh_token"].as_str().unwrap().to_owned();
    // Warm: the gateway prepares its statement once per connection.
    let (st, next) = t.post("/auth/v1/token?grant_type=refresh_token", json!({"refresh_token": token})).await;
    assert_eq!(st, StatusCode::OK, "{next}");
    let token = next["refresh_token"].as_str().unwrap().to_owned();
    let ((st, third), calls, texts) = t.auth_statements(t.post("/auth/v1/token?grant_type=refresh_token", json!({"refresh_token": token}))).await;
    assert_eq!(st, StatusCode::OK, "{third}");
    assert_eq!(third["user"]["email"], "rt@example.com");
    assert_ne!(third["refresh_token"], next["refresh_token"]);
    assert_eq!(calls, 1, "statements: {texts}");
    // Reuse after the grace window (10 s by default: made old by hand) revokes the
    // session, in the same one statement.
    let su = t.tc.superuser().await.unwrap();
    su.batch_execute("UPDATE auth.refresh_tokens SET updated_at = now() - interval '1 hour' WHERE revoked").await.unwrap();
    let ((st, err), calls, texts) = t.auth_statements(t.post("/auth/v1/token?grant_type=refresh_token", json!({"refresh_token": token}))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{err}");
    assert_eq!(err["error_code"], "refresh_token_already_used", "{err}");
    assert_eq!(calls, 1, "statements: {texts}");
    let (st, _) = t.post("/auth/v1/token?grant_type=refresh_token", json!({"refresh_token": third["refresh_token"]})).await;
    assert!(st.is_client_error(), "the session is gone with the reused token: {st}");
}

#[tokio::test]
async fn a_pkce_redemption_is_one_statement() {
    let t = T::start().await;
    let (st, body) = t.post("/auth/v1/signup", json!({"email": "pk@example.com", "password": "round-trip-password-1"})).await;
    assert!(st.is_success(), "{st} {body}");
    let verifier = "pkce-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";
    let challenge = pgstack_gateway::auth::pkce::s256(verifier);
    let su = t.tc.superuser().await.unwrap();
    let flow = |code: &'static str| {
        let hash = hex::encode(Sha256::digest(code.as_bytes()));
        let (su, challenge) = (&su, challenge.clone());
        async move {
            su.execute(
                "INSERT INTO auth.flow_state (provider, redirect_to, code_challenge, code_challenge_method, auth_code_hash, user_id, expires_at)
                 SELECT 'email', 'http://localhost:3000', $1, 's256', $2, id, now() + interval '5 minutes' FROM auth.users WHERE email = 'pk@example.com'",
                &[&challenge, &hash],
            )
            .await
            .unwrap();
        }
    };
    flow("warm-code").await;
    let (st, s) = t.post("/auth/v1/token?grant_type=pkce", json!({"auth_code": "warm-code", "code_verifier": verifier})).await;
    assert_eq!(st, StatusCode::OK, "{s} {}", t.gw.stderr());
    flow("the-code").await;
    let ((st, session), calls, texts) = t.auth_statements(t.post("/auth/v1/token?grant_type=pkce", json!({"auth_code": "the-code", "code_verifier": verifier}))).await;
    assert_eq!(st, StatusCode::OK, "{session}");
    assert_eq!(session["user"]["email"], "pk@example.com");
    assert!(session["refresh_token"].is_string() && session["access_token"].is_string());
    assert_eq!(calls, 1, "statements: {texts}");
    // The code is spent: a second redemption finds nothing.
    let (st, err) = t.post("/auth/v1/token?grant_type=pkce", json!({"auth_code": "the-code", "code_verifier": verifier})).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{err}");
    // A wrong verifier spends the code too (403), in one statement.
    flow("third-code").await;
    let ((st, err), calls, _) = t
        .auth_statements(t.post("/auth/v1/token?grant_type=pkce", json!({"auth_code": "third-code", "code_verifier": "pkce-verifier-0123456789-abcdefghijklmnopqrstuvwxyZ"})))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{err}");
    assert_eq!(calls, 1);
    let (st, _) = t.post("/auth/v1/token?grant_type=pkce", json!({"auth_code": "third-code", "code_verifier": verifier})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // An account banned or deleted after its code was issued gets no session (a 4xx in
    // the auth shape, not a 500), and the code is spent.
    flow("banned-code").await;
    su.batch_execute("UPDATE auth.users SET banned_until = now() + interval '1 day' WHERE email = 'pk@example.com'").await.unwrap();
    let (st, err) = t.post("/auth/v1/token?grant_type=pkce", json!({"auth_code": "banned-code", "code_verifier": verifier})).await;
    assert_eq!((st, err["error_code"].as_str()), (StatusCode::FORBIDDEN, Some("user_banned")), "{err}");
    flow("deleted-code").await;
    su.batch_execute("UPDATE auth.users SET banned_until = NULL, deleted_at = now() WHERE email = 'pk@example.com'").await.unwrap();
    let (st, err) = t.post("/auth/v1/token?grant_type=pkce", json!({"auth_code": "deleted-code", "code_verifier": verifier})).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{err}");
    assert!(err["error_code"].is_string() && err["msg"].is_string(), "{err}");
    let sessions: i64 = su.query_one("SELECT count(*) FROM auth.sessions s JOIN auth.users u ON u.id = s.user_id WHERE u.email = 'pk@example.com'", &[]).await.unwrap().get(0);
    assert_eq!(sessions, 3, "the sign-up's session and the two successful redemptions, no more");
    let (st, _) = t.post("/auth/v1/token?grant_type=pkce", json!({"auth_code": "deleted-code", "code_verifier": verifier})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn one_refresh_token_yields_a_bounded_number_of_siblings() {
    // The grace window lets a few tabs refresh one token at once; 40 callers at once
    // get at most 10 tokens between them, the rest a 401 in the auth shape (the
    // session itself stays valid).
    let t = T::start().await;
    let (st, body) = t.post("/auth/v1/signup", json!({"email": "sib@example.com", "password": "round-trip-password-1"})).await;
    assert!(st.is_success(), "{st} {body}");
    let (st, session) = t.post("/auth/v1/token?grant_type=password", json!({"email": "sib@example.com", "password": "round-trip-password-1"})).await;
    assert_eq!(st, StatusCode::OK, "{session}");
    let token = session["refresh_token"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (http, url, anon, token) = (t.http.clone(), t.gw.url("/auth/v1/token?grant_type=refresh_token"), t.anon.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let res = http.post(url).header("apikey", anon).json(&json!({"refresh_token": token})).send().await.unwrap();
            let st = res.status();
            (st, res.json::<Value>().await.unwrap_or(Value::Null))
        }));
    }
    let mut fresh = Vec::new();
    for task in tasks {
        let (st, v) = task.await.unwrap();
        if st == StatusCode::OK {
            fresh.push(v["refresh_token"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
            assert_eq!(v["error_code"], "refresh_token_already_used", "{v}");
        }
    }
    assert!(!fresh.is_empty() && fresh.len() <= 10, "{} tokens from one", fresh.len());
    // Any of them still works: the session was not revoked.
    let (st, v) = t.post("/auth/v1/token?grant_type=refresh_token", json!({"refresh_token": fresh[0]})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
}
