//! Talking to providers: the authorization URL, then code → tokens → profile.
//! OpenID Connect through the `openidconnect` crate (discovery, JWKS, id_token
//! signature / audience / nonce / expiry checks); GitHub through `oauth2` plus its
//! REST API. Both legs use PKCE (S256) towards the provider as well.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use base64::Engine;
use hmac::{Hmac, Mac};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreJsonWebKeySet, CoreProviderMetadata};
use openidconnect::{
    AuthType, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope,
};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::Mutex;

use crate::auth::error::{AuthError, AuthResult};
use crate::config::oauth::{Protocol, ProviderConfig};
use crate::config::Secret;
use crate::error::code::auth as code;

/// How long discovery documents and keys are reused.
const METADATA_TTL: Duration = Duration::from_secs(600);

/// Shared by all flows: one HTTP client (no redirects followed, as the OAuth specs
/// require) and the cached provider metadata.
pub struct OAuthRuntime {
    http: reqwest::Client,
    metadata: Mutex<HashMap<String, (Instant, Arc<CoreProviderMetadata>)>>,
}

impl Default for OAuthRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl OAuthRuntime {
    /// A runtime with a 10 s timeout per provider request.
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("pgstack/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("TLS backend available");
        OAuthRuntime { http, metadata: Mutex::new(HashMap::new()) }
    }

