//! SSH tunnels (Rowsel's `connection.tunnel`): one SSH connection per pool to the
//! bastion, authenticated with a private key, and one `direct-tcpip` channel per
//! PostgreSQL connection (and per cancel request) to the database as the bastion
//! sees it. russh does the SSH.
//!
//! Host keys: `strict` accepts only the key given in `host_key` (a `SHA256:…`
//! fingerprint or an OpenSSH public key line) or one remembered before;
//! `accept_new` (default) remembers a host's key on first use and refuses a changed
//! one. Remembered keys live in the gateway's database (`workbench.known_hosts`), so
//! every gateway and every restart agree. The bastion's address is checked by the
//! SSRF policy like any target.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use serde::Deserialize;
use serde_json::Value;

use super::error::WbError;
use crate::error::code::workbench as code;

/// Time to reach the bastion and authenticate.
const SSH_TIMEOUT: Duration = Duration::from_secs(10);

/// How the bastion's host key is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyCheck {
    /// Remember on first use, refuse a changed key.
    AcceptNew,
    /// Only a key given or remembered before.
    Strict,
}

/// A tunnel as the request gives it.
#[derive(Clone)]
pub struct TunnelSpec {
    /// Bastion host.
    pub host: String,
    /// Bastion port.
    pub port: u16,
    /// SSH user.
    pub username: String,
    private_key: String,
    passphrase: Option<String>,
    /// Host key policy.
    pub check: HostKeyCheck,
    host_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTunnel {
    #[serde(rename = "type")]
    kind: Option<String>,
    host: String,
    port: Option<u16>,
    username: String,
    auth: RawAuth,
    host_key_check: Option<String>,
    host_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    method: String,
    private_key: String,
    passphrase: Option<String>,
}

fn failed(message: impl Into<String>) -> WbError {
    WbError::new(StatusCode::BAD_GATEWAY, code::SSH_TUNNEL_FAILED, message).hint("Check the bastion's address, the user and key, and its host key.")
}

impl TunnelSpec {
    /// Parses Rowsel's `tunnel` object.
    pub fn parse(v: &Value) -> Result<TunnelSpec, WbError> {
        let bad = |m: String| WbError::new(StatusCode::BAD_REQUEST, code::SSH_TUNNEL_FAILED, m);
        let raw: RawTunnel = serde_json::from_value(v.clone()).map_err(|e| bad(format!("invalid tunnel: {e}")))?;
        if raw.kind.as_deref().is_some_and(|k| k != "ssh") {
            return Err(bad("tunnel.type must be \"ssh\"".into()));
        }
        if raw.auth.method != "private_key" {
            return Err(bad(format!("tunnel.auth.method {:?} is not supported; use \"private_key\"", raw.auth.method)));
        }
        let check = match raw.host_key_check.as_deref() {
            None | Some("accept_new") => HostKeyCheck::AcceptNew,
            Some("strict") => HostKeyCheck::Strict,
            Some(other) => return Err(bad(format!("tunnel.host_key_check {other:?} is not accept_new or strict"))),
        };
        if raw.host.is_empty() || raw.host.len() > 253 || raw.username.is_empty() || raw.username.len() > 128 || raw.auth.private_key.len() > 16 * 1024 {
            return Err(bad("tunnel host, username or private key out of bounds".into()));
        }
        Ok(TunnelSpec {
            host: raw.host,
            port: raw.port.unwrap_or(22),
            username: raw.username,
            private_key: raw.auth.private_key,
            passphrase: raw.auth.passphrase,
            check,
            host_key: raw.host_key,
        })
    }

