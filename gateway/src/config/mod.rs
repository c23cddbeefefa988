//! Typed configuration, loaded once at startup.
//!
//! Sources, first wins: environment variables, then an optional config file in
//! `.env` format (`KEY=value` lines, `pgstack serve --config FILE`). Names are the
//! contract's (JWT_SECRET, ANON_KEY, ...). Secrets never appear in `Debug` output.

use std::fmt;
use std::net::SocketAddr;

pub mod llm;
mod load;
pub mod oauth;
pub mod workbench;

/// The machine's cores as the process may use them (2 when unknown), read once: the
/// sizes that follow the machine (pools, runtime threads, parallel checks) start here.
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map(usize::from).unwrap_or(2))
}

pub use load::{check_secret_strength, redact_url, Source};

use crate::keys;
use pgstack_shared::Role;

/// Smallest JWT secret accepted, in bytes (HS256 wants at least its 256-bit output).
pub const MIN_SECRET_LEN: usize = 32;

/// Secrets that are published in docs and templates: never accepted.
const PUBLISHED_SECRETS: &[&str] =
    &["super-secret-jwt-token-with-at-least-32-characters-long", "your-super-secret-jwt-token-with-at-least-32-characters-long", "your-secret-key-change-in-production-please-32"];

pub use crate::keys::Secret;

/// `N` requests per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests.
    pub n: u32,
    /// Period in seconds.
    pub per_secs: u64,
}

