//! Loading the configuration: where settings come from ([`Source`]: environment, then
//! file, then defaults), and [`Config::load`], which parses and checks every one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use super::*;

/// Where settings come from: the environment first, then the config file.
pub struct Source {
    file: HashMap<String, String>,
    env: EnvLookup,
}

/// Reads one environment variable (the process's, or a test's map).
type EnvLookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

impl Source {
    /// The process environment plus an optional `.env`-format file.
    pub fn from_env(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut map = HashMap::new();
        if let Some(path) = file {
            let iter = dotenvy::from_path_iter(path).map_err(|e| ConfigError::File { path: path.display().to_string(), why: e.to_string() })?;
            for item in iter {
                let (k, v) = item.map_err(|e| ConfigError::File { path: path.display().to_string(), why: e.to_string() })?;
                map.insert(k, v);
            }
        }
        Ok(Source { file: map, env: Box::new(|k| std::env::var(k).ok()) })
    }

    /// Settings from a map only (tests, `pgstack dev`).
    pub fn from_map(map: HashMap<String, String>) -> Self {
        Source { file: map, env: Box::new(|_| None) }
    }

    /// Adds defaults underneath: used only where neither env nor file has the key.
    pub fn with_defaults(mut self, defaults: HashMap<String, String>) -> Self {
        for (k, v) in defaults {
            self.file.entry(k).or_insert(v);
        }
        self
    }

    /// The value of `key`, if set and not blank.
    pub fn get(&self, key: &str) -> Option<String> {
        (self.env)(key).or_else(|| self.file.get(key).cloned()).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    /// A number, `default` when unset.
    pub fn num<T: std::str::FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError> {
        parse_num(self, name, default)
    }

    /// A boolean, `default` when unset.
    pub fn flag(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        parse_bool(self, name, default)
    }
}

impl Config {
    /// Reads and validates every setting.
    pub fn load(src: &Source) -> Result<Config, ConfigError> {
        let database_url = src.get("DATABASE_URL").ok_or(ConfigError::Missing("DATABASE_URL", " (e.g. postgres://authenticator:PASSWORD@127.0.0.1:5432/postgres)"))?;
        let login_role =
            database_url.parse::<tokio_postgres::Config>().map_err(|e| ConfigError::Invalid { name: "DATABASE_URL", why: e.to_string() })?.get_user().map(str::to_owned);

        let jwt_secret = src.get("JWT_SECRET").ok_or(ConfigError::Missing("JWT_SECRET", " (at least 32 random characters; `pgstack keys generate` makes one)"))?;
        check_secret_strength(&jwt_secret)?;
        let jwt_secret = Secret::new(jwt_secret);

        let anon_key = src.get("ANON_KEY").map(Secret::new);
        let service_role_key = src.get("SERVICE_ROLE_KEY").map(Secret::new);
        check_api_key("ANON_KEY", anon_key.as_ref(), &jwt_secret, Role::Anon)?;
        check_api_key("SERVICE_ROLE_KEY", service_role_key.as_ref(), &jwt_secret, Role::ServiceRole)?;

        let listen = listen_addr(src)?;
        let jwt_expiry_secs = parse_num(src, "JWT_EXPIRY", 3600u64)?;
        if jwt_expiry_secs == 0 {
            return Err(ConfigError::Invalid { name: "JWT_EXPIRY", why: "must be at least 1 second".into() });
        }
        let cores = super::cores();
        // PostgREST's default pool is 10: fewer queue requests that Postgres could
        // serve at once (measured in docs/benchmarks.md).
        let db_pool_size = parse_num(src, "DB_POOL_SIZE", (2 * cores).max(10))?;
        if db_pool_size == 0 {
            return Err(ConfigError::Invalid { name: "DB_POOL_SIZE", why: "must be at least 1".into() });
        }
        let log_format = match src.get("LOG_FORMAT").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(ConfigError::Invalid { name: "LOG_FORMAT", why: format!("{other:?} is not text or json") }),
        };

