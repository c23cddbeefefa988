//! The workbench's one error type, rendered in the dialect of the API that was
//! called: the Rowsel envelope (`ERR_*` codes, hint, retryable, SQLSTATE and
//! detail), Poge's `{error, details, code}` (node-postgres' network codes and
//! SQLSTATEs) or the configurations' `{success: false, …}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::error::code::workbench as code;
use crate::error::Dialect;

/// An error of a workbench request.
#[derive(Debug, Clone)]
pub struct WbError {
    /// HTTP status.
    pub status: StatusCode,
    /// The Rowsel `ERR_*` code.
    pub code: &'static str,
    /// English message.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
    /// SQLSTATE, when the database raised it.
    pub sqlstate: Option<String>,
    /// The database's DETAIL, when it gave one.
    pub detail: Option<String>,
    /// node-postgres' network code (ECONNREFUSED, ENOTFOUND, ECONNRESET, ETIMEDOUT) for Poge.
    pub net: Option<&'static str>,
}

impl WbError {
    /// An error with a code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        WbError { status, code, message: message.into(), hint: None, sqlstate: None, detail: None, net: None }
    }

    /// A malformed request.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::INVALID_REQUEST, message)
    }

    /// With a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// With a node-postgres network code.
    pub fn net(mut self, net: &'static str) -> Self {
        self.net = Some(net);
        self
    }

    /// The body in `dialect`.
    pub fn body(&self, dialect: Dialect) -> Value {
        match dialect {
            Dialect::Poge => {
                let code = self.net.map(str::to_owned).or_else(|| self.sqlstate.clone()).unwrap_or_else(|| self.code.to_owned());
                let details = self.detail.clone().or_else(|| self.hint.clone()).unwrap_or_else(|| self.message.clone());
                json!({ "error": self.message, "details": details, "code": code })
            }
            Dialect::Success => {
                let mut b = json!({ "success": false, "error": self.message, "message": self.message, "code": self.code });
                if let Some(s) = &self.sqlstate {
                    b["sqlstate"] = json!(s);
                }
                b
            }
            _ => {
                let mut error = json!({ "code": self.code, "hint": self.hint, "retryable": code::retryable(self.status) });
                if let Some(s) = &self.sqlstate {
                    error["sqlstate"] = json!(s);
                }
                if let Some(d) = &self.detail {
                    error["detail"] = json!(d);
                }
                json!({ "status": "error", "message": self.message, "error": error })
            }
        }
    }

    /// The response in `dialect`.
    pub fn respond(&self, dialect: Dialect) -> Response {
        (self.status, axum::Json(self.body(dialect))).into_response()
    }

    /// From a database or connection error.
    pub fn from_pg(e: &tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            let state = db.code().code();
            let (status, c) = match state {
                "28P01" | "28000" => (StatusCode::BAD_REQUEST, code::AUTH_REJECTED),
                "3D000" => (StatusCode::BAD_REQUEST, code::DB_UNREACHABLE),
                "57014" if db.message().contains("user request") => (StatusCode::CONFLICT, code::CANCELLED),
                "57014" => (StatusCode::GATEWAY_TIMEOUT, code::QUERY_TIMEOUT),
                "25006" => (StatusCode::BAD_REQUEST, code::READ_ONLY_QUERY_REQUIRED),
                "42501" => (StatusCode::FORBIDDEN, code::PERMISSION_DENIED),
                s if s.starts_with("42") || s.starts_with("22") || s.starts_with("0A") || s.starts_with("34") => (StatusCode::BAD_REQUEST, code::SQL_INVALID),
                s if s.starts_with("23") || s.starts_with("40") || s.starts_with("55") => (StatusCode::CONFLICT, code::SQL_FAILED),
                s if s.starts_with("53") || s.starts_with("08") || s.starts_with("57") => (StatusCode::SERVICE_UNAVAILABLE, code::SQL_FAILED),
                _ => (StatusCode::BAD_REQUEST, code::SQL_FAILED),
            };
            let mut w = WbError::new(status, c, db.message());
            w.sqlstate = Some(state.to_owned());
            w.detail = db.detail().map(str::to_owned);
            w.hint = db.hint().map(str::to_owned);
            if c == code::READ_ONLY_QUERY_REQUIRED {
                w.hint = Some("Use SELECT or read-only WITH; writes go to /v1/execute with confirm: true.".into());
            }
            return w;
        }
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        for _ in 0..4 {
            let Some(s) = source else { break };
            text = format!("{text}: {s}");
            source = s.source();
        }
        let io = io_kind(e);
        let (net, message) = match io {
            Some(std::io::ErrorKind::ConnectionRefused) => ("ECONNREFUSED", "Connection refused".to_owned()),
            Some(std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::UnexpectedEof) => {
                ("ECONNRESET", "Connection reset".to_owned())
            }
            Some(std::io::ErrorKind::TimedOut) => ("ETIMEDOUT", "Connection timed out".to_owned()),
            _ if text.contains("timed out") || text.contains("timeout") => ("ETIMEDOUT", "Connection timed out".to_owned()),
            _ if text.to_ascii_lowercase().contains("tls") || text.contains("SSL") || text.contains("ssl") => ("ECONNRESET", format!("TLS negotiation failed: {text}")),
            _ if e.is_closed() => ("ECONNRESET", "The database closed the connection".to_owned()),
            _ => ("ECONNRESET", format!("Cannot talk to the database: {text}")),
        };
        WbError::new(StatusCode::BAD_GATEWAY, code::DB_UNREACHABLE, message)
            .net(net)
            .hint("Check that the server is running, the host and port are right, and the SSL mode matches the server.")
    }
}

fn io_kind(e: &tokio_postgres::Error) -> Option<std::io::ErrorKind> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    for _ in 0..8 {
        let s = source?;
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = s.source();
    }
    None
}

/// A result rendered as Rowsel's envelope.
pub struct Rowsel(pub WbError);
/// A result rendered as Poge's body.
pub struct Poge(pub WbError);
/// A result rendered as the configurations' body.
pub struct Configs(pub WbError);

impl From<WbError> for Rowsel {
    fn from(e: WbError) -> Self {
        Rowsel(e)
    }
}
impl From<WbError> for Poge {
    fn from(e: WbError) -> Self {
        Poge(e)
    }
}
impl From<WbError> for Configs {
    fn from(e: WbError) -> Self {
        Configs(e)
    }
}
impl IntoResponse for Rowsel {
    fn into_response(self) -> Response {
        self.0.respond(Dialect::Rowsel)
    }
}
impl IntoResponse for Poge {
    fn into_response(self) -> Response {
        self.0.respond(Dialect::Poge)
    }
}
impl IntoResponse for Configs {
    fn into_response(self) -> Response {
        self.0.respond(Dialect::Success)
    }
}
