//! SSRF limits for outgoing connections (webhook deliveries, the workbench's database
//! targets): only http/https for URLs, and no loopback, private, link-local, CGNAT,
//! multicast, reserved or unspecified addresses unless the product's *_ALLOW_PRIVATE
//! is true or the host (or host:port) is in its *_ALLOWED_HOSTS (the [`Policy`]
//! names its own setting in refusals).
//! IPv6 addresses that embed an IPv4 one (mapped, compatible, NAT64 64:ff9b::/96,
//! 6to4 2002::/16) are judged by the IPv4 address; Teredo and the other IETF
//! protocol ranges (2001::/23), local-use NAT64 (64:ff9b:1::/48), unique-local,
//! site-local, link-local and documentation ranges are internal.
//! Names are checked after resolution, at delivery too (DNS rebinding), by the
//! client's resolver: the connection goes to one of the checked addresses, never to
//! a second lookup. IP literals are checked directly. Redirects are not followed, and
//! the delivery client ignores HTTP(S)_PROXY (a proxy would resolve and connect for
//! us, out of reach of the check).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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
    /// The setting named in refusals (WEBHOOK_ALLOWED_HOSTS, WORKBENCH_ALLOWED_HOSTS).
    pub setting: &'static str,
}

/// True for addresses a webhook must not reach by default.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => internal_v6(v6),
    }
}

fn internal_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_multicast()
        || v4.is_broadcast()
        || v4.is_documentation()
        || o[0] == 0
        // CGNAT 100.64.0.0/10
        || (o[0] == 100 && (64..128).contains(&o[1]))
        // IETF protocol assignments 192.0.0.0/24, 6to4 relay anycast 192.88.99.0/24
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 192 && o[1] == 88 && o[2] == 99)
        // benchmarking 198.18.0.0/15
        || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
        // reserved 240.0.0.0/4
        || o[0] >= 240
}

fn internal_v6(v6: Ipv6Addr) -> bool {
    let s = v6.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible; :: and ::1 included).
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
        return internal_v4(embedded(s[6], s[7]));
    }
    // NAT64 well-known prefix 64:ff9b::/96.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return internal_v4(embedded(s[6], s[7]));
    }
    // 6to4 2002:aabb:ccdd::/48.
    if s[0] == 0x2002 {
        return internal_v4(embedded(s[1], s[2]));
    }
    v6.is_loopback()
        || v6.is_unspecified()
        || v6.is_multicast()
        // local-use NAT64 64:ff9b:1::/48
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
        // discard-only 100::/64
        || (s[0] == 0x100 && s[1..4] == [0, 0, 0])
        // IETF protocol assignments 2001::/23: Teredo 2001::/32, benchmarking, ORCHID, ...
        || (s[0] == 0x2001 && s[1] < 0x200)
        // documentation 2001:db8::/32 and 3fff::/20
        || (s[0] == 0x2001 && s[1] == 0xdb8)
        || (s[0] == 0x3fff && s[1] < 0x1000)
        // unique local fc00::/7, link-local fe80::/10, site-local fec0::/10
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xffc0) == 0xfec0
}

