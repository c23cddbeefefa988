//! /rest/v1 handlers: request → auth (Caller) → plan → exec → response.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, Response, StatusCode};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::error::RestError;
use super::exec::{self, RequestInfo};
use super::plan::{self, CountMode, OnConflict, Payload};
use super::prefer::{self, Accept, Return};
use super::request::api::{Action, ApiRequest, Target};
use super::request::args::Arg;
use super::request::{self, QueryParams};
use super::response::{self, JSON};
use crate::db::schema_cache::SchemaCache;
use crate::error::code::pgrst;
use crate::http::caller::{Caller, CallerError};
use crate::AppState;

/// Every /rest/v1 route of REST itself (the router mounts webhooks beside them).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(super::openapi::openapi).options(super::openapi::options))
        .route("/rls-debug", get(rls_debug))
        .route("/batch", post(super::batch::batch))
        .route("/rpc/{function}", any(rpc))
        .route("/{relation}", any(relation))
        .route("/{relation}/{*rest}", any(invalid_path))
}

/// PostgREST's Content-Location of a read: the path and the query string with its
/// parameters in canonical (key-sorted, otherwise kept) order.
fn content_location(path: &str, raw: Option<&str>) -> String {
    let mut pairs: Vec<&str> = raw.unwrap_or("").split('&').filter(|p| !p.is_empty()).collect();
    pairs.sort_by_key(|p| p.split('=').next().unwrap_or(""));
    if pairs.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", pairs.join("&"))
    }
}

/// A plain (non-CORS) OPTIONS: 200, no body, the methods the resource takes.
fn allow(methods: &str) -> Response<Body> {
    let mut res = Response::new(Body::empty());
    if let Ok(v) = axum::http::HeaderValue::from_str(methods) {
        res.headers_mut().insert(axum::http::header::ALLOW, v);
    }
    res.headers_mut().insert(axum::http::header::CONTENT_LENGTH, axum::http::HeaderValue::from_static("0"));
    response::vary(res.headers_mut());
    res
}

/// A media-type function's value as the body: its bytes (a bytea domain's hex
/// decoded) under the domain's name (`*/*`: application/octet-stream), with a
/// charset only for the text types PostgREST gives one; `response.headers` may set
/// another Content-Type.
fn media_response(out: exec::Outcome, media: &str, bytea: bool, with_body: bool) -> Result<Response<Body>, RestError> {
    // NULL: an empty body.
    let text = out.body.clone().unwrap_or_default();
    let bytes = if bytea { decode_hex(&text).ok_or_else(|| RestError::internal(anyhow::anyhow!("a bytea value that is not hex")))? } else { text.into_bytes() };
    let ct = match media {
        "*/*" => "application/octet-stream".to_owned(),
        m if matches!(m, "text/plain" | "text/xml" | "text/csv" | "application/json" | "application/geo+json") => format!("{m}; charset=utf-8"),
        m => m.to_owned(),
    };
    let mut res = Response::new(if with_body { Body::from(bytes) } else { Body::empty() });
    if let Ok(v) = axum::http::HeaderValue::from_str(&ct) {
        res.headers_mut().insert(axum::http::header::CONTENT_TYPE, v);
    }
    response::apply_gucs(&mut res, &out)?;
    Ok(res)
}

/// `0a1b…` (`encode(.., 'hex')`) → bytes.
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let hex = text.as_bytes();
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    hex.chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

/// Nested paths name no resource (PostgREST's PGRST125).
async fn invalid_path() -> RestError {
    RestError::new(pgrst::INVALID_PATH, "Invalid path specified in request URL", None, None)
}

/// GET /rest/v1/rls-debug: the role and claims a request runs with.
async fn rls_debug(caller: Caller) -> Json<Value> {
    Json(json!({ "role": caller.pg_role, "claims": caller.claims.value() }))
}

async fn cache(s: &AppState) -> Result<Arc<SchemaCache>, RestError> {
    super::ensure_cache(s).await
}

