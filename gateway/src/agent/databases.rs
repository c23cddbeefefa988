//! The seed's database endpoints: which databases the caller may use, selecting one
//! for its token, and who it is.
//!
//! The databases are this cluster, named `default` (the agent's tools run on it as
//! the caller, under RLS), and, when the workbench is enabled and grants the caller,
//! the workbench's saved configurations the caller may use (its own; all for the
//! service key), named by their `name` (a repeated name gets `#` and the first 8
//! characters of its id; the oldest keeps the name). Tools on a saved configuration
//! run as its database user, read-only, within its allowed_tables. Selections and
//! bindings hold the database's key (`default` or the configuration's id), never its
//! name, so a configuration named like another later cannot take its place. A token
//! may be bound to one database (an API token's `database`, or a `database` claim
//! holding the key): it sees only that one and cannot switch (403), as the seed's API
//! tokens.

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
use crate::workbench::access::{granted, Owner};
use crate::workbench::configs;
use crate::AppState;

/// This cluster's name among the agent's databases.
pub const DEFAULT: &str = "default";

/// Where a database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// This cluster, as the caller.
    Cluster,
    /// A saved workbench configuration (its id).
    Saved(String),
}

/// One database the caller may use.
pub struct Database {
    /// What selections and bindings hold: `default`, or the configuration's id
    /// (names can be repeated by other users; ids cannot).
    pub key: String,
    /// Its name in the agent's API.
    pub name: String,
    /// Where it is.
    pub place: Place,
    /// Its entry in `GET /api/databases`.
    pub json: Value,
}

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

/// This cluster, as the caller sees it.
fn cluster(s: &AppState, caller: &Caller) -> Database {
    let url: Option<tokio_postgres::Config> = s.config.database_url.parse().ok();
    let host = url.as_ref().and_then(|c| c.get_hosts().first()).map(|h| match h {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        #[allow(unreachable_patterns)]
        _ => "localhost".to_owned(),
    });
    let port = url.as_ref().and_then(|c| c.get_ports().first().copied()).unwrap_or(5432);
    let dbname = url.as_ref().and_then(|c| c.get_dbname()).unwrap_or("postgres").to_owned();
    let ssl = match url.as_ref().map(|c| c.get_ssl_mode()) {
        Some(tokio_postgres::config::SslMode::Disable) => "disable",
        Some(tokio_postgres::config::SslMode::Require) => "require",
        _ => "prefer",
    };
    Database {
        key: DEFAULT.to_owned(),
        name: DEFAULT.to_owned(),
        place: Place::Cluster,
        json: json!({ "name": DEFAULT, "host": host.unwrap_or_else(|| "localhost".into()), "port": port, "database": dbname, "user": caller.pg_role, "sslmode": ssl }),
    }
}

/// The saved configurations `owner` may use, named uniquely.
async fn saved(s: &AppState, owner: &Owner) -> Result<Vec<Database>, String> {
    let list = configs::usable(s, owner).await.map_err(|e| e.message)?;
    let mut seen = std::collections::HashSet::from([DEFAULT.to_owned()]);
    Ok(list
        .into_iter()
        .map(|c| {
            let name = if seen.contains(&c.name) { format!("{}#{}", c.name, &c.id[..8]) } else { c.name.clone() };
            seen.insert(name.clone());
            Database {
                json: json!({ "name": name, "host": c.host, "port": c.port, "database": c.database, "user": c.user, "sslmode": c.ssl, "config_id": c.id }),
                key: c.id.clone(),
                name,
                place: Place::Saved(c.id),
            }
        })
        .collect())
}

/// The databases `caller` may use: this cluster, then the saved configurations when
/// the workbench grants the caller; only the bound one for a bound token.
pub async fn visible(s: &AppState, caller: &Caller) -> Result<Vec<Database>, String> {
    let mut all = vec![cluster(s, caller)];
    if s.config.workbench.enabled && granted(&s.config.workbench, caller) {
        all.extend(saved(s, &Owner::of(caller)).await?);
    }
    Ok(match bound(caller) {
        Some(b) => all.into_iter().filter(|d| d.key == b).collect(),
        None => all,
    })
}