    async fn metadata(&self, issuer: &str, check_issuer: bool) -> AuthResult<Arc<CoreProviderMetadata>> {
        if let Some((at, m)) = self.metadata.lock().await.get(issuer) {
            if at.elapsed() < METADATA_TTL {
                return Ok(m.clone());
            }
        }
        let url = format!("{issuer}/.well-known/openid-configuration");
        let meta: CoreProviderMetadata = self.get_json(&url).await?;
        if check_issuer && meta.issuer().as_str().trim_end_matches('/') != issuer {
            return Err(upstream(format!("discovery at {url} names issuer {} instead", meta.issuer().as_str())));
        }
        let jwks: CoreJsonWebKeySet = self.get_json(meta.jwks_uri().url().as_str()).await?;
        let meta = Arc::new(meta.set_jwks(jwks));
        self.metadata.lock().await.insert(issuer.to_owned(), (Instant::now(), meta.clone()));
        Ok(meta)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> AuthResult<T> {
        self.get_json_auth(url, None).await
    }

    async fn get_json_auth<T: serde::de::DeserializeOwned>(&self, url: &str, bearer: Option<&str>) -> AuthResult<T> {
        let mut req = self.http.get(url).header("accept", "application/json");
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| upstream(format!("GET {url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(upstream(format!("GET {url}: HTTP {}", resp.status())));
        }
        let body = resp.bytes().await.map_err(|e| upstream(format!("GET {url}: {e}")))?;
        serde_json::from_slice(&body).map_err(|e| upstream(format!("GET {url}: unexpected answer: {e}")))
    }
}

/// A provider could not be reached or answered nonsense.
fn upstream(why: String) -> AuthError {
    tracing::warn!(why = %why, "OAuth provider request failed");
    AuthError::new(StatusCode::BAD_GATEWAY, code::OAUTH_PROVIDER_ERROR, "the OAuth provider could not be reached or gave an unexpected answer")
}

/// The per-flow secrets sent to the provider (nonce, PKCE verifier) are derived from
/// the random state with an HMAC keyed by JWT_SECRET, so none is stored.
pub fn derive(secret: &Secret, purpose: &str, state: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes any key length");
    mac.update(purpose.as_bytes());
    mac.update(b":");
    mac.update(state.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// What we learnt about the person at the provider.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Stable id at the provider (`sub`, GitHub's numeric id).
    pub provider_id: String,
    /// Their e-mail, lower-cased.
    pub email: Option<String>,
    /// Whether the provider vouches for the address.
    pub email_verified: bool,
    /// Stored as the identity's `identity_data` and the new user's user_metadata.
    pub data: Value,
    /// The provider's access token (handed to the app in the fragment, never stored).
    pub provider_token: Option<String>,
    /// The provider's refresh token, if it gave one (same).
    pub provider_refresh_token: Option<String>,
}

/// Secrets of one flow towards the provider.
pub struct FlowSecrets {
    /// `state` parameter (random; its digest keys the flow row).
    pub state: String,
    /// OIDC nonce.
    pub nonce: String,
    /// PKCE verifier towards the provider.
    pub verifier: String,
}

impl FlowSecrets {
    /// Secrets for `state`.
    pub fn for_state(secret: &Secret, state: &str) -> Self {
        FlowSecrets { state: state.to_owned(), nonce: derive(secret, "oauth-nonce", state), verifier: derive(secret, "oauth-pkce", state) }
    }
}

/// A client built from discovery: authorization endpoint set, token and userinfo
/// endpoints as the provider declares them.
type DiscoveredClient = CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

fn oidc_client(p: &ProviderConfig, meta: &CoreProviderMetadata, redirect_uri: &str) -> AuthResult<DiscoveredClient> {
    let redirect = RedirectUrl::new(redirect_uri.to_owned()).map_err(|e| upstream(format!("redirect URI {redirect_uri:?}: {e}")))?;
    let body_auth = meta.token_endpoint_auth_methods_supported().is_some_and(|m| !m.iter().any(|a| a.as_ref() == "client_secret_basic"));
    let client = CoreClient::from_provider_metadata(meta.clone(), ClientId::new(p.client_id.clone()), Some(ClientSecret::new(p.secret.expose().to_owned())))
        .set_redirect_uri(redirect)
        .set_auth_type(if body_auth { AuthType::RequestBody } else { AuthType::BasicAuth });
    Ok(client)
}

fn challenge(verifier: &str) -> PkceCodeChallenge {
    PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(verifier.to_owned()))
}

/// The provider's authorization URL for this flow.
pub async fn authorization_url(rt: &OAuthRuntime, p: &ProviderConfig, redirect_uri: &str, s: &FlowSecrets, extra_scopes: &[String]) -> AuthResult<String> {
    let scopes = p.scopes.iter().chain(extra_scopes).filter(|s| s.as_str() != "openid");
    match &p.protocol {
        Protocol::Oidc { issuer, check_issuer, form_post } => {
            let meta = rt.metadata(issuer, *check_issuer).await?;
            let client = oidc_client(p, &meta, redirect_uri)?;
            let (state, nonce) = (s.state.clone(), s.nonce.clone());
            let mut req = client
                .authorize_url(CoreAuthenticationFlow::AuthorizationCode, move || CsrfToken::new(state), move || Nonce::new(nonce))
                .set_pkce_challenge(challenge(&s.verifier));
            for scope in scopes {
                req = req.add_scope(Scope::new(scope.clone()));
            }
            if *form_post {
                req = req.add_extra_param("response_mode", "form_post");
            }
            Ok(req.url().0.to_string())
        }
        Protocol::Github { web, .. } => {
            let mut url = reqwest::Url::parse(&format!("{web}/login/oauth/authorize")).map_err(|e| upstream(e.to_string()))?;
            let scope: Vec<&str> = scopes.map(String::as_str).collect();
            let ch = challenge(&s.verifier);
            url.query_pairs_mut()
                .append_pair("client_id", &p.client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("response_type", "code")
                .append_pair("scope", &scope.join(" "))
                .append_pair("state", &s.state)
                .append_pair("code_challenge", ch.as_str())
                .append_pair("code_challenge_method", "S256");
            Ok(url.to_string())
        }
    }
}

/// Trades the provider's `code` for tokens and reads the profile.
pub async fn exchange(rt: &OAuthRuntime, p: &ProviderConfig, redirect_uri: &str, code: &str, s: &FlowSecrets) -> AuthResult<Profile> {
    match &p.protocol {
        Protocol::Oidc { issuer, check_issuer, .. } => oidc_exchange(rt, p, issuer, *check_issuer, redirect_uri, code, s).await,
        Protocol::Github { web, api } => github_exchange(rt, p, web, api, redirect_uri, code, s).await,
    }
}

fn denied(why: impl std::fmt::Display) -> AuthError {
    tracing::warn!(why = %why, "OAuth exchange refused");
    AuthError::new(StatusCode::UNAUTHORIZED, code::BAD_OAUTH_CALLBACK, "the OAuth provider's answer could not be verified")
}

async fn oidc_exchange(rt: &OAuthRuntime, p: &ProviderConfig, issuer: &str, check_issuer: bool, redirect_uri: &str, code: &str, s: &FlowSecrets) -> AuthResult<Profile> {
    let meta = rt.metadata(issuer, check_issuer).await?;
    let client = oidc_client(p, &meta, redirect_uri)?;
    let tokens = client
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .map_err(|e| upstream(format!("no token endpoint: {e}")))?
        .set_pkce_verifier(PkceCodeVerifier::new(s.verifier.clone()))
        .request_async(&rt.http)
        .await
        .map_err(|e| denied(format!("token request: {e}")))?;
    let id_token = tokens.extra_fields().id_token().ok_or_else(|| denied("no id_token in the token response"))?;
    let verifier = client.id_token_verifier().require_issuer_match(check_issuer);
    let claims = id_token.claims(&verifier, &Nonce::new(s.nonce.clone())).map_err(|e| denied(format!("id_token: {e}")))?;
    let mut email = claims.email().map(|e| e.as_str().to_ascii_lowercase());
    let mut verified = claims.email_verified().unwrap_or(false);
    let mut name = claims.name().and_then(|n| n.get(None)).map(|n| n.as_str().to_owned());
    let picture = claims.picture().and_then(|n| n.get(None)).map(|n| n.as_str().to_owned());
    let username = claims.preferred_username().map(|u| u.as_str().to_owned());
    // Some providers keep the address out of the id_token: ask userinfo.
    if email.is_none() {
        if let Some(ui) = meta.userinfo_endpoint() {
            let info: Value = rt.get_json_auth(ui.url().as_str(), Some(tokens.access_token().secret())).await?;
            if info["sub"].as_str() == Some(claims.subject().as_str()) {
                email = info["email"].as_str().map(str::to_ascii_lowercase);
                verified = info["email_verified"].as_bool().or_else(|| info["email_verified"].as_str().map(|v| v == "true")).unwrap_or(false);
                name = name.or_else(|| info["name"].as_str().map(str::to_owned));
            }
        }
    }
    let sub = claims.subject().as_str().to_owned();
    let data = json!({
        "iss": claims.issuer().as_str(),
        "sub": sub,
        "provider_id": sub,
        "email": email,
        "email_verified": verified,
        "name": name,
        "full_name": name,
        "picture": picture,
        "avatar_url": picture,
        "preferred_username": username,
    });
    Ok(Profile {
        provider_id: sub,
        email,
        email_verified: verified,
        data: strip_nulls(data),
        provider_token: Some(tokens.access_token().secret().clone()),
        provider_refresh_token: tokens.refresh_token().map(|t| t.secret().clone()),
    })
}

async fn github_exchange(rt: &OAuthRuntime, p: &ProviderConfig, web: &str, api: &str, redirect_uri: &str, code: &str, s: &FlowSecrets) -> AuthResult<Profile> {
    use oauth2::basic::BasicClient;
    let bad = |e: String| upstream(e);
    let client = BasicClient::new(oauth2::ClientId::new(p.client_id.clone()))
        .set_client_secret(oauth2::ClientSecret::new(p.secret.expose().to_owned()))
        .set_auth_uri(oauth2::AuthUrl::new(format!("{web}/login/oauth/authorize")).map_err(|e| bad(e.to_string()))?)
        .set_token_uri(oauth2::TokenUrl::new(format!("{web}/login/oauth/access_token")).map_err(|e| bad(e.to_string()))?)
        .set_redirect_uri(oauth2::RedirectUrl::new(redirect_uri.to_owned()).map_err(|e| bad(e.to_string()))?)
        .set_auth_type(oauth2::AuthType::RequestBody);
    let tokens = client
        .exchange_code(oauth2::AuthorizationCode::new(code.to_owned()))
        .set_pkce_verifier(oauth2::PkceCodeVerifier::new(s.verifier.clone()))
        .request_async(&rt.http)
        .await
        .map_err(|e| denied(format!("token request: {e}")))?;
    let token = tokens.access_token().secret();
    let user: Value = rt.get_json_auth(&format!("{api}/user"), Some(token)).await?;
    let id = match &user["id"] {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return Err(denied("GitHub user without id")),
    };
    // The primary address only counts when GitHub has verified it.
    let emails: Value = rt.get_json_auth(&format!("{api}/user/emails"), Some(token)).await.unwrap_or(Value::Null);
    let primary = emails.as_array().and_then(|a| a.iter().find(|e| e["primary"] == json!(true)));
    let email = primary.and_then(|e| e["email"].as_str()).or(user["email"].as_str()).map(str::to_ascii_lowercase);
    let verified = primary.is_some_and(|e| e["verified"] == json!(true));
    let data = json!({
        "iss": api,
        "sub": id,
        "provider_id": id,
        "email": email,
        "email_verified": verified,
        "name": user["name"],
        "full_name": user["name"],
        "user_name": user["login"],
        "preferred_username": user["login"],
        "avatar_url": user["avatar_url"],
    });
    Ok(Profile {
        provider_id: id,
        email,
        email_verified: verified,
        data: strip_nulls(data),
        provider_token: Some(token.clone()),
        provider_refresh_token: tokens.refresh_token().map(|t| t.secret().clone()),
    })
}

fn strip_nulls(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.retain(|_, v| !v.is_null());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_secrets_depend_on_state_and_purpose() {
        let k = Secret::new("k".repeat(32));
        let a = FlowSecrets::for_state(&k, "state-1");
        let b = FlowSecrets::for_state(&k, "state-2");
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.nonce, a.verifier);
        assert_eq!(a.verifier, FlowSecrets::for_state(&k, "state-1").verifier);
        assert_eq!(a.verifier.len(), 43); // a valid PKCE verifier length
    }
}
