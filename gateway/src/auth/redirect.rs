//! Where browsers land at the end of e-mail and OAuth flows: SITE_URL or an
//! allow-listed `redirect_to`, with the session in the fragment (implicit flow) or
//! `?code=` (PKCE); errors as `error`, `error_code`, `error_description`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::config::Config;

/// `redirect_to` if it is SITE_URL or allow-listed (ADDITIONAL_REDIRECT_URLS, `*`
/// suffix = prefix match), else SITE_URL.
pub fn target(cfg: &Config, requested: Option<&str>) -> String {
    let Some(r) = requested.map(str::trim).filter(|r| !r.is_empty()) else { return cfg.site_url.clone() };
    let site = cfg.site_url.trim_end_matches('/');
    let same_site = r == site || r.starts_with(&format!("{site}/")) || r.starts_with(&format!("{site}?")) || r.starts_with(&format!("{site}#"));
    let listed = cfg.additional_redirect_urls.iter().any(|u| match u.strip_suffix('*') {
        Some(prefix) => r.starts_with(prefix),
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
    fn query_and_fragment_placement() {
        assert_eq!(with_query("http://a/cb", &[("code", "x y".into())]), "http://a/cb?code=x+y");
        assert_eq!(with_query("http://a/cb?n=1#f", &[("code", "c".into())]), "http://a/cb?n=1&code=c#f");
        assert_eq!(with_fragment("http://a/cb#old", &[("access_token", "t".into())]), "http://a/cb#access_token=t");
    }
}
