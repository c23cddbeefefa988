//! What every request passes through once, outermost: its id (`x-request-id`, the
//! client's or a fresh one, on the request and its response), its client's fair
//! share of the database pools (`db::fair`), errors in the contract's JSON shape
//! (`errors::as_json`), and the access log (`trace`). One middleware for the four:
//! each axum middleware layer costs a boxed future and a service clone per request.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderName, Method};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use tracing::Instrument;

use super::{errors, trace};

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id taken from a client.
const MAX_CLIENT_ID: usize = 128;

/// Whether a client's `x-request-id` is kept: 1 to [`MAX_CLIENT_ID`] letters, digits
/// and `-_.:` (UUIDs, ULIDs, trace ids), nothing that could read as more of a log line.
fn usable(id: &[u8]) -> bool {
    (1..=MAX_CLIENT_ID).contains(&id.len()) && id.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
}

/// Wraps the whole application (panics already caught inside it).
pub fn layer(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(edge))
}

async fn edge(mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    // The client's id when it is one (its first, alone from here on: the log, the
    // response and `request.headers` agree); else a fresh one. An id is logged as it
    // is, so it must not carry spaces (fields of its own in the log line) or length.
    let id = match req.headers().get(&X_REQUEST_ID).filter(|v| usable(v.as_bytes())) {
        Some(v) => v.clone(),
        None => trace::new_id(),
    };
    req.headers_mut().insert(X_REQUEST_ID, id.clone());
    let method = req.method().clone();
    let uri = req.uri().clone(); // shares the request's bytes: no copy per request
    let client = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| super::rate_limit::client_key(c.0.ip()));
    let span = trace::span(&id, &method, uri.path());
    let answer = async {
        let res = next.run(req).await;
        errors::as_json(uri.path(), method == Method::HEAD, res).await
    };
    let mut res = crate::db::fair::as_client(client, answer).instrument(span).await;
    if !res.headers().contains_key(&X_REQUEST_ID) {
        res.headers_mut().insert(X_REQUEST_ID, id.clone());
    }
    trace::log(&id, &method, uri.path(), res.status().as_u16(), start.elapsed());
    res
}

#[cfg(test)]
mod tests {
    use super::usable;

    #[test]
    fn only_plain_short_client_ids_are_kept() {
        assert!(usable(b"0b7c3f0e-8a1d-4c2e-9f3a-1b2c3d4e5f60"));
        assert!(usable(b"trace:01HZX_abc.1"));
        assert!(!usable(b""));
        assert!(!usable(b"abc method=GET status=200"));
        assert!(!usable("caf\u{e9}".as_bytes()));
        assert!(!usable(&[b'a'; 129]));
    }
}
