//! Issue 14 (auth): regressions for the confirmed defects, against a real cluster, the
//! real binary, a real SMTP server and a real OpenID provider on loopback.
//!
//! - password hashing cannot be flooded: bad recovery tokens hash nothing, hashing is
//!   bounded gateway-wide (429 with Retry-After past the line), every route that
//!   hashes is rate-limited;
//! - a recovery cannot be redeemed with a 6-digit code that was never sent, and wrong
//!   codes spend an account's codes after OTP_MAX_ATTEMPTS tries, counted in the
//!   database across gateways;
//! - an e-mail change applies only once both the new and the current address
//!   confirmed; OAuth links only to addresses proven by a flow;
//! - the OAuth state is bound to the browser that started the flow.

use std::collections::{HashMap, HashSet};

use futures_util::future::join_all;
use pgstack_gateway::config::Secret;
use pgstack_tests::{first_link, Gateway, OidcProvider, SmtpSink, TestCluster, JWT_SECRET};
use reqwest::{redirect::Policy, Client, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const SITE: &str = "http://app.test";

async fn post(http: &Client, gw: &Gateway, path: &str, bearer: Option<&str>, body: Value) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let mut req = http.post(gw.url(path)).json(&body);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let r = req.send().await.unwrap();
    let (st, headers) = (r.status(), r.headers().clone());
    (st, r.json().await.unwrap_or(Value::Null), headers)
}

