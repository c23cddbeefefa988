//! OAuth / OpenID Connect sign-in: GET /authorize → provider → GET or POST
//! /callback → the app's redirect_to with the session in the fragment, or `?code=`
//! under PKCE (then POST /token?grant_type=pkce).
//!
//! The `state` sent to the provider is random; only its digest is stored (in
//! `auth.flow_state`, with redirect_to and the app's PKCE challenge), and it is
//! single use. It is bound to the browser that started the flow: /authorize sets an
//! HttpOnly cookie (`pgstack-oauth-<digest prefix>`, 10 minutes, SameSite=Lax, Secure
//! when API_EXTERNAL_URL is https; SameSite=None for form_post providers over https,
//! whose callback is a cross-site POST) holding a second random value, and the stored
//! digest covers both; a callback without that cookie is refused (400
//! `bad_oauth_state`), so a state cannot be handed to someone else's browser (login
//! CSRF). The nonce and the PKCE verifier towards the provider are derived from
//! it (see [`client::derive`]), so nothing secret is kept at rest.

pub mod client;
pub mod link;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::error::{AuthError, AuthResult};
use super::redirect::{self, found, with_query};
use super::routes::email::{error_redirect, session_fragment};
use super::tokens::{self, Method};
use super::{pkce, store, ClientInfo};
use crate::config::oauth::{self as providers, ProviderConfig};
use crate::error::code::auth as code;
use crate::AppState;
use client::FlowSecrets;

/// How long a user may take at the provider.
const FLOW_TTL_SECS: i64 = 600;

/// `?provider=&redirect_to=&scopes=&code_challenge=&code_challenge_method=`.
#[derive(Deserialize)]
pub struct AuthorizeQuery {
    provider: Option<String>,
    redirect_to: Option<String>,
    scopes: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

fn provider<'a>(s: &'a AppState, name: &str) -> AuthResult<&'a ProviderConfig> {
    let name = providers::canonical(name);
    if name.is_empty() {
        return Err(AuthError::invalid_body("Unsupported provider: provider is required"));
    }
    s.config.oauth_providers.iter().find(|p| p.name == name).ok_or_else(|| AuthError::invalid_body(format!("Unsupported provider: {name} is not enabled")))
}

/// The cookie that binds a flow's `state` to the browser.
fn binding_cookie_name(state: &str) -> String {
    format!("pgstack-oauth-{}", &tokens::digest(state)[..16])
}

/// What is stored for a flow: the digest of the state and the browser's value.
fn bound_digest(state: &str, binding: &str) -> String {
    tokens::digest(&format!("{state}.{binding}"))
}

fn binding_cookie(s: &AppState, p: Option<&ProviderConfig>, state: &str, value: &str, max_age: i64) -> HeaderValue {
    let https = s.config.api_external_url.starts_with("https://");
    let cross_site_post = p.is_some_and(|p| matches!(p.protocol, providers::Protocol::Oidc { form_post: true, .. }));
    let same_site = if https && cross_site_post { "None" } else { "Lax" };
    let secure = if https { "; Secure" } else { "" };
    let c = format!("{}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite={same_site}{secure}", binding_cookie_name(state));
    HeaderValue::from_str(&c).expect("cookie of base64url and digits")
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn callback_uri(s: &AppState, p: &ProviderConfig) -> String {
    p.redirect_uri.clone().unwrap_or_else(|| format!("{}/auth/v1/callback", s.config.api_external_url))
}

/// GET /auth/v1/authorize → 302 to the provider.
pub async fn authorize(State(s): State<AppState>, Query(q): Query<AuthorizeQuery>) -> AuthResult<Response> {
    let p = provider(&s, q.provider.as_deref().unwrap_or(""))?;
    let challenge = pkce::parse(q.code_challenge.as_deref(), q.code_challenge_method.as_deref())?;
    let extra: Vec<String> = q.scopes.as_deref().unwrap_or("").split([' ', ',']).filter(|x| !x.is_empty()).map(str::to_owned).collect();
    if extra.iter().any(|x| x.len() > 200 || !x.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')) {
        return Err(AuthError::invalid_body("scopes must be printable ASCII words"));
    }
    let target = redirect::target(&s.config, q.redirect_to.as_deref());
    let state = tokens::opaque();
    let binding = tokens::opaque();
    let secrets = FlowSecrets::for_state(&s.config.jwt_secret, &state);
    let url = client::authorization_url(&s.oauth, p, &callback_uri(&s, p), &secrets, &extra).await?;
    let mut conn = s.pool.get().await?;
    let tx = store::begin(&mut conn).await?;
    pkce::create(&tx, &p.name, Some(&bound_digest(&state, &binding)), &target, challenge.as_ref(), FLOW_TTL_SECS).await?;
    tx.commit().await?;
    let mut res = found(url);
    res.headers_mut().append(header::SET_COOKIE, binding_cookie(&s, Some(p), &state, &binding, FLOW_TTL_SECS));
    Ok(res)
}

/// What a provider sends back (query string, or Apple's form body).
#[derive(Deserialize, Default)]
pub struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    /// Apple, first sign-in only: `{"name":{"firstName","lastName"},"email"}`.
    user: Option<String>,
}

