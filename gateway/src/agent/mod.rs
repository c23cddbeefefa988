//! The database agent API (seed 002, pgEdge's Natural Language Agent): MCP over
//! HTTP at `/mcp/v1` and its REST side under `/api`: [`databases`] (this cluster and
//! the workbench's saved configurations, selection per token), [`conversations`],
//! [`compact`], the LLM proxy ([`llm`] wire formats, [`chat`] turns with the tools
//! bridged) and admin-made API [`tokens`].
//!
//! Every tool call runs **as the caller**: the request's token gives the Postgres
//! role and `request.jwt.claims` inside a read-only transaction, so GRANTs and RLS
//! decide what an agent may read, exactly as for REST.
//!
//! request → [`access`] (a user token, an API token or the service key) → [`mcp`] (JSON-RPC 2.0,
//! one message or a batch) → [`tools`] (classified by PostgreSQL's parser, run as
//! the caller) → JSON-RPC answer.

use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

pub mod access;
pub mod chat;
pub mod compact;
pub mod conversations;
pub mod databases;
pub mod llm;
pub mod mcp;
pub mod tokens;
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
        .route("/api/llm/chat", post(chat::post))
        .route("/api/tokens", get(tokens::list).post(tokens::create))
        .route("/api/tokens/{id}", axum::routing::delete(tokens::revoke))
        .route("/api/conversations", get(conversations::list).post(conversations::create).delete(conversations::delete_all))
        .route("/api/conversations/{id}", get(conversations::get).put(conversations::replace).patch(conversations::rename).delete(conversations::delete))
        .route_layer(gate)
}
