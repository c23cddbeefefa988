//! Running one classified statement on a connection.
//!
//! Reads run in `BEGIN READ ONLY` with a local `statement_timeout`, are wrapped as a
//! subquery for paging (`LIMIT page+1 OFFSET n`, both bind parameters: one extra row
//! tells whether there is a next page) and always end in ROLLBACK, so a read that
//! calls `set_config` leaves nothing behind on the pooled connection. Values are
//! rendered by PostgreSQL (`to_json` of the row): numbers stay numbers with every
//! digit, json stays json, bytea is `\x…` hex, arrays are arrays. Columns carry
//! their type and, for columns of a table, whether they may be null.
//!
//! Request values are bind parameters sent as text, typed by PostgreSQL from the
//! statement (never spliced into SQL).

use std::time::Instant;

use axum::http::StatusCode;
use bytes::BytesMut;
use futures_util::{pin_mut, TryStreamExt};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio_postgres::types::{Format, IsNull, ToSql, Type};

use super::error::WbError;
use crate::db::classify::{Kind, Statement};
use crate::error::code::workbench as code;

/// A request value bound as text; PostgreSQL parses it as the parameter's type.
#[derive(Debug)]
pub struct TextParam(Option<String>);

impl TextParam {
    /// From a JSON value: null is NULL, strings as they are, anything else as JSON text.
    pub fn from_json(v: &Value) -> TextParam {
        TextParam(match v {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        })
    }
}

impl ToSql for TextParam {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            None => Ok(IsNull::Yes),
            Some(s) => {
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
        }
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    fn encode_format(&self, _: &Type) -> Format {
        Format::Text
    }
    tokio_postgres::types::to_sql_checked!();
}

/// A column of an answer.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnInfo {
    /// Name.
    pub name: String,
    /// Type, upper case (`INT8`, `TEXT`, `INT4[]`).
    pub data_type: String,
    /// PostgreSQL's type oid.
    #[serde(skip)]
    pub oid: u32,
    /// Whether it may be null, when it comes straight from a table column.
    pub nullable: Option<bool>,
}

/// What a statement gave back.
#[derive(Debug, Default)]
pub struct Output {
    /// Columns (empty for statements without rows).
    pub columns: Vec<ColumnInfo>,
    /// Rows as JSON objects, rendered by PostgreSQL.
    pub rows: Vec<Box<RawValue>>,
    /// Whether more rows follow the page.
    pub has_next: bool,
    /// Rows affected (writes).
    pub affected: Option<u64>,
    /// The command (`SELECT`, `INSERT`, `CREATE TABLE`, …).
    pub command: String,
    /// Wall time.
    pub elapsed_ms: u64,
    /// Whether rows were cut at a limit.
    pub truncated: bool,
}

/// Paging and bounds of one run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Rows per page.
    pub page_size: usize,
    /// Rows skipped.
    pub offset: u64,
    /// statement_timeout in milliseconds.
    pub timeout_ms: u64,
    /// Most bytes of rows.
    pub max_bytes: usize,
    /// Run with `search_path = public` (a saved configuration with allowed_tables:
    /// unqualified names must mean what the check took them for).
    pub public_only: bool,
    /// On a pooled connection (not a session's): whatever the statement left on the
    /// connection is reset before it goes back.
    pub stateless: bool,
}

/// What a pooled connection is reset with after a statement that may have changed
/// it (settings, role, temp tables, advisory locks, LISTENs, cursors); the statement
/// cache stays.
const RESET_CONNECTION: &str = "RESET ALL; SET SESSION AUTHORIZATION DEFAULT; SELECT pg_catalog.pg_advisory_unlock_all(); UNLISTEN *; \
                                DISCARD TEMP; DISCARD SEQUENCES; CLOSE ALL";

/// Statements kept prepared per connection at most (then the cache starts over).
const MAX_CACHED_STATEMENTS: usize = 256;

/// A pooled connection (its statement cache is used for repeated reads).
pub type Conn = deadpool_postgres::ClientWrapper;

