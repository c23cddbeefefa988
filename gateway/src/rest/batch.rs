//! POST /rest/v1/batch: several REST operations in one transaction.
//!
//! `atomic: true` (default): all or nothing — 200 with every result, or 422 with the
//! error and `failed_operation`, everything rolled back. `atomic: false`: a savepoint
//! per operation — 200 when all succeed, 207 with per-operation statuses otherwise.
//! String values `"{{id.field}}"` in a body are replaced by that field of an earlier
//! operation's result (keeping its JSON type); inside longer strings they are
//! interpolated as text.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::RestError;
use super::exec::{self, RequestInfo};
use super::plan::{self, OnConflict, Payload};
use super::prefer::Accept;
use super::request;
use super::request::args::Arg;
use super::request::rows::Rows;
use crate::db::schema_cache::SchemaCache;
use crate::error::code::pgrst;
use crate::http::caller::{Caller, CallerError};
use crate::AppState;

/// Most operations one batch may hold.
pub const MAX_OPERATIONS: usize = 100;

/// Most `{{id.field}}` references one batch may resolve.
pub const MAX_REFERENCES: usize = 1000;

/// Most bytes that references may add to a batch's bodies and paths, all operations
/// together (the size of the request body limit): expansion is bounded before
/// anything is copied, so a small request cannot build a large one.
pub const MAX_EXPANSION: usize = 2 * 1024 * 1024;

/// Most bytes (as JSON text) that a batch's operations may return, all together:
/// every result is kept for later references and for the answer, so a batch of
/// reads must not become a large response or a large tree in memory.
pub const MAX_RESULT_BYTES: usize = 4 * 1024 * 1024;

/// What references may still add (checked before every copy), and what results may
/// still return.
struct Budget {
    refs: usize,
    bytes: usize,
    results: usize,
}

impl Budget {
    fn new() -> Budget {
        Budget { refs: MAX_REFERENCES, bytes: MAX_EXPANSION, results: MAX_RESULT_BYTES }
    }
    /// Accounts for one reference that adds `len` bytes.
    fn take(&mut self, len: usize) -> Result<(), RestError> {
        if self.refs == 0 {
            return Err(
                RestError::new(pgrst::INVALID_BODY, format!("a batch may resolve at most {MAX_REFERENCES} references"), None, None).with_status(StatusCode::PAYLOAD_TOO_LARGE)
            );
        }
        self.refs -= 1;
        self.bytes = self.bytes.checked_sub(len).ok_or_else(|| {
            RestError::new(pgrst::INVALID_BODY, format!("references would expand the batch past {MAX_EXPANSION} bytes"), None, None).with_status(StatusCode::PAYLOAD_TOO_LARGE)
        })?;
        Ok(())
    }
    /// Accounts for one operation's result text, before it is parsed.
    fn take_result(&mut self, text: Option<&str>) -> Result<(), RestError> {
        let len = text.map_or(0, str::len);
        self.results = self.results.checked_sub(len).ok_or_else(|| {
            RestError::new(
                pgrst::RESPONSE_TOO_LARGE,
                format!("the batch's results would be larger than {MAX_RESULT_BYTES} bytes"),
                None,
                Some("Read with limit / select, or in separate requests"),
            )
        })?;
        Ok(())
    }
}

/// Bytes a JSON value takes as text, counted without building the text (stops
/// counting once past `limit`).
fn json_len(v: &Value, limit: usize) -> usize {
    fn walk(v: &Value, acc: &mut usize, limit: usize) {
        if *acc > limit {
            return;
        }
        match v {
            Value::Null | Value::Bool(_) => *acc += 5,
            Value::Number(_) => *acc += 24,
            Value::String(s) => *acc += s.len() + 2,
            Value::Array(a) => {
                *acc += 2;
                for x in a {
                    walk(x, acc, limit);
                    *acc += 1;
                }
            }
            Value::Object(m) => {
                *acc += 2;
                for (k, x) in m {
                    *acc += k.len() + 4;
                    walk(x, acc, limit);
                }
            }
        }
    }
    let mut acc = 0;
    walk(v, &mut acc, limit);
    acc
}

