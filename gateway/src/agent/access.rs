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
    let from_api_token = api_token.is_some();
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
    // A user's JWT stays valid until it expires; the agent acts for the user, so the
    // user must still exist and not be banned (as Supabase Auth's /user checks). API
    // tokens are checked by their own look-up.
    if caller.kind == KeyKind::User && !from_api_token {
        match user_is_live(&s, &caller).await {
            Ok(true) => {}
            Ok(false) => return refuse(&path, StatusCode::UNAUTHORIZED, "the user of this token no longer exists or is banned"),
            Err(e) => {
                tracing::error!(error = %e, "agent user look-up");
                return refuse(&path, StatusCode::SERVICE_UNAVAILABLE, "the token's user cannot be checked right now; retry shortly");
            }
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// The token's user (its `sub`, when that names a user) exists, is not deleted and
/// not banned. A token whose `sub` is not a user id (a custom JWT) is not looked up.
async fn user_is_live(s: &AppState, caller: &Caller) -> Result<bool, String> {
    let Some(sub) = caller.claims.get("sub").and_then(serde_json::Value::as_str).and_then(|v| uuid::Uuid::parse_str(v).ok()) else { return Ok(true) };
    let mut c = s.pool.get().await.map_err(|e| e.to_string())?;
    // As the auth service reads its users (auth.users is not the API roles').
    let tx = crate::auth::store::begin(&mut c).await.map_err(|e| format!("{e:?}"))?;
    let row = tx.query_opt("SELECT deleted_at IS NULL AND NOT coalesce(banned_until > now(), false) FROM auth.users WHERE id = $1", &[&sub]).await.map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(row.is_some_and(|r| r.get(0)))
}
