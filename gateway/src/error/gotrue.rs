//! Auth errors in the contract's shape plus what auth-js / supabase-py read:
//! `{"error", "msg", "message", "code", "error_code"}` with snake_case codes.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::code::auth as code;
use super::Dialect;

/// Header auth-js needs to read `code` from error bodies.
pub const API_VERSION_HEADER: &str = "x-supabase-api-version";
/// Its value.
pub const API_VERSION: &str = "2024-01-01";

/// An auth failure: status, stable code, human message.
#[derive(Debug)]
pub struct AuthError {
    /// HTTP status.
    pub status: StatusCode,
    /// snake_case code (GoTrue's vocabulary).
    pub code: &'static str,
    /// Human-readable message (the contract's text where it has one).
    pub message: String,
    /// Internal cause, logged only.
    pub cause: Option<anyhow::Error>,
    /// Seconds for a `Retry-After` header (429 / 503).
    pub retry_after: Option<u64>,
}

/// Auth handler result.
pub type AuthResult<T> = Result<T, AuthError>;

impl AuthError {
    /// Any status/code/message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AuthError { status, code, message: message.into(), cause: None, retry_after: None }
    }
    /// 429 over_request_rate_limit with `Retry-After`.
    pub fn too_many(message: impl Into<String>, retry_after: u64) -> Self {
        AuthError { retry_after: Some(retry_after.max(1)), ..Self::new(StatusCode::TOO_MANY_REQUESTS, code::OVER_REQUEST_RATE_LIMIT, message) }
    }
    /// The error for a one-time token or code that is wrong, used, expired or spent
    /// by too many wrong tries (the contract's message).
    pub fn otp_invalid() -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::OTP_EXPIRED, "invalid or expired token")
    }
    /// 400 validation_failed.
    pub fn invalid_body(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::VALIDATION_FAILED, message)
    }
    /// 401 invalid_credentials, the contract's message.
    pub fn invalid_credentials() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code::INVALID_CREDENTIALS, "invalid email or password")
    }
    /// 401 for an unknown / expired refresh token.
    pub fn invalid_refresh() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code::REFRESH_TOKEN_NOT_FOUND, "invalid refresh token")
    }
    /// 403 for routes that need the service key.
    pub fn not_admin() -> Self {
        Self::new(StatusCode::FORBIDDEN, code::NOT_ADMIN, "service_role key required")
    }
    /// 404 user_not_found, the contract's message.
    pub fn user_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, code::USER_NOT_FOUND, "user not found")
    }
    /// 500 with the cause logged.
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        AuthError { cause: Some(e.into()), ..Self::new(StatusCode::INTERNAL_SERVER_ERROR, code::UNEXPECTED_FAILURE, "internal error") }
    }
}

impl From<tokio_postgres::Error> for AuthError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.as_db_error().is_none() && (e.is_closed() || e.to_string().contains("connect")) {
            return Self::new(StatusCode::SERVICE_UNAVAILABLE, code::DATABASE_UNAVAILABLE, "database unavailable");
        }
        Self::internal(e)
    }
}

impl From<deadpool_postgres::PoolError> for AuthError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        tracing::warn!(error = %e, "no database connection for auth");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code::DATABASE_UNAVAILABLE, "database unavailable")
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        if let Some(cause) = &self.cause {
            tracing::error!(error = ?cause, "auth internal error");
        }
        let body = Dialect::GoTrue.body(self.status, self.code, &self.message, Value::Null, Value::Null);
        let mut res = (self.status, Json(body)).into_response();
        res.headers_mut().insert(API_VERSION_HEADER, HeaderValue::from_static(API_VERSION));
        if let Some(secs) = self.retry_after {
            res.headers_mut().insert("retry-after", HeaderValue::from(secs));
        }
        res
    }
}

/// Parses a JSON body; an empty body counts as `{}`. Unknown fields are ignored.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> AuthResult<T> {
    let body = if body.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { body };
    serde_json::from_slice(body).map_err(|_| AuthError::invalid_body("invalid request body"))
}
