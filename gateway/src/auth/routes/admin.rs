//! /admin/users: account administration with the service key (checked by the
//! `http::service::only_service` route layer these routes are mounted behind).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::json;
use crate::auth::error::{parse_body, AuthError, AuthResult};
use crate::auth::store::{self, NewUser, UserChanges};
use crate::auth::{passwords, validate};
use crate::error::code::auth as code;
use crate::AppState;

/// Most users one page can hold.
pub const MAX_PER_PAGE: i64 = 1000;

fn user_id(raw: &str) -> AuthResult<Uuid> {
    raw.parse().map_err(|_| AuthError::new(StatusCode::BAD_REQUEST, code::VALIDATION_FAILED, "invalid user id: must be a UUID"))
}

#[derive(Deserialize)]
pub struct PageQuery {
    page: Option<String>,
    per_page: Option<String>,
}

fn page_number(raw: Option<&str>, default: i64, name: &str) -> AuthResult<i64> {
    match raw.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v.parse::<i64>().ok().filter(|n| *n >= 1).ok_or_else(|| AuthError::invalid_body(format!("{name} must be a positive integer"))),
    }
}

/// GET /auth/v1/admin/users?page=&per_page= → `{"users": [...], "aud"}` plus
/// X-Total-Count (supabase-js needs the object; empty parameters mean defaults).
pub async fn list(State(s): State<AppState>, Query(q): Query<PageQuery>) -> AuthResult<Response> {
    let page = page_number(q.page.as_deref(), 1, "page")?;
    let per_page = page_number(q.per_page.as_deref(), 50, "per_page")?.min(MAX_PER_PAGE);
    let mut conn = s.pool.get().await?;
    let tx = store::begin(&mut conn).await?;
    let (users, total) = store::list_users(&tx, page, per_page).await?;
    tx.commit().await?;
    let mut res = json(StatusCode::OK, json!({ "users": users, "aud": "authenticated" }));
    res.headers_mut().insert("x-total-count", HeaderValue::from(total));
    Ok(res)
}

#[derive(Deserialize)]
struct CreateParams {
    email: Option<String>,
    password: Option<String>,
    role: Option<String>,
    #[serde(default)]
    email_confirm: bool,
    user_metadata: Option<Value>,
    app_metadata: Option<Value>,
}

/// POST /auth/v1/admin/users → 201 user.
pub async fn create(State(s): State<AppState>, body: Bytes) -> AuthResult<Response> {
    let p: CreateParams = parse_body(&body)?;
    let email = validate::email(p.email.as_deref().unwrap_or(""))?;
    let role = p.role.as_deref().unwrap_or("authenticated");
    if !matches!(role, "anon" | "authenticated" | "service_role") {
        return Err(AuthError::invalid_body("role must be one of anon, authenticated, service_role"));
    }
    let hash = passwords::checked_hash(p.password).await?;
    let user_meta = validate::metadata(p.user_metadata.as_ref())?.cloned().unwrap_or_else(|| json!({}));
    let mut app_meta = json!({"provider": "email", "providers": ["email"]});
    if let Some(Value::Object(extra)) = validate::metadata(p.app_metadata.as_ref())? {
        app_meta.as_object_mut().unwrap().extend(extra.clone());
    }
    let mut conn = s.pool.get().await?;
    let tx = store::begin(&mut conn).await?;
    let new = NewUser {
        email: Some(&email),
        password_hash: hash.as_deref(),
        role,
        user_meta: &user_meta,
        app_meta: &app_meta,
        confirmed_by: p.email_confirm.then_some("admin"),
        is_anonymous: false,
    };
    let Some(id) = store::create_user(&tx, &new).await? else {
        return Err(AuthError::new(StatusCode::CONFLICT, code::EMAIL_EXISTS, "email already registered"));
    };
    store::audit(&tx, "user_invited", Some(id), json!({"by": "service_role"}), None).await?;
    let user = store::found(store::user_json(&tx, id).await?)?;
    tx.commit().await?;
    Ok(json(StatusCode::CREATED, user))
}

/// GET /auth/v1/admin/users/{id}.
pub async fn get(State(s): State<AppState>, Path(id): Path<String>) -> AuthResult<Response> {
    let id = user_id(&id)?;
    let mut conn = s.pool.get().await?;
    let tx = store::begin(&mut conn).await?;
    let user = store::found(store::user_json(&tx, id).await?)?;
    tx.commit().await?;
    Ok(json(StatusCode::OK, user))
}

#[derive(Deserialize)]
struct UpdateParams {
    email: Option<String>,
    password: Option<String>,
    user_metadata: Option<Value>,
    app_metadata: Option<Value>,
}

/// PUT /auth/v1/admin/users/{id}: email, password, metadata (merged).
pub async fn update(State(s): State<AppState>, Path(id): Path<String>, body: Bytes) -> AuthResult<Response> {
    let id = user_id(&id)?;
    let p: UpdateParams = parse_body(&body)?;
    let email = p.email.as_deref().filter(|e| !e.is_empty()).map(validate::email).transpose()?;
    let hash = passwords::checked_hash(p.password).await?;
    let mut conn = s.pool.get().await?;
    let tx = store::begin(&mut conn).await?;
    store::found(store::user_json(&tx, id).await?)?;
    let changes = UserChanges {
        email: email.as_deref(),
        password_hash: hash.as_deref(),
        user_meta: validate::metadata(p.user_metadata.as_ref())?,
        app_meta: validate::metadata(p.app_metadata.as_ref())?,
    };
    if !store::update_user(&tx, id, &changes).await? {
        return Err(AuthError::new(StatusCode::CONFLICT, code::EMAIL_EXISTS, "email already registered"));
    }
    let user = store::found(store::user_json(&tx, id).await?)?;
    tx.commit().await?;
    Ok(json(StatusCode::OK, user))
}

#[derive(Deserialize)]
struct DeleteParams {
    #[serde(default)]
    should_soft_delete: bool,
}

/// DELETE /auth/v1/admin/users/{id} → 200 with the deleted user (supabase-js needs a
/// JSON body), 404 `{"error": "user not found"}`, 400 for a malformed UUID.
pub async fn delete(State(s): State<AppState>, Path(id): Path<String>, body: Bytes) -> AuthResult<Response> {
    let id = user_id(&id)?;
    let p: DeleteParams = parse_body(&body)?;
    let mut conn = s.pool.get().await?;
    let tx = store::begin(&mut conn).await?;
    let user = store::found(store::delete_user(&tx, id, p.should_soft_delete).await?)?;
    store::audit(&tx, "user_deleted", Some(id), json!({"soft": p.should_soft_delete}), None).await?;
    tx.commit().await?;
    Ok(json(StatusCode::OK, user))
}
