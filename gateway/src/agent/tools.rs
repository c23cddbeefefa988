//! The MCP tools and resources, each run on this cluster **as the caller** (its role
//! and claims set in a read-only transaction with a statement timeout, so RLS
//! decides), SQL classified by PostgreSQL's parser as in the workbench.
//!
//! Tools: `execute_sql` (one read), `explain_query` (EXPLAIN of a read, ANALYZE on
//! request), `get_schema_info` (the tables and views the caller may read),
//! `query_database` (natural language through the configured LLM). Resources:
//! `pg://system_info`, `pg://settings`, `pg://schema/{schema}`.

use serde_json::{json, Value};

use super::databases::{self, Place};
use crate::db::caller::SETUP;
use crate::db::classify::{self, Kind, Statement};
use crate::http::caller::Caller;
use crate::workbench::access::Owner;
use crate::workbench::error::WbError;
use crate::workbench::run::{self, Limits, Prelude};
use crate::workbench::target::Target;
use crate::AppState;

/// A JSON-RPC error of a method (not of a tool: tool failures are results with
/// `isError`).
#[derive(Debug)]
pub struct RpcError {
    /// JSON-RPC code.
    pub code: i64,
    /// Message.
    pub message: String,
}

impl RpcError {
    /// -32602.
    pub fn params(message: impl Into<String>) -> Self {
        RpcError { code: -32602, message: message.into() }
    }
    /// -32603.
    pub fn internal(message: impl Into<String>) -> Self {
        RpcError { code: -32603, message: message.into() }
    }
}

/// Rows a tool returns by default and at most.
const DEFAULT_ROWS: u64 = 100;
const MAX_ROWS: u64 = 1000;
/// Bytes of rows a tool returns at most.
const MAX_BYTES: usize = 4 * 1024 * 1024;

/// The tools [`list`] describes (checked before a call looks anything up).
const TOOL_NAMES: &[&str] = &["query_database", "execute_sql", "explain_query", "get_schema_info"];

/// `tools/list`.
pub fn list() -> Value {
    json!([
        {
            "name": "query_database",
            "description": "Execute natural language queries against the database: the configured LLM writes one read-only SQL statement, which runs as you (your role and row-level security) and is shown with its result.",
            "inputSchema": { "type": "object", "properties": { "query": { "type": "string", "description": "Natural language query" } }, "required": ["query"] }
        },
        {
            "name": "execute_sql",
            "description": "Run one read-only SQL statement (SELECT, WITH, VALUES, SHOW, EXPLAIN) as you, under your row-level security. Returns columns and rows as JSON.",
            "inputSchema": { "type": "object", "properties": {
                "sql": { "type": "string", "description": "One read-only SQL statement" },
                "params": { "type": "array", "description": "Values for $1, $2, ...", "items": {} },
                "limit": { "type": "integer", "minimum": 1, "maximum": MAX_ROWS, "description": "Rows to return (default 100)" }
            }, "required": ["sql"] }
        },
        {
            "name": "explain_query",
            "description": "Show PostgreSQL's plan (EXPLAIN, FORMAT JSON) for one read-only statement; analyze: true runs it (read-only) and adds timings.",
            "inputSchema": { "type": "object", "properties": {
                "sql": { "type": "string", "description": "One read-only SQL statement" },
                "analyze": { "type": "boolean", "description": "Run it and report actual timings (default false)" }
            }, "required": ["sql"] }
        },
        {
            "name": "get_schema_info",
            "description": "The schemas, tables, views, columns, keys and indexes you may read.",
            "inputSchema": { "type": "object", "properties": { "schema": { "type": "string", "description": "Only this schema" } } }
        }
    ])
}

/// `resources/list`.
pub fn resources() -> Value {
    json!([
        { "uri": "pg://system_info", "name": "system_info", "description": "PostgreSQL version, database, current user and role, database size", "mimeType": "application/json" },
        { "uri": "pg://settings", "name": "settings", "description": "Server settings visible to you", "mimeType": "application/json" },
    ])
}

