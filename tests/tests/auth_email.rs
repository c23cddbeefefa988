//! Issue 3: e-mail flows against a real SMTP server on loopback (aiosmtpd): sign-up
//! confirmation, password recovery (link and /recover/confirm), magic link and
//! e-mailed code, e-mail change; links are followed from the received messages.

use pgstack_tests::{first_link, Gateway, SmtpSink, TestCluster};
use reqwest::{redirect::Policy, Client, StatusCode};
use serde_json::{json, Value};

const SITE: &str = "http://app.test";

struct Env {
    http: Client,
    gw: Gateway,
    smtp: SmtpSink,
    _tc: TestCluster,
}

async fn start(extra: &[(&str, &str)]) -> Env {
    let smtp = SmtpSink::start().await.unwrap();
    let tc = TestCluster::start().await.unwrap();
    let mut env: Vec<(&str, String)> = smtp.env();
    env.push(("SITE_URL", SITE.into()));
    env.push(("ADDITIONAL_REDIRECT_URLS", "http://app.test/*,myapp://callback".into()));
    env.push(("EMAIL_MIN_INTERVAL", "0".into()));
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let gw = Gateway::serve(&tc, &env_refs).await.unwrap();
    let http = Client::builder().redirect(Policy::none()).build().unwrap();
    Env { http, gw, smtp, _tc: tc }
}

impl Env {
    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self.http.post(self.gw.url(path)).json(&body).send().await.unwrap();
        let st = r.status();
        let t = r.text().await.unwrap();
        (st, serde_json::from_str(&t).unwrap_or(Value::Null))
    }
    async fn follow(&self, link: &str) -> reqwest::Response {
        assert!(link.starts_with(&self.gw.base), "link {link} does not point at the gateway");
        self.http.get(link).send().await.unwrap()
    }
}

/// The fragment of a redirect as key → value.
fn fragment(res: &reqwest::Response) -> (String, std::collections::HashMap<String, String>) {
    let loc = res.headers()["location"].to_str().unwrap().to_owned();
    let (base, frag) = loc.split_once('#').unwrap_or((&loc, ""));
    let map = form_pairs(frag);
    (base.to_owned(), map)
}

fn form_pairs(s: &str) -> std::collections::HashMap<String, String> {
    s.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), urlencoding_decode(v))).collect()
}

fn urlencoding_decode(v: &str) -> String {
    let bytes = v.replace('+', " ").into_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap(), 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn query_param(link: &str, name: &str) -> String {
    form_pairs(link.split_once('?').unwrap().1).remove(name).unwrap_or_default()
}

#[tokio::test]
async fn signup_confirmation_is_required_when_configured() {
    let e = start(&[("REQUIRE_EMAIL_VERIFICATION", "true")]).await;
    let (st, body) = e.post("/auth/v1/signup", json!({"email": "new@example.com", "password": "strongpassword123"})).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["message"], "Check your email to confirm your account");
    assert!(body.get("access_token").is_none());
    assert!(body["email_confirmed_at"].is_null());
    let (st, err) = e.post("/auth/v1/token?grant_type=password", json!({"email": "new@example.com", "password": "strongpassword123"})).await;
    assert_eq!((st, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("email_not_confirmed")));

    let mail = e.smtp.wait_for("new@example.com", 1).await.unwrap();
    assert_eq!(mail["subject"], "Confirm your email");
    let link = first_link(&mail);
    let res = e.follow(&link).await;
    assert_eq!(res.status(), StatusCode::OK);
    let confirmed: Value = res.json().await.unwrap();
    assert_eq!(confirmed["message"], "Email confirmed");
    assert!(confirmed["user"]["email_confirmed_at"].is_string());
    let (st, _) = e.post("/auth/v1/token?grant_type=password", json!({"email": "new@example.com", "password": "strongpassword123"})).await;
    assert_eq!(st, StatusCode::OK);
    // Single use.
    let again = e.follow(&link).await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert_eq!(again.json::<Value>().await.unwrap()["error"], "invalid or expired token");

    // With redirect_to (auth-js emailRedirectTo) the link lands in the app, signed in.
    let (st, _) = e.post("/auth/v1/signup?redirect_to=http://app.test/welcome", json!({"email": "redir@example.com", "password": "strongpassword123"})).await;
    assert_eq!(st, StatusCode::OK);
    let link = first_link(&e.smtp.wait_for("redir@example.com", 1).await.unwrap());
    let res = e.follow(&link).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    let (base, frag) = fragment(&res);
    assert_eq!(base, "http://app.test/welcome");
    assert_eq!(frag["type"], "signup");
    assert_eq!(frag["token_type"], "bearer");
    let me = e.http.get(e.gw.url("/auth/v1/user")).bearer_auth(&frag["access_token"]).send().await.unwrap();
    assert_eq!(me.json::<Value>().await.unwrap()["email"], "redir@example.com");
}

