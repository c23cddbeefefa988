//! A private PostgreSQL 15 cluster driven with initdb / pg_ctl.
//!
//! Used by `pgstack dev` and by the end-to-end tests. Postgres refuses to run as
//! root, so when we are root every server command runs as an unprivileged OS user
//! (`postgres` when it exists, else a `pgstack` system user created on demand)
//! through `runuser`, and the cluster folder belongs to that user. The server
//! listens on 127.0.0.1 and on a Unix socket inside the cluster folder (mode 0700:
//! only its OS user and root reach it), with scram-sha-256 auth on both.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context};

/// The superuser created by initdb.
pub const SUPERUSER: &str = "postgres";

/// A cluster folder (holding `pgdata/` and `postgres.log`) and how to run it.
#[derive(Debug, Clone)]
pub struct Cluster {
    bin_dir: PathBuf,
    dir: PathBuf,
    port: u16,
    os_user: Option<String>,
}

/// True when this process runs as root.
pub fn is_root() -> bool {
    fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// The folder with initdb / pg_ctl: $PG_BINDIR, else PG_CONFIG's bindir, else
/// Debian's PostgreSQL 15, else `pg_config` on PATH.
pub fn pg_bin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(d) = std::env::var("PG_BINDIR") {
        return Ok(PathBuf::from(d));
    }
    let debian = Path::new("/usr/lib/postgresql/15/bin");
    let pg_config =
        std::env::var("PG_CONFIG").ok().map(PathBuf::from).unwrap_or_else(|| if debian.join("pg_config").exists() { debian.join("pg_config") } else { PathBuf::from("pg_config") });
    if let Ok(out) = Command::new(&pg_config).arg("--bindir").output() {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if dir.join("initdb").exists() {
                return Ok(dir);
            }
        }
    }
    if debian.join("initdb").exists() {
        return Ok(debian.to_path_buf());
    }
    bail!("PostgreSQL 15 server binaries not found (initdb). Install the postgresql-15 package or set PG_BINDIR")
}

/// The OS user that runs Postgres when we are root; `None` when we are not root.
/// Creates the `pgstack` system user when neither it nor `postgres` exists.
pub fn server_os_user() -> anyhow::Result<Option<String>> {
    if !is_root() {
        return Ok(None);
    }
    if let Ok(u) = std::env::var("PGSTACK_PG_OS_USER") {
        return Ok(Some(u));
    }
    for u in ["postgres", "pgstack"] {
        if uid_gid(u).is_ok() {
            return Ok(Some(u.to_owned()));
        }
    }
    let st = Command::new("useradd").args(["--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", "pgstack"]).status().context("running useradd")?;
    if !st.success() {
        bail!("cannot create the unprivileged `pgstack` user that runs PostgreSQL (useradd failed)");
    }
    Ok(Some("pgstack".into()))
}

fn uid_gid(user: &str) -> anyhow::Result<(u32, u32)> {
    let id = |flag: &str| -> anyhow::Result<u32> {
        let out = Command::new("id").args([flag, user]).output()?;
        if !out.status.success() {
            bail!("no such user {user}");
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    };
    Ok((id("-u")?, id("-g")?))
}

/// A free TCP port on 127.0.0.1, preferring `wanted`. Picked below the kernel's
/// ephemeral range (32768+): a port taken from that range can be handed to some
/// outgoing connection as its local port before the server binds it (or while it is
/// restarted), and the server then fails with "address already in use".
pub fn free_port(wanted: Option<u16>) -> anyhow::Result<u16> {
    use rand::Rng;
    if let Some(p) = wanted {
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return Ok(p);
        }
    }
    let mut rng = rand::thread_rng();
    for _ in 0..100 {
        let p = rng.gen_range(15_000..32_000);
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return Ok(p);
        }
    }
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

impl Cluster {
    /// A cluster in `dir` (created if needed and handed to `os_user`).
    pub fn new(bin_dir: PathBuf, dir: PathBuf, port: u16, os_user: Option<String>) -> anyhow::Result<Cluster> {
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let c = Cluster { bin_dir, dir, port, os_user };
        if let Some(user) = &c.os_user {
            let (uid, gid) = uid_gid(user)?;
            std::os::unix::fs::chown(&c.dir, Some(uid), Some(gid))?;
            fs::set_permissions(&c.dir, fs::Permissions::from_mode(0o700))?;
            let st = c.run_as("test", |cmd| {
                cmd.args(["-w".as_ref(), c.dir.as_os_str()]);
            })?;
            if !st.status.success() {
                bail!(
                    "the OS user `{user}` that runs PostgreSQL cannot reach {} (a parent folder is not \
                     traversable); choose a data folder it can reach with PGSTACK_DIR",
                    c.dir.display()
                );
            }
        }
        Ok(c)
    }

