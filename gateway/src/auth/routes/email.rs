//! E-mail flows: POST /recover, POST /recover/confirm, POST /magiclink (and /otp),
//! GET /magiclink/verify, GET and POST /verify.
//!
//! Links land on SITE_URL or an allow-listed `redirect_to` with the session in the
//! URL fragment (`#access_token=...`), errors as `#error=...&error_code=...`.
//! Recover and magic link answer the same whether or not the address is known.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::json;
use crate::auth::error::{parse_body, AuthError, AuthResult};
use crate::auth::mailer::{Fields, Kind};
use crate::auth::one_time::{self, TokenType};
use crate::auth::redirect::{self, found, with_fragment, with_query};
use crate::auth::store::{self, NewUser};
use crate::auth::tokens::{self, Method};
use crate::auth::{passwords, pkce, validate, ClientInfo};
use crate::config::Config;
use crate::AppState;

/// `redirect_to` if allowed, else SITE_URL (see [`redirect::target`]).
pub fn redirect_target(cfg: &Config, requested: Option<&str>) -> String {
    redirect::target(cfg, requested)
}

pub(super) fn url_with(base: &str, path: &str, params: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        q.append_pair(k, v);
    }
    format!("{base}/auth/v1{path}?{}", q.finish())
}

/// Sends one e-mail; failures are logged (the answer to the client does not change,
/// so nothing about the account leaks).
async fn send(s: &AppState, kind: Kind, to: &str, url: &str, token: &str, code: Option<&str>) -> bool {
    send_fields(s, kind, to, &Fields { url, token, code, email: to, new_email: None }).await
}

/// [`send`] with every template field given.
pub(super) async fn send_fields(s: &AppState, kind: Kind, to: &str, f: &Fields<'_>) -> bool {
    match s.mailer.send(&s.config, kind, to, f).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, kind = ?kind, "e-mail could not be sent");
            false
        }
    }
}

/// `?redirect_to=` of the e-mail routes.
#[derive(Deserialize)]
pub struct RedirectQuery {
    redirect_to: Option<String>,
}

impl RedirectQuery {
    /// The requested redirect, if any.
    pub fn redirect_to(&self) -> Option<&str> {
        self.redirect_to.as_deref()
    }
}