#[tokio::test]
async fn password_recovery_by_link_and_by_confirm() {
    let e = start(&[]).await;
    e.post("/auth/v1/signup", json!({"email": "rec@example.com", "password": "oldpassword1"})).await;
    let (st, known) = e.post("/auth/v1/recover", json!({"email": "rec@example.com"})).await;
    let (st2, unknown) = e.post("/auth/v1/recover", json!({"email": "ghost@example.com"})).await;
    assert_eq!((st, st2), (StatusCode::OK, StatusCode::OK));
    assert_eq!(known, unknown, "recover must not reveal whether an account exists");
    assert_eq!(known["message"], "If this email exists, a reset link has been sent");

    // auth-js flow: link → /verify?type=recovery → session in the fragment → new password.
    let mail = e.smtp.wait_for("rec@example.com", 1).await.unwrap();
    assert_eq!(mail["subject"], "Reset your password");
    let res = e.follow(&first_link(&mail)).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    let (base, frag) = fragment(&res);
    assert_eq!((base.as_str(), frag["type"].as_str()), (SITE, "recovery"));
    let upd = e.http.put(e.gw.url("/auth/v1/user")).bearer_auth(&frag["access_token"]).json(&json!({"password": "newpassword2"})).send().await.unwrap();
    assert_eq!(upd.status(), StatusCode::OK);
    assert_eq!(e.post("/auth/v1/token?grant_type=password", json!({"email": "rec@example.com", "password": "newpassword2"})).await.0, StatusCode::OK);
    assert!(e.smtp.messages_to("ghost@example.com").is_empty());

    // The contract's flow: token from the e-mail → POST /recover/confirm.
    e.post("/auth/v1/recover", json!({"email": "rec@example.com"})).await;
    let link = first_link(&e.smtp.wait_for("rec@example.com", 2).await.unwrap());
    let token = query_param(&link, "token");
    let (st, err) = e.post("/auth/v1/recover/confirm", json!({"token": token, "password": "short"})).await;
    assert_eq!((st, err["error"].as_str()), (StatusCode::BAD_REQUEST, Some("password must be at least 8 characters")));
    let (st, ok) = e.post("/auth/v1/recover/confirm", json!({"token": token, "password": "thirdpassword3"})).await;
    assert_eq!((st, ok), (StatusCode::OK, json!({"message": "Password updated"})));
    let (st, err) = e.post("/auth/v1/recover/confirm", json!({"token": token, "password": "fourthpassword4"})).await;
    assert_eq!((st, err["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid or expired token")));
    assert_eq!(e.post("/auth/v1/token?grant_type=password", json!({"email": "rec@example.com", "password": "thirdpassword3"})).await.0, StatusCode::OK);

    // redirect_to outside the allow-list falls back to SITE_URL.
    e.post("/auth/v1/recover?redirect_to=http://evil.test/steal", json!({"email": "rec@example.com"})).await;
    let link = first_link(&e.smtp.wait_for("rec@example.com", 3).await.unwrap());
    assert_eq!(query_param(&link, "redirect_to"), SITE);
    e.post("/auth/v1/recover?redirect_to=myapp://callback", json!({"email": "rec@example.com"})).await;
    let link = first_link(&e.smtp.wait_for("rec@example.com", 4).await.unwrap());
    assert_eq!(query_param(&link, "redirect_to"), "myapp://callback");
}