impl Limits {
    fn settings(&self, local: bool) -> String {
        let set = if local { "SET LOCAL" } else { "SET" };
        let mut s = format!("{set} statement_timeout = {}", self.timeout_ms);
        if self.public_only {
            s.push_str(&format!("; {set} search_path = public"));
        }
        s
    }
}

fn type_name(t: &Type) -> String {
    match t.kind() {
        tokio_postgres::types::Kind::Array(inner) => format!("{}[]", inner.name().to_ascii_uppercase()),
        _ => t.name().to_ascii_uppercase(),
    }
}

/// The command word(s) of a statement node (`InsertStmt` → `INSERT`).
pub fn command_of(node: &str) -> String {
    match node {
        "SelectStmt" => "SELECT".into(),
        "InsertStmt" => "INSERT".into(),
        "UpdateStmt" => "UPDATE".into(),
        "DeleteStmt" => "DELETE".into(),
        "MergeStmt" => "MERGE".into(),
        "VariableShowStmt" => "SHOW".into(),
        "ExplainStmt" => "EXPLAIN".into(),
        other => {
            let base = other.strip_suffix("Stmt").unwrap_or(other);
            let mut out = String::new();
            for (i, ch) in base.chars().enumerate() {
                if ch.is_ascii_uppercase() && i > 0 {
                    out.push(' ');
                }
                out.push(ch.to_ascii_uppercase());
            }
            out
        }
    }
}

fn params_of(values: &[Value]) -> Vec<TextParam> {
    values.iter().map(TextParam::from_json).collect()
}

const NULLABILITY_SQL: &str =
    "select a.attrelid, a.attnum, a.attnotnull from pg_catalog.pg_attribute a join unnest($1::oid[], $2::int2[]) k(r, n) on a.attrelid = k.r and a.attnum = k.n";

/// Looks up which table columns may be null.
async fn nullability(client: &Conn, cols: &[tokio_postgres::Column]) -> Vec<Option<bool>> {
    let wanted: Vec<(u32, i16)> = cols.iter().filter_map(|c| Some((c.table_oid()?, c.column_id()?))).filter(|(t, _)| *t != 0).collect();
    if wanted.is_empty() {
        return vec![None; cols.len()];
    }
    let rels: Vec<u32> = wanted.iter().map(|w| w.0).collect();
    let nums: Vec<i16> = wanted.iter().map(|w| w.1).collect();
    let rows = client
        .query(
            "select a.attrelid, a.attnum, a.attnotnull from pg_catalog.pg_attribute a join unnest($1::oid[], $2::int2[]) k(r, n) on a.attrelid = k.r and a.attnum = k.n",
            &[&rels, &nums],
        )
        .await
        .unwrap_or_default();
    cols.iter()
        .map(|c| {
            let (t, n) = (c.table_oid()?, c.column_id()?);
            rows.iter().find(|r| r.get::<_, u32>(0) == t && r.get::<_, i16>(1) == n).map(|r| !r.get::<_, bool>(2))
        })
        .collect()
}

async fn columns(client: &Conn, cols: &[tokio_postgres::Column]) -> Vec<ColumnInfo> {
    let nulls = nullability(client, cols).await;
    cols.iter().zip(nulls).map(|(c, nullable)| ColumnInfo { name: c.name().to_owned(), data_type: type_name(c.type_()), oid: c.type_().oid(), nullable }).collect()
}

