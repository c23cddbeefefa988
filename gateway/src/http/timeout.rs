//! REQUEST_TIMEOUT: a request that has not produced its response in time ends with a
//! 504 in the contract's JSON shape. Dropping the handler drops its database work,
//! which cancels the running statement (see `pgwire::Lease` and `db::Guarded`).
//! Applied to the routes whose work is bounded (REST, auth, functions), not to
//! uploads, downloads or WebSockets, whose length is the client's.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// Middleware: the whole handler under REQUEST_TIMEOUT.
pub async fn request_timeout(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let limit = Duration::from_secs(s.config.request_timeout_secs);
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => {
            tracing::warn!(%path, seconds = limit.as_secs(), "request timed out");
            let msg = format!("the request took longer than {} s (REQUEST_TIMEOUT)", limit.as_secs());
            let mut res = (StatusCode::GATEWAY_TIMEOUT, axum::Json(super::errors::render(&path, StatusCode::GATEWAY_TIMEOUT, &msg))).into_response();
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
            res
        }
    }
}