/// `resources/templates/list`.
pub fn templates() -> Value {
    json!([{ "uriTemplate": "pg://schema/{schema}", "name": "schema", "description": "Tables, views and columns of one schema that you may read", "mimeType": "application/json" }])
}

/// The caller's role and claims, set right after BEGIN.
fn as_caller(caller: &Caller) -> Prelude {
    let who = caller.run_as();
    Prelude {
        sql: SETUP,
        params: vec![
            Box::new(who.role.to_owned()),
            Box::new(who.claims.to_owned()),
            Box::new("POST".to_owned()),
            Box::new("/mcp/v1".to_owned()),
            Box::new("{}".to_owned()),
            Box::new(true),
            Box::new(None::<String>),
            Box::new(None::<String>),
            Box::new("{}".to_owned()),
        ],
    }
}

fn limits(s: &AppState, rows: u64) -> Limits {
    Limits { page_size: rows as usize, offset: 0, timeout_ms: s.config.workbench.statement_timeout_ms, max_bytes: MAX_BYTES, public_only: false, stateless: true }
}

/// A tool result.
fn result(text: String, structured: Option<Value>, is_error: bool) -> Value {
    let mut r = json!({ "content": [{ "type": "text", "text": text }], "isError": is_error });
    if let Some(v) = structured {
        r["structuredContent"] = v;
    }
    r
}

fn failed(e: &WbError) -> Value {
    let mut text = e.message.clone();
    if let Some(state) = &e.sqlstate {
        text = format!("{text} (SQLSTATE {state})");
    }
    if let Some(hint) = &e.hint {
        text = format!("{text}\nHint: {hint}");
    }
    result(text, Some(json!({ "error": { "code": e.code, "message": e.message, "sqlstate": e.sqlstate } })), true)
}

/// One read, classified first (refused unless it is exactly one read).
async fn read_statement(sql: &str) -> Result<Statement, WbError> {
    match classify::classify(sql).await {
        Ok(st) if st.kind.is_read() => Ok(st),
        Ok(st) => Err(WbError::new(
            axum::http::StatusCode::BAD_REQUEST,
            crate::error::code::workbench::READ_ONLY_QUERY_REQUIRED,
            format!("only read-only SQL runs here; this is {}", run::command_of(&st.node)),
        )),
        Err(e) => Err(WbError::new(axum::http::StatusCode::BAD_REQUEST, crate::error::code::workbench::SQL_INVALID, e.to_string())),
    }
}

/// Where a tool runs: this cluster as the caller, or a saved configuration (its
/// target and allowed tables) as its own database user.
enum Where {
    Cluster,
    Saved(Target, Option<Vec<String>>),
}

/// The caller's selected database, resolved for one tool call.
async fn place(s: &AppState, caller: &Caller) -> Result<Where, WbError> {
    match databases::place(s, caller).await.map_err(WbError::invalid)? {
        Place::Cluster => Ok(Where::Cluster),
        Place::Saved(id) => {
            let (t, allowed) = crate::workbench::configs::resolve(s, &Owner::of(caller), &id).await?;
            Ok(Where::Saved(t, allowed))
        }
    }
}

