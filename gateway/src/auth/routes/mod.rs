//! One file per group of /auth/v1 endpoints.

pub mod admin;
pub mod email;
pub mod email_change;
pub mod meta;
pub mod session;
pub mod signup;
pub mod user;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

/// A JSON response with a status.
pub fn json(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}
