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

use axum::routing::{get, post};
use axum::Router;

pub mod access;
pub mod databases;
pub mod mcp;
pub mod tools;

use crate::AppState;

/// The agent's shared state.
#[derive(Default)]
pub struct Agent {
    /// The database each token selected.
    pub selections: databases::Selections,
}

/// Every agent route, behind the access check.
pub fn routes(state: &AppState) -> Router<AppState> {
    let gate = axum::middleware::from_fn_with_state(state.clone(), access::gate);
    Router::new()
        .route("/mcp/v1", post(mcp::post).get(mcp::get).delete(mcp::delete))
        .route("/api/databases", get(databases::list))
        .route("/api/databases/select", post(databases::select))
        .route("/api/user/info", get(databases::user_info))
        .route_layer(gate)
}
