//! Harness for the end-to-end tests: real clusters and the real `pgstack` binary.
//!
//! - [`TestCluster`]: a throw-away PostgreSQL 15 cluster (initdb in a temp folder,
//!   a free port, stopped and removed on drop) with the extension created.
//! - [`Gateway`]: the `pgstack` binary as a child process, its logs captured.
//!
//! The binary must be built first (`cargo build`); scripts/test.sh does it.
#![forbid(unsafe_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pgstack_gateway::dev::cluster::{self, Cluster};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_postgres::{Client, NoTls};

/// Password of the test clusters' superuser and authenticator roles.
pub const PASSWORD: &str = "pgstack-test-password";

/// A JWT secret for tests (strong enough for the gateway's checks).
pub const JWT_SECRET: &str = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz";

/// A private cluster, stopped and deleted on drop.
pub struct TestCluster {
    /// The cluster.
    pub cluster: Cluster,
    _dir: tempfile::TempDir,
}

impl TestCluster {
    /// initdb + start, on a free port, without the extension.
    pub fn start_bare() -> anyhow::Result<TestCluster> {
        let dir = tempfile::Builder::new().prefix("pgstack-test-").tempdir()?;
        // The Postgres OS user must traverse the temp folder to reach its cluster.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let c = Cluster::new(cluster::pg_bin_dir()?, dir.path().join("cluster"), cluster::free_port(None)?, cluster::server_os_user()?)?;
        c.init(PASSWORD)?;
        c.start()?;
        Ok(TestCluster { cluster: c, _dir: dir })
    }

    /// A started cluster with `CREATE EXTENSION pgstack` done and authenticator's
    /// password set.
    pub async fn start() -> anyhow::Result<TestCluster> {
        let tc = Self::start_bare()?;
        let su = tc.superuser().await?;
        pgstack_gateway::install::ensure_extension(&su).await?;
        pgstack_gateway::install::set_authenticator_password(&su, PASSWORD).await?;
        Ok(tc)
    }

    /// Like [`TestCluster::start`], with pg_stat_statements loaded: tests count the
    /// statements a request runs.
    pub async fn start_with_statement_stats() -> anyhow::Result<TestCluster> {
        let tc = Self::start_bare()?;
        tc.superuser().await?.batch_execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'").await?;
        tc.cluster.stop()?;
        tc.cluster.start()?;
        let su = tc.superuser().await?;
        su.batch_execute("CREATE EXTENSION pg_stat_statements").await?;
        pgstack_gateway::install::ensure_extension(&su).await?;
        pgstack_gateway::install::set_authenticator_password(&su, PASSWORD).await?;
        Ok(tc)
    }

    /// URL of the superuser.
    pub fn superuser_url(&self) -> String {
        self.cluster.url(cluster::SUPERUSER, PASSWORD, "postgres")
    }

    /// URL of the gateway's login role.
    pub fn authenticator_url(&self) -> String {
        self.cluster.url("authenticator", PASSWORD, "postgres")
    }

    /// A superuser connection.
    pub async fn superuser(&self) -> anyhow::Result<Client> {
        connect(&self.superuser_url()).await
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let _ = self.cluster.stop();
    }
}

/// Connects and spawns the connection task.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Path of the `pgstack` binary: $PGSTACK_BIN, else the workspace's debug build.
pub fn pgstack_bin() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("PGSTACK_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
            target.join("debug/pgstack")
        }
    };
    if !path.exists() {
        bail!("{} does not exist: run `cargo build -p pgstack-gateway` first", path.display());
    }
    Ok(path)
}

