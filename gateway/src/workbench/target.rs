//! A database server named by a request: Rowsel's connection object, Poge's flat
//! credentials or a saved configuration, normalised into one [`Target`] with a
//! [`Key`] per distinct server and credentials (a pool never serves a request whose
//! password it was not opened with).

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::error::WbError;

/// How TLS is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ssl {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, plain otherwise.
    Prefer,
    /// TLS or nothing; the certificate is not checked (self-signed allowed, as libpq's `require`).
    Require,
    /// TLS with the certificate checked against the system's roots and the host name.
    VerifyFull,
}

impl Ssl {
    /// Parses the seeds' spellings (and libpq's).
    pub fn parse(s: Option<&str>) -> Result<Ssl, WbError> {
        match s.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("disable") | Some("false") => Ok(Ssl::Disable),
            Some("prefer") | Some("allow") => Ok(Ssl::Prefer),
            Some("require") | Some("true") => Ok(Ssl::Require),
            Some("verify-full") | Some("verify_full") | Some("verify-ca") => Ok(Ssl::VerifyFull),
            Some(other) => Err(WbError::invalid(format!("ssl_mode {other:?} is not one of disable, prefer, require"))),
        }
    }

    /// The name in answers.
    pub fn name(self) -> &'static str {
        match self {
            Ssl::Disable => "disable",
            Ssl::Prefer => "prefer",
            Ssl::Require => "require",
            Ssl::VerifyFull => "verify-full",
        }
    }
}

/// A database server and the credentials to use on it.
#[derive(Clone)]
pub struct Target {
    /// Host name or IP literal.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database.
    pub database: String,
    /// User.
    pub user: String,
    /// Password (never logged or returned).
    pub password: String,
    /// TLS mode.
    pub ssl: Ssl,
    /// An SSH tunnel to reach it through (Rowsel's `tunnel`), as given.
    pub tunnel: Option<Value>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.label())
    }
}

/// Identifies a pool: server, database, user, password, TLS mode and tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub [u8; 32]);

/// Rowsel's connection object.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowselConnection {
    engine: Option<String>,
    host: String,
    port: Option<u16>,
    database: String,
    username: String,
    #[serde(default)]
    password: String,
    ssl_mode: Option<String>,
    tunnel: Option<Value>,
}

/// Poge's credentials, flat in the request body.
#[derive(Deserialize)]
pub struct PogeConnection {
    host: String,
    port: Option<u16>,
    user: String,
    #[serde(default)]
    password: String,
    database: String,
    #[serde(rename = "sslMode")]
    ssl_mode: Option<String>,
}

/// Seed 001's `connection_config` (and `/api/db/test-postgres` body).
#[derive(Deserialize, Clone)]
pub struct ConfigConnection {
    /// Host.
    pub host: String,
    /// Port.
    pub port: Option<u16>,
    /// Database.
    pub database: String,
    /// User.
    pub username: String,
    /// Password.
    #[serde(default)]
    pub password: String,
    /// TLS: true = require.
    #[serde(default)]
    pub ssl: Value,
}

fn bounded(what: &str, v: &str, max: usize) -> Result<(), WbError> {
    if v.is_empty() || v.len() > max || v.contains('\0') {
        return Err(WbError::invalid(format!("{what} must be 1 to {max} characters")));
    }
    Ok(())
}

impl Target {
    fn checked(self) -> Result<Target, WbError> {
        bounded("host", &self.host, 253)?;
        bounded("database", &self.database, 63)?;
        bounded("username", &self.user, 63)?;
        if self.password.len() > 1024 || self.password.contains('\0') {
            return Err(WbError::invalid("password must be at most 1024 characters"));
        }
        if self.port == 0 {
            return Err(WbError::invalid("port must be 1 to 65535"));
        }
        if self.host.starts_with('/') {
            return Err(WbError::invalid("host must be a host name or address, not a socket path"));
        }
        Ok(self)
    }

