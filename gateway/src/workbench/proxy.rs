//! The Rowsel proxy API (seed 003) at `/proxy`: the `{status, message, data}`
//! envelope, one read-only query or one confirmed statement per request, sessions
//! that hold a connection (query / execute / transaction / cancel inside them).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::{Extension, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::access::Owner;
use super::error::{Rowsel, WbError};
use super::run::{self, Limits, Output};
use super::sessions::{set_transaction, Session};
use super::target::{RowselConnection, Target};
use super::{parse_body, Workbench};
use crate::db::classify::{classify, Kind, Statement};
use crate::error::code::workbench as code;
use crate::AppState;

/// Rowsel's page: default 200 rows, at most 500.
const DEFAULT_PAGE: usize = 200;
const MAX_PAGE: usize = 500;

type Reply = Result<Response, Rowsel>;

/// The routes under `/proxy`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/v1/test-connection", post(test_connection))
        .route("/v1/schema", post(schema))
        .route("/v1/query", post(query))
        .route("/v1/execute", post(execute))
        .route("/v1/sessions", post(open_session))
        .route("/v1/sessions/{id}", delete(close_session).get(session_info))
        .route("/v1/sessions/{id}/query", post(session_query))
        .route("/v1/sessions/{id}/execute", post(session_execute))
        .route("/v1/sessions/{id}/transaction", post(session_transaction))
        .route("/v1/sessions/{id}/cancel", post(session_cancel))
}

