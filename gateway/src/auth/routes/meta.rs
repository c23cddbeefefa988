//! GET /settings and GET /health of the auth service.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::AppState;

/// GET /auth/v1/settings: which sign-in methods are on.
pub async fn settings(State(s): State<AppState>) -> Json<Value> {
    let mut external = json!({
        "email": true,
        "phone": false,
        "anonymous_users": s.config.allow_anonymous_signin,
        "google": false, "github": false, "apple": false, "azure": false, "oidc": false,
    });
    for p in &s.config.oauth_providers {
        external[p.name.as_str()] = json!(true);
    }
    Json(json!({
        "external": external,
        "disable_signup": false,
        "mailer_autoconfirm": !s.config.require_email_verification,
        "phone_autoconfirm": false,
        "sms_provider": "",
        "saml_enabled": false,
    }))
}

/// GET /auth/v1/health.
pub async fn health() -> Json<Value> {
    Json(json!({
        "name": "pgstack-auth",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "pgstack's GoTrue-compatible auth",
    }))
}