/// Collects `to_json` rows from a stream, up to `keep` rows and `max_bytes`.
async fn collect_rows(stream: tokio_postgres::RowStream, keep: usize, max_bytes: usize, out: &mut Output) -> Result<usize, WbError> {
    pin_mut!(stream);
    let (mut seen, mut bytes) = (0usize, 0usize);
    while let Some(row) = stream.try_next().await.map_err(|e| WbError::from_pg(&e))? {
        seen += 1;
        if out.rows.len() >= keep {
            out.truncated = true;
            continue;
        }
        let text: Option<String> = row.try_get(0).map_err(|e| WbError::new(StatusCode::BAD_GATEWAY, code::SQL_FAILED, e.to_string()))?;
        let text = text.unwrap_or_else(|| "null".into());
        bytes += text.len();
        if bytes > max_bytes {
            return Err(WbError::new(StatusCode::PAYLOAD_TOO_LARGE, code::RESULT_TOO_LARGE, format!("the rows exceed {max_bytes} bytes (WORKBENCH_MAX_RESULT_BYTES)"))
                .hint("Ask for fewer rows or columns."));
        }
        out.rows.push(RawValue::from_string(text).map_err(|e| WbError::new(StatusCode::BAD_GATEWAY, code::SQL_FAILED, e.to_string()))?);
    }
    Ok(seen)
}

/// Runs a read. `in_transaction`: inside the session's open transaction (a
/// savepoint, made read-only and rolled back, instead of a transaction of its own).
/// The paged statement and its column query stay prepared on the connection, and go
/// out in one flight with BEGIN: a repeated read is two round trips.
pub async fn read(client: &Conn, stmt: &Statement, params: &[Value], lim: Limits, in_transaction: bool) -> Result<Output, WbError> {
    read_as(client, stmt, params, lim, in_transaction, None).await
}

/// A statement run right after BEGIN, in the same flight (the MCP tools set the
/// caller's role and claims with it, so RLS decides what the read sees).
pub struct Prelude {
    /// The statement.
    pub sql: &'static str,
    /// Its parameters.
    pub params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Prelude {
    /// Runs it (prepared once per connection).
    pub async fn run(&self, client: &Conn) -> Result<(), WbError> {
        let st = client.prepare_cached(self.sql).await.map_err(|e| WbError::from_pg(&e))?;
        client.query(&st, &self.params.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync)).collect::<Vec<_>>()).await.map_err(|e| WbError::from_pg(&e))?;
        Ok(())
    }
}

/// [`read`] with a [`Prelude`].
pub async fn read_as(client: &Conn, stmt: &Statement, params: &[Value], lim: Limits, in_transaction: bool, prelude: Option<&Prelude>) -> Result<Output, WbError> {
    let started = Instant::now();
    if client.statement_cache.size() > MAX_CACHED_STATEMENTS {
        client.statement_cache.clear();
    }
    let mut out = read_once(client, stmt, params, lim, in_transaction, prelude).await;
    // A prepared `SELECT *` whose tables changed ("cached plan must not change result
    // type"): prepare again, once.
    if matches!(&out, Err(e) if e.sqlstate.as_deref() == Some("0A000") && e.message.contains("cached plan")) {
        client.statement_cache.clear();
        out = read_once(client, stmt, params, lim, in_transaction, prelude).await;
    }
    let mut out = out?;
    out.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(out)
}

async fn read_once(client: &Conn, stmt: &Statement, params: &[Value], lim: Limits, in_transaction: bool, prelude: Option<&Prelude>) -> Result<Output, WbError> {
    let (open, close) = match (in_transaction, lim.stateless) {
        (true, _) => ("SAVEPOINT pgstack_read; SET LOCAL transaction_read_only = on", "ROLLBACK TO SAVEPOINT pgstack_read; RELEASE SAVEPOINT pgstack_read"),
        // Session-level advisory locks survive ROLLBACK.
        (false, true) => ("BEGIN READ ONLY", "ROLLBACK; SELECT pg_catalog.pg_advisory_unlock_all()"),
        (false, false) => ("BEGIN READ ONLY", "ROLLBACK"),
    };
    let open = format!("{open}; {}", lim.settings(true));
    let work = async {
        if let Some(p) = prelude {
            p.run(client).await?;
        }
        read_in(client, stmt, params, lim).await
    };
    let (opened, result) = tokio::join!(client.batch_execute(&open), work);
    let closed = client.batch_execute(close).await;
    opened.map_err(|e| WbError::from_pg(&e))?;
    let out = result?;
    closed.map_err(|e| WbError::from_pg(&e))?;
    Ok(out)
}