#[tokio::test]
async fn magic_links_and_emailed_codes_sign_in() {
    let e = start(&[]).await;
    let (st, body) = e.post("/auth/v1/magiclink", json!({"email": "magic@example.com"})).await;
    assert_eq!((st, body), (StatusCode::OK, json!({"message": "Magic link sent"})));
    let mail = e.smtp.wait_for("magic@example.com", 1).await.unwrap();
    let link = first_link(&mail);
    assert!(link.contains("/auth/v1/magiclink/verify?token="), "{link}");
    let res = e.follow(&link).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    let (base, frag) = fragment(&res);
    assert_eq!(base, SITE);
    let me: Value = e.http.get(e.gw.url("/auth/v1/user")).bearer_auth(&frag["access_token"]).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["email"], "magic@example.com");
    assert!(me["email_confirmed_at"].is_string());
    // Used links redirect with an error in the fragment.
    let (_, frag) = fragment(&e.follow(&link).await);
    assert_eq!(frag["error_code"], "otp_expired");

    // supabase-js signInWithOtp → POST /otp → code → POST /verify {email, token, type}.
    let (st, body) = e.post("/auth/v1/otp", json!({"email": "magic@example.com", "create_user": true})).await;
    assert_eq!((st, body), (StatusCode::OK, json!({})));
    let mail = e.smtp.wait_for("magic@example.com", 2).await.unwrap();
    let text = mail["text"].as_str().unwrap().to_owned() + mail["html"].as_str().unwrap();
    let code: String = text.split("code: ").nth(1).unwrap().chars().take(6).collect();
    assert!(code.chars().all(|c| c.is_ascii_digit()), "{code}");
    let (st, err) = e.post("/auth/v1/verify", json!({"email": "magic@example.com", "token": "000000x", "type": "email"})).await;
    assert_eq!((st, err["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid or expired token")));
    let (st, session) = e.post("/auth/v1/verify", json!({"email": "magic@example.com", "token": code, "type": "email"})).await;
    assert_eq!(st, StatusCode::OK, "{session}");
    assert!(session["access_token"].is_string() && session["refresh_token"].is_string());

    // token_hash form, and create_user=false for unknown addresses sends nothing.
    e.post("/auth/v1/otp", json!({"email": "magic@example.com"})).await;
    let link = first_link(&e.smtp.wait_for("magic@example.com", 3).await.unwrap());
    let (st, _) = e.post("/auth/v1/verify", json!({"token_hash": query_param(&link, "token"), "type": "magiclink"})).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = e.post("/auth/v1/otp", json!({"email": "nobody@example.com", "create_user": false})).await;
    assert_eq!(st, StatusCode::OK);
    assert!(e.smtp.messages_to("nobody@example.com").is_empty());
}

#[tokio::test]
async fn email_change_waits_for_the_new_address_and_mail_is_rate_limited() {
    let e = start(&[("REQUIRE_EMAIL_VERIFICATION", "true"), ("EMAIL_MIN_INTERVAL", "60")]).await;
    e.post("/auth/v1/signup", json!({"email": "old@example.com", "password": "strongpassword123"})).await;
    let link = first_link(&e.smtp.wait_for("old@example.com", 1).await.unwrap());
    e.follow(&link).await;
    let (_, s) = e.post("/auth/v1/token?grant_type=password", json!({"email": "old@example.com", "password": "strongpassword123"})).await;
    let token = s["access_token"].as_str().unwrap();
    let res = e.http.put(e.gw.url("/auth/v1/user")).bearer_auth(token).json(&json!({"email": "fresh@example.com"})).send().await.unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!((body["email"].as_str(), body["new_email"].as_str()), (Some("old@example.com"), Some("fresh@example.com")));
    let mail = e.smtp.wait_for("fresh@example.com", 1).await.unwrap();
    assert_eq!(mail["subject"], "Confirm your new email");
    // Secure e-mail change: the new address, then the current one, both confirm.
    let (_, frag) = fragment(&e.follow(&first_link(&mail)).await);
    assert_eq!(frag["message"], "Confirmation link accepted. Please proceed to confirm link sent to the other email");
    let (_, frag) = fragment(&e.follow(&first_link(&e.smtp.wait_for("old@example.com", 2).await.unwrap())).await);
    assert_eq!(frag["type"], "email_change");
    assert_eq!(e.post("/auth/v1/token?grant_type=password", json!({"email": "fresh@example.com", "password": "strongpassword123"})).await.0, StatusCode::OK);

    // A second recovery mail within EMAIL_MIN_INTERVAL is not sent (same answer).
    let (a, _) = e.post("/auth/v1/recover", json!({"email": "fresh@example.com"})).await;
    let (b, _) = e.post("/auth/v1/recover", json!({"email": "fresh@example.com"})).await;
    assert_eq!((a, b), (StatusCode::OK, StatusCode::OK));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let recoveries = e.smtp.messages_to("fresh@example.com").into_iter().filter(|m| m["subject"] == "Reset your password").count();
    assert_eq!(recoveries, 1);
}

