//! The `Prefer` and `Accept` headers and the schema profile headers.

use axum::http::{HeaderMap, Method};

use super::error::RestError;
use crate::error::code::pgrst;

/// `Prefer: return=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Return {
    /// Empty body (default).
    #[default]
    Minimal,
    /// The rows.
    Representation,
    /// Empty body, Location header.
    HeadersOnly,
}

/// Parsed `Prefer`.
#[derive(Debug, Clone, Default)]
pub struct Prefer {
    /// return=.
    pub ret: Return,
    /// count= (exact, planned, estimated).
    pub count: Option<String>,
    /// resolution=merge-duplicates / ignore-duplicates.
    pub resolution: Option<String>,
    /// tx=commit / tx=rollback as asked.
    pub tx: Option<String>,
    /// Whether the transaction rolls back (DB_TX_END and tx=, set by the route).
    pub rollback: bool,
    /// missing=default.
    pub missing_default: bool,
    /// handling=strict.
    pub strict: bool,
    /// timezone=.
    pub timezone: Option<String>,
    /// max-affected= (only under handling=strict).
    pub max_affected: Option<i64>,
    /// Items that are not preferences PostgREST knows.
    pub invalid: Vec<String>,
    /// The recognised preferences as given, with PostgREST's echo order, for
    /// `Preference-Applied`.
    given: Vec<(u8, String)>,
}

impl Prefer {
    /// Drops `resolution=` (PostgREST ignores it on a table without a primary key
    /// when no `on_conflict` is given: a plain insert, not echoed as applied).
    pub fn forget_resolution(&mut self) {
        self.resolution = None;
        self.given.retain(|(rank, _)| *rank != 0);
    }

    /// `Preference-Applied`: the honoured preferences, in PostgREST's order
    /// (resolution, missing, return, count, tx); `tx` only when it may override,
    /// `return=` only for a mutation (a read or a function call never applies it).
    pub fn applied(&self, tx_overridable: bool, mutation: bool) -> Option<String> {
        let mut items: Vec<&(u8, String)> =
            self.given.iter().filter(|(rank, _)| (*rank != 4 || tx_overridable) && (*rank != 7 || self.strict) && (*rank != 2 || mutation)).collect();
        items.sort_by_key(|(rank, _)| *rank);
        items.dedup_by_key(|(rank, _)| *rank);
        (!items.is_empty()).then(|| items.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>().join(", "))
    }
}

/// Reads every `Prefer` header (values may be joined by `,` or `, `). Under
/// `handling=strict`, anything it does not know is refused (400 PGRST122).
pub fn prefer_checked(headers: &HeaderMap) -> Result<Prefer, RestError> {
    let p = prefer(headers);
    if p.strict && !p.invalid.is_empty() {
        return Err(RestError::new(
            pgrst::INVALID_PREFERENCES,
            "Invalid preferences given with handling=strict",
            Some(format!("Invalid preferences: {}", p.invalid.join(", "))),
            None,
        ));
    }
    Ok(p)
}

/// Reads every `Prefer` header (values may be joined by `,` or `, `).
pub fn prefer(headers: &HeaderMap) -> Prefer {
    let mut p = Prefer::default();
    for v in headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()) {
        for item in v.split(',').map(str::trim) {
            let rank = match item.split_once('=').map(|(k, _)| k) {
                Some("resolution") => Some(0),
                Some("missing") => Some(1),
                Some("return") => Some(2),
                Some("count") => Some(3),
                Some("tx") => Some(4),
                Some("handling") => Some(5),
                Some("timezone") => Some(6),
                Some("max-affected") => Some(7),
                _ => None,
            };
            // Given more than once, a preference is the first one (as PostgREST).
            if rank.is_some_and(|r| p.given.iter().any(|(g, _)| *g == r)) {
                continue;
            }
            match item.split_once('=') {
                Some(("return", "representation")) => p.ret = Return::Representation,
                Some(("return", "headers-only")) => p.ret = Return::HeadersOnly,
                Some(("return", "minimal")) => p.ret = Return::Minimal,
                Some(("count", c @ ("exact" | "planned" | "estimated"))) => p.count = Some(c.to_owned()),
                Some(("resolution", r @ ("merge-duplicates" | "ignore-duplicates"))) => p.resolution = Some(r.to_owned()),
                Some(("tx", t @ ("commit" | "rollback"))) => p.tx = Some(t.to_owned()),
                Some(("missing", "default")) => p.missing_default = true,
                Some(("handling", "strict")) => p.strict = true,
                Some(("handling", "lenient")) => {}
                Some(("timezone", tz)) if !tz.is_empty() => p.timezone = Some(tz.to_owned()),
                Some(("max-affected", n)) if n.parse::<i64>().is_ok() => p.max_affected = n.parse().ok(),
                _ => {
                    if !item.is_empty() {
                        p.invalid.push(item.to_owned());
                    }
                    continue;
                }
            }
            if let Some(rank) = rank {
                p.given.push((rank, item.to_owned()));
            }
        }
    }
    p
}

