//! API tokens for unattended agents (seed 002): created by an admin (the service key)
//! at `/api/tokens`, shown once, kept as their SHA-256 in the extension's
//! `agent.api_tokens`, optionally bound to one database and to a user whose claims
//! they carry. A presented `pgsa_…` token is looked up in one round trip
//! (`agent.api_token(hash)`, a definer function) and becomes a [`Caller`] with the
//! token's role and claims: its statements run as that role under RLS like any user's.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use bytes::Bytes;
use pgstack_shared::Role;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::fail;
use crate::http::caller::{Caller, KeyKind};
use crate::AppState;

/// What every API token starts with (so the gateway knows to look it up).
pub const PREFIX: &str = "pgsa_";
/// Longest token looked up (the real ones are 48 characters).
const MAX_LEN: usize = 128;

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Whether `token` has the shape of an API token.
pub fn is_api_token(token: &str) -> bool {
    token.starts_with(PREFIX)
}

/// The caller an API token stands for; `Ok(None)` for an unknown, revoked or
/// expired token.
pub async fn caller(s: &AppState, token: &str) -> Result<Option<Caller>, String> {
    if token.len() > MAX_LEN || !token[PREFIX.len()..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Ok(None);
    }
    let c = s.pool.get().await.map_err(|e| e.to_string())?;
    let row = c.query_opt("SELECT id, role, user_id, database, email FROM agent.api_token($1)", &[&hash(token)]).await.map_err(|e| e.to_string())?;
    let Some(row) = row else { return Ok(None) };
    let id: uuid::Uuid = row.get(0);
    let role: String = row.get(1);
    let user: Option<uuid::Uuid> = row.get(2);
    let database: Option<String> = row.get(3);
    let email: Option<String> = row.get(4);
    let mut claims = json!({ "role": role, "token_id": id.to_string(), "aud": "authenticated" });
    if let Some(u) = user {
        claims["sub"] = json!(u.to_string());
    }
    if let Some(e) = email {
        claims["email"] = json!(e);
    }
    if let Some(d) = database {
        claims["database"] = json!(d);
    }
    let (r, kind) = if role == "service_role" { (Role::ServiceRole, KeyKind::Service) } else { (Role::Authenticated, KeyKind::User) };
    Ok(Some(Caller { role: r, pg_role: role, claims: crate::http::caller::Claims::new(claims), kind, token: token.to_owned() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    #[serde(default)]
    database: Option<String>,
    #[serde(default)]
    user_id: Option<uuid::Uuid>,
    #[serde(default)]
    role: Option<String>,
    /// Days until it expires (none: it does not).
    #[serde(default)]
    expires_in_days: Option<u32>,
}

/// The service key itself: not a service_role API token (a bound, expiring token
/// must not mint an unbound, lasting one).
fn admin_only(caller: &Caller) -> Option<Response> {
    (caller.kind != KeyKind::Service || is_api_token(&caller.token)).then(|| fail(StatusCode::FORBIDDEN, "only the service key manages API tokens"))
}

fn store_err(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "agent token store");
    fail(StatusCode::SERVICE_UNAVAILABLE, "the token store is unavailable; retry shortly")
}

/// Runs `sql` as service_role in its own transaction.
async fn as_service(s: &AppState, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Result<Vec<tokio_postgres::Row>, Response> {
    let mut c = s.pool.get().await.map_err(store_err)?;
    let tx = c.transaction().await.map_err(store_err)?;
    tx.batch_execute("SET LOCAL ROLE service_role").await.map_err(store_err)?;
    let rows = tx.query(sql, params).await.map_err(|e| match e.as_db_error() {
        Some(d) if d.code().code().starts_with("23") => fail(StatusCode::BAD_REQUEST, d.message()),
        _ => store_err(e),
    })?;
    tx.commit().await.map_err(store_err)?;
    Ok(rows)
}

const COLUMNS: &str = "id::text, name, role, user_id::text, database, to_json(expires_at) #>> '{}', to_json(created_at) #>> '{}', to_json(last_used_at) #>> '{}'";

fn token_json(r: &tokio_postgres::Row) -> Value {
    let ts = |i: usize| r.get::<_, Option<String>>(i);
    json!({
        "id": r.get::<_, String>(0), "name": r.get::<_, String>(1), "role": r.get::<_, String>(2),
        "user_id": r.get::<_, Option<String>>(3), "database": r.get::<_, Option<String>>(4),
        "expires_at": ts(5), "created_at": ts(6), "last_used_at": ts(7),
    })
}

/// `POST /api/tokens` (service key): `{name, database?, user_id?, role?,
/// expires_in_days?}` → 201 with the token, shown this once.
pub async fn create(State(s): State<AppState>, Extension(caller): Extension<Caller>, body: Bytes) -> Response {
    if let Some(r) = admin_only(&caller) {
        return r;
    }
    let b: NewToken = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return fail(StatusCode::BAD_REQUEST, format!("invalid request: {e}")),
    };
    let name = b.name.trim();
    if name.is_empty() || name.len() > 200 {
        return fail(StatusCode::BAD_REQUEST, "name is required (1 to 200 characters)");
    }
    let role = b.role.unwrap_or_else(|| "authenticated".into());
    if !matches!(role.as_str(), "authenticated" | "service_role") {
        return fail(StatusCode::BAD_REQUEST, "role must be authenticated or service_role");
    }
    // Bound by key (`default` or the configuration's id), never by a name.
    let database = match &b.database {
        None => None,
        Some(d) => match super::databases::key_of(&s, d).await {
            Ok(Some(k)) => Some(k),
            Ok(None) => return fail(StatusCode::NOT_FOUND, "Database not found"),
            Err(e) => return store_err(e),
        },
    };
    if let Some(days) = b.expires_in_days {
        if !(1..=3650).contains(&days) {
            return fail(StatusCode::BAD_REQUEST, "expires_in_days must be 1 to 3650");
        }
    }
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    let token = format!("{PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw));
    let days = b.expires_in_days.map(f64::from);
    let sql = format!(
        "INSERT INTO agent.api_tokens (name, token_hash, role, user_id, database, expires_at) \
         SELECT $1, $2, $3, $4, $5, now() + make_interval(days => $6::float8::int) \
         WHERE $4::uuid IS NULL OR EXISTS (SELECT FROM auth.users WHERE id = $4) RETURNING {COLUMNS}"
    );
    let rows = match as_service(&s, &sql, &[&name, &hash(&token), &role, &b.user_id, &database, &days]).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Some(row) = rows.first() else { return fail(StatusCode::NOT_FOUND, "no such user") };
    let mut v = token_json(row);
    v["token"] = json!(token);
    (StatusCode::CREATED, Json(v)).into_response()
}

/// `GET /api/tokens` (service key): every token, without its secret.
pub async fn list(State(s): State<AppState>, Extension(caller): Extension<Caller>) -> Response {
    if let Some(r) = admin_only(&caller) {
        return r;
    }
    match as_service(&s, &format!("SELECT {COLUMNS} FROM agent.api_tokens ORDER BY created_at, id"), &[]).await {
        Ok(rows) => Json(json!({ "tokens": rows.iter().map(token_json).collect::<Vec<_>>() })).into_response(),
        Err(r) => r,
    }
}

/// `DELETE /api/tokens/{id}` (service key): revokes at once.
pub async fn revoke(State(s): State<AppState>, Extension(caller): Extension<Caller>, Path(id): Path<String>) -> Response {
    if let Some(r) = admin_only(&caller) {
        return r;
    }
    let Ok(id) = uuid::Uuid::parse_str(&id) else { return fail(StatusCode::NOT_FOUND, "no such token") };
    match as_service(&s, "DELETE FROM agent.api_tokens WHERE id = $1 RETURNING id", &[&id]).await {
        Ok(rows) if rows.is_empty() => fail(StatusCode::NOT_FOUND, "no such token"),
        Ok(_) => Json(json!({ "success": true, "message": "Token revoked" })).into_response(),
        Err(r) => r,
    }
}