    /// From Rowsel's connection object.
    pub fn from_rowsel(c: RowselConnection) -> Result<Target, WbError> {
        if let Some(e) = c.engine.as_deref() {
            if !e.eq_ignore_ascii_case("postgres") && !e.eq_ignore_ascii_case("postgresql") {
                return Err(WbError::invalid(format!("engine {e:?} is not supported; use \"postgres\"")));
            }
        }
        Target {
            host: c.host,
            port: c.port.unwrap_or(5432),
            database: c.database,
            user: c.username,
            password: c.password,
            ssl: Ssl::parse(c.ssl_mode.as_deref())?,
            tunnel: c.tunnel,
        }
        .checked()
    }

    /// From Poge's credentials.
    pub fn from_poge(c: PogeConnection) -> Result<Target, WbError> {
        Target { host: c.host, port: c.port.unwrap_or(5432), database: c.database, user: c.user, password: c.password, ssl: Ssl::parse(c.ssl_mode.as_deref())?, tunnel: None }
            .checked()
    }

    /// From seed 001's connection object.
    pub fn from_config(c: ConfigConnection) -> Result<Target, WbError> {
        let ssl = match &c.ssl {
            Value::Bool(true) => Ssl::Require,
            Value::String(s) => Ssl::parse(Some(s))?,
            _ => Ssl::Disable,
        };
        Target { host: c.host, port: c.port.unwrap_or(5432), database: c.database, user: c.username, password: c.password, ssl, tunnel: None }.checked()
    }

    /// `user@host:port/database`, for statistics and logs.
    pub fn label(&self) -> String {
        format!("{}@{}:{}/{}", self.user, self.host, self.port, self.database)
    }

    /// The pool key.
    pub fn key(&self) -> Key {
        let mut h = Sha256::new();
        for part in [self.host.as_str(), &self.port.to_string(), &self.database, &self.user, &self.password, self.ssl.name()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.update(self.tunnel.as_ref().map(Value::to_string).unwrap_or_default().as_bytes());
        Key(h.finalize().into())
    }

    /// The client configuration, connecting to `addr` (already checked by the
    /// address policy; the name stays for TLS).
    pub fn pg_config(&self, addr: SocketAddr, connect_timeout: Duration) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .hostaddr(addr.ip())
            .port(addr.port())
            .dbname(&self.database)
            .user(&self.user)
            .password(&self.password)
            .application_name("pgstack-workbench")
            .connect_timeout(connect_timeout)
            .keepalives(true)
            .ssl_mode(match self.ssl {
                Ssl::Disable => tokio_postgres::config::SslMode::Disable,
                Ssl::Prefer => tokio_postgres::config::SslMode::Prefer,
                Ssl::Require | Ssl::VerifyFull => tokio_postgres::config::SslMode::Require,
            });
        c
    }

    /// The TLS connector for this target's mode.
    pub fn tls(&self) -> Result<postgres_native_tls::MakeTlsConnector, WbError> {
        let mut b = native_tls::TlsConnector::builder();
        if self.ssl != Ssl::VerifyFull {
            b.danger_accept_invalid_certs(true).danger_accept_invalid_hostnames(true);
        }
        let c = b.build().map_err(|e| WbError::new(StatusCode::INTERNAL_SERVER_ERROR, "ERR_INTERNAL", format!("TLS is not available: {e}")))?;
        Ok(postgres_native_tls::MakeTlsConnector::new(c))
    }

    /// The SSH tunnel, when one is given.
    pub fn tunnel_spec(&self) -> Result<Option<super::tunnel::TunnelSpec>, WbError> {
        match &self.tunnel {
            None | Some(Value::Null) => Ok(None),
            Some(v) => super::tunnel::TunnelSpec::parse(v).map(Some),
        }
    }

    /// The client configuration behind a tunnel (the stream is the tunnel's channel;
    /// the host name stays for TLS).
    pub fn pg_config_tunnelled(&self, connect_timeout: Duration) -> tokio_postgres::Config {
        let mut c = self.pg_config(SocketAddr::from(([127, 0, 0, 1], self.port)), connect_timeout);
        c.port(self.port);
        c
    }
}
