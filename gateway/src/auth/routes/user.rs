//! GET /user and PUT|PATCH /user: the signed-in user's own account.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::json;
use super::session::user_of;
use crate::auth::error::{parse_body, AuthError, AuthResult};
use crate::auth::store::{self, UserChanges};
use crate::auth::{passwords, validate};
use crate::http::caller::Caller;
use crate::AppState;

/// GET /auth/v1/user: the user object; 403 session_not_found once the token's
/// session has ended (auth-js then signs the user out).
pub async fn get_user(State(s): State<AppState>, caller: Caller) -> AuthResult<Response> {
    let id = user_of(&caller)?;
    let mut conn = s.pool.get().await?;
    let tx = store::begin(&mut conn).await?;
    check_session(&tx, &caller).await?;
    let user = store::found(store::user_json(&tx, id).await?)?;
    tx.commit().await?;
    Ok(json(StatusCode::OK, user))
}

#[derive(Deserialize)]
struct UpdateParams {
    email: Option<String>,
    password: Option<String>,
    data: Option<Value>,
}

/// PUT|PATCH /auth/v1/user: change email, password or user_metadata (merged).
pub async fn update_user(State(s): State<AppState>, caller: Caller, body: Bytes) -> AuthResult<Response> {
    let id = user_of(&caller)?;
    let p: UpdateParams = parse_body(&body)?;
    let email = p.email.as_deref().filter(|e| !e.is_empty()).map(validate::email).transpose()?;
    let meta = validate::metadata(p.data.as_ref())?;
    let hash = passwords::checked_hash(p.password).await?;
    let mut conn = s.pool.get().await?;
    let tx = store::begin(&mut conn).await?;
    check_session(&tx, &caller).await?;
    store::found(store::user_json(&tx, id).await?)?;
    // With verification on, a new address only takes effect once confirmed from it.
    let (apply_email, confirm_email) = match email.as_deref() {
        Some(e) if s.config.require_email_verification => (None, Some(e.to_owned())),
        other => (other, None),
    };
    if let Some(e) = &confirm_email {
        if store::find_by_email(&tx, e).await?.is_some_and(|(other, _, _)| other != id) {
            return Err(AuthError::new(StatusCode::CONFLICT, "email_exists", "email already registered"));
        }
    }
    let changes = UserChanges { email: apply_email, password_hash: hash.as_deref(), user_meta: meta, app_meta: None };
    if !store::update_user(&tx, id, &changes).await? {
        return Err(AuthError::new(StatusCode::CONFLICT, "email_exists", "email already registered"));
    }
    let what: Vec<&str> = [("email", email.is_some()), ("password", hash.is_some()), ("data", meta.is_some())]
        .into_iter()
        .filter_map(|(k, on)| on.then_some(k))
        .collect();
    store::audit(&tx, "user_modified", Some(id), json!({"fields": what}), None).await?;
    let mut user = store::found(store::user_json(&tx, id).await?)?;
    tx.commit().await?;
    if let Some(new_email) = confirm_email {
        crate::auth::routes::email::send_email_change(&s, id, &new_email).await?;
        user["new_email"] = json!(new_email);
    }
    Ok(json(StatusCode::OK, user))
}

async fn check_session(tx: &deadpool_postgres::Transaction<'_>, caller: &Caller) -> AuthResult<()> {
    if let Some(sid) = caller.session_id() {
        let sid: Uuid = sid.parse().map_err(|_| AuthError::new(StatusCode::UNAUTHORIZED, "bad_jwt", "invalid JWT: bad session_id"))?;
        if !store::session_exists(tx, sid).await? {
            return Err(AuthError::new(StatusCode::FORBIDDEN, "session_not_found", "session not found"));
        }
    }
    Ok(())
}
