//! /functions/v1: edge functions from the extension's catalog (`pgr.functions`),
//! run on a real Deno (`deno`) or inside Postgres (`plv8` / `sql` runtimes).

pub mod deno;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::db::{caller, DbError, RequestInfo};
use crate::http::caller::{Caller, KeyKind};
use crate::AppState;

/// One catalog entry.
#[derive(Clone, Debug)]
pub struct FunctionDef {
    /// Name.
    pub name: String,
    /// deno, plv8 or sql.
    pub runtime: String,
    /// Module source (deno).
    pub source: Option<String>,
    /// In-database entrypoint, as Postgres quotes it.
    pub entrypoint: Option<String>,
    /// Require a valid JWT (the anon key is one).
    pub verify_jwt: bool,
    /// active / disabled.
    pub status: String,
    /// Hash of the source (module versions).
    pub version: String,
    /// Env vars the function sees through Deno.env.get, as JSON text.
    pub env: String,
}

/// The catalog snapshot.
#[derive(Default)]
pub struct Catalog(std::sync::RwLock<Option<Arc<HashMap<String, FunctionDef>>>>);

impl Catalog {
    fn get(&self) -> Option<Arc<HashMap<String, FunctionDef>>> {
        self.0.read().ok().and_then(|g| g.clone())
    }
    fn set(&self, m: HashMap<String, FunctionDef>) {
        if let Ok(mut g) = self.0.write() {
            *g = Some(Arc::new(m));
        }
    }
}

/// Routes under /functions/v1.
pub fn routes() -> Router<AppState> {
    Router::new().route("/", get(list)).route("/_refresh", post(refresh)).route("/{name}", any(invoke_root)).route("/{name}/{*rest}", any(invoke_path))
}

fn error(status: StatusCode, msg: &str, relay: bool) -> Response<Body> {
    let mut res = (status, Json(json!({"error": msg, "message": msg}))).into_response();
    if relay {
        res.headers_mut().insert("x-relay-error", HeaderValue::from_static("true"));
    }
    res
}

/// Re-reads `pgr.functions`.
pub async fn reload(s: &AppState) -> anyhow::Result<Arc<HashMap<String, FunctionDef>>> {
    let client = s.pool.get().await?;
    let rows = client
        .query(
            "SELECT name, runtime, source, entrypoint::oid::regproc::text, verify_jwt, status,
                    md5(coalesce(source, '') || coalesce(entrypoint::text, '')), env::text
               FROM pgr.functions",
            &[],
        )
        .await?;
    let map: HashMap<String, FunctionDef> = rows
        .into_iter()
        .map(|r| {
            let f =
                FunctionDef { name: r.get(0), runtime: r.get(1), source: r.get(2), entrypoint: r.get(3), verify_jwt: r.get(4), status: r.get(5), version: r.get(6), env: r.get(7) };
            (f.name.clone(), f)
        })
        .collect();
    s.functions.set(map);
    Ok(s.functions.get().unwrap_or_default())
}

async fn catalog(s: &AppState) -> Result<Arc<HashMap<String, FunctionDef>>, Response<Body>> {
    match s.functions.get() {
        Some(c) => Ok(c),
        None => reload(s).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot read the functions catalog");
            error(StatusCode::SERVICE_UNAVAILABLE, "functions catalog unavailable", true)
        }),
    }
}

fn service(s: &AppState, headers: &HeaderMap) -> Result<(), Response<Body>> {
    match Caller::resolve(headers, None, &s.config) {
        Ok(Some(c)) if c.kind == KeyKind::Service => Ok(()),
        Ok(Some(_)) => Err(error(StatusCode::FORBIDDEN, "service_role key required", false)),
        Ok(None) => Err(error(StatusCode::UNAUTHORIZED, "no API key found in request", false)),
        Err(e) => Err(error(StatusCode::UNAUTHORIZED, &e.to_string(), false)),
    }
}

/// GET /functions/v1/ (service key).
pub async fn list(State(s): State<AppState>, headers: HeaderMap) -> Response<Body> {
    if let Err(r) = service(&s, &headers) {
        return r;
    }
    let cat = match catalog(&s).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut items: Vec<&FunctionDef> = cat.values().collect();
    items.sort_by(|a, b| a.name.cmp(&b.name));
    let list: Vec<Value> = items.iter().map(|f| json!({"name": f.name, "runtime": f.runtime, "status": f.status, "verify_jwt": f.verify_jwt})).collect();
    Json(Value::Array(list)).into_response()
}

