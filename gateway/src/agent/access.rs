//! Who may use the agent: a signed-in user (its own role and claims), an API token
//! made by an admin (`pgsa_…`, see [`super::tokens`]) or the service key. The anon
//! key is refused: an agent acts for someone.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::http::caller::{Caller, KeyKind};
use crate::http::errors::original_uri;
use crate::AppState;

/// The refusal in the dialect of the path: JSON-RPC on /mcp/v1, the seed's
/// `{success: false, error}` elsewhere.
fn refuse(path: &str, status: StatusCode, message: &str) -> Response {
    let d = crate::error::Dialect::for_path(path);
    let mut res = (status, Json(d.body(status, d.code_for_status(status), message, serde_json::Value::Null, serde_json::Value::Null))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    res
}

/// Middleware in front of every agent route: puts the [`Caller`] in the request.
pub async fn gate(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = original_uri(&req).path().to_owned();
    let api_token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, t)| scheme.eq_ignore_ascii_case("bearer") && super::tokens::is_api_token(t.trim()))
        .map(|(_, t)| t.trim().to_owned());
    let resolved = match api_token {
        Some(t) => match super::tokens::caller(&s, &t).await {
            Ok(Some(c)) => Ok(Some(c)),
            Ok(None) => return refuse(&path, StatusCode::UNAUTHORIZED, "the API token is unknown, revoked or expired"),
            Err(e) => {
                tracing::error!(error = %e, "agent token look-up");
                return refuse(&path, StatusCode::SERVICE_UNAVAILABLE, "API tokens cannot be checked right now; retry shortly");
            }
        },
        None => Caller::resolve(req.headers(), None, &s.config),
    };
    let caller = match resolved {
        Ok(Some(c)) => c,
        Ok(None) => return refuse(&path, StatusCode::UNAUTHORIZED, "Authorization: Bearer <token> is required"),
        Err(e) => return refuse(&path, StatusCode::UNAUTHORIZED, &e.to_string()),
    };
    if caller.kind == KeyKind::Anon {
        return refuse(&path, StatusCode::UNAUTHORIZED, "the anon key cannot use the agent; sign in");
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}
