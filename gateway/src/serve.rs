//! `pgstack serve`: bind, serve, and drain in-flight requests on shutdown.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::{Config, LogFormat};
use crate::{app, db, AppState};

/// How long in-flight requests may take to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Installs the tracing subscriber once. RUST_LOG overrides the default level.
///
/// Lines are formatted on the request's thread and written to stderr by a writer
/// thread (tracing-appender), so a request never waits on the write itself; nothing
/// is dropped (a full buffer blocks). Keep the returned guard alive until exit: it
/// flushes what is left.
#[must_use = "dropping the guard stops the log writer"]
pub fn init_logging(format: LogFormat) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,tokio_postgres=warn"));
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default().lossy(false).thread_name("pgstack-log").finish(std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    let installed = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    installed.is_ok().then_some(guard)
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish (at most
/// [`DRAIN_TIMEOUT`]). Prints `listening on http://ADDR` on stdout once bound.
pub async fn run(mut config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let mailer = crate::auth::mailer::Mailer::from_config(&config)?;
    if config.require_email_verification && !mailer.enabled() {
        anyhow::bail!("REQUIRE_EMAIL_VERIFICATION=true needs an SMTP server: set SMTP_HOST (and SMTP_PORT, SMTP_USER, SMTP_PASS, SMTP_SENDER)");
    }
    let pool = db::pool(&config)?;
    let listener = TcpListener::bind(config.listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    if config.api_external_url.is_empty() {
        config.api_external_url = format!("http://{addr}");
    }
    check_database(&pool).await;
    let database_url = config.database_url.clone();
    let wire = db::wire_pool(&config)?;
    let rest_tx = db::pool(&config)?;
    let state = AppState::new(config, pool, wire, rest_tx, mailer);
    let events = crate::listener::spawn(
        database_url,
        vec![
            crate::listener::SCHEMA_CHANNEL.to_owned(),
            crate::realtime::CHANNEL.to_owned(),
            crate::realtime::relay::CHANNEL.to_owned(),
            crate::channels::CHANNEL.to_owned(),
            crate::webhooks::deliver::CHANNEL.to_owned(),
        ],
    );
    crate::webhooks::deliver::spawn(state.clone(), &events);
    crate::storage::tus::spawn_expiry(state.clone());
    if let crate::storage::backend::Backend::Disk(root) = &state.storage_backend {
        let max_age = std::time::Duration::from_secs(state.config.storage_tmp_max_age_secs);
        crate::storage::backend::spawn_sweeper(root.clone(), max_age);
    }
    crate::realtime::spawn_relay(&state, &events);
    crate::channels::spawn(&state, &events);
    crate::workbench::spawn(&state);
    crate::listener::spawn_schema_reloader(state.clone(), &events);

    println!("listening on http://{addr}");
    tracing::info!(%addr, "pgstack gateway listening");

    let fd_limit = crate::http::server::raise_fd_limit();
    let limits = crate::http::server::Limits {
        max_connections: state.config.http_max_connections.unwrap_or_else(|| crate::http::server::default_max_connections(fd_limit)),
        max_per_ip: state.config.http_max_connections_per_ip,
        header_read_timeout: std::time::Duration::from_secs(state.config.http_header_read_timeout_secs),
    };
    tracing::info!(max_connections = limits.max_connections, max_per_ip = limits.max_per_ip, fd_limit, "connection limits");
    let graceful = async move {
        shutdown.await;
        tracing::info!("shutdown requested: draining in-flight requests");
    };
    crate::http::server::serve(listener, app(state), limits, graceful, DRAIN_TIMEOUT).await;
    tracing::info!("stopped");
    Ok(())
}

/// Logs whether the database answers and the extension is present. Never fails:
/// the gateway runs degraded until Postgres is back.
async fn check_database(pool: &deadpool_postgres::Pool) {
    let client = match pool.get().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "PostgreSQL is not reachable yet; /health reports degraded until it is");
            return;
        }
    };
    match client.query_opt("SELECT extversion FROM pg_extension WHERE extname = 'pgstack'", &[]).await {
        Ok(Some(row)) => {
            let v: String = row.get(0);
            if v != env!("CARGO_PKG_VERSION") {
                tracing::warn!(installed = %v, gateway = env!("CARGO_PKG_VERSION"),
                    "extension version differs from the gateway: run `pgstack install` (ALTER EXTENSION pgstack UPDATE)");
            }
        }
        Ok(None) => tracing::warn!("extension pgstack is not created in this database: run `pgstack install`"),
        Err(e) => tracing::warn!(error = %e, "cannot read the extension version"),
    }
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is called,
/// not when the future is first polled: a SIGTERM that arrives right after start-up
/// (before the server loop polls it) still means a graceful stop, not death by signal.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate()).ok();
    let int = signal(SignalKind::interrupt()).ok();
    async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! { _ = wait(term) => {}, _ = wait(int) => {} }
    }
}
