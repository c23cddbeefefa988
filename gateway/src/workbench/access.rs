//! Who may use the workbench: it reaches arbitrary database servers, so it is off
//! unless WORKBENCH_ENABLED=true, and then only for the service key or a token whose
//! `role` is in WORKBENCH_ROLES or whose WORKBENCH_CLAIM is true. The anon key never
//! passes. Refusals are in the dialect of the API that was called.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error::WbError;
use crate::config::workbench::WorkbenchConfig;
use crate::error::code::workbench as code;
use crate::error::Dialect;
use crate::http::caller::{Caller, KeyKind};
use crate::http::errors::original_uri;
use crate::AppState;

/// The caller, as the workbench knows it (sessions belong to it).
#[derive(Debug, Clone)]
pub struct Owner(pub String);

impl Owner {
    /// The owner a caller is: `service` for the service key, else its role and user id.
    pub fn of(caller: &Caller) -> Owner {
        Owner(match caller.kind {
            KeyKind::Service => "service".to_owned(),
            _ => format!("{}:{}", caller.pg_role, caller.user_id().unwrap_or("")),
        })
    }
}

/// Whether `caller` is granted the workbench.
pub fn granted(cfg: &WorkbenchConfig, caller: &Caller) -> bool {
    match caller.kind {
        KeyKind::Service => true,
        KeyKind::Anon => false,
        KeyKind::User => {
            cfg.roles.contains(&caller.pg_role)
                || cfg.claim.as_deref().is_some_and(|path| {
                    let mut v: &Value = &caller.claims;
                    for part in path.split('.') {
                        v = v.get(part).unwrap_or(&Value::Null);
                    }
                    *v == Value::Bool(true)
                })
        }
    }
}

/// Middleware in front of every workbench route.
pub async fn gate(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let dialect = Dialect::for_path(original_uri(&req).path());
    let cfg = &s.config.workbench;
    if !cfg.enabled {
        return WbError::new(StatusCode::NOT_FOUND, code::DISABLED, "the workbench APIs are disabled on this server").hint("Set WORKBENCH_ENABLED=true.").respond(dialect);
    }
    let caller = match Caller::resolve(req.headers(), None, &s.config) {
        Ok(Some(c)) => c,
        Ok(None) => return WbError::new(StatusCode::UNAUTHORIZED, code::UNAUTHORIZED, "an API key or access token is required").respond(dialect),
        Err(e) => return WbError::new(StatusCode::UNAUTHORIZED, code::UNAUTHORIZED, e.to_string()).respond(dialect),
    };
    if !granted(cfg, &caller) {
        return WbError::new(StatusCode::FORBIDDEN, code::FORBIDDEN, "this credential does not grant the workbench")
            .hint("Use the service key, or a token whose role is in WORKBENCH_ROLES.")
            .respond(dialect);
    }
    req.extensions_mut().insert(Owner::of(&caller));
    // Connections, parses and result buffers are bounded by how many requests run at once.
    let permit = match tokio::time::timeout(std::time::Duration::from_secs(10), s.workbench.running.clone().acquire_owned()).await {
        Ok(Ok(p)) => p,
        _ => {
            let mut res = WbError::new(StatusCode::SERVICE_UNAVAILABLE, code::CAPACITY, "the workbench is busy").hint("Retry shortly (WORKBENCH_CONCURRENCY).").respond(dialect);
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
            return res;
        }
    };
    let res = next.run(req).await.into_response();
    drop(permit);
    res
}