        Ok(Config {
            database_url,
            login_role,
            listen,
            jwt_secret,
            jwt_expiry_secs,
            anon_key,
            service_role_key,
            site_url: src.get("SITE_URL").unwrap_or_else(|| "http://localhost:3000".into()),
            allowed_origins: src.get("ALLOWED_ORIGINS").map(|v| v.split(',').map(|o| o.trim().to_owned()).filter(|o| !o.is_empty()).collect()).unwrap_or_default(),
            allow_permissive_cors: parse_bool(src, "ALLOW_PERMISSIVE_CORS", false)?,
            db_pool_size,
            http_max_connections: match src.get("HTTP_MAX_CONNECTIONS") {
                Some(_) => Some(parse_num(src, "HTTP_MAX_CONNECTIONS", 0usize)?.max(1)),
                None => None,
            },
            http_max_connections_per_ip: parse_num(src, "HTTP_MAX_CONNECTIONS_PER_IP", 1000usize)?.max(1),
            http_header_read_timeout_secs: parse_num(src, "HTTP_HEADER_READ_TIMEOUT", 10u64)?.clamp(1, 3600),
            request_timeout_secs: parse_num(src, "REQUEST_TIMEOUT", 60u64)?.clamp(1, 86_400),
            db_max_rows: match src.get("DB_MAX_ROWS").as_deref().map(str::trim) {
                Some("none") | Some("") => None,
                Some(_) => Some(parse_num(src, "DB_MAX_ROWS", 1000i64)?).filter(|n| *n > 0),
                None => Some(1000),
            },
            response_max_bytes: parse_num(src, "RESPONSE_MAX_BYTES", 64usize * 1024 * 1024)?.max(1024),
            jwt_require_exp: parse_bool(src, "JWT_REQUIRE_EXP", true)?,
            db_plan_enabled: parse_bool(src, "DB_PLAN_ENABLED", false)?,
            jwt_aud: src.get("JWT_AUD").map(|a| a.trim().to_owned()).filter(|a| !a.is_empty()),
            log_format,
            allow_anonymous_signin: parse_bool(src, "ALLOW_ANONYMOUS_SIGNIN", false)?,
            refresh_reuse_interval_secs: parse_num(src, "REFRESH_TOKEN_REUSE_INTERVAL", 10i64)?.max(0),
            db_schemas: src
                .get("DB_SCHEMAS")
                .map(|v| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
                .filter(|v: &Vec<String>| !v.is_empty())
                .unwrap_or_else(|| vec!["public".to_owned()]),
            smtp: smtp_config(src)?,
            require_email_verification: parse_bool(src, "REQUIRE_EMAIL_VERIFICATION", false)?,
            // Empty = derived from the bound address when the server starts.
            api_external_url: src.get("API_EXTERNAL_URL").map(|u| u.trim_end_matches('/').to_owned()).unwrap_or_default(),
            additional_redirect_urls: src
                .get("ADDITIONAL_REDIRECT_URLS")
                .map(|v| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
                .unwrap_or_default(),
            mailer_otp_exp_secs: parse_num(src, "MAILER_OTP_EXP", 3600i64)?.max(60),
            email_min_interval_secs: parse_num(src, "EMAIL_MIN_INTERVAL", 60i64)?.max(0),
            mailer_templates_dir: src.get("MAILER_TEMPLATES_DIR"),
            mailer_log_only: false,
            auth_rate_limit: parse_rate(src, "AUTH_RATE_LIMIT", "60/m")?,
            anonymous_rate_limit: parse_rate(src, "ANONYMOUS_RATE_LIMIT", "30/h")?,
            password_hash_concurrency: parse_num(src, "PASSWORD_HASH_CONCURRENCY", super::cores())?.clamp(1, 1024),
            password_hash_queue_timeout_secs: parse_num(src, "PASSWORD_HASH_QUEUE_TIMEOUT", 5u64)?.clamp(1, 120),
            otp_max_attempts: parse_num(src, "OTP_MAX_ATTEMPTS", 5i32)?.clamp(1, 1000),
            require_authenticated_ws: parse_bool(src, "REQUIRE_AUTHENTICATED_WS", false)?,
            ws_max_connections: parse_num(src, "WS_MAX_CONNECTIONS", 10_000usize)?,
            ws_max_connections_per_ip: parse_num(src, "WS_MAX_CONNECTIONS_PER_IP", 100usize)?,
            ws_client_queue: parse_num(src, "WS_CLIENT_QUEUE", 256usize)?,
            ws_presence_max_bytes: parse_num(src, "WS_PRESENCE_MAX_BYTES", 4096usize)?,
            ws_presence_max_total_bytes: parse_num(src, "WS_PRESENCE_MAX_TOTAL_BYTES", 64 * 1024 * 1024usize)?,
            ws_client_queue_bytes: parse_num(src, "WS_CLIENT_QUEUE_BYTES", 1024 * 1024usize)?.max(1024),
            ws_queue_max_total_bytes: parse_num(src, "WS_QUEUE_MAX_TOTAL_BYTES", 256 * 1024 * 1024usize)?.max(1024),
            ws_max_message_bytes: parse_num(src, "WS_MAX_MESSAGE_BYTES", 64 * 1024usize)?.clamp(256, 16 * 1024 * 1024),
            ws_broadcast_rate: parse_rate(src, "WS_BROADCAST_RATE", "100/s")?,
            realtime_max_channels: parse_num(src, "REALTIME_MAX_CHANNELS", 100usize)?.clamp(1, 10_000),
            realtime_max_joins_per_second: parse_num(src, "REALTIME_MAX_JOINS_PER_SECOND", 100u32)?.max(1),
            realtime_max_events_per_second: parse_num(src, "REALTIME_MAX_EVENTS_PER_SECOND", 100u32)?.max(1),
            realtime_max_payload_bytes: parse_num(src, "REALTIME_MAX_PAYLOAD_BYTES", 256 * 1024usize)?.clamp(1024, 1024 * 1024),
            realtime_client_queue: parse_num(src, "REALTIME_CLIENT_QUEUE", 4096usize)?.clamp(16, 1_000_000),
            realtime_messages_retention_secs: parse_num(src, "REALTIME_MESSAGES_RETENTION", 3 * 86_400u64)?,
            ws_write_timeout_secs: parse_num(src, "WS_WRITE_TIMEOUT", 30u64)?.clamp(1, 3600),
            webhook_timeout_secs: parse_num(src, "WEBHOOK_TIMEOUT", 10u64)?.clamp(1, 300),
            webhook_allow_private: parse_bool(src, "WEBHOOK_ALLOW_PRIVATE", false)?,
            webhook_allowed_hosts: src.get("WEBHOOK_ALLOWED_HOSTS").map(|v| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()).unwrap_or_default(),
            webhook_retention_secs: parse_num(src, "WEBHOOK_RETENTION", 7 * 86_400u64)?,
            webhook_dead_retention_secs: parse_num(src, "WEBHOOK_DEAD_RETENTION", 30 * 86_400u64)?,
            webhook_retention_max_rows: parse_num(src, "WEBHOOK_RETENTION_MAX_ROWS", 100_000i64)?.max(0),
            storage_backend: match src.get("STORAGE_BACKEND").unwrap_or_else(|| "database".into()).as_str() {
                b @ ("database" | "disk") => b.to_owned(),
                other => return Err(ConfigError::Invalid { name: "STORAGE_BACKEND", why: format!("{other:?} is not database or disk") }),
            },
            storage_root: src.get("STORAGE_ROOT").unwrap_or_else(|| "./storage".into()),
            storage_tmp_max_age_secs: parse_num(src, "STORAGE_TMP_MAX_AGE", 86_400u64)?.max(1),
            storage_allow_inline_html: parse_bool(src, "STORAGE_ALLOW_INLINE_HTML", false)?,
            body_idle_timeout_secs: parse_num(src, "BODY_IDLE_TIMEOUT", 10u64)?,
            body_min_rate: parse_num(src, "BODY_MIN_RATE", 1024u64)?,
            body_min_rate_grace_secs: parse_num(src, "BODY_MIN_RATE_GRACE", 10u64)?,
            deno_path: src.get("DENO_PATH"),
            function_timeout_ms: parse_num(src, "FUNCTION_TIMEOUT_MS", 10_000u64)?.max(100),
            function_memory_mb: parse_num(src, "FUNCTION_MEMORY_MB", 256u64)?.max(32),
            enable_sql_endpoint: parse_bool(src, "ENABLE_SQL_ENDPOINT", false)?,
            enable_demo_endpoint: parse_bool(src, "ENABLE_DEMO_ENDPOINT", false)?,
            oauth_providers: oauth::from_source(src)?,
            workbench: super::workbench::from_source(src)?,
            llm: super::llm::from_source(src)?,
            db_anon_role: match src.get("DB_ANON_ROLE").map(|r| r.trim().to_owned()).filter(|r| !r.is_empty()) {
                Some(r) if r.starts_with("pgstack_") || r.starts_with("pg_") || r.len() > 63 => {
                    return Err(ConfigError::Invalid { name: "DB_ANON_ROLE", why: format!("{r:?} is reserved or too long") })
                }
                r => r,
            },
            db_tx_end: match src.get("DB_TX_END").as_deref().map(str::trim) {
                None | Some("") | Some("commit-allow-override") => TxEnd { rollback: false, overridable: true },
                Some("commit") => TxEnd { rollback: false, overridable: false },
                Some("rollback") => TxEnd { rollback: true, overridable: false },
                Some("rollback-allow-override") => TxEnd { rollback: true, overridable: true },
                Some(other) => {
                    return Err(ConfigError::Invalid { name: "DB_TX_END", why: format!("{other:?} is not commit, commit-allow-override, rollback or rollback-allow-override") })
                }
            },
            db_pre_request: match src.get("DB_PRE_REQUEST").map(|f| f.trim().to_owned()).filter(|f| !f.is_empty()) {
                Some(f) if !f.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')) || f.split('.').count() > 2 => {
                    return Err(ConfigError::Invalid { name: "DB_PRE_REQUEST", why: format!("{f:?} is not a function name like schema.name") })
                }
                f => f,
            },
            rest_error_format_postgrest: match src.get("REST_ERROR_FORMAT").as_deref().map(str::trim) {
                None | Some("") | Some("contract") => false,
                Some("postgrest") => true,
                Some(other) => return Err(ConfigError::Invalid { name: "REST_ERROR_FORMAT", why: format!("{other:?} is not contract or postgrest") }),
            },
        })
    }
}

fn parse_rate(src: &Source, name: &'static str, default: &str) -> Result<Rate, ConfigError> {
    let v = src.get(name).unwrap_or_else(|| default.to_owned());
    v.parse().map_err(|why| ConfigError::Invalid { name, why })
}

fn smtp_config(src: &Source) -> Result<Option<SmtpConfig>, ConfigError> {
    let Some(host) = src.get("SMTP_HOST") else { return Ok(None) };
    let port: u16 = parse_num(src, "SMTP_PORT", 587)?;
    let tls = src.get("SMTP_TLS").map(|t| t.to_ascii_lowercase()).unwrap_or_else(|| {
        match port {
            465 => "tls",
            587 => "starttls",
            _ => "none",
        }
        .to_owned()
    });
    if !matches!(tls.as_str(), "none" | "starttls" | "tls") {
        return Err(ConfigError::Invalid { name: "SMTP_TLS", why: format!("{tls:?} is not none, starttls or tls") });
    }
    Ok(Some(SmtpConfig {
        host,
        port,
        user: src.get("SMTP_USER"),
        pass: src.get("SMTP_PASS").map(Secret::new),
        sender: src.get("SMTP_SENDER").unwrap_or_else(|| "pgstack <noreply@localhost>".to_owned()),
        tls,
    }))
}

fn listen_addr(src: &Source) -> Result<SocketAddr, ConfigError> {
    if let Some(v) = src.get("LISTEN_ADDR") {
        return v.parse().map_err(|_| ConfigError::Invalid { name: "LISTEN_ADDR", why: format!("{v:?} is not an address like 127.0.0.1:8080") });
    }
    let host = src.get("HOST").unwrap_or_else(|| "127.0.0.1".into());
    let port: u16 = parse_num(src, "PORT", 8080)?;
    format!("{host}:{port}")
        .parse()
        .or_else(|_| format!("[{host}]:{port}").parse())
        .map_err(|_| ConfigError::Invalid { name: "HOST", why: format!("{host:?} is not an IP address") })
}

/// Refuses secrets that are short, published, or made of one repeated character.
pub fn check_secret_strength(secret: &str) -> Result<(), ConfigError> {
    let why = if secret.len() < MIN_SECRET_LEN {
        Some(format!("it has {} characters; at least {MIN_SECRET_LEN} are required", secret.len()))
    } else if PUBLISHED_SECRETS.contains(&secret) {
        Some("it is a value published in documentation; generate your own".to_owned())
    } else if secret.chars().collect::<std::collections::HashSet<_>>().len() < 8 {
        Some("it has fewer than 8 distinct characters; use a random value".to_owned())
    } else {
        None
    };
    match why {
        Some(why) => Err(ConfigError::Invalid { name: "JWT_SECRET", why: format!("{why} (`pgstack keys generate` makes a strong one)") }),
        None => Ok(()),
    }
}

fn check_api_key(name: &'static str, key: Option<&Secret>, secret: &Secret, role: Role) -> Result<(), ConfigError> {
    let Some(key) = key else { return Ok(()) };
    match keys::verify(key.expose(), secret) {
        Ok(claims) if claims.role == role => Ok(()),
        Ok(claims) => Err(ConfigError::Invalid { name, why: format!("its role claim is {}, expected {role}", claims.role) }),
        Err(e) => Err(ConfigError::Invalid { name, why: format!("not a valid JWT signed with JWT_SECRET ({e}); `pgstack keys mint` makes one") }),
    }
}

fn parse_num<T: std::str::FromStr>(src: &Source, name: &'static str, default: T) -> Result<T, ConfigError> {
    match src.get(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| ConfigError::Invalid { name, why: format!("{v:?} is not a number") }),
    }
}