async fn read_in(client: &Conn, stmt: &Statement, params: &[Value], lim: Limits) -> Result<Output, WbError> {
    let mut out = Output { command: command_of(&stmt.node), ..Output::default() };
    if stmt.kind != Kind::Select {
        return read_direct(client, stmt, params, lim, out).await;
    }
    let text = &stmt.text;
    let n = stmt.params;
    if n != params.len() {
        return Err(WbError::invalid(format!("the statement has {n} parameters; {} were given", params.len())));
    }
    let meta_sql = format!("SELECT * FROM (\n{text}\n) AS pgstack_q");
    let paged_sql = format!("SELECT to_json(pgstack_q)::text FROM (\n{text}\n) AS pgstack_q LIMIT ${}::int8 OFFSET ${}::int8", n + 1, n + 2);
    // All three prepared (or found prepared) before anything runs: the column query
    // then goes out ahead of the paged one, and its answer is read first. (A column
    // query prepared later would queue behind the rows nobody reads yet.)
    let (meta, paged, nulls) = tokio::join!(client.prepare_cached(&meta_sql), client.prepare_cached(&paged_sql), client.prepare_cached(NULLABILITY_SQL));
    let (meta, paged) = (meta.map_err(|e| WbError::from_pg(&e))?, paged.map_err(|e| WbError::from_pg(&e))?);
    nulls.map_err(|e| WbError::from_pg(&e))?;
    let mut args: Vec<Box<dyn ToSql + Sync + Send>> = params_of(params).into_iter().map(|p| Box::new(p) as Box<dyn ToSql + Sync + Send>).collect();
    args.push(Box::new(lim.page_size as i64 + 1));
    args.push(Box::new(i64::try_from(lim.offset).unwrap_or(i64::MAX)));
    out.columns = columns(client, meta.columns()).await;
    let stream = client.query_raw(&paged, args.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync))).await.map_err(|e| WbError::from_pg(&e))?;
    collect_rows(stream, lim.page_size, lim.max_bytes, &mut out).await?;
    out.has_next = out.truncated;
    out.truncated = false;
    Ok(out)
}

/// SHOW and EXPLAIN cannot be subqueries: their few rows are paged here.
async fn read_direct(client: &Conn, stmt: &Statement, params: &[Value], lim: Limits, mut out: Output) -> Result<Output, WbError> {
    let prepared = client.prepare(&stmt.text).await.map_err(|e| WbError::from_pg(&e))?;
    out.columns = columns(client, prepared.columns()).await;
    let rows = client.query_raw(&prepared, params_of(params)).await.map_err(|e| WbError::from_pg(&e))?;
    pin_mut!(rows);
    let (mut index, mut bytes) = (0u64, 0usize);
    while let Some(row) = rows.try_next().await.map_err(|e| WbError::from_pg(&e))? {
        index += 1;
        if index <= lim.offset {
            continue;
        }
        if out.rows.len() >= lim.page_size {
            out.has_next = true;
            break;
        }
        let mut obj = serde_json::Map::new();
        for (i, c) in row.columns().iter().enumerate() {
            let v = if *c.type_() == Type::JSON || *c.type_() == Type::JSONB {
                row.try_get::<_, Option<Value>>(i).ok().flatten().unwrap_or(Value::Null)
            } else {
                row.try_get::<_, Option<String>>(i).ok().flatten().map(Value::String).unwrap_or(Value::Null)
            };
            obj.insert(c.name().to_owned(), v);
        }
        let text = Value::Object(obj).to_string();
        bytes += text.len();
        if bytes > lim.max_bytes {
            return Err(WbError::new(StatusCode::PAYLOAD_TOO_LARGE, code::RESULT_TOO_LARGE, format!("the rows exceed {} bytes", lim.max_bytes)));
        }
        out.rows.push(RawValue::from_string(text).map_err(|e| WbError::new(StatusCode::BAD_GATEWAY, code::SQL_FAILED, e.to_string()))?);
    }
    Ok(out)
}

