//! SSRF limits for outgoing webhook requests: only http/https, and no loopback,
//! private, link-local, CGNAT, multicast or unspecified addresses unless
//! WEBHOOK_ALLOW_PRIVATE=true or the host (or host:port) is in WEBHOOK_ALLOWED_HOSTS.
//! Names are checked after resolution, at delivery too (DNS rebinding), by the
//! client's resolver; IP literals are checked directly. Redirects are not followed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// What may be called.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// WEBHOOK_ALLOW_PRIVATE.
    pub allow_private: bool,
    /// WEBHOOK_ALLOWED_HOSTS: `host` or `host:port` entries exempt from the address check.
    pub allowed_hosts: Vec<String>,
}

/// True for addresses a webhook must not reach by default.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback() || v6.is_unspecified() || v6.is_multicast() || (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

impl Policy {
    fn exempt(&self, host: &str, port: Option<u16>) -> bool {
        self.allow_private
            || self.allowed_hosts.iter().any(|h| h == host || port.is_some_and(|p| *h == format!("{host}:{p}")))
    }

    /// Checks a URL before registration or delivery: scheme, host, and (for IP
    /// literals) the address.
    pub fn check_url(&self, raw: &str) -> Result<Url, String> {
        let url = Url::parse(raw).map_err(|e| format!("invalid url: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("url must be http or https".into());
        }
        let host = url.host_str().ok_or("url has no host")?.trim_matches(|c| c == '[' || c == ']').to_owned();
        if !url.username().is_empty() || url.password().is_some() {
            return Err("url must not carry credentials".into());
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            if is_internal(ip) && !self.exempt(&host, url.port_or_known_default()) {
                return Err(format!("url points to an internal address ({ip}); allow it with WEBHOOK_ALLOWED_HOSTS"));
            }
        }
        Ok(url)
    }

    /// Resolves `host` and refuses internal addresses (the check behind names).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await.map_err(|e| format!("cannot resolve {host}: {e}"))?.collect();
        if self.exempt(host, Some(port)) {
            return Ok(addrs);
        }
        let ok: Vec<SocketAddr> = addrs.into_iter().filter(|a| !is_internal(a.ip())).collect();
        if ok.is_empty() {
            return Err(format!("{host} resolves to internal addresses only; allow it with WEBHOOK_ALLOWED_HOSTS"));
        }
        Ok(ok)
    }
}

/// reqwest resolver applying the policy to every name it resolves.
pub struct Resolver(pub Arc<Policy>);

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let addrs = policy.resolve(name.as_str(), 0).await.map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses() {
        for ip in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0", "100.64.0.1", "::1", "fe80::1", "fd00::1", "::ffff:127.0.0.1", "224.0.0.1"] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls() {
        let p = Policy::default();
        assert!(p.check_url("https://example.com/hook").is_ok());
        assert!(p.check_url("ftp://example.com").is_err());
        assert!(p.check_url("http://127.0.0.1:9000/x").is_err());
        assert!(p.check_url("http://[::1]/x").is_err());
        assert!(p.check_url("http://169.254.169.254/latest").is_err());
        assert!(p.check_url("http://user:pw@example.com").is_err());
        assert!(p.check_url("not a url").is_err());
        let allow = Policy { allow_private: false, allowed_hosts: vec!["127.0.0.1:9000".into()] };
        assert!(allow.check_url("http://127.0.0.1:9000/x").is_ok());
        assert!(allow.check_url("http://127.0.0.1:9001/x").is_err());
    }
}