    /// The fingerprint `host_key` names, if any.
    fn pinned(&self) -> Result<Option<String>, WbError> {
        let Some(k) = self.host_key.as_deref().map(str::trim).filter(|k| !k.is_empty()) else { return Ok(None) };
        if k.starts_with("SHA256:") {
            return Ok(Some(k.to_owned()));
        }
        let key = PublicKey::from_openssh(k).map_err(|e| WbError::new(StatusCode::BAD_REQUEST, code::SSH_TUNNEL_FAILED, format!("tunnel.host_key: {e}")))?;
        Ok(Some(key.fingerprint(HashAlg::Sha256).to_string()))
    }
}

/// Where remembered host keys are kept.
pub trait KnownHosts: Send + Sync {
    /// The fingerprint remembered for `host:port`.
    fn get(&self, host: &str, port: u16) -> futures_util::future::BoxFuture<'_, Result<Option<String>, String>>;
    /// Remembers `fingerprint` unless one is already there; returns the one kept.
    fn remember(&self, host: &str, port: u16, fingerprint: &str) -> futures_util::future::BoxFuture<'_, Result<String, String>>;
}

struct Checker {
    expected: Option<String>,
    strict: bool,
    seen: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let fp = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.fingerprint(HashAlg::Sha256).to_string(),
            PublicKeyOrCertificate::Certificate(c) => c.public_key().fingerprint(HashAlg::Sha256).to_string(),
        };
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(fp.clone());
        Ok(match &self.expected {
            Some(e) => *e == fp,
            None => !self.strict,
        })
    }
}

/// An authenticated SSH connection to a bastion.
pub struct SshLink {
    handle: tokio::sync::Mutex<client::Handle<Checker>>,
}

impl SshLink {
    /// Connects to `addr` (already checked by the address policy), checks the host
    /// key and authenticates.
    pub async fn open(spec: &TunnelSpec, addr: SocketAddr, known: &dyn KnownHosts) -> Result<Arc<SshLink>, WbError> {
        let key = russh::keys::decode_secret_key(&spec.private_key, spec.passphrase.as_deref())
            .map_err(|e| WbError::new(StatusCode::BAD_REQUEST, code::SSH_TUNNEL_FAILED, format!("tunnel private key: {e}")))?;
        let remembered = known.get(&spec.host, spec.port).await.map_err(|e| failed(format!("known hosts: {e}")))?;
        let expected = spec.pinned()?.or(remembered.clone());
        let seen = Arc::new(Mutex::new(None));
        let checker = Checker { expected: expected.clone(), strict: spec.check == HostKeyCheck::Strict, seen: seen.clone() };
        let config = Arc::new(client::Config { inactivity_timeout: None, keepalive_interval: Some(Duration::from_secs(30)), nodelay: true, ..Default::default() });
        let connect = async {
            let mut handle = client::connect(config, addr, checker).await?;
            let hash = handle.best_supported_rsa_hash().await?.flatten();
            let auth = handle.authenticate_publickey(spec.username.clone(), PrivateKeyWithHashAlg::new(Arc::new(key), hash)).await?;
            Ok::<_, russh::Error>((handle, auth.success()))
        };
        let result = tokio::time::timeout(SSH_TIMEOUT, connect).await;
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (handle, authenticated) = match result {
            Err(_) => return Err(failed(format!("the SSH connection to {}:{} timed out", spec.host, spec.port))),
            Ok(Err(e)) => {
                return Err(match (&expected, &seen) {
                    (Some(want), Some(got)) if want != got => failed(format!("the host key of {}:{} changed: expected {want}, got {got}", spec.host, spec.port))
                        .hint("If the bastion's key was rotated on purpose, give the new one in tunnel.host_key."),
                    (None, Some(got)) if spec.check == HostKeyCheck::Strict => {
                        failed(format!("the host key of {}:{} ({got}) is not known and host_key_check is strict", spec.host, spec.port))
                            .hint("Give the key in tunnel.host_key, or use accept_new once.")
                    }
                    _ => failed(format!("SSH to {}:{} failed: {e}", spec.host, spec.port)),
                })
            }
            Ok(Ok(r)) => r,
        };
        if !authenticated {
            return Err(failed(format!("the bastion refused the key of {}", spec.username)));
        }
        if remembered.is_none() && spec.check == HostKeyCheck::AcceptNew {
            if let Some(fp) = &seen {
                let kept = known.remember(&spec.host, spec.port, fp).await.map_err(|e| failed(format!("known hosts: {e}")))?;
                if kept != *fp {
                    return Err(failed(format!("the host key of {}:{} changed: expected {kept}, got {fp}", spec.host, spec.port)));
                }
            }
        }
        Ok(Arc::new(SshLink { handle: tokio::sync::Mutex::new(handle) }))
    }