#[tokio::test]
async fn serve_refuses_required_verification_without_smtp() {
    let tc = TestCluster::start().await.unwrap();
    let err = Gateway::serve(&tc, &[("REQUIRE_EMAIL_VERIFICATION", "true")]).await.err().expect("must refuse to start");
    assert!(err.to_string().contains("SMTP_HOST"), "{err}");
}

#[tokio::test]
async fn pkce_email_links_end_with_a_code_for_the_verifier() {
    use base64::Engine;
    use sha2::Digest;
    let e = start(&[("REQUIRE_EMAIL_VERIFICATION", "true")]).await;
    let verifier = "pkce-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let ch = |extra: Value| {
        let mut v = json!({"code_challenge": challenge, "code_challenge_method": "s256"});
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        v
    };
    let location = |r: &reqwest::Response| r.headers()["location"].to_str().unwrap().to_owned();
    let exchange = |code: String| {
        let e = &e;
        async move { e.post("/auth/v1/token?grant_type=pkce", json!({"auth_code": code, "code_verifier": verifier})).await }
    };

    // Sign-up confirmation under PKCE (supabase-py's default): ?code= on SITE_URL.
    let (st, user) = e.post("/auth/v1/signup", ch(json!({"email": "pk@example.com", "password": "pkce-password-1"}))).await;
    assert_eq!(st, StatusCode::OK, "{user}");
    let res = e.follow(&first_link(&e.smtp.wait_for("pk@example.com", 1).await.unwrap())).await;
    let to = location(&res);
    assert!(to.starts_with("http://app.test?code="), "{to}");
    assert!(!to.contains("access_token"));
    let (st, session) = exchange(query_param(&to, "code")).await;
    assert_eq!(st, StatusCode::OK, "{session}");
    assert_eq!(session["user"]["email"], "pk@example.com");
    assert!(session["user"]["email_confirmed_at"].is_string());

    // Magic link with redirect_to: ?code= there; the code is single use.
    e.post("/auth/v1/otp?redirect_to=myapp://callback", ch(json!({"email": "pk@example.com"}))).await;
    let res = e.follow(&first_link(&e.smtp.wait_for("pk@example.com", 2).await.unwrap())).await;
    let to = location(&res);
    assert!(to.starts_with("myapp://callback?code="), "{to}");
    let code = query_param(&to, "code");
    assert_eq!(exchange(code.clone()).await.0, StatusCode::OK);
    let (st, err) = exchange(code).await;
    assert_eq!((st, err["error_code"].as_str()), (StatusCode::NOT_FOUND, Some("flow_state_not_found")));

    // Recovery under PKCE, then the new password through the session.
    e.post("/auth/v1/recover", ch(json!({"email": "pk@example.com"}))).await;
    let res = e.follow(&first_link(&e.smtp.wait_for("pk@example.com", 3).await.unwrap())).await;
    let (st, session) = exchange(query_param(&location(&res), "code")).await;
    assert_eq!(st, StatusCode::OK);
    let upd = e.http.put(e.gw.url("/auth/v1/user")).bearer_auth(session["access_token"].as_str().unwrap()).json(&json!({"password": "pkce-password-2"})).send().await.unwrap();
    assert_eq!(upd.status(), StatusCode::OK);
    assert_eq!(e.post("/auth/v1/token?grant_type=password", json!({"email": "pk@example.com", "password": "pkce-password-2"})).await.0, StatusCode::OK);

    // The e-mailed code (POST /verify) still answers with a session directly.
    e.post("/auth/v1/otp", ch(json!({"email": "pk@example.com"}))).await;
    let mail = e.smtp.wait_for("pk@example.com", 4).await.unwrap();
    let text = mail["text"].as_str().unwrap().to_owned() + mail["html"].as_str().unwrap();
    let code: String = text.split("code: ").nth(1).unwrap().chars().take(6).collect();
    let (st, session) = e.post("/auth/v1/verify", json!({"email": "pk@example.com", "token": code, "type": "email"})).await;
    assert_eq!(st, StatusCode::OK, "{session}");
    assert!(session["access_token"].is_string());

    // A bad challenge method is refused up front.
    let (st, err) = e.post("/auth/v1/otp", json!({"email": "pk@example.com", "code_challenge": challenge, "code_challenge_method": "sha1"})).await;
    assert_eq!((st, err["error_code"].as_str()), (StatusCode::BAD_REQUEST, Some("validation_failed")));
}
