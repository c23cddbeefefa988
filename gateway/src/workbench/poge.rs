//! Poge's API (seed 000) at `/poge/api`: credentials in every request body (never
//! stored), `{data, executionTime}` answers, `{error, details, code}` errors with
//! node-postgres' codes. Reads are cached (see `cache`); any other statement
//! empties the cache of its database.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::access::Owner;
use super::cache::key_of;
use super::error::{Poge, WbError};
use super::parse_body;
use super::run::{self};
use super::target::{PogeConnection, Target};
use crate::db::classify::{classify, Kind, Refusal};
use crate::error::code::workbench as code;
use crate::AppState;

type Reply = Result<Response, Poge>;

/// The routes under `/poge/api`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/query", post(query))
        .route("/test-connection", post(test_connection))
        .route("/schema", post(schema))
        .route("/stats/pools", get(pool_stats))
        .route("/stats/cache", get(cache_stats))
        .route("/stats/cache/clear", post(cache_clear))
}

fn ok(data: Value, started: Instant) -> Response {
    (StatusCode::OK, Json(json!({ "data": data, "executionTime": started.elapsed().as_millis() as u64 }))).into_response()
}

#[derive(Deserialize)]
struct QueryBody {
    #[serde(flatten)]
    connection: PogeConnection,
    #[serde(alias = "sql")]
    query: String,
    #[serde(default)]
    params: Vec<Value>,
    #[serde(rename = "timeoutMs")]
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
struct ConnectionBody {
    #[serde(flatten)]
    connection: PogeConnection,
    schemas: Option<Vec<String>>,
}

async fn query(State(s): State<AppState>, body: Bytes) -> Reply {
    let started = Instant::now();
    let b: QueryBody = parse_body(&body)?;
    let wb = &s.workbench;
    let lim = run::limits(Some(wb.cfg.max_rows as u64), None, b.timeout_ms, wb.cfg.max_rows, wb.cfg.max_rows, &wb.cfg)?;
    let st = match classify(&b.query).await {
        Ok(st) => st,
        Err(Refusal::Invalid(m)) => return Err(WbError::new(StatusCode::BAD_REQUEST, code::SQL_INVALID, m).into()),
        Err(e) => return Err(WbError::new(StatusCode::BAD_REQUEST, code::SINGLE_STATEMENT_REQUIRED, e.to_string()).hint("Send one statement per request.").into()),
    };
    if matches!(st.kind, Kind::Transaction | Kind::SessionState) {
        return Err(WbError::new(
            StatusCode::BAD_REQUEST,
            code::SINGLE_STATEMENT_REQUIRED,
            format!("{} has no effect across requests: each request runs on any pooled connection", run::command_of(&st.node)),
        )
        .into());
    }
    let t = Target::from_poge(b.connection)?;
    let read = st.kind.is_read();
    let params = Value::Array(b.params.clone());
    let cache_key = key_of(t.key(), &st.text, &params);
    if read {
        if let Some(hit) = wb.cache.get(&cache_key) {
            return Ok(answer(&hit, Some(true), started));
        }
    }
    let mut lease = wb.pools.connect(&t).await?;
    let out = if read { run::read(lease.client(), &st, &b.params, lim, false).await } else { run::write(lease.client(), &st, &b.params, lim).await };
    lease.done();
    if !read {
        wb.cache.invalidate(t.key());
    }
    let out = out?;
    let fields: Vec<Value> = out.columns.iter().map(|c| json!({ "name": c.name, "dataTypeID": c.oid, "dataType": c.data_type, "nullable": c.nullable })).collect();
    let row_count = if read { out.rows.len() as u64 } else { out.affected.unwrap_or(0) };
    #[derive(Serialize)]
    struct Data<'a> {
        rows: &'a [Box<RawValue>],
        fields: Vec<Value>,
        #[serde(rename = "rowCount")]
        row_count: u64,
        command: &'a str,
        truncated: bool,
    }
    let data = Data { rows: &out.rows, fields, row_count, command: &out.command, truncated: out.has_next || out.truncated };
    let data = serde_json::to_string(&data).map_err(|e| WbError::invalid(e.to_string()))?;
    if read {
        wb.cache.put(cache_key, t.key(), Arc::from(data.as_str()));
    }
    Ok(answer(&data, read.then_some(false), started))
}

/// `{data, cached?, executionTime}` around data already rendered.
fn answer(data: &str, cached: Option<bool>, started: Instant) -> Response {
    let cached = cached.map(|c| format!(",\"cached\":{c}")).unwrap_or_default();
    let body = format!("{{\"data\":{data}{cached},\"executionTime\":{}}}", started.elapsed().as_millis());
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn test_connection(State(s): State<AppState>, body: Bytes) -> Reply {
    let started = Instant::now();
    let b: ConnectionBody = parse_body(&body)?;
    let t = Target::from_poge(b.connection)?;
    let mut lease = s.workbench.pools.connect(&t).await?;
    let info = super::schema::server_info(lease.client()).await;
    lease.done();
    let (version, user, database) = info?;
    Ok(ok(json!({ "connected": true, "version": version, "user": user, "database": database, "sslMode": t.ssl.name() }), started))
}

async fn schema(State(s): State<AppState>, body: Bytes) -> Reply {
    let started = Instant::now();
    let b: ConnectionBody = parse_body(&body)?;
    let t = Target::from_poge(b.connection)?;
    let mut lease = s.workbench.pools.connect(&t).await?;
    let tree = super::schema::discover(lease.client(), b.schemas, s.config.workbench.statement_timeout_ms).await;
    lease.done();
    let tree = tree?;
    Ok(ok(tree, started))
}

/// Pool statistics and clearing the cache concern every caller's databases: the
/// service key's.
fn service_only(owner: &Owner) -> Result<(), WbError> {
    if owner.0 == "service" {
        Ok(())
    } else {
        Err(WbError::new(StatusCode::FORBIDDEN, code::FORBIDDEN, "pool statistics and clearing the cache need the service key"))
    }
}

async fn pool_stats(State(s): State<AppState>, Extension(owner): Extension<Owner>) -> Reply {
    service_only(&owner)?;
    let started = Instant::now();
    let pools = s.workbench.pools.stats();
    let totals = json!({
        "pools": pools.len(),
        "total": pools.iter().map(|p| p.total).sum::<usize>(),
        "idle": pools.iter().map(|p| p.idle).sum::<usize>(),
        "waiting": pools.iter().map(|p| p.waiting).sum::<usize>(),
    });
    let config = json!({ "max": s.config.workbench.pool_size, "idleTimeoutMillis": super::pools::IDLE_TIMEOUT.as_millis() as u64, "connectionTimeoutMillis": super::pools::CONNECT_TIMEOUT.as_millis() as u64 });
    Ok(ok(json!({ "pools": pools, "totals": totals, "config": config }), started))
}

async fn cache_stats(State(s): State<AppState>) -> Response {
    ok(json!(s.workbench.cache.stats()), Instant::now())
}

async fn cache_clear(State(s): State<AppState>, Extension(owner): Extension<Owner>) -> Reply {
    service_only(&owner)?;
    let n = s.workbench.cache.clear();
    Ok(ok(json!({ "cleared": n }), Instant::now()))
}
