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

use crate::AppState;
use error::{AuthError, API_VERSION, API_VERSION_HEADER};

/// Every /auth/v1 route; the contract's rate-limited ones behind per-IP buckets.
pub fn routes(cfg: &crate::config::Config) -> Router<AppState> {
    use crate::http::rate_limit::{enforce, Limiter};
    use axum::middleware::from_fn_with_state;
    use routes::{admin, email, meta, session, signup, user};
    let limited = Router::new()
        .route("/signup", post(signup::signup))
        .route("/token", post(session::token))
        .route("/recover", post(email::recover))
        .route("/magiclink", post(email::magiclink))
        .route("/otp", post(email::magiclink))
        .route("/verify", get(email::verify_get).post(email::verify_post))
        .route_layer(from_fn_with_state(Limiter::new(cfg.auth_rate_limit), enforce));
    let anonymous = Router::new()
        .route("/anonymous", post(signup::anonymous))
        .route_layer(from_fn_with_state(Limiter::new(cfg.anonymous_rate_limit), enforce));
    Router::new()
        .merge(limited)
        .merge(anonymous)
        .route("/logout", post(session::logout))
        .route("/recover/confirm", post(email::recover_confirm))
        .route("/magiclink/verify", get(email::magiclink_verify))
        .route("/user", get(user::get_user).put(user::update_user).patch(user::update_user))
        .route("/admin/users", get(admin::list).post(admin::create))
        .route("/admin/users/{id}", get(admin::get).put(admin::update).delete(admin::delete))
        .route("/authorize", get(oauth::authorize))
        .route("/callback", get(oauth::callback_get).post(oauth::callback_post))
        .route("/settings", get(meta::settings))
        .route("/health", get(meta::health))
        .fallback(|| async { AuthError::new(axum::http::StatusCode::NOT_FOUND, "not_found", "no such auth route") })
        .layer(SetResponseHeaderLayer::if_not_present(
            axum::http::HeaderName::from_static(API_VERSION_HEADER),
            HeaderValue::from_static(API_VERSION),
        ))
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
            user_agent: parts
                .headers
                .get(axum::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(512).collect()),
        })
    }
}