/// Any method on /rest/v1/{relation}: parse, find the relation, one handler per action.
#[tracing::instrument(level = "debug", skip_all, fields(%method, table = %name))]
async fn relation(
    State(s): State<AppState>,
    method: Method,
    Path(name): Path<String>,
    caller: Result<Caller, CallerError>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response<Body>, RestError> {
    let caller = caller?;
    let cache = cache(&s).await?;
    let mut req = ApiRequest::parse(method, Target::Relation, &name, &headers, raw, &body, &cache.schemas)?;
    // The rows are in `req` now; the body need not wait with them for a connection.
    drop(body);
    req.prefer.rollback = s.config.db_tx_end.rollback(req.prefer.tx.as_deref());
    let table = cache.table(&req.schema, &name).ok_or_else(|| plan::no_table(&cache, &req.schema, &name))?;
    if req.action == Action::Create && table.primary_key.is_empty() && req.query.on_conflict.is_none() {
        req.prefer.forget_resolution();
    }
    let mut info = req.info();
    info.statement_timeout = cache.role_timeouts.get(&caller.pg_role).cloned();
    // Only triggers, rules and the pre-request function can set the response GUCs of
    // a table's write: without them, no statement reads them back.
    info.response_gucs &= !(table.quiet && super::settings().pre_request_sql.is_none());
    if req.plan.is_some() && !matches!(req.action, Action::Read { .. }) {
        // Plans are offered for reads and function calls.
        return Err(prefer::unacceptable(&headers));
    }
    let cx = Cx { s: &s, caller: &caller, cache: &cache, table, req: &req, info };
    let res = match req.action {
        Action::Info => return Ok(allow(&table.allow())),
        Action::Read { body } => read(&cx, body).await,
        Action::Create => create(&cx).await,
        Action::Update | Action::Delete => update_or_delete(&cx).await,
        Action::Put => put(&cx).await,
        Action::Call { .. } => Err(RestError::internal(anyhow::anyhow!("a call on a relation"))),
    }?;
    Ok(cx.decorate(res))
}

/// What every relation handler reads: the state, the caller, the schema cache, the
/// relation and the parsed request.
struct Cx<'a> {
    s: &'a AppState,
    caller: &'a Caller,
    cache: &'a SchemaCache,
    table: &'a crate::db::schema_cache::Table,
    req: &'a ApiRequest,
    info: RequestInfo<'a>,
}

impl Cx<'_> {
    /// Headers every successful answer carries: `Preference-Applied` and, when
    /// several schemas are exposed, `Content-Profile`.
    fn decorate(&self, res: Response<Body>) -> Response<Body> {
        let mutation = !matches!(self.req.action, Action::Read { .. } | Action::Info);
        decorate(res, self.s, self.req, mutation, &self.cache.schemas)
    }

    /// `Prefer: return=representation`: the media type of the returned rows.
    fn returning(&self) -> Option<Accept> {
        (self.req.prefer.ret == Return::Representation).then_some(self.req.accept)
    }

    fn payload(&self, columns: Option<&[String]>) -> Result<Payload<'_>, RestError> {
        let rows = self.req.rows.as_ref().ok_or_else(|| RestError::of(pgrst::INVALID_BODY, "Empty or invalid json"))?;
        Payload::new(rows, columns)
    }
}

/// GET / HEAD: the rows, their range and Content-Location.
async fn read(cx: &Cx<'_>, with_body: bool) -> Result<Response<Body>, RestError> {
    let (req, q) = (cx.req, &cx.req.query);
    let count = CountMode::from_prefer(req.prefer.count.as_deref());
    let sql = plan::read(cx.cache, cx.table, q, count, req.accept)?;
    if let Some(p) = &req.plan {
        return explained(cx.s, cx.caller, &cx.info, &sql, p, with_body).await;
    }
    let out = exec::run(cx.s, cx.caller, &cx.info, &sql, true, req.prefer.rollback).await?;
    let offset = q.offset.unwrap_or(0);
    let range = response::content_range(offset, out.count, out.total);
    let status = match out.total {
        Some(t) if offset > 0 && offset >= t => {
            let mut e =
                RestError::new(pgrst::INVALID_RANGE, "Requested range not satisfiable", Some(format!("An offset of {offset} was requested, but there are only {t} rows.")), None);
            e.headers.push(("content-range".into(), format!("*/{t}")));
            return Err(e);
        }
        Some(t) if out.count < t => StatusCode::PARTIAL_CONTENT,
        _ => StatusCode::OK,
    };
    let (body, ct) = response::rows(&out, req.accept)?;
    let mut res = response::build(status, with_body.then_some(body), ct, Some(range));
    if !with_body {
        res.headers_mut().insert("content-type", response::header_value(ct));
    }
    if let Ok(v) = axum::http::HeaderValue::from_str(&content_location(&req.path, req.raw_query.as_deref())) {
        res.headers_mut().insert(axum::http::header::CONTENT_LOCATION, v);
    }
    Ok(res)
}

