//! Exec: the only place REST touches the database. One transaction per request: the
//! role and claims are set transaction-locally (pipelined with the statement), so
//! GRANTs and RLS decide, and pooled connections stay clean.

use deadpool_postgres::Pool;
use tokio_postgres::types::ToSql;

use super::error::RestError;
use super::sql::Sql;
use crate::http::caller::Caller;
use crate::pgwire::Step;
use crate::state::AppState;

const SETUP: &str = "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true), \
                            set_config('request.method', $3, true), set_config('request.path', $4, true), \
                            set_config('request.headers', $5, true), \
                            set_config('transaction_read_only', CASE WHEN $6 THEN 'on' ELSE 'off' END, true), \
                            CASE WHEN $7::text IS NOT NULL THEN set_config('timezone', $7, true) END, \
                            CASE WHEN $8::text IS NOT NULL THEN set_config('statement_timeout', $8, true) END";

/// Reads what the statement asked of the response (PostgREST's GUC protocol).
const RESPONSE_GUCS: &str = "SELECT current_setting('response.headers', true), current_setting('response.status', true)";

/// What a statement returned.
#[derive(Debug, Default)]
pub struct Outcome {
    /// JSON array text of the rows (None for bare writes).
    pub body: Option<String>,
    /// Rows in the page / affected.
    pub count: i64,
    /// The single row as JSON text, when exactly one.
    pub object: Option<String>,
    /// Total for Prefer: count.
    pub total: Option<i64>,
    /// `response.headers` as set by the statement (a JSON array of objects).
    pub response_headers: Option<String>,
    /// `response.status` as set by the statement.
    pub response_status: Option<String>,
}

/// Request facts handed to Postgres as `request.*` settings.
pub struct RequestInfo<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Path below /rest/v1.
    pub path: &'a str,
    /// Lower-cased headers as a JSON object.
    pub headers: String,
    /// Run the transaction READ ONLY (GET on functions).
    pub read_only: bool,
    /// Read `response.headers` / `response.status` after the statement (RPC).
    pub response_gucs: bool,
    /// `Prefer: timezone=`: the session time zone of this transaction.
    pub timezone: Option<String>,
    /// The request role's `statement_timeout` (from `ALTER ROLE ... SET`).
    pub statement_timeout: Option<String>,
    /// `Prefer: handling=strict, max-affected=n`: roll back (400 PGRST124) when the
    /// statement touches more rows.
    pub max_affected: Option<i64>,
}

impl Default for RequestInfo<'_> {
    fn default() -> Self {
        RequestInfo { method: "", path: "", headers: "{}".into(), read_only: false, response_gucs: false, timezone: None, statement_timeout: None, max_affected: None }
    }
}

/// Opens a transaction on `client` running as `caller` (role and claims set
/// transaction-locally), for requests of several statements (batch).
pub async fn begin<'a>(client: &'a mut deadpool_postgres::Object, caller: &Caller, info: &RequestInfo<'_>) -> Result<deadpool_postgres::Transaction<'a>, RestError> {
    let anon = caller.role == pgstack_shared::Role::Anon;
    let db = |e| RestError::from_db(e, anon);
    let tx = client.transaction().await.map_err(db)?;
    let claims = caller.claims.to_string();
    let role = caller.pg_role.as_str();
    let stmt = tx.prepare_cached(SETUP).await.map_err(db)?;
    tx.query(&stmt, &[&role, &claims, &info.method, &info.path, &info.headers, &info.read_only, &info.timezone, &info.statement_timeout]).await.map_err(db)?;
    if let Some(pre) = &super::settings().pre_request_sql {
        tx.query(pre.as_str(), &[]).await.map_err(db)?;
    }
    Ok(tx)
}

/// Runs one statement inside a transaction from [`begin`].
pub async fn statement(tx: &deadpool_postgres::Transaction<'_>, sql: &Sql, rows: bool, anon: bool) -> Result<Outcome, RestError> {
    let db = |e| RestError::from_db(e, anon);
    let params: Vec<&(dyn ToSql + Sync)> = sql.params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    if rows {
        let row = tx.query_one(sql.text.as_str(), &params).await.map_err(db)?;
        Ok(Outcome { body: row.get(0), count: row.get(1), object: row.get(2), total: row.get(3), ..Default::default() })
    } else {
        Ok(Outcome { count: tx.execute(sql.text.as_str(), &params).await.map_err(db)? as i64, ..Default::default() })
    }
}

