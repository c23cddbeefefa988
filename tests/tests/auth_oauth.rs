//! Issue 3: OAuth / OpenID Connect sign-in end to end against a real OpenID provider
//! on loopback (npm oidc-provider, tests/js/oidc_provider.mjs): authorize → provider
//! login → callback → tokens in the redirect fragment; the PKCE variant with
//! POST /token?grant_type=pkce; Apple's form_post callback; linking by verified
//! e-mail; state single use; every refusal.

use std::collections::HashMap;

use base64::Engine;
use pgstack_gateway::config::Secret;
use pgstack_tests::{Gateway, OidcProvider, TestCluster, JWT_SECRET};
use reqwest::{redirect::Policy, Client, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const SITE: &str = "http://app.test";
const EMAIL: &str = "oidc.user@example.com";

fn free_port() -> u16 {
    pgstack_gateway::dev::cluster::free_port(None).unwrap()
}

struct Env {
    gw: Gateway,
    provider: OidcProvider,
    service_key: String,
    tc: TestCluster,
}

async fn start() -> Env {
    let tc = TestCluster::start().await.unwrap();
    let port = free_port();
    let callback = format!("http://127.0.0.1:{port}/auth/v1/callback");
    let provider = OidcProvider::start(&callback, EMAIL).await.unwrap();
    let service_key = pgstack_gateway::keys::mint(pgstack_shared::Role::ServiceRole, &Secret::new(JWT_SECRET)).unwrap();
    let listen = format!("127.0.0.1:{port}");
    let iss = provider.issuer.as_str();
    let mut env: Vec<(&str, &str)> = vec![
        ("LISTEN_ADDR", &listen),
        ("SERVICE_ROLE_KEY", &service_key),
        ("SITE_URL", SITE),
        ("ADDITIONAL_REDIRECT_URLS", "myapp://callback"),
        ("EXTERNAL_CUSTOM_PROVIDERS", "local"),
        ("EXTERNAL_CUSTOM_LOCAL_URL", iss),
        ("EXTERNAL_OIDC_URL", iss),
        // Apple's protocol (form_post) pointed at the loopback issuer.
        ("EXTERNAL_APPLE_URL", iss),
    ];
    for p in ["EXTERNAL_CUSTOM_LOCAL_", "EXTERNAL_OIDC_", "EXTERNAL_APPLE_"] {
        env.push((Box::leak(format!("{p}CLIENT_ID").into_boxed_str()), "pgstack-test"));
        env.push((Box::leak(format!("{p}SECRET").into_boxed_str()), "provider-secret-1"));
    }
    let gw = Gateway::serve(&tc, &env).await.unwrap();
    Env { gw, provider, service_key, tc }
}

fn browser() -> Client {
    Client::builder().redirect(Policy::none()).cookie_store(true).build().unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers().get("location").unwrap_or_else(|| panic!("no Location on {}", r.status())).to_str().unwrap().to_owned()
}

fn pairs(s: &str) -> HashMap<String, String> {
    form_urlencoded_pairs(s)
}

fn form_urlencoded_pairs(s: &str) -> HashMap<String, String> {
    reqwest::Url::parse(&format!("http://x/?{s}")).unwrap().query_pairs().into_owned().collect()
}

fn query_of(url: &str) -> HashMap<String, String> {
    reqwest::Url::parse(url).unwrap().query_pairs().into_owned().collect()
}

fn fragment_of(url: &str) -> HashMap<String, String> {
    pairs(url.split_once('#').map(|(_, f)| f).unwrap_or(""))
}

impl Env {
    /// GET /authorize, then the provider's login, up to (not including) our callback:
    /// returns the callback URL the provider sent the browser to.
    async fn through_provider(&self, b: &Client, query: &str) -> String {
        let r = b.get(self.gw.url(&format!("/auth/v1/authorize?{query}"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FOUND, "{}", r.text().await.unwrap());
        let mut next = location(&r);
        assert!(next.starts_with(&format!("{}/authorize?", self.provider.issuer)), "authorize goes to the provider: {next}");
        let q = query_of(&next);
        assert!(q["state"].len() >= 40 && q["nonce"].len() >= 40, "random state and nonce: {q:?}");
        assert_eq!(q["code_challenge_method"], "S256", "PKCE towards the provider");
        for _ in 0..6 {
            let r = b.get(&next).send().await.unwrap();
            assert!(r.status().is_redirection(), "provider answered {} at {next}", r.status());
            let to = location(&r);
            next = if to.starts_with('/') { format!("{}{to}", self.provider.issuer) } else { to };
            if next.starts_with(&self.gw.base) {
                return next;
            }
        }
        panic!("the provider never redirected back");
    }

    async fn user(&self, access: &str) -> Value {
        let r = reqwest::Client::new().get(self.gw.url("/auth/v1/user")).bearer_auth(access).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    async fn json(&self, method: reqwest::Method, path: &str, bearer: Option<&str>, body: Value) -> (StatusCode, Value) {
        let mut req = reqwest::Client::new().request(method, self.gw.url(path)).json(&body);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        let r = req.send().await.unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn oidc_sign_in_lands_with_tokens_in_the_fragment_and_links_by_verified_email() {
    let env = start().await;

    // An unconfirmed account holding the provider's address, with a password set by
    // whoever registered it first.
    let (st, squatter) = env.json(reqwest::Method::POST, "/auth/v1/admin/users", Some(&env.service_key), json!({"email": EMAIL, "password": "squatter-password-1"})).await;
    assert_eq!(st, StatusCode::CREATED, "{squatter}");
    assert!(squatter["email_confirmed_at"].is_null());

    let b = browser();
    let cb = env.through_provider(&b, "provider=custom:local&redirect_to=http://app.test/welcome").await;
    let r = b.get(&cb).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let landing = location(&r);
    assert!(landing.starts_with("http://app.test/welcome#"), "{landing}");
    let f = fragment_of(&landing);
    assert_eq!(f["token_type"], "bearer");
    assert!(f["refresh_token"].len() >= 40 && f["expires_in"] == "3600" && f.contains_key("expires_at"), "{f:?}");
    assert!(!f["provider_token"].is_empty(), "the provider's access token is handed to the app");

    let user = env.user(&f["access_token"]).await;
    assert_eq!(user["id"], squatter["id"], "linked to the account with the verified address");
    assert_eq!(user["email"], EMAIL);
    assert!(!user["email_confirmed_at"].is_null(), "the provider vouched for the address");
    assert_eq!(user["app_metadata"]["providers"], json!(["email", "custom:local"]));
    let ids: Vec<&str> = user["identities"].as_array().unwrap().iter().map(|i| i["provider"].as_str().unwrap()).collect();
    assert!(ids.contains(&"custom:local"), "{ids:?}");
    let oidc_identity = user["identities"].as_array().unwrap().iter().find(|i| i["provider"] == "custom:local").unwrap();
    assert_eq!(oidc_identity["id"], "oidc-user-1");
    assert_eq!(oidc_identity["identity_data"]["name"], "OIDC User");

    // The squatter's password no longer opens the account.
    let (st, body) = env.json(reqwest::Method::POST, "/auth/v1/token?grant_type=password", None, json!({"email": EMAIL, "password": "squatter-password-1"})).await;
    assert_eq!((st, body["error_code"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_credentials")));

    // The JWT says how the user signed in.
    let claims = jwt_claims(&f["access_token"]);
    assert_eq!(claims["amr"][0]["method"], "oauth");
    assert_eq!(claims["sub"], user["id"]);

    // A state is single use: replaying the callback is refused.
    let r = b.get(&cb).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error_code"], "bad_oauth_state");
    assert!(body["error"].as_str().is_some());

    // A second sign-in (new browser) reuses the identity: same user, no new identity.
    let b2 = browser();
    let cb = env.through_provider(&b2, "provider=custom:local").await;
    let landing = location(&b2.get(&cb).send().await.unwrap());
    assert!(landing.starts_with("http://app.test#"), "no redirect_to → SITE_URL: {landing}");
    let again = env.user(&fragment_of(&landing)["access_token"]).await;
    assert_eq!(again["id"], user["id"]);
    assert_eq!(again["identities"].as_array().unwrap().len(), user["identities"].as_array().unwrap().len());

    // A redirect_to off the allow-list falls back to SITE_URL.
    let b3 = browser();
    let cb = env.through_provider(&b3, "provider=custom:local&redirect_to=https://evil.test/steal").await;
    let landing = location(&b3.get(&cb).send().await.unwrap());
    assert!(landing.starts_with("http://app.test#access_token="), "{landing}");

    // Nothing secret is kept: flows are gone, states are digests.
    let db = env.tc.superuser().await.unwrap();
    let left: i64 = db.query_one("SELECT count(*) FROM auth.flow_state", &[]).await.unwrap().get(0);
    assert_eq!(left, 0, "finished implicit flows are deleted");
}

fn jwt_claims(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn pkce_pair() -> (String, String) {
    let verifier = format!("v{}", "0123456789abcdefghijklmnopqrstuvwxyz-._~ABCDEFGH");
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

#[tokio::test]
async fn pkce_flow_hands_a_code_that_only_the_verifier_redeems() {
    let env = start().await;
    let (verifier, challenge) = pkce_pair();
    let q = format!("provider=oidc&redirect_to=myapp://callback&code_challenge={challenge}&code_challenge_method=s256");

    // Round 1: a wrong verifier spends the code.
    let b = browser();
    let cb = env.through_provider(&b, &q).await;
    let landing = location(&b.get(&cb).send().await.unwrap());
    assert!(landing.starts_with("myapp://callback?code="), "PKCE lands with ?code=: {landing}");
    assert!(!landing.contains("access_token"), "no tokens in the URL under PKCE");
    let code = query_of(&landing)["code"].clone();
    let wrong = "w".repeat(43);
    let (st, body) = env.json(reqwest::Method::POST, "/auth/v1/token?grant_type=pkce", None, json!({"auth_code": code, "code_verifier": wrong})).await;
    assert_eq!((st, body["error_code"].as_str()), (StatusCode::FORBIDDEN, Some("bad_code_verifier")), "{body}");
    let (st, body) = env.json(reqwest::Method::POST, "/auth/v1/token?grant_type=pkce", None, json!({"auth_code": code, "code_verifier": verifier})).await;
    assert_eq!((st, body["error_code"].as_str()), (StatusCode::NOT_FOUND, Some("flow_state_not_found")), "single use: {body}");

    // Round 2: the right verifier gets a session.
    let b = browser();
    let cb = env.through_provider(&b, &q).await;
    let code = query_of(&location(&b.get(&cb).send().await.unwrap()))["code"].clone();
    let (st, session) = env.json(reqwest::Method::POST, "/auth/v1/token?grant_type=pkce", None, json!({"auth_code": code, "code_verifier": verifier})).await;
    assert_eq!(st, StatusCode::OK, "{session}");
    assert_eq!(session["token_type"], "bearer");
    assert_eq!(session["user"]["email"], EMAIL);
    assert_eq!(session["user"]["app_metadata"]["provider"], "oidc");
    let user = env.user(session["access_token"].as_str().unwrap()).await;
    assert_eq!(user["id"], session["user"]["id"]);
    // The refresh token works like any other.
    let (st, refreshed) = env.json(reqwest::Method::POST, "/auth/v1/token?grant_type=refresh_token", None, json!({"refresh_token": session["refresh_token"]})).await;
    assert_eq!(st, StatusCode::OK, "{refreshed}");

    // Round 3: an expired code is refused.
    let b = browser();
    let cb = env.through_provider(&b, &q).await;
    let code = query_of(&location(&b.get(&cb).send().await.unwrap()))["code"].clone();
    let db = env.tc.superuser().await.unwrap();
    db.execute("UPDATE auth.flow_state SET expires_at = now() - interval '1 second'", &[]).await.unwrap();
    let (st, body) = env.json(reqwest::Method::POST, "/auth/v1/token?grant_type=pkce", None, json!({"auth_code": code, "code_verifier": verifier})).await;
    assert_eq!((st, body["error_code"].as_str()), (StatusCode::BAD_REQUEST, Some("flow_state_expired")), "{body}");

    // Malformed grants.
    for bad in [json!({}), json!({"auth_code": "x"}), json!({"auth_code": "x", "code_verifier": "short"})] {
        let (st, body) = env.json(reqwest::Method::POST, "/auth/v1/token?grant_type=pkce", None, bad.clone()).await;
        assert_eq!((st, body["error_code"].as_str()), (StatusCode::BAD_REQUEST, Some("validation_failed")), "{bad} → {body}");
    }
    let (st, body) = env.json(reqwest::Method::POST, "/auth/v1/token?grant_type=pkce", None, json!({"auth_code": "no-such-code", "code_verifier": verifier})).await;
    assert_eq!((st, body["error_code"].as_str()), (StatusCode::NOT_FOUND, Some("flow_state_not_found")));
}

#[tokio::test]
async fn apple_form_post_callback_and_refusals() {
    let env = start().await;

    // Apple answers with an auto-submitting HTML form posted to /callback.
    let b = browser();
    let r = b.get(env.gw.url("/auth/v1/authorize?provider=apple")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let mut next = location(&r);
    assert_eq!(query_of(&next)["response_mode"], "form_post");
    let form_html = loop {
        let r = b.get(&next).send().await.unwrap();
        if r.status().is_redirection() {
            let to = location(&r);
            next = if to.starts_with('/') { format!("{}{to}", env.provider.issuer) } else { to };
            continue;
        }
        assert_eq!(r.status(), StatusCode::OK);
        break r.text().await.unwrap();
    };
    assert!(form_html.contains(&format!("{}/auth/v1/callback", env.gw.base)), "the form posts to our callback");
    let fields = hidden_inputs(&form_html);
    assert!(fields.contains_key("code") && fields.contains_key("state"), "{fields:?}");
    let mut form: Vec<(String, String)> = fields.into_iter().collect();
    form.push(("user".into(), json!({"name": {"firstName": "Ada", "lastName": "Lovelace"}}).to_string()));
    let r = b.post(env.gw.url("/auth/v1/callback")).form(&form).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let landing = location(&r);
    let user = env.user(&fragment_of(&landing)["access_token"]).await;
    assert_eq!(user["app_metadata"]["provider"], "apple");
    assert_eq!(user["user_metadata"]["full_name"], "Ada Lovelace", "Apple's first-login name is kept");

    // Refusals.
    let plain = Client::builder().redirect(Policy::none()).build().unwrap();
    for (q, code) in [("", "validation_failed"), ("provider=github", "validation_failed"), ("provider=nope", "validation_failed")] {
        let r = plain.get(env.gw.url(&format!("/auth/v1/authorize?{q}"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{q}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error_code"], code, "{q}: {body}");
        assert!(body["error"].as_str().unwrap().contains("provider"), "{body}");
    }
    let r = plain.get(env.gw.url("/auth/v1/authorize?provider=oidc&code_challenge=abc&code_challenge_method=md5")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    for q in ["", "?code=x", "?code=x&state=forged"] {
        let r = plain.get(env.gw.url(&format!("/auth/v1/callback{q}"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{q}");
        assert_eq!(r.json::<Value>().await.unwrap()["error_code"], "bad_oauth_state");
    }
    // The provider reports an error (user denied): the app gets it in the fragment.
    // (In the browser that started the flow: the state is bound to its cookie.)
    let r = b.get(env.gw.url("/auth/v1/authorize?provider=oidc&redirect_to=http://app.test/x")).send().await.unwrap();
    let state = query_of(&location(&r))["state"].clone();
    let r = b.get(env.gw.url(&format!("/auth/v1/callback?error=access_denied&error_description=user+said+no&state={state}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let landing = location(&r);
    assert!(landing.starts_with("http://app.test/x#"), "{landing}");
    let f = fragment_of(&landing);
    assert_eq!(f["error"], "access_denied");
    assert_eq!(f["error_code"], "oauth_provider_error");
    assert!(f["error_description"].contains("user said no"), "{f:?}");
    // A forged code with a real state: the token exchange fails, reported the same way.
    let r = b.get(env.gw.url("/auth/v1/authorize?provider=oidc")).send().await.unwrap();
    let state = query_of(&location(&r))["state"].clone();
    let r = b.get(env.gw.url(&format!("/auth/v1/callback?code=forged&state={state}"))).send().await.unwrap();
    let f = fragment_of(&location(&r));
    assert_eq!(f["error_code"], "bad_oauth_callback", "{f:?}");

    // /settings lists the enabled providers.
    let settings: Value = plain.get(env.gw.url("/auth/v1/settings")).send().await.unwrap().json().await.unwrap();
    assert_eq!(settings["external"]["apple"], true);
    assert_eq!(settings["external"]["oidc"], true);
    assert_eq!(settings["external"]["custom:local"], true);
    assert_eq!(settings["external"]["github"], false);
}

/// name → value of the `<input type="hidden">` fields of an HTML form.
fn hidden_inputs(html: &str) -> HashMap<String, String> {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let key = format!("{name}=\"");
        let start = tag.find(&key)? + key.len();
        Some(tag[start..].split('"').next()?.replace("&amp;", "&").replace("&#x2F;", "/").replace("&quot;", "\""))
    };
    html.split("<input")
        .skip(1)
        .filter_map(|tag| {
            let tag = tag.split('>').next()?;
            Some((attr(tag, "name")?, attr(tag, "value")?))
        })
        .collect()
}
