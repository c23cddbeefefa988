//! Exec: the only place REST touches the pool. One transaction per request: the
//! role and claims are set transaction-locally (pipelined with the statement), so
//! GRANTs and RLS decide, and pooled connections stay clean.

use deadpool_postgres::Pool;
use tokio_postgres::types::ToSql;

use super::error::RestError;
use super::sql::Sql;
use crate::http::caller::Caller;

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

/// Prepared statements kept per connection before the cache is emptied.
const MAX_CACHED_STATEMENTS: usize = 1000;

/// Runs `sql` as `caller`. `rows` = the statement returns the 4-column row shape;
/// otherwise it is a bare write and the affected count is returned.
///
/// Once the statement is prepared on the connection, BEGIN, the role/claims setup,
/// the statement and COMMIT go out together: one network round trip. (If the
/// statement fails, the COMMIT that follows it ends the aborted transaction as a
/// rollback.) A statement the login role cannot even parse (a schema without USAGE
/// for it) runs the slow way: prepared inside the transaction, after the role switch.
pub async fn run(pool: &Pool, caller: &Caller, info: &RequestInfo<'_>, sql: &Sql, rows: bool, rollback: bool) -> Result<Outcome, RestError> {
    let anon = caller.role == pgstack_shared::Role::Anon;
    let db = |e| RestError::from_db(e, anon);
    if info.max_affected.is_some() {
        // The count decides between COMMIT and ROLLBACK: no pipelining.
        return run_in_transaction(pool, caller, info, sql, rows, rollback).await;
    }
    let client = pool.get().await?;
    if client.statement_cache.size() > MAX_CACHED_STATEMENTS {
        client.statement_cache.clear();
    }
    let main = match client.prepare_cached(&sql.text).await {
        Ok(stmt) => stmt,
        Err(e) if matches!(e.code().map(|c| c.code()), Some("42501" | "3F000")) => {
            drop(client);
            return run_in_transaction(pool, caller, info, sql, rows, rollback).await;
        }
        Err(e) => return Err(db(e)),
    };
    let begin = client.prepare_cached("BEGIN").await.map_err(db)?;
    let setup = client.prepare_cached(SETUP).await.map_err(db)?;
    let end = client.prepare_cached(if rollback { "ROLLBACK" } else { "COMMIT" }).await.map_err(db)?;
    let pre = match &super::settings().pre_request_sql {
        Some(text) => Some(client.prepare_cached(text).await.map_err(db)?),
        None => None,
    };
    let claims = caller.claims.to_string();
    let role = caller.pg_role.as_str();
    let setup_params: [&(dyn ToSql + Sync); 8] =
        [&role, &claims, &info.method, &info.path, &info.headers, &info.read_only, &info.timezone, &info.statement_timeout];
    let gucs = match info.response_gucs {
        true => Some(client.prepare_cached(RESPONSE_GUCS).await.map_err(db)?),
        false => None,
    };
    let params: Vec<&(dyn ToSql + Sync)> = sql.params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();

    // Futures polled together are written to the connection in order: one round trip.
    let (b, s, p, m, g, e) = tokio::join!(
        client.execute(&begin, &[]),
        client.query(&setup, &setup_params),
        async {
            match &pre {
                Some(stmt) => client.query(stmt, &[]).await.map(|_| ()),
                None => Ok(()),
            }
        },
        async {
            if rows {
                client.query(&main, &params).await.map(Ok)
            } else {
                client.execute(&main, &params).await.map(Err)
            }
        },
        async {
            match &gucs {
                Some(stmt) => client.query_one(stmt, &[]).await.map(Some),
                None => Ok(None),
            }
        },
        client.execute(&end, &[]),
    );
    b.map_err(db)?;
    s.map_err(db)?;
    p.map_err(db)?;
    let mut out = match m.map_err(db)? {
        Ok(rows) => {
            let row = rows.first().ok_or_else(|| RestError::internal(anyhow::anyhow!("statement returned no row")))?;
            Outcome { body: row.get(0), count: row.get(1), object: row.get(2), total: row.get(3), ..Default::default() }
        }
        Err(n) => Outcome { count: n as i64, ..Default::default() },
    };
    if let Some(row) = g.map_err(db)? {
        (out.response_headers, out.response_status) = (row.get(0), row.get(1));
    }
    e.map_err(db)?;
    Ok(out)
}

/// The sequential path: BEGIN, setup, then prepare and run the statement as the
/// request's role.
async fn run_in_transaction(pool: &Pool, caller: &Caller, info: &RequestInfo<'_>, sql: &Sql, rows: bool, rollback: bool) -> Result<Outcome, RestError> {
    let anon = caller.role == pgstack_shared::Role::Anon;
    let mut client = pool.get().await?;
    let tx = begin(&mut client, caller, info).await?;
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