/// A running `pgstack` process with its output captured.
pub struct Gateway {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Gateway {
    /// `pgstack serve` against `cluster`, on a free port, with `extra` env on top.
    pub async fn serve(cluster: &TestCluster, extra: &[(&str, &str)]) -> anyhow::Result<Gateway> {
        let mut env = vec![
            ("DATABASE_URL", cluster.authenticator_url()),
            ("JWT_SECRET", JWT_SECRET.to_owned()),
            ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
            // Every test client shares 127.0.0.1; rate limits have their own test.
            ("AUTH_RATE_LIMIT", "100000/m".to_owned()),
            ("ANONYMOUS_RATE_LIMIT", "100000/m".to_owned()),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        Self::spawn(&["serve"], &env).await
    }

    /// Runs `pgstack ARGS` with `env` and waits for its `listening on` line.
    pub async fn spawn(args: &[&str], env: &[(&str, String)]) -> anyhow::Result<Gateway> {
        let mut cmd = Command::new(pgstack_bin()?);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        for k in ["DATABASE_URL", "JWT_SECRET", "ANON_KEY", "SERVICE_ROLE_KEY", "LISTEN_ADDR", "HOST", "PORT", "PGSTACK_DIR", "PGSTACK_CONFIG"] {
            cmd.env_remove(k);
        }
        cmd.env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().context("spawning pgstack")?;
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        collect(child.stdout.take().unwrap(), stdout.clone(), Some(tx));
        collect(child.stderr.take().unwrap(), stderr.clone(), None);

        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some(line)) => {
                    if let Some(addr) = line.strip_prefix("listening on ") {
                        let base = addr.trim().to_owned();
                        return Ok(Gateway { child, base, stdout, stderr });
                    }
                }
                Ok(None) | Err(_) => {
                    let status = child.try_wait()?;
                    bail!("pgstack did not start (status {status:?})\nstdout:\n{}\nstderr:\n{}", stdout.lock().unwrap(), stderr.lock().unwrap());
                }
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Everything the process printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Everything the process logged on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        if let Some(pid) = self.child.id() {
            Command::new("kill").args(["-TERM", &pid.to_string()]).status().await?;
        }
        Ok(tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await??)
    }
}

fn collect(stream: impl tokio::io::AsyncRead + Unpin + Send + 'static, into: Arc<Mutex<String>>, lines: Option<tokio::sync::mpsc::UnboundedSender<String>>) {
    tokio::spawn(async move {
        let mut r = BufReader::new(stream).lines();
        while let Ok(Some(line)) = r.next_line().await {
            {
                let mut s = into.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
            if let Some(tx) = &lines {
                let _ = tx.send(line);
            }
        }
    });
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// A real SMTP server on loopback (aiosmtpd, tests/smtp/sink.py) that keeps every
/// message as JSON, stopped on drop.
pub struct SmtpSink {
    child: Child,
    dir: tempfile::TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl SmtpSink {
    /// Starts the server and waits until it accepts connections.
    pub async fn start() -> anyhow::Result<SmtpSink> {
        let dir = tempfile::tempdir()?;
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("smtp/sink.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the SMTP sink (python3 with aiosmtpd)")?;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await??.unwrap_or_default();
        let port = line.strip_prefix("ready ").and_then(|p| p.trim().parse().ok()).with_context(|| format!("SMTP sink said {line:?}"))?;
        Ok(SmtpSink { child, dir, port })
    }

    /// Gateway settings that point at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SMTP_HOST", "127.0.0.1".to_owned()),
            ("SMTP_PORT", self.port.to_string()),
            ("SMTP_TLS", "none".to_owned()),
            ("SMTP_SENDER", "pgstack <auth@pgstack.test>".to_owned()),
        ]
    }

    /// The folder holding the received messages (`<n>.json`).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Every message received so far for `to`, oldest first.
    pub fn messages_to(&self, to: &str) -> Vec<serde_json::Value> {
        let mut found: Vec<(u64, serde_json::Value)> = std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let n: u64 = name.strip_suffix(".json")?.parse().ok()?;
                let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(e.path()).ok()?).ok()?;
                v["to"].as_array()?.iter().any(|t| t.as_str() == Some(to)).then_some((n, v))
            })
            .collect();
        found.sort_by_key(|(n, _)| *n);
        found.into_iter().map(|(_, v)| v).collect()
    }

    /// Waits until `to` has received `count` messages and returns the last one.
    pub async fn wait_for(&self, to: &str, count: usize) -> anyhow::Result<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let m = self.messages_to(to);
            if m.len() >= count {
                return Ok(m[count - 1].clone());
            }
            if Instant::now() > deadline {
                bail!("{to} received {} messages, expected {count}", m.len());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The first http(s) link in an e-mail's text part.
pub fn first_link(message: &serde_json::Value) -> String {
    let text = message["text"].as_str().unwrap_or_default();
    let start = text.find("http").expect("a link in the e-mail");
    text[start..].split_whitespace().next().unwrap_or_default().to_owned()
}

/// A real OpenID Connect provider on loopback (npm oidc-provider,
/// tests/js/oidc_provider.mjs), killed on drop.
pub struct OidcProvider {
    _child: Child,
    /// Its issuer, `http://127.0.0.1:<port>`.
    pub issuer: String,
}

impl OidcProvider {
    /// Starts the provider for client `pgstack-test` / `provider-secret-1` with one
    /// account (`email`). A start that prints nothing for 30 s is killed and tried
    /// again on another port (three tries): under a fully loaded CI machine one
    /// start was seen to stall, and its stderr is kept for the failure message.
    pub async fn start(redirect_uri: &str, email: &str) -> anyhow::Result<OidcProvider> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js/oidc_provider.mjs");
        let mut failures = String::new();
        for attempt in 1..=3 {
            let port = cluster::free_port(None)?;
            let mut child = Command::new("node")
                .arg(&script)
                .args(["--port", &port.to_string(), "--client-id", "pgstack-test", "--client-secret", "provider-secret-1"])
                .args(["--redirect-uri", redirect_uri, "--email", email])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .context("node and tests/js/node_modules (npm ci in tests/js)")?;
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let mut errors = BufReader::new(child.stderr.take().unwrap()).lines();
            let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
            if let Ok(Ok(Some(line))) = &first {
                if let Some(issuer) = line.strip_prefix("READY ") {
                    let issuer = issuer.trim().to_owned();
                    // Keep reading both pipes: a closed pipe would kill the provider.
                    tokio::spawn(async move { while let Ok(Some(_)) = errors.next_line().await {} });
                    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                    return Ok(OidcProvider { _child: child, issuer });
                }
            }
            let _ = child.start_kill();
            failures.push_str(&format!("try {attempt} (port {port}): {first:?}; stderr:\n"));
            while let Ok(Ok(Some(l))) = tokio::time::timeout(Duration::from_millis(300), errors.next_line()).await {
                failures.push_str(&l);
                failures.push('\n');
            }
        }
        bail!("the OpenID provider did not start:\n{failures}")
    }
}

/// Runs one `node --test` file of tests/js (one test at a time, spec reporter) with
/// `env`, and panics with its output and the gateway's log when it fails.
pub async fn node_tests(file: &str, needs: &str, env: &[(&str, String)], gw: &Gateway) {
    let js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js");
    assert!(js.join("node_modules").join(needs).exists(), "run scripts/install-deps.sh (npm ci in tests/js)");
    let mut cmd = Command::new("node");
    cmd.args(["--test", "--test-reporter=spec", "--test-concurrency=1", file]).current_dir(&js).env("PGSTACK_URL", &gw.base);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "{file} failed:\n{stdout}\n{}\ngateway log:\n{}", String::from_utf8_lossy(&out.stderr), gw.stderr());
}
