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
                            set_config('request.headers', $5, true)";

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
}

/// Request facts handed to Postgres as `request.*` settings.
pub struct RequestInfo<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Path below /rest/v1.
    pub path: &'a str,
    /// Lower-cased headers as a JSON object.
    pub headers: String,
}

/// Opens a transaction on `client` running as `caller` (role and claims set
/// transaction-locally), for requests of several statements (batch).
pub async fn begin<'a>(client: &'a mut deadpool_postgres::Object, caller: &Caller, info: &RequestInfo<'_>) -> Result<deadpool_postgres::Transaction<'a>, RestError> {
    let anon = caller.role == pgstack_shared::Role::Anon;
    let db = |e| RestError::from_db(e, anon);
    let tx = client.transaction().await.map_err(db)?;
    let claims = caller.claims.to_string();
    let role = caller.role.as_str();
    let stmt = tx.prepare_cached(SETUP).await.map_err(db)?;
    tx.query(&stmt, &[&role, &claims, &info.method, &info.path, &info.headers]).await.map_err(db)?;
    Ok(tx)
}

/// Runs one statement inside a transaction from [`begin`].
pub async fn statement(tx: &deadpool_postgres::Transaction<'_>, sql: &Sql, rows: bool, anon: bool) -> Result<Outcome, RestError> {
    let db = |e| RestError::from_db(e, anon);
    let params: Vec<&(dyn ToSql + Sync)> = sql.params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    if rows {
        let row = tx.query_one(sql.text.as_str(), &params).await.map_err(db)?;
        Ok(Outcome { body: row.get(0), count: row.get(1), object: row.get(2), total: row.get(3) })
    } else {
        Ok(Outcome { count: tx.execute(sql.text.as_str(), &params).await.map_err(db)? as i64, ..Default::default() })
    }
}

/// Runs `sql` as `caller`. `rows` = the statement returns the 4-column row shape;
/// otherwise it is a bare write and the affected count is returned.
pub async fn run(pool: &Pool, caller: &Caller, info: &RequestInfo<'_>, sql: &Sql, rows: bool, rollback: bool) -> Result<Outcome, RestError> {
    let anon = caller.role == pgstack_shared::Role::Anon;
    let db = |e| RestError::from_db(e, anon);
    let mut client = pool.get().await?;
    let tx = client.transaction().await.map_err(db)?;
    let claims = caller.claims.to_string();
    // Prepared once per connection: afterwards only Bind/Execute go out, ahead of the
    // main statement's Parse, so the main statement is parsed under the new role.
    let setup_stmt = tx.prepare_cached(SETUP).await.map_err(db)?;
    let role = caller.role.as_str();
    let setup_params: [&(dyn ToSql + Sync); 5] = [&role, &claims, &info.method, &info.path, &info.headers];
    let setup = tx.query(&setup_stmt, &setup_params);
    let params: Vec<&(dyn ToSql + Sync)> = sql.params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    let out = if rows {
        // Polled together, the two statements share one round trip.
        let main = tx.query_one(sql.text.as_str(), &params);
        let (s, m) = tokio::join!(setup, main);
        s.map_err(db)?;
        let row = m.map_err(db)?;
        Outcome { body: row.get(0), count: row.get(1), object: row.get(2), total: row.get(3) }
    } else {
        let main = tx.execute(sql.text.as_str(), &params);
        let (s, m) = tokio::join!(setup, main);
        s.map_err(db)?;
        Outcome { count: m.map_err(db)? as i64, ..Default::default() }
    };
    if rollback {
        tx.rollback().await.map_err(db)?;
    } else {
        tx.commit().await.map_err(db)?;
    }
    Ok(out)
}