/// The plan of a statement instead of its result (`Accept:
/// application/vnd.pgrst.plan`, DB_PLAN_ENABLED).
async fn explained(s: &AppState, caller: &Caller, info: &exec::RequestInfo<'_>, sql: &crate::db::sql::Sql, p: &prefer::Plan, with_body: bool) -> Result<Response<Body>, RestError> {
    let text = exec::explain(s, caller, info, sql, &p.explain()).await?;
    let mut res = Response::new(if with_body { Body::from(text) } else { Body::empty() });
    if let Ok(v) = axum::http::HeaderValue::from_str(&p.content_type()) {
        res.headers_mut().insert(axum::http::header::CONTENT_TYPE, v);
    }
    Ok(res)
}

/// POST: insert, or upsert with `Prefer: resolution=`.
async fn create(cx: &Cx<'_>) -> Result<Response<Body>, RestError> {
    let (req, q) = (cx.req, &cx.req.query);
    let payload = cx.payload(q.columns.as_deref())?;
    let conflict = match req.prefer.resolution.as_deref() {
        Some("merge-duplicates") => OnConflict::Merge,
        Some("ignore-duplicates") => OnConflict::Ignore,
        _ => OnConflict::Error,
    };
    let returning = cx.returning();
    if payload.rows.len == 0 {
        if matches!(req.accept, Accept::Object | Accept::ObjectStripped) {
            return Err(RestError::new(pgrst::SINGULAR, "Cannot coerce the result to a single JSON object", Some("The result contains 0 rows".into()), None));
        }
        // Nothing to insert: no statement (an upsert of nothing is a 200).
        let status = if conflict == OnConflict::Error { StatusCode::CREATED } else { StatusCode::OK };
        let body = returning.map(|_| "[]".to_owned());
        return Ok(response::build(status, body, JSON, Some("*/*".into())));
    }
    if req.prefer.ret == Return::HeadersOnly && !cx.table.primary_key.is_empty() {
        return insert_headers_only(cx, q.clone(), &payload, conflict).await;
    }
    let sql = plan::insert(cx.cache, cx.table, q, &payload, conflict, returning, req.prefer.missing_default)?;
    write(cx, sql, StatusCode::CREATED, false).await
}

/// PATCH / DELETE: the filtered rows.
async fn update_or_delete(cx: &Cx<'_>) -> Result<Response<Body>, RestError> {
    let (req, q) = (cx.req, &cx.req.query);
    let update = req.action == Action::Update;
    // An update with nothing to set (`{}`, `[]`, `[{}]`) changes nothing, filtered or
    // not (PostgREST: 204, or 200 `[]` with a representation).
    let payload = if update { Some(cx.payload(q.columns.as_deref())?) } else { None };
    if payload.as_ref().is_some_and(|p| p.columns.is_empty()) {
        let returning = cx.returning();
        let status = if returning.is_some() { StatusCode::OK } else { StatusCode::NO_CONTENT };
        return Ok(response::build(status, returning.map(|_| "[]".to_owned()), JSON, Some("*/*".into())));
    }
    // Never wider than asked: a limited PATCH / DELETE is refused, not run on every
    // matching row (limit and offset are not applied to writes here).
    if q.limit.is_some() || q.offset.is_some() {
        return Err(RestError::new(
            pgrst::QUERY_PARSE,
            format!("limit/offset are not supported on {}", if update { "PATCH" } else { "DELETE" }),
            None,
            Some("filter the rows to change by their key instead, e.g. ?id=eq.1"),
        ));
    }
    if q.conditions.is_empty() {
        // pg-safeupdate's code and wording, as PostgREST setups report it.
        let verb = if update { "UPDATE" } else { "DELETE" };
        return Err(RestError::new(pgrst::NO_WHERE_CLAUSE, format!("{verb} requires a WHERE clause"), None, Some("add a filter, e.g. ?id=eq.1")));
    }
    let returning = cx.returning();
    let sql = match &payload {
        Some(p) => plan::update(cx.cache, cx.table, q, p, returning, req.prefer.missing_default)?,
        None => plan::delete(cx.cache, cx.table, q, returning)?,
    };
    let ok = if returning.is_some() { StatusCode::OK } else { StatusCode::NO_CONTENT };
    // PostgREST: an update reports its rows as a range, a delete only the count.
    write(cx, sql, ok, update).await
}

