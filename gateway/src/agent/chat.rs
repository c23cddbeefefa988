//! `POST /api/llm/chat`: a chat through the chosen provider, answered in one shape,
//! whole or streamed as server-sent events, with the MCP tools bridged.
//!
//! `tools` offers the agent's MCP tools to the model (their names, or `true` for all).
//! Without `run_tools`, the model's tool calls come back to the client as asked (it
//! runs them over `/mcp/v1` and sends the results in the next request). With
//! `run_tools: true` the gateway runs them itself, **as the caller** (same tools, same
//! role and RLS as `/mcp/v1`), hands the results to the model in the provider's own
//! format and goes on, at most `max_tool_rounds` times (default 5, at most 10).
//!
//! Streamed (`stream: true`), the events are `delta` (text as it comes), `tool_call`,
//! `tool_result` (with `run_tools`), then `done` — or `error` if the provider breaks
//! off after the stream began (before, the error is the HTTP answer).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use super::llm::{self, Answer, Route};
use super::{fail, tools};
use crate::http::caller::Caller;
use crate::AppState;

/// Largest tool result text handed back to the model.
const MAX_RESULT_TEXT: usize = 32 * 1024;
/// Tool calls run in one round at most.
const MAX_CALLS_PER_ROUND: usize = 8;

#[derive(Deserialize)]
struct ChatBody {
    provider: Option<String>,
    model: Option<String>,
    messages: Vec<Value>,
    /// Tool names, or `true` for all.
    #[serde(default)]
    tools: Value,
    max_tokens: Option<u64>,
    /// Answer as server-sent events.
    #[serde(default)]
    stream: bool,
    /// The gateway runs the model's tool calls (as the caller) and goes on.
    #[serde(default)]
    run_tools: bool,
    max_tool_rounds: Option<u32>,
}

/// Everything a chat needs once the request is read.
struct Chat {
    s: AppState,
    caller: Caller,
    route: Route,
    messages: Vec<Value>,
    tools: Vec<Value>,
    max_tokens: u64,
    run_tools: bool,
    rounds: u32,
}

/// The tool definitions offered to the model.
fn offered(v: &Value, run_tools: bool) -> Result<Vec<Value>, String> {
    let all = tools::list().as_array().cloned().unwrap_or_default();
    match v {
        Value::Null if run_tools => Ok(all),
        Value::Null | Value::Bool(false) => Ok(vec![]),
        Value::Bool(true) => Ok(all),
        Value::Array(names) if names.len() <= 16 => names
            .iter()
            .map(|n| all.iter().find(|t| t["name"] == *n).cloned().ok_or_else(|| format!("unknown tool {}", n.to_string().chars().take(100).collect::<String>())))
            .collect(),
        _ => Err("tools must be a list of tool names or true".into()),
    }
}

/// Runs one round of tool calls as the caller: `(text for the model, is_error)` each.
async fn run_calls(s: &AppState, caller: &Caller, calls: &[Value]) -> Vec<(String, bool)> {
    let mut out = Vec::with_capacity(calls.len());
    for (i, c) in calls.iter().enumerate() {
        if i >= MAX_CALLS_PER_ROUND {
            out.push((format!("not run: at most {MAX_CALLS_PER_ROUND} tool calls run per turn"), true));
            continue;
        }
        let name = c["name"].as_str().unwrap_or("");
        let args = if c["arguments"].is_object() { c["arguments"].clone() } else { json!({}) };
        let (mut text, is_error) = match tools::call(s, caller, name, &args).await {
            Ok(r) => (r.pointer("/content/0/text").and_then(Value::as_str).unwrap_or("").to_owned(), r["isError"] == true),
            Err(e) => (format!("error: {}", e.message), true),
        };
        if text.len() > MAX_RESULT_TEXT {
            let mut cut = MAX_RESULT_TEXT;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("\n[truncated]");
        }
        out.push((text, is_error));
    }
    out
}

fn result_json(calls: &[Value], results: &[(String, bool)]) -> Vec<Value> {
    calls.iter().zip(results).map(|(c, (text, is_error))| json!({ "id": c["id"], "name": c["name"], "arguments": c["arguments"], "is_error": is_error, "content": text })).collect()
}

