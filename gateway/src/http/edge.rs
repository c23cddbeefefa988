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

/// Wraps the whole application (panics already caught inside it).
pub fn layer(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(edge))
}

async fn edge(mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let id = match req.headers().get(&X_REQUEST_ID) {
        Some(v) => v.clone(),
        None => {
            let v = trace::new_id();
            req.headers_mut().insert(X_REQUEST_ID, v.clone());
            v
        }
    };
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
