//! Database failures, and the one SQLSTATE → HTTP table.
//!
//! Every product runs its statements through [`super::pool`], [`super::pipeline`] or
//! [`super::caller`] and gets a [`DbError`]; each renders it in its own dialect
//! (PostgREST's `{code, message, details, hint}`, storage's `statusCode`, ...) with the
//! status from [`http_status`], so a unique violation is a 409 and a permission error a
//! 401/403 in every product alike.

use axum::http::StatusCode;

use super::pipeline::{DbFields, WireError};

/// A statement that did not complete.
#[derive(Debug)]
pub enum DbError {
    /// Postgres answered with an ErrorResponse (the connection is fine).
    Postgres(DbFields),
    /// No connection could be had in time (pool exhausted, Postgres down or
    /// refusing): worth retrying.
    NoConnection(String),
    /// Every connection stayed taken for the pool's whole wait (POOL_WAIT): worth
    /// retrying.
    Busy,
    /// The connection failed while the statement ran.
    Lost(String),
    /// A result larger than the response limit (RESPONSE_MAX_BYTES).
    TooLarge(usize),
    /// The gateway's own mistake (a statement / parameter mismatch).
    Internal(anyhow::Error),
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::Postgres(d) => write!(f, "{}: {}", d.code, d.message),
            DbError::NoConnection(e) => write!(f, "no database connection: {e}"),
            DbError::Busy => write!(f, "no free database connection in time"),
            DbError::Lost(e) => write!(f, "database connection lost: {e}"),
            DbError::TooLarge(n) => write!(f, "a result is larger than {n} bytes"),
            DbError::Internal(e) => write!(f, "internal database error: {e}"),
        }
    }
}

impl std::error::Error for DbError {}

