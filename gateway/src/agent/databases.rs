//! The seed's database endpoints: which databases the caller may use, selecting one
//! for its token, and who it is.
//!
//! The databases are this cluster, named `default` (the agent's tools run on it as
//! the caller). A token may be bound to one database by a `database` claim: it sees
//! only that one and cannot switch (403), as the seed's API tokens.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::fail;
use crate::http::caller::Caller;
use crate::AppState;

/// The one database the agent serves: this cluster.
pub const DEFAULT: &str = "default";

/// Selections per token (by its hash), bounded.
#[derive(Default)]
pub struct Selections(Mutex<HashMap<[u8; 32], String>>);

const MAX_SELECTIONS: usize = 100_000;

impl Selections {
    fn key(caller: &Caller) -> [u8; 32] {
        Sha256::digest(caller.token.as_bytes()).into()
    }

    /// The caller's current database.
    pub fn current(&self, caller: &Caller) -> String {
        if let Some(bound) = bound(caller) {
            return bound.to_owned();
        }
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&Self::key(caller)).cloned().unwrap_or_else(|| DEFAULT.to_owned())
    }

    fn set(&self, caller: &Caller, name: &str) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_SELECTIONS {
            m.clear();
        }
        m.insert(Self::key(caller), name.to_owned());
    }
}

/// The database a token is bound to (`database` claim).
pub fn bound(caller: &Caller) -> Option<&str> {
    caller.claims.get("database").and_then(Value::as_str)
}

/// The databases `caller` may use.
fn visible(s: &AppState, caller: &Caller) -> Vec<Value> {
    let url: Option<tokio_postgres::Config> = s.config.database_url.parse().ok();
    let (host, port, dbname, ssl) = match &url {
        Some(c) => (
            c.get_hosts().first().map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                #[allow(unreachable_patterns)]
                _ => "localhost".to_owned(),
            }),
            c.get_ports().first().copied().unwrap_or(5432),
            c.get_dbname().unwrap_or("postgres").to_owned(),
            match c.get_ssl_mode() {
                tokio_postgres::config::SslMode::Disable => "disable",
                tokio_postgres::config::SslMode::Require => "require",
                _ => "prefer",
            },
        ),
        None => (None, 5432, "postgres".to_owned(), "prefer"),
    };
    let all = vec![json!({ "name": DEFAULT, "host": host.unwrap_or_else(|| "localhost".into()), "port": port, "database": dbname, "user": caller.pg_role, "sslmode": ssl })];
    match bound(caller) {
        Some(b) => all.into_iter().filter(|d| d["name"] == b).collect(),
        None => all,
    }
}

/// `GET /api/databases`.
pub async fn list(State(s): State<AppState>, Extension(caller): Extension<Caller>) -> Response {
    let databases = visible(&s, &caller);
    Json(json!({ "databases": databases, "current": s.agent.selections.current(&caller) })).into_response()
}

/// `POST /api/databases/select` `{name}`.
pub async fn select(State(s): State<AppState>, Extension(caller): Extension<Caller>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(name) = v.get("name").and_then(Value::as_str).filter(|n| !n.trim().is_empty()) else {
        return fail(StatusCode::BAD_REQUEST, "Database name is required");
    };
    if let Some(b) = bound(&caller) {
        if b != name {
            return fail(StatusCode::FORBIDDEN, "API token is bound to a different database");
        }
    }
    let known = name == DEFAULT;
    if !known {
        return fail(StatusCode::NOT_FOUND, "Database not found");
    }
    if !visible(&s, &caller).iter().any(|d| d["name"] == name) {
        return fail(StatusCode::FORBIDDEN, "Access denied to this database");
    }
    s.agent.selections.set(&caller, name);
    Json(json!({ "success": true, "current": name, "message": "Database selected successfully" })).into_response()
}

/// `GET /api/user/info`.
pub async fn user_info(Extension(caller): Extension<Caller>) -> Response {
    let username = caller.claims.get("email").and_then(Value::as_str).filter(|e| !e.is_empty()).or_else(|| caller.user_id()).unwrap_or(&caller.pg_role).to_owned();
    Json(json!({ "username": username, "role": caller.pg_role, "id": caller.user_id() })).into_response()
}
