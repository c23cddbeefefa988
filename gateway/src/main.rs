//! The `pgstack` command: load config, then run one subcommand. Nothing else here.
// One audited exception (the allocator module), so deny rather than forbid.
#![deny(unsafe_code)]

mod allocator;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgstack_gateway::config::{Config, Secret, Source};
use pgstack_gateway::dev::{self, secrets::DevSecrets, DevOptions};
use pgstack_gateway::{install, keys, serve};
use pgstack_shared::Role;

#[derive(Parser)]
#[command(name = "pgstack", version, about = "A self-hosted, Supabase-compatible backend for PostgreSQL")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the API against DATABASE_URL (settings from env or --config).
    Serve {
        /// A `.env`-format file; environment variables win over it.
        #[arg(long, env = "PGSTACK_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run everything locally: a private PostgreSQL 15 cluster, the extension, keys, the API.
    Dev {
        /// Project-local state folder (cluster data, keys).
        #[arg(long, env = "PGSTACK_DIR", default_value = ".pgstack")]
        dir: PathBuf,
        /// PostgreSQL port (default: the last one used, else a free one).
        #[arg(long, env = "PGSTACK_PG_PORT")]
        pg_port: Option<u16>,
        /// A `.env`-format file for gateway settings (SITE_URL, LISTEN_ADDR, ...).
        #[arg(long, env = "PGSTACK_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print (or rotate) the dev project's keys; generate or mint keys for `serve`.
    Keys {
        #[command(subcommand)]
        action: Option<KeysCmd>,
        /// The dev project's state folder.
        #[arg(long, env = "PGSTACK_DIR", default_value = ".pgstack")]
        dir: PathBuf,
        /// Replace the dev project's JWT secret and keys (existing tokens stop working).
        #[arg(long)]
        rotate: bool,
    },
    /// Create the extension in a database, or update it (needs a superuser URL).
    Install {
        /// Superuser connection URL.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// Also set the password of the gateway's login role `authenticator`.
        #[arg(long, env = "AUTHENTICATOR_PASSWORD")]
        authenticator_password: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Print a new JWT_SECRET with ANON_KEY and SERVICE_ROLE_KEY signed by it (.env format).
    Generate,
    /// Print a key for ROLE signed with $JWT_SECRET.
    Mint {
        /// anon, authenticated or service_role.
        #[arg(long)]
        role: Role,
    },
}

/// Runtime worker threads: half the cores, rounded up, unless TOKIO_WORKER_THREADS
/// says otherwise (None: tokio reads it). The gateway runs beside Postgres, whose
/// backends need the other cores; and a worker of its own per core woke the others
/// for every batch of ready sockets — on 2 cores one worker served 10% more reads
/// by key per second than two, with inserts, embeds and realtime delivery no slower
/// (docs/benchmarks.md). CPU-heavy work (password hashing, file staging, chat
/// compaction) runs on the blocking pool, not on the workers.
fn default_workers() -> Option<usize> {
    if std::env::var_os("TOKIO_WORKER_THREADS").is_some() {
        return None;
    }
    Some(pgstack_gateway::config::cores().div_ceil(2))
}

fn main() -> ExitCode {
    allocator::configure();
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().on_thread_park(allocator::on_park);
    if let Some(n) = default_workers() {
        builder.worker_threads(n);
    }
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgstack: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgstack: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Serve { config } => {
            let config = Config::load(&Source::from_env(config.as_deref())?)?;
            let _log = serve::init_logging(config.log_format);
            serve::run(config, serve::shutdown_signal()).await
        }
        Cmd::Dev { dir, pg_port, config } => {
            let _log = serve::init_logging(pgstack_gateway::config::LogFormat::Text);
            dev::run(DevOptions { dir, pg_port, config_file: config }).await
        }
        Cmd::Keys { action: None, dir, rotate } => {
            if !dir.join("dev.env").exists() && !rotate {
                anyhow::bail!("no dev project in {} (run `pgstack dev` first, or `pgstack keys generate`)", dir.display());
            }
            std::fs::create_dir_all(&dir)?;
            let mut s = DevSecrets::load_or_create(&dir)?;
            if rotate {
                s.rotate_keys()?;
                eprintln!("rotated; restart `pgstack dev` to use the new keys");
            }
            for (k, v) in s.pairs().into_iter().take(3) {
                println!("{k}={v}");
            }
            Ok(())
        }
        Cmd::Keys { action: Some(KeysCmd::Generate), .. } => {
            let secret = Secret::new(keys::generate_secret());
            println!("JWT_SECRET={}", secret.expose());
            println!("ANON_KEY={}", keys::mint(Role::Anon, &secret)?);
            println!("SERVICE_ROLE_KEY={}", keys::mint(Role::ServiceRole, &secret)?);
            Ok(())
        }
        Cmd::Keys { action: Some(KeysCmd::Mint { role }), .. } => {
            let secret = std::env::var("JWT_SECRET").map_err(|_| anyhow::anyhow!("JWT_SECRET is required"))?;
            pgstack_gateway::config::check_secret_strength(&secret)?;
            println!("{}", keys::mint(role, &Secret::new(secret))?);
            Ok(())
        }
        Cmd::Install { database_url, authenticator_password } => {
            let client = install::connect(&database_url).await?;
            match install::ensure_extension(&client).await? {
                install::Outcome::Created(v) => println!("created extension pgstack {v}"),
                install::Outcome::Updated(a, b) => println!("updated extension pgstack {a} -> {b}"),
                install::Outcome::UpToDate(v) => println!("extension pgstack {v} is up to date"),
            }
            if let Some(pw) = authenticator_password {
                install::set_authenticator_password(&client, &pw).await?;
                println!("set the password of role authenticator");
            }
            Ok(())
        }
    }
}