/// Runs a write or any other statement, with its own statement_timeout. Rows of a
/// RETURNING list come back (at most `lim.page_size`, all counted).
pub async fn write(client: &Conn, stmt: &Statement, params: &[Value], lim: Limits) -> Result<Output, WbError> {
    let started = Instant::now();
    client.batch_execute(&lim.settings(false)).await.map_err(|e| WbError::from_pg(&e))?;
    let result = write_in(client, stmt, params, lim).await;
    let reset = match (lim.stateless, lim.public_only) {
        (true, _) => client.batch_execute(RESET_CONNECTION).await,
        (false, true) => client.batch_execute("RESET statement_timeout; RESET search_path").await,
        (false, false) => client.batch_execute("RESET statement_timeout").await,
    };
    let mut out = result?;
    reset.map_err(|e| WbError::from_pg(&e))?;
    out.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(out)
}

async fn write_in(client: &Conn, stmt: &Statement, params: &[Value], lim: Limits) -> Result<Output, WbError> {
    let mut out = Output { command: command_of(&stmt.node), ..Output::default() };
    let text = &stmt.text;
    if matches!(stmt.kind, Kind::Dml { returning: true }) && stmt.node != "MergeStmt" {
        let meta = client.prepare(text).await.map_err(|e| WbError::from_pg(&e))?;
        out.columns = columns(client, meta.columns()).await;
        let wrapped = client
            .prepare_typed(&format!("WITH pgstack_w AS (\n{text}\n) SELECT to_json(pgstack_w)::text FROM pgstack_w"), meta.params())
            .await
            .map_err(|e| WbError::from_pg(&e))?;
        let stream = client.query_raw(&wrapped, params_of(params)).await.map_err(|e| WbError::from_pg(&e))?;
        let seen = collect_rows(stream, lim.page_size, lim.max_bytes, &mut out).await?;
        out.affected = Some(seen as u64);
        return Ok(out);
    }
    let prepared = client.prepare(text).await.map_err(|e| WbError::from_pg(&e))?;
    if prepared.params().len() != params.len() {
        return Err(WbError::invalid(format!("the statement has {} parameters; {} were given", prepared.params().len(), params.len())));
    }
    if !prepared.columns().is_empty() {
        // A utility statement with rows (e.g. a CALL with OUT parameters).
        out.columns = columns(client, prepared.columns()).await;
    }
    let n = client.execute_raw(&prepared, params_of(params)).await.map_err(|e| WbError::from_pg(&e))?;
    out.affected = Some(n);
    Ok(out)
}

/// Bounds of a request's page and timeout, checked.
pub fn limits(
    page_size: Option<u64>,
    offset: Option<u64>,
    timeout_ms: Option<u64>,
    default_page: usize,
    max_page: usize,
    cfg: &crate::config::workbench::WorkbenchConfig,
) -> Result<Limits, WbError> {
    let page_size = match page_size {
        None => default_page,
        Some(0) => return Err(WbError::invalid("page_size must be at least 1")),
        Some(p) if p as usize > max_page => return Err(WbError::invalid(format!("page_size must be at most {max_page}"))),
        Some(p) => p as usize,
    };
    let offset = offset.unwrap_or(0);
    if offset > i64::MAX as u64 {
        return Err(WbError::invalid("offset is too large"));
    }
    let timeout_ms = match timeout_ms {
        None => cfg.statement_timeout_ms,
        Some(t) if t == 0 || t > cfg.max_statement_timeout_ms => return Err(WbError::invalid(format!("timeout_ms must be 1 to {}", cfg.max_statement_timeout_ms))),
        Some(t) => t,
    };
    Ok(Limits { page_size, offset, timeout_ms, max_bytes: cfg.max_result_bytes, public_only: false, stateless: true })
}
