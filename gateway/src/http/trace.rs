//! Request ids and one structured log line per request.
//!
//! Logged: request id, method, path, status, latency — at info for errors (4xx,
//! 5xx) and requests over a second, at debug for the rest. Never logged: query strings
//! (they may carry `?token=` / `?apikey=`), headers, bodies.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

/// A request slower than this is logged at the default level whatever its status.
const SLOW: Duration = Duration::from_secs(1);

/// Wraps `router` with request-id and access-log layers.
pub fn layer(router: Router) -> Router {
    let trace = TraceLayer::new_for_http()
        .make_span_with(|req: &Request<Body>| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path())
        })
        .on_request(())
        .on_response(|res: &Response<Body>, latency: Duration, _span: &Span| {
            // At the default level only what an operator acts on: errors and slow
            // requests (PostgREST logs errors only by default). Every request with
            // RUST_LOG=pgstack_gateway=debug. A line per request cost ~25% of REST
            // throughput on 2 cores (docs/benchmarks.md).
            let (status, ms) = (res.status().as_u16(), (latency.as_secs_f64() * 1e6).round() / 1e3);
            if status >= 400 || latency >= SLOW {
                tracing::info!(status, latency_ms = ms, "response");
            } else {
                tracing::debug!(status, latency_ms = ms, "response");
            }
        })
        .on_failure(());
    // Outermost first: set the id, log with it, copy it onto the response.
    router.layer(PropagateRequestIdLayer::x_request_id()).layer(trace).layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}