/// PUT: one row by its primary key.
async fn put(cx: &Cx<'_>) -> Result<Response<Body>, RestError> {
    let returning = cx.returning();
    let sql = plan::put(cx.cache, cx.table, &cx.req.query, &cx.payload(None)?, returning)?;
    let out = exec::run(cx.s, cx.caller, &cx.info, &sql, returning.is_some(), cx.req.prefer.rollback).await?;
    let mut res = match returning {
        None => response::build(StatusCode::NO_CONTENT, None, JSON, None),
        Some(accept) => {
            let status = if out.total == Some(1) { StatusCode::CREATED } else { StatusCode::OK };
            let (body, ct) = response::rows(&out, accept)?;
            response::build(status, Some(body), ct, None)
        }
    };
    response::apply_gucs(&mut res, &out)?;
    Ok(res)
}

/// POST with `Prefer: return=headers-only`: 201 with `Location: /table?pk=eq.value`
/// of the (first) inserted row, no body.
async fn insert_headers_only(cx: &Cx<'_>, mut q: QueryParams, payload: &Payload<'_>, conflict: OnConflict) -> Result<Response<Body>, RestError> {
    let (table, pref) = (cx.table, &cx.req.prefer);
    q.select = table.primary_key.iter().map(|c| request::SelectItem::Field { field: request::Field { column: c.clone(), path: Vec::new() }, alias: None, cast: None }).collect();
    let sql = plan::insert(cx.cache, table, &q, payload, conflict, Some(Accept::Json), pref.missing_default)?;
    let out = exec::run(cx.s, cx.caller, &cx.info, &sql, true, pref.rollback).await?;
    let rows: Value = serde_json::from_str(out.body.as_deref().unwrap_or("[]")).unwrap_or(Value::Null);
    let total = pref.count.as_ref().map(|_| out.count);
    let mut res = response::build(StatusCode::CREATED, None, JSON, Some(response::content_range(0, 0, total)));
    // Only a single inserted row has a location (PostgREST: `count = 1`).
    if let Some(row) = rows.as_array().filter(|a| a.len() == 1).and_then(|a| a.first()) {
        let mut loc = form_urlencoded::Serializer::new(String::new());
        for c in &table.primary_key {
            let v = match &row[c.as_str()] {
                Value::String(t) => t.clone(),
                other => other.to_string(),
            };
            loc.append_pair(c, &format!("eq.{v}"));
        }
        if let Ok(v) = axum::http::HeaderValue::from_str(&format!("/{}?{}", table.name, loc.finish())) {
            res.headers_mut().insert("location", v);
        }
    }
    response::apply_gucs(&mut res, &out)?;
    Ok(res)
}

/// Headers every successful answer carries: `Vary`, `Preference-Applied`, a
/// deprecation `Warning` and, when several schemas are exposed, `Content-Profile`.
fn decorate(mut res: Response<Body>, s: &AppState, req: &ApiRequest, mutation: bool, exposed: &[String]) -> Response<Body> {
    let (pref, schema) = (&req.prefer, req.schema.as_str());
    let h = res.headers_mut();
    response::vary(h);
    if let Some(v) = req.warning.as_deref().and_then(|w| axum::http::HeaderValue::from_str(w).ok()) {
        h.insert(axum::http::header::WARNING, v);
    }
    if let Some(applied) = pref.applied(s.config.db_tx_end.overridable, mutation) {
        if let Ok(v) = axum::http::HeaderValue::from_str(&applied) {
            h.insert("preference-applied", v);
        }
    }
    if exposed.len() > 1 {
        if let Ok(v) = axum::http::HeaderValue::from_str(schema) {
            h.insert("content-profile", v);
        }
    }
    res
}

