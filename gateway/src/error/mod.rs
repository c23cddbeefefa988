//! The gateway's one error type and its one HTTP rendering.
//!
//! Bodies keep the contract's `{"error": "<message>"}` and add `message` and `code`
//! beside it, because the Supabase clients read those (shared/docs/supabase-compat.md).
//! Internal causes are logged, never returned.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pgstack_shared::error_code;
use serde_json::json;

pub mod gotrue;
pub mod postgrest;

/// Every error a handler can return.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No such route or resource.
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be understood.
    #[error("{0}")]
    BadRequest(String),
    /// PostgreSQL cannot be reached.
    #[error("database unavailable")]
    Unavailable,
    /// Anything unexpected; the cause goes to the log only.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

/// Handler result.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, error_code::NOT_FOUND),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, error_code::BAD_REQUEST),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, error_code::DATABASE_UNAVAILABLE),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, error_code::INTERNAL),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = ?e, "internal error");
        }
        let (status, code) = self.status_and_code();
        let msg = self.to_string();
        (status, Json(json!({ "error": msg, "message": msg, "code": code }))).into_response()
    }
}
