//! /storage/v1: buckets and objects (contract: Storage; storage-js shapes beside it).
//!
//! Flow: caller (key / JWT) → path check (`paths`, before any IO) → the object row as
//! the caller's role (RLS decides) → content through `backend`.

pub mod backend;
pub mod buckets;
pub mod headers;
pub mod objects;
pub mod paths;
pub mod signed;
pub mod stage;
pub mod transfer;
pub mod tus;
pub mod upload;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};

use crate::AppState;

/// Every /storage/v1 route.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/bucket", post(buckets::create).get(buckets::list))
        .route("/bucket/{id}", get(buckets::get).put(buckets::update).delete(buckets::delete))
        .route("/bucket/{id}/empty", post(buckets::empty))
        .route("/object/list/{bucket}", get(objects::list_get).post(objects::list_post))
        .route("/object/move", post(transfer::move_object))
        .route("/object/copy", post(transfer::copy_object))
        .route("/object/public/{bucket}/{*path}", get(objects::download_public))
        .route("/object/sign/{bucket}/{*path}", post(signed::sign).get(signed::get_signed))
        .route("/object/{bucket}", delete(objects::remove_many))
        .route("/object/{bucket}/{*path}", post(upload::upload).put(upload::update).get(objects::download).delete(objects::delete))
        .merge(tus::routes())
}

/// A storage error: the contract's `{"error"}` plus storage-js's `statusCode` and
/// `message`.
#[derive(Debug)]
pub struct StorageError(pub StatusCode, pub String);

impl StorageError {
    /// 400.
    pub fn bad(m: impl Into<String>) -> Self {
        StorageError(StatusCode::BAD_REQUEST, m.into())
    }
    /// 404.
    pub fn not_found(m: impl Into<String>) -> Self {
        StorageError(StatusCode::NOT_FOUND, m.into())
    }
}

impl IntoResponse for StorageError {
    fn into_response(self) -> Response {
        let body = crate::error::Dialect::Storage.body(self.0, "", &self.1, serde_json::Value::Null, serde_json::Value::Null);
        let mut res = (self.0, Json(body)).into_response();
        if self.0 == StatusCode::REQUEST_TIMEOUT {
            // The rest of a body that timed out is not waited for.
            res.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
        }
        res
    }
}

impl From<crate::http::body::BodyError> for StorageError {
    fn from(e: crate::http::body::BodyError) -> Self {
        match e {
            crate::http::body::BodyError::Read(_) => StorageError::bad("upload interrupted"),
            e => StorageError(e.status(), e.to_string()),
        }
    }
}

impl StorageError {
    /// A database failure; `anon` decides 401 vs 403 for a permission error (RLS
    /// refusals), as REST maps 42501.
    pub fn from_db(e: impl Into<crate::db::DbError>, anon: bool) -> Self {
        let e = e.into();
        let status = e.status(anon);
        if status.is_server_error() {
            tracing::error!(error = %e, "storage database error");
        }
        StorageError(status, e.message())
    }
}

impl From<crate::db::DbError> for StorageError {
    fn from(e: crate::db::DbError) -> Self {
        Self::from_db(e, false)
    }
}

impl From<tokio_postgres::Error> for StorageError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::from_db(e, false)
    }
}

impl From<crate::http::caller::CallerError> for StorageError {
    fn from(e: crate::http::caller::CallerError) -> Self {
        StorageError(StatusCode::UNAUTHORIZED, e.to_string())
    }
}

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> Self {
        tracing::error!(error = %e, "storage IO error");
        StorageError(StatusCode::INTERNAL_SERVER_ERROR, "storage error".into())
    }
}

/// Handler result.
pub type StorageResult<T> = Result<T, StorageError>;

/// Largest JSON request body of the storage API (bucket settings, move / copy, sign,
/// list, bulk remove).
pub const MAX_JSON_BODY: u64 = 1 << 20;

/// A small (JSON) request body, read under BODY_IDLE_TIMEOUT / BODY_MIN_RATE and
/// [`MAX_JSON_BODY`] before the handler takes a connection; errors in the storage shape.
pub struct JsonBody(pub axum::body::Bytes);

impl axum::extract::FromRequest<AppState> for JsonBody {
    type Rejection = StorageError;

    async fn from_request(req: axum::extract::Request, s: &AppState) -> Result<Self, Self::Rejection> {
        let limits = crate::http::body::BodyLimits::from_config(&s.config);
        if crate::http::body::declared_length(req.headers()).is_some_and(|n| n > MAX_JSON_BODY) {
            return Err(crate::http::body::BodyError::TooLarge(MAX_JSON_BODY).into());
        }
        Ok(JsonBody(crate::http::body::to_bytes(req.into_body(), limits, MAX_JSON_BODY).await?))
    }
}
