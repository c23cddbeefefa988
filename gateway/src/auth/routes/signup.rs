//! POST /signup (email + password, or anonymous when no email is given, as
//! supabase-js's signInAnonymously does) and POST /anonymous (the contract's route).

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use super::json;
use crate::auth::error::{parse_body, AuthError, AuthResult};
use crate::auth::store::{self, NewUser};
use crate::auth::tokens::{self, Method};
use crate::auth::{passwords, pkce, validate, ClientInfo};
use crate::error::code::auth as code;
use crate::AppState;

#[derive(Deserialize)]
struct SignupParams {
    email: Option<String>,
    phone: Option<String>,
    password: Option<String>,
    data: Option<Value>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

/// POST /auth/v1/signup: 201 with a session; an anonymous session without email.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn signup(State(s): State<AppState>, Query(q): Query<super::email::RedirectQuery>, client: ClientInfo, body: Bytes) -> AuthResult<Response> {
    let p: SignupParams = parse_body(&body)?;
    let meta = validate::metadata(p.data.as_ref())?.cloned().unwrap_or_else(|| json!({}));
    let Some(raw_email) = p.email.as_deref().filter(|e| !e.trim().is_empty()) else {
        if p.phone.as_deref().is_some_and(|v| !v.is_empty()) {
            return Err(AuthError::new(StatusCode::BAD_REQUEST, code::PHONE_PROVIDER_DISABLED, "phone signups are not supported"));
        }
        if p.password.is_some() {
            return Err(AuthError::invalid_body("invalid email address"));
        }
        return anonymous_session(&s, &client, "authenticated", meta).await;
    };
    let email = validate::email(raw_email)?;
    let challenge = pkce::parse(p.code_challenge.as_deref(), p.code_challenge_method.as_deref())?;
    let password = p.password.unwrap_or_default();
    passwords::check(&password)?;
    let hash = passwords::hash(password).await?;

    let mut conn = s.pool.get().await?;
    let tx = store::begin(&mut conn).await?;
    let app_meta = json!({"provider": "email", "providers": ["email"]});
    let new = NewUser {
        email: Some(&email),
        password_hash: Some(&hash),
        role: "authenticated",
        user_meta: &meta,
        app_meta: &app_meta,
        // Without verification the address is taken on trust: confirmed, but "auto"
        // (OAuth sign-ins do not link to it as to a proven address).
        confirmed_by: (!s.config.require_email_verification).then_some("auto"),
        is_anonymous: false,
    };
    let Some(id) = store::create_user(&tx, &new).await? else {
        return Err(AuthError::new(StatusCode::CONFLICT, code::USER_ALREADY_EXISTS, "email already registered"));
    };
    if s.config.require_email_verification {
        // No session until the address is confirmed (contract): 200 with the user.
        store::audit(&tx, "user_confirmation_requested", Some(id), json!({"provider": "email"}), client.ip.as_deref()).await?;
        let mut user = store::found(store::user_json(&tx, id).await?)?;
        tx.commit().await?;
        super::email::send_confirmation(&s, id, &email, q.redirect_to(), challenge.as_ref()).await?;
        user["message"] = json!("Check your email to confirm your account");
        return Ok(json(StatusCode::OK, user));
    }
    let (session, refresh) = store::start_session(&tx, id, client.user_agent.as_deref(), client.ip.as_deref()).await?;
    let user = store::found(store::user_json(&tx, id).await?)?;
    store::audit(&tx, "user_signedup", Some(id), json!({"provider": "email"}), client.ip.as_deref()).await?;
    tx.commit().await?;
    let body = tokens::session_body(&s.config, user, &session.to_string(), &refresh, Method::Password)?;
    Ok(json(StatusCode::CREATED, body))
}

/// POST /auth/v1/anonymous: an anonymous account whose token has role `anon`
/// (contract). 503 unless ALLOW_ANONYMOUS_SIGNIN=true.
pub async fn anonymous(State(s): State<AppState>, client: ClientInfo, body: Bytes) -> AuthResult<Response> {
    let p: SignupParams = parse_body(&body)?;
    let meta = validate::metadata(p.data.as_ref())?.cloned().unwrap_or_else(|| json!({}));
    anonymous_session(&s, &client, "anon", meta).await
}

async fn anonymous_session(s: &AppState, client: &ClientInfo, role: &str, meta: Value) -> AuthResult<Response> {
    if !s.config.allow_anonymous_signin {
        return Err(AuthError::new(StatusCode::SERVICE_UNAVAILABLE, code::ANONYMOUS_PROVIDER_DISABLED, "anonymous sign-ins are disabled (ALLOW_ANONYMOUS_SIGNIN)"));
    }
    let mut conn = s.pool.get().await?;
    let tx = store::begin(&mut conn).await?;
    let app_meta = json!({"provider": "anonymous", "providers": ["anonymous"]});
    let new = NewUser { email: None, password_hash: None, role, user_meta: &meta, app_meta: &app_meta, confirmed_by: None, is_anonymous: true };
    let id = store::create_user(&tx, &new).await?.ok_or_else(|| AuthError::internal(anyhow::anyhow!("anonymous insert conflicted")))?;
    let (session, refresh) = store::start_session(&tx, id, client.user_agent.as_deref(), client.ip.as_deref()).await?;
    let user = store::found(store::user_json(&tx, id).await?)?;
    store::audit(&tx, "user_signedup", Some(id), json!({"provider": "anonymous"}), client.ip.as_deref()).await?;
    tx.commit().await?;
    let body = tokens::session_body(&s.config, user, &session.to_string(), &refresh, Method::Anonymous)?;
    Ok(json(StatusCode::OK, body))
}
