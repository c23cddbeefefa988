//! The LLM proxy (`/api/llm/providers`, `/api/llm/models`, `/api/llm/chat`) and the
//! LLM side of `query_database`: OpenAI-compatible (`/chat/completions`, `/models`),
//! Anthropic (`/v1/messages`, `/v1/models`) and Ollama (`/api/chat`, `/api/tags`),
//! configured by LLM_* settings. Keys are sent to their provider only and never
//! returned. Every call is bounded by LLM_TIMEOUT; a provider that is down or answers
//! nonsense is a 502 with the provider named, an unconfigured one a 400.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use serde::Deserialize;
use serde_json::{json, Value};

use super::fail;
use crate::config::llm::LlmProvider;
use crate::AppState;

/// Anthropic's API version header.
const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Largest provider answer read.
const MAX_ANSWER: usize = 8 * 1024 * 1024;

/// The HTTP client for providers: no redirects, no proxy, the configured timeout.
pub fn client(timeout_secs: u64) -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).no_proxy().timeout(Duration::from_secs(timeout_secs)).build().expect("HTTP client")
}

fn provider<'a>(s: &'a AppState, name: Option<&str>) -> Result<&'a LlmProvider, (StatusCode, String)> {
    let cfg = &s.config.llm;
    let name = name.map(str::to_owned).or_else(|| cfg.default_provider.clone()).or_else(|| cfg.providers.first().map(|p| p.name.to_owned()));
    let Some(name) = name else { return Err((StatusCode::BAD_REQUEST, "no LLM provider is configured (LLM_OPENAI_API_KEY, LLM_ANTHROPIC_API_KEY or LLM_OLLAMA_URL)".into())) };
    cfg.providers.iter().find(|p| p.name == name).ok_or_else(|| {
        if matches!(name.as_str(), "openai" | "anthropic" | "ollama") {
            (StatusCode::BAD_REQUEST, format!("the provider {name} is not configured"))
        } else {
            (StatusCode::BAD_REQUEST, format!("unknown provider {name:?}; use openai, anthropic or ollama"))
        }
    })
}

fn request(s: &AppState, p: &LlmProvider, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    let r = s.agent.llm_http.request(method, format!("{}{path}", p.url));
    match (p.name, &p.key) {
        ("anthropic", Some(k)) => r.header("x-api-key", k.expose()).header("anthropic-version", ANTHROPIC_VERSION),
        (_, Some(k)) => r.bearer_auth(k.expose()),
        _ => r,
    }
}

async fn send(p: &LlmProvider, r: reqwest::RequestBuilder) -> Result<Value, (StatusCode, String)> {
    let down = |e: String| (StatusCode::BAD_GATEWAY, format!("the {} provider did not answer: {e}", p.name));
    let res = r.send().await.map_err(|e| down(if e.is_timeout() { "timed out (LLM_TIMEOUT)".into() } else { "unreachable".into() }))?;
    let status = res.status();
    let body = res.bytes().await.map_err(|_| down("the answer broke off".into()))?;
    if body.len() > MAX_ANSWER {
        return Err(down("the answer is too large".into()));
    }
    let v: Value = serde_json::from_slice(&body).map_err(|_| down(format!("answered {status} with a body that is not JSON")))?;
    if !status.is_success() {
        let msg = v.pointer("/error/message").or_else(|| v.get("error")).and_then(Value::as_str).unwrap_or("an error");
        return Err((StatusCode::BAD_GATEWAY, format!("the {} provider answered {status}: {msg}", p.name)));
    }
    Ok(v)
}

/// `GET /api/llm/providers`.
pub async fn providers(State(s): State<AppState>) -> Response {
    let cfg = &s.config.llm;
    let default = cfg.default_provider.clone().or_else(|| cfg.providers.first().map(|p| p.name.to_owned()));
    let list: Vec<Value> = cfg
        .providers
        .iter()
        .map(|p| json!({ "name": p.name, "configured": true, "default": Some(p.name.to_owned()) == default, "default_model": if Some(p.name.to_owned()) == default { cfg.default_model.clone() } else { None } }))
        .collect();
    Json(json!({ "providers": list, "default_provider": default, "default_model": cfg.default_model })).into_response()
}

#[derive(Deserialize)]
pub struct ModelsQuery {
    provider: Option<String>,
}

/// `GET /api/llm/models?provider=`.
pub async fn models(State(s): State<AppState>, Query(q): Query<ModelsQuery>) -> Response {
    let p = match provider(&s, q.provider.as_deref()) {
        Ok(p) => p,
        Err((st, m)) => return fail(st, m),
    };
    let (path, list_ptr, field) = match p.name {
        "anthropic" => ("/v1/models", "/data", "id"),
        "ollama" => ("/api/tags", "/models", "name"),
        _ => ("/models", "/data", "id"),
    };
    match send(p, request(&s, p, reqwest::Method::GET, path)).await {
        Ok(v) => {
            let models: Vec<Value> = v
                .pointer(list_ptr)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|m| m.get(field).and_then(Value::as_str))
                .map(|id| json!({ "id": id, "name": id }))
                .collect();
            Json(json!({ "provider": p.name, "models": models })).into_response()
        }
        Err((st, m)) => fail(st, m),
    }
}

