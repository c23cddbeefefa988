//! /auth/v1: GoTrue-compatible accounts and sessions (auth-js / supabase-py speak it).
//!
//! Flow per request: extract (body, caller) → validate → `store` (SQL in one
//! transaction as pgstack_auth_admin) → `tokens` (JWT, refresh) → JSON.

pub mod error;
pub mod mailer;
pub mod oauth;
pub mod one_time;
pub mod passwords;
pub mod pkce;
pub mod redirect;
pub mod routes;
pub mod store;
pub mod tokens;
pub mod validate;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderValue;
use axum::routing::{get, post};
use axum::Router;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::error::code::auth as code;
use crate::AppState;
use error::{AuthError, API_VERSION, API_VERSION_HEADER};

/// Every /auth/v1 route; the contract's rate-limited ones behind per-IP buckets.
/// Every route that hashes a password for a caller without the service key is in
/// the AUTH_RATE_LIMIT bucket (signup, token, recover/confirm, and PUT /user when it
/// sets a password or e-mail); hashing itself is bounded gateway-wide (see
/// [`passwords`]), which also covers the admin routes.
pub fn routes(cfg: &std::sync::Arc<crate::config::Config>) -> Router<AppState> {
    use crate::http::rate_limit::{enforce, Limiter};
    use axum::middleware::from_fn_with_state;
    use routes::{admin, email, meta, session, signup, user};
    passwords::configure(cfg.password_hash_concurrency, cfg.password_hash_queue_timeout_secs);
    let auth_limiter = Limiter::new(cfg.auth_rate_limit);
    let limited = Router::new()
        .route("/signup", post(signup::signup))
        .route("/token", post(session::token))
        .route("/recover", post(email::recover))
        .route("/recover/confirm", post(email::recover_confirm))
        .route("/magiclink", post(email::magiclink))
        .route("/otp", post(email::magiclink))
        .route("/verify", get(email::verify_get).post(email::verify_post))
        .route_layer(from_fn_with_state(auth_limiter.clone(), enforce));
    let user_routes =
        Router::new().route("/user", get(user::get_user).put(user::update_user).patch(user::update_user)).route_layer(from_fn_with_state(auth_limiter, limit_sensitive_updates));
    let anonymous = Router::new().route("/anonymous", post(signup::anonymous)).route_layer(from_fn_with_state(Limiter::new(cfg.anonymous_rate_limit), enforce));
    let admin = Router::new()
        .route("/admin/users", get(admin::list).post(admin::create))
        .route("/admin/users/{id}", get(admin::get).put(admin::update).delete(admin::delete))
        .route_layer(from_fn_with_state(cfg.clone(), crate::http::service::only_service));
    Router::new()
        .merge(limited)
        .merge(anonymous)
        .merge(user_routes)
        .route("/logout", post(session::logout))
        .route("/magiclink/verify", get(email::magiclink_verify))
        .merge(admin)
        .route("/authorize", get(oauth::authorize))
        .route("/callback", get(oauth::callback_get).post(oauth::callback_post))
        .route("/settings", get(meta::settings))
        .route("/health", get(meta::health))
        .fallback(|| async { AuthError::new(axum::http::StatusCode::NOT_FOUND, code::NOT_FOUND, "no such auth route") })
        .layer(SetResponseHeaderLayer::if_not_present(axum::http::HeaderName::from_static(API_VERSION_HEADER), HeaderValue::from_static(API_VERSION)))
}

/// Largest body `PUT /user` reads (metadata included).
const USER_BODY_LIMIT: usize = 1 << 20;

/// Middleware of `/user`: a PUT / PATCH that sets a password (hashing) or an e-mail
/// (sending mail) counts in the AUTH_RATE_LIMIT bucket; metadata-only updates and GET
/// do not.
async fn limit_sensitive_updates(
    axum::extract::State(limiter): axum::extract::State<crate::http::rate_limit::Limiter>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if req.method() == axum::http::Method::GET {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, USER_BODY_LIMIT).await else {
        return AuthError::new(axum::http::StatusCode::PAYLOAD_TOO_LARGE, code::REQUEST_TOO_LARGE, "request body too large").into_response();
    };
    let sensitive = serde_json::from_slice::<serde_json::Value>(&bytes).map(|v| ["password", "email"].iter().any(|k| v.get(k).is_some_and(|x| !x.is_null()))).unwrap_or(false);
    let req = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
    if sensitive {
        crate::http::rate_limit::enforce(axum::extract::State(limiter), req, next).await
    } else {
        next.run(req).await
    }
}

/// Where a request comes from, recorded on sessions and in the audit log.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// Peer IP address.
    pub ip: Option<String>,
    /// User-Agent header.
    pub user_agent: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientInfo {
            ip: parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()),
            user_agent: parts.headers.get(axum::http::header::USER_AGENT).and_then(|v| v.to_str().ok()).map(|s| s.chars().take(512).collect()),
        })
    }
}