impl std::str::FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (n, unit) = s.trim().split_once('/').unwrap_or((s.trim(), "m"));
        let n: u32 = n.trim().parse().map_err(|_| format!("{s:?} is not N/s, N/m or N/h"))?;
        let per_secs = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            other => return Err(format!("unknown period {other:?} (use s, m or h)")),
        };
        if n == 0 {
            return Err("the limit must be at least 1".into());
        }
        Ok(Rate { n, per_secs })
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Everything the gateway needs to run.
#[derive(Clone)]
pub struct Config {
    /// DATABASE_URL: the gateway's login role (normally `authenticator`).
    pub database_url: String,
    /// The login role named in DATABASE_URL (never usable as a request role).
    pub login_role: Option<String>,
    /// LISTEN_ADDR (or HOST + PORT): where HTTP is served. Default 127.0.0.1:8080.
    pub listen: SocketAddr,
    /// JWT_SECRET: HS256 key for every token. Required, at least 32 bytes.
    pub jwt_secret: Secret,
    /// JWT_EXPIRY: access-token lifetime in seconds. Default 3600.
    pub jwt_expiry_secs: u64,
    /// ANON_KEY: optional; when set it must be a JWT with role anon signed with JWT_SECRET.
    pub anon_key: Option<Secret>,
    /// SERVICE_ROLE_KEY: optional; when set, a JWT with role service_role.
    pub service_role_key: Option<Secret>,
    /// SITE_URL: where auth emails and OAuth land. Default http://localhost:3000.
    pub site_url: String,
    /// ALLOWED_ORIGINS: comma-separated browser origins. Empty = strict default.
    pub allowed_origins: Vec<String>,
    /// ALLOW_PERMISSIVE_CORS: accept any origin (development only). Default false.
    pub allow_permissive_cors: bool,
    /// DB_POOL_SIZE: connections in the pool. Default: 2 × CPU cores, at least 10.
    pub db_pool_size: usize,
    /// HTTP_MAX_CONNECTIONS: open HTTP connections at once; over it a new connection
    /// gets 503 and is closed. None = half the descriptor limit, at most 4096.
    pub http_max_connections: Option<usize>,
    /// HTTP_MAX_CONNECTIONS_PER_IP: open HTTP connections from one client IP. Default 1000.
    pub http_max_connections_per_ip: usize,
    /// HTTP_HEADER_READ_TIMEOUT: seconds a client has to send a request's headers
    /// (and to start the next request on a kept-alive connection). Default 10.
    pub http_header_read_timeout_secs: u64,
    /// REQUEST_TIMEOUT: seconds a REST, auth or functions request may take before 504
    /// (its statement is cancelled). Default 60.
    pub request_timeout_secs: u64,
    /// DB_MAX_ROWS: most rows one REST read returns (PostgREST's db-max-rows);
    /// `0`/`none` = no cap. Default 1000 (as Supabase).
    pub db_max_rows: Option<i64>,
    /// RESPONSE_MAX_BYTES: largest result one REST statement may return; larger
    /// ones are refused (413) before they are buffered. Default 64 MiB.
    pub response_max_bytes: usize,
    /// DB_PLAN_ENABLED (PostgREST's db-plan-enabled): `Accept:
    /// application/vnd.pgrst.plan` answers the statement's EXPLAIN. Default false.
    pub db_plan_enabled: bool,
    /// JWT_REQUIRE_EXP: refuse tokens without an `exp` claim (every token pgstack
    /// issues has one). Default true; PostgREST accepts them (`false`).
    pub jwt_require_exp: bool,
    /// JWT_AUD (PostgREST's jwt-aud): tokens with an `aud` claim must name it.
    pub jwt_aud: Option<String>,
    /// LOG_FORMAT: `text` (default) or `json`.
    pub log_format: LogFormat,
    /// ALLOW_ANONYMOUS_SIGNIN: anonymous accounts (/auth/v1/anonymous, signup without
    /// email). Default false.
    pub allow_anonymous_signin: bool,
    /// REFRESH_TOKEN_REUSE_INTERVAL: seconds during which a used refresh token may be
    /// presented again (concurrent tabs). Default 10.
    pub refresh_reuse_interval_secs: i64,
    /// DB_SCHEMAS: schemas exposed over /rest/v1, comma-separated; the first is the
    /// default (PostgREST's db-schemas). Default `public`.
    pub db_schemas: Vec<String>,
    /// SMTP_HOST / SMTP_PORT / SMTP_USER / SMTP_PASS / SMTP_SENDER / SMTP_TLS: outgoing
    /// e-mail. None = no SMTP (e-mail flows are logged by `pgstack dev`, refused otherwise).
    pub smtp: Option<SmtpConfig>,
    /// REQUIRE_EMAIL_VERIFICATION: sign-up sends a confirmation e-mail and issues no
    /// session until it is followed. Default false.
    pub require_email_verification: bool,
    /// API_EXTERNAL_URL: the gateway's public URL, for links in e-mails. Default
    /// `http://` + LISTEN_ADDR.
    pub api_external_url: String,
    /// ADDITIONAL_REDIRECT_URLS: comma-separated URLs (a trailing `*` matches any
    /// suffix) allowed as `redirect_to` besides SITE_URL.
    pub additional_redirect_urls: Vec<String>,
    /// MAILER_OTP_EXP: lifetime of e-mailed links and codes, seconds. Default 3600.
    pub mailer_otp_exp_secs: i64,
    /// EMAIL_MIN_INTERVAL: minimum seconds between two e-mails of one kind to one
    /// account. Default 60.
    pub email_min_interval_secs: i64,
    /// MAILER_TEMPLATES_DIR: folder with confirmation / recovery / magic_link /
    /// email_change `.html` templates overriding the built-in ones.
    pub mailer_templates_dir: Option<String>,
    /// Log e-mails (links included) instead of sending them: set by `pgstack dev` when
    /// no SMTP is configured. Never on in `serve`.
    pub mailer_log_only: bool,
    /// AUTH_RATE_LIMIT: requests per client IP to the rate-limited auth routes
    /// (signup, token, recover, magic link / otp, verify), as `N/s`, `N/m` or `N/h`
    /// (a bare N means per minute). Default `60/m`.
    pub auth_rate_limit: Rate,
    /// ANONYMOUS_RATE_LIMIT: the same for anonymous sign-ins (its own bucket).
    /// Default `30/h`.
    pub anonymous_rate_limit: Rate,
    /// PASSWORD_HASH_CONCURRENCY: password hashes / verifications (argon2id, 19 MiB
    /// each) running at once in this gateway. Default: the number of cores.
    pub password_hash_concurrency: usize,
    /// PASSWORD_HASH_QUEUE_TIMEOUT: seconds a request waits for a hashing slot before
    /// 429 `over_request_rate_limit` with Retry-After. Default 5.
    pub password_hash_queue_timeout_secs: u64,
    /// OTP_MAX_ATTEMPTS: wrong e-mailed codes tried against one account (per kind)
    /// before its outstanding codes and links of that kind are spent. Default 5.
    pub otp_max_attempts: i32,
    /// REQUIRE_AUTHENTICATED_WS: refuse the anon key on WebSockets. Default false.
    pub require_authenticated_ws: bool,
    /// WS_MAX_CONNECTIONS: WebSockets per gateway (then 503). Default 10000.
    pub ws_max_connections: usize,
    /// WS_MAX_CONNECTIONS_PER_IP: WebSockets per client IP (then 429). Default 100.
    pub ws_max_connections_per_ip: usize,
    /// WS_CLIENT_QUEUE: frames queued per client before it gets an overflow. Default 256.
    pub ws_client_queue: usize,
    /// WS_PRESENCE_MAX_BYTES: largest presence state of one connection (its JSON
    /// text); larger ones get an error frame. Default 4096.
    pub ws_presence_max_bytes: usize,
    /// WS_PRESENCE_MAX_TOTAL_BYTES: presence state one gateway holds, every channel
    /// together; past it new states get an error frame. Default 64 MiB.
    pub ws_presence_max_total_bytes: usize,
    /// WS_CLIENT_QUEUE_BYTES: bytes a client may fall behind on its channel (besides
    /// WS_CLIENT_QUEUE frames); past it the oldest unread frames are dropped and the
    /// client gets an overflow (live queries) or is closed with 1008 (`_channel_*`).
    /// Default 1 MiB.
    pub ws_client_queue_bytes: usize,
    /// WS_QUEUE_MAX_TOTAL_BYTES: bytes queued for lagging clients, every channel of
    /// this gateway together; past it backlogs are cut to their newest frame.
    /// Default 256 MiB.
    pub ws_queue_max_total_bytes: usize,
    /// WS_MAX_MESSAGE_BYTES: largest client frame (broadcast, presence) relayed;
    /// larger ones get an error frame. Default 64 KiB.
    pub ws_max_message_bytes: usize,
    /// WS_BROADCAST_RATE: broadcast and presence frames one socket may send (token
    /// bucket, `N/s`, `N/m` or `N/h`); past it they get an error frame and are
    /// dropped. Default 100/s.
    pub ws_broadcast_rate: Rate,
    /// REALTIME_MAX_CHANNELS: channels one Supabase Realtime socket may join.
    /// Default 100 (as Supabase).
    pub realtime_max_channels: usize,
    /// REALTIME_MAX_JOINS_PER_SECOND: joins one socket may send per second; past it
    /// the socket is closed. Default 100.
    pub realtime_max_joins_per_second: u32,
    /// REALTIME_MAX_EVENTS_PER_SECOND: broadcast and presence messages one socket
    /// may send per second; past it the channel is closed with a system error.
    /// Default 100.
    pub realtime_max_events_per_second: u32,
    /// REALTIME_MAX_PAYLOAD_BYTES: largest broadcast payload. Default 256 KiB.
    pub realtime_max_payload_bytes: usize,
    /// REALTIME_CLIENT_QUEUE: frames queued for one Realtime socket; a socket that
    /// falls further behind is closed (the client reconnects). Default 4096.
    pub realtime_client_queue: usize,
    /// REALTIME_MESSAGES_RETENTION: seconds rows of realtime.messages (realtime.send)
    /// are kept; pruned at start and every 10 minutes. Default 3 days; 0 = forever.
    pub realtime_messages_retention_secs: u64,
    /// WS_WRITE_TIMEOUT: seconds a write to a client may stall (a peer that stops
    /// reading) before the socket is dropped. Default 30.
    pub ws_write_timeout_secs: u64,
    /// WEBHOOK_TIMEOUT: seconds per delivery attempt. Default 10.
    pub webhook_timeout_secs: u64,
    /// WEBHOOK_ALLOW_PRIVATE: let webhooks reach loopback / private / link-local
    /// addresses. Default false.
    pub webhook_allow_private: bool,
    /// WEBHOOK_ALLOWED_HOSTS: comma-separated `host` or `host:port` exempt from the
    /// internal-address check.
    pub webhook_allowed_hosts: Vec<String>,
    /// WEBHOOK_RETENTION: seconds delivered outbox events are kept (0 = forever).
    /// Default 604800 (7 days).
    pub webhook_retention_secs: u64,
    /// WEBHOOK_DEAD_RETENTION: seconds dead events are kept after their last attempt
    /// (0 = forever). Default 2592000 (30 days).
    pub webhook_dead_retention_secs: u64,
    /// WEBHOOK_RETENTION_MAX_ROWS: delivered events kept at most, all webhooks
    /// together, newest first (0 = no count limit). Default 100000.
    pub webhook_retention_max_rows: i64,
    /// STORAGE_BACKEND: `database` (default) or `disk`.
    pub storage_backend: String,
    /// STORAGE_ROOT: folder of the disk backend. Default `./storage`.
    pub storage_root: String,
    /// STORAGE_TMP_MAX_AGE: seconds after which a temp file of an unfinished upload is
    /// removed (swept at start and hourly). Default 86400.
    pub storage_tmp_max_age_secs: u64,
    /// STORAGE_ALLOW_INLINE_HTML: serve HTML / SVG / XML objects inline instead of as
    /// attachments (they stay under a `sandbox` Content-Security-Policy). Default false.
    pub storage_allow_inline_html: bool,
    /// BODY_IDLE_TIMEOUT: seconds a request body may go without a byte arriving
    /// before the request is answered 408 (`0` = no limit). Default 10.
    pub body_idle_timeout_secs: u64,
    /// BODY_MIN_RATE: bytes per second a request body must average once
    /// BODY_MIN_RATE_GRACE has passed (`0` = no minimum). Default 1024.
    pub body_min_rate: u64,
    /// BODY_MIN_RATE_GRACE: seconds a request body gets before BODY_MIN_RATE applies.
    /// Default 10.
    pub body_min_rate_grace_secs: u64,
    /// DENO_PATH: the Deno binary for edge functions (else `deno` on PATH; none = 503).
    pub deno_path: Option<String>,
    /// FUNCTION_TIMEOUT_MS: per invocation. Default 10000.
    pub function_timeout_ms: u64,
    /// FUNCTION_MEMORY_MB: V8 heap cap of the Deno worker. Default 256.
    pub function_memory_mb: u64,
    /// ENABLE_SQL_ENDPOINT: mount POST /api/sql (service role). Default false.
    pub enable_sql_endpoint: bool,
    /// ENABLE_DEMO_ENDPOINT: mount POST /api/demo even without a SERVICE_ROLE_KEY.
    pub enable_demo_endpoint: bool,
    /// DB_ANON_ROLE: run requests that carry no credential as this role (PostgREST's
    /// db-anon-role). Unset (default) = such requests get 401, as on Supabase.
    pub db_anon_role: Option<String>,
    /// DB_TX_END: how REST transactions end (PostgREST's db-tx-end): `commit`,
    /// `commit-allow-override` (default; `Prefer: tx=rollback` honoured), `rollback`,
    /// `rollback-allow-override`.
    pub db_tx_end: TxEnd,
    /// DB_PRE_REQUEST: a function (`schema.name`) called in every REST transaction
    /// after the role and claims are set (PostgREST's db-pre-request).
    pub db_pre_request: Option<String>,
    /// REST_ERROR_FORMAT: `contract` (default: PostgREST's fields plus `error`) or
    /// `postgrest` (exactly `{code, message, details, hint}`, for PostgREST clients).
    pub rest_error_format_postgrest: bool,
    /// EXTERNAL_*: the enabled OAuth / OpenID providers (see `auth::oauth::providers`).
    pub oauth_providers: Vec<oauth::ProviderConfig>,
    /// WORKBENCH_*: the SQL workbench APIs (`config::workbench`).
    pub workbench: workbench::WorkbenchConfig,
    /// LLM_*: the agent's LLM providers (`config::llm`).
    pub llm: llm::LlmConfig,
}