/// A chat turn in the proxy's own shape.
pub struct Answer {
    /// The assistant's text.
    pub content: String,
    /// Tool calls the model asked for (`{id, name, arguments}`).
    pub tool_calls: Vec<Value>,
    /// Token usage as the provider reported it.
    pub usage: Value,
    /// The model that answered.
    pub model: String,
}

/// MCP tool definitions as OpenAI / Ollama function tools.
fn function_tools(tools: &[Value]) -> Value {
    json!(tools
        .iter()
        .map(|t| json!({ "type": "function", "function": { "name": t["name"], "description": t["description"], "parameters": t["inputSchema"] } }))
        .collect::<Vec<_>>())
}

/// OpenAI's and Ollama's `tool_calls` as `{id, name, arguments}` (OpenAI sends the
/// arguments as JSON text, Ollama as an object).
fn function_calls(calls: &Value) -> Vec<Value> {
    let args = |c: &Value| match c.pointer("/function/arguments") {
        Some(Value::String(text)) => serde_json::from_str(text).unwrap_or(Value::Null),
        Some(v) => v.clone(),
        None => Value::Null,
    };
    calls.as_array().into_iter().flatten().map(|c| json!({ "id": c["id"], "name": c.pointer("/function/name"), "arguments": args(c) })).collect()
}

/// The provider's path and request body for one chat turn.
fn body_for(p: &LlmProvider, model: &str, messages: &[Value], tools: &[Value], max_tokens: u64, stream: bool) -> (&'static str, Value) {
    match p.name {
        "anthropic" => {
            let system: Vec<&str> = messages.iter().filter(|m| m["role"] == "system").filter_map(|m| m["content"].as_str()).collect();
            let msgs: Vec<&Value> = messages.iter().filter(|m| m["role"] != "system").collect();
            let mut body = json!({ "model": model, "max_tokens": max_tokens, "messages": msgs, "stream": stream });
            if !system.is_empty() {
                body["system"] = json!(system.join("\n\n"));
            }
            if !tools.is_empty() {
                body["tools"] = json!(tools.iter().map(|t| json!({ "name": t["name"], "description": t["description"], "input_schema": t["inputSchema"] })).collect::<Vec<_>>());
            }
            ("/v1/messages", body)
        }
        "ollama" => {
            let mut body = json!({ "model": model, "messages": messages, "stream": stream });
            if !tools.is_empty() {
                body["tools"] = function_tools(tools);
            }
            ("/api/chat", body)
        }
        _ => {
            let mut body = json!({ "model": model, "messages": messages, "max_tokens": max_tokens, "stream": stream });
            if !tools.is_empty() {
                body["tools"] = function_tools(tools);
            }
            ("/chat/completions", body)
        }
    }
}

/// One chat turn streamed to the client as server-sent events: `{"type": "delta",
/// "content"}` per piece of text as the provider sends it (OpenAI's and Anthropic's
/// SSE, Ollama's JSON lines), then `{"type": "done", provider, model, content}` (or
/// `{"type": "error", error}` when the provider breaks off).
pub async fn chat_stream(s: &AppState, provider_name: Option<&str>, model: Option<&str>, messages: &[Value], max_tokens: u64) -> Result<Response, (StatusCode, String)> {
    let p = provider(s, provider_name)?.clone();
    let model =
        model.map(str::to_owned).or_else(|| s.config.llm.default_model.clone()).ok_or((StatusCode::BAD_REQUEST, "model is required (or set LLM_DEFAULT_MODEL)".to_owned()))?;
    let (path, body) = body_for(&p, &model, messages, &[], max_tokens, true);
    let res = request(s, &p, reqwest::Method::POST, path).json(&body).send().await.map_err(|_| (StatusCode::BAD_GATEWAY, format!("the {} provider did not answer", p.name)))?;
    if !res.status().is_success() {
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let msg = v.pointer("/error/message").or_else(|| v.get("error")).and_then(Value::as_str).unwrap_or("an error");
        return Err((StatusCode::BAD_GATEWAY, format!("the {} provider answered {status}: {msg}", p.name)));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(32);
    tokio::spawn(async move {
        use futures_util::StreamExt;
        let event = |v: Value| bytes::Bytes::from(format!("data: {v}\n\n"));
        let mut stream = res.bytes_stream();
        let (mut pending, mut full, mut read) = (Vec::<u8>::new(), String::new(), 0usize);
        let mut finished = false;
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else {
                let _ = tx.send(event(json!({ "type": "error", "error": format!("the {} provider broke off", p.name) }))).await;
                return;
            };
            read += chunk.len();
            if read > MAX_ANSWER {
                let _ = tx.send(event(json!({ "type": "error", "error": "the answer is too large" }))).await;
                return;
            }
            pending.extend_from_slice(&chunk);
            while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line).trim().to_owned();
                let payload = if p.name == "ollama" { line.as_str() } else { line.strip_prefix("data:").map(str::trim).unwrap_or("") };
                if payload.is_empty() {
                    continue;
                }
                if payload == "[DONE]" {
                    finished = true;
                    break;
                }
                let Ok(v) = serde_json::from_str::<Value>(payload) else { continue };
                let piece = match p.name {
                    "anthropic" => v.pointer("/delta/text").and_then(Value::as_str),
                    "ollama" => v.pointer("/message/content").and_then(Value::as_str),
                    _ => v.pointer("/choices/0/delta/content").and_then(Value::as_str),
                };
                if let Some(piece) = piece.filter(|t| !t.is_empty()) {
                    full.push_str(piece);
                    if tx.send(event(json!({ "type": "delta", "content": piece }))).await.is_err() {
                        return;
                    }
                }
                if v["type"] == "message_stop" || v["done"] == true {
                    finished = true;
                    break;
                }
            }
            if finished {
                break;
            }
        }
        let _ = tx.send(event(json!({ "type": "done", "provider": p.name, "model": model, "content": full }))).await;
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx)) });
    Ok(([(axum::http::header::CONTENT_TYPE, "text/event-stream"), (axum::http::header::CACHE_CONTROL, "no-cache")], axum::body::Body::from_stream(body)).into_response())
}

