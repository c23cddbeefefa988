//! POST /token (grant_type=password | refresh_token | pkce) and POST /logout.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::json;
use crate::auth::error::{parse_body, AuthError, AuthResult};
use crate::auth::store;
use crate::auth::tokens::{self, Method};
use crate::auth::{passwords, pkce, validate, ClientInfo};
use crate::error::code::auth as code;
use crate::http::caller::Caller;
use crate::AppState;

#[derive(Deserialize)]
pub struct GrantQuery {
    grant_type: Option<String>,
}

#[derive(Deserialize)]
struct PasswordGrant {
    email: Option<String>,
    password: Option<String>,
}

#[derive(Deserialize)]
struct PkceGrant {
    auth_code: Option<String>,
    code_verifier: Option<String>,
}

#[derive(Deserialize)]
struct RefreshGrant {
    refresh_token: Option<String>,
}

/// POST /auth/v1/token?grant_type=...
#[tracing::instrument(level = "debug", skip_all, fields(grant = ?q.grant_type))]
pub async fn token(State(s): State<AppState>, Query(q): Query<GrantQuery>, client: ClientInfo, body: Bytes) -> AuthResult<Response> {
    match q.grant_type.as_deref() {
        Some("password") => password_grant(&s, &client, parse_body(&body)?).await,
        Some("refresh_token") => refresh_grant(&s, parse_body(&body)?).await,
        Some("pkce") => pkce_grant(&s, &client, parse_body(&body)?).await,
        Some(other) => Err(AuthError::new(StatusCode::BAD_REQUEST, code::UNSUPPORTED_GRANT_TYPE, format!("unsupported grant_type {other:?}"))),
        None => Err(AuthError::new(StatusCode::BAD_REQUEST, code::UNSUPPORTED_GRANT_TYPE, "grant_type is required")),
    }
}

/// The account is read in a short transaction, the password verified with no
/// database connection held (verification waits in the hashing line), then the
/// session is opened after checking the account did not change meanwhile.
async fn password_grant(s: &AppState, client: &ClientInfo, p: PasswordGrant) -> AuthResult<Response> {
    let (Some(email), Some(password)) = (p.email, p.password) else {
        return Err(AuthError::invalid_body("email and password are required"));
    };
    // A malformed address cannot match an account: same answer as a wrong password.
    let email = validate::email(&email).unwrap_or_default();
    let found = if email.is_empty() {
        None
    } else {
        let mut conn = s.pool.get().await?;
        let tx = store::begin(&mut conn).await?;
        let found = store::find_account(&tx, &email).await?;
        tx.commit().await?;
        found
    };
    let lane = passwords::sign_in_lane(client.ip.as_deref());
    let Some((id, hash, banned, confirmed)) = found else {
        passwords::verify_in(lane, password, None).await?;
        passwords::note_sign_in(client.ip.as_deref(), false);
        return Err(AuthError::invalid_credentials());
    };
    let ok = passwords::verify_in(lane, password, hash.clone()).await?;
    passwords::note_sign_in(client.ip.as_deref(), ok);
    let mut conn = s.pool.get().await?;
    let tx = store::begin(&mut conn).await?;
    if !ok {
        store::audit(&tx, "login_failed", Some(id), json!({"provider": "email"}), client.ip.as_deref()).await?;
        tx.commit().await?;
        return Err(AuthError::invalid_credentials());
    }
    if banned {
        return Err(AuthError::new(StatusCode::FORBIDDEN, code::USER_BANNED, "user is banned"));
    }
    if !confirmed && s.config.require_email_verification {
        return Err(AuthError::new(StatusCode::BAD_REQUEST, code::EMAIL_NOT_CONFIRMED, "email not confirmed"));
    }
    // The account as it is now: deleted, banned or given another password meanwhile → refused.
    match store::find_account(&tx, &email).await? {
        Some((now_id, now_hash, false, _)) if now_id == id && now_hash == hash => {}
        _ => return Err(AuthError::invalid_credentials()),
    }
    let (session, refresh) = store::start_session(&tx, id, client.user_agent.as_deref(), client.ip.as_deref()).await?;
    let user = store::found(store::user_json(&tx, id).await?)?;
    store::audit(&tx, "login", Some(id), json!({"provider": "email"}), client.ip.as_deref()).await?;
    tx.commit().await?;
    let body = tokens::session_body(&s.config, user, &session.to_string(), &refresh, Method::Password)?;
    Ok(json(StatusCode::OK, body))
}

