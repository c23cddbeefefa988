//! Errors in PostgREST's dialect (/rest/v1 and its neighbours): PostgREST's body `{code, message, details, hint}` plus the contract's
//! `error`; statuses from the one SQLSTATE → HTTP table in [`crate::db::error`].

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::code::{pgrst, Pgrst};
use super::Dialect;
use crate::db::error::DbError;

/// REST_ERROR_FORMAT=postgrest: bodies without the contract's `error` key (set once
/// at start-up by `rest::init_settings`).
pub static POSTGREST_BODIES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A failure rendered in PostgREST's dialect (REST, webhooks, the dev tools).
#[derive(Debug)]
pub struct RestError {
    /// HTTP status.
    pub status: StatusCode,
    /// PGRSTnnn or SQLSTATE.
    pub code: String,
    /// Message.
    pub message: String,
    /// Details (string or structured).
    pub details: Value,
    /// Hint.
    pub hint: Value,
    /// Cause, logged only.
    pub cause: Option<anyhow::Error>,
    /// Extra response headers (`RAISE SQLSTATE 'PGRST'` may set them).
    pub headers: Vec<(String, String)>,
    /// A reason phrase other than the status's own (`status_text` of a raised error).
    pub reason: Option<String>,
}

impl RestError {
    /// An error with a catalogue code, its status, message, details and hint.
    pub fn new(code: Pgrst, message: impl Into<String>, details: Option<String>, hint: Option<&str>) -> Self {
        RestError {
            status: code.status,
            code: code.code.to_owned(),
            message: message.into(),
            details: details.map(Value::String).unwrap_or(Value::Null),
            hint: hint.map(|h| Value::String(h.to_owned())).unwrap_or(Value::Null),
            cause: None,
            headers: Vec::new(),
            reason: None,
        }
    }
    /// An error with a catalogue code and a message.
    pub fn of(code: Pgrst, message: impl Into<String>) -> Self {
        Self::new(code, message, None, None)
    }
    /// The same error with another status (where pgstack answers a code with a status
    /// other than PostgREST's default for it).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
    /// A database error's SQLSTATE with a status.
    fn sqlstate(status: StatusCode, sqlstate: &str, message: impl Into<String>) -> Self {
        RestError { status, code: sqlstate.to_owned(), ..Self::of(pgrst::INTERNAL, message) }
    }
    /// PGRST100: the query string cannot be parsed.
    pub fn parse(details: impl Into<String>, hint: impl Into<String>) -> Self {
        let hint = hint.into();
        RestError { hint: Value::String(hint), ..Self::new(pgrst::QUERY_PARSE, "Could not parse the request", Some(details.into()), None) }
    }
    /// PGRST205: unknown table or view.
    pub fn no_relation(schema: &str, name: &str) -> Self {
        Self::of(pgrst::NO_RELATION, format!("Could not find the table '{schema}.{name}' in the schema cache"))
    }
    /// 42703: unknown column.
    pub fn no_column(table: &str, column: &str) -> Self {
        Self::of(pgrst::UNDEFINED_COLUMN, format!("column {table}.{column} does not exist"))
    }
    /// 500, cause logged.
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        RestError { cause: Some(e.into()), ..Self::new(pgrst::INTERNAL, "internal error", None, None) }
    }

    /// Maps a database error. `anon` decides 401 vs 403 for permission errors.
    pub fn from_db(e: impl Into<DbError>, anon: bool) -> Self {
        match e.into() {
            DbError::Postgres(f) => Self::from_fields(&f.code, &f.message, f.detail.as_deref(), f.hint.as_deref(), anon),
            DbError::TooLarge(max) => Self::new(
                pgrst::RESPONSE_TOO_LARGE,
                format!("The response would be larger than {max} bytes (RESPONSE_MAX_BYTES)"),
                None,
                Some("Ask for fewer rows (limit, Range) or fewer columns (select)"),
            ),
            DbError::Lost(_) => Self::new(pgrst::DB_CONNECTION, "Database connection lost", None, None),
            // PostgREST's PGRST003 (there a 504); the contract answers 503 when the
            // database cannot serve, with Retry-After.
            DbError::Busy => {
                let mut e = Self::new(pgrst::POOL_TIMEOUT, "Timed out acquiring connection from connection pool.", None, None);
                e.headers.push(("Retry-After".into(), "1".into()));
                e
            }
            DbError::NoConnection(_) => {
                let mut e = Self::new(pgrst::DB_CONNECTION, "Database client error. Retrying the connection.", None, None);
                e.headers.push(("Retry-After".into(), "1".into()));
                e
            }
            DbError::Internal(e) => Self::internal(e),
        }
    }

    /// Maps an ErrorResponse's SQLSTATE, message, detail and hint.
    fn from_fields(code: &str, message: &str, detail: Option<&str>, hint: Option<&str>, anon: bool) -> Self {
        if code == "PGRST" {
            return Self::raised(message, detail);
        }
        // RAISE SQLSTATE 'PTnnn': the function picks the HTTP status.
        if let Some(st) = code.strip_prefix("PT").and_then(|n| n.parse::<u16>().ok()).and_then(|n| StatusCode::from_u16(n).ok()) {
            return RestError {
                details: detail.map(|d| Value::String(d.to_owned())).unwrap_or(Value::Null),
                hint: hint.map(|h| Value::String(h.to_owned())).unwrap_or(Value::Null),
                ..Self::sqlstate(st, code, message)
            };
        }
        let status = crate::db::error::http_status_of(code, message, anon);
        let message = if code == "57014" { "canceling statement due to statement timeout".to_owned() } else { message.to_owned() };
        RestError {
            status,
            code: code.to_owned(),
            message,
            details: detail.map(|d| Value::String(d.to_owned())).unwrap_or(Value::Null),
            hint: hint.map(|h| Value::String(h.to_owned())).unwrap_or(Value::Null),
            cause: None,
            headers: Vec::new(),
            reason: None,
        }
    }

    /// `RAISE SQLSTATE 'PGRST' USING MESSAGE = '{code, message, details, hint}',
    /// DETAIL = '{status, headers}'`: the function writes the whole error response.
    fn raised(message: &str, detail: Option<&str>) -> Self {
        let bad = |what: &str, value: &str, hint: &str| {
            Self::new(pgrst::RAISE_JSON, "Could not parse JSON in the \"RAISE SQLSTATE 'PGRST'\" error", Some(format!("Invalid JSON value for {what}: '{value}'")), Some(hint))
        };
        let Ok(Value::Object(m)) = serde_json::from_str::<Value>(message) else {
            return bad("MESSAGE", message, "MESSAGE must be a JSON object with obligatory keys: 'code', 'message' and optional keys: 'details', 'hint'.");
        };
        const DETAIL_HINT: &str = "DETAIL must be a JSON object with obligatory keys: 'status', 'headers' and optional key: 'status_text'.";
        let Some(detail) = detail else {
            return Self::new(
                pgrst::RAISE_JSON,
                "Could not parse JSON in the \"RAISE SQLSTATE 'PGRST'\" error",
                Some("DETAIL is missing in the RAISE statement".into()),
                Some(DETAIL_HINT),
            );
        };
        let Ok(Value::Object(d)) = serde_json::from_str::<Value>(detail) else {
            return bad("DETAIL", detail, DETAIL_HINT);
        };
        let status = d.get("status").and_then(Value::as_u64).and_then(|s| StatusCode::from_u16(s as u16).ok()).unwrap_or(StatusCode::BAD_REQUEST);
        let text = |k: &str| m.get(k).cloned().unwrap_or(Value::Null);
        RestError {
            status,
            code: m.get("code").and_then(Value::as_str).unwrap_or("PGRST").to_owned(),
            message: m.get("message").and_then(Value::as_str).unwrap_or_default().to_owned(),
            details: text("details"),
            hint: text("hint"),
            cause: None,
            headers: d.get("headers").and_then(Value::as_object).map(|h| h.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect()).unwrap_or_default(),
            reason: d.get("status_text").and_then(Value::as_str).map(str::to_owned),
        }
    }
}