/// Runs a read as the caller on this cluster, or on a saved configuration within its
/// allowed tables.
async fn run_read(s: &AppState, caller: &Caller, at: &Where, st: &Statement, params: &[Value], rows: u64) -> Result<Value, WbError> {
    let out = match at {
        Where::Cluster => {
            // The SQL runs on the gateway's login, a member of every API role: nothing
            // in it may switch the role or the claims, or run SQL text of its own.
            if let Some(f) = crate::db::classify::caller_unsafe(st) {
                return Err(WbError::new(
                    axum::http::StatusCode::FORBIDDEN,
                    crate::error::code::workbench::PERMISSION_DENIED,
                    format!("the function {f} cannot be called here: it could change who the SQL runs as, or run SQL of its own"),
                ));
            }
            let _turn = turn(s).await?;
            let conn = cluster_connection(s).await?;
            let client: &deadpool_postgres::ClientWrapper = &conn;
            run::read_as(client, st, params, limits(s, rows), false, Some(&as_caller(caller))).await?
        }
        Where::Saved(target, allowed) => {
            crate::workbench::allowed::check_allowed(st, allowed)?;
            let mut lim = limits(s, rows);
            lim.public_only = allowed.is_some();
            let _turn = turn(s).await?;
            let mut lease = s.workbench.pools.connect(target).await?;
            let out = run::read(lease.client(), st, params, lim, false).await;
            lease.done();
            out?
        }
    };
    // Rows are PostgreSQL's JSON text; a value nested deeper than serde_json reads
    // (128 levels) is refused here, not a panic.
    let rows = serde_json::to_value(&out.rows).map_err(|_| WbError::invalid("the result holds JSON nested more than 128 levels deep; select it as text"))?;
    Ok(json!({ "sql": st.text, "columns": out.columns, "rows": rows, "row_count": out.rows.len(), "truncated": out.has_next }))
}

/// A connection of the gateway's own pool (for tools on this cluster).
async fn cluster_connection(s: &AppState) -> Result<crate::db::fair::Fair<deadpool_postgres::Object>, WbError> {
    s.pool.get().await.map_err(|e| WbError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, crate::error::code::workbench::CAPACITY, format!("database unavailable: {e}")))
}

/// A place among the tool calls running at once (half the gateway's pool, so auth,
/// storage and /health keep the rest); waits up to 5 s.
async fn turn(s: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, WbError> {
    match tokio::time::timeout(std::time::Duration::from_secs(5), s.agent.running.clone().acquire_owned()).await {
        Ok(Ok(p)) => Ok(p),
        _ => Err(WbError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, crate::error::code::workbench::CAPACITY, "too many tool calls are running; retry shortly")),
    }
}

