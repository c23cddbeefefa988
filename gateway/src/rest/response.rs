//! Response: statement outcome → HTTP (status, Content-Range, body).

use axum::body::Body;
use axum::http::{header, HeaderValue, Response, StatusCode};

use super::error::RestError;
use super::exec::Outcome;
use super::prefer::Accept;

/// `application/json; charset=utf-8`.
pub const JSON: &str = "application/json; charset=utf-8";

/// `Content-Range` for `count` rows starting at `offset`, with an optional total.
pub fn content_range(offset: i64, count: i64, total: Option<i64>) -> String {
    let total = total.map(|t| t.to_string()).unwrap_or_else(|| "*".into());
    if count == 0 {
        format!("*/{total}")
    } else {
        format!("{}-{}/{total}", offset, offset + count - 1)
    }
}

/// A response with `status`, an optional JSON body and headers.
pub fn build(status: StatusCode, body: Option<String>, content_type: &str, range: Option<String>) -> Response<Body> {
    let mut b = Response::builder().status(status);
    if body.is_some() {
        b = b.header(header::CONTENT_TYPE, content_type);
    }
    if let Some(r) = range {
        b = b.header("content-range", r);
    }
    b.body(body.map(Body::from).unwrap_or_else(Body::empty)).unwrap_or_default()
}

/// The rows of a read or a representation, as array or single object.
pub fn rows(out: &Outcome, accept: Accept) -> Result<(String, &'static str), RestError> {
    match accept {
        Accept::Json => Ok((out.body.clone().unwrap_or_else(|| "[]".into()), JSON)),
        Accept::Object => match &out.object {
            Some(o) if out.count == 1 => Ok((o.clone(), "application/vnd.pgrst.object+json; charset=utf-8")),
            _ => Err(RestError::new(
                StatusCode::NOT_ACCEPTABLE,
                "PGRST116",
                "Cannot coerce the result to a single JSON object",
                Some(format!("The result contains {} rows", out.count)),
                None,
            )),
        },
    }
}

/// `Content-Range` header value for the headers map.
pub fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("*/*"))
}
