//! The accept loop: connections are admitted under caps (total and per client IP)
//! kept below the descriptor limit, every connection has a header-read deadline
//! (which is also its keep-alive idle limit), and shutdown drains in-flight requests.
//!
//! axum's own `serve` has no timer, so a client that opens a socket and sends half a
//! request line would hold it forever; here hyper's header-read timeout applies, and a
//! connection over a cap is answered 503 (JSON, `Retry-After`) and closed at once
//! instead of being left in the accept queue.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connection limits of one gateway.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open HTTP connections at once (WebSockets after their upgrade have their own cap).
    pub max_connections: usize,
    /// Open HTTP connections from one client IP.
    pub max_per_ip: usize,
    /// Time a client has to send a request's headers, and to start the next request
    /// on a kept-alive connection.
    pub header_read_timeout: Duration,
}

/// The soft limit of open descriptors, raised to the hard limit first (a server
/// should not run out of descriptors at the distribution's default of 1024).
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let hard = lim.maximum.unwrap_or(1 << 20).min(1 << 20);
    if lim.current.is_some_and(|c| c < hard) && setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: lim.maximum }).is_ok() {
        return hard;
    }
    lim.current.unwrap_or(hard)
}

/// The default connection cap for a descriptor limit: half of it (WebSockets,
/// database connections, files and the pools need the rest), at most 4096 — each
/// open connection costs ~25 KiB, so a full house of idle sockets stays near 100 MiB.
pub fn default_max_connections(fd_limit: u64) -> usize {
    ((fd_limit / 2) as usize).clamp(32, 4096)
}

/// Connections per client IP, released on drop.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

struct IpSlot {
    map: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot { map: self.clone(), ip })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut m = self.map.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// The answer to a connection over a cap: the request's head is read first (an
/// HTTP client takes an answer that comes before its request for a protocol error),
/// then a 503 is written and the socket closed after a short drain, so that the
/// close does not reset the answer away. At most [`MAX_REFUSING`] sockets are being
/// refused at once (each for at most a second); past that they are closed at once.
fn refuse(stream: TcpStream, why: &'static str, lingering: &Arc<Semaphore>) {
    let Ok(permit) = lingering.clone().try_acquire_owned() else { return };
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = stream;
        let body = format!(r#"{{"error":"{why}","message":"{why}","code":"too_many_connections"}}"#);
        let res =
            format!("HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}", body.len());
        let exchange = async {
            let mut head = Vec::new();
            let mut buf = [0u8; 2048];
            while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            if stream.write_all(res.as_bytes()).await.is_err() {
                return;
            }
            let _ = stream.shutdown().await;
            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), exchange).await;
        drop(permit);
    });
}

/// Refused sockets that may linger (half a second each) to deliver their 503.
const MAX_REFUSING: usize = 256;

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight
/// requests finish for at most `drain`.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, shutdown: impl Future<Output = ()> + Send + 'static, drain: Duration) {
    let total = Arc::new(Semaphore::new(limits.max_connections));
    let lingering = Arc::new(Semaphore::new(MAX_REFUSING));
    let per_ip = Arc::new(PerIp::default());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // HTTP/1.1 only: the Supabase clients speak it, and cleartext HTTP/2 (prior
    // knowledge) would bring a connection without a header deadline and with a
    // hundred streams behind each of the caps above. TLS and h2 belong to the proxy.
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    let mut accept_errors = 0u32;
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => { accept_errors = 0; x }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on the error.
                    accept_errors += 1;
                    if accept_errors == 1 || accept_errors.is_multiple_of(1000) {
                        tracing::warn!(error = %e, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(10 * accept_errors.min(50) as u64)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = total.clone().try_acquire_owned() else {
            refuse(stream, "too many connections", &lingering);
            continue;
        };
        let Some(slot) = per_ip.take(crate::http::rate_limit::client_key(peer.ip()), limits.max_per_ip) else {
            refuse(stream, "too many connections from this address", &lingering);
            continue;
        };
        let _ = stream.set_nodelay(true);
        serve_one(&builder, &graceful, app.clone(), stream, peer, permit, slot);
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(drain) => tracing::warn!("drain timeout reached; closing remaining connections"),
    }
}

fn serve_one(
    builder: &Arc<Builder<TokioExecutor>>,
    graceful: &hyper_util::server::graceful::GracefulShutdown,
    app: Router,
    stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    slot: IpSlot,
) {
    let svc = tower::ServiceExt::map_request(app, move |mut req: axum::http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req.map(axum::body::Body::new)
    });
    let svc = hyper_util::service::TowerToHyperService::new(svc);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).into_owned();
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        let _ = conn.await;
        drop((permit, slot));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_slots_are_counted_and_released() {
        let m = Arc::new(PerIp::default());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = m.take(ip, 2).unwrap();
        let _b = m.take(ip, 2).unwrap();
        assert!(m.take(ip, 2).is_none());
        assert!(m.take("127.0.0.2".parse().unwrap(), 2).is_some());
        drop(a);
        assert!(m.take(ip, 2).is_some());
    }

    #[test]
    fn default_cap_stays_below_the_descriptor_limit() {
        assert_eq!(default_max_connections(1024), 512);
        assert_eq!(default_max_connections(6000), 3000);
        assert_eq!(default_max_connections(20_000), 4096);
    }
}
