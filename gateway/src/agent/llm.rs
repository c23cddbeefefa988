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
/// Most tool calls one answer may ask for.
const MAX_TOOL_CALLS: usize = 64;

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

/// A provider's whole answer, read piece by piece and refused past `max` bytes
/// (never buffered beyond it).
async fn read_bounded(res: reqwest::Response, max: usize) -> Result<Vec<u8>, &'static str> {
    use futures_util::StreamExt;
    let mut stream = res.bytes_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| "broke off its answer")?;
        if body.len() + chunk.len() > max {
            return Err("answered too much");
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn send(p: &LlmProvider, r: reqwest::RequestBuilder) -> Result<Value, (StatusCode, String)> {
    let down = |e: String| (StatusCode::BAD_GATEWAY, format!("the {} provider did not answer: {e}", p.name));
    let res = r.send().await.map_err(|e| down(if e.is_timeout() { "timed out (LLM_TIMEOUT)".into() } else { "unreachable".into() }))?;
    let status = res.status();
    let body = read_bounded(res, MAX_ANSWER).await.map_err(|e| down(e.into()))?;
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

/// The provider and model of a chat.
#[derive(Clone)]
pub struct Route {
    /// The provider.
    pub p: LlmProvider,
    /// The model asked for.
    pub model: String,
}

/// The provider (named, else LLM_DEFAULT_PROVIDER, else the first configured) and the
/// model (named, else LLM_DEFAULT_MODEL).
pub fn route(s: &AppState, provider_name: Option<&str>, model: Option<&str>) -> Result<Route, (StatusCode, String)> {
    let p = provider(s, provider_name)?.clone();
    let model =
        model.map(str::to_owned).or_else(|| s.config.llm.default_model.clone()).ok_or((StatusCode::BAD_REQUEST, "model is required (or set LLM_DEFAULT_MODEL)".to_owned()))?;
    Ok(Route { p, model })
}

/// Sends one turn; an answer other than 2xx is an error naming the provider.
pub async fn open(s: &AppState, r: &Route, messages: &[Value], tools: &[Value], max_tokens: u64, stream: bool) -> Result<reqwest::Response, (StatusCode, String)> {
    let p = &r.p;
    let (path, body) = body_for(p, &r.model, messages, tools, max_tokens, stream);
    let res =
        request(s, p, reqwest::Method::POST, path).json(&body).send().await.map_err(|e| {
            (StatusCode::BAD_GATEWAY, format!("the {} provider did not answer: {}", p.name, if e.is_timeout() { "timed out (LLM_TIMEOUT)" } else { "unreachable" }))
        })?;
    if !res.status().is_success() {
        let status = res.status();
        let text = read_bounded(res, 64 * 1024).await.unwrap_or_default();
        let v: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
        let msg = v.pointer("/error/message").or_else(|| v.get("error")).and_then(Value::as_str).unwrap_or("an error");
        let msg: String = msg.chars().take(500).collect();
        return Err((StatusCode::BAD_GATEWAY, format!("the {} provider answered {status}: {msg}", p.name)));
    }
    Ok(res)
}

/// Reads a whole (not streamed) answer.
pub async fn answer(r: &Route, res: reqwest::Response) -> Result<Answer, (StatusCode, String)> {
    let p = &r.p;
    let down = |e: &str| (StatusCode::BAD_GATEWAY, format!("the {} provider {e}", p.name));
    let body = read_bounded(res, MAX_ANSWER).await.map_err(down)?;
    let v: Value = serde_json::from_slice(&body).map_err(|_| down("answered with a body that is not JSON"))?;
    let bad = |m: &str| (StatusCode::BAD_GATEWAY, format!("the {} provider answered without {m}", p.name));
    let model = v["model"].as_str().unwrap_or(&r.model).to_owned();
    let answer = match p.name {
        "anthropic" => {
            let blocks = v["content"].as_array().ok_or_else(|| bad("content"))?;
            Answer {
                content: blocks.iter().filter(|b| b["type"] == "text").filter_map(|b| b["text"].as_str()).collect::<Vec<_>>().join(""),
                tool_calls: blocks.iter().filter(|b| b["type"] == "tool_use").map(|b| json!({ "id": b["id"], "name": b["name"], "arguments": b["input"] })).collect(),
                usage: v["usage"].clone(),
                model,
            }
        }
        "ollama" => {
            let m = v.get("message").ok_or_else(|| bad("message"))?;
            Answer {
                content: m["content"].as_str().unwrap_or("").to_owned(),
                tool_calls: function_calls(&m["tool_calls"]),
                usage: json!({ "prompt_eval_count": v["prompt_eval_count"], "eval_count": v["eval_count"] }),
                model,
            }
        }
        _ => {
            let m = v.pointer("/choices/0/message").ok_or_else(|| bad("choices"))?;
            Answer { content: m["content"].as_str().unwrap_or("").to_owned(), tool_calls: function_calls(&m["tool_calls"]), usage: v["usage"].clone(), model }
        }
    };
    if answer.tool_calls.len() > MAX_TOOL_CALLS {
        return Err(down(&format!("asked for more than {MAX_TOOL_CALLS} tool calls")));
    }
    Ok(answer)
}

/// Tool calls being assembled from a stream: id, name and the arguments as they
/// arrive (JSON text in pieces, or a whole object from Ollama).
#[derive(Default)]
struct Partial {
    id: String,
    name: String,
    text: String,
    object: Option<Value>,
}

/// Reads a streamed answer (OpenAI's and Anthropic's server-sent events, Ollama's
/// JSON lines), sending `{"type": "delta", "content"}` to `out` per piece of text as
/// it comes. Tool calls are assembled (OpenAI's argument pieces by index,
/// Anthropic's `input_json_delta`s by block, Ollama's whole calls) and returned.
pub async fn answer_streamed(r: &Route, res: reqwest::Response, out: &tokio::sync::mpsc::Sender<bytes::Bytes>) -> Result<Answer, String> {
    use futures_util::StreamExt;
    let p = &r.p;
    let mut stream = res.bytes_stream();
    let (mut pending, mut content, mut read) = (Vec::<u8>::new(), String::new(), 0usize);
    let mut calls: std::collections::BTreeMap<u64, Partial> = Default::default();
    let (mut usage, mut model) = (Value::Null, r.model.clone());
    'read: while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| format!("the {} provider broke off", p.name))?;
        read += chunk.len();
        if read > MAX_ANSWER {
            return Err(format!("the {} provider answered too much", p.name));
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
                break 'read;
            }
            let Ok(v) = serde_json::from_str::<Value>(payload) else { continue };
            let piece = match p.name {
                "anthropic" => v.pointer("/delta/text").and_then(Value::as_str),
                "ollama" => v.pointer("/message/content").and_then(Value::as_str),
                _ => v.pointer("/choices/0/delta/content").and_then(Value::as_str),
            };
            if let Some(piece) = piece.filter(|t| !t.is_empty()) {
                content.push_str(piece);
                if out.send(event(json!({ "type": "delta", "content": piece }))).await.is_err() {
                    return Err("the client went away".into());
                }
            }
            if let Some(m) = v["model"].as_str().or_else(|| v.pointer("/message/model").and_then(Value::as_str)) {
                model = m.to_owned();
            }
            match p.name {
                "anthropic" => {
                    let index = v["index"].as_u64().unwrap_or(0);
                    if v["type"] == "content_block_start" && v.pointer("/content_block/type") == Some(&json!("tool_use")) {
                        let b = &v["content_block"];
                        calls.insert(index, Partial { id: b["id"].as_str().unwrap_or("").into(), name: b["name"].as_str().unwrap_or("").into(), ..Default::default() });
                    }
                    if let (Some(part), Some(c)) = (v.pointer("/delta/partial_json").and_then(Value::as_str), calls.get_mut(&index)) {
                        c.text.push_str(part);
                    }
                    if let Some(u) = v.pointer("/message/usage").or_else(|| v.get("usage")).and_then(Value::as_object) {
                        let mut merged = usage.as_object().cloned().unwrap_or_default();
                        merged.extend(u.clone());
                        usage = Value::Object(merged);
                    }
                    if v["type"] == "message_stop" {
                        break 'read;
                    }
                }
                "ollama" => {
                    for c in v.pointer("/message/tool_calls").and_then(Value::as_array).into_iter().flatten() {
                        let n = calls.len() as u64;
                        calls.insert(
                            n,
                            Partial {
                                name: c.pointer("/function/name").and_then(Value::as_str).unwrap_or("").into(),
                                object: c.pointer("/function/arguments").cloned(),
                                ..Default::default()
                            },
                        );
                    }
                    if v["done"] == true {
                        usage = json!({ "prompt_eval_count": v["prompt_eval_count"], "eval_count": v["eval_count"] });
                        break 'read;
                    }
                }
                _ => {
                    for c in v.pointer("/choices/0/delta/tool_calls").and_then(Value::as_array).into_iter().flatten() {
                        let e = calls.entry(c["index"].as_u64().unwrap_or(0)).or_default();
                        if let Some(id) = c["id"].as_str() {
                            e.id = id.to_owned();
                        }
                        if let Some(name) = c.pointer("/function/name").and_then(Value::as_str) {
                            e.name.push_str(name);
                        }
                        if let Some(args) = c.pointer("/function/arguments").and_then(Value::as_str) {
                            e.text.push_str(args);
                        }
                    }
                    if v["usage"].is_object() {
                        usage = v["usage"].clone();
                    }
                }
            }
            if calls.len() > MAX_TOOL_CALLS {
                return Err(format!("the {} provider asked for more than {MAX_TOOL_CALLS} tool calls", p.name));
            }
        }
    }
    let tool_calls = calls
        .into_values()
        .enumerate()
        .map(|(i, c)| {
            let arguments = c.object.unwrap_or_else(|| if c.text.trim().is_empty() { json!({}) } else { serde_json::from_str(&c.text).unwrap_or(Value::Null) });
            let id = if c.id.is_empty() { format!("call_{i}") } else { c.id };
            json!({ "id": id, "name": c.name, "arguments": arguments })
        })
        .collect();
    Ok(Answer { content, tool_calls, usage, model })
}

