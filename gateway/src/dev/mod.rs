//! `pgstack dev`: a private PostgreSQL cluster, the extension, keys, and the gateway,
//! in one command. State lives in a project-local folder (default `./.pgstack`):
//!
//! - `dev.env`: JWT secret, API keys, database passwords, last port (0600);
//! - `cluster/`: `pgdata/` and `postgres.log`, owned by the OS user running Postgres.
//!
//! - `dev.lock`: held (an exclusive `flock`) by the running `pgstack dev`, with its pid.
//!
//! A second run reuses both. Ctrl-C / SIGTERM drains the gateway, then stops the
//! cluster cleanly. Two `pgstack dev` on one folder at once: the second finds the lock
//! taken, says which process holds it and exits without touching the cluster.

pub mod cluster;
pub mod secrets;

use std::path::{Path, PathBuf};

use anyhow::Context;
use pgstack_shared::role::AUTHENTICATOR;

use crate::config::{Config, Source};
use crate::{install, serve};
use cluster::Cluster;
use secrets::DevSecrets;

/// Options of `pgstack dev`.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// The project-local state folder.
    pub dir: PathBuf,
    /// Postgres port; default: the last one used, else a free one.
    pub pg_port: Option<u16>,
    /// Optional `.env`-format config file for the gateway settings.
    pub config_file: Option<PathBuf>,
}

/// Stops the cluster when dropped, so every exit path leaves it stopped.
struct StopOnDrop(Cluster);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        println!("stopping PostgreSQL ...");
        match self.0.stop() {
            Ok(()) => println!("PostgreSQL stopped"),
            Err(e) => eprintln!("could not stop PostgreSQL cleanly: {e:#}"),
        }
    }
}

/// Runs the whole stack until Ctrl-C / SIGTERM.
pub async fn run(opts: DevOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.dir).with_context(|| format!("creating {}", opts.dir.display()))?;
    let dir = opts.dir.canonicalize()?;
    // Held until this function returns, i.e. after the cluster was stopped.
    let _lock = lock_state_dir(&dir)?;
    let mut secrets = DevSecrets::load_or_create(&dir)?;

    let mut cluster = open_cluster(&dir)?;
    let port = if cluster.is_running() {
        let p = cluster.running_port().context("a server runs on the dev cluster but its port is unknown")?;
        println!("reusing the PostgreSQL server already running on port {p}");
        p
    } else {
        match opts.pg_port {
            Some(p) => cluster::free_port(Some(p)).ok().filter(|&f| f == p).with_context(|| format!("port {p} is in use; choose another with --pg-port"))?,
            None => cluster::free_port(secrets.pg_port)?,
        }
    };
    cluster.set_port(port);

    if !cluster.is_initialized() {
        println!("creating a PostgreSQL cluster in {}", cluster.pgdata().display());
        cluster.init(secrets.superuser_password.expose())?;
    }
    if !cluster.is_running() {
        cluster.start()?;
    }
    let guard = StopOnDrop(cluster.clone());
    if secrets.pg_port != Some(port) {
        secrets.pg_port = Some(port);
        secrets.save()?;
    }

    let superuser_url = cluster.url(cluster::SUPERUSER, secrets.superuser_password.expose(), "postgres");
    let client = install::connect(&superuser_url).await.context("connecting to the dev cluster")?;
    match install::ensure_extension(&client).await? {
        install::Outcome::Created(v) => println!("created extension pgstack {v}"),
        install::Outcome::Updated(a, b) => println!("updated extension pgstack {a} -> {b}"),
        install::Outcome::UpToDate(_) => {}
    }
    install::set_authenticator_password(&client, secrets.authenticator_password.expose()).await?;
    drop(client);

    let password = secrets.authenticator_password.expose();
    let database_url = cluster.socket_url(AUTHENTICATOR, password, "postgres").unwrap_or_else(|| cluster.url(AUTHENTICATOR, password, "postgres"));
    let config = dev_config(&opts, &secrets, &database_url)?;
    print_banner(&config, &secrets, &database_url, &superuser_url, &dir, &cluster);

    let result = serve::run(config, serve::shutdown_signal()).await;
    drop(guard);
    result
}

/// Takes the exclusive lock on `<dir>/dev.lock` (released by the kernel when the
/// process ends, however it ends) and writes our pid into it. The file is opened
/// close-on-exec, so the Postgres server we start does not inherit the lock.
fn lock_state_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    let path = dir.join("dev.lock");
    let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() { "another process".to_owned() } else { format!("process {holder}") };
            anyhow::bail!("another `pgstack dev` is already running on {} ({who} holds {}); stop it first, or use another --dir", dir.display(), path.display());
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    file.flush()?;
    Ok(file)
}

/// The cluster in `<dir>/cluster`, or, when we are root and the Postgres OS user
/// cannot reach that folder (e.g. under /root), in /var/lib/pgstack/<hash>.
fn open_cluster(dir: &Path) -> anyhow::Result<Cluster> {
    let bin = cluster::pg_bin_dir()?;
    let user = cluster::server_os_user()?;
    match Cluster::new(bin.clone(), dir.join("cluster"), 0, user.clone()) {
        Ok(c) => Ok(c),
        Err(e) if user.is_some() => {
            let alt = PathBuf::from("/var/lib/pgstack").join(format!("{:016x}", fnv1a(dir.as_os_str().as_encoded_bytes())));
            println!("note: {e:#}; keeping the cluster in {} instead", alt.display());
            std::fs::create_dir_all("/var/lib/pgstack")?;
            Cluster::new(bin, alt, 0, user)
        }
        Err(e) => Err(e),
    }
}

/// Gateway settings: the environment / config file, with the dev cluster's URL and
/// the dev project's keys in place of DATABASE_URL, JWT_SECRET and the API keys.
fn dev_config(opts: &DevOptions, s: &DevSecrets, database_url: &str) -> anyhow::Result<Config> {
    let src = Source::from_env(opts.config_file.as_deref())?
        .with_defaults([("DATABASE_URL", database_url), ("JWT_SECRET", s.jwt_secret.expose())].into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect());
    let mut config = Config::load(&src)?;
    config.database_url = database_url.to_owned();
    config.jwt_secret = s.jwt_secret.clone();
    config.anon_key = Some(s.anon_key.clone());
    config.service_role_key = Some(s.service_role_key.clone());
    // Without SMTP, e-mails (with their links) go to the log instead of failing.
    config.mailer_log_only = config.smtp.is_none();
    Ok(config)
}

fn print_banner(c: &Config, s: &DevSecrets, db_url: &str, su_url: &str, dir: &Path, cluster: &Cluster) {
    println!();
    println!("pgstack dev is up");
    println!("  API URL:          http://{}", c.listen);
    println!("  anon key:         {}", s.anon_key.expose());
    println!("  service_role key: {}", s.service_role_key.expose());
    println!("  JWT secret:       {}", s.jwt_secret.expose());
    println!("  Database URL:     {db_url}");
    println!("  Superuser URL:    {su_url}");
    println!("  State:            {} (keys in {})", dir.display(), s.path().display());
    println!("  PostgreSQL data:  {}", cluster.pgdata().display());
    println!("Press Ctrl-C to stop.");
    println!();
}

/// FNV-1a, for a stable folder name per project path.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_folder_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_state_dir(dir.path()).unwrap();
        let err = lock_state_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&format!("process {}", std::process::id())), "{err}");
        drop(first);
        lock_state_dir(dir.path()).unwrap();
    }
}