/// Runs `sql` as `caller`. `rows` = the statement returns the 4-column row shape;
/// otherwise it is a bare write and the affected count is returned.
///
/// The role/claims setup, the pre-request function, the statement and the response
/// settings go out as one pipeline on a [`crate::pgwire`] connection: one round trip
/// and one implicit transaction (committed at its Sync; any error rolls all of it
/// back). The statement is parsed after the setup ran, so as the request's role.
/// `Prefer: tx=rollback` and `max-affected` need an explicit end: they take the
/// sequential path.
pub async fn run(state: &AppState, caller: &Caller, info: &RequestInfo<'_>, sql: &Sql, rows: bool, rollback: bool) -> Result<Outcome, RestError> {
    if info.max_affected.is_some() || rollback {
        return run_in_transaction(&state.rest_tx, caller, info, sql, rows, rollback).await;
    }
    let anon = caller.role == pgstack_shared::Role::Anon;
    let claims = caller.claims.to_string();
    let read_only = if info.read_only { "true" } else { "false" };
    let mut steps = vec![Step {
        sql: SETUP,
        params: vec![
            Some(caller.pg_role.as_str()),
            Some(&claims),
            Some(info.method),
            Some(info.path),
            Some(&info.headers),
            Some(read_only),
            info.timezone.as_deref(),
            info.statement_timeout.as_deref(),
        ],
    }];
    if let Some(pre) = &super::settings().pre_request_sql {
        steps.push(Step { sql: pre, params: Vec::new() });
    }
    let main = steps.len();
    steps.push(Step { sql: &sql.text, params: sql.params.iter().map(Option::as_deref).collect() });
    if info.response_gucs {
        steps.push(Step { sql: RESPONSE_GUCS, params: Vec::new() });
    }
    let mut conn = crate::pgwire::Lease::get(&state.wire).await?;
    let mut results = conn.pipeline(&steps).await.map_err(|e| RestError::from_wire(e, anon))?;
    let short = || RestError::internal(anyhow::anyhow!("the pipeline returned fewer results than steps"));
    let mut out = if rows {
        let row = results.get_mut(main).ok_or_else(short)?.rows.pop().ok_or_else(|| RestError::internal(anyhow::anyhow!("statement returned no row")))?;
        let mut cols = row.into_iter();
        let (body, count, object, total) = (cols.next().flatten(), cols.next().flatten(), cols.next().flatten(), cols.next().flatten());
        let int = |v: Option<String>| v.and_then(|t| t.parse::<i64>().ok());
        Outcome { body, count: int(count).unwrap_or(0), object, total: int(total), ..Default::default() }
    } else {
        Outcome { count: results.get(main).ok_or_else(short)?.affected as i64, ..Default::default() }
    };
    if info.response_gucs {
        let mut cols = results.get_mut(main + 1).and_then(|r| r.rows.pop()).ok_or_else(short)?.into_iter();
        (out.response_headers, out.response_status) = (cols.next().flatten(), cols.next().flatten());
    }
    Ok(out)
}

/// The sequential path: BEGIN, setup, then prepare and run the statement as the
/// request's role.
async fn run_in_transaction(pool: &Pool, caller: &Caller, info: &RequestInfo<'_>, sql: &Sql, rows: bool, rollback: bool) -> Result<Outcome, RestError> {
    let anon = caller.role == pgstack_shared::Role::Anon;
    let mut client = crate::db::Guarded::get(pool).await?;
    let out = in_transaction(&mut client, caller, info, sql, rows, rollback, anon).await;
    client.finish();
    out
}

async fn in_transaction(client: &mut deadpool_postgres::Object, caller: &Caller, info: &RequestInfo<'_>, sql: &Sql, rows: bool, rollback: bool, anon: bool) -> Result<Outcome, RestError> {
    let tx = begin(client, caller, info).await?;
    let mut out = statement(&tx, sql, rows, anon).await?;
    let db = |e| RestError::from_db(e, anon);
    if let Some(max) = info.max_affected {
        if out.count > max {
            tx.rollback().await.map_err(db)?;
            return Err(RestError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "PGRST124",
                "Query result exceeds max-affected preference constraint",
                Some(format!("The query affects {} rows", out.count)),
                None,
            ));
        }
    }
    if info.response_gucs {
        let row = tx.query_one(RESPONSE_GUCS, &[]).await.map_err(db)?;
        (out.response_headers, out.response_status) = (row.get(0), row.get(1));
    }
    if rollback {
        tx.rollback().await.map_err(db)?;
    } else {
        tx.commit().await.map_err(db)?;
    }
    Ok(out)
}