/// The success envelope. Serialized straight to bytes: rows are PostgreSQL's JSON
/// text and keep every digit (a detour through `Value` would round numerics).
fn ok<T: Serialize>(status: StatusCode, message: &str, data: T) -> Response {
    #[derive(Serialize)]
    struct Envelope<'a, T> {
        status: &'static str,
        message: &'a str,
        data: T,
    }
    super::json_response(status, &Envelope { status: "ok", message, data })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectionBody {
    connection: RowselConnection,
    #[serde(default)]
    schemas: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlBody {
    connection: Option<RowselConnection>,
    /// A saved configuration instead of `connection` (seed 001).
    config_id: Option<String>,
    #[serde(alias = "query")]
    sql: String,
    #[serde(default)]
    params: Vec<Value>,
    page_size: Option<u64>,
    offset: Option<u64>,
    timeout_ms: Option<u64>,
    #[serde(default)]
    confirm: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransactionBody {
    action: String,
}

/// The request's target: its `connection`, or a saved configuration (whose
/// allowed_tables the statement must keep to).
async fn target(s: &AppState, owner: &Owner, b: &mut SqlBody, st: &Statement, lim: &mut Limits) -> Result<Target, WbError> {
    match (b.connection.take(), b.config_id.as_deref()) {
        (Some(c), None) => Target::from_rowsel(c),
        (None, Some(id)) => {
            let (t, allowed) = super::configs::resolve(s, owner, id).await?;
            super::allowed::check_allowed(st, &allowed)?;
            lim.public_only = allowed.is_some();
            Ok(t)
        }
        (Some(_), Some(_)) => Err(WbError::invalid("give connection or config_id, not both")),
        (None, None) => Err(WbError::invalid("connection (or config_id) is required")),
    }
}

async fn health() -> Response {
    ok(StatusCode::OK, "Proxy is healthy.", json!({ "version": env!("CARGO_PKG_VERSION"), "engines": ["postgres"] }))
}

async fn test_connection(State(s): State<AppState>, body: Bytes) -> Reply {
    let b: ConnectionBody = parse_body(&body)?;
    let t = Target::from_rowsel(b.connection)?;
    let started = std::time::Instant::now();
    let mut lease = s.workbench.pools.connect(&t).await?;
    let info = super::schema::server_info(lease.client()).await;
    lease.done();
    let (version, user, database) = info?;
    Ok(ok(
        StatusCode::OK,
        "Connection succeeded.",
        json!({ "connected": true, "server_version": version, "user": user, "database": database, "ssl_mode": t.ssl.name(), "latency_ms": started.elapsed().as_millis() as u64 }),
    ))
}

async fn schema(State(s): State<AppState>, body: Bytes) -> Reply {
    let b: ConnectionBody = parse_body(&body)?;
    let t = Target::from_rowsel(b.connection)?;
    let mut lease = s.workbench.pools.connect(&t).await?;
    let tree = super::schema::discover(lease.client(), b.schemas, s.config.workbench.statement_timeout_ms).await;
    lease.done();
    let tree = tree?;
    Ok(ok(StatusCode::OK, "Schema loaded.", tree))
}

/// Classifies for the query endpoint: one read, or ERR_READ_ONLY_QUERY_REQUIRED.
async fn read_statement(sql: &str) -> Result<Statement, WbError> {
    let refuse = |m: String| {
        WbError::new(StatusCode::BAD_REQUEST, code::READ_ONLY_QUERY_REQUIRED, format!("The query endpoint only runs read-only SQL: {m}")).hint("Use SELECT or read-only WITH.")
    };
    match classify(sql).await {
        Ok(st) if st.kind.is_read() => Ok(st),
        Ok(st) => Err(refuse(format!("{} is not a read", run::command_of(&st.node)))),
        Err(crate::db::classify::Refusal::Invalid(m)) => Err(WbError::new(StatusCode::BAD_REQUEST, code::SQL_INVALID, m)),
        Err(e) => Err(refuse(e.to_string())),
    }
}

/// Classifies for the execute endpoint: one statement, confirmed, no transaction control.
async fn write_statement(sql: &str, confirm: bool) -> Result<Statement, WbError> {
    let st = match classify(sql).await {
        Ok(st) => st,
        Err(crate::db::classify::Refusal::Invalid(m)) => return Err(WbError::new(StatusCode::BAD_REQUEST, code::SQL_INVALID, m)),
        Err(e) => return Err(WbError::new(StatusCode::BAD_REQUEST, code::SINGLE_STATEMENT_REQUIRED, e.to_string()).hint("Send one statement per request.")),
    };
    if st.kind == Kind::Transaction {
        return Err(WbError::new(StatusCode::BAD_REQUEST, code::SINGLE_STATEMENT_REQUIRED, "transaction statements are not run by execute")
            .hint("Use a session and its /transaction route (begin, commit, rollback)."));
    }
    if !confirm {
        return Err(WbError::new(
            StatusCode::BAD_REQUEST,
            code::CONFIRMATION_REQUIRED,
            format!("{} changes the database; it runs only with confirm: true", run::command_of(&st.node)),
        )
        .hint("Resend with \"confirm\": true."));
    }
    Ok(st)
}

fn limits(wb: &Workbench, b: &SqlBody) -> Result<Limits, WbError> {
    run::limits(b.page_size, b.offset, b.timeout_ms, DEFAULT_PAGE, MAX_PAGE, &wb.cfg)
}

#[derive(Serialize)]
struct QueryData<'a> {
    columns: &'a [run::ColumnInfo],
    rows: &'a [Box<RawValue>],
    page: Value,
    stats: Value,
}

fn query_data(out: &Output, lim: Limits) -> QueryData<'_> {
    QueryData {
        columns: &out.columns,
        rows: &out.rows,
        page: json!({ "page_size": lim.page_size, "offset": lim.offset, "returned": out.rows.len(), "has_next": out.has_next }),
        stats: json!({ "elapsed_ms": out.elapsed_ms, "limit_enforced": true, "read_only": true }),
    }
}

#[derive(Serialize)]
struct ExecuteData<'a> {
    command: &'a str,
    rows_affected: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    columns: Option<&'a [run::ColumnInfo]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rows: Option<&'a [Box<RawValue>]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    truncated: Option<bool>,
    stats: Value,
}