fn parse_bool(src: &Source, name: &'static str, default: bool) -> Result<bool, ConfigError> {
    match src.get(name).map(|v| v.to_ascii_lowercase()).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(v) => Err(ConfigError::Invalid { name, why: format!("{v:?} is not true or false") }),
    }
}

/// A database URL with its password replaced, for logs.
pub fn redact_url(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(cfg) if cfg.get_password().is_some() => match (url.find("://"), url.rfind('@')) {
            (Some(s), Some(at)) if at > s => {
                let creds = &url[s + 3..at];
                let user = creds.split(':').next().unwrap_or("");
                format!("{}{}:<redacted>{}", &url[..s + 3], user, &url[at..])
            }
            _ => "<redacted>".to_owned(),
        },
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCD";

    fn src(pairs: &[(&str, &str)]) -> Source {
        Source::from_map(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![("DATABASE_URL", "postgres://authenticator:pw@127.0.0.1:5432/postgres"), ("JWT_SECRET", SECRET)]
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = Config::load(&src(&base())).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.jwt_expiry_secs, 3600);
        assert!(c.allowed_origins.is_empty());
        assert!(!c.allow_permissive_cors);
        assert!(c.db_pool_size >= 4);
    }

    #[test]
    fn refuses_missing_or_weak_secrets() {
        let e = Config::load(&src(&[("DATABASE_URL", "postgres://a@h/db")])).unwrap_err();
        assert!(e.to_string().starts_with("JWT_SECRET is required"), "{e}");
        for weak in ["short", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "your-super-secret-jwt-token-with-at-least-32-characters-long"] {
            let mut p = base();
            p[1] = ("JWT_SECRET", weak);
            let e = Config::load(&src(&p)).unwrap_err();
            assert!(e.to_string().starts_with("JWT_SECRET is invalid"), "{weak}: {e}");
        }
        let e = Config::load(&src(&[("JWT_SECRET", SECRET)])).unwrap_err();
        assert!(e.to_string().starts_with("DATABASE_URL is required"), "{e}");
    }

    #[test]
    fn api_keys_must_be_signed_for_their_role() {
        let secret = Secret::new(SECRET);
        let anon = keys::mint(Role::Anon, &secret).unwrap();
        let service = keys::mint(Role::ServiceRole, &secret).unwrap();
        let mut p = base();
        p.push(("ANON_KEY", &anon));
        p.push(("SERVICE_ROLE_KEY", &service));
        assert!(Config::load(&src(&p)).is_ok());

        let mut swapped = base();
        swapped.push(("ANON_KEY", &service));
        let e = Config::load(&src(&swapped)).unwrap_err();
        assert!(e.to_string().contains("expected anon"), "{e}");

        let other = keys::mint(Role::Anon, &Secret::new("another-secret-0123456789-abcdefghijk")).unwrap();
        let mut foreign = base();
        foreign.push(("ANON_KEY", &other));
        assert!(Config::load(&src(&foreign)).unwrap_err().to_string().starts_with("ANON_KEY is invalid"));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = Config::load(&src(&base())).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains(SECRET));
        assert!(!dbg.contains(":pw@"));
        assert!(dbg.contains("authenticator:<redacted>@127.0.0.1"));
    }

    #[test]
    fn host_port_and_bad_values() {
        let mut p = base();
        p.push(("PORT", "9000"));
        p.push(("HOST", "0.0.0.0"));
        assert_eq!(Config::load(&src(&p)).unwrap().listen.to_string(), "0.0.0.0:9000");
        let mut p = base();
        p.push(("ALLOW_PERMISSIVE_CORS", "maybe"));
        assert!(Config::load(&src(&p)).is_err());
        let mut p = base();
        p.push(("ALLOWED_ORIGINS", "https://a.example, https://b.example,"));
        assert_eq!(Config::load(&src(&p)).unwrap().allowed_origins, vec!["https://a.example", "https://b.example"]);
    }
}