#[derive(Deserialize)]
struct EmailParams {
    email: Option<String>,
    create_user: Option<bool>,
    data: Option<Value>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

/// Under PKCE, where the flow lands and the app's challenge.
pub type PkceStart<'a> = Option<(&'a pkce::Challenge, &'a str)>;

/// Issues a token of `kind` to `user` unless one went out less than
/// EMAIL_MIN_INTERVAL ago; under PKCE the token belongs to a new flow.
async fn issue_for(s: &AppState, user: Uuid, kind: TokenType, relates_to: &str, flow: PkceStart<'_>) -> AuthResult<Option<one_time::Issued>> {
    let mut conn = s.pool.get().await?;
    let tx = store::begin(&mut conn).await?;
    if let Some(since) = one_time::seconds_since_last(&tx, user, kind).await? {
        if since < s.config.email_min_interval_secs as f64 {
            return Ok(None);
        }
    }
    let flow_id = match flow {
        Some((challenge, target)) => Some(pkce::create(&tx, "email", None, target, Some(challenge), s.config.mailer_otp_exp_secs).await?),
        None => None,
    };
    let issued = one_time::issue(&tx, user, kind, relates_to, s.config.mailer_otp_exp_secs, flow_id).await?;
    tx.commit().await?;
    Ok(Some(issued))
}

async fn user_by_email(s: &AppState, email: &str) -> AuthResult<Option<Uuid>> {
    let mut conn = s.pool.get().await?;
    let tx = store::begin(&mut conn).await?;
    let found = store::find_by_email(&tx, email).await?.map(|(id, _, _)| id);
    tx.commit().await?;
    Ok(found)
}

/// POST /auth/v1/recover → always 200 with the same message.
pub async fn recover(State(s): State<AppState>, Query(q): Query<RedirectQuery>, body: Bytes) -> AuthResult<Response> {
    let p: EmailParams = parse_body(&body)?;
    let email = validate::email(p.email.as_deref().unwrap_or(""))?;
    let challenge = pkce::parse(p.code_challenge.as_deref(), p.code_challenge_method.as_deref())?;
    if let Some(user) = user_by_email(&s, &email).await? {
        let target = redirect_target(&s.config, q.redirect_to.as_deref());
        if let Some(t) = issue_for(&s, user, TokenType::Recovery, "", challenge.as_ref().map(|c| (c, target.as_str()))).await? {
            let url = url_with(&s.config.api_external_url, "/verify", &[("token", &t.token), ("type", "recovery"), ("redirect_to", &target)]);
            send(&s, Kind::Recovery, &email, &url, &t.token, None).await;
        }
    }
    Ok(json(StatusCode::OK, json!({"message": "If this email exists, a reset link has been sent"})))
}

#[derive(Deserialize)]
struct ConfirmParams {
    token: Option<String>,
    password: Option<String>,
}

/// POST /auth/v1/recover/confirm {token, password} → 200; every session ends.
/// The token is checked before the password is hashed (no hashing for a bad token),
/// and no database connection is held while hashing.
pub async fn recover_confirm(State(s): State<AppState>, body: Bytes) -> AuthResult<Response> {
    let p: ConfirmParams = parse_body(&body)?;
    let password = p.password.unwrap_or_default();
    passwords::check(&password)?;
    let token = p.token.unwrap_or_default();
    let live = {
        let mut conn = s.pool.get().await?;
        let tx = store::begin(&mut conn).await?;
        let live = one_time::is_live(&tx, &token, &[TokenType::Recovery]).await?;
        tx.commit().await?;
        live
    };
    if !live {
        return Err(AuthError::otp_invalid());
    }
    let hash = passwords::hash(password).await?;
    let mut conn = s.pool.get().await?;
    let tx = store::begin(&mut conn).await?;
    let Some(c) = one_time::consume(&tx, &token, None, &[TokenType::Recovery], s.config.otp_max_attempts).await? else {
        return Err(AuthError::otp_invalid());
    };
    one_time::apply(&tx, &c).await?;
    let changes = store::UserChanges { password_hash: Some(&hash), ..Default::default() };
    store::update_user(&tx, c.user, &changes).await?;
    store::logout(&tx, c.user, None, "global").await?;
    store::audit(&tx, "user_recovery_password_set", Some(c.user), json!({}), None).await?;
    tx.commit().await?;
    Ok(json(StatusCode::OK, json!({"message": "Password updated"})))
}

/// POST /auth/v1/magiclink (contract) and POST /auth/v1/otp (supabase-js): e-mails a
/// sign-in link and code. Unknown addresses get an account unless `create_user` is false.
pub async fn magiclink(State(s): State<AppState>, Query(q): Query<RedirectQuery>, uri: axum::http::Uri, body: Bytes) -> AuthResult<Response> {
    let p: EmailParams = parse_body(&body)?;
    let email = validate::email(p.email.as_deref().unwrap_or(""))?;
    let meta = validate::metadata(p.data.as_ref())?.cloned().unwrap_or_else(|| json!({}));
    let challenge = pkce::parse(p.code_challenge.as_deref(), p.code_challenge_method.as_deref())?;
    let user = match user_by_email(&s, &email).await? {
        Some(u) => Some(u),
        None if p.create_user.unwrap_or(true) => {
            let mut conn = s.pool.get().await?;
            let tx = store::begin(&mut conn).await?;
            let app_meta = json!({"provider": "email", "providers": ["email"]});
            let new = NewUser { email: Some(&email), password_hash: None, role: "authenticated", user_meta: &meta, app_meta: &app_meta, confirmed_by: None, is_anonymous: false };
            let id = store::create_user(&tx, &new).await?;
            tx.commit().await?;
            id
        }
        None => None,
    };
    if let Some(user) = user {
        let target = redirect_target(&s.config, q.redirect_to.as_deref());
        if let Some(t) = issue_for(&s, user, TokenType::MagicLink, "", challenge.as_ref().map(|c| (c, target.as_str()))).await? {
            let url = url_with(&s.config.api_external_url, "/magiclink/verify", &[("token", &t.token), ("redirect_to", &target)]);
            send(&s, Kind::MagicLink, &email, &url, &t.token, t.code.as_deref()).await;
        }
    }
    let body = if uri.path().ends_with("/otp") { json!({}) } else { json!({"message": "Magic link sent"}) };
    Ok(json(StatusCode::OK, body))
}

#[derive(Deserialize)]
pub struct VerifyQuery {
    token: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    redirect_to: Option<String>,
}

/// How a followed link or code ends.
enum Verified {
    /// Signed in: the session body and the type name for the fragment.
    Session(Value, &'static str),
    /// A PKCE flow: the browser goes to `.0?code=.1`.
    Code(String, String),
    /// No session yet: the first of the two e-mail change links (GoTrue's message).
    Message(&'static str),
}

/// Consumes a token and opens a session; a link (`link`) of a PKCE flow ends with an
/// authorization code instead.
async fn verify_and_sign_in(s: &AppState, client: &ClientInfo, token: &str, code_user: Option<Uuid>, kinds: &[TokenType], link: bool) -> AuthResult<Verified> {
    let mut conn = s.pool.get().await?;
    let tx = store::begin(&mut conn).await?;
    let Some(c) = one_time::consume(&tx, token, code_user, kinds, s.config.otp_max_attempts).await? else {
        // Commit: a wrong code counts against the account.
        tx.commit().await?;
        return Err(AuthError::otp_invalid());
    };
    let applied = one_time::apply(&tx, &c).await?;
    store::audit(&tx, "user_verified", Some(c.user), json!({"type": c.kind.as_str()}), client.ip.as_deref()).await?;
    if applied == one_time::Applied::AwaitingOther {
        tx.commit().await?;
        return Ok(Verified::Message(one_time::AWAITING_OTHER));
    }
    if let Some(flow_id) = c.flow {
        match pkce::get(&tx, flow_id).await? {
            Some(flow) if link && flow.pkce => {
                let code = pkce::issue_code(&tx, flow.id, c.user).await?;
                tx.commit().await?;
                return Ok(Verified::Code(flow.redirect_to, code));
            }
            _ => pkce::finish(&tx, flow_id).await?,
        }
    }
    let (session, refresh) = store::start_session(&tx, c.user, client.user_agent.as_deref(), client.ip.as_deref()).await?;
    let user = store::found(store::user_json(&tx, c.user).await?)?;
    tx.commit().await?;
    let kind = match c.kind {
        TokenType::Confirmation => "signup",
        TokenType::Recovery => "recovery",
        TokenType::MagicLink => "magiclink",
        TokenType::EmailChange | TokenType::EmailChangeCurrent => "email_change",
    };
    Ok(Verified::Session(tokens::session_body(&s.config, user, &session.to_string(), &refresh, Method::Otp)?, kind))
}

/// The session as URL fragment pairs (GoTrue's implicit-flow landing).
pub fn session_fragment(session: &Value, extra: &[(&str, String)]) -> Vec<(&'static str, String)> {
    let get = |k: &str| session[k].as_str().map(str::to_owned).unwrap_or_else(|| session[k].to_string());
    let mut pairs = vec![
        ("access_token", get("access_token")),
        ("expires_at", get("expires_at")),
        ("expires_in", get("expires_in")),
        ("refresh_token", get("refresh_token")),
        ("token_type", "bearer".to_owned()),
    ];
    for (k, v) in extra {
        let k: &'static str = match *k {
            "type" => "type",
            "provider_token" => "provider_token",
            "provider_refresh_token" => "provider_refresh_token",
            _ => continue,
        };
        pairs.push((k, v.clone()));
    }
    pairs
}

/// An error at the end of a browser flow: in the fragment (implicit) or the query (PKCE).
pub fn error_redirect(target: &str, e: &AuthError, pkce: bool) -> Response {
    let pairs = [("error", "access_denied".to_owned()), ("error_code", e.code.to_owned()), ("error_description", e.message.clone())];
    found(if pkce { with_query(target, &pairs) } else { with_fragment(target, &pairs) })
}

fn land(target: &str, result: AuthResult<Verified>) -> Response {
    match result {
        Ok(Verified::Session(session, kind)) => found(with_fragment(target, &session_fragment(&session, &[("type", kind.to_owned())]))),
        Ok(Verified::Code(to, code)) => found(with_query(&to, &[("code", code)])),
        Ok(Verified::Message(m)) => found(with_fragment(target, &[("message", m.to_owned())])),
        Err(e) if e.status.is_client_error() => error_redirect(target, &e, false),
        Err(e) => e.into_response(),
    }
}

/// The JSON answer of a verification that did not go through a browser.
fn session_of(v: Verified) -> Result<Value, &'static str> {
    match v {
        Verified::Session(session, _) => Ok(session),
        Verified::Message(m) => Err(m),
        Verified::Code(..) => unreachable!("codes are only issued for links"),
    }
}

/// GET /auth/v1/verify?token=...: without `type`, the contract's confirmation (200
/// JSON); with `type` (the links auth-js flows use) a 302 to redirect_to / SITE_URL
/// with the session in the fragment.
pub async fn verify_get(State(s): State<AppState>, client: ClientInfo, Query(q): Query<VerifyQuery>) -> AuthResult<Response> {
    let token = q.token.clone().unwrap_or_default();
    match q.kind.as_deref() {
        None => {
            let kinds = [TokenType::Confirmation, TokenType::EmailChange, TokenType::EmailChangeCurrent];
            match session_of(verify_and_sign_in(&s, &client, &token, None, &kinds, false).await?) {
                Ok(session) => Ok(json(StatusCode::OK, json!({"message": "Email confirmed", "user": session["user"]}))),
                Err(m) => Ok(json(StatusCode::OK, json!({"message": m, "msg": m}))),
            }
        }
        Some(t) => {
            let kinds = TokenType::from_verify_type(t).ok_or_else(|| AuthError::invalid_body(format!("unknown verification type {t:?}")))?;
            let target = redirect_target(&s.config, q.redirect_to.as_deref());
            Ok(land(&target, verify_and_sign_in(&s, &client, &token, None, kinds, true).await))
        }
    }
}

/// GET /auth/v1/magiclink/verify?token=... → 302 to SITE_URL#access_token=...
pub async fn magiclink_verify(State(s): State<AppState>, client: ClientInfo, Query(q): Query<VerifyQuery>) -> AuthResult<Response> {
    let token = q.token.clone().unwrap_or_default();
    let target = redirect_target(&s.config, q.redirect_to.as_deref());
    Ok(land(&target, verify_and_sign_in(&s, &client, &token, None, &[TokenType::MagicLink], true).await))
}

#[derive(Deserialize)]
struct VerifyBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    token: Option<String>,
    token_hash: Option<String>,
    email: Option<String>,
}

