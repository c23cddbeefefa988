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
            DbError::Postgres(d) => http_status(&d.code, anon),
            DbError::NoConnection(_) | DbError::Busy | DbError::Lost(_) => StatusCode::SERVICE_UNAVAILABLE,
            DbError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            DbError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The one SQLSTATE → HTTP table (PostgREST's, which the contract follows).
pub fn http_status(code: &str, anon: bool) -> StatusCode {
    match code {
        "23505" | "23503" => StatusCode::CONFLICT,
        "42501" if anon => StatusCode::UNAUTHORIZED,
        "42501" => StatusCode::FORBIDDEN,
        "42P01" | "42883" => StatusCode::NOT_FOUND,
        "P0001" => StatusCode::BAD_REQUEST,
        // A write inside a READ ONLY transaction: a GET that calls a writing function.
        "25006" => StatusCode::METHOD_NOT_ALLOWED,
        // A failed ASSERT or a subquery with several rows: the function is at fault,
        // not the request (PostgREST answers 500 too).
        "P0004" | "21000" => StatusCode::INTERNAL_SERVER_ERROR,
        c if c.starts_with("PT") => StatusCode::INTERNAL_SERVER_ERROR,
        "57014" => StatusCode::GATEWAY_TIMEOUT,
        c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57P") => StatusCode::SERVICE_UNAVAILABLE,
        c if c.starts_with("22") || c.starts_with("23") || c.starts_with("42") || c.starts_with("2F") => StatusCode::BAD_REQUEST,
        c if c.starts_with("25") || c.starts_with("40") => StatusCode::CONFLICT,
        _ => StatusCode::BAD_REQUEST,
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
        assert_eq!(http_status("40001", false), StatusCode::CONFLICT);
        assert_eq!(http_status("P0004", false), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
