//! Exec: the only place REST touches the database (through [`crate::db`]). One transaction per request: the
//! role and claims are set transaction-locally (pipelined with the statement), so
//! GRANTs and RLS decide, and pooled connections stay clean.

use deadpool_postgres::Pool;

use crate::db::fair::FairPool;
use tokio_postgres::types::ToSql;

use super::error::RestError;
use crate::db::caller as as_caller;
pub use crate::db::caller::RequestInfo;
use crate::db::pipeline::Step;
use crate::db::sql::Sql;
use crate::error::code::pgrst;
use crate::http::caller::Caller;
use crate::rest::plan::join_rows;
use crate::state::AppState;

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

/// Opens a transaction on `client` running as `caller`, with the pre-request
/// function (PGRST_DB_PRE_REQUEST) run in it, for requests of several statements
/// (batch, tx=rollback).
pub async fn begin<'a>(client: &'a mut deadpool_postgres::Object, caller: &Caller, info: &RequestInfo<'_>) -> Result<deadpool_postgres::Transaction<'a>, RestError> {
    let anon = caller.role == pgstack_shared::Role::Anon;
    let tx = as_caller::begin(client, &caller.run_as(), info).await.map_err(|e| RestError::from_db(e, anon))?;
    if let Some(pre) = &super::settings().pre_request_sql {
        tx.query(pre.as_str(), &[]).await.map_err(|e| RestError::from_db(e, anon))?;
    }
    Ok(tx)
}

/// The total with a planner estimate: the estimate itself (count=planned), or in
/// place of an exact count past its cap (count=estimated).
fn estimated_total(est: &crate::db::sql::Estimate, exact: Option<i64>, plan_json: Option<&str>) -> Option<i64> {
    let planned = plan_json.and_then(crate::db::sql::plan_rows);
    match est.above {
        None => planned,
        Some(cap) => match exact {
            Some(n) if n > cap => planned.map(|p| p.max(n)).or(exact),
            other => other,
        },
    }
}

/// Runs one statement inside a transaction from [`begin`].
pub async fn statement(tx: &deadpool_postgres::Transaction<'_>, sql: &Sql, rows: bool, anon: bool) -> Result<Outcome, RestError> {
    let db = |e| RestError::from_db(e, anon);
    let params: Vec<&(dyn ToSql + Sync)> = sql.params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    if rows && sql.json_rows {
        // Streamed into the array text, within RESPONSE_MAX_BYTES (each row counted
        // with what holding it costs).
        use futures_util::TryStreamExt;
        let max = match super::settings().response_max_bytes {
            0 => usize::MAX,
            n => n,
        };
        let stream = tx.query_raw(sql.text.as_str(), params.iter().copied()).await.map_err(db)?;
        futures_util::pin_mut!(stream);
        let (mut body, mut count) = (String::from("["), 0i64);
        while let Some(row) = stream.try_next().await.map_err(db)? {
            let text: &str = row.get(0);
            if body.len() + text.len() + crate::db::pipeline::ROW_COST > max {
                return Err(RestError::from_db(crate::db::DbError::TooLarge(max), anon));
            }
            if count > 0 {
                body.push_str(crate::rest::plan::AGG_SEPARATOR);
            }
            body.push_str(text);
            count += 1;
        }
        body.push(']');
        Ok(Outcome { body: Some(body), count, ..Default::default() })
    } else if rows {
        let row = tx.query_one(sql.text.as_str(), &params).await.map_err(db)?;
        let mut out = Outcome { body: row.get(0), count: row.get(1), object: row.get(2), total: row.get(3), ..Default::default() };
        if let Some(est) = &sql.estimate {
            // Every parameter typed text, as the pipeline sends them (the EXPLAIN
            // need not use them all).
            let stmt = tx.prepare_typed(&est.explain, &vec![tokio_postgres::types::Type::TEXT; sql.params.len()]).await.map_err(db)?;
            let plan: Option<serde_json::Value> = tx.query_one(&stmt, &params).await.map_err(db)?.try_get(0).ok();
            out.total = estimated_total(est, out.total, plan.map(|p| p.to_string()).as_deref());
        }
        Ok(out)
    } else {
        Ok(Outcome { count: tx.execute(sql.text.as_str(), &params).await.map_err(db)? as i64, ..Default::default() })
    }
}