/// POST /auth/v1/verify {type, token_hash} or {type, email, token} → 200 session.
pub async fn verify_post(State(s): State<AppState>, client: ClientInfo, body: Bytes) -> AuthResult<Response> {
    let p: VerifyBody = parse_body(&body)?;
    let t = p.kind.as_deref().unwrap_or("");
    let kinds = TokenType::from_verify_type(t).ok_or_else(|| AuthError::invalid_body(format!("unknown verification type {t:?}")))?;
    let (token, code_user) = match (p.token_hash, p.email, p.token) {
        (Some(h), _, _) => (h, None),
        (None, Some(email), Some(code)) => {
            let email = validate::email(&email)?;
            let Some(user) = user_by_email(&s, &email).await? else {
                return Err(AuthError::otp_invalid());
            };
            (code, Some(user))
        }
        _ => return Err(AuthError::invalid_body("token_hash, or email and token, are required")),
    };
    match session_of(verify_and_sign_in(&s, &client, &token, code_user, kinds, false).await?) {
        Ok(session) => Ok(json(StatusCode::OK, session)),
        // GoTrue's body for the first of the two e-mail change confirmations.
        Err(m) => Ok(json(StatusCode::OK, json!({"msg": m, "code": 200}))),
    }
}

/// Sends the sign-up confirmation for a new account (REQUIRE_EMAIL_VERIFICATION).
pub async fn send_confirmation(s: &AppState, user: Uuid, email: &str, redirect_to: Option<&str>, challenge: Option<&pkce::Challenge>) -> AuthResult<()> {
    // Under PKCE the link always lands in the app (SITE_URL by default) with ?code=.
    let target = redirect_to.map(|r| redirect_target(&s.config, Some(r))).or_else(|| challenge.map(|_| s.config.site_url.clone()));
    let flow = match (challenge, &target) {
        (Some(c), Some(t)) => Some((c, t.as_str())),
        _ => None,
    };
    if let Some(t) = issue_for(s, user, TokenType::Confirmation, "", flow).await? {
        let url = match &target {
            // With a redirect the link lands in the app, signed in (auth-js flow).
            Some(r) => url_with(&s.config.api_external_url, "/verify", &[("token", &t.token), ("type", "signup"), ("redirect_to", r)]),
            None => url_with(&s.config.api_external_url, "/verify", &[("token", &t.token)]),
        };
        send(s, Kind::Confirmation, email, &url, &t.token, None).await;
    }
    Ok(())
}
