//! Request bodies read under time limits, so that a client trickling its body cannot
//! hold a socket (or anything the handler took) for minutes:
//!
//! - BODY_IDLE_TIMEOUT: no byte for this long → the read ends with [`BodyError::Idle`];
//! - BODY_MIN_RATE after BODY_MIN_RATE_GRACE: the body must keep arriving at at least
//!   this many bytes per second: each chunk extends the deadline by `len / rate`, and
//!   at most `grace` of it can be saved up ahead (so a fast start cannot pay for a
//!   long trickle) → [`BodyError::TooSlow`];
//! - optionally a byte cap → [`BodyError::TooLarge`].
//!
//! Timeouts answer 408 (with `Connection: close`). One timer per body, reset on
//! progress; nothing polls.
//!
//! Use: read the body with these helpers *before* taking a pooled database connection.
//!
//! ```ignore
//! use crate::http::body::{self, BodyLimits};
//! // a whole (small) body, e.g. JSON:
//! let bytes = body::to_bytes(body, BodyLimits::from_config(&s.config), 1 << 20).await?;
//! // or a stream of Bytes to consume piecewise (uploads, proxied bodies):
//! let stream = body::guard(body, BodyLimits::from_config(&s.config));
//! ```
//!
//! [`BodyError`] is a std error (it can feed `multer`, `reqwest::Body::wrap_stream`,
//! …) and an `IntoResponse` (a plain-text 408 / 413 / 400 that `errors::as_json`
//! turns into the product's JSON shape); [`BodyError::status`] and `to_string()` give
//! the parts for a product-specific error type.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use crate::config::Config;

/// The time limits of one body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Longest wait for the next byte (None = no limit).
    pub idle: Option<Duration>,
    /// Minimum average bytes per second after `grace` (0 = no minimum).
    pub min_rate: u64,
    /// Time before `min_rate` applies.
    pub grace: Duration,
}

impl BodyLimits {
    /// No limits at all.
    pub const NONE: BodyLimits = BodyLimits { idle: None, min_rate: 0, grace: Duration::ZERO };

    /// BODY_IDLE_TIMEOUT, BODY_MIN_RATE and BODY_MIN_RATE_GRACE.
    pub fn from_config(c: &Config) -> BodyLimits {
        BodyLimits {
            idle: (c.body_idle_timeout_secs > 0).then(|| Duration::from_secs(c.body_idle_timeout_secs)),
            min_rate: c.body_min_rate,
            grace: Duration::from_secs(c.body_min_rate_grace_secs),
        }
    }
}

/// Why a body read ended early.
#[derive(Debug)]
pub enum BodyError {
    /// No byte within the idle timeout.
    Idle(Duration),
    /// Slower on average than the minimum rate (bytes/s).
    TooSlow(u64),
    /// More than this many bytes.
    TooLarge(u64),
    /// The connection failed or the client went away.
    Read(String),
}

impl BodyError {
    /// 408 for the timeouts, 413 over the cap, 400 for a broken body.
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::Idle(_) | BodyError::TooSlow(_) => StatusCode::REQUEST_TIMEOUT,
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Read(_) => StatusCode::BAD_REQUEST,
        }
    }
    /// One of the two timeouts.
    pub fn is_timeout(&self) -> bool {
        matches!(self, BodyError::Idle(_) | BodyError::TooSlow(_))
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Idle(d) => write!(f, "no request body bytes arrived for {} s (BODY_IDLE_TIMEOUT)", d.as_secs()),
            BodyError::TooSlow(r) => write!(f, "the request body arrived slower than {r} bytes/s (BODY_MIN_RATE)"),
            BodyError::TooLarge(n) => write!(f, "the request body exceeds {n} bytes"),
            BodyError::Read(e) => write!(f, "the request body could not be read: {e}"),
        }
    }
}

impl std::error::Error for BodyError {}

impl IntoResponse for BodyError {
    fn into_response(self) -> Response {
        let mut res = (self.status(), self.to_string()).into_response();
        if self.is_timeout() {
            res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        res
    }
}

/// The request's Content-Length, when it sent a valid one.
pub fn declared_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

#[derive(Clone, Copy)]
enum Kind {
    Idle,
    Slow,
}

/// A body's data under [`BodyLimits`] (and an optional byte cap): yields its chunks,
/// then `None`; or one `Err` and then `None`.
pub struct Guarded<S> {
    inner: S,
    limits: BodyLimits,
    max: Option<u64>,
    start: Instant,
    received: u64,
    /// The rate deadline: each chunk extends it by `len / min_rate`, but never past
    /// `now + grace`, so time earned by a fast start cannot be banked to trickle
    /// later (a 2 MiB burst would otherwise buy half an hour of 1 byte / 9 s).
    bank: Instant,
    timer: Option<(Pin<Box<Sleep>>, Kind)>,
    done: bool,
}

/// `body`'s data under `limits`.
pub fn guard(body: Body, limits: BodyLimits) -> Guarded<axum::body::BodyDataStream> {
    guard_stream(body.into_data_stream(), limits, None)
}

/// `body`'s data under `limits`, at most `max` bytes.
pub fn guard_max(body: Body, limits: BodyLimits, max: u64) -> Guarded<axum::body::BodyDataStream> {
    guard_stream(body.into_data_stream(), limits, Some(max))
}

/// Any stream of bytes under `limits` (and `max` bytes). The clock starts now.
pub fn guard_stream<S, E>(inner: S, limits: BodyLimits, max: Option<u64>) -> Guarded<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let start = Instant::now();
    let mut g = Guarded { inner, limits, max, start, received: 0, bank: start + limits.grace, timer: None, done: false };
    g.rearm(g.start);
    g
}

