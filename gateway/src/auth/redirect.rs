//! Where browsers land at the end of e-mail and OAuth flows: SITE_URL or an
//! allow-listed `redirect_to`, with the session in the fragment (implicit flow) or
//! `?code=` (PKCE); errors as `error`, `error_code`, `error_description`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::config::Config;

/// Whether `r` is under `base`: same scheme, host and port (compared parsed, so
/// `https://app.test@evil.test` or `https://app.test.evil.test` are not), and a path
/// that starts with the base's path. URLs that do not parse (custom schemes such as
/// `myapp://callback`) must match textually, up to a `/`, `?` or `#` boundary.
fn under(r: &str, base: &str) -> bool {
    match (reqwest::Url::parse(r), reqwest::Url::parse(base)) {
        (Ok(u), Ok(b)) if u.has_host() && b.has_host() => {
            u.scheme() == b.scheme() && u.host_str() == b.host_str() && u.port_or_known_default() == b.port_or_known_default() && u.username().is_empty() && {
                let (p, bp) = (u.path(), b.path().trim_end_matches('/'));
                bp.is_empty() || p == bp || p.starts_with(&format!("{bp}/"))
            }
        }
        _ => r == base || base.ends_with(['/', '?', '#']) && r.starts_with(base) || r.strip_prefix(base).is_some_and(|rest| rest.starts_with(['/', '?', '#'])),
    }
}

/// `redirect_to` if it is at SITE_URL or allow-listed (ADDITIONAL_REDIRECT_URLS: exact,
/// or with a trailing `*` any URL under that one), else SITE_URL.
pub fn target(cfg: &Config, requested: Option<&str>) -> String {
    let Some(r) = requested.map(str::trim).filter(|r| !r.is_empty()) else { return cfg.site_url.clone() };
    let same_site = under(r, cfg.site_url.trim_end_matches('/'));
    let listed = cfg.additional_redirect_urls.iter().any(|u| match u.strip_suffix('*') {
        Some(prefix) => under(r, prefix),
        None => r == u,
    });
    if same_site || listed {
        r.to_owned()
    } else {
        cfg.site_url.clone()
    }
}

fn encode(pairs: &[(&str, String)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        q.append_pair(k, v);
    }
    q.finish()
}

/// `target` with `pairs` as its fragment (any old fragment replaced).
pub fn with_fragment(target: &str, pairs: &[(&str, String)]) -> String {
    let base = target.split('#').next().unwrap_or(target);
    format!("{base}#{}", encode(pairs))
}

/// `target` with `pairs` added to its query string (before any fragment).
pub fn with_query(target: &str, pairs: &[(&str, String)]) -> String {
    let (base, frag) = match target.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (target, None),
    };
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut out = format!("{base}{sep}{}", encode(pairs));
    if let Some(f) = frag {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// 302 to `location`.
pub fn found(location: String) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_urls_under_the_allowed_ones_pass() {
        assert!(under("http://app.test/welcome", "http://app.test"));
        assert!(under("http://app.test", "http://app.test"));
        assert!(under("http://app.test/*x", "http://app.test/"));
        assert!(!under("http://app.test@evil.test/", "http://app.test"));
        assert!(!under("http://app.test.evil.test/", "http://app.test"));
        assert!(!under("https://app.test/", "http://app.test"));
        assert!(!under("http://app.test:8080/", "http://app.test"));
        assert!(under("http://localhost:3000/cb?x=1", "http://localhost:3000"));
        assert!(!under("http://localhost:3000@evil.com/", "http://localhost:3000"));
        assert!(under("myapp://callback", "myapp://callback"));
        assert!(under("myapp://callback/deep", "myapp://callback"));
        assert!(!under("myapp://callbackevil", "myapp://callback"));
    }

    #[test]
    fn query_and_fragment_placement() {
        assert_eq!(with_query("http://a/cb", &[("code", "x y".into())]), "http://a/cb?code=x+y");
        assert_eq!(with_query("http://a/cb?n=1#f", &[("code", "c".into())]), "http://a/cb?n=1&code=c#f");
        assert_eq!(with_fragment("http://a/cb#old", &[("access_token", "t".into())]), "http://a/cb#access_token=t");
    }
}