/// grant_type=pkce: the code from `?code=` plus the app's verifier → a session.
async fn pkce_grant(s: &AppState, client: &ClientInfo, p: PkceGrant) -> AuthResult<Response> {
    let (Some(code), Some(verifier)) = (p.auth_code.filter(|c| !c.is_empty()), p.code_verifier.filter(|c| !c.is_empty())) else {
        return Err(AuthError::invalid_body("invalid request: both auth code and code verifier should be non-empty"));
    };
    pkce::check_verifier(&verifier)?;
    // One statement (`auth.pkce_grant`): the code is spent, the verifier checked and
    // the session started in one round trip and one transaction.
    let refresh = tokens::opaque();
    let conn = s.pool.get().await?;
    let stmt = conn.prepare_cached("SELECT outcome, account, session, provider FROM auth.pkce_grant($1, $2, $3, $4, $5, $6)").await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
        [&tokens::digest(&code), &verifier, &pkce::s256(&verifier), &tokens::digest(&refresh), &client.user_agent, &client.ip];
    let row = conn.query_one(&stmt, &params).await?;
    let (outcome, account, session, provider): (String, Option<Value>, Option<Uuid>, Option<String>) = (row.get(0), row.get(1), row.get(2), row.get(3));
    let (user_json, session, provider) = match (outcome.as_str(), account, session, provider) {
        ("session", Some(a), Some(sid), Some(p)) => (a, sid, p),
        ("session" | "user_not_found", ..) => return Err(AuthError::user_not_found()),
        ("banned", ..) => return Err(AuthError::new(StatusCode::FORBIDDEN, code::USER_BANNED, "user is banned")),
        ("expired", ..) => return Err(AuthError::new(StatusCode::BAD_REQUEST, code::FLOW_STATE_EXPIRED, "authorization code has expired")),
        ("bad_verifier", ..) => return Err(AuthError::new(StatusCode::FORBIDDEN, code::BAD_CODE_VERIFIER, "code challenge does not match previously saved code verifier")),
        _ => return Err(AuthError::new(StatusCode::NOT_FOUND, code::FLOW_STATE_NOT_FOUND, "invalid flow state, no valid flow state found")),
    };
    let method = if provider == "email" { Method::Otp } else { Method::OAuth };
    Ok(json(StatusCode::OK, tokens::session_body(&s.config, user_json, &session.to_string(), &refresh, method)?))
}

/// grant_type=refresh_token: one statement (`auth.refresh_grant`, one round trip
/// and one transaction) rotates the token, or revokes the session of a reused one.
async fn refresh_grant(s: &AppState, p: RefreshGrant) -> AuthResult<Response> {
    let token = p.refresh_token.filter(|t| !t.is_empty()).ok_or_else(AuthError::invalid_refresh)?;
    let next = tokens::opaque();
    let conn = s.pool.get().await?;
    let stmt = conn.prepare_cached("SELECT outcome, account, session FROM auth.refresh_grant($1, $2, $3)").await?;
    let grace = s.config.refresh_reuse_interval_secs as f64;
    let row = conn.query_one(&stmt, &[&tokens::digest(&token), &tokens::digest(&next), &grace]).await?;
    let (outcome, account, session): (String, Option<Value>, Option<Uuid>) = (row.get(0), row.get(1), row.get(2));
    match (outcome.as_str(), account, session) {
        ("rotated", Some(user), Some(session)) => Ok(json(StatusCode::OK, tokens::session_body(&s.config, user, &session.to_string(), &next, Method::Refresh)?)),
        ("rotated", None, _) => Err(AuthError::user_not_found()),
        ("reused" | "exhausted", _, _) => Err(AuthError::new(StatusCode::UNAUTHORIZED, code::REFRESH_TOKEN_ALREADY_USED, "invalid refresh token: already used")),
        _ => Err(AuthError::invalid_refresh()),
    }
}

#[derive(Deserialize)]
pub struct LogoutQuery {
    scope: Option<String>,
}

/// POST /auth/v1/logout?scope=local|global|others → 204.
pub async fn logout(State(s): State<AppState>, Query(q): Query<LogoutQuery>, caller: Caller) -> AuthResult<Response> {
    let scope = q.scope.as_deref().unwrap_or("local");
    if !matches!(scope, "local" | "global" | "others") {
        return Err(AuthError::invalid_body("scope must be local, global or others"));
    }
    let user = user_of(&caller)?;
    let session = caller.session_id().and_then(|v| v.parse::<Uuid>().ok());
    let mut conn = s.pool.get().await?;
    let tx = store::begin(&mut conn).await?;
    store::logout(&tx, user, session, scope).await?;
    store::audit(&tx, "logout", Some(user), json!({"scope": scope}), None).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The user id of a user token; 401 for API keys.
pub fn user_of(caller: &Caller) -> AuthResult<Uuid> {
    caller.user_id().and_then(|v| v.parse().ok()).ok_or_else(|| AuthError::new(StatusCode::UNAUTHORIZED, code::BAD_JWT, "invalid JWT: missing sub claim"))
}