async fn put_user(http: &Client, gw: &Gateway, bearer: &str, body: Value) -> (StatusCode, Value) {
    let r = http.put(gw.url("/auth/v1/user")).bearer_auth(bearer).json(&body).send().await.unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

async fn sign_in(http: &Client, gw: &Gateway, email: &str, password: &str) -> StatusCode {
    post(http, gw, "/auth/v1/token?grant_type=password", None, json!({"email": email, "password": password})).await.0
}

/// Peak resident memory of a process (VmHWM), bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

fn assert_auth_error_shape(body: &Value) {
    for k in ["error", "message", "msg", "code", "error_code"] {
        assert!(body.get(k).is_some_and(|v| v.is_string()), "{k} missing in {body}");
    }
}

const MIB: u64 = 1024 * 1024;

#[tokio::test]
async fn password_hashing_cannot_be_flooded() {
    let tc = TestCluster::start().await.unwrap();
    let gw = Gateway::serve(&tc, &[("PASSWORD_HASH_CONCURRENCY", "1"), ("PASSWORD_HASH_QUEUE_TIMEOUT", "1")]).await.unwrap();
    let pid = gw.pid().unwrap();
    let http = Client::new();
    let (st, _, _) = post(&http, &gw, "/auth/v1/signup", None, json!({"email": "victim@example.com", "password": "victim-password-1"})).await;
    assert_eq!(st, StatusCode::CREATED);
    let before = peak_rss(pid);

    // The flood: 150 concurrent recover/confirm with a bad token and a long
    // password. The token is checked first, so nothing is hashed and memory stays flat
    // (each argon2id run takes 19 MiB: the old code peaked at ~2.5 GiB).
    let long = "a".repeat(256);
    let answers = join_all((0..150).map(|_| post(&http, &gw, "/auth/v1/recover/confirm", None, json!({"token": "x", "password": long})))).await;
    for (st, body, _) in &answers {
        assert_eq!((*st, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid or expired token")), "{body}");
    }
    let grown = peak_rss(pid).saturating_sub(before);
    assert!(grown < 120 * MIB, "bad recovery tokens must not be hashed: peak RSS grew {} MiB", grown / MIB);

    // Hashing is bounded (here: one at a time, 1 s in line): a sign-up flood gets
    // 429 over_request_rate_limit with Retry-After past the line, memory stays flat.
    let answers = join_all((0..100).map(|i| {
        let http = &http;
        let gw = &gw;
        async move { post(http, gw, "/auth/v1/signup", None, json!({"email": format!("flood{i}@example.com"), "password": "flood-password-1"})).await }
    }))
    .await;
    let refused: Vec<_> = answers.iter().filter(|(st, _, _)| *st == StatusCode::TOO_MANY_REQUESTS).collect();
    let created = answers.iter().filter(|(st, _, _)| *st == StatusCode::CREATED).count();
    assert!(!refused.is_empty(), "a sign-up flood must be refused past the hashing line");
    assert!(created >= 1, "some sign-ups still succeed");
    assert_eq!(created + refused.len(), answers.len(), "only 201 or 429: {:?}", answers.iter().map(|a| a.0).collect::<Vec<_>>());
    let (_, body, headers) = refused[0];
    assert_auth_error_shape(body);
    assert_eq!(body["error_code"], "over_request_rate_limit");
    assert!(headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok()).is_some_and(|v| v >= 1));
    let grown = peak_rss(pid).saturating_sub(before);
    assert!(grown < 160 * MIB, "concurrent hashing must be bounded: peak RSS grew {} MiB", grown / MIB);

    // Sign-in verification waits in the same line.
    let answers = join_all((0..100).map(|_| sign_in(&http, &gw, "victim@example.com", "wrong-password-1"))).await;
    assert!(answers.contains(&StatusCode::TOO_MANY_REQUESTS), "sign-in must share the hashing line: {answers:?}");
    assert!(answers.iter().all(|st| matches!(*st, StatusCode::TOO_MANY_REQUESTS | StatusCode::UNAUTHORIZED)), "{answers:?}");

    // Once the flood is over, sign-in works; an oversized password is refused unhashed.
    assert_eq!(sign_in(&http, &gw, "victim@example.com", "victim-password-1").await, StatusCode::OK);
    assert_eq!(sign_in(&http, &gw, "victim@example.com", &"é".repeat(5000)).await, StatusCode::UNAUTHORIZED);
    let (st, body, _) = post(&http, &gw, "/auth/v1/signup", None, json!({"email": "long@example.com", "password": "a".repeat(257)})).await;
    assert_eq!((st, body["error_code"].as_str()), (StatusCode::BAD_REQUEST, Some("weak_password")));
}

#[tokio::test]
async fn every_route_that_hashes_is_rate_limited() {
    let tc = TestCluster::start().await.unwrap();
    let gw = Gateway::serve(&tc, &[("AUTH_RATE_LIMIT", "3/h")]).await.unwrap();
    let http = Client::new();
    let (st, s, _) = post(&http, &gw, "/auth/v1/signup", None, json!({"email": "rl@example.com", "password": "rl-password-1"})).await; // 1
    assert_eq!(st, StatusCode::CREATED);
    let token = s["access_token"].as_str().unwrap();
    // Metadata-only updates do not count.
    for i in 0..4 {
        assert_eq!(put_user(&http, &gw, token, json!({"data": {"n": i}})).await.0, StatusCode::OK);
    }
    assert_eq!(put_user(&http, &gw, token, json!({"password": "rl-password-2"})).await.0, StatusCode::OK); // 2
    assert_eq!(post(&http, &gw, "/auth/v1/recover/confirm", None, json!({"token": "x", "password": "rl-password-3"})).await.0, StatusCode::BAD_REQUEST); // 3
    let (st, body, headers) = post(&http, &gw, "/auth/v1/recover/confirm", None, json!({"token": "x", "password": "rl-password-3"})).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "recover/confirm is rate-limited: {body}");
    assert_eq!(body["error_code"], "over_request_rate_limit");
    assert!(headers.contains_key("retry-after"));
    let (st, body) = put_user(&http, &gw, token, json!({"password": "rl-password-4"})).await;
    assert_eq!((st, body["error_code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("over_request_rate_limit")), "PUT /user with a password is rate-limited");
    assert_eq!(put_user(&http, &gw, token, json!({"data": {"n": 9}})).await.0, StatusCode::OK);
}

struct Mail {
    smtp: SmtpSink,
    tc: TestCluster,
    gw: Gateway,
    http: Client,
}

async fn with_mail(extra: &[(&str, &str)]) -> Mail {
    let smtp = SmtpSink::start().await.unwrap();
    let tc = TestCluster::start().await.unwrap();
    let gw = Gateway::serve(&tc, &mail_env(&smtp, extra).iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>()).await.unwrap();
    Mail { smtp, tc, gw, http: Client::builder().redirect(Policy::none()).build().unwrap() }
}

fn mail_env<'a>(smtp: &SmtpSink, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, String)> {
    let mut env = smtp.env();
    env.push(("SITE_URL", SITE.into()));
    env.push(("EMAIL_MIN_INTERVAL", "0".into()));
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    env
}

fn code_of(mail: &Value) -> String {
    let text = mail["text"].as_str().unwrap().to_owned() + mail["html"].as_str().unwrap();
    text.split("code: ").nth(1).expect("a code in the e-mail").chars().take(6).collect()
}

fn fragment(r: &reqwest::Response) -> HashMap<String, String> {
    let loc = r.headers().get("location").unwrap_or_else(|| panic!("no Location on {}", r.status())).to_str().unwrap();
    let frag = loc.split_once('#').map(|(_, f)| f).unwrap_or("");
    reqwest::Url::parse(&format!("http://x/?{frag}")).unwrap().query_pairs().into_owned().collect()
}

fn query_param(link: &str, name: &str) -> String {
    reqwest::Url::parse(link).unwrap().query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned()).unwrap_or_default()
}

#[tokio::test]
async fn a_recovery_cannot_be_redeemed_with_an_unsent_code() {
    let m = with_mail(&[]).await;
    let (st, s, _) = post(&m.http, &m.gw, "/auth/v1/signup", None, json!({"email": "owner@example.com", "password": "owner-password-1"})).await;
    assert_eq!(st, StatusCode::CREATED);
    let id = s["user"]["id"].as_str().unwrap().to_owned();
    post(&m.http, &m.gw, "/auth/v1/recover", None, json!({"email": "owner@example.com"})).await;
    let mail = m.smtp.wait_for("owner@example.com", 1).await.unwrap();
    assert_eq!(mail["subject"], "Reset your password");

    // Whatever is stored for this recovery, no 6-digit code may redeem it: search
    // every code against the stored digests (as an attacker would online).
    let db = m.tc.superuser().await.unwrap();
    let rows = db.query("SELECT token_hash FROM auth.one_time_tokens WHERE user_id = $1::text::uuid AND token_type = 'recovery'", &[&id]).await.unwrap();
    assert!(!rows.is_empty(), "the recovery link is stored");
    let stored: HashSet<Vec<u8>> = rows.iter().map(|r| hex::decode(r.get::<_, &str>(0)).unwrap()).collect();
    let codes: Vec<String> = (0..1_000_000u32).map(|n| format!("{n:06}")).filter(|c| stored.contains(Sha256::digest(format!("{id}:{c}").as_bytes()).as_slice())).collect();
    for code in &codes {
        let (st, body, _) = post(&m.http, &m.gw, "/auth/v1/verify", None, json!({"type": "recovery", "email": "owner@example.com", "token": code})).await;
        assert_ne!(st, StatusCode::OK, "an unsent code redeemed the recovery: {body}");
    }
    assert!(codes.is_empty(), "a 6-digit code is stored for a recovery e-mail that shows none");

    // The link itself still works.
    let r = m.http.get(first_link(&mail)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(fragment(&r)["type"], "recovery");
}

#[tokio::test]
async fn wrong_codes_spend_the_accounts_codes_across_gateways() {
    let m = with_mail(&[]).await;
    let env = mail_env(&m.smtp, &[]);
    let gw2 = Gateway::serve(&m.tc, &env.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>()).await.unwrap();
    let email = "otp@example.com";
    let verify = |gw: &Gateway, code: String| {
        let http = m.http.clone();
        let url = gw.url("/auth/v1/verify");
        async move {
            let r = http.post(url).json(&json!({"type": "email", "email": email, "token": code})).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let wrong = |code: &str| format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);

    post(&m.http, &m.gw, "/auth/v1/otp", None, json!({"email": email, "create_user": true})).await;
    let mail = m.smtp.wait_for(email, 1).await.unwrap();
    let code = code_of(&mail);
    // Five wrong tries, spread over two gateways.
    for (i, gw) in [&m.gw, &gw2, &m.gw, &gw2, &m.gw].into_iter().enumerate() {
        let (st, body) = verify(gw, wrong(&code)).await;
        assert_eq!((st, body["error_code"].as_str()), (StatusCode::BAD_REQUEST, Some("otp_expired")), "try {i}: {body}");
    }
    // The right code, and the link of the same e-mail, are spent now.
    let (st, body) = verify(&gw2, code.clone()).await;
    assert_eq!((st, body["error_code"].as_str()), (StatusCode::BAD_REQUEST, Some("otp_expired")), "the code must be spent after 5 wrong tries: {body}");
    let r = m.http.get(first_link(&mail)).send().await.unwrap();
    assert_eq!(fragment(&r)["error_code"], "otp_expired");
    let db = m.tc.superuser().await.unwrap();
    let max: i32 = db.query_one("SELECT max(attempts) FROM auth.one_time_tokens", &[]).await.unwrap().get(0);
    assert_eq!(max, 5, "tries are counted in the database");

    // A new e-mail starts a new count: four wrong tries, then the right code works.
    post(&m.http, &m.gw, "/auth/v1/otp", None, json!({"email": email})).await;
    let code = code_of(&m.smtp.wait_for(email, 2).await.unwrap());
    for _ in 0..4 {
        assert_eq!(verify(&m.gw, wrong(&code)).await.0, StatusCode::BAD_REQUEST);
    }
    let (st, session) = verify(&gw2, code).await;
    assert_eq!(st, StatusCode::OK, "{session}");
    assert!(session["access_token"].is_string());
}

#[tokio::test]
async fn an_email_change_needs_both_addresses() {
    let m = with_mail(&[]).await;
    let (http, gw) = (&m.http, &m.gw);
    let (_, s, _) = post(http, gw, "/auth/v1/signup", None, json!({"email": "old@example.com", "password": "change-password-1"})).await;
    let token = s["access_token"].as_str().unwrap().to_owned();
    post(http, gw, "/auth/v1/signup", None, json!({"email": "taken@example.com", "password": "change-password-1"})).await;
    assert_eq!(put_user(http, gw, &token, json!({"email": "taken@example.com"})).await.0, StatusCode::CONFLICT);

    let (st, u) = put_user(http, gw, &token, json!({"email": "New@Example.com"})).await;
    assert_eq!(st, StatusCode::OK, "{u}");
    assert_eq!((u["email"].as_str(), u["new_email"].as_str()), (Some("old@example.com"), Some("new@example.com")));
    assert!(u["email_change_sent_at"].is_string(), "{u}");
    assert_eq!(sign_in(http, gw, "new@example.com", "change-password-1").await, StatusCode::UNAUTHORIZED, "nothing applies before confirmation");

    let to_new = m.smtp.wait_for("new@example.com", 1).await.unwrap();
    let to_old = m.smtp.wait_for("old@example.com", 1).await.unwrap();
    assert_eq!(to_new["subject"], "Confirm your new email");
    // The new address alone is not enough.
    let r = http.get(first_link(&to_new)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let f = fragment(&r);
    assert_eq!(f["message"], "Confirmation link accepted. Please proceed to confirm link sent to the other email");
    assert!(!f.contains_key("access_token"), "{f:?}");
    assert_eq!(sign_in(http, gw, "new@example.com", "change-password-1").await, StatusCode::UNAUTHORIZED);
    // The current address confirms too: the change applies.
    let r = http.get(first_link(&to_old)).send().await.unwrap();
    let f = fragment(&r);
    assert_eq!(f["type"], "email_change", "{f:?}");
    assert!(f.contains_key("access_token"));
    assert_eq!(sign_in(http, gw, "new@example.com", "change-password-1").await, StatusCode::OK);
    assert_eq!(sign_in(http, gw, "old@example.com", "change-password-1").await, StatusCode::UNAUTHORIZED);
    let me: Value = http.get(gw.url("/auth/v1/user")).bearer_auth(&f["access_token"]).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["email"], "new@example.com");
    assert!(me.get("new_email").is_none() && me["email_confirmed_at"].is_string(), "{me}");

    // POST /verify (verifyOtp with token_hash), current address first; a newer
    // request makes the links of an older one useless.
    let (st, _) = put_user(http, gw, &token, json!({"email": "stale@example.com"})).await;
    assert_eq!(st, StatusCode::OK);
    let stale = m.smtp.wait_for("stale@example.com", 1).await.unwrap();
    let (st, u) = put_user(http, gw, &token, json!({"email": "newer@example.com"})).await;
    assert_eq!((st, u["new_email"].as_str()), (StatusCode::OK, Some("newer@example.com")));
    let r = http.get(first_link(&stale)).send().await.unwrap();
    assert_eq!(fragment(&r)["error_code"], "otp_expired");
    let to_current = m.smtp.wait_for("new@example.com", 3).await.unwrap();
    let to_newer = m.smtp.wait_for("newer@example.com", 1).await.unwrap();
    let (st, body, _) = post(http, gw, "/auth/v1/verify", None, json!({"type": "email_change", "token_hash": query_param(&first_link(&to_current), "token")})).await;
    assert_eq!((st, body["msg"].as_str()), (StatusCode::OK, Some("Confirmation link accepted. Please proceed to confirm link sent to the other email")), "{body}");
    assert!(body.get("access_token").is_none());
    let (st, session, _) = post(http, gw, "/auth/v1/verify", None, json!({"type": "email_change", "token_hash": query_param(&first_link(&to_newer), "token")})).await;
    assert_eq!(st, StatusCode::OK, "{session}");
    assert_eq!(session["user"]["email"], "newer@example.com");

    // Without any way to send mail (serve without SMTP) a change cannot start.
    let bare = Gateway::serve(&m.tc, &[]).await.unwrap();
    let (_, s, _) = post(http, &bare, "/auth/v1/signup", None, json!({"email": "nomail@example.com", "password": "change-password-1"})).await;
    let (st, body) = put_user(http, &bare, s["access_token"].as_str().unwrap(), json!({"email": "elsewhere@example.com"})).await;
    assert_eq!((st, body["error_code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("email_send_failed")), "{body}");
    assert_auth_error_shape(&body);
    assert_eq!(sign_in(http, &bare, "elsewhere@example.com", "change-password-1").await, StatusCode::UNAUTHORIZED);
}

// --- OAuth: a real OpenID provider (tests/js/oidc_provider.mjs) ---

const OIDC_EMAIL: &str = "oidc.user@example.com";

fn browser() -> Client {
    Client::builder().redirect(Policy::none()).cookie_store(true).build().unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers().get("location").unwrap_or_else(|| panic!("no Location on {}", r.status())).to_str().unwrap().to_owned()
}

/// /authorize in browser `b`, then the provider's login: the callback URL it sends
/// the browser to, and the Set-Cookie of /authorize.
async fn through_provider(gw: &Gateway, issuer: &str, b: &Client) -> (String, String) {
    let r = b.get(gw.url("/auth/v1/authorize?provider=oidc")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let cookie = r.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let mut next = location(&r);
    for _ in 0..6 {
        let r = b.get(&next).send().await.unwrap();
        assert!(r.status().is_redirection(), "provider answered {} at {next}", r.status());
        let to = location(&r);
        next = if to.starts_with('/') { format!("{issuer}{to}") } else { to };
        if next.starts_with(&gw.base) {
            return (next, cookie);
        }
    }
    panic!("the provider never redirected back");
}

#[tokio::test]
async fn oauth_state_is_bound_to_the_browser_and_links_only_to_proven_addresses() {
    let smtp = SmtpSink::start().await.unwrap();
    let tc = TestCluster::start().await.unwrap();
    let port = pgstack_gateway::dev::cluster::free_port(None).unwrap();
    let provider = OidcProvider::start(&format!("http://127.0.0.1:{port}/auth/v1/callback"), OIDC_EMAIL).await.unwrap();
    let issuer = provider.issuer.clone();
    let service_key = pgstack_gateway::keys::mint(pgstack_shared::Role::ServiceRole, &Secret::new(JWT_SECRET)).unwrap();
    let listen = format!("127.0.0.1:{port}");
    let mut env = mail_env(&smtp, &[]);
    env.extend([
        ("LISTEN_ADDR", listen),
        ("SERVICE_ROLE_KEY", service_key.clone()),
        ("EXTERNAL_OIDC_URL", issuer.clone()),
        ("EXTERNAL_OIDC_CLIENT_ID", "pgstack-test".into()),
        ("EXTERNAL_OIDC_SECRET", "provider-secret-1".into()),
    ]);
    let gw = Gateway::serve(&tc, &env.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>()).await.unwrap();
    let http = Client::builder().redirect(Policy::none()).build().unwrap();

    // Someone registers the address first (no REQUIRE_EMAIL_VERIFICATION: the address
    // is confirmed automatically, never proven).
    let (st, squatter, _) = post(&http, &gw, "/auth/v1/signup", None, json!({"email": OIDC_EMAIL, "password": "squatter-password-1"})).await;
    assert_eq!(st, StatusCode::CREATED);
    assert!(squatter["user"]["email_confirmed_at"].is_string());

    // The owner's browser starts a sign-in; its state does not work in another browser.
    let b = browser();
    let (cb, cookie) = through_provider(&gw, &issuer, &b).await;
    assert!(cookie.starts_with("pgstack-oauth-"), "{cookie}");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=600"] {
        assert!(cookie.contains(attr), "{attr} missing: {cookie}");
    }
    assert!(!cookie.contains("Secure"), "no Secure over http: {cookie}");
    let r = http.get(&cb).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "a state without its browser cookie must be refused");
    assert_eq!(r.json::<Value>().await.unwrap()["error_code"], "bad_oauth_state");

    // In the owner's browser it works, and links to the account, but the squatter's
    // password and sessions no longer open it.
    let r = b.get(&cb).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert!(r.headers().get_all("set-cookie").iter().any(|v| v.to_str().unwrap().contains("Max-Age=0")), "the binding cookie is cleared");
    let f = fragment(&r);
    let me: Value = http.get(gw.url("/auth/v1/user")).bearer_auth(&f["access_token"]).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["id"], squatter["user"]["id"]);
    assert_eq!(sign_in(&http, &gw, OIDC_EMAIL, "squatter-password-1").await, StatusCode::UNAUTHORIZED, "an auto-confirmed address is not proven");
    let (st, _, _) = post(&http, &gw, "/auth/v1/token?grant_type=refresh_token", None, json!({"refresh_token": squatter["refresh_token"]})).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "the squatter's sessions are ended");

    // An address proven by an e-mailed link keeps its password when linked.
    let id = me["id"].as_str().unwrap();
    let r = http.delete(gw.url(&format!("/auth/v1/admin/users/{id}"))).bearer_auth(&service_key).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (st, owner, _) = post(&http, &gw, "/auth/v1/signup", None, json!({"email": OIDC_EMAIL, "password": "owner-password-1"})).await;
    assert_eq!(st, StatusCode::CREATED);
    post(&http, &gw, "/auth/v1/recover", None, json!({"email": OIDC_EMAIL})).await;
    let r = http.get(first_link(&smtp.wait_for(OIDC_EMAIL, 1).await.unwrap())).send().await.unwrap();
    assert_eq!(fragment(&r)["type"], "recovery");
    let b = browser();
    let (cb, _) = through_provider(&gw, &issuer, &b).await;
    let f = fragment(&b.get(&cb).send().await.unwrap());
    let me: Value = http.get(gw.url("/auth/v1/user")).bearer_auth(&f["access_token"]).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["id"], owner["user"]["id"]);
    assert_eq!(sign_in(&http, &gw, OIDC_EMAIL, "owner-password-1").await, StatusCode::OK);
}
