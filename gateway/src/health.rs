//! GET /health, exactly as the contract says: 200 ok / 503 degraded.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::{db, AppState};

/// 200 `{"status":"ok","pg_connected":true}` when Postgres answers, else
/// 503 `{"status":"degraded","pg_connected":false}`.
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    if db::ping(&state.pool).await {
        (StatusCode::OK, Json(json!({ "status": "ok", "pg_connected": true, "server": "pgstack", "version": env!("CARGO_PKG_VERSION") })))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "degraded", "pg_connected": false, "server": "pgstack", "version": env!("CARGO_PKG_VERSION") })))
    }
}
