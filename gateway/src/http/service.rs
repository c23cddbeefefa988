//! The one check of service-key-only routes, as a route layer: the auth admin API,
//! the webhook API, the dev tools and the schema-cache refresh mount it instead of
//! each handler checking the key. A missing or invalid credential is a 401, any
//! other key a 403, each in the dialect of the product that was called.
//!
//! Mounted with the configuration as its state:
//! `route_layer(from_fn_with_state(config.clone(), only_service))`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::Config;
use crate::error::code::pgrst;
use crate::error::gotrue::AuthError;
use crate::error::postgrest::RestError;
use crate::error::{ApiError, Dialect};
use crate::http::caller::{Caller, CallerError, KeyKind};
use crate::http::errors::original_uri;

/// Middleware: passes only requests made with the service key.
pub async fn only_service(State(config): State<Arc<Config>>, req: Request, next: Next) -> Response {
    let dialect = Dialect::for_path(original_uri(&req).path());
    match Caller::resolve(req.headers(), None, &config) {
        Ok(Some(c)) if c.kind == KeyKind::Service => next.run(req).await,
        Ok(None) => refused(dialect, Some(CallerError::Missing)),
        Err(e) => refused(dialect, Some(e)),
        Ok(Some(_)) => refused(dialect, None),
    }
}

/// The refusal: `Some(e)` when the credential itself is refused (401), `None` for a
/// valid key that is not the service key (403).
fn refused(dialect: Dialect, credential: Option<CallerError>) -> Response {
    const MESSAGE: &str = "service_role key required";
    match (dialect, credential) {
        (Dialect::PostgRest, Some(e)) => RestError::from(e).into_response(),
        (Dialect::PostgRest, None) => RestError::of(pgrst::INSUFFICIENT_PRIVILEGE, MESSAGE).into_response(),
        (Dialect::GoTrue, Some(e)) => AuthError::from(e).into_response(),
        (Dialect::GoTrue, None) => AuthError::not_admin().into_response(),
        (_, Some(e)) => e.into_response(),
        (_, None) => ApiError::Forbidden(MESSAGE.into()).into_response(),
    }
}
