//! GET /rest/v1/: an OpenAPI 2.0 description of what the caller's role can see —
//! tables and views it may SELECT, functions it may EXECUTE — from the schema cache.

use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::Json;
use serde_json::{json, Map, Value};

use super::error::RestError;
use super::exec::{self, RequestInfo};
use crate::db::schema_cache::Table;
use crate::db::sql::Sql;
use crate::http::caller::{Caller, CallerError};
use crate::AppState;

const VISIBLE: &str = "
SELECT json_build_object(
    'tables', coalesce((SELECT json_agg(c.relname::text) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                         WHERE n.nspname = $1::text AND c.relkind IN ('r','p','v','m','f')
                           AND has_table_privilege(c.oid, 'SELECT')), '[]'),
    'functions', coalesce((SELECT json_agg(DISTINCT p.proname::text) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                            WHERE n.nspname = $1::text AND p.prokind = 'f'
                              AND has_function_privilege(p.oid, 'EXECUTE')), '[]'))::text,
    0::bigint, NULL::text, NULL::bigint";

/// Swagger type and format of a Postgres type.
fn swagger_type(pg: &str) -> (&'static str, Option<&'static str>) {
    let base = pg.split('(').next().unwrap_or(pg).trim();
    if base.ends_with("[]") {
        return ("array", None);
    }
    match base {
        "smallint" | "integer" => ("integer", Some("int32")),
        "bigint" => ("integer", Some("int64")),
        "numeric" | "real" | "double precision" => ("number", None),
        "boolean" => ("boolean", None),
        "json" | "jsonb" => ("object", None),
        "uuid" => ("string", Some("uuid")),
        "date" => ("string", Some("date")),
        b if b.starts_with("timestamp") => ("string", Some("date-time")),
        _ => ("string", None),
    }
}

fn definition(t: &Table) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for c in &t.columns {
        let (ty, format) = swagger_type(&c.type_name);
        let mut p = json!({"type": ty, "format": c.type_name});
        if let Some(f) = format {
            p["format"] = json!(f);
        }
        if t.primary_key.contains(&c.name) {
            p["description"] = json!("Note:\nThis is a Primary Key.<pk/>");
        }
        if !c.nullable && !c.has_default && !c.generated {
            required.push(c.name.clone());
        }
        props.insert(c.name.clone(), p);
    }
    json!({"type": "object", "required": required, "properties": props})
}

