//! CORS for browser apps. Origins come from ALLOWED_ORIGINS; with an empty list no
//! cross-origin browser request is allowed (strict default) unless
//! ALLOW_PERMISSIVE_CORS=true. Allowed and exposed headers are the ones the Supabase
//! clients send and read (shared/docs/supabase-compat.md).

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::config::Config;

const ALLOW_HEADERS: &[&str] = &[
    "apikey",
    "authorization",
    "x-client-info",
    "content-type",
    "prefer",
    "accept",
    "accept-profile",
    "content-profile",
    "x-upsert",
    "x-supabase-api-version",
    "cache-control",
    "x-retry-count",
    "range",
    "range-unit",
    "x-request-id",
    "tus-resumable",
    "upload-length",
    "upload-metadata",
    "upload-offset",
    "upload-defer-length",
];
const EXPOSE_HEADERS: &[&str] = &[
    "content-range",
    "x-total-count",
    "link",
    "x-supabase-api-version",
    "x-request-id",
    "location",
    "preference-applied",
    "content-profile",
    "upload-offset",
    "upload-length",
    "tus-resumable",
    "tus-version",
    "tus-extension",
];

/// The CORS layer for `cfg`, or `None` when no origin is allowed.
pub fn layer(cfg: &Config) -> Option<CorsLayer> {
    let origin = if cfg.allow_permissive_cors {
        AllowOrigin::from(Any)
    } else if cfg.allowed_origins.is_empty() {
        return None;
    } else {
        let list: Vec<HeaderValue> = cfg.allowed_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
        AllowOrigin::list(list)
    };
    Some(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods([Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS])
            .allow_headers(ALLOW_HEADERS.iter().map(|h| HeaderName::from_static(h)).collect::<Vec<_>>())
            .expose_headers(EXPOSE_HEADERS.iter().map(|h| HeaderName::from_static(h)).collect::<Vec<_>>())
            .max_age(Duration::from_secs(3600)),
    )
}
