//! Dev-only endpoints (contract: Dev-only), mounted only under their conditions:
//! - POST /api/sql: raw SQL as service_role, only with ENABLE_SQL_ENDPOINT=true;
//! - POST /api/demo: mutates the demo table `pgr.demo`, mounted when ENABLE_DEMO_ENDPOINT=true or a SERVICE_ROLE_KEY is configured;
//!   always requires the service role. The table is `pgr.demo`, made by the extension.
//!
//! POST /api/catalog/refresh lives with the REST schema cache.

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio_postgres::SimpleQueryMessage;

use crate::config::Config;
use crate::db::{caller as as_caller, RequestInfo};
use crate::error::code::pgrst;
use crate::error::postgrest::RestError;
use crate::http::caller::Caller;
use crate::AppState;

/// The dev routes that this configuration mounts.
pub fn routes(cfg: &std::sync::Arc<Config>) -> Router<AppState> {
    let mut r = Router::new();
    let mut any = false;
    if cfg.enable_sql_endpoint {
        any = true;
        r = r.route("/api/sql", post(sql));
    }
    if cfg.enable_demo_endpoint || cfg.service_role_key.is_some() {
        any = true;
        r = r.route("/api/demo", post(demo));
    }
    // (axum refuses a route layer on a router without routes)
    if any {
        r = r.route_layer(axum::middleware::from_fn_with_state(cfg.clone(), crate::http::service::only_service));
    }
    r
}

#[derive(Deserialize)]
struct SqlBody {
    query: String,
}

/// Runs statements as service_role (30 s statement timeout); the rows of the last
/// statement that returned rows, as objects of text values.
async fn run(s: &AppState, caller: &Caller, query: &str) -> Result<Vec<Value>, RestError> {
    let info = RequestInfo::new("POST", "/api/sql");
    let mut client = s.pool.get().await?;
    let tx = as_caller::begin(&mut client, &caller.run_as(), &info).await.map_err(|e| RestError::from_db(e, false))?;
    tx.batch_execute("SET LOCAL statement_timeout = '30s'").await.map_err(|e| RestError::from_db(e, false))?;
    let msgs = tx.simple_query(query).await.map_err(|e| RestError::from_db(e, false))?;
    tx.commit().await.map_err(|e| RestError::from_db(e, false))?;
    let mut rows = Vec::new();
    let mut current = Vec::new();
    for m in msgs {
        match m {
            SimpleQueryMessage::Row(r) => {
                let mut o = Map::new();
                for (i, c) in r.columns().iter().enumerate() {
                    o.insert(c.name().to_owned(), r.get(i).map(|v| Value::String(v.to_owned())).unwrap_or(Value::Null));
                }
                current.push(Value::Object(o));
            }
            SimpleQueryMessage::CommandComplete(_) if !current.is_empty() => {
                rows = std::mem::take(&mut current);
            }
            _ => {}
        }
    }
    Ok(rows)
}

/// POST /api/sql `{"query": "..."}` → rows.
async fn sql(State(s): State<AppState>, caller: Caller, body: Bytes) -> Result<Json<Value>, RestError> {
    let b: SqlBody = serde_json::from_slice(&body).map_err(|_| RestError::of(pgrst::INVALID_BODY, "body must be {\"query\": \"...\"}"))?;
    Ok(Json(Value::Array(run(&s, &caller, &b.query).await?)))
}

#[derive(Deserialize)]
struct DemoBody {
    action: Option<String>,
    label: Option<String>,
    value: Option<i64>,
    id: Option<i64>,
}

/// POST /api/demo `{"action": "insert"|"update"|"delete"|"reset", ...}`: changes the
/// demo table, e.g. to watch a live query react.
async fn demo(State(s): State<AppState>, caller: Caller, body: Bytes) -> Result<Json<Value>, RestError> {
    let b: DemoBody = serde_json::from_slice(if body.is_empty() { b"{}" } else { &body }).map_err(|_| RestError::of(pgrst::INVALID_BODY, "invalid body"))?;
    let action = b.action.unwrap_or_else(|| "insert".into());
    let info = RequestInfo::new("POST", "/api/demo");
    let mut client = s.pool.get().await?;
    let tx = as_caller::begin(&mut client, &caller.run_as(), &info).await.map_err(|e| RestError::from_db(e, false))?;
    let db = |e| RestError::from_db(e, false);
    let n = match action.as_str() {
        "insert" => {
            tx.execute("INSERT INTO pgr.demo (label, value) VALUES (coalesce($1, 'item'), coalesce($2, floor(random() * 100)::bigint))", &[&b.label, &b.value]).await.map_err(db)?
        }
        "update" => tx
            .execute(
                "UPDATE pgr.demo SET value = coalesce($2::bigint, value + 1), updated_at = now() WHERE id = coalesce($1::bigint, (SELECT max(id) FROM pgr.demo))",
                &[&b.id, &b.value],
            )
            .await
            .map_err(db)?,
        "delete" => tx.execute("DELETE FROM pgr.demo WHERE id = coalesce($1::bigint, (SELECT min(id) FROM pgr.demo))", &[&b.id]).await.map_err(db)?,
        "reset" => tx.execute("DELETE FROM pgr.demo", &[]).await.map_err(db)?,
        other => return Err(RestError::of(pgrst::QUERY_PARSE, format!("unknown action {other:?}: insert, update, delete or reset"))),
    };
    tx.commit().await.map_err(db)?;
    Ok(Json(json!({"ok": true, "action": action, "rows": n})))
}
