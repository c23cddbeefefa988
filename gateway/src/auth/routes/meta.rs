//! GET /settings and GET /health of the auth service.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::AppState;

/// GET /auth/v1/settings: which sign-in methods are on.
pub async fn settings(State(s): State<AppState>) -> Json<Value> {
    Json(json!({
        "external": {
            "email": true,
            "phone": false,
            "anonymous_users": s.config.allow_anonymous_signin,
            "google": false, "github": false, "apple": false, "azure": false,
        },
        "disable_signup": false,
        "mailer_autoconfirm": true,
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