/// Runs a write and answers with its status, range and (with return=representation)
/// its rows.
async fn write(cx: &Cx<'_>, sql: crate::db::sql::Sql, status: StatusCode, ranged: bool) -> Result<Response<Body>, RestError> {
    let pref = &cx.req.prefer;
    let returning = cx.returning();
    let out = exec::run(cx.s, cx.caller, &cx.info, &sql, returning.is_some(), pref.rollback).await?;
    let total = pref.count.as_ref().map(|_| out.count);
    let range = response::content_range(0, if ranged { out.count } else { 0 }, total);
    // An upsert that only updated existing rows created nothing: 200, not 201.
    let status = if status == StatusCode::CREATED && pref.resolution.is_some() && out.total == Some(0) && out.count > 0 { StatusCode::OK } else { status };
    let mut res = match returning {
        None => response::build(status, None, JSON, Some(range)),
        Some(accept) => {
            let (body, ct) = response::rows(&out, accept)?;
            response::build(status, Some(body), ct, Some(range))
        }
    };
    response::apply_gucs(&mut res, &out)?;
    Ok(res)
}

/// GET / HEAD / POST /rest/v1/rpc/{function}.
#[tracing::instrument(level = "debug", skip_all, fields(function = %name))]
async fn rpc(
    State(s): State<AppState>,
    method: Method,
    Path(name): Path<String>,
    caller: Result<Caller, CallerError>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response<Body>, RestError> {
    let caller = caller?;
    let cache = cache(&s).await?;
    let mut req = ApiRequest::parse(method, Target::Function, &name, &headers, raw, &body, &cache.schemas)?;
    // The arguments are in `req` now.
    drop(body);
    req.prefer.rollback = s.config.db_tx_end.rollback(req.prefer.tx.as_deref());
    // The arguments: the query string's on GET; on POST the body's object (or an
    // array's first object, as PostgREST binds it), or the form's pairs.
    let call = req.call.take();
    let post_json = call.is_some() && req.form.is_none();
    let raw_type = call.as_ref().and_then(|c| c.raw_type);
    let (named, whole_body, too_many): (Vec<(String, Arg)>, Option<String>, bool) = match call {
        None => (req.query.rest.iter().map(|(k, v)| (k.clone(), Arg::Text(v.clone()))).collect(), None, false),
        Some(c) => (c.args, Some(c.raw), c.too_many),
    };
    let schema = req.schema.as_str();
    let overloads = cache.overloads(schema, &name);
    let given_names = || -> Vec<String> { named.iter().map(|(k, _)| k.clone()).collect() };
    if overloads.is_empty() {
        let all: Vec<&str> = cache.functions.keys().filter(|(s, _)| s == schema).map(|(_, n)| n.as_str()).collect();
        let names = given_names();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        return Err(plan::no_function(schema, &name, &names, &[], &all, post_json));
    }
    let with_body = match req.action {
        Action::Info => {
            // Volatile functions only take POST (GET runs READ ONLY).
            let volatile = overloads.iter().any(|f| f.volatility == 'v');
            return Ok(allow(if volatile { "OPTIONS,POST" } else { "OPTIONS,GET,HEAD,POST" }));
        }
        Action::Call { body, .. } => body,
        _ => return Err(RestError::internal(anyhow::anyhow!("a relation action on a function"))),
    };
    let (q, pref, accept) = (&req.query, &req.prefer, req.accept);
    let mut given: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    given.dedup();
    given.sort_unstable();
    given.dedup();
    let single_json = |f: &crate::db::schema_cache::Function| f.args.len() == 1 && f.args[0].0.is_empty() && matches!(f.args[0].1.as_str(), "json" | "jsonb");
    let single_raw = |f: &crate::db::schema_cache::Function| f.args.len() == 1 && f.args[0].0.is_empty() && Some(f.args[0].1.as_str()) == raw_type;
    let (f, args, whole) = if raw_type.is_some() {
        // A raw body (bytes, text, XML) goes to the one unnamed parameter of its type.
        let f = overloads.iter().find(|f| single_raw(f)).ok_or_else(|| plan::no_function(schema, &name, &[], overloads, &[], false))?;
        (f, Vec::new(), whole_body.as_deref())
    } else if let Some(f) = overloads.iter().find(|f| !too_many && f.accepts(&given)) {
        (f, merge_repeated(f, named), None)
    } else if let (Some(f), Some(b)) = (overloads.iter().find(|f| single_json(f)), whole_body.as_deref()) {
        (f, Vec::new(), Some(b))
    } else {
        let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
        return Err(plan::no_function(schema, &name, &names, overloads, &[], post_json));
    };
    if pref.strict && pref.max_affected.is_some() && !f.returns_set {
        return Err(RestError::new(pgrst::MAX_AFFECTED_SINGLE, "Function must return SETOF or TABLE when max-affected preference is used with handling=strict", None, None));
    }
    // A function's result is counted exactly or not at all: there is no plan to
    // estimate from (PostgREST: `planned` gives no total, `estimated` an exact one).
    let count = match CountMode::from_prefer(pref.count.as_deref()) {
        Some(CountMode::Planned) => None,
        Some(_) => Some(CountMode::Exact),
        None => None,
    };
    let mut info = req.info();
    info.statement_timeout = cache.role_timeouts.get(&caller.pg_role).cloned();
    // A function returning a media type's domain answers that media type when it is
    // asked for (`*/*` domains: whatever is asked).
    let asked = |m: &str| prefer::accept_items(&headers).any(|(t, _)| t.eq_ignore_ascii_case(m));
    if let Some(media) = f.media.as_deref().filter(|m| req.plan.is_none() && (*m == "*/*" || asked(m))) {
        let out = exec::run(&s, &caller, &info, &plan::call_value(f, &args, whole)?, true, pref.rollback).await?;
        let res = media_response(out, media, f.media_bytea, with_body)?;
        return Ok(decorate(res, &s, &req, false, &cache.schemas));
    }
    if let Some(m) = &req.unacceptable {
        return Err(RestError::new(pgrst::UNACCEPTABLE_MEDIA, m.clone(), None, None));
    }
    let sql = plan::call(&cache, f, &args, whole, q, count, accept)?;
    if let Some(p) = &req.plan {
        let res = explained(&s, &caller, &info, &sql, p, with_body).await?;
        return Ok(decorate(res, &s, &req, false, &cache.schemas));
    }
    let out = exec::run(&s, &caller, &info, &sql, true, pref.rollback).await?;
    // A single value counts as one row.
    let total = out.total.or_else(|| (count.is_some() && !f.returns_set).then_some(out.count));
    let range = response::content_range(q.offset.unwrap_or(0), out.count, total);
    let mut status = match out.total {
        Some(t) if out.count < t => StatusCode::PARTIAL_CONTENT,
        _ => StatusCode::OK,
    };
    let (body, ct) = if f.returns_void {
        status = StatusCode::NO_CONTENT;
        (None, JSON)
    } else if f.returns_set || accept == Accept::Csv {
        let (b, ct) = response::rows(&out, accept)?;
        (Some(b), ct)
    } else {
        (Some(out.body.clone().unwrap_or_else(|| "null".into())), JSON)
    };
    let has_body = body.is_some();
    let mut res = response::build(status, body.filter(|_| with_body), ct, Some(range));
    // HEAD answers the Content-Type GET would have.
    if !with_body && has_body {
        res.headers_mut().insert("content-type", response::header_value(ct));
    }
    response::apply_gucs(&mut res, &out)?;
    Ok(decorate(res, &s, &req, false, &cache.schemas))
}

/// Repeated query-string arguments, as PostgREST reads them: all the values of the
/// VARIADIC argument in order (an array), the last value of any other.
fn merge_repeated(f: &crate::db::schema_cache::Function, named: Vec<(String, Arg)>) -> Vec<(String, Arg)> {
    let variadic = f.args.last().filter(|_| f.variadic).map(|(n, _)| n.as_str());
    let mut out: Vec<(String, Arg)> = Vec::with_capacity(named.len());
    let mut items = Vec::new();
    for (name, value) in named {
        if Some(name.as_str()) == variadic {
            items.push(value);
            continue;
        }
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, old)) => *old = value,
            None => out.push((name, value)),
        }
    }
    if let (Some(v), false) = (variadic, items.is_empty()) {
        out.push((v.to_owned(), Arg::variadic(&items).map_or(Arg::Null, Arg::Json)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::content_location;

    #[test]
    fn content_location_sorts_parameters_by_key_only() {
        assert_eq!(content_location("/no_pk", Some("b=eq.1&a=eq.1")), "/no_pk?a=eq.1&b=eq.1");
        assert_eq!(content_location("/t", Some("or=(a.eq.1)&id=gt.2&id=lt.9&select=id")), "/t?id=gt.2&id=lt.9&or=(a.eq.1)&select=id");
        assert_eq!(content_location("/t", None), "/t");
        assert_eq!(content_location("/t", Some("")), "/t");
    }
}
