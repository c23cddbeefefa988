//! /rest/v1: PostgREST-compatible tables, views and functions.
//!
//! Stages in request order: `request` (parse) → `plan` (schema cache → SQL, with
//! `sql` binds) → `exec` (the only pool access) → `response`. `routes` wires them.

pub mod batch;
pub mod embed;
pub mod error;
pub mod exec;
pub mod format;
pub mod fuzzy;
pub mod openapi;
pub mod plan;
pub mod prefer;
pub mod request;
pub mod response;
pub mod routes;

use std::sync::Arc;

use crate::db::schema_cache::SchemaCache;
use crate::AppState;
use error::RestError;

pub use routes::routes;

/// POST /api/catalog/refresh (service key): re-reads the schema cache → `{"ok": true}`.
pub async fn catalog_refresh(axum::extract::State(s): axum::extract::State<AppState>) -> Result<axum::Json<serde_json::Value>, RestError> {
    reload_cache(&s).await?;
    Ok(axum::Json(serde_json::json!({ "ok": true })))
}

/// Reloads the schema cache from the database.
pub async fn reload_cache(s: &AppState) -> Result<(), RestError> {
    s.schema_cache.reload(&s.pool, &s.config.db_schemas).await.map_err(|e| RestError::from_db(e, false))
}

/// The cache, loading it first if it never was (e.g. Postgres was down at start).
pub async fn ensure_cache(s: &AppState) -> Result<Arc<SchemaCache>, RestError> {
    s.schema_cache.ensure(&s.pool, &s.config.db_schemas).await.map_err(|e| RestError::from_db(e, false))
}

/// Process-wide REST settings fixed at start-up (read where no state is at hand:
/// error rendering, the transaction set-up).
#[derive(Debug, Default, Clone)]
pub struct RestSettings {
    /// REST_ERROR_FORMAT=postgrest: error bodies without the contract's `error` key.
    pub postgrest_errors: bool,
    /// DB_PRE_REQUEST as a ready statement (`SELECT "schema"."fn"()`).
    pub pre_request_sql: Option<String>,
    /// DB_MAX_ROWS: most rows a read returns (PostgREST's db-max-rows), whatever
    /// `limit` asks. None = no cap.
    pub max_rows: Option<i64>,
    /// RESPONSE_MAX_BYTES: most bytes of rows a statement may answer.
    pub response_max_bytes: usize,
    /// DB_PLAN_ENABLED: the plan media type is offered.
    pub plan_enabled: bool,
}

static SETTINGS: std::sync::OnceLock<RestSettings> = std::sync::OnceLock::new();

/// Fixes the settings from the configuration (first call wins).
pub fn init_settings(cfg: &crate::config::Config) {
    let pre_request_sql = cfg.db_pre_request.as_ref().map(|f| {
        let quoted: Vec<String> = f.split('.').map(|p| format!("\"{p}\"")).collect();
        format!("SELECT {}()", quoted.join("."))
    });
    crate::error::postgrest::POSTGREST_BODIES.store(cfg.rest_error_format_postgrest, std::sync::atomic::Ordering::Relaxed);
    let _ = SETTINGS.set(RestSettings {
        postgrest_errors: cfg.rest_error_format_postgrest,
        pre_request_sql,
        max_rows: cfg.db_max_rows,
        response_max_bytes: cfg.response_max_bytes,
        plan_enabled: cfg.db_plan_enabled,
    });
}

/// The settings (defaults before [`init_settings`]).
pub fn settings() -> &'static RestSettings {
    SETTINGS.get_or_init(RestSettings::default)
}
