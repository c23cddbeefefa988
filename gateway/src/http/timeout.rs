//! REQUEST_TIMEOUT: a request that has not produced its response in time ends with a
//! 504 in the contract's JSON shape. Dropping the handler drops its database work,
//! which cancels the running statement (see `db::pipeline::Lease` and `db::Guarded`).
//! Applied to the routes whose work is bounded (REST, auth, functions), not to
//! uploads, downloads or WebSockets, whose length is the client's.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// The rest of the request (the handler) under REQUEST_TIMEOUT: a 504 when it takes
/// longer.
async fn within_timeout(s: &AppState, req: Request, next: Next) -> Response {
    let uri = super::errors::original_uri(&req);
    let limit = Duration::from_secs(s.config.request_timeout_secs);
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => {
            tracing::warn!(path = uri.path(), seconds = limit.as_secs(), "request timed out");
            let msg = format!("the request took longer than {} s (REQUEST_TIMEOUT)", limit.as_secs());
            let mut res = (StatusCode::GATEWAY_TIMEOUT, axum::Json(super::errors::render(uri.path(), StatusCode::GATEWAY_TIMEOUT, &msg))).into_response();
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
            res
        }
    }
}

/// Largest body of a REST, auth or functions request (axum's default limit, which
/// the handlers' extractors keep applying).
pub const MAX_BUFFERED_BODY: u64 = 2 * 1024 * 1024;

/// What a refused body may still be read (and thrown away) so that the client,
/// still sending, receives the 413 instead of a connection reset.
const DRAIN_MAX: u64 = 16 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Middleware: the request body is received in full, under BODY_IDLE_TIMEOUT and
/// BODY_MIN_RATE (408) and [`MAX_BUFFERED_BODY`] (413), before the handler runs — so
/// a slow client holds no database connection and no worker while it trickles.
pub async fn buffer_body(State(s): State<AppState>, req: Request, next: Next) -> Response {
    match receive(&s, req).await {
        Ok((req, held)) => {
            let res = next.run(req).await;
            drop(held);
            res
        }
        Err(res) => res,
    }
}

/// Middleware: [`buffer_body`], then REQUEST_TIMEOUT around the handler ([`within_timeout`]) — the
/// two as one layer (a layer costs a boxed future and a service clone per request).
pub async fn bounded(State(s): State<AppState>, req: Request, next: Next) -> Response {
    match receive(&s, req).await {
        Ok((req, held)) => {
            let res = within_timeout(&s, req, next).await;
            drop(held);
            res
        }
        Err(res) => res,
    }
}

