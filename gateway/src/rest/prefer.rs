//! The `Prefer` and `Accept` headers and the schema profile headers.

use axum::http::{HeaderMap, Method, StatusCode};

use super::error::RestError;

/// `Prefer: return=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Return {
    /// Empty body (default).
    #[default]
    Minimal,
    /// The rows.
    Representation,
    /// Empty body, Location header.
    HeadersOnly,
}

/// Parsed `Prefer`.
#[derive(Debug, Clone, Default)]
pub struct Prefer {
    /// return=.
    pub ret: Return,
    /// count= (exact, planned, estimated).
    pub count: Option<String>,
    /// resolution=merge-duplicates / ignore-duplicates.
    pub resolution: Option<String>,
    /// tx=rollback.
    pub rollback: bool,
    /// missing=default.
    pub missing_default: bool,
}

/// Reads every `Prefer` header (values may be joined by `,` or `, `).
pub fn prefer(headers: &HeaderMap) -> Prefer {
    let mut p = Prefer::default();
    for v in headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()) {
        for item in v.split(',').map(str::trim) {
            match item.split_once('=') {
                Some(("return", "representation")) => p.ret = Return::Representation,
                Some(("return", "headers-only")) => p.ret = Return::HeadersOnly,
                Some(("return", "minimal")) => p.ret = Return::Minimal,
                Some(("count", c @ ("exact" | "planned" | "estimated"))) => p.count = Some(c.to_owned()),
                Some(("resolution", r @ ("merge-duplicates" | "ignore-duplicates"))) => p.resolution = Some(r.to_owned()),
                Some(("tx", "rollback")) => p.rollback = true,
                Some(("missing", "default")) => p.missing_default = true,
                _ => {}
            }
        }
    }
    p
}

/// What the client accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// JSON array (default).
    Json,
    /// `application/vnd.pgrst.object+json`: exactly one row as an object.
    Object,
}

/// Reads `Accept`; unknown media types → 406 PGRST107.
pub fn accept(headers: &HeaderMap) -> Result<Accept, RestError> {
    let Some(v) = headers.get("accept").and_then(|v| v.to_str().ok()) else { return Ok(Accept::Json) };
    for media in v.split(',').map(|m| m.split(';').next().unwrap_or("").trim()) {
        match media {
            "application/vnd.pgrst.object+json" | "application/vnd.pgrst.object" => return Ok(Accept::Object),
            "application/json" | "*/*" | "application/*" | "" => return Ok(Accept::Json),
            _ => {}
        }
    }
    Err(RestError::new(StatusCode::NOT_ACCEPTABLE, "PGRST107", format!("None of these media types are available: {v}"), None, None))
}

/// The schema of the request: Accept-Profile (reads) or Content-Profile (writes),
/// falling back to the other header, then the first exposed schema.
pub fn schema<'a>(headers: &HeaderMap, method: &Method, exposed: &'a [String]) -> Result<&'a str, RestError> {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok()).map(str::trim);
    let wanted = if matches!(*method, Method::GET | Method::HEAD) {
        get("accept-profile")
    } else {
        get("content-profile").or_else(|| get("accept-profile"))
    };
    match wanted {
        None => exposed.first().map(String::as_str).ok_or_else(|| RestError::bad("PGRST106", "No schema is exposed")),
        Some(w) => exposed.iter().find(|s| s.as_str() == w).map(String::as_str).ok_or_else(|| {
            RestError::new(
                StatusCode::NOT_ACCEPTABLE,
                "PGRST106",
                format!("The schema must be one of the following: {}", exposed.join(", ")),
                None,
                None,
            )
        }),
    }
}