fn execute_data(out: &Output) -> ExecuteData<'_> {
    let has_rows = !out.columns.is_empty();
    ExecuteData {
        command: &out.command,
        rows_affected: out.affected,
        columns: has_rows.then_some(&out.columns[..]),
        rows: has_rows.then_some(&out.rows[..]),
        truncated: has_rows.then_some(out.truncated),
        stats: json!({ "elapsed_ms": out.elapsed_ms, "read_only": false }),
    }
}

async fn query(State(s): State<AppState>, Extension(owner): Extension<Owner>, body: Bytes) -> Reply {
    let mut b: SqlBody = parse_body(&body)?;
    let mut lim = limits(&s.workbench, &b)?;
    let st = read_statement(&b.sql).await?;
    let t = target(&s, &owner, &mut b, &st, &mut lim).await?;
    let mut lease = s.workbench.pools.connect(&t).await?;
    let out = run::read(lease.client(), &st, &b.params, lim, false).await;
    lease.done();
    let out = out?;
    Ok(ok(StatusCode::OK, "Query executed.", query_data(&out, lim)))
}

async fn execute(State(s): State<AppState>, Extension(owner): Extension<Owner>, body: Bytes) -> Reply {
    let mut b: SqlBody = parse_body(&body)?;
    let mut lim = limits(&s.workbench, &b)?;
    let st = write_statement(&b.sql, b.confirm).await?;
    let t = target(&s, &owner, &mut b, &st, &mut lim).await?;
    let mut lease = s.workbench.pools.connect(&t).await?;
    let out = run::write(lease.client(), &st, &b.params, lim).await;
    lease.done();
    if st.kind == Kind::SessionState {
        // SET, PREPARE, LISTEN … would stay on a pooled connection: close it instead.
        lease.discard();
    }
    s.workbench.cache.invalidate(t.key());
    let out = out?;
    Ok(ok(StatusCode::OK, "Statement executed.", execute_data(&out)))
}

fn session_data(wb: &Workbench, se: &Session) -> Value {
    json!({
        "session_id": se.id,
        "database": se.label,
        "in_transaction": se.in_transaction.load(std::sync::atomic::Ordering::SeqCst),
        "busy": se.busy(),
        "idle_timeout_ms": wb.sessions.idle_limit().as_millis() as u64,
        "created_at": super::iso8601(se.created),
    })
}

async fn open_session(State(s): State<AppState>, Extension(owner): Extension<Owner>, body: Bytes) -> Reply {
    let b: ConnectionBody = parse_body(&body)?;
    let t = Target::from_rowsel(b.connection)?;
    let mut lease = s.workbench.pools.connect(&t).await?;
    lease.done();
    let se = s.workbench.sessions.open(&owner.0, t.label(), lease)?;
    Ok(ok(StatusCode::CREATED, "Session created.", session_data(&s.workbench, &se)))
}

async fn session_info(State(s): State<AppState>, Extension(owner): Extension<Owner>, Path(id): Path<String>) -> Reply {
    let se = s.workbench.sessions.peek(&owner.0, &id)?;
    Ok(ok(StatusCode::OK, "Session found.", session_data(&s.workbench, &se)))
}

async fn close_session(State(s): State<AppState>, Extension(owner): Extension<Owner>, Path(id): Path<String>) -> Reply {
    s.workbench.sessions.close(&owner.0, &id).await?;
    Ok(ok(StatusCode::OK, "Session closed.", json!({ "session_id": id, "closed": true })))
}

/// The session's connection, if no statement runs in it and it is still open.
fn lock(se: &Session) -> Result<tokio::sync::MutexGuard<'_, super::pools::Lease>, WbError> {
    let lease = se.conn.try_lock().map_err(|_| busy())?;
    if lease.is_closed() {
        return Err(WbError::new(StatusCode::NOT_FOUND, code::SESSION_NOT_FOUND, "no such session"));
    }
    Ok(lease)
}