/// POST /functions/v1/_refresh (service key) → `{"ok": true}`.
async fn refresh(State(s): State<AppState>, headers: HeaderMap) -> Response<Body> {
    if let Err(r) = service(&s, &headers) {
        return r;
    }
    match reload(&s).await {
        Ok(_) => Json(json!({"ok": true})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the functions catalog");
            error(StatusCode::SERVICE_UNAVAILABLE, "functions catalog unavailable", true)
        }
    }
}

async fn invoke_root(s: State<AppState>, Path(name): Path<String>, method: Method, headers: HeaderMap, q: RawQuery, body: Bytes) -> Response<Body> {
    invoke(s, name, String::new(), method, headers, q, body).await
}

async fn invoke_path(s: State<AppState>, Path((name, rest)): Path<(String, String)>, method: Method, headers: HeaderMap, q: RawQuery, body: Bytes) -> Response<Body> {
    invoke(s, name, rest, method, headers, q, body).await
}

/// Any method on /functions/v1/{name}[/rest].
async fn invoke(State(s): State<AppState>, name: String, rest: String, method: Method, headers: HeaderMap, RawQuery(query): RawQuery, body: Bytes) -> Response<Body> {
    let mut cat = match catalog(&s).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !cat.contains_key(&name) {
        // A function registered since the last load.
        if let Ok(c) = reload(&s).await {
            cat = c;
        }
    }
    let Some(f) = cat.get(&name).filter(|f| f.status == "active").cloned() else {
        return error(StatusCode::NOT_FOUND, "function not found", false);
    };
    let caller = match Caller::resolve(&headers, None, &s.config) {
        Ok(c) => c,
        Err(e) if f.verify_jwt => return error(StatusCode::UNAUTHORIZED, &e.to_string(), false),
        Err(_) => None,
    };
    if f.verify_jwt && caller.is_none() {
        return error(StatusCode::UNAUTHORIZED, "missing authorization: this function requires a valid JWT", false);
    }
    let path = format!("/{}{}{}", name, if rest.is_empty() { String::new() } else { format!("/{rest}") }, query.as_ref().map(|q| format!("?{q}")).unwrap_or_default());
    match f.runtime.as_str() {
        "deno" => invoke_deno(&s, &f, &path, method, headers, body).await,
        _ => invoke_in_db(&s, &f, caller, &path, method, &headers, body).await,
    }
}

async fn invoke_deno(s: &AppState, f: &FunctionDef, path: &str, method: Method, headers: HeaderMap, body: Bytes) -> Response<Body> {
    if !s.deno.configured() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the Deno runtime is not configured (set DENO_PATH)", true);
    }
    if let Err(e) = s.deno.ensure_module(&f.name, &f.version, f.source.as_deref().unwrap_or_default()) {
        tracing::error!(error = %e, "cannot write a function module");
        return error(StatusCode::BAD_GATEWAY, "edge runtime unavailable", true);
    }
    let port = match s.deno.port().await {
        Ok(p) => p,
        Err(deno::RuntimeError::NotConfigured) => return error(StatusCode::SERVICE_UNAVAILABLE, "the Deno runtime is not configured (set DENO_PATH)", true),
        Err(deno::RuntimeError::Down(m)) => {
            tracing::warn!(error = %m, "Deno worker unavailable");
            return error(StatusCode::BAD_GATEWAY, "edge runtime unavailable", true);
        }
    };
    let mut req = s.functions_http.request(method, format!("http://127.0.0.1:{port}/")).body(body);
    for (k, v) in headers.iter() {
        if forwarded(k.as_str()) {
            req = req.header(k, v);
        }
    }
    req = req.header("x-pgstack-function", &f.name).header("x-pgstack-version", &f.version).header("x-pgstack-path", path).header("x-pgstack-env", &f.env);
    let timeout = Duration::from_millis(s.config.function_timeout_ms);
    match tokio::time::timeout(timeout, req.send()).await {
        Err(_) => {
            // A function stuck in a loop blocks the whole worker: start a fresh one.
            s.deno.restart().await;
            error(StatusCode::GATEWAY_TIMEOUT, "function timed out", true)
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "Deno worker request failed");
            s.deno.restart().await;
            error(StatusCode::BAD_GATEWAY, "edge runtime unavailable", true)
        }
        Ok(Ok(res)) => {
            let mut out = Response::builder().status(res.status());
            for (k, v) in res.headers() {
                if !matches!(k.as_str(), "connection" | "transfer-encoding" | "content-length") {
                    out = out.header(k, v);
                }
            }
            // The function's own answer, error statuses included, goes out as it is.
            out.extension(crate::http::errors::Passthrough).body(Body::from_stream(res.bytes_stream())).unwrap_or_default()
        }
    }
}