impl Policy {
    fn exempt(&self, host: &str, port: Option<u16>) -> bool {
        self.allow_private || self.allowed_hosts.iter().any(|h| h == host || port.is_some_and(|p| *h == format!("{host}:{p}")))
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
                return Err(format!("url points to an internal address ({ip}); allow it with {}", self.setting));
            }
        }
        Ok(url)
    }

    /// At registration: a name that resolves to internal addresses only is refused
    /// early (a name that does not resolve now is accepted; delivery checks again).
    pub async fn check_name(&self, url: &Url) -> Result<(), String> {
        let Some(host) = url.host_str().map(|h| h.trim_matches(|c| c == '[' || c == ']')) else { return Ok(()) };
        if host.parse::<IpAddr>().is_ok() {
            return Ok(());
        }
        let port = url.port_or_known_default().unwrap_or(80);
        match tokio::time::timeout(std::time::Duration::from_secs(3), tokio::net::lookup_host((host, port))).await {
            Ok(Ok(_)) => self.resolve(host, port).await.map(|_| ()),
            _ => Ok(()),
        }
    }

    /// Resolves `host` and refuses internal addresses (the check behind names).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await.map_err(|e| format!("cannot resolve {host}: {e}"))?.collect();
        if self.exempt(host, Some(port)) {
            return Ok(addrs);
        }
        let ok: Vec<SocketAddr> = addrs.into_iter().filter(|a| !is_internal(a.ip())).collect();
        if ok.is_empty() {
            return Err(format!("{host} resolves to internal addresses only; allow it with {}", self.setting));
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
        let internal = [
            // IPv4
            "127.0.0.1",
            "127.255.255.254",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.0.170",
            "192.0.2.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "192.88.99.1",
            // IPv6 proper
            "::1",
            "::",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "feff::1",
            "fd00::1",
            "fc00::1",
            "ff02::1",
            "ff0e::1",
            "2001:db8::1",
            "100::1",
            "3fff::1",
            // IPv4 inside IPv6: mapped, compatible, NAT64, 6to4
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.0.0.1",
            "::0.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a00:1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "2002:a00:1::",
            "2002:c0a8:101::1",
            // Teredo and other IETF ranges, local-use NAT64
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:2::1",
            "2001:10::1",
            "2001:1ff::1",
            "64:ff9b:1::7f00:1",
            "64:ff9b:1:abcd::1",
        ];
        for ip in internal {
            assert!(is_internal(ip.parse().unwrap()), "{ip} should be internal");
        }
        let public = [
            "93.184.216.34",
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "192.169.0.1",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450:4001:80b::200e",
            "2001:4860:4860::8888",
            "2001:200::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "3fff:1000::1",
        ];
        for ip in public {
            assert!(!is_internal(ip.parse().unwrap()), "{ip} should be public");
        }
    }

    #[test]
    fn bracketed_v6_literals_with_embedded_v4_are_refused() {
        let p = Policy::default();
        for url in [
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::7f00:1]/",
            "http://[2002:7f00:1::1]/",
            "http://[fec0::1]/",
            "http://[::ffff:127.0.0.1]:8080/",
            "http://[::]/",
            "http://[2001::1]/",
            "http://[64:ff9b:1::1]/",
            "http://[fe80::1%25eth0]/",
        ] {
            assert!(p.check_url(url).is_err(), "{url}");
        }
        // Other spellings of 127.0.0.1 are normalised by the URL parser first.
        for url in ["http://2130706433/", "http://0x7f.1/", "http://127.1/", "http://0177.0.0.1/"] {
            assert!(p.check_url(url).is_err(), "{url}");
        }
        assert!(p.check_url("http://[2606:4700::1111]/hook").is_ok());
    }

    #[tokio::test]
    async fn names_are_checked_at_connect_time() {
        let p = Arc::new(Policy::default());
        // localhost resolves to loopback only: the resolver reqwest connects through refuses it.
        let r = Resolver(p.clone()).resolve("localhost".parse().unwrap()).await;
        assert!(r.is_err());
        assert!(p.resolve("localhost", 80).await.is_err());
        let open = Policy { allow_private: true, allowed_hosts: vec![], setting: "X" };
        assert!(!open.resolve("localhost", 80).await.unwrap().is_empty());
        // At registration too.
        assert!(p.check_name(&Url::parse("http://localhost:9000/x").unwrap()).await.is_err());
        assert!(p.check_name(&Url::parse("http://no-such-host.invalid/x").unwrap()).await.is_ok());
        let allow = Policy { allow_private: false, allowed_hosts: vec!["localhost:9000".into()], setting: "X" };
        assert!(allow.check_name(&Url::parse("http://localhost:9000/x").unwrap()).await.is_ok());
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
        let allow = Policy { allow_private: false, allowed_hosts: vec!["127.0.0.1:9000".into()], setting: "X" };
        assert!(allow.check_url("http://127.0.0.1:9000/x").is_ok());
        assert!(allow.check_url("http://127.0.0.1:9001/x").is_err());
    }
}