/// One chat call: `messages` as `{role, content}` (system messages become Anthropic's
/// `system`), optional `tools` as MCP tool definitions.
pub async fn chat(
    s: &AppState,
    provider_name: Option<&str>,
    model: Option<&str>,
    messages: &[Value],
    tools: &[Value],
    max_tokens: u64,
) -> Result<(&'static str, Answer), (StatusCode, String)> {
    let p = provider(s, provider_name)?;
    let model =
        model.map(str::to_owned).or_else(|| s.config.llm.default_model.clone()).ok_or((StatusCode::BAD_REQUEST, "model is required (or set LLM_DEFAULT_MODEL)".to_owned()))?;
    let bad = |m: &str| (StatusCode::BAD_GATEWAY, format!("the {} provider answered without {m}", p.name));
    let (path, body) = body_for(p, &model, messages, tools, max_tokens, false);
    let v = send(p, request(s, p, reqwest::Method::POST, path).json(&body)).await?;
    let answer = match p.name {
        "anthropic" => {
            let blocks = v["content"].as_array().ok_or_else(|| bad("content"))?;
            Answer {
                content: blocks.iter().filter(|b| b["type"] == "text").filter_map(|b| b["text"].as_str()).collect::<Vec<_>>().join(""),
                tool_calls: blocks.iter().filter(|b| b["type"] == "tool_use").map(|b| json!({ "id": b["id"], "name": b["name"], "arguments": b["input"] })).collect(),
                usage: v["usage"].clone(),
                model: v["model"].as_str().unwrap_or(&model).to_owned(),
            }
        }
        "ollama" => {
            let m = v.get("message").ok_or_else(|| bad("message"))?;
            Answer {
                content: m["content"].as_str().unwrap_or("").to_owned(),
                tool_calls: function_calls(&m["tool_calls"]),
                usage: json!({ "prompt_eval_count": v["prompt_eval_count"], "eval_count": v["eval_count"] }),
                model: v["model"].as_str().unwrap_or(&model).to_owned(),
            }
        }
        _ => {
            let m = v.pointer("/choices/0/message").ok_or_else(|| bad("choices"))?;
            Answer {
                content: m["content"].as_str().unwrap_or("").to_owned(),
                tool_calls: function_calls(&m["tool_calls"]),
                usage: v["usage"].clone(),
                model: v["model"].as_str().unwrap_or(&model).to_owned(),
            }
        }
    };
    Ok((p.name, answer))
}

/// The SQL in a model's answer: a ```sql block, else the whole text.
pub fn sql_in(text: &str) -> String {
    if let Some(start) = text.find("```") {
        let rest = &text[start + 3..];
        let rest = rest.strip_prefix("sql").or_else(|| rest.strip_prefix("SQL")).unwrap_or(rest);
        if let Some(end) = rest.find("```") {
            return rest[..end].trim().to_owned();
        }
    }
    text.trim().to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sql_is_taken_from_a_fence() {
        assert_eq!(super::sql_in("Here:\n```sql\nSELECT 1\n```\nDone"), "SELECT 1");
        assert_eq!(super::sql_in("```\nselect 2\n```"), "select 2");
        assert_eq!(super::sql_in(" select 3 "), "select 3");
    }
}