/// The handler.
pub async fn openapi(State(s): State<AppState>, caller: Result<Caller, CallerError>, headers: HeaderMap) -> Result<axum::response::Response, RestError> {
    let caller = caller?;
    acceptable(&headers)?;
    let cache = super::ensure_cache(&s).await?;
    let schema = super::prefer::schema(&headers, &Method::GET, &cache.schemas)?;
    let mut sql = Sql::default();
    sql.push(VISIBLE);
    sql.params.push(Some(schema.to_owned()));
    let info = RequestInfo { method: "GET", path: "/", headers: "{}".into(), ..Default::default() };
    let out = exec::run(&s, &caller, &info, &sql, true, false).await?;
    let visible: Value = serde_json::from_str(out.body.as_deref().unwrap_or("{}")).unwrap_or_default();
    let names = |k: &str| -> Vec<String> { visible[k].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect() };

    let mut paths = Map::new();
    let mut definitions = Map::new();
    paths.insert("/".into(), json!({"get": {"summary": "OpenAPI description (this document)", "responses": {"200": {"description": "OK"}}}}));
    let mut tables = names("tables");
    tables.sort();
    for name in &tables {
        let Some(t) = cache.table(schema, name) else { continue };
        definitions.insert(name.clone(), definition(t));
        let rows = json!({"description": "OK", "schema": {"type": "array", "items": {"$ref": format!("#/definitions/{name}")}}});
        let mut ops = json!({
            "get": {"tags": [name], "parameters": [{"$ref": "#/parameters/select"}, {"$ref": "#/parameters/order"}, {"$ref": "#/parameters/limit"}, {"$ref": "#/parameters/offset"}], "responses": {"200": rows, "206": {"description": "Partial Content"}}},
        });
        if !t.is_view {
            ops["post"] = json!({"tags": [name], "parameters": [{"$ref": "#/parameters/prefer"}, {"in": "body", "name": "body", "schema": {"$ref": format!("#/definitions/{name}")}}], "responses": {"201": {"description": "Created"}}});
            ops["patch"] = json!({"tags": [name], "responses": {"204": {"description": "No Content"}}});
            ops["delete"] = json!({"tags": [name], "responses": {"204": {"description": "No Content"}}});
        }
        paths.insert(format!("/{name}"), ops);
    }
    let mut funcs = names("functions");
    funcs.sort();
    for name in &funcs {
        let Some(f) = cache.function(schema, name) else { continue };
        let props: Map<String, Value> = f
            .args
            .iter()
            .filter(|(n, _)| !n.is_empty())
            .map(|(n, t)| {
                let (ty, format) = swagger_type(t);
                (n.clone(), json!({"type": ty, "format": format.unwrap_or(t)}))
            })
            .collect();
        let mut ops = json!({"post": {"tags": ["(rpc) ".to_owned() + name], "parameters": [{"in": "body", "name": "args", "required": true, "schema": {"type": "object", "properties": props}}], "responses": {"200": {"description": "OK"}}}});
        if f.volatility != 'v' {
            ops["get"] = json!({"tags": ["(rpc) ".to_owned() + name], "responses": {"200": {"description": "OK"}}});
        }
        paths.insert(format!("/rpc/{name}"), ops);
    }
    let doc = json!({
        "swagger": "2.0",
        "info": {"title": "pgstack REST API", "description": format!("Tables, views and functions of schema {schema} visible to role {}", caller.pg_role), "version": env!("CARGO_PKG_VERSION")},
        "basePath": "/rest/v1",
        "schemes": ["http", "https"],
        "consumes": ["application/json", "application/vnd.pgrst.object+json"],
        "produces": ["application/json", "application/vnd.pgrst.object+json"],
        "paths": paths,
        "definitions": definitions,
        "parameters": {
            "select": {"name": "select", "in": "query", "type": "string", "description": "Columns and embedded resources"},
            "order": {"name": "order", "in": "query", "type": "string"},
            "limit": {"name": "limit", "in": "query", "type": "string"},
            "offset": {"name": "offset", "in": "query", "type": "string"},
            "prefer": {"name": "Prefer", "in": "header", "type": "string", "enum": ["return=representation", "return=minimal", "resolution=merge-duplicates", "resolution=ignore-duplicates"]}
        }
    });
    let mut res = axum::response::IntoResponse::into_response(Json(doc));
    res.headers_mut().insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static(OPENAPI_JSON));
    super::response::vary(res.headers_mut());
    Ok(res)
}

/// The root's media type (PostgREST's, whatever JSON type was asked for).
const OPENAPI_JSON: &str = "application/openapi+json; charset=utf-8";

/// The root answers OpenAPI JSON only: an Accept that takes neither it nor JSON
/// (nor a wildcard) is 406 PGRST107.
fn acceptable(headers: &HeaderMap) -> Result<(), RestError> {
    if !headers.contains_key(axum::http::header::ACCEPT) {
        return Ok(());
    }
    let json = ["application/openapi+json", "application/json", "application/*", "*/*", ""];
    if super::prefer::accept_items(headers).any(|(m, _)| json.iter().any(|j| m.eq_ignore_ascii_case(j))) {
        Ok(())
    } else {
        Err(super::prefer::unacceptable(headers))
    }
}

/// A plain OPTIONS on the root: the methods it takes.
pub async fn options() -> axum::response::Response {
    let mut res = axum::response::Response::new(axum::body::Body::empty());
    res.headers_mut().insert(axum::http::header::ALLOW, axum::http::HeaderValue::from_static("OPTIONS,GET,HEAD"));
    super::response::vary(res.headers_mut());
    res
}