/// `tools/call`.
pub async fn call(s: &AppState, caller: &Caller, name: &str, args: &Value) -> Result<Value, RpcError> {
    if !TOOL_NAMES.contains(&name) {
        let shown: String = name.chars().take(100).collect();
        return Err(RpcError::params(format!("unknown tool {shown:?}")));
    }
    let at = match place(s, caller).await {
        Ok(at) => at,
        Err(e) => return Ok(failed(&e)),
    };
    let at = &at;
    let text_arg = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_owned);
    match name {
        "execute_sql" => {
            let sql = text_arg("sql").ok_or_else(|| RpcError::params("execute_sql needs \"sql\" (a string)"))?;
            let rows = match args.get("limit") {
                None | Some(Value::Null) => DEFAULT_ROWS,
                Some(v) => v.as_u64().filter(|n| (1..=MAX_ROWS).contains(n)).ok_or_else(|| RpcError::params(format!("limit must be 1 to {MAX_ROWS}")))?,
            };
            let params = match args.get("params") {
                None | Some(Value::Null) => vec![],
                Some(Value::Array(a)) if a.len() <= 100 => a.clone(),
                Some(_) => return Err(RpcError::params("params must be an array of at most 100 values")),
            };
            let outcome = async { run_read(s, caller, at, &read_statement(&sql).await?, &params, rows).await }.await;
            Ok(match outcome {
                Ok(v) => result(format!("SQL: {sql}\n{}", serde_json::to_string(&v["rows"]).unwrap_or_default()), Some(v), false),
                Err(e) => failed(&e),
            })
        }
        "explain_query" => {
            let sql = text_arg("sql").ok_or_else(|| RpcError::params("explain_query needs \"sql\" (a string)"))?;
            let analyze = args.get("analyze").and_then(Value::as_bool).unwrap_or(false);
            let outcome = async {
                let st = read_statement(&sql).await?;
                if st.kind != Kind::Select && analyze {
                    return Err(WbError::invalid("ANALYZE is for SELECT statements"));
                }
                let text = format!("EXPLAIN ({}FORMAT JSON) {}", if analyze { "ANALYZE, " } else { "" }, st.text);
                let explain =
                    Statement { text, kind: Kind::OtherRead, node: "ExplainStmt".into(), relations: st.relations.clone(), functions: st.functions.clone(), params: st.params };
                let params: Vec<Value> = vec![];
                if st.params > 0 {
                    return Err(WbError::invalid("explain_query takes a statement without $n parameters"));
                }
                run_read(s, caller, at, &explain, &params, 10).await
            }
            .await;
            Ok(match outcome {
                Ok(v) => {
                    let plan = v["rows"].get(0).and_then(|r| r.get("QUERY PLAN")).cloned().unwrap_or(Value::Null);
                    result(format!("SQL: {sql}\n{}", serde_json::to_string_pretty(&plan).unwrap_or_default()), Some(json!({ "sql": sql, "plan": plan })), false)
                }
                Err(e) => failed(&e),
            })
        }
        "get_schema_info" => {
            let schema = text_arg("schema");
            Ok(match schema_of(s, caller, at, schema).await {
                Ok(v) => result(serde_json::to_string(&v).unwrap_or_default(), Some(v), false),
                Err(e) => failed(&e),
            })
        }
        "query_database" => {
            let q = text_arg("query")
                .filter(|q| !q.trim().is_empty() && q.len() <= 4000)
                .ok_or_else(|| RpcError::params("query_database needs \"query\" (a string of at most 4000 bytes)"))?;
            Ok(match natural(s, caller, at, &q).await {
                Ok(v) => result(format!("SQL: {}\n{}", v["sql"].as_str().unwrap_or(""), serde_json::to_string(&v["rows"]).unwrap_or_default()), Some(v), false),
                Err(text) => result(text, Some(json!({ "error": { "code": "ERR_LLM" } })), true),
            })
        }
        other => Err(RpcError::params(format!("unknown tool {other:?}"))),
    }
}

/// Natural language → one read through the configured LLM → run as the caller. The
/// model sees the names and types of the tables the caller may read; what it writes is
/// classified and run like any `execute_sql` (it cannot write, and RLS still decides).
async fn natural(s: &AppState, caller: &Caller, at: &Where, question: &str) -> Result<Value, String> {
    let tree = schema_of(s, caller, at, None).await.map_err(|e| e.message)?;
    let mut schema = String::new();
    'outer: for sch in tree["schemas"].as_array().into_iter().flatten() {
        for t in sch["tables"].as_array().into_iter().flatten().chain(sch["views"].as_array().into_iter().flatten()) {
            let cols: Vec<String> =
                t["columns"].as_array().into_iter().flatten().map(|c| format!("{} {}", c["name"].as_str().unwrap_or(""), c["type"].as_str().unwrap_or(""))).collect();
            schema.push_str(&format!("{}.{}({})\n", sch["name"].as_str().unwrap_or(""), t["name"].as_str().unwrap_or(""), cols.join(", ")));
            if schema.len() > 24_000 {
                break 'outer;
            }
        }
    }
    let system = format!(
        "You translate questions into exactly one read-only PostgreSQL query (SELECT or WITH). Answer with the SQL in one ```sql block and nothing else.\nTables:\n{schema}"
    );
    let messages = [json!({ "role": "system", "content": system }), json!({ "role": "user", "content": question })];
    let (provider, answer) = super::llm::chat(s, None, None, &messages, &[], 1024).await.map_err(|(_, m)| format!("query_database needs an LLM: {m}"))?;
    let sql = super::llm::sql_in(&answer.content);
    let st = read_statement(&sql).await.map_err(|e| format!("the model wrote SQL that cannot run here ({}): {sql}", e.message))?;
    let mut v = run_read(s, caller, at, &st, &[], DEFAULT_ROWS).await.map_err(|e| format!("{} (SQL: {sql})", e.message))?;
    v["question"] = json!(question);
    v["provider"] = json!(provider);
    v["model"] = json!(answer.model);
    Ok(v)
}