/// The key of the database `name_or_id` names among all of them (as the service
/// key sees them; a repeated name is the oldest configuration): `Ok(None)` if none.
pub async fn key_of(s: &AppState, name_or_id: &str) -> Result<Option<String>, String> {
    if name_or_id == DEFAULT {
        return Ok(Some(DEFAULT.to_owned()));
    }
    if !s.config.workbench.enabled {
        return Ok(None);
    }
    let all = saved(s, &Owner("service".into())).await?;
    Ok(all.into_iter().find(|d| d.key == name_or_id || d.name == name_or_id).map(|d| d.key))
}

/// Where the caller's tools run: its selected (or bound) database, if it may still
/// use it.
pub async fn place(s: &AppState, caller: &Caller) -> Result<Place, String> {
    let key = s.agent.selections.current(caller);
    if key == DEFAULT {
        return Ok(Place::Cluster);
    }
    visible(s, caller).await?.into_iter().find(|d| d.key == key).map(|d| d.place).ok_or_else(|| "the selected database is no longer available; select another".to_owned())
}

/// The name of the caller's current database (`default` if it is gone).
fn current_name(caller_dbs: &[Database], key: &str) -> String {
    caller_dbs.iter().find(|d| d.key == key).map(|d| d.name.clone()).unwrap_or_else(|| DEFAULT.to_owned())
}

fn unavailable(e: String) -> Response {
    tracing::error!(error = %e, "agent databases");
    fail(StatusCode::SERVICE_UNAVAILABLE, "the saved databases cannot be listed right now; retry shortly")
}

/// `GET /api/databases`.
pub async fn list(State(s): State<AppState>, Extension(caller): Extension<Caller>) -> Response {
    match visible(&s, &caller).await {
        Ok(dbs) => {
            let current = current_name(&dbs, &s.agent.selections.current(&caller));
            Json(json!({ "databases": dbs.into_iter().map(|d| d.json).collect::<Vec<_>>(), "current": current })).into_response()
        }
        Err(e) => unavailable(e),
    }
}

/// `POST /api/databases/select` `{name}`.
pub async fn select(State(s): State<AppState>, Extension(caller): Extension<Caller>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(name) = v.get("name").and_then(Value::as_str).filter(|n| !n.trim().is_empty()) else {
        return fail(StatusCode::BAD_REQUEST, "Database name is required");
    };
    let mine = match visible(&s, &caller).await {
        Ok(d) => d,
        Err(e) => return unavailable(e),
    };
    let chosen = mine.iter().find(|d| d.name == name);
    if let Some(b) = bound(&caller) {
        if chosen.is_none_or(|d| d.key != b) {
            return fail(StatusCode::FORBIDDEN, "API token is bound to a different database");
        }
    }
    let Some(chosen) = chosen else {
        // Someone else's configuration is "denied", a name nobody has "not found".
        return match key_of(&s, name).await {
            Ok(Some(_)) => fail(StatusCode::FORBIDDEN, "Access denied to this database"),
            Ok(None) => fail(StatusCode::NOT_FOUND, "Database not found"),
            Err(e) => unavailable(e),
        };
    };
    // Kept by key: a configuration someone names the same later cannot take its place.
    s.agent.selections.set(&caller, &chosen.key);
    Json(json!({ "success": true, "current": name, "message": "Database selected successfully" })).into_response()
}

/// `GET /api/user/info`.
pub async fn user_info(Extension(caller): Extension<Caller>) -> Response {
    let username = caller.claims.get("email").and_then(Value::as_str).filter(|e| !e.is_empty()).or_else(|| caller.user_id()).unwrap_or(&caller.pg_role).to_owned();
    Json(json!({ "username": username, "role": caller.pg_role, "id": caller.user_id() })).into_response()
}