    /// A byte stream to `host:port` as the bastion sees it.
    pub async fn stream(&self, host: &str, port: u16) -> Result<russh::ChannelStream<client::Msg>, String> {
        let handle = self.handle.lock().await;
        if handle.is_closed() {
            return Err("the SSH connection to the bastion is closed".into());
        }
        let channel = tokio::time::timeout(SSH_TIMEOUT, handle.channel_open_direct_tcpip(host.to_owned(), u32::from(port), "127.0.0.1".to_owned(), 0))
            .await
            .map_err(|_| "opening the tunnel channel timed out".to_owned())?
            .map_err(|e| format!("the bastion refused to forward to {host}:{port}: {e}"))?;
        Ok(channel.into_stream())
    }

    /// Whether the SSH connection is gone.
    pub async fn is_closed(&self) -> bool {
        self.handle.lock().await.is_closed()
    }
}

/// deadpool's connector through a tunnel.
pub struct TunnelConnect {
    /// The SSH connection.
    pub link: Arc<SshLink>,
    /// The database as the bastion sees it.
    pub db_host: String,
    /// Its port.
    pub db_port: u16,
    /// TLS to the database, inside the tunnel.
    pub tls: postgres_native_tls::MakeTlsConnector,
}

/// A stream that fails at once with `message`: the only way to hand a tunnel error
/// to deadpool, whose connector must return a `tokio_postgres::Error`.
struct Failing(String);

impl tokio::io::AsyncRead for Failing {
    fn poll_read(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>, _: &mut tokio::io::ReadBuf<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Err(std::io::Error::other(format!("ssh tunnel: {}", self.0))))
    }
}

impl tokio::io::AsyncWrite for Failing {
    fn poll_write(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>, _: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Err(std::io::Error::other(format!("ssh tunnel: {}", self.0))))
    }
    fn poll_flush(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// A `tokio_postgres::Error` carrying `message` (through a stream that fails).
async fn tunnel_error(pg: &tokio_postgres::Config, message: String) -> tokio_postgres::Error {
    match pg.connect_raw(Failing(message), tokio_postgres::NoTls).await {
        Err(e) => e,
        // Cannot happen: nothing can be read from the stream. Any error will do.
        Ok(_) => match "port=not-a-port".parse::<tokio_postgres::Config>() {
            Err(e) => e,
            Ok(_) => unreachable!("an invalid port parses"),
        },
    }
}

impl deadpool_postgres::Connect for TunnelConnect {
    fn connect(&self, pg: &tokio_postgres::Config) -> futures_util::future::BoxFuture<'_, Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>> {
        let pg = pg.clone();
        Box::pin(async move {
            use tokio_postgres::tls::MakeTlsConnect;
            let stream = match self.link.stream(&self.db_host, self.db_port).await {
                Ok(s) => s,
                Err(message) => return Err(tunnel_error(&pg, message).await),
            };
            let mut tls = self.tls.clone();
            let connector = match <postgres_native_tls::MakeTlsConnector as MakeTlsConnect<russh::ChannelStream<client::Msg>>>::make_tls_connect(&mut tls, &self.db_host) {
                Ok(c) => c,
                Err(e) => return Err(tunnel_error(&pg, format!("TLS: {e}")).await),
            };
            let (client, conn) = pg.connect_raw(stream, connector).await?;
            Ok((
                client,
                tokio::spawn(async move {
                    let _ = conn.await;
                }),
            ))
        })
    }
}
