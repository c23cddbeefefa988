//! Request ids and one structured log line per request.
//!
//! Logged: request id, method, path, status, latency — at info for errors (4xx,
//! 5xx) and requests over a second, at debug for the rest. Never logged: query strings
//! (they may carry `?token=` / `?apikey=`), headers, bodies.
//!
//! Cheap on the hot path: the request's span is at debug level (nothing is formatted
//! unless debug logging is on), the info line carries its own fields, and request ids
//! come from the thread's generator rather than a getrandom syscall per request.

use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tracing::Instrument;

/// A request slower than this is logged at the default level whatever its status.
const SLOW: Duration = Duration::from_secs(1);

/// Random (version 4) UUIDs from the thread's CSPRNG.
#[derive(Clone, Copy, Default)]
struct FastUuid;

impl MakeRequestId for FastUuid {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        HeaderValue::from_str(id.as_hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer())).ok().map(RequestId::new)
    }
}

/// The access log: a debug span around the request, a line when it is answered.
async fn access_log(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let span = tracing::debug_span!("request", id = %id, %method, %path);
    let res = next.run(req).instrument(span).await;
    let latency = start.elapsed();
    // At the default level only what an operator acts on: errors and slow requests
    // (PostgREST logs errors only by default). Every request with
    // RUST_LOG=pgstack_gateway=debug. A line per request cost ~25% of REST
    // throughput on 2 cores (docs/benchmarks.md).
    let (status, ms) = (res.status().as_u16(), (latency.as_secs_f64() * 1e6).round() / 1e3);
    if status >= 400 || latency >= SLOW {
        tracing::info!(id = %id, %method, %path, status, latency_ms = ms, "response");
    } else {
        tracing::debug!(id = %id, %method, %path, status, latency_ms = ms, "response");
    }
    res
}

/// Wraps `router` with request-id and access-log layers.
pub fn layer(router: Router) -> Router {
    // Outermost first: set the id, log with it, copy it onto the response.
    router.layer(PropagateRequestIdLayer::x_request_id()).layer(axum::middleware::from_fn(access_log)).layer(SetRequestIdLayer::x_request_id(FastUuid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_distinct_v4_uuids() {
        let req = axum::http::Request::new(());
        let a = FastUuid.make_request_id(&req).unwrap();
        let b = FastUuid.make_request_id(&req).unwrap();
        let a = uuid::Uuid::parse_str(a.header_value().to_str().unwrap()).unwrap();
        assert_eq!(a.get_version_num(), 4);
        assert_ne!(a.to_string(), b.header_value().to_str().unwrap());
    }
}