impl DbError {
    /// The SQLSTATE of a Postgres error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            DbError::Postgres(d) => Some(&d.code),
            _ => None,
        }
    }

    /// The message a client may read: Postgres's own for its errors, a fixed one for
    /// the rest (causes are logged, never returned).
    pub fn message(&self) -> String {
        match self {
            DbError::Postgres(d) => d.message.clone(),
            DbError::NoConnection(_) => "database unavailable, retry shortly".to_owned(),
            DbError::Busy => "the database is busy, retry shortly".to_owned(),
            DbError::Lost(_) => "database connection lost".to_owned(),
            DbError::TooLarge(n) => format!("the result would be larger than {n} bytes"),
            DbError::Internal(_) => "internal error".to_owned(),
        }
    }

    /// The HTTP status of this failure; `anon` decides 401 vs 403 for a permission
    /// error (no credentials vs the wrong ones).
    pub fn status(&self, anon: bool) -> StatusCode {
        match self {
            DbError::Postgres(d) => http_status_of(&d.code, &d.message, anon),
            DbError::NoConnection(_) | DbError::Busy | DbError::Lost(_) => StatusCode::SERVICE_UNAVAILABLE,
            DbError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            DbError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The one SQLSTATE → HTTP table (PostgREST's `mapSQLtoHTTP`, which the contract
/// follows; one departure: a statement timeout, 57014, is 504 rather than 500).
pub fn http_status(code: &str, anon: bool) -> StatusCode {
    http_status_of(code, "", anon)
}

/// [`http_status`] where the message decides too (PostgREST: pg-safeupdate's
/// "… requires a WHERE clause" is a client error, a role that does not exist 401).
pub fn http_status_of(code: &str, message: &str, anon: bool) -> StatusCode {
    let class = code.get(..2).unwrap_or("");
    match code {
        "57014" => StatusCode::GATEWAY_TIMEOUT,
        "23503" | "23505" => StatusCode::CONFLICT,
        "25006" => StatusCode::METHOD_NOT_ALLOWED,
        "21000" if message.ends_with("requires a WHERE clause") => StatusCode::BAD_REQUEST,
        // An upsert body naming one key twice: the request's fault (PostgREST: 500).
        "21000" if message.contains("cannot affect row a second time") => StatusCode::BAD_REQUEST,
        "21000" => StatusCode::INTERNAL_SERVER_ERROR,
        // Too many select items / arguments: limits the request's own shape reached
        // (PostgREST: 500). (54001, the stack limit, is also a runaway recursive
        // function's: left a server error; bodies are bounded in depth before.)
        "54011" | "54023" => StatusCode::BAD_REQUEST,
        "22023" if message.starts_with("role") && message.ends_with("does not exist") => StatusCode::UNAUTHORIZED,
        "53400" | "42P17" => StatusCode::INTERNAL_SERVER_ERROR,
        "57P01" => StatusCode::SERVICE_UNAVAILABLE,
        "P0001" => StatusCode::BAD_REQUEST,
        "42883" if message.starts_with("function xmlagg(") => StatusCode::NOT_ACCEPTABLE,
        "42883" | "42P01" => StatusCode::NOT_FOUND,
        "42501" if anon => StatusCode::UNAUTHORIZED,
        "42501" => StatusCode::FORBIDDEN,
        c if c.starts_with("PT") => c[2..].parse::<u16>().ok().and_then(|n| StatusCode::from_u16(n).ok()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        _ => match class {
            "08" | "53" => StatusCode::SERVICE_UNAVAILABLE,
            "0L" | "0P" | "28" => StatusCode::FORBIDDEN,
            "09" | "25" | "2D" | "38" | "39" | "3B" | "40" | "54" | "55" | "57" | "58" | "F0" | "HV" | "P0" | "XX" => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        },
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            return DbError::Postgres(DbFields {
                code: db.code().code().to_owned(),
                message: db.message().to_owned(),
                detail: db.detail().map(str::to_owned),
                hint: db.hint().map(str::to_owned),
            });
        }
        if !e.is_closed() && e.to_string().contains("parameter") {
            // A statement / parameter mismatch is our bug, not an outage.
            return DbError::Internal(e.into());
        }
        tracing::warn!(error = %e, "database connection failed during a request");
        DbError::Lost(e.to_string())
    }
}

impl From<WireError> for DbError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Db(f) => DbError::Postgres(f),
            WireError::TooLarge(max) => DbError::TooLarge(max),
            WireError::Io(e) => {
                tracing::warn!(error = %e, "database connection failed during a request");
                DbError::Lost(e.to_string())
            }
        }
    }
}

impl<E: std::fmt::Display> From<deadpool::managed::PoolError<E>> for DbError {
    fn from(e: deadpool::managed::PoolError<E>) -> Self {
        if let deadpool::managed::PoolError::Timeout(deadpool::managed::TimeoutType::Wait) = e {
            return DbError::Busy;
        }
        tracing::warn!(error = %e, "no database connection");
        DbError::NoConnection(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        assert_eq!(http_status("23505", false), StatusCode::CONFLICT);
        assert_eq!(http_status("42501", true), StatusCode::UNAUTHORIZED);
        assert_eq!(http_status("42501", false), StatusCode::FORBIDDEN);
        assert_eq!(http_status("57014", false), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(http_status("53300", false), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(http_status("22P02", false), StatusCode::BAD_REQUEST);
        assert_eq!(http_status("40001", false), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(http_status("42P17", false), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(http_status("PT418", false).as_u16(), 418);
        assert_eq!(http_status_of("21000", "UPDATE requires a WHERE clause", false), StatusCode::BAD_REQUEST);
        assert_eq!(http_status_of("21000", "ON CONFLICT DO UPDATE command cannot affect row a second time", false), StatusCode::BAD_REQUEST);
        assert_eq!(http_status_of("54011", "target lists can have at most 1664 entries", false), StatusCode::BAD_REQUEST);
        assert_eq!(http_status_of("54000", "index row size exceeds maximum", false), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(http_status_of("22023", "role \"x\" does not exist", false), StatusCode::UNAUTHORIZED);
        assert_eq!(http_status("P0004", false), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