impl From<deadpool_postgres::PoolError> for RestError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::from_db(e, false)
    }
}

impl From<deadpool::managed::PoolError<std::io::Error>> for RestError {
    fn from(e: deadpool::managed::PoolError<std::io::Error>) -> Self {
        Self::from_db(e, false)
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        if let Some(c) = &self.cause {
            tracing::error!(error = ?c, "REST internal error");
        }
        let body = Dialect::PostgRest.body(self.status, &self.code, &self.message, self.details, self.hint);
        let mut res = (self.status, Json(body)).into_response();
        if let Some(phrase) = self.reason.and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok()) {
            res.extensions_mut().insert(phrase);
        }
        let h = res.headers_mut();
        h.insert("content-type", HeaderValue::from_static("application/json; charset=utf-8"));
        if let Ok(v) = HeaderValue::from_str(&format!("PostgREST; error={}", self.code)) {
            h.insert("proxy-status", v);
        }
        for (k, v) in &self.headers {
            if let (Ok(k), Ok(v)) = (axum::http::HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
                h.insert(k, v);
            }
        }
        if self.status == StatusCode::UNAUTHORIZED {
            let www = match self.code.as_str() {
                c if c == pgrst::JWT_INVALID.code || c == pgrst::JWT_CLAIMS.code => {
                    format!("Bearer error=\"invalid_token\", error_description=\"{}\"", self.message.replace(['"', '\\'], ""))
                }
                _ => "Bearer".to_owned(),
            };
            h.insert("www-authenticate", HeaderValue::from_str(&www).unwrap_or(HeaderValue::from_static("Bearer")));
        }
        res
    }
}
