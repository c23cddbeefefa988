//! The seed's conversations (`/api/conversations`), kept in the extension's
//! `agent.conversations`. Every statement runs as the caller (role and claims, as
//! REST): the table's row-level security on the owner is what keeps one user's
//! conversations from another; this module adds no check of its own.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::fail;
use crate::db::caller::{self, RequestInfo};
use crate::http::caller::Caller;
use crate::AppState;

/// Messages in one conversation at most.
const MAX_MESSAGES: usize = 10_000;

fn unavailable(e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "conversations");
    fail(StatusCode::SERVICE_UNAVAILABLE, "the conversation store is unavailable")
}

/// The columns of a full conversation, as the seed's JSON.
const FULL: &str = "json_build_object('id', id, 'username', username, 'title', title, 'provider', provider, 'model', model, 'connection', connection, \
     'messages', messages, 'created_at', to_char(created_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
     'updated_at', to_char(updated_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'))::text";

/// Runs `sql` with `params` as the caller, in a transaction of its own.
async fn as_caller(s: &AppState, who: &Caller, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Result<Vec<tokio_postgres::Row>, Response> {
    let mut conn = s.pool.get().await.map_err(unavailable)?;
    let info = RequestInfo::new("POST", "/api/conversations");
    let tx = caller::begin(&mut conn, &who.run_as(), &info).await.map_err(unavailable)?;
    let rows = match tx.query(sql, params).await {
        Ok(r) => r,
        Err(e) => {
            return Err(match e.as_db_error().map(|d| d.code().code()) {
                Some("42501") => fail(StatusCode::FORBIDDEN, "this role may not keep conversations"),
                Some(c) if c.starts_with("23") || c.starts_with("22") => fail(StatusCode::BAD_REQUEST, e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_default()),
                _ => unavailable(e),
            })
        }
    };
    tx.commit().await.map_err(unavailable)?;
    Ok(rows)
}

fn text_rows(rows: &[tokio_postgres::Row]) -> Vec<Value> {
    rows.iter().filter_map(|r| serde_json::from_str(r.get::<_, &str>(0)).ok()).collect()
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<i64>,
    offset: Option<i64>,
    all: Option<bool>,
}

/// `GET /api/conversations?limit=&offset=`.
pub async fn list(State(s): State<AppState>, Extension(who): Extension<Caller>, Query(q): Query<ListQuery>) -> Response {
    let limit = q.limit.unwrap_or(50);
    let offset = q.offset.unwrap_or(0);
    if !(1..=200).contains(&limit) || offset < 0 {
        return fail(StatusCode::BAD_REQUEST, "limit must be 1 to 200 and offset not negative");
    }
    let sql = "select json_build_object('id', id, 'title', title, 'connection', connection, \
               'created_at', to_char(created_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
               'updated_at', to_char(updated_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
               'preview', left(coalesce((select m->>'content' from jsonb_array_elements(messages) m where m->>'role' = 'user' limit 1), ''), 100))::text \
               from agent.conversations order by updated_at desc, id limit $1 offset $2";
    match as_caller(&s, &who, sql, &[&limit, &offset]).await {
        Ok(rows) => Json(json!({ "conversations": text_rows(&rows) })).into_response(),
        Err(r) => r,
    }
}

/// A conversation body: provider, model, connection, messages.
#[derive(Deserialize)]
struct Body {
    provider: Option<String>,
    model: Option<String>,
    connection: Option<String>,
    #[serde(default)]
    messages: Vec<Value>,
    title: Option<String>,
}

fn parse(body: &Bytes) -> Result<Body, Response> {
    let b: Body = serde_json::from_slice(body).map_err(|e| fail(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))?;
    if b.messages.len() > MAX_MESSAGES {
        return Err(fail(StatusCode::BAD_REQUEST, format!("a conversation holds at most {MAX_MESSAGES} messages")));
    }
    for m in &b.messages {
        let role_ok = m.get("role").and_then(Value::as_str).is_some_and(|r| matches!(r, "user" | "assistant" | "system" | "tool"));
        let content_ok = m.get("content").is_some_and(|c| c.is_string() || c.is_array());
        if !role_ok || !content_ok {
            return Err(fail(StatusCode::BAD_REQUEST, "each message needs a role (user, assistant, system, tool) and a content"));
        }
    }
    Ok(b)
}

/// The title: the first user message, cut at 100 characters.
fn title_of(messages: &[Value]) -> String {
    let first = messages.iter().find(|m| m["role"] == "user").and_then(|m| m["content"].as_str()).unwrap_or("New conversation");
    let t: String = first.trim().chars().take(100).collect();
    if t.is_empty() {
        "New conversation".into()
    } else {
        t
    }
}

fn username(who: &Caller) -> Option<String> {
    who.claims.get("email").and_then(Value::as_str).filter(|e| !e.is_empty()).or_else(|| who.user_id()).map(str::to_owned)
}

/// `POST /api/conversations`.
pub async fn create(State(s): State<AppState>, Extension(who): Extension<Caller>, body: Bytes) -> Response {
    let b = match parse(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let title = b.title.clone().unwrap_or_else(|| title_of(&b.messages));
    let messages = Value::Array(b.messages);
    let sql = format!("insert into agent.conversations (username, title, provider, model, connection, messages) values ($1, $2, $3, $4, $5, $6) returning {FULL}");
    match as_caller(&s, &who, &sql, &[&username(&who), &title, &b.provider, &b.model, &b.connection, &messages]).await {
        Ok(rows) => (StatusCode::CREATED, Json(text_rows(&rows).pop().unwrap_or(Value::Null))).into_response(),
        Err(r) => r,
    }
}

fn not_found() -> Response {
    fail(StatusCode::NOT_FOUND, "Conversation not found")
}

/// `GET /api/conversations/{id}`.
pub async fn get(State(s): State<AppState>, Extension(who): Extension<Caller>, Path(id): Path<String>) -> Response {
    let sql = format!("select {FULL} from agent.conversations where id = $1");
    match as_caller(&s, &who, &sql, &[&id]).await {
        Ok(rows) => text_rows(&rows).pop().map(|c| Json(c).into_response()).unwrap_or_else(not_found),
        Err(r) => r,
    }
}

/// `PUT /api/conversations/{id}`: replaces the messages (and provider, model, connection).
pub async fn replace(State(s): State<AppState>, Extension(who): Extension<Caller>, Path(id): Path<String>, body: Bytes) -> Response {
    let b = match parse(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let messages = Value::Array(b.messages);
    let sql = format!(
        "update agent.conversations set messages = $2, provider = coalesce($3, provider), model = coalesce($4, model), connection = coalesce($5, connection), \
         updated_at = now() where id = $1 returning {FULL}"
    );
    match as_caller(&s, &who, &sql, &[&id, &messages, &b.provider, &b.model, &b.connection]).await {
        Ok(rows) => text_rows(&rows).pop().map(|c| Json(c).into_response()).unwrap_or_else(not_found),
        Err(r) => r,
    }
}

/// `PATCH /api/conversations/{id}` `{title}`.
pub async fn rename(State(s): State<AppState>, Extension(who): Extension<Caller>, Path(id): Path<String>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(title) = v.get("title").and_then(Value::as_str).map(str::trim).filter(|t| !t.is_empty() && t.chars().count() <= 500) else {
        return fail(StatusCode::BAD_REQUEST, "title is required (1 to 500 characters)");
    };
    match as_caller(&s, &who, "update agent.conversations set title = $2, updated_at = now() where id = $1 returning id", &[&id, &title]).await {
        Ok(rows) if rows.is_empty() => not_found(),
        Ok(_) => Json(json!({ "success": true })).into_response(),
        Err(r) => r,
    }
}

/// `DELETE /api/conversations/{id}`.
pub async fn delete(State(s): State<AppState>, Extension(who): Extension<Caller>, Path(id): Path<String>) -> Response {
    match as_caller(&s, &who, "delete from agent.conversations where id = $1 returning id", &[&id]).await {
        Ok(rows) if rows.is_empty() => not_found(),
        Ok(_) => Json(json!({ "success": true })).into_response(),
        Err(r) => r,
    }
}

/// `DELETE /api/conversations?all=true`: every conversation the caller may delete.
pub async fn delete_all(State(s): State<AppState>, Extension(who): Extension<Caller>, Query(q): Query<ListQuery>) -> Response {
    if q.all != Some(true) {
        return fail(StatusCode::BAD_REQUEST, "DELETE /api/conversations needs ?all=true (or a conversation id)");
    }
    match as_caller(&s, &who, "delete from agent.conversations returning id", &[]).await {
        Ok(rows) => Json(json!({ "success": true, "deleted": rows.len() })).into_response(),
        Err(r) => r,
    }
}