/// How REST transactions end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxEnd {
    /// Roll back instead of committing.
    pub rollback: bool,
    /// Whether `Prefer: tx=commit|rollback` may change that.
    pub overridable: bool,
}

impl TxEnd {
    /// Whether a request with `Prefer: tx=<asked>` rolls back.
    pub fn rollback(self, asked: Option<&str>) -> bool {
        match (self.overridable, asked) {
            (true, Some("rollback")) => true,
            (true, Some("commit")) => false,
            _ => self.rollback,
        }
    }
}

/// How to reach the SMTP server.
#[derive(Clone)]
pub struct SmtpConfig {
    /// Host.
    pub host: String,
    /// Port (default 587).
    pub port: u16,
    /// Login, if any.
    pub user: Option<String>,
    /// Password.
    pub pass: Option<Secret>,
    /// From address (default `pgstack <noreply@localhost>`).
    pub sender: String,
    /// `none`, `starttls` (default for port 587) or `tls` (default for port 465).
    pub tls: String,
}

impl fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("pass", &self.pass)
            .field("sender", &self.sender)
            .field("tls", &self.tls)
            .finish()
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redact_url(&self.database_url))
            .field("listen", &self.listen)
            .field("jwt_secret", &self.jwt_secret)
            .field("jwt_expiry_secs", &self.jwt_expiry_secs)
            .field("anon_key", &self.anon_key)
            .field("service_role_key", &self.service_role_key)
            .field("site_url", &self.site_url)
            .field("allowed_origins", &self.allowed_origins)
            .field("allow_permissive_cors", &self.allow_permissive_cors)
            .field("db_pool_size", &self.db_pool_size)
            .field("log_format", &self.log_format)
            .field("allow_anonymous_signin", &self.allow_anonymous_signin)
            .field("refresh_reuse_interval_secs", &self.refresh_reuse_interval_secs)
            .field("db_schemas", &self.db_schemas)
            .field("smtp", &self.smtp)
            .field("require_email_verification", &self.require_email_verification)
            .field("api_external_url", &self.api_external_url)
            .finish()
    }
}

/// Why a configuration was refused. Each message tells the operator what to do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required setting is absent.
    #[error("{0} is required{1}")]
    Missing(&'static str, &'static str),
    /// A setting has a value that cannot be used.
    #[error("{name} is invalid: {why}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// What is wrong.
        why: String,
    },
    /// The config file cannot be read.
    #[error("cannot read config file {path}: {why}")]
    File {
        /// The file.
        path: String,
        /// The underlying error.
        why: String,
    },
}