async fn schema_of(s: &AppState, caller: &Caller, at: &Where, schema: Option<String>) -> Result<Value, WbError> {
    let _turn = turn(s).await?;
    let timeout = s.config.workbench.statement_timeout_ms;
    match at {
        Where::Cluster => {
            let conn = cluster_connection(s).await?;
            let client: &deadpool_postgres::ClientWrapper = &conn;
            crate::workbench::schema::discover_as(client, schema.map(|s| vec![s]), timeout, Some(&as_caller(caller))).await
        }
        Where::Saved(target, allowed) => {
            let mut lease = s.workbench.pools.connect(target).await?;
            let tree = crate::workbench::schema::discover(lease.client(), schema.map(|s| vec![s]), timeout).await;
            lease.done();
            let mut tree = tree?;
            if let Some(allowed) = allowed {
                keep_allowed(&mut tree, allowed);
            }
            Ok(tree)
        }
    }
}

/// Drops from a schema tree the tables and views outside a configuration's
/// allowed_tables (the agent shows only what it may query).
fn keep_allowed(tree: &mut Value, allowed: &[String]) {
    let ok = |schema: &str, name: &str| crate::workbench::allowed::allowed(&Some(allowed.to_vec()), schema, name);
    for sch in tree["schemas"].as_array_mut().into_iter().flatten() {
        let schema = sch["name"].as_str().unwrap_or("").to_owned();
        for key in ["tables", "views"] {
            if let Some(list) = sch[key].as_array_mut() {
                list.retain(|t| ok(&schema, t["name"].as_str().unwrap_or("")));
            }
        }
    }
}

const SYSTEM_INFO_SQL: &str = "select version() as version, current_setting('server_version') as server_version, current_database() as database, \
    session_user as login_role, current_user as role, pg_database_size(current_database()) as database_size_bytes, now() as server_time";
const SETTINGS_SQL: &str = "select name, setting, unit, category, short_desc from pg_settings order by name";

/// `resources/read`.
pub async fn read_resource(s: &AppState, caller: &Caller, uri: &str) -> Result<Value, RpcError> {
    let at = &place(s, caller).await.map_err(|e| RpcError::internal(e.message))?;
    // The server-information statements are the gateway's own: a configuration's
    // allowed_tables (which limit the caller's SQL) do not apply to them.
    let own = &match at {
        Where::Saved(t, _) => Where::Saved(t.clone(), None),
        Where::Cluster => Where::Cluster,
    };
    let body = if uri == "pg://system_info" {
        let st = read_statement(SYSTEM_INFO_SQL).await.map_err(|e| RpcError::internal(e.message))?;
        run_read(s, caller, own, &st, &[], 1).await.map(|v| v["rows"].get(0).cloned().unwrap_or(Value::Null))
    } else if uri == "pg://settings" {
        let st = read_statement(SETTINGS_SQL).await.map_err(|e| RpcError::internal(e.message))?;
        run_read(s, caller, own, &st, &[], MAX_ROWS).await.map(|v| v["rows"].clone())
    } else if let Some(schema) = uri.strip_prefix("pg://schema/").filter(|s| !s.is_empty() && s.len() <= 63 && !s.contains('/')) {
        schema_of(s, caller, at, Some(schema.to_owned())).await
    } else {
        let shown: String = uri.chars().take(200).collect();
        return Err(RpcError { code: -32002, message: format!("resource not found: {shown}") });
    };
    let v = body.map_err(|e| RpcError::internal(e.message))?;
    Ok(json!({ "contents": [{ "uri": uri, "mimeType": "application/json", "text": serde_json::to_string(&v).unwrap_or_default() }] }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_checked_names_are_the_listed_tools() {
        let listed: Vec<String> = super::list().as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect();
        assert_eq!(listed, super::TOOL_NAMES);
    }
}
