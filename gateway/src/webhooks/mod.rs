//! Webhooks (contract: Webhooks): registration under /rest/v1/webhooks (service key
//! only) and delivery from the extension's durable outbox (`deliver`).

pub mod deliver;
pub mod retention;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::db::{caller as as_caller, RequestInfo};
use crate::error::code::pgrst;
use crate::error::postgrest::RestError;
use crate::http::caller::Caller;
use crate::AppState;

/// /rest/v1/webhooks routes (mounted before the table routes).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/webhooks", get(list).post(create))
        .route("/webhooks/events", get(events))
        .route("/webhooks/events/retry", axum::routing::post(retry))
        .route("/webhooks/{id}", delete(remove))
}

/// Runs `sql` (returning one jsonb / bool) as the service role.
async fn call(s: &AppState, caller: &Caller, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Result<tokio_postgres::Row, RestError> {
    let info = RequestInfo::new("POST", "/webhooks");
    let mut client = s.pool.get().await?;
    let tx = as_caller::begin(&mut client, &caller.run_as(), &info).await.map_err(|e| RestError::from_db(e, false))?;
    let row = tx.query_one(sql, params).await.map_err(|e| RestError::from_db(e, false))?;
    tx.commit().await.map_err(|e| RestError::from_db(e, false))?;
    Ok(row)
}

#[derive(Deserialize)]
struct CreateParams {
    url: Option<String>,
    events: Option<Vec<String>>,
    table_name: Option<String>,
    secret: Option<String>,
}

/// POST /rest/v1/webhooks → 201 webhook (the secret is never returned).
async fn create(State(s): State<AppState>, caller: Caller, body: Bytes) -> Result<(StatusCode, Json<Value>), RestError> {
    let p: CreateParams = serde_json::from_slice(&body).map_err(|e| RestError::of(pgrst::INVALID_BODY, format!("invalid body: {e}")))?;
    let url = p.url.ok_or_else(|| RestError::of(pgrst::INVALID_BODY, "url is required"))?;
    let checked = s.webhook_policy.check_url(&url).map_err(|e| RestError::of(pgrst::INVALID_BODY, e))?;
    s.webhook_policy.check_name(&checked).await.map_err(|e| RestError::of(pgrst::INVALID_BODY, e))?;
    let events: Vec<String> = p.events.unwrap_or_else(|| vec!["*".into()]).into_iter().map(|e| e.to_ascii_uppercase()).collect();
    if events.is_empty() || events.iter().any(|e| !matches!(e.as_str(), "*" | "INSERT" | "UPDATE" | "DELETE")) {
        return Err(RestError::of(pgrst::INVALID_BODY, "events must be a non-empty list of INSERT, UPDATE, DELETE or *"));
    }
    let table = p.table_name.unwrap_or_else(|| "*".into());
    let secret = p.secret.unwrap_or_default();
    let schema = s.config.db_schemas.first().cloned().unwrap_or_else(|| "public".into());
    let row = call(&s, &caller, "SELECT pgr.webhook_create($1, $2, $3, $4, $5)", &[&url, &events, &table, &secret, &schema]).await.map_err(|e| {
        if e.code == "42P01" {
            RestError::new(pgrst::UNDEFINED_TABLE, e.message, None, Some("table_name must be an existing table, or * for every table"))
        } else {
            e
        }
    })?;
    Ok((StatusCode::CREATED, Json(row.get(0))))
}

/// GET /rest/v1/webhooks.
async fn list(State(s): State<AppState>, caller: Caller) -> Result<Json<Value>, RestError> {
    Ok(Json(call(&s, &caller, "SELECT pgr.webhook_list()", &[]).await?.get(0)))
}

/// DELETE /rest/v1/webhooks/{id} → 200 `{"message": "webhook deleted"}`.
async fn remove(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Json<Value>, RestError> {
    let id: Uuid = id.parse().map_err(|_| RestError::of(pgrst::INVALID_TEXT, "invalid webhook id: must be a UUID"))?;
    let found: bool = call(&s, &caller, "SELECT pgr.webhook_delete($1)", &[&id]).await?.get(0);
    if !found {
        return Err(RestError::new(pgrst::SINGULAR, "webhook not found", None, None).with_status(StatusCode::NOT_FOUND));
    }
    Ok(Json(json!({"message": "webhook deleted"})))
}

#[derive(Deserialize)]
struct RetryBody {
    ids: Option<Vec<i64>>,
}

/// POST /rest/v1/webhooks/events/retry `{"ids": [...]}` (all dead events without ids):
/// dead events are delivered again, with fresh attempts → `{"retried": n}`.
async fn retry(State(s): State<AppState>, caller: Caller, body: Bytes) -> Result<Json<Value>, RestError> {
    let b: RetryBody =
        serde_json::from_slice(if body.is_empty() { b"{}" } else { &body }).map_err(|_| RestError::of(pgrst::INVALID_BODY, "body must be {\"ids\": [...]} or empty"))?;
    let n: i32 = call(&s, &caller, "SELECT pgr.webhook_retry($1)", &[&b.ids]).await?.get(0);
    Ok(Json(json!({"retried": n})))
}

#[derive(Deserialize)]
struct EventsQuery {
    status: Option<String>,
    limit: Option<i32>,
}

/// GET /rest/v1/webhooks/events?status=dead|pending|delivering|delivered: the outbox,
/// so nothing that failed is lost from sight.
async fn events(State(s): State<AppState>, caller: Caller, Query(q): Query<EventsQuery>, _h: HeaderMap) -> Result<Json<Value>, RestError> {
    let status = q.status.unwrap_or_else(|| "dead".into());
    if !matches!(status.as_str(), "dead" | "pending" | "delivering" | "delivered") {
        return Err(RestError::of(pgrst::QUERY_PARSE, "status must be dead, pending, delivering or delivered"));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(call(&s, &caller, "SELECT pgr.webhook_events($1, $2)", &[&status, &limit]).await?.get(0)))
}