#[derive(Deserialize)]
struct BatchBody {
    #[serde(default = "yes")]
    atomic: bool,
    operations: Vec<Operation>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct Operation {
    id: Option<String>,
    method: String,
    path: String,
    body: Option<Value>,
}

/// The handler.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn batch(State(s): State<AppState>, caller: Result<Caller, CallerError>, headers: HeaderMap, body: Bytes) -> Result<(StatusCode, Json<Value>), RestError> {
    let caller = caller?;
    let b: BatchBody = serde_json::from_slice(&body).map_err(|e| RestError::of(pgrst::INVALID_BODY, format!("invalid batch body: {e}")))?;
    if b.operations.is_empty() || b.operations.len() > MAX_OPERATIONS {
        return Err(RestError::of(pgrst::INVALID_BODY, format!("a batch holds 1 to {MAX_OPERATIONS} operations")));
    }
    let ids: Vec<String> = b.operations.iter().enumerate().map(|(i, o)| o.id.clone().unwrap_or_else(|| i.to_string())).collect();
    if (1..ids.len()).any(|i| ids[..i].contains(&ids[i])) {
        return Err(RestError::of(pgrst::INVALID_BODY, "operation ids must be unique"));
    }
    let cache = super::ensure_cache(&s).await?;
    let anon = caller.role == pgstack_shared::Role::Anon;
    let (headers_json, cookies) = crate::db::caller::request_settings(&headers);
    // The role's statement_timeout holds for each statement, and for the batch as a
    // whole: one request may not buy more database time than one statement.
    let role_timeout = cache.role_timeouts.get(&caller.pg_role).cloned();
    let bound = role_timeout.as_deref().and_then(crate::db::caller::timeout_duration);
    let info = RequestInfo { method: "POST", path: "/batch", headers: headers_json, cookies, statement_timeout: role_timeout.clone(), ..Default::default() };
    let mut client = crate::db::Guarded::get(&s.rest_tx).await?;
    let run = run_batch(&mut client, &b, &ids, &cache, &caller, &headers, &info, anon);
    let out = match bound {
        Some(limit) => tokio::time::timeout(limit, run).await.ok(),
        None => Some(run.await),
    };
    match out {
        Some(out) => {
            client.finish();
            out
        }
        // Dropped armed: the running statement is cancelled, the transaction rolled back.
        None => Err(RestError::new(
            pgrst::STATEMENT_TIMEOUT,
            "canceling statement due to statement timeout",
            Some(format!("the batch ran longer than the statement_timeout of role {} ({})", caller.pg_role, role_timeout.unwrap_or_default())),
            Some("Split the batch, or make its operations cheaper"),
        )),
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_batch(
    client: &mut deadpool_postgres::Object,
    b: &BatchBody,
    ids: &[String],
    cache: &SchemaCache,
    caller: &Caller,
    headers: &HeaderMap,
    info: &RequestInfo<'_>,
    anon: bool,
) -> Result<(StatusCode, Json<Value>), RestError> {
    let tx = exec::begin(client, caller, info).await?;
    let db = |e| RestError::from_db(e, anon);

    let mut results = Vec::new();
    let mut done: HashMap<String, Value> = HashMap::new();
    let mut failures = 0;
    let mut budget = Budget::new();
    for (op, id) in b.operations.iter().zip(ids) {
        if !b.atomic {
            tx.batch_execute("SAVEPOINT pgstack_batch_op").await.map_err(db)?;
        }
        let prepared = op.body.clone().map(|v| substitute(v, &done, &mut budget)).transpose().and_then(|b| Ok((b, interpolate(&op.path, &done, true, &mut budget)?)));
        let outcome = match prepared {
            Ok((body, path)) => run_op(&tx, cache, headers, op, &path, body, anon, &mut budget).await,
            Err(e) => Err(e),
        };
        // Over a budget (expansion or results): the whole batch is refused (rolled back).
        let outcome = match outcome {
            Err(e) if e.status == StatusCode::PAYLOAD_TOO_LARGE => return Err(e),
            other => other,
        };
        match outcome {
            Ok((status, data)) => {
                if !b.atomic {
                    tx.batch_execute("RELEASE SAVEPOINT pgstack_batch_op").await.map_err(db)?;
                }
                done.insert(id.clone(), data.clone());
                results.push(json!({"id": id, "status": status.as_u16(), "data": data}));
            }
            Err(e) if b.atomic => {
                let _ = tx.rollback().await;
                return Ok((
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Json(json!({
                        "error": e.message, "message": e.message, "code": e.code, "details": e.details, "hint": e.hint,
                        "failed_operation": id, "status": e.status.as_u16(),
                    })),
                ));
            }
            Err(e) => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT pgstack_batch_op").await.map_err(db)?;
                failures += 1;
                results.push(json!({"id": id, "status": e.status.as_u16(), "error": e.message, "code": e.code, "details": e.details}));
            }
        }
    }
    tx.commit().await.map_err(db)?;
    let status = if failures > 0 { StatusCode::MULTI_STATUS } else { StatusCode::OK };
    Ok((status, Json(json!({ "results": results }))))
}

/// One operation: (status, data).
#[allow(clippy::too_many_arguments)] // the batch's context, passed down as it is
async fn run_op(
    tx: &deadpool_postgres::Transaction<'_>,
    cache: &SchemaCache,
    headers: &HeaderMap,
    op: &Operation,
    path: &str,
    body: Option<Value>,
    anon: bool,
    budget: &mut Budget,
) -> Result<(StatusCode, Value), RestError> {
    let path = path.strip_prefix("/rest/v1").unwrap_or(path);
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let name = path.trim_start_matches('/');
    let method: Method = op.method.to_ascii_uppercase().parse().map_err(|_| RestError::of(pgrst::UNSUPPORTED_METHOD, format!("unknown method {:?}", op.method)))?;
    let schema = super::prefer::schema(headers, &method, &cache.schemas)?;
    let q = request::parse_query(query, false)?;

    if let Some(fname) = name.strip_prefix("rpc/") {
        let f = cache.function(schema, fname).ok_or_else(|| {
            let all: Vec<&str> = cache.functions.keys().filter(|(s, _)| s == schema).map(|(_, n)| n.as_str()).collect();
            super::plan::no_function(schema, fname, &[], &[], &all, false)
        })?;
        let args: Vec<(String, Arg)> = match body {
            Some(Value::Object(m)) => m
                .into_iter()
                .map(|(k, v)| {
                    let arg = match v {
                        Value::Null => Arg::Null,
                        Value::String(s) => Arg::Text(s),
                        other => Arg::Json(other.to_string()),
                    };
                    (k, arg)
                })
                .collect(),
            None => Vec::new(),
            _ => return Err(RestError::of(pgrst::INVALID_BODY, "RPC arguments must be a JSON object")),
        };
        let sql = plan::call(cache, f, &args, None, &q, None, Accept::Json)?;
        let out = exec::statement(tx, &sql, true, anon).await?;
        budget.take_result(out.body.as_deref())?;
        let data = serde_json::from_str(out.body.as_deref().unwrap_or("null")).unwrap_or(Value::Null);
        return Ok((StatusCode::OK, data));
    }

    let table = cache.table(schema, name).ok_or_else(|| super::plan::no_table(cache, schema, name))?;
    let single = matches!(body, Some(Value::Object(_))) && method == Method::POST;
    let (sql, status) = match method {
        Method::GET => (plan::read(cache, table, &q, None, Accept::Json)?, StatusCode::OK),
        Method::POST => {
            let rows = Rows::from_value(&body.unwrap_or(Value::Null))?;
            let payload = Payload::new(&rows, q.columns.as_deref())?;
            (plan::insert(cache, table, &q, &payload, OnConflict::Error, Some(Accept::Json), false)?, StatusCode::CREATED)
        }
        Method::PATCH | Method::DELETE if q.conditions.is_empty() => {
            return Err(RestError::of(pgrst::NO_WHERE_CLAUSE, format!("{} requires a WHERE clause", if method == Method::PATCH { "UPDATE" } else { "DELETE" })))
        }
        Method::PATCH => {
            let rows = Rows::from_value(&body.unwrap_or(Value::Null))?;
            let payload = Payload::new(&rows, None)?;
            (plan::update(cache, table, &q, &payload, Some(Accept::Json), false)?, StatusCode::OK)
        }
        Method::DELETE => (plan::delete(cache, table, &q, Some(Accept::Json))?, StatusCode::OK),
        other => return Err(RestError::new(pgrst::UNSUPPORTED_METHOD, format!("Unsupported HTTP method: {other}"), None, None)),
    };
    let out = exec::statement(tx, &sql, true, anon).await?;
    budget.take_result(out.body.as_deref())?;
    let rows: Value = serde_json::from_str(out.body.as_deref().unwrap_or("[]")).unwrap_or(Value::Array(vec![]));
    let data = match (&rows, single) {
        (Value::Array(a), true) if a.len() == 1 => a[0].clone(),
        _ => rows,
    };
    Ok((status, data))
}

/// Replaces `{{id.field}}` references with values from earlier results.
fn substitute(v: Value, done: &HashMap<String, Value>, budget: &mut Budget) -> Result<Value, RestError> {
    Ok(match v {
        Value::String(s) => {
            let t = s.trim();
            if t.starts_with("{{") && t.ends_with("}}") && t.matches("{{").count() == 1 {
                let found = lookup(&t[2..t.len() - 2], done)?;
                budget.take(json_len(found, budget.bytes))?;
                found.clone()
            } else if s.contains("{{") {
                Value::String(interpolate(&s, done, false, budget)?)
            } else {
                Value::String(s)
            }
        }
        Value::Array(a) => Value::Array(a.into_iter().map(|x| substitute(x, done, budget)).collect::<Result<_, _>>()?),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, x)| Ok((k, substitute(x, done, budget)?))).collect::<Result<_, RestError>>()?),
        other => other,
    })
}