impl<S> Guarded<S> {
    /// The earlier of the idle and the rate deadline, from `now` (the last progress).
    fn rearm(&mut self, now: Instant) {
        let idle = self.limits.idle.map(|d| (now + d, Kind::Idle));
        let slow = (self.limits.min_rate > 0).then_some((self.bank, Kind::Slow));
        let next = match (idle, slow) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        };
        match (next, &mut self.timer) {
            (None, t) => *t = None,
            (Some((at, kind)), Some((sleep, k))) => {
                sleep.as_mut().reset(at);
                *k = kind;
            }
            (Some((at, kind)), t) => *t = Some((Box::pin(tokio::time::sleep_until(at)), kind)),
        }
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }
}

impl<S, E> Stream for Guarded<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => {
                if !b.is_empty() {
                    this.received += b.len() as u64;
                    if let Some(max) = this.max.filter(|m| this.received > *m) {
                        this.done = true;
                        return Poll::Ready(Some(Err(BodyError::TooLarge(max))));
                    }
                    let now = Instant::now();
                    if this.limits.min_rate > 0 {
                        let earned = Duration::from_secs_f64(b.len() as f64 / this.limits.min_rate as f64);
                        let cap = now.max(this.start + this.limits.grace).max(now + this.limits.grace.min(Duration::from_secs(3600)));
                        this.bank = (this.bank.max(now) + earned).min(cap);
                    }
                    this.rearm(now);
                }
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(BodyError::Read(e.to_string()))))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if let Some((sleep, kind)) = &mut this.timer {
                    if sleep.as_mut().poll(cx).is_ready() {
                        this.done = true;
                        let e = match kind {
                            Kind::Idle => BodyError::Idle(this.limits.idle.unwrap_or_default()),
                            Kind::Slow => BodyError::TooSlow(this.limits.min_rate),
                        };
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Poll::Pending
            }
        }
    }
}

/// The whole body (at most `max` bytes) under `limits`.
pub async fn to_bytes(body: Body, limits: BodyLimits, max: u64) -> Result<Bytes, BodyError> {
    use futures_util::StreamExt;
    let mut s = guard_max(body, limits, max);
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    type Item = Result<Bytes, std::io::Error>;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A body that yields `n` bytes every `every`, `times` times.
    fn trickle(n: usize, every: Duration, times: usize) -> impl Stream<Item = Item> + Unpin {
        Box::pin(futures_util::stream::unfold(0, move |i| async move {
            if i == times {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((Ok(Bytes::from(vec![b'x'; n])), i + 1))
        }))
    }

    #[tokio::test]
    async fn idle_bodies_end_with_408() {
        let never = futures_util::stream::pending::<Item>();
        let mut g = guard_stream(never, BodyLimits { idle: Some(ms(300)), min_rate: 0, grace: Duration::ZERO }, None);
        let t = Instant::now();
        let e = g.next().await.unwrap().unwrap_err();
        assert!(matches!(e, BodyError::Idle(_)) && e.status() == StatusCode::REQUEST_TIMEOUT);
        assert!((ms(300)..ms(600)).contains(&t.elapsed()), "{:?}", t.elapsed());
        assert!(g.next().await.is_none());
    }

    #[tokio::test]
    async fn trickles_end_after_the_grace_period() {
        // 1 byte every 200 ms never trips a 300 ms idle timeout, but is far below
        // 1024 B/s: the read ends when the grace period is over.
        let mut g = guard_stream(trickle(1, ms(200), 100), BodyLimits { idle: Some(ms(300)), min_rate: 1024, grace: ms(700) }, None);
        let t = Instant::now();
        let mut got = 0;
        let e = loop {
            match g.next().await.unwrap() {
                Ok(b) => got += b.len(),
                Err(e) => break e,
            }
        };
        assert!(matches!(e, BodyError::TooSlow(1024)), "{e}");
        assert!((ms(700)..ms(1000)).contains(&t.elapsed()) && got == 3, "{:?} {got}", t.elapsed());
    }

    #[tokio::test]
    async fn a_fast_start_cannot_be_banked_for_a_long_trickle() {
        // 512 KiB at once (500 s of credit at 1024 B/s), then 1 byte every 200 ms:
        // at most `grace` of credit is kept, so the read ends about a grace period
        // after the burst, not minutes later.
        let burst = futures_util::stream::once(async { Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 512 * 1024])) });
        let body = Box::pin(burst.chain(trickle(1, ms(200), 1000)));
        let mut g = guard_stream(body, BodyLimits { idle: Some(ms(300)), min_rate: 1024, grace: ms(700) }, None);
        let t = Instant::now();
        let e = loop {
            if let Err(e) = g.next().await.unwrap() {
                break e;
            }
        };
        assert!(matches!(e, BodyError::TooSlow(1024)), "{e}");
        assert!(t.elapsed() < ms(1500), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn steady_bodies_pass_and_caps_hold() {
        // 64 KiB every 50 ms for 1.5 s: above 1024 B/s, never idle.
        let g = guard_stream(trickle(64 * 1024, ms(50), 30), BodyLimits { idle: Some(ms(300)), min_rate: 1024, grace: ms(100) }, None);
        let all: Vec<_> = g.collect().await;
        assert_eq!(all.len(), 30);
        assert!(all.iter().all(|r| r.is_ok()));
        let mut capped = guard_stream(trickle(10, ms(1), 5), BodyLimits::NONE, Some(25));
        assert!(capped.next().await.unwrap().is_ok());
        assert!(capped.next().await.unwrap().is_ok());
        assert!(matches!(capped.next().await.unwrap(), Err(BodyError::TooLarge(25))));
        assert!(capped.next().await.is_none());
    }
}