/// Runs `sql` as `caller`. `rows` = the statement returns the 4-column row shape;
/// otherwise it is a bare write and the affected count is returned.
///
/// The role/claims setup, the pre-request function, the statement and the response
/// settings go out as one pipeline on a [`crate::db::pipeline`] connection: one round trip
/// and one implicit transaction (committed at its Sync; any error rolls all of it
/// back). The statement is parsed after the setup ran, so as the request's role.
/// `Prefer: tx=rollback` and `max-affected` need an explicit end: they take the
/// sequential path.
#[tracing::instrument(level = "debug", skip_all, fields(role = %caller.pg_role, read_only = info.read_only))]
pub async fn run(state: &AppState, caller: &Caller, info: &RequestInfo<'_>, sql: &Sql, rows: bool, rollback: bool) -> Result<Outcome, RestError> {
    if info.max_affected.is_some() || info.singular || info.put_one || rollback {
        return run_in_transaction(&state.rest_tx, caller, info, sql, rows, rollback).await;
    }
    let anon = caller.role == pgstack_shared::Role::Anon;
    let who = caller.run_as();
    let mut steps = vec![Step { sql: state.schema_cache.setup_sql(), params: as_caller::setup_params(&who, info), text_params: false }];
    if let Some(pre) = &super::settings().pre_request_sql {
        steps.push(Step { sql: pre, params: Vec::new(), text_params: false });
    }
    let main = steps.len();
    steps.push(Step { sql: &sql.text, params: sql.params.iter().map(Option::as_deref).collect(), text_params: false });
    if let Some(est) = &sql.estimate {
        steps.push(Step { sql: &est.explain, params: sql.params.iter().map(Option::as_deref).collect(), text_params: true });
    }
    let gucs = steps.len();
    if info.response_gucs {
        steps.push(Step { sql: RESPONSE_GUCS, params: Vec::new(), text_params: false });
    }
    let mut results = match state.wire.pipeline(&steps, info.read_only).await {
        // The set-up function went away since the schema cache saw it: nothing ran
        // (the implicit transaction ended at its error); set up with set_config.
        Err(crate::db::DbError::Postgres(f)) if steps[0].sql == as_caller::SETUP_CALL && as_caller::setup_call_gone(&f) => {
            tracing::warn!(code = %f.code, error = %f.message, "pgr.request_setup is not callable any more: requests are set up with set_config");
            state.schema_cache.forget_setup_call();
            steps[0].sql = as_caller::SETUP;
            state.wire.pipeline(&steps, info.read_only).await
        }
        other => other,
    }
    .map_err(|e| RestError::from_db(e, anon))?;
    let short = || RestError::internal(anyhow::anyhow!("the pipeline returned fewer results than steps"));
    let mut out = if rows && sql.json_rows {
        let found = &results.get(main).ok_or_else(short)?.rows;
        Outcome { body: Some(join_rows(found.iter().map(|r| r.first().and_then(Option::as_deref).unwrap_or("null")))), count: found.len() as i64, ..Default::default() }
    } else if rows {
        let row = results.get_mut(main).ok_or_else(short)?.rows.pop().ok_or_else(|| RestError::internal(anyhow::anyhow!("statement returned no row")))?;
        let mut cols = row.into_iter();
        let (body, count, object, total) = (cols.next().flatten(), cols.next().flatten(), cols.next().flatten(), cols.next().flatten());
        let int = |v: Option<String>| v.and_then(|t| t.parse::<i64>().ok());
        Outcome { body, count: int(count).unwrap_or(0), object, total: int(total), ..Default::default() }
    } else {
        Outcome { count: results.get(main).ok_or_else(short)?.affected as i64, ..Default::default() }
    };
    if let Some(est) = &sql.estimate {
        let plan = results.get_mut(main + 1).and_then(|r| r.rows.pop()).and_then(|r| r.into_iter().next().flatten());
        out.total = estimated_total(est, out.total, plan.as_deref());
    }
    if info.response_gucs {
        let mut cols = results.get_mut(gucs).and_then(|r| r.rows.pop()).ok_or_else(short)?.into_iter();
        (out.response_headers, out.response_status) = (cols.next().flatten(), cols.next().flatten());
    }
    Ok(out)
}