/// GET /auth/v1/callback.
pub async fn callback_get(State(s): State<AppState>, client: ClientInfo, headers: HeaderMap, Query(p): Query<CallbackParams>) -> AuthResult<Response> {
    callback(&s, &client, &headers, p).await
}

/// POST /auth/v1/callback (`response_mode=form_post`, Apple).
pub async fn callback_post(State(s): State<AppState>, client: ClientInfo, headers: HeaderMap, body: Bytes) -> AuthResult<Response> {
    let p = parse_form(&body);
    callback(&s, &client, &headers, p).await
}

fn parse_form(body: &[u8]) -> CallbackParams {
    let mut p = CallbackParams::default();
    for (k, v) in form_urlencoded::parse(body) {
        let v = Some(v.into_owned());
        match &*k {
            "code" => p.code = v,
            "state" => p.state = v,
            "error" => p.error = v,
            "error_description" => p.error_description = v,
            "user" => p.user = v,
            _ => {}
        }
    }
    p
}

async fn callback(s: &AppState, client: &ClientInfo, headers: &HeaderMap, p: CallbackParams) -> AuthResult<Response> {
    let bad_state = || AuthError::new(StatusCode::BAD_REQUEST, code::BAD_OAUTH_STATE, "OAuth state is missing, invalid or expired");
    let state = p.state.filter(|v| !v.is_empty() && v.len() <= 256).ok_or_else(bad_state)?;
    // Without the cookie set by /authorize in this browser, the state is not ours.
    let binding = cookie_value(headers, &binding_cookie_name(&state)).ok_or_else(bad_state)?;
    let flow = {
        let mut conn = s.pool.get().await?;
        let tx = store::begin(&mut conn).await?;
        let flow = pkce::take_by_state(&tx, &bound_digest(&state, &binding)).await?;
        tx.commit().await?;
        flow.ok_or_else(bad_state)?
    };
    let mut res = match finish(s, client, &flow, &state, p.code, p.error, p.error_description, p.user).await {
        Ok(r) => r,
        Err(e) if e.status.is_client_error() || e.status == StatusCode::BAD_GATEWAY => error_redirect(&flow.redirect_to, &e, flow.pkce),
        Err(e) => return Err(e),
    };
    res.headers_mut().append(header::SET_COOKIE, binding_cookie(s, provider(s, &flow.provider).ok(), &state, "", 0));
    Ok(res)
}

#[allow(clippy::too_many_arguments)]
async fn finish(
    s: &AppState,
    client: &ClientInfo,
    flow: &pkce::Flow,
    state: &str,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    apple_user: Option<String>,
) -> AuthResult<Response> {
    if let Some(err) = error {
        let why = error_description.unwrap_or_else(|| err.clone());
        return Err(AuthError::new(StatusCode::UNAUTHORIZED, code::OAUTH_PROVIDER_ERROR, format!("{err}: {why}")));
    }
    let code = code.filter(|c| !c.is_empty()).ok_or_else(|| AuthError::new(StatusCode::BAD_REQUEST, code::BAD_OAUTH_CALLBACK, "OAuth callback without code"))?;
    let p = provider(s, &flow.provider)?;
    let secrets = FlowSecrets::for_state(&s.config.jwt_secret, state);
    let mut profile = client::exchange(&s.oauth, p, &callback_uri(s, p), &code, &secrets).await?;
    if let Some(name) = apple_user.and_then(|u| serde_json::from_str::<serde_json::Value>(&u).ok()).map(|u| u["name"].clone()) {
        let full = [name["firstName"].as_str(), name["lastName"].as_str()].into_iter().flatten().collect::<Vec<_>>().join(" ");
        if !full.is_empty() {
            profile.data["full_name"] = json!(full);
            profile.data["name"] = json!(full);
        }
    }
    let mut conn = s.pool.get().await?;
    let tx = store::begin(&mut conn).await?;
    let user = link::account_for(&tx, &p.name, &profile).await?;
    store::audit(&tx, "login", Some(user), json!({"provider": p.name}), client.ip.as_deref()).await?;
    if flow.pkce {
        let code = pkce::issue_code(&tx, flow.id, user).await?;
        tx.commit().await?;
        return Ok(found(with_query(&flow.redirect_to, &[("code", code)])));
    }
    pkce::finish(&tx, flow.id).await?;
    let (session, refresh) = store::start_session(&tx, user, client.user_agent.as_deref(), client.ip.as_deref()).await?;
    let user_json = store::found(store::user_json(&tx, user).await?)?;
    tx.commit().await?;
    let body = tokens::session_body(&s.config, user_json, &session.to_string(), &refresh, Method::OAuth)?;
    let mut extra = Vec::new();
    if let Some(t) = profile.provider_token {
        extra.push(("provider_token", t));
    }
    if let Some(t) = profile.provider_refresh_token {
        extra.push(("provider_refresh_token", t));
    }
    Ok(found(redirect::with_fragment(&flow.redirect_to, &session_fragment(&body, &extra))))
}
