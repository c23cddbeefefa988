//! MCP over HTTP at `/mcp/v1`: JSON-RPC 2.0, one message or a batch (as protocol
//! 2024-11-05 and 2025-03-26 allow), answered as `application/json` — the Streamable
//! HTTP transport's plain-JSON form, which today's SDK clients accept. Notifications
//! and responses alone get 202. The server keeps no MCP session (no
//! `Mcp-Session-Id`): every request carries its token; `GET` (a server-to-client
//! stream) and `DELETE` answer 405, as the transport allows.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde_json::{json, Value};

use super::tools::{self, RpcError};
use crate::http::caller::Caller;
use crate::AppState;

/// Protocol versions spoken, newest first.
pub const VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// Messages in one batch at most.
const MAX_BATCH: usize = 32;

fn error(id: Value, code: i64, message: impl Into<String>) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message.into() } })
}

/// `POST /mcp/v1`.
pub async fn post(State(s): State<AppState>, Extension(caller): Extension<Caller>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(v) = headers.get("mcp-protocol-version").and_then(|v| v.to_str().ok()) {
        if !VERSIONS.contains(&v) {
            return (StatusCode::BAD_REQUEST, Json(error(Value::Null, -32600, format!("unsupported MCP-Protocol-Version {v:?}; this server speaks {}", VERSIONS.join(", ")))))
                .into_response();
        }
    }
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(error(Value::Null, -32700, format!("parse error: {e}")))).into_response(),
    };
    match parsed {
        Value::Array(batch) => {
            if batch.is_empty() || batch.len() > MAX_BATCH {
                return (StatusCode::BAD_REQUEST, Json(error(Value::Null, -32600, format!("a batch holds 1 to {MAX_BATCH} messages")))).into_response();
            }
            let mut answers = Vec::new();
            for m in &batch {
                if let Some(a) = handle(&s, &caller, m).await {
                    answers.push(a);
                }
            }
            if answers.is_empty() {
                StatusCode::ACCEPTED.into_response()
            } else {
                json_answer(Value::Array(answers))
            }
        }
        single => match handle(&s, &caller, &single).await {
            Some(a) => json_answer(a),
            None => StatusCode::ACCEPTED.into_response(),
        },
    }
}

fn json_answer(v: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

/// `GET /mcp/v1`: no server-initiated stream.
pub async fn get() -> Response {
    (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "POST")], Json(error(Value::Null, -32600, "this server sends no server-initiated messages; POST JSON-RPC requests")))
        .into_response()
}

/// `DELETE /mcp/v1`: there is no session to end.
pub async fn delete() -> Response {
    (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "POST")], Json(error(Value::Null, -32600, "this server keeps no MCP sessions"))).into_response()
}

/// One message: its answer, or None for a notification or a response.
async fn handle(s: &AppState, caller: &Caller, m: &Value) -> Option<Value> {
    let Some(obj) = m.as_object() else { return Some(error(Value::Null, -32600, "a message must be a JSON object")) };
    let id = obj.get("id").cloned();
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Some(error(id.unwrap_or(Value::Null), -32600, "jsonrpc must be \"2.0\""));
    }
    let Some(method) = obj.get("method").and_then(Value::as_str) else {
        // A response to something we never asked: nothing to answer.
        return if obj.contains_key("result") || obj.contains_key("error") { None } else { Some(error(id.unwrap_or(Value::Null), -32600, "method is required")) };
    };
    let Some(id) = id else {
        // A notification (initialized, cancelled, ...): no answer.
        return None;
    };
    if !(id.is_string() || id.is_i64() || id.is_u64()) {
        return Some(error(Value::Null, -32600, "id must be a string or an integer"));
    }
    let params = obj.get("params").cloned().unwrap_or(Value::Null);
    if !(params.is_null() || params.is_object()) {
        return Some(error(id, -32602, "params must be an object"));
    }
    let result = dispatch(s, caller, method, &params).await;
    Some(match result {
        Ok(r) => json!({ "jsonrpc": "2.0", "id": id, "result": r }),
        Err(e) => error(id, e.code, e.message),
    })
}

async fn dispatch(s: &AppState, caller: &Caller, method: &str, params: &Value) -> Result<Value, RpcError> {
    match method {
        "initialize" => {
            let asked = params.get("protocolVersion").and_then(Value::as_str).unwrap_or(VERSIONS[VERSIONS.len() - 1]);
            let version = if VERSIONS.contains(&asked) { asked } else { VERSIONS[0] };
            Ok(json!({
                "protocolVersion": version,
                "capabilities": { "tools": { "listChanged": false }, "resources": { "subscribe": false, "listChanged": false } },
                "serverInfo": { "name": "pgstack", "version": env!("CARGO_PKG_VERSION") },
                "instructions": "PostgreSQL tools that run as you: your role and row-level security decide what you can read. Use get_schema_info, then execute_sql (read-only) or explain_query.",
            }))
        }
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({ "tools": tools::list() })),
        "tools/call" => {
            let name = params.get("name").and_then(Value::as_str).ok_or_else(|| RpcError::params("tools/call needs \"name\""))?;
            let args = params.get("arguments").cloned().unwrap_or_else(|| json!({}));
            if !args.is_object() {
                return Err(RpcError::params("arguments must be an object"));
            }
            tools::call(s, caller, name, &args).await
        }
        "resources/list" => Ok(json!({ "resources": tools::resources() })),
        "resources/templates/list" => Ok(json!({ "resourceTemplates": tools::templates() })),
        "resources/read" => {
            let uri = params.get("uri").and_then(Value::as_str).ok_or_else(|| RpcError::params("resources/read needs \"uri\""))?;
            tools::read_resource(s, caller, uri).await
        }
        "prompts/list" => Ok(json!({ "prompts": [] })),
        "logging/setLevel" => Ok(json!({})),
        other => Err(RpcError { code: -32601, message: format!("method not found: {other}") }),
    }
}