/// `Accept: application/vnd.pgrst.plan`: the statement's EXPLAIN (`explain`, fixed
/// words), run as the caller in a transaction that is always rolled back (with
/// ANALYZE the statement really runs: whatever it writes is undone). The plan's
/// text: its JSON, or its lines.
pub async fn explain(state: &AppState, caller: &Caller, info: &RequestInfo<'_>, sql: &Sql, explain: &str) -> Result<String, RestError> {
    let anon = caller.role == pgstack_shared::Role::Anon;
    let db = |e| RestError::from_db(e, anon);
    let mut client = crate::db::Guarded::get(&state.rest_tx).await?;
    let out = async {
        let tx = begin(&mut client, caller, info).await?;
        let params: Vec<&(dyn ToSql + Sync)> = sql.params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let text = format!("{explain} {}", sql.text);
        let stmt = tx.prepare_typed(&text, &vec![tokio_postgres::types::Type::TEXT; sql.params.len()]).await.map_err(db)?;
        let rows = tx.query(&stmt, &params).await.map_err(db)?;
        let lines: Vec<String> =
            rows.iter().map(|r| r.try_get::<_, String>(0).or_else(|_| r.try_get::<_, serde_json::Value>(0).map(|v| v.to_string())).unwrap_or_default()).collect();
        tx.rollback().await.map_err(db)?;
        Ok(lines.join("\n"))
    }
    .await;
    client.finish();
    out
}

/// The sequential path: BEGIN, setup, then prepare and run the statement as the
/// request's role.
async fn run_in_transaction(pool: &FairPool<Pool>, caller: &Caller, info: &RequestInfo<'_>, sql: &Sql, rows: bool, rollback: bool) -> Result<Outcome, RestError> {
    let anon = caller.role == pgstack_shared::Role::Anon;
    let mut client = crate::db::Guarded::get(pool).await?;
    let out = in_transaction(&mut client, caller, info, sql, rows, rollback, anon).await;
    client.finish();
    out
}

async fn in_transaction(
    client: &mut deadpool_postgres::Object,
    caller: &Caller,
    info: &RequestInfo<'_>,
    sql: &Sql,
    rows: bool,
    rollback: bool,
    anon: bool,
) -> Result<Outcome, RestError> {
    let tx = begin(client, caller, info).await?;
    let mut out = statement(&tx, sql, rows, anon).await?;
    let db = |e| RestError::from_db(e, anon);
    if let Some(max) = info.max_affected {
        if out.count > max {
            tx.rollback().await.map_err(db)?;
            return Err(RestError::new(
                pgrst::MAX_AFFECTED,
                "Query result exceeds max-affected preference constraint",
                Some(format!("The query affects {} rows", out.count)),
                None,
            ));
        }
    }
    if info.put_one && out.count != 1 {
        tx.rollback().await.map_err(db)?;
        return Err(RestError::of(pgrst::PUT_KEY_MISMATCH, "Payload values do not match URL in primary key column(s)"));
    }
    if info.singular && out.count != 1 {
        tx.rollback().await.map_err(db)?;
        return Err(RestError::new(pgrst::SINGULAR, "Cannot coerce the result to a single JSON object", Some(format!("The result contains {} rows", out.count)), None));
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
