//! The database agent API (seed 002, pgEdge's Natural Language Agent): MCP over
//! HTTP at `/mcp/v1` and its REST side under `/api` (databases, user info).
//!
//! Every tool call runs **as the caller**: the request's token gives the Postgres
//! role and `request.jwt.claims` inside a read-only transaction, so GRANTs and RLS
//! decide what an agent may read, exactly as for REST.
//!
//! request → [`access`] (a user token or the service key) → [`mcp`] (JSON-RPC 2.0,
//! one message or a batch) → [`tools`] (classified by PostgreSQL's parser, run as
//! the caller) → JSON-RPC answer.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

pub mod access;
pub mod compact;
pub mod conversations;
pub mod databases;
pub mod llm;
pub mod mcp;
pub mod tools;

use crate::AppState;

/// A refusal in the seed's shape, `{success: false, error}` (with `message` and `code`
/// beside, as every product's error body).
pub fn fail(status: axum::http::StatusCode, message: impl AsRef<str>) -> axum::response::Response {
    let d = crate::error::Dialect::Success;
    (status, axum::Json(d.body(status, d.code_for_status(status), message.as_ref(), serde_json::Value::Null, serde_json::Value::Null))).into_response()
}

/// The agent's shared state.
pub struct Agent {
    /// The database each token selected.
    pub selections: databases::Selections,
    /// HTTP client to the LLM providers.
    pub llm_http: reqwest::Client,
    /// Tool calls running at once: half the gateway's pool.
    pub running: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Agent {
    /// From the settings.
    pub fn new(cfg: &crate::config::Config) -> Agent {
        Agent {
            selections: databases::Selections::default(),
            llm_http: llm::client(cfg.llm.timeout_secs),
            running: std::sync::Arc::new(tokio::sync::Semaphore::new((cfg.db_pool_size / 2).max(1))),
        }
    }
}

/// `POST /api/chat/compact`.
async fn compact_chat(body: bytes::Bytes) -> axum::response::Response {
    let fail = |m: String| fail(axum::http::StatusCode::BAD_REQUEST, m);
    let req: compact::Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return fail(format!("invalid request: {e}")),
    };
    if req.messages.len() > 100_000 {
        return fail("at most 100000 messages".into());
    }
    if !matches!(req.options.token_counter_type.as_str(), "generic" | "openai" | "anthropic" | "ollama") {
        return fail("token_counter_type must be generic, openai, anthropic or ollama".into());
    }
    // CPU work of the size of the body (bounded by the 2 MiB body limit): off the
    // runtime, and as many at once as there are cores (the rest wait up to 10 s).
    static COMPACTING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
    let Ok(Ok(_permit)) = tokio::time::timeout(std::time::Duration::from_secs(10), COMPACTING.acquire()).await else {
        return self::fail(axum::http::StatusCode::SERVICE_UNAVAILABLE, "too many compactions are running; retry shortly");
    };
    match tokio::task::spawn_blocking(move || compact::compact(&req)).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(_) => fail("compaction failed".into()),
    }
}

#[derive(serde::Deserialize)]
struct ChatBody {
    provider: Option<String>,
    model: Option<String>,
    messages: Vec<serde_json::Value>,
    #[serde(default)]
    tools: Vec<serde_json::Value>,
    max_tokens: Option<u64>,
    /// Answer as server-sent events.
    #[serde(default)]
    stream: bool,
}

/// `POST /api/llm/chat`: one turn through the chosen provider, answered in one shape.
/// `tools: true`-style bridging is the client's: the tool calls come back as asked.
pub async fn llm_chat(State(s): State<AppState>, body: bytes::Bytes) -> axum::response::Response {
    let b: ChatBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return fail(axum::http::StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")),
    };
    if b.messages.is_empty() || b.messages.len() > 1000 || b.messages.iter().any(|m| !m["role"].is_string()) {
        return fail(axum::http::StatusCode::BAD_REQUEST, "messages must be 1 to 1000 {role, content} objects");
    }
    if b.stream {
        return match llm::chat_stream(&s, b.provider.as_deref(), b.model.as_deref(), &b.messages, b.max_tokens.unwrap_or(1024).clamp(1, 32_000)).await {
            Ok(r) => r,
            Err((st, m)) => fail(st, m),
        };
    }
    let tools =
        if b.tools.is_empty() { vec![] } else { tools::list().as_array().cloned().unwrap_or_default().into_iter().filter(|t| b.tools.iter().any(|n| *n == t["name"])).collect() };
    match llm::chat(&s, b.provider.as_deref(), b.model.as_deref(), &b.messages, &tools, b.max_tokens.unwrap_or(1024).clamp(1, 32_000)).await {
        Ok((provider, a)) => axum::Json(serde_json::json!({
            "provider": provider,
            "model": a.model,
            "message": { "role": "assistant", "content": a.content },
            "tool_calls": a.tool_calls,
            "usage": a.usage,
        }))
        .into_response(),
        Err((st, m)) => fail(st, m),
    }
}

/// Every agent route, behind the access check.
pub fn routes(state: &AppState) -> Router<AppState> {
    let gate = axum::middleware::from_fn_with_state(state.clone(), access::gate);
    Router::new()
        .route("/mcp/v1", post(mcp::post).get(mcp::get).delete(mcp::delete))
        .route("/api/databases", get(databases::list))
        .route("/api/databases/select", post(databases::select))
        .route("/api/user/info", get(databases::user_info))
        .route("/api/chat/compact", post(compact_chat))
        .route("/api/llm/providers", get(llm::providers))
        .route("/api/llm/models", get(llm::models))
        .route("/api/llm/chat", post(llm_chat))
        .route("/api/conversations", get(conversations::list).post(conversations::create).delete(conversations::delete_all))
        .route("/api/conversations/{id}", get(conversations::get).put(conversations::replace).patch(conversations::rename).delete(conversations::delete))
        .route_layer(gate)
}