/// Replaces every `{{id.field}}` inside `s` by the value as text (percent-encoded
/// for paths).
fn interpolate(s: &str, done: &HashMap<String, Value>, url: bool, budget: &mut Budget) -> Result<String, RestError> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let end = rest[start..].find("}}").ok_or_else(|| RestError::of(pgrst::INVALID_BODY, "unclosed reference"))? + start;
        out.push_str(&rest[..start]);
        let found = lookup(&rest[start + 2..end], done)?;
        // Percent-encoding at most triples a byte.
        let factor = if url { 3 } else { 1 };
        budget.take(json_len(found, budget.bytes).saturating_mul(factor))?;
        let text = match found {
            Value::String(x) => x.clone(),
            other => other.to_string(),
        };
        if url {
            out.extend(form_urlencoded::byte_serialize(text.as_bytes()));
        } else {
            out.push_str(&text);
        }
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn lookup<'a>(reference: &str, done: &'a HashMap<String, Value>) -> Result<&'a Value, RestError> {
    let shown: String = reference.chars().take(64).collect();
    let unknown = || RestError::of(pgrst::INVALID_BODY, format!("unknown reference {{{{{shown}}}}}"));
    let (id, path) = reference.trim().split_once('.').ok_or_else(unknown)?;
    let mut cur = done.get(id).ok_or_else(unknown)?;
    if let Value::Array(a) = cur {
        cur = a.first().ok_or_else(unknown)?;
    }
    for part in path.split('.') {
        cur = match cur {
            Value::Object(m) => m.get(part).ok_or_else(unknown)?,
            Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)).ok_or_else(unknown)?,
            _ => return Err(unknown()),
        };
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_keep_types_and_interpolate() {
        let mut done = HashMap::new();
        done.insert("create".to_owned(), json!({"id": 42, "name": "x", "tags": ["a"]}));
        done.insert("many".to_owned(), json!([{"id": 7}]));
        let b = &mut Budget::new();
        let got = substitute(json!({"order_id": "{{create.id}}", "label": "order {{create.id}} of {{create.name}}", "first": "{{many.id}}", "t": "{{create.tags.0}}"}), &done, b)
            .unwrap();
        assert_eq!(got, json!({"order_id": 42, "label": "order 42 of x", "first": 7, "t": "a"}));
        assert!(substitute(json!("{{nope.id}}"), &done, b).is_err());
        assert!(substitute(json!("{{create.missing}}"), &done, b).is_err());
    }

    #[test]
    fn results_are_bounded_in_total() {
        let mut b = Budget::new();
        let chunk = "x".repeat(MAX_RESULT_BYTES / 4);
        for _ in 0..4 {
            b.take_result(Some(&chunk)).unwrap();
        }
        assert_eq!(b.take_result(Some("[]")).unwrap_err().status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(Budget::new().take_result(None).is_ok());
    }

    #[test]
    fn expansion_is_bounded_before_it_is_built() {
        let mut done = HashMap::new();
        done.insert("a".to_owned(), json!({"title": "x".repeat(100_000)}));
        // 20,000 references to a 100 kB value in one string: refused, not built.
        let e = substitute(json!({"t": "{{a.title}}".repeat(20_000)}), &done, &mut Budget::new()).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        let many: Vec<Value> = (0..30).map(|_| json!("{{a.title}}")).collect();
        let e = substitute(Value::Array(many), &done, &mut Budget::new()).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE, "whole-value copies count too");
        done.insert("b".to_owned(), json!({"n": 1}));
        let refs: Vec<Value> = (0..MAX_REFERENCES).map(|_| json!("{{b.n}}")).collect();
        assert!(substitute(Value::Array(refs.clone()), &done, &mut Budget::new()).is_ok());
        let mut over = refs;
        over.push(json!("{{b.n}}"));
        let e = substitute(Value::Array(over), &done, &mut Budget::new()).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE, "reference count is bounded");
        assert!(substitute(json!({"t": "{{a.title}}"}), &done, &mut Budget::new()).is_ok());
    }
}
