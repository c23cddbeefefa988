//! Response: statement outcome → HTTP (status, Content-Range, body).

use axum::body::Body;
use axum::http::{header, HeaderValue, Response, StatusCode};

use super::error::RestError;
use super::exec::Outcome;
use super::prefer::Accept;
use crate::error::code::pgrst;

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

/// The rows of a read or a representation, as array, single object or CSV (the
/// stripped and CSV forms are rendered by the statement: `plan::render`).
pub fn rows(out: &Outcome, accept: Accept) -> Result<(String, &'static str), RestError> {
    match accept {
        Accept::Json => Ok((out.body.clone().unwrap_or_else(|| "[]".into()), JSON)),
        Accept::JsonStripped => Ok((out.body.clone().unwrap_or_else(|| "[]".into()), "application/vnd.pgrst.array+json;nulls=stripped; charset=utf-8")),
        Accept::Csv => Ok((out.body.clone().unwrap_or_default(), "text/csv; charset=utf-8")),
        Accept::Object | Accept::ObjectStripped => match &out.object {
            Some(o) if out.count == 1 => Ok((
                o.clone(),
                if accept == Accept::Object { "application/vnd.pgrst.object+json; charset=utf-8" } else { "application/vnd.pgrst.object+json;nulls=stripped; charset=utf-8" },
            )),
            _ => Err(RestError::new(pgrst::SINGULAR, "Cannot coerce the result to a single JSON object", Some(format!("The result contains {} rows", out.count)), None)),
        },
    }
}

/// `Content-Range` header value for the headers map.
pub fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("*/*"))
}

/// Applies what the statement set in `response.headers` (a JSON array of one-key
/// objects; headers may repeat, e.g. two Set-Cookie) and `response.status`.
pub fn apply_gucs(res: &mut Response<Body>, out: &Outcome) -> Result<(), RestError> {
    if let Some(h) = out.response_headers.as_deref().filter(|h| !h.is_empty()) {
        let bad =
            || RestError::new(pgrst::INVALID_RESPONSE_HEADERS, "response.headers guc must be a JSON array composed of objects with a single key and a string value", None, None);
        let list: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(h).map_err(|_| bad())?;
        // A header the statement sets replaces the one the gateway made (Location,
        // Content-Type, ...); repeated ones (Set-Cookie) are all kept.
        let mut set = Vec::new();
        for item in list {
            let (Some((k, v)), 1) = (item.iter().next(), item.len()) else { return Err(bad()) };
            let (Ok(name), Some(Ok(value))) = (header::HeaderName::from_bytes(k.as_bytes()), v.as_str().map(HeaderValue::from_str)) else { return Err(bad()) };
            if !set.contains(&name) {
                res.headers_mut().remove(&name);
                set.push(name.clone());
            }
            res.headers_mut().append(name, value);
        }
    }
    if let Some(st) = out.response_status.as_deref().filter(|s| !s.is_empty()) {
        *res.status_mut() = st
            .trim()
            .parse::<u16>()
            .ok()
            .and_then(|n| StatusCode::from_u16(n).ok())
            .ok_or_else(|| RestError::new(pgrst::INVALID_RESPONSE_STATUS, "response.status guc must be a valid status code", None, None))?;
    }
    Ok(())
}

/// PostgREST's `Vary` on every successful answer — the request headers that change
/// a representation — unless the answer already names its own (`response.headers`).
pub fn vary(h: &mut axum::http::HeaderMap) {
    if !h.contains_key(axum::http::header::VARY) {
        h.insert(axum::http::header::VARY, axum::http::HeaderValue::from_static("Accept, Prefer, Range"));
    }
}