    /// The folder holding `pgdata/` and the server log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The data directory.
    pub fn pgdata(&self) -> PathBuf {
        self.dir.join("pgdata")
    }
    /// The server log.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }
    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Uses another port for the next start.
    pub fn set_port(&mut self, port: u16) {
        self.port = port;
    }
    /// A connection URL on 127.0.0.1 for `user`.
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/{db}", self.port)
    }

    /// A connection URL over the cluster's Unix socket, when the running server has
    /// one (a server started by an older pgstack may listen on TCP only). Loopback
    /// TCP costs each request two trips through the kernel's TCP/IP stack.
    pub fn socket_url(&self, user: &str, password: &str, db: &str) -> Option<String> {
        let pid = fs::read_to_string(self.pgdata().join("postmaster.pid")).ok()?;
        let dir = pid.lines().nth(4)?.trim();
        if dir.is_empty() || !Path::new(dir).join(format!(".s.PGSQL.{}", self.port)).exists() {
            return None;
        }
        let host = percent_encoding::utf8_percent_encode(dir, percent_encoding::NON_ALPHANUMERIC);
        Some(format!("postgres://{user}:{password}@{host}:{}/{db}", self.port))
    }

    /// The Unix socket directory the server is started with: the cluster folder,
    /// unless the socket's path would pass the kernel's 107-byte limit.
    fn socket_dir(&self) -> Option<String> {
        let dir = self.dir.canonicalize().ok()?.to_str()?.to_owned();
        let fits = dir.len() + format!("/.s.PGSQL.{}", self.port).len() < 104;
        (fits && !dir.contains(['\'', ' ', '\\', ','])).then_some(dir)
    }

    /// True once initdb has run here.
    pub fn is_initialized(&self) -> bool {
        self.pgdata().join("PG_VERSION").exists()
    }

    /// Runs initdb with `superuser_password` for the `postgres` superuser.
    pub fn init(&self, superuser_password: &str) -> anyhow::Result<()> {
        let pwfile = self.dir.join(".pwfile");
        fs::write(&pwfile, superuser_password)?;
        fs::set_permissions(&pwfile, fs::Permissions::from_mode(0o600))?;
        if let Some(user) = &self.os_user {
            let (uid, gid) = uid_gid(user)?;
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))?;
        }
        let initdb = self.bin_dir.join("initdb");
        let pgdata = self.pgdata();
        let out = self.run_as(&initdb, |cmd| {
            cmd.arg("-D").arg(&pgdata).args(["-U", SUPERUSER, "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-instructions"]);
            cmd.arg(format!("--pwfile={}", pwfile.display()));
        });
        let _ = fs::remove_file(&pwfile);
        check("initdb", out?)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) -> anyhow::Result<()> {
        let sockets = self.socket_dir().unwrap_or_default();
        let opts = format!("-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{sockets}' -c unix_socket_permissions=0700 -c max_connections=200", self.port);
        let out = self.pg_ctl(|cmd| {
            cmd.arg("-l").arg(self.log_file()).args(["-w", "-t", "60", "-o", &opts, "start"]);
        })?;
        check("pg_ctl start", out).with_context(|| format!("see {}", self.log_file().display()))
    }

    /// Stops the server (fast mode: rolls back open transactions, then exits cleanly).
    pub fn stop(&self) -> anyhow::Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        let out = self.pg_ctl(|cmd| {
            cmd.args(["-w", "-t", "60", "-m", "fast", "stop"]);
        })?;
        check("pg_ctl stop", out)
    }

    /// True while a server runs on this data directory.
    pub fn is_running(&self) -> bool {
        self.is_initialized()
            && self
                .pg_ctl(|cmd| {
                    cmd.arg("status");
                })
                .map(|o| o.status.success())
                .unwrap_or(false)
    }

    /// The port a running server listens on, read from postmaster.pid.
    pub fn running_port(&self) -> Option<u16> {
        let pid = fs::read_to_string(self.pgdata().join("postmaster.pid")).ok()?;
        pid.lines().nth(3)?.trim().parse().ok()
    }

    fn pg_ctl(&self, args: impl FnOnce(&mut Command)) -> anyhow::Result<Output> {
        let pgdata = self.pgdata();
        self.run_as(self.bin_dir.join("pg_ctl"), |cmd| {
            cmd.arg("-D").arg(&pgdata);
            args(cmd);
        })
    }

    /// Runs `prog` as the server's OS user, from the cluster folder.
    fn run_as(&self, prog: impl AsRef<std::ffi::OsStr>, args: impl FnOnce(&mut Command)) -> anyhow::Result<Output> {
        let mut cmd = match &self.os_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(prog.as_ref());
                c
            }
            None => Command::new(prog.as_ref()),
        };
        args(&mut cmd);
        cmd.current_dir(&self.dir).stdin(Stdio::null());
        cmd.output().with_context(|| format!("running {:?}", prog.as_ref()))
    }
}

fn check(what: &str, out: Output) -> anyhow::Result<()> {
    if out.status.success() {
        return Ok(());
    }
    bail!("{what} failed ({}): {}{}", out.status, String::from_utf8_lossy(&out.stderr).trim(), String::from_utf8_lossy(&out.stdout).trim())
}
