//! WORKBENCH_* settings: the SQL workbench APIs (/proxy, /poge/api, the database
//! configurations). They reach arbitrary database servers, so they are off unless
//! WORKBENCH_ENABLED=true, and only the service key or a token whose claims grant
//! the workbench may use them.

use super::{ConfigError, Secret, Source};

/// The workbench's settings.
#[derive(Debug, Clone)]
pub struct WorkbenchConfig {
    /// WORKBENCH_ENABLED (default false).
    pub enabled: bool,
    /// WORKBENCH_ROLES: token `role` claims (besides the service key) that may use it.
    pub roles: Vec<String>,
    /// WORKBENCH_CLAIM: a claim (`name` or `app_metadata.name`) that grants it when true.
    pub claim: Option<String>,
    /// WORKBENCH_ALLOW_PRIVATE: targets on loopback / private addresses (default false).
    pub allow_private: bool,
    /// WORKBENCH_ALLOWED_HOSTS: `host` or `host:port` targets exempt from the address check.
    pub allowed_hosts: Vec<String>,
    /// WORKBENCH_STATEMENT_TIMEOUT_MS: default statement timeout (10 s; requests may ask up to the max).
    pub statement_timeout_ms: u64,
    /// WORKBENCH_MAX_STATEMENT_TIMEOUT_MS: the most a request may ask (30 s).
    pub max_statement_timeout_ms: u64,
    /// WORKBENCH_MAX_POOLS: distinct targets with a pool at once (32).
    pub max_pools: usize,
    /// WORKBENCH_POOL_SIZE: connections per target (10, as Poge).
    pub pool_size: usize,
    /// WORKBENCH_SESSIONS: open sessions at once, all callers (64).
    pub max_sessions: usize,
    /// WORKBENCH_SESSION_IDLE: seconds an unused session is kept (300).
    pub session_idle_secs: u64,
    /// WORKBENCH_MAX_ROWS: rows a Poge query returns at most (1000).
    pub max_rows: usize,
    /// WORKBENCH_MAX_RESULT_BYTES: bytes of rows one answer carries at most (16 MiB).
    pub max_result_bytes: usize,
    /// WORKBENCH_CACHE_TTL: seconds a cached read stays (60).
    pub cache_ttl_secs: u64,
    /// WORKBENCH_CACHE_MAX_BYTES: size of the read cache (32 MiB).
    pub cache_max_bytes: usize,
    /// WORKBENCH_SECRET_KEY: encrypts saved configurations' passwords (at least 32
    /// characters); without it a configuration cannot keep a password.
    pub secret_key: Option<Secret>,
    /// WORKBENCH_SCHEMA_MAX_AGE_HOURS: a schema snapshot older than this needs a refresh (24).
    pub schema_max_age_hours: u64,
    /// WORKBENCH_CONCURRENCY: workbench requests served at once, all callers (32); the
    /// rest wait up to 10 s, then 503.
    pub concurrency: usize,
}

fn list(src: &Source, name: &str) -> Vec<String> {
    src.get(name).map(|v| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()).unwrap_or_default()
}

/// Reads the settings.
pub fn from_source(src: &Source) -> Result<WorkbenchConfig, ConfigError> {
    let max_statement_timeout_ms = src.num("WORKBENCH_MAX_STATEMENT_TIMEOUT_MS", 30_000u64)?.clamp(100, 3_600_000);
    Ok(WorkbenchConfig {
        enabled: src.flag("WORKBENCH_ENABLED", false)?,
        roles: list(src, "WORKBENCH_ROLES"),
        claim: src.get("WORKBENCH_CLAIM").map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()),
        allow_private: src.flag("WORKBENCH_ALLOW_PRIVATE", false)?,
        allowed_hosts: list(src, "WORKBENCH_ALLOWED_HOSTS"),
        statement_timeout_ms: src.num("WORKBENCH_STATEMENT_TIMEOUT_MS", 10_000u64)?.clamp(100, max_statement_timeout_ms),
        max_statement_timeout_ms,
        max_pools: src.num("WORKBENCH_MAX_POOLS", 32usize)?.clamp(1, 1024),
        pool_size: src.num("WORKBENCH_POOL_SIZE", 10usize)?.clamp(1, 100),
        max_sessions: src.num("WORKBENCH_SESSIONS", 64usize)?.clamp(1, 10_000),
        session_idle_secs: src.num("WORKBENCH_SESSION_IDLE", 300u64)?.clamp(5, 86_400),
        max_rows: src.num("WORKBENCH_MAX_ROWS", 1000usize)?.clamp(1, 100_000),
        max_result_bytes: src.num("WORKBENCH_MAX_RESULT_BYTES", 16 * 1024 * 1024usize)?.clamp(64 * 1024, 256 * 1024 * 1024),
        cache_ttl_secs: src.num("WORKBENCH_CACHE_TTL", 60u64)?,
        cache_max_bytes: src.num("WORKBENCH_CACHE_MAX_BYTES", 32 * 1024 * 1024usize)?,
        secret_key: match src.get("WORKBENCH_SECRET_KEY") {
            Some(k) if k.len() < 32 => return Err(ConfigError::Invalid { name: "WORKBENCH_SECRET_KEY", why: "must be at least 32 characters".into() }),
            k => k.map(Secret::new),
        },
        schema_max_age_hours: src.num("WORKBENCH_SCHEMA_MAX_AGE_HOURS", 24u64)?.max(1),
        concurrency: src.num("WORKBENCH_CONCURRENCY", 32usize)?.clamp(1, 10_000),
    })
}
