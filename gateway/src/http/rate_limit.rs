//! Per-client-IP token buckets (governor) for the routes the contract rate-limits.
//! Over the limit: 429 with `Retry-After` and the auth error body
//! (`over_request_rate_limit`), before the handler runs.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use crate::error::code::auth as code;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

pub use crate::config::Rate;

/// A keyed limiter; cheap to clone.
#[derive(Clone)]
pub struct Limiter(Arc<DefaultKeyedRateLimiter<IpAddr>>);

impl Limiter {
    /// A bucket of `rate.n` that refills over `rate.per_secs`.
    pub fn new(rate: Rate) -> Limiter {
        let n = NonZeroU32::new(rate.n).unwrap_or(NonZeroU32::MIN);
        let period = std::time::Duration::from_secs(rate.per_secs) / rate.n;
        let quota = Quota::with_period(period.max(std::time::Duration::from_nanos(1))).unwrap_or(Quota::per_second(n)).allow_burst(n);
        let inner = Arc::new(RateLimiter::keyed(quota));
        // Forget clients whose buckets are full again, so the map does not grow
        // with every address ever seen.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&inner);
            rt.spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    let Some(l) = weak.upgrade() else { break };
                    l.retain_recent();
                    l.shrink_to_fit();
                }
            });
        }
        Limiter(inner)
    }

    /// `Ok` or the seconds to wait. IPv6 clients are one client per /64 (a host
    /// usually holds a whole /64, and could otherwise rotate through it).
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        self.0.check_key(&client_key(ip)).map_err(|nu| nu.wait_time_from(DefaultClock::default().now()).as_secs().max(1))
    }
}

/// The address a per-client limit counts: IPv4 as it is (IPv4-mapped IPv6 too), IPv6
/// by its /64 prefix.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Middleware: refuses a client over its limit.
pub async fn enforce(State(limiter): State<Limiter>, req: Request, next: Next) -> Response {
    let ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).unwrap_or(IpAddr::from([127, 0, 0, 1]));
    match limiter.check(ip) {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            let mut res = crate::error::gotrue::AuthError::new(StatusCode::TOO_MANY_REQUESTS, code::OVER_REQUEST_RATE_LIMIT, "too many requests, try again later").into_response();
            if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                res.headers_mut().insert("retry-after", v);
            }
            res
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        assert_eq!("10/s".parse::<Rate>().unwrap(), Rate { n: 10, per_secs: 1 });
        assert_eq!("30".parse::<Rate>().unwrap(), Rate { n: 30, per_secs: 60 });
        assert_eq!("5/h".parse::<Rate>().unwrap(), Rate { n: 5, per_secs: 3600 });
        assert!("0/m".parse::<Rate>().is_err());
        assert!("x/m".parse::<Rate>().is_err());
        assert!("3/d".parse::<Rate>().is_err());
    }

    #[test]
    fn ipv6_clients_count_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        assert_eq!(client_key("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1".parse::<IpAddr>().unwrap());
        let l = Limiter::new("1/h".parse().unwrap());
        assert!(l.check(a).is_ok());
        assert!(l.check(b).is_err(), "another address of the same /64 shares the bucket");
        assert!(l.check(c).is_ok());
    }

    #[test]
    fn buckets_are_per_ip() {
        let l = Limiter::new(Rate { n: 2, per_secs: 3600 });
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        assert!(l.check(a).is_ok() && l.check(a).is_ok());
        let wait = l.check(a).unwrap_err();
        assert!((1..=1800).contains(&wait), "{wait}");
        assert!(l.check(b).is_ok());
    }
}
