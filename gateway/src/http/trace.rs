//! Request ids and one structured log line per request (called by [`super::edge`]).
//!
//! Logged: request id, method, path, status, latency — at info for errors (4xx,
//! 5xx) and requests over a second, at debug for the rest. Never logged: query strings
//! (they may carry `?token=` / `?apikey=`), headers, bodies.
//!
//! Cheap on the hot path: the request's span is at debug level (nothing is formatted
//! unless debug logging is on), the info line carries its own fields, and request ids
//! come from the thread's generator rather than a getrandom syscall per request.

use std::time::Duration;

use axum::http::{HeaderValue, Method};

/// A request slower than this is logged at the default level whatever its status.
const SLOW: Duration = Duration::from_secs(1);

/// A fresh request id: a random (version 4) UUID from the thread's CSPRNG.
pub fn new_id() -> HeaderValue {
    let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    HeaderValue::from_str(id.as_hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer())).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// The span a request runs in (debug level: free unless debug logging is on).
pub fn span(id: &HeaderValue, method: &Method, path: &str) -> tracing::Span {
    let id = id.to_str().unwrap_or("-");
    tracing::debug_span!("request", id = %id, %method, %path)
}

/// The access log line of an answered request.
pub fn log(id: &HeaderValue, method: &Method, path: &str, status: u16, latency: Duration) {
    // At the default level only what an operator acts on: errors and slow requests
    // (PostgREST logs errors only by default). Every request with
    // RUST_LOG=pgstack_gateway=debug. A line per request cost ~25% of REST
    // throughput on 2 cores (docs/benchmarks.md).
    let id = id.to_str().unwrap_or("-");
    let ms = (latency.as_secs_f64() * 1e6).round() / 1e3;
    if status >= 400 || latency >= SLOW {
        tracing::info!(id = %id, %method, %path, status, latency_ms = ms, "response");
    } else {
        tracing::debug!(id = %id, %method, %path, status, latency_ms = ms, "response");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_distinct_v4_uuids() {
        let (a, b) = (new_id(), new_id());
        let a = uuid::Uuid::parse_str(a.to_str().unwrap()).unwrap();
        assert_eq!(a.get_version_num(), 4);
        assert_ne!(a.to_string(), b.to_str().unwrap());
    }
}
