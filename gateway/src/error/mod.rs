//! The gateway's error vocabulary: the code catalogue ([`code`]), the one rendering of
//! an error body in each product's dialect ([`Dialect`]), the dialects' error types
//! ([`postgrest::RestError`], [`gotrue::AuthError`], storage's `StorageError`) and
//! [`ApiError`] for the contract's plain shape.
//!
//! Bodies keep the contract's `{"error": "<message>"}` and add `message` and `code`
//! beside it, because the Supabase clients read those (shared/docs/supabase-compat.md).
//! Internal causes are logged, never returned.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

pub mod code;
pub mod gotrue;
pub mod postgrest;

use code::generic;

/// The body shape of each product (the contract's `error` key is in all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The contract's plain shape: `{error, message, code}`.
    Plain,
    /// PostgREST's `{code, message, details, hint}` plus `error` (REST, webhooks, dev tools).
    PostgRest,
    /// GoTrue's `{msg, code, error_code}` plus `error` and `message` (auth).
    GoTrue,
    /// storage-api's `{statusCode, message}` plus `error` (storage).
    Storage,
    /// The Rowsel proxy's envelope (seed 003, /proxy):
    /// `{status:"error", message, error:{code, hint, retryable}}`.
    Rowsel,
    /// Poge's `{error, details, code}` (seed 000, /poge/api).
    Poge,
    /// `{success: false, error, message, code}`: the database configurations (seed 001)
    /// and the agent's REST side (seed 002).
    Success,
    /// JSON-RPC 2.0 `{jsonrpc, id: null, error: {code, message, data: {code}}}` (/mcp).
    JsonRpc,
}

impl Dialect {
    /// The dialect of the product serving `path`.
    pub fn for_path(path: &str) -> Self {
        if path.starts_with("/rest/v1") {
            Dialect::PostgRest
        } else if path.starts_with("/auth/v1") {
            Dialect::GoTrue
        } else if path.starts_with("/storage/v1") {
            Dialect::Storage
        } else if path == "/proxy" || path.starts_with("/proxy/") {
            Dialect::Rowsel
        } else if path.starts_with("/poge/api") {
            Dialect::Poge
        } else if ["/api/database-configs", "/api/db/", "/api/databases", "/api/user/", "/api/chat/", "/api/conversations", "/api/llm/", "/api/tokens"]
            .iter()
            .any(|p| path.starts_with(p))
        {
            Dialect::Success
        } else if path == "/mcp" || path.starts_with("/mcp/") {
            Dialect::JsonRpc
        } else {
            Dialect::Plain
        }
    }

    /// The code a layer that knows only the status answers with in this dialect.
    pub fn code_for_status(self, status: StatusCode) -> &'static str {
        match (self, status) {
            (Dialect::PostgRest, StatusCode::BAD_REQUEST) => code::pgrst::QUERY_PARSE.code,
            (Dialect::PostgRest, StatusCode::METHOD_NOT_ALLOWED) => code::pgrst::UNSUPPORTED_METHOD.code,
            (Dialect::PostgRest, StatusCode::NOT_FOUND) => code::pgrst::INVALID_PATH.code,
            (Dialect::Rowsel | Dialect::Poge | Dialect::Success | Dialect::JsonRpc, _) => code::workbench::for_status(status),
            _ => generic::for_status(status),
        }
    }

    /// The one rendering of an error body. `details` and `hint` are PostgREST's
    /// (`Null` elsewhere); `with_error_key` is false only for REST_ERROR_FORMAT=postgrest.
    pub fn body(self, status: StatusCode, code: &str, message: &str, details: Value, hint: Value) -> Value {
        match self {
            Dialect::Plain => json!({ "error": message, "message": message, "code": code }),
            Dialect::PostgRest => {
                let mut body = json!({ "code": code, "message": message, "details": details, "hint": hint });
                if !postgrest::POSTGREST_BODIES.load(std::sync::atomic::Ordering::Relaxed) {
                    body["error"] = Value::String(message.to_owned());
                }
                body
            }
            Dialect::GoTrue => json!({ "error": message, "msg": message, "message": message, "code": code, "error_code": code }),
            Dialect::Storage => json!({ "error": message, "message": message, "statusCode": status.as_u16().to_string() }),
            Dialect::Rowsel => {
                let retryable = code::workbench::retryable(status);
                let mut error = json!({ "code": code, "hint": hint, "retryable": retryable });
                if !details.is_null() {
                    error["detail"] = details;
                }
                json!({ "status": "error", "message": message, "error": error })
            }
            Dialect::Poge => json!({ "error": message, "details": if details.is_null() { Value::String(message.to_owned()) } else { details }, "code": code }),
            Dialect::Success => json!({ "success": false, "error": message, "message": message, "code": code }),
            Dialect::JsonRpc => {
                let rpc = match status.as_u16() {
                    401 | 403 => -32001,
                    s if s >= 500 => -32603,
                    _ => -32600,
                };
                json!({ "jsonrpc": "2.0", "id": null, "error": { "code": rpc, "message": message, "data": { "code": code } } })
            }
        }
    }
}

/// Every error a handler can return.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No such route or resource.
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
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
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, generic::NOT_FOUND),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, generic::for_status(StatusCode::FORBIDDEN)),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, generic::BAD_REQUEST),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, generic::DATABASE_UNAVAILABLE),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, generic::INTERNAL),
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
        (status, Json(Dialect::Plain.body(status, code, &msg, Value::Null, Value::Null))).into_response()
    }
}
