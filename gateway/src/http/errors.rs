//! The last line of the error contract: whatever layer produced an error (axum's
//! extractors, the body limit, method routing, a panicking handler), the client gets
//! the contract's JSON body `{"error": "<message>", ...}` in the dialect of the product
//! it called — never a plain-text or empty 4xx/5xx, never a dropped connection.
//!
//! Handlers that pass a foreign response through unchanged (an edge function's own
//! answer) mark it with [`Passthrough`].

use std::any::Any;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Response, StatusCode};
use serde_json::Value;

use crate::error::code::generic;
use crate::error::Dialect;

/// Response extension: this error response is someone else's answer (an edge
/// function's), to be sent as it is.
#[derive(Debug, Clone, Copy)]
pub struct Passthrough;

/// Longest plain-text error body read to become the JSON message.
const MAX_PLAIN_BODY: usize = 4096;

/// `res` as the client of `path` receives it: a 4xx/5xx that is not JSON (and not
/// [`Passthrough`]) becomes the contract's JSON body with the same status (applied to
/// every response by [`super::edge`]; `head`: a HEAD request, whose answer has no body).
pub async fn as_json(path: &str, head: bool, res: Response<Body>) -> Response<Body> {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) || res.extensions().get::<Passthrough>().is_some() {
        return res;
    }
    let is_json = res.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
    if is_json || head {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, MAX_PLAIN_BODY).await.map(|b| String::from_utf8_lossy(&b).trim().to_owned()).unwrap_or_default();
    let message = if text.is_empty() || text.len() > 512 { reason(status) } else { text };
    let body = render(path, status, &message);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    Response::from_parts(parts, Body::from(body.to_string()))
}

/// The URI the client asked for. A layer inside a nested router sees only the
/// router's suffix (`/batch` for `/rest/v1/batch`); the dialect depends on the whole.
pub fn original_uri(req: &Request) -> axum::http::Uri {
    req.extensions().get::<axum::extract::OriginalUri>().map(|o| o.0.clone()).unwrap_or_else(|| req.uri().clone())
}

/// Fallback for unknown routes: a JSON 404 in the dialect of the path's product
/// (PostgREST's PGRST125 under /rest/v1), never an empty body.
pub async fn not_found(uri: axum::http::Uri) -> Response<Body> {
    let (status, msg) = (StatusCode::NOT_FOUND, format!("no route for {}", uri.path()));
    let mut res = Response::new(Body::from(render(uri.path(), status, &msg).to_string()));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// The JSON body of an error in the dialect of the product under `path`.
pub fn render(path: &str, status: StatusCode, message: &str) -> Value {
    let dialect = Dialect::for_path(path);
    dialect.body(status, dialect.code_for_status(status), message, Value::Null, Value::Null)
}

fn reason(status: StatusCode) -> String {
    status.canonical_reason().unwrap_or("error").to_owned()
}

/// A handler that panicked: a 500 for that request (the panic message goes to the
/// log only), the process and every other request go on.
pub fn panic_response(err: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let detail = err.downcast_ref::<String>().map(String::as_str).or_else(|| err.downcast_ref::<&str>().copied()).unwrap_or("(no message)");
    tracing::error!(panic = %detail, "a request handler panicked");
    let body = Dialect::Plain.body(StatusCode::INTERNAL_SERVER_ERROR, generic::INTERNAL, "internal error", Value::Null, Value::Null);
    let mut res = Response::new(Body::from(body.to_string()));
    *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    fn app() -> Router {
        let routes = Router::new()
            .route("/rest/v1/t", get(|| async { (StatusCode::PAYLOAD_TOO_LARGE, "Failed to buffer the request body") }))
            .route("/storage/v1/x", get(|| async { StatusCode::METHOD_NOT_ALLOWED }))
            .route(
                "/functions/v1/f",
                get(|| async {
                    let mut r = Response::new(Body::from("teapot"));
                    *r.status_mut() = StatusCode::IM_A_TEAPOT;
                    r.extensions_mut().insert(Passthrough);
                    r
                }),
            )
            .route(
                "/boom",
                get(|| async {
                    if std::hint::black_box(true) {
                        panic!("boom");
                    }
                    "never"
                }),
            )
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response));
        crate::http::edge::layer(routes)
    }

    async fn call(path: &str) -> (StatusCode, String) {
        let res = app().oneshot(Request::builder().uri(path).body(Body::empty()).unwrap()).await.unwrap();
        let st = res.status();
        let b = axum::body::to_bytes(res.into_body(), 1 << 16).await.unwrap();
        (st, String::from_utf8_lossy(&b).into_owned())
    }

    #[tokio::test]
    async fn plain_errors_become_json_in_each_dialect() {
        let (st, b) = call("/rest/v1/t").await;
        let v: Value = serde_json::from_str(&b).unwrap();
        assert_eq!((st, v["error"].as_str(), v["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("Failed to buffer the request body"), Some("payload_too_large")));
        let (st, b) = call("/storage/v1/x").await;
        let v: Value = serde_json::from_str(&b).unwrap();
        assert_eq!((st, v["statusCode"].as_str(), v["error"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("405"), Some("Method Not Allowed")));
        let (st, b) = call("/nowhere").await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        assert!(serde_json::from_str::<Value>(&b).unwrap()["error"].is_string());
        assert_eq!(call("/functions/v1/f").await, (StatusCode::IM_A_TEAPOT, "teapot".to_owned()), "a function's own answer passes");
    }

    #[tokio::test]
    async fn a_panic_is_a_500_for_that_request_only() {
        let (st, b) = call("/boom").await;
        assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(serde_json::from_str::<Value>(&b).unwrap()["code"], "internal_error");
        assert_eq!(call("/rest/v1/t").await.0, StatusCode::PAYLOAD_TOO_LARGE, "the service still answers");
    }
}
