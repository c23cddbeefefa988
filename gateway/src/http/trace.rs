//! Request ids and one structured log line per request.
//!
//! Logged: request id, method, path, status, latency. Never logged: query strings
//! (they may carry `?token=` / `?apikey=`), headers, bodies.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

/// Wraps `router` with request-id and access-log layers.
pub fn layer(router: Router) -> Router {
    let trace = TraceLayer::new_for_http()
        .make_span_with(|req: &Request<Body>| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path())
        })
        .on_request(())
        .on_response(|res: &Response<Body>, latency: Duration, _span: &Span| {
            tracing::info!(status = res.status().as_u16(), latency_ms = (latency.as_secs_f64() * 1e6).round() / 1e3, "response");
        })
        .on_failure(());
    // Outermost first: set the id, log with it, copy it onto the response.
    router.layer(PropagateRequestIdLayer::x_request_id()).layer(trace).layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}
