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
use crate::error::code::auth as code;
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
/// The session and account are checked before any password hashing, and no database
/// connection is held while hashing. A new address is only pending until confirmed
/// from both addresses (see `email_change`): 200 with `new_email` and
/// `email_change_sent_at`, as GoTrue answers.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn update_user(State(s): State<AppState>, caller: Caller, body: Bytes) -> AuthResult<Response> {
    let id = user_of(&caller)?;
    let p: UpdateParams = parse_body(&body)?;
    let email = p.email.as_deref().filter(|e| !e.is_empty()).map(validate::email).transpose()?;
    let meta = validate::metadata(p.data.as_ref())?;
    if let Some(pw) = &p.password {
        passwords::check(pw)?;
    }
    let current: Option<String> = {
        let mut conn = s.pool.get().await?;
        let tx = store::begin(&mut conn).await?;
        check_session(&tx, &caller).await?;
        let row = tx.query_opt("SELECT email FROM auth.users WHERE id = $1 AND deleted_at IS NULL", &[&id]).await?;
        tx.commit().await?;
        store::found(row)?.get(0)
    };
    let hash = match p.password {
        Some(pw) => Some(passwords::hash(pw).await?),
        None => None,
    };
    // The same address again changes nothing.
    let new_email = email.filter(|e| current.as_deref() != Some(e.as_str()));
    let mut conn = s.pool.get().await?;
    let tx = store::begin(&mut conn).await?;
    check_session(&tx, &caller).await?;
    let pending = match &new_email {
        Some(e) => Some(super::email_change::prepare(&s, &tx, id, current.as_deref(), e).await?),
        None => None,
    };
    let changes = UserChanges { email: None, password_hash: hash.as_deref(), user_meta: meta, app_meta: None };
    store::update_user(&tx, id, &changes).await?;
    let what: Vec<&str> = [("email", new_email.is_some()), ("password", hash.is_some()), ("data", meta.is_some())].into_iter().filter_map(|(k, on)| on.then_some(k)).collect();
    store::audit(&tx, "user_modified", Some(id), json!({"fields": what}), None).await?;
    let user = store::found(store::user_json(&tx, id).await?)?;
    tx.commit().await?;
    if let Some(p) = pending {
        super::email_change::send_links(&s, p).await?;
    }
    Ok(json(StatusCode::OK, user))
}

async fn check_session(tx: &deadpool_postgres::Transaction<'_>, caller: &Caller) -> AuthResult<()> {
    if let Some(sid) = caller.session_id() {
        let sid: Uuid = sid.parse().map_err(|_| AuthError::new(StatusCode::UNAUTHORIZED, code::BAD_JWT, "invalid JWT: bad session_id"))?;
        if !store::session_exists(tx, sid).await? {
            return Err(AuthError::new(StatusCode::FORBIDDEN, code::SESSION_NOT_FOUND, "session not found"));
        }
    }
    Ok(())
}