/// Prefix of the headers between the gateway and the Deno worker (which function,
/// version, path, env): a client must not be able to send any of them.
const INTERNAL_PREFIX: &str = "x-pgstack-";

/// Whether a client header goes to the Deno worker (names are lower case).
fn forwarded(name: &str) -> bool {
    !matches!(name, "host" | "content-length" | "connection" | "transfer-encoding") && !name.starts_with(INTERNAL_PREFIX)
}

/// In-database runtime: `entrypoint(request jsonb) → jsonb {status, headers, body}`,
/// called under the caller's role (anon without a key).
async fn invoke_in_db(s: &AppState, f: &FunctionDef, caller: Option<Caller>, path: &str, method: Method, headers: &HeaderMap, body: Bytes) -> Response<Body> {
    let caller = caller.unwrap_or_else(|| Caller::builtin(pgstack_shared::Role::Anon));
    let Some(entry) = f.entrypoint.clone() else { return error(StatusCode::NOT_FOUND, "function not found", false) };
    let mut h = serde_json::Map::new();
    for (k, v) in headers {
        if k != "authorization" && k != "apikey" {
            if let Ok(v) = v.to_str() {
                h.insert(k.as_str().to_owned(), json!(v));
            }
        }
    }
    let body_json = serde_json::from_slice::<Value>(&body).unwrap_or_else(|_| json!(String::from_utf8_lossy(&body)));
    let request = json!({"method": method.as_str(), "path": path, "headers": h, "body": if body.is_empty() { Value::Null } else { body_json }, "claims": caller.claims.value()});
    let info = RequestInfo { method: method.as_str(), path, headers: Value::Object(h).to_string(), ..Default::default() };
    let anon = caller.role == pgstack_shared::Role::Anon;
    let result = async {
        let mut client = s.pool.get().await?;
        let tx = caller::begin(&mut client, &caller.run_as(), &info).await?;
        // The entrypoint text comes from the catalog (regproc output), quoted by Postgres.
        let row = tx.query_one(&format!("SELECT to_jsonb({entry}($1::jsonb))"), &[&request]).await?;
        tx.commit().await?;
        Ok::<Value, DbError>(row.get(0))
    }
    .await;
    match result {
        Err(e) => {
            let status = e.status(anon);
            let status = if status.is_server_error() { StatusCode::INTERNAL_SERVER_ERROR } else { status };
            error(status, &e.message(), false)
        }
        Ok(v) => {
            let status = v["status"].as_u64().and_then(|c| StatusCode::from_u16(c as u16).ok()).unwrap_or(StatusCode::OK);
            let mut out = Response::builder().status(status);
            let mut has_type = false;
            if let Some(hs) = v["headers"].as_object() {
                for (k, val) in hs {
                    if let Some(val) = val.as_str() {
                        has_type |= k.eq_ignore_ascii_case("content-type");
                        out = out.header(k.as_str(), val);
                    }
                }
            }
            let body = match &v["body"] {
                Value::Null => Vec::new(),
                Value::String(t) => {
                    if !has_type {
                        out = out.header("content-type", "text/plain; charset=utf-8");
                    }
                    t.clone().into_bytes()
                }
                other => {
                    if !has_type {
                        out = out.header("content-type", "application/json");
                    }
                    other.to_string().into_bytes()
                }
            };
            out.extension(crate::http::errors::Passthrough).body(Body::from(body)).unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_headers_are_never_forwarded() {
        for h in ["x-pgstack-function", "x-pgstack-version", "x-pgstack-path", "x-pgstack-env", "x-pgstack-anything", "host", "content-length"] {
            assert!(!forwarded(h), "{h}");
        }
        for h in ["authorization", "apikey", "content-type", "x-client-info", "x-pgstackfunction"] {
            assert!(forwarded(h), "{h}");
        }
        // HeaderMap names are lower case, whatever the client sent.
        let name: axum::http::HeaderName = "X-PgStack-Function".parse().unwrap();
        assert!(!forwarded(name.as_str()));
    }
}