/// `POST /api/llm/chat`.
pub async fn post(State(s): State<AppState>, Extension(caller): Extension<Caller>, body: bytes::Bytes) -> Response {
    let b: ChatBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return fail(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")),
    };
    if b.messages.is_empty() || b.messages.len() > 1000 || b.messages.iter().any(|m| !m["role"].is_string()) {
        return fail(StatusCode::BAD_REQUEST, "messages must be 1 to 1000 {role, content} objects");
    }
    let tools = match offered(&b.tools, b.run_tools) {
        Ok(t) => t,
        Err(m) => return fail(StatusCode::BAD_REQUEST, m),
    };
    let rounds = match b.max_tool_rounds {
        None => 5,
        Some(n @ 1..=10) => n,
        Some(_) => return fail(StatusCode::BAD_REQUEST, "max_tool_rounds must be 1 to 10"),
    };
    let route = match llm::route(&s, b.provider.as_deref(), b.model.as_deref()) {
        Ok(r) => r,
        Err((st, m)) => return fail(st, m),
    };
    let chat = Chat { s, caller, route, messages: b.messages, tools, max_tokens: b.max_tokens.unwrap_or(1024).clamp(1, 32_000), run_tools: b.run_tools, rounds };
    if b.stream {
        streamed(chat).await
    } else {
        whole(chat).await
    }
}

async fn whole(mut c: Chat) -> Response {
    let mut executed = vec![];
    let mut round = 0;
    loop {
        let a: Answer = match llm::open(&c.s, &c.route, &c.messages, &c.tools, c.max_tokens, false).await {
            Ok(res) => match llm::answer(&c.route, res).await {
                Ok(a) => a,
                Err((st, m)) => return fail(st, m),
            },
            Err((st, m)) => return fail(st, m),
        };
        if !c.run_tools || a.tool_calls.is_empty() || round >= c.rounds {
            let stopped = c.run_tools && !a.tool_calls.is_empty();
            return Json(json!({
                "provider": c.route.p.name,
                "model": a.model,
                "message": { "role": "assistant", "content": a.content },
                "tool_calls": a.tool_calls,
                "tool_results": executed,
                "rounds": round,
                "stopped_at_max_tool_rounds": stopped,
                "usage": a.usage,
            }))
            .into_response();
        }
        let results = run_calls(&c.s, &c.caller, &a.tool_calls).await;
        executed.extend(result_json(&a.tool_calls, &results));
        llm::continue_with(&c.route, &mut c.messages, &a, &results);
        round += 1;
    }
}

/// The first turn is opened before answering (a provider that refuses is the HTTP
/// answer); the rest streams from a task that ends when the client goes away.
async fn streamed(mut c: Chat) -> Response {
    let first = match llm::open(&c.s, &c.route, &c.messages, &c.tools, c.max_tokens, true).await {
        Ok(res) => res,
        Err((st, m)) => return fail(st, m),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(32);
    tokio::spawn(async move {
        let mut res = first;
        let mut round = 0;
        loop {
            let a = match llm::answer_streamed(&c.route, res, &tx).await {
                Ok(a) => a,
                Err(e) => {
                    let _ = tx.send(llm::event(json!({ "type": "error", "error": e }))).await;
                    return;
                }
            };
            for call in &a.tool_calls {
                if tx.send(llm::event(json!({ "type": "tool_call", "id": call["id"], "name": call["name"], "arguments": call["arguments"] }))).await.is_err() {
                    return;
                }
            }
            if !c.run_tools || a.tool_calls.is_empty() || round >= c.rounds {
                let done = json!({
                    "type": "done", "provider": c.route.p.name, "model": a.model, "content": a.content, "tool_calls": a.tool_calls,
                    "rounds": round, "stopped_at_max_tool_rounds": c.run_tools && !a.tool_calls.is_empty(), "usage": a.usage,
                });
                let _ = tx.send(llm::event(done)).await;
                return;
            }
            let results = run_calls(&c.s, &c.caller, &a.tool_calls).await;
            for r in result_json(&a.tool_calls, &results) {
                let mut r = r;
                r["type"] = json!("tool_result");
                if tx.send(llm::event(r)).await.is_err() {
                    return;
                }
            }
            llm::continue_with(&c.route, &mut c.messages, &a, &results);
            round += 1;
            res = match llm::open(&c.s, &c.route, &c.messages, &c.tools, c.max_tokens, true).await {
                Ok(res) => res,
                Err((_, m)) => {
                    let _ = tx.send(llm::event(json!({ "type": "error", "error": m }))).await;
                    return;
                }
            };
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx)) });
    ([(axum::http::header::CONTENT_TYPE, "text/event-stream"), (axum::http::header::CACHE_CONTROL, "no-cache")], axum::body::Body::from_stream(body)).into_response()
}
