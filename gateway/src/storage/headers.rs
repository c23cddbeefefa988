//! Headers every object response carries (authenticated, public and signed GET, HEAD,
//! Range, 304 and 416 answers), so that uploaded content cannot act on the API's origin:
//!
//! - `X-Content-Type-Options: nosniff` and `Content-Security-Policy: default-src 'none';
//!   sandbox` (a document opened from the API origin runs no script, loads nothing and
//!   gets an opaque origin);
//! - the stored type is served only as a plain `type/subtype` (anything else as
//!   `application/octet-stream`), and types a browser renders as active documents
//!   (HTML, XHTML, SVG, XML, XSL) come with `Content-Disposition: attachment` unless
//!   STORAGE_ALLOW_INLINE_HTML is set;
//! - objects of private buckets never carry `public` caching: the uploader's
//!   Cache-Control is rebuilt from its well-formed directives with `public` /
//!   `s-maxage` / `proxy-revalidate` dropped and `private` added.

use axum::http::{header, response::Builder, HeaderValue};

/// The sandbox every object response is served under.
pub const CSP: &str = "default-src 'none'; sandbox";

/// `text/html; charset=x` / `Text/HTML` → `text/html`; anything that is not a single
/// well-formed `type/subtype` → `application/octet-stream` (so a browser's MIME
/// parsing cannot find a different type in it than the one classified here).
pub fn content_type(stored: &str) -> String {
    let essence = stored.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let token = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b));
    match essence.split_once('/') {
        Some((t, s)) if token(t) && token(s) => essence,
        _ => "application/octet-stream".into(),
    }
}

/// Whether a browser would render `mime` (already normalised) as a document that can
/// run script or load content: HTML, XHTML, SVG, XML (XSLT), anything `+xml`, and
/// multipart/x-mixed-replace (whose parts are rendered as documents).
pub fn active(mime: &str) -> bool {
    matches!(mime, "text/html" | "application/xhtml+xml" | "image/svg+xml" | "text/xml" | "application/xml" | "text/xsl" | "application/xslt+xml" | "multipart/x-mixed-replace")
        || mime.ends_with("+xml")
        || mime.ends_with("/xml")
}

/// `attachment; filename*=UTF-8''<last path segment, percent-encoded>`.
pub fn attachment(name: &str) -> String {
    let file = name.rsplit('/').next().unwrap_or(name);
    let mut enc = String::new();
    for b in file.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename*=UTF-8''{enc}")
}

/// The Cache-Control sent for an object: its stored value's well-formed directives; on a
/// private bucket without `public` caching (`private` is added unless `no-store`).
pub fn cache_control(stored: Option<&str>, public_bucket: bool) -> String {
    let stored = stored.unwrap_or("max-age=3600");
    let ok = |d: &str| {
        let (k, v) = d.split_once('=').unwrap_or((d, ""));
        !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_\"".contains(&b))
    };
    let mut out: Vec<String> = stored.split(',').map(|d| d.trim().to_ascii_lowercase()).filter(|d| ok(d)).collect();
    if !public_bucket {
        out.retain(|d| {
            let k = d.split('=').next().unwrap_or("");
            !matches!(k, "public" | "s-maxage" | "proxy-revalidate")
        });
        if !out.iter().any(|d| d == "private" || d == "no-store") {
            out.insert(0, "private".into());
        }
    }
    if out.is_empty() {
        out.push("max-age=3600".into());
    }
    out.join(", ")
}

/// Adds the content-safety headers to an object response.
pub fn protect(res: Builder, mime: &str, name: &str, public_bucket: bool, stored_cache: Option<&str>, allow_inline_html: bool) -> Builder {
    let mut res = res
        .header(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"))
        .header(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP))
        .header(header::CACHE_CONTROL, cache_control(stored_cache, public_bucket));
    if active(mime) && !allow_inline_html {
        res = res.header(header::CONTENT_DISPOSITION, attachment(name));
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_normalised_and_active_ones_recognised() {
        assert_eq!(content_type("Text/HTML; charset=utf-8"), "text/html");
        assert_eq!(content_type("text/plain, text/html"), "application/octet-stream");
        assert_eq!(content_type("text/html\r\nx: y"), "application/octet-stream");
        assert_eq!(content_type(""), "application/octet-stream");
        assert_eq!(content_type("image/png"), "image/png");
        for a in ["text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml", "application/rss+xml", "text/xsl"] {
            assert!(active(a), "{a}");
        }
        for p in ["image/png", "text/plain", "application/json", "application/pdf", "video/mp4"] {
            assert!(!active(p), "{p}");
        }
        assert_eq!(attachment("a/b/ré port\".html"), "attachment; filename*=UTF-8''r%C3%A9%20port%22.html");
    }

    #[test]
    fn private_objects_are_never_publicly_cacheable() {
        assert_eq!(cache_control(Some("public, max-age=31536000"), false), "private, max-age=31536000");
        assert_eq!(cache_control(Some("max-age=3600"), false), "private, max-age=3600");
        assert_eq!(cache_control(None, false), "private, max-age=3600");
        assert_eq!(cache_control(Some("no-store"), false), "no-store");
        assert_eq!(cache_control(Some("PUBLIC, s-maxage=99, max-age=5"), false), "private, max-age=5");
        assert_eq!(cache_control(Some("public, max-age=60"), true), "public, max-age=60");
        assert_eq!(cache_control(Some("max-age=1\r\nset-cookie: x"), true), "max-age=3600");
        assert_eq!(cache_control(Some("public"), false), "private");
    }
}