/// One server-sent event.
pub fn event(v: Value) -> bytes::Bytes {
    bytes::Bytes::from(format!("data: {v}\n\n"))
}

/// The provider's own messages recording `a` (an answer with tool calls) and the
/// results of those calls, appended so the next turn can go on from them: OpenAI's
/// assistant `tool_calls` and `tool` messages, Anthropic's `tool_use` and
/// `tool_result` blocks, Ollama's `tool_calls` and `tool` messages.
pub fn continue_with(r: &Route, messages: &mut Vec<Value>, a: &Answer, results: &[(String, bool)]) {
    let calls = a.tool_calls.iter().zip(results);
    match r.p.name {
        "anthropic" => {
            let mut blocks = vec![];
            if !a.content.is_empty() {
                blocks.push(json!({ "type": "text", "text": a.content }));
            }
            blocks.extend(a.tool_calls.iter().map(|c| json!({ "type": "tool_use", "id": c["id"], "name": c["name"], "input": c["arguments"] })));
            messages.push(json!({ "role": "assistant", "content": blocks }));
            let results: Vec<Value> = calls.map(|(c, (text, is_error))| json!({ "type": "tool_result", "tool_use_id": c["id"], "content": text, "is_error": is_error })).collect();
            messages.push(json!({ "role": "user", "content": results }));
        }
        "ollama" => {
            let tc: Vec<Value> = a.tool_calls.iter().map(|c| json!({ "function": { "name": c["name"], "arguments": c["arguments"] } })).collect();
            messages.push(json!({ "role": "assistant", "content": a.content, "tool_calls": tc }));
            messages.extend(calls.map(|(c, (text, _))| json!({ "role": "tool", "content": text, "tool_name": c["name"] })));
        }
        _ => {
            let tc: Vec<Value> =
                a.tool_calls.iter().map(|c| json!({ "id": c["id"], "type": "function", "function": { "name": c["name"], "arguments": c["arguments"].to_string() } })).collect();
            messages.push(json!({ "role": "assistant", "content": if a.content.is_empty() { Value::Null } else { json!(a.content) }, "tool_calls": tc }));
            messages.extend(calls.map(|(c, (text, _))| json!({ "role": "tool", "tool_call_id": c["id"], "content": text })));
        }
    }
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
    let r = route(s, provider_name, model)?;
    let res = open(s, &r, messages, tools, max_tokens, false).await?;
    Ok((r.p.name, answer(&r, res).await?))
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
