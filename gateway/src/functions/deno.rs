//! The Deno worker: one long-lived `deno run` process (started on first use, restarted
//! after it dies or hangs) that loads function modules from a private folder and
//! answers Request → Response on loopback. DENO_PATH names the binary (else `deno` on
//! PATH); without one, invocations answer 503.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

const RUNNER: &str = include_str!("runner.ts");

/// The only variables of the gateway's environment the worker gets: what Deno needs
/// to run (binary search path, home and cache folders, locale, time zone, CA
/// certificates, outgoing proxies). Never the gateway's secrets (JWT_SECRET,
/// DATABASE_URL, API keys, SMTP password, ...): a function sees these plus its own
/// `pgr.functions.env`.
const PASSED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "TMPDIR",
    "LANG",
    "LC_ALL",
    "TZ",
    "DENO_DIR",
    "XDG_CACHE_HOME",
    "DENO_CERT",
    "DENO_TLS_CA_STORE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// The worker's environment: PASSED_ENV entries present in `env`.
fn worker_env(env: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    env.filter(|(k, _)| k.to_str().is_some_and(|k| PASSED_ENV.contains(&k))).collect()
}

/// Why the runtime cannot take an invocation.
#[derive(Debug)]
pub enum RuntimeError {
    /// No Deno binary configured or found (503).
    NotConfigured,
    /// The process could not start or died (502).
    Down(String),
}

struct Running {
    port: u16,
    child: Child,
    /// The worker's stdin, never written: when the gateway dies (even by SIGKILL) the
    /// pipe closes and the worker exits instead of lingering as an orphan.
    _lifeline: tokio::process::ChildStdin,
}

/// The worker process and its module folder.
pub struct DenoWorker {
    deno: Option<PathBuf>,
    dir: tempfile::TempDir,
    memory_mb: u64,
    running: Mutex<Option<Running>>,
}

impl DenoWorker {
    /// A worker using `deno` (DENO_PATH, else PATH); nothing starts yet.
    pub fn new(deno_path: Option<String>, memory_mb: u64) -> std::io::Result<DenoWorker> {
        let deno = deno_path.map(PathBuf::from).or_else(|| std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|p| p.join("deno")).find(|p| p.is_file())));
        let dir = tempfile::Builder::new().prefix("pgstack-functions-").tempdir()?;
        std::fs::write(dir.path().join("_runner.ts"), RUNNER)?;
        Ok(DenoWorker { deno, dir, memory_mb, running: Mutex::new(None) })
    }

    /// True when a Deno binary is configured.
    pub fn configured(&self) -> bool {
        self.deno.as_ref().is_some_and(|p| p.is_file())
    }

    /// Writes a function's module (once per version).
    pub fn ensure_module(&self, name: &str, version: &str, source: &str) -> std::io::Result<()> {
        let path = self.dir.path().join(format!("{name}-{version}.ts"));
        if !path.exists() {
            let tmp = self.dir.path().join(format!(".{name}-{version}.tmp"));
            std::fs::write(&tmp, source)?;
            std::fs::rename(tmp, path)?;
        }
        Ok(())
    }

    /// The port of a live worker, starting one if needed.
    pub async fn port(&self) -> Result<u16, RuntimeError> {
        let deno = self.deno.clone().filter(|p| p.is_file()).ok_or(RuntimeError::NotConfigured)?;
        let mut running = self.running.lock().await;
        if let Some(r) = running.as_mut() {
            if matches!(r.child.try_wait(), Ok(None)) {
                return Ok(r.port);
            }
            tracing::warn!("the Deno worker exited; restarting it");
        }
        let dir = self.dir.path();
        let mut child = Command::new(deno)
            .arg("run")
            .arg("--quiet")
            .arg("--no-prompt")
            .arg("--allow-net")
            .arg("--allow-env")
            .arg(format!("--allow-read={}", dir.display()))
            .arg(format!("--v8-flags=--max-old-space-size={}", self.memory_mb))
            .arg(dir.join("_runner.ts"))
            .arg(dir)
            .env_clear()
            .envs(worker_env(std::env::vars_os()))
            .env("DENO_NO_UPDATE_CHECK", "1")
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| RuntimeError::Down(format!("cannot start Deno: {e}")))?;
        let lifeline = child.stdin.take().expect("piped stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        let port = match ready {
            Ok(Ok(Some(l))) => l.strip_prefix("ready ").and_then(|p| p.trim().parse().ok()),
            _ => None,
        }
        .ok_or_else(|| RuntimeError::Down("the Deno worker did not start".into()))?;
        // Keep draining stdout so console.log in functions never blocks the worker.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(target: "pgstack::functions", "{line}");
            }
        });
        *running = Some(Running { port, child, _lifeline: lifeline });
        Ok(port)
    }

    /// Kills the worker (after a timeout or a broken connection); the next call restarts it.
    pub async fn restart(&self) {
        if let Some(mut r) = self.running.lock().await.take() {
            let _ = r.child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_gets_no_secrets() {
        let env =
            [("PATH", "/usr/bin"), ("HOME", "/home/x"), ("JWT_SECRET", "s"), ("DATABASE_URL", "postgres://"), ("SERVICE_ROLE_KEY", "k"), ("SMTP_PASS", "p"), ("DENO_DIR", "/c")]
                .map(|(k, v)| (k.into(), v.into()));
        let kept: Vec<String> = worker_env(env.into_iter()).into_iter().map(|(k, _)| k.into_string().unwrap()).collect();
        assert_eq!(kept, ["PATH", "HOME", "DENO_DIR"]);
    }
}