/// What the client accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// JSON array (default).
    Json,
    /// `application/vnd.pgrst.object+json`: exactly one row as an object.
    Object,
    /// `application/vnd.pgrst.array+json;nulls=stripped`: keys with null values left out.
    JsonStripped,
    /// `application/vnd.pgrst.object+json;nulls=stripped`.
    ObjectStripped,
    /// `text/csv`: a header line, then one line per row.
    Csv,
}

/// Reads `Accept`; unknown media types → 406 PGRST107.
pub fn accept(headers: &HeaderMap) -> Result<Accept, RestError> {
    let Some(v) = headers.get("accept").and_then(|v| v.to_str().ok()) else { return Ok(Accept::Json) };
    for item in v.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let stripped = parts.any(|p| p.replace(' ', "") == "nulls=stripped");
        match (media, stripped) {
            ("application/vnd.pgrst.object+json" | "application/vnd.pgrst.object", false) => return Ok(Accept::Object),
            ("application/vnd.pgrst.object+json" | "application/vnd.pgrst.object", true) => return Ok(Accept::ObjectStripped),
            ("application/vnd.pgrst.array+json" | "application/vnd.pgrst.array", true) => return Ok(Accept::JsonStripped),
            ("application/vnd.pgrst.array+json" | "application/vnd.pgrst.array", false) => return Ok(Accept::Json),
            ("text/csv", _) => return Ok(Accept::Csv),
            ("application/json" | "*/*" | "application/*" | "", _) => return Ok(Accept::Json),
            _ => {}
        }
    }
    Err(RestError::new(pgrst::UNACCEPTABLE_MEDIA, format!("None of these media types are available: {v}"), None, None))
}

/// The schema of the request: Accept-Profile (reads) or Content-Profile (writes),
/// falling back to the other header, then the first exposed schema.
pub fn schema<'a>(headers: &HeaderMap, method: &Method, exposed: &'a [String]) -> Result<&'a str, RestError> {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok()).map(str::trim);
    let wanted = if matches!(*method, Method::GET | Method::HEAD) { get("accept-profile") } else { get("content-profile").or_else(|| get("accept-profile")) };
    match wanted {
        None => exposed.first().map(String::as_str).ok_or_else(|| RestError::of(pgrst::UNACCEPTABLE_SCHEMA, "No schema is exposed")),
        Some(w) => exposed.iter().find(|s| s.as_str() == w).map(String::as_str).ok_or_else(|| {
            RestError::new(pgrst::UNACCEPTABLE_SCHEMA, format!("Invalid schema: {w}"), None, Some(&format!("Only the following schemas are exposed: {}", exposed.join(", "))))
        }),
    }
}

/// Applies a `Range: first-last` (or `first-`) request header to a read, as PostgREST
/// does: it narrows the page the query string asks for (the stricter limit wins).
/// A last row before the first → 416 PGRST103.
pub fn apply_range(headers: &HeaderMap, offset: &mut Option<i64>, limit: &mut Option<i64>) -> Result<(), RestError> {
    let Some(v) = headers.get("range").and_then(|v| v.to_str().ok()) else { return Ok(()) };
    let v = v.trim();
    let spec = v.split_once('=').map(|(_, s)| s).unwrap_or(v);
    let Some((a, b)) = spec.split_once('-') else { return Ok(()) };
    let Ok(first) = a.trim().parse::<i64>() else { return Ok(()) };
    let last = b.trim().parse::<i64>().ok();
    if let Some(last) = last {
        if last < first {
            return Err(RestError::new(
                pgrst::INVALID_RANGE,
                "Requested range not satisfiable",
                Some("The lower boundary must be lower than or equal to the upper boundary in the Range header.".to_owned()),
                None,
            ));
        }
    }
    let q_off = offset.unwrap_or(0);
    let new_off = q_off.max(first);
    *offset = Some(new_off);
    let rest_of_query = |l: i64| q_off.saturating_add(l).saturating_sub(new_off);
    if let Some(last) = last {
        let header_limit = last.saturating_sub(new_off).saturating_add(1);
        *limit = Some(match *limit {
            Some(l) => l.min(header_limit).min(rest_of_query(l)).max(0),
            None => header_limit.max(0),
        });
    } else if let Some(l) = *limit {
        *limit = Some(rest_of_query(l).max(0));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{accept, Accept};
    use axum::http::HeaderMap;

    fn with(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("accept", v.parse().unwrap());
        h
    }

    #[test]
    fn media_types_as_postgrest_names_them() {
        assert_eq!(accept(&with("application/vnd.pgrst.array+json;nulls=stripped")).unwrap(), Accept::JsonStripped);
        assert_eq!(accept(&with("application/vnd.pgrst.array; nulls=stripped")).unwrap(), Accept::JsonStripped);
        assert_eq!(accept(&with("application/vnd.pgrst.array")).unwrap(), Accept::Json);
        assert_eq!(accept(&with("application/vnd.pgrst.object+json;nulls=stripped")).unwrap(), Accept::ObjectStripped);
        assert_eq!(accept(&with("text/plain, text/csv")).unwrap(), Accept::Csv);
        assert_eq!(accept(&with("image/png")).unwrap_err().code, "PGRST107");
    }
}