fn busy() -> WbError {
    WbError::new(StatusCode::CONFLICT, code::SESSION_BUSY, "a statement is already running in this session").hint("Wait for it, or cancel it with /cancel.")
}

async fn session_query(State(s): State<AppState>, Extension(owner): Extension<Owner>, Path(id): Path<String>, body: Bytes) -> Reply {
    let b: SqlBody = parse_body(&body)?;
    if b.connection.is_some() || b.config_id.is_some() {
        return Err(WbError::invalid("a session's requests carry no connection").into());
    }
    let mut lim = limits(&s.workbench, &b)?;
    lim.stateless = false;
    let st = read_statement(&b.sql).await?;
    let se = s.workbench.sessions.get(&owner.0, &id)?;
    let lease = lock(&se)?;
    let in_tx = se.in_transaction.load(std::sync::atomic::Ordering::SeqCst);
    let out = run::read(lease.client(), &st, &b.params, lim, in_tx).await;
    se.touch();
    let out = out?;
    Ok(ok(StatusCode::OK, "Query executed.", query_data(&out, lim)))
}

async fn session_execute(State(s): State<AppState>, Extension(owner): Extension<Owner>, Path(id): Path<String>, body: Bytes) -> Reply {
    let b: SqlBody = parse_body(&body)?;
    if b.connection.is_some() || b.config_id.is_some() {
        return Err(WbError::invalid("a session's requests carry no connection").into());
    }
    let mut lim = limits(&s.workbench, &b)?;
    lim.stateless = false;
    let st = write_statement(&b.sql, b.confirm).await?;
    let se = s.workbench.sessions.get(&owner.0, &id)?;
    let lease = lock(&se)?;
    let out = run::write(lease.client(), &st, &b.params, lim).await;
    se.touch();
    let out = out?;
    Ok(ok(StatusCode::OK, "Statement executed.", execute_data(&out)))
}

async fn session_transaction(State(s): State<AppState>, Extension(owner): Extension<Owner>, Path(id): Path<String>, body: Bytes) -> Reply {
    let b: TransactionBody = parse_body(&body)?;
    let se = s.workbench.sessions.get(&owner.0, &id)?;
    let lease = lock(&se)?;
    let in_tx = se.in_transaction.load(std::sync::atomic::Ordering::SeqCst);
    let (sql, now_in, message) = match (b.action.to_ascii_lowercase().as_str(), in_tx) {
        ("begin", false) => ("BEGIN", true, "Transaction started."),
        ("commit", true) => ("COMMIT", false, "Transaction committed."),
        ("rollback", true) => ("ROLLBACK", false, "Transaction rolled back."),
        ("begin", true) => return Err(WbError::new(StatusCode::CONFLICT, code::TRANSACTION_STATE, "a transaction is already open in this session").into()),
        ("commit" | "rollback", false) => return Err(WbError::new(StatusCode::CONFLICT, code::TRANSACTION_STATE, "no transaction is open in this session").into()),
        (other, _) => return Err(WbError::invalid(format!("action {other:?} is not begin, commit or rollback")).into()),
    };
    let result = lease.client().simple_query(sql).await;
    // COMMIT of a failed transaction rolls back; either way it is over.
    set_transaction(&se, if result.is_ok() { now_in } else { in_tx && sql == "BEGIN" });
    result.map_err(|e| WbError::from_pg(&e))?;
    se.touch();
    Ok(ok(StatusCode::OK, message, json!({ "session_id": se.id, "in_transaction": now_in, "action": b.action.to_ascii_lowercase() })))
}

async fn session_cancel(State(s): State<AppState>, Extension(owner): Extension<Owner>, Path(id): Path<String>) -> Reply {
    let se: Arc<Session> = s.workbench.sessions.peek(&owner.0, &id)?;
    let cancelled = se.cancel().await?;
    let message = if cancelled { "Cancel request sent." } else { "Nothing was running." };
    Ok(ok(StatusCode::OK, message, json!({ "session_id": se.id, "cancelled": cancelled })))
}