/// The request with its body received in full, and the share of [`BODY_BUDGET`] it
/// holds; or the refusal to answer with.
async fn receive(s: &AppState, req: Request) -> Result<(Request, Option<tokio::sync::OwnedSemaphorePermit>), Response> {
    use futures_util::StreamExt;
    // Most requests (GET, HEAD, DELETE) carry no body: nothing to receive, no timers.
    if axum::body::HttpBody::size_hint(req.body()).exact() == Some(0) {
        return Ok((req, None));
    }
    let uri = super::errors::original_uri(&req);
    let path = uri.path();
    let declared = crate::http::body::declared_length(req.headers());
    let (parts, body) = req.into_parts();
    let limits = crate::http::body::BodyLimits::from_config(&s.config);
    if declared.is_some_and(|n| n > MAX_BUFFERED_BODY + DRAIN_MAX) {
        return Err(too_large(path));
    }
    let mut stream = crate::http::body::guard(body, limits);
    // The first chunk is kept as it came (a body in one chunk is not copied); a second
    // one starts a buffer.
    let mut first: Option<bytes::Bytes> = None;
    let mut out = bytes::BytesMut::new();
    let mut received = 0u64;
    // KiB of BODY_BUDGET held for it.
    let mut charged = 0u32;
    // Buffered bodies of all requests together stay within BODY_BUDGET; the share
    // is held until the handler is done with the body.
    let mut held: Option<tokio::sync::OwnedSemaphorePermit> = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(s.config.request_timeout_secs);
    loop {
        // A chunk already received is taken without arming a timer (a small body
        // arrives with its headers).
        let next = match futures_util::FutureExt::now_or_never(stream.next()) {
            Some(next) => next,
            None => match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(next) => next,
                Err(_) => return Err(body_error(path, StatusCode::REQUEST_TIMEOUT, "the request body took longer than REQUEST_TIMEOUT")),
            },
        };
        let Some(chunk) = next else { break };
        match chunk {
            Ok(c) if received + c.len() as u64 <= MAX_BUFFERED_BODY => {
                received += c.len() as u64;
                // Charged by the bytes received so far, not per chunk: a body sent in
                // 1-byte chunks costs what its bytes do (a KiB per chunk let an 87 kB
                // body fill the budget). One permit, grown as the body grows.
                let due = u32::try_from((received * u64::from(EXPANSION)).div_ceil(1024)).unwrap_or(u32::MAX);
                if due > charged {
                    match BODY_BUDGET.clone().try_acquire_many_owned(due - charged) {
                        Ok(p) => {
                            charged = due;
                            match held.as_mut() {
                                Some(h) => h.merge(p),
                                None => held = Some(p),
                            }
                        }
                        Err(_) => {
                            let mut res = body_error(path, StatusCode::SERVICE_UNAVAILABLE, "too many request bodies in flight; retry shortly");
                            res.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
                            return Err(res);
                        }
                    }
                }
                if first.is_none() && out.is_empty() {
                    first = Some(c);
                } else {
                    if let Some(f) = first.take() {
                        out.extend_from_slice(&f);
                    }
                    out.extend_from_slice(&c);
                }
            }
            Ok(_) => {
                // Over the limit: read the rest away (bounded), then answer 413.
                let drain = async {
                    let mut n = 0u64;
                    while let Some(Ok(c)) = stream.next().await {
                        n += c.len() as u64;
                        if n > DRAIN_MAX {
                            break;
                        }
                    }
                };
                let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
                return Err(too_large(path));
            }
            Err(e) => return Err(body_error(path, e.status(), &e.to_string())),
        }
    }
    let body = match first {
        Some(f) => f,
        None => out.freeze(),
    };
    Ok((Request::from_parts(parts, axum::body::Body::from(body)), held))
}

/// Bytes of request bodies buffered by [`buffer_body`] at once, in KiB permits.
const BODY_BUDGET_KIB: usize = 256 * 1024;

/// KiB of [`BODY_BUDGET`] a received KiB holds: while a write runs, its body is held
/// up to three times over (the rows' JSON text, the statement's parameter and the
/// message sent to Postgres), and the budget bounds that, not the bytes received
/// (300 concurrent 1.9 MB bodies took the gateway to ~1 GB when a received KiB held
/// one KiB).
const EXPANSION: u32 = 3;
static BODY_BUDGET: std::sync::LazyLock<std::sync::Arc<tokio::sync::Semaphore>> = std::sync::LazyLock::new(|| std::sync::Arc::new(tokio::sync::Semaphore::new(BODY_BUDGET_KIB)));

/// Holds `bytes` more of the receive budget for what a body expands into (a CSV
/// or form body turned into JSON rows), for as long as the permit lives; None when
/// the budget has no room (the caller answers 503).
pub fn hold_expansion(bytes: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
    // The rows built are held as many times over as a received body ([`EXPANSION`]).
    let kib = u32::try_from(bytes.checked_mul(EXPANSION as usize)?.div_ceil(1024)).ok()?;
    BODY_BUDGET.clone().try_acquire_many_owned(kib).ok()
}

fn body_error(path: &str, status: StatusCode, msg: &str) -> Response {
    let mut res = (status, axum::Json(super::errors::render(path, status, msg))).into_response();
    if status == StatusCode::REQUEST_TIMEOUT {
        res.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    }
    res
}

fn too_large(path: &str) -> Response {
    let msg = format!("the request body is larger than {MAX_BUFFERED_BODY} bytes");
    (StatusCode::PAYLOAD_TOO_LARGE, axum::Json(super::errors::render(path, StatusCode::PAYLOAD_TOO_LARGE, &msg))).into_response()
}
