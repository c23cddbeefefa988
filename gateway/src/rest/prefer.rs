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

/// `Accept: application/vnd.pgrst.plan[+json|+text]; for="..."; options=a|b`
/// (DB_PLAN_ENABLED): the statement's EXPLAIN instead of its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// FORMAT JSON (else TEXT).
    pub json: bool,
    /// The media type the plan is for (the statement is planned as for it).
    pub of: Accept,
    /// EXPLAIN options, in PostgREST's order: analyze, verbose, settings, buffers, wal.
    pub options: Vec<&'static str>,
}

const PLAN_OPTIONS: [&str; 5] = ["analyze", "verbose", "settings", "buffers", "wal"];

impl Plan {
    /// `EXPLAIN (FORMAT ..., OPTION, ...)` (fixed words only).
    pub fn explain(&self) -> String {
        let mut words = vec![if self.json { "FORMAT JSON".to_owned() } else { "FORMAT TEXT".to_owned() }];
        words.extend(self.options.iter().map(|o| o.to_ascii_uppercase()));
        format!("EXPLAIN ({})", words.join(", "))
    }

    /// The answer's Content-Type, as PostgREST writes it.
    pub fn content_type(&self) -> String {
        let of = match self.of {
            Accept::Object | Accept::ObjectStripped => "application/vnd.pgrst.object+json",
            Accept::JsonStripped => "application/vnd.pgrst.array+json;nulls=stripped",
            Accept::Csv => "text/csv",
            Accept::Json => "application/json",
        };
        let options = if self.options.is_empty() { String::new() } else { format!("; options={}", self.options.join("|")) };
        format!("application/vnd.pgrst.plan+{}; for=\"{of}\"{options}; charset=utf-8", if self.json { "json" } else { "text" })
    }
}

/// A media type's parameters (`; key=value`, values optionally quoted), keys
/// lower-cased.
fn media_params(rest: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let (mut cur, mut quoted) = (String::new(), false);
    let mut push = |cur: &mut String| {
        if let Some((k, v)) = cur.split_once('=') {
            out.push((k.trim().to_ascii_lowercase(), v.trim().trim_matches('"').to_owned()));
        }
        cur.clear();
    };
    for ch in rest.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                cur.push(ch);
            }
            ';' if !quoted => push(&mut cur),
            _ => cur.push(ch),
        }
    }
    push(&mut cur);
    out
}

/// The plan media type of one Accept item, if it is one (and plans are on).
fn plan_of(media: &str, params: &str) -> Option<Result<Plan, ()>> {
    let json = match media {
        "application/vnd.pgrst.plan" | "application/vnd.pgrst.plan+text" => false,
        "application/vnd.pgrst.plan+json" => true,
        _ => return None,
    };
    if !super::settings().plan_enabled {
        return Some(Err(()));
    }
    let params = media_params(params);
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let of = match get("for").map(str::to_ascii_lowercase).as_deref() {
        None | Some("application/json") | Some("application/vnd.pgrst.array+json") | Some("application/vnd.pgrst.array") => Accept::Json,
        Some("application/vnd.pgrst.object+json") | Some("application/vnd.pgrst.object") => Accept::Object,
        Some("text/csv") => Accept::Csv,
        Some(_) => return Some(Err(())),
    };
    let asked: Vec<&str> = get("options").map(|o| o.split('|').map(str::trim).collect()).unwrap_or_default();
    let options = PLAN_OPTIONS.into_iter().filter(|o| asked.contains(o)).collect();
    Some(Ok(Plan { json, of, options }))
}

/// Reads `Accept`; unknown media types → 406 PGRST107. The plan media type (when
/// DB_PLAN_ENABLED) gives the media type it is for and the plan.
pub fn accept(headers: &HeaderMap) -> Result<(Accept, Option<Plan>), RestError> {
    if !headers.contains_key("accept") {
        return Ok((Accept::Json, None));
    }
    for (media, params) in accept_items(headers) {
        let media = media.to_ascii_lowercase();
        match plan_of(&media, params) {
            Some(Ok(plan)) => return Ok((plan.of, Some(plan))),
            Some(Err(())) => continue,
            None => {}
        }
        let stripped = params.split(';').any(|p| p.replace(' ', "") == "nulls=stripped");
        let found = match (media.as_str(), stripped) {
            ("application/vnd.pgrst.object+json" | "application/vnd.pgrst.object", false) => Some(Accept::Object),
            ("application/vnd.pgrst.object+json" | "application/vnd.pgrst.object", true) => Some(Accept::ObjectStripped),
            ("application/vnd.pgrst.array+json" | "application/vnd.pgrst.array", true) => Some(Accept::JsonStripped),
            ("application/vnd.pgrst.array+json" | "application/vnd.pgrst.array", false) => Some(Accept::Json),
            ("text/csv", _) => Some(Accept::Csv),
            ("application/json" | "*/*" | "application/*" | "", _) => Some(Accept::Json),
            _ => None,
        };
        if let Some(a) = found {
            return Ok((a, None));
        }
    }
    Err(unacceptable(headers))
}

/// The items of every `Accept` header, in order: each one's media type (trimmed)
/// and its parameters. Items refused with `q=0` are left out (RFC 9110).
pub fn accept_items(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers.get_all("accept").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).filter_map(|item| {
        let (media, params) = item.split_once(';').unwrap_or((item, ""));
        let refused = params.split(';').any(|p| p.trim().strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok()) == Some(0.0));
        (!refused).then_some((media.trim(), params))
    })
}

/// 406 PGRST107, naming what was asked for.
pub fn unacceptable(headers: &HeaderMap) -> RestError {
    let asked: Vec<&str> = headers.get_all("accept").iter().filter_map(|v| v.to_str().ok()).collect();
    RestError::new(pgrst::UNACCEPTABLE_MEDIA, format!("None of these media types are available: {}", asked.join(", ")), None, None)
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
    use super::{accept, media_params, Accept, Plan};
    use axum::http::HeaderMap;

    fn with(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("accept", v.parse().unwrap());
        h
    }

    #[test]
    fn media_types_as_postgrest_names_them() {
        let a = |v: &str| accept(&with(v)).map(|(a, plan)| (a, plan.is_some()));
        assert_eq!(a("application/vnd.pgrst.array+json;nulls=stripped").unwrap(), (Accept::JsonStripped, false));
        assert_eq!(a("application/vnd.pgrst.array; nulls=stripped").unwrap(), (Accept::JsonStripped, false));
        assert_eq!(a("application/vnd.pgrst.array").unwrap(), (Accept::Json, false));
        assert_eq!(a("application/vnd.pgrst.object+json;nulls=stripped").unwrap(), (Accept::ObjectStripped, false));
        assert_eq!(a("text/plain, text/csv").unwrap(), (Accept::Csv, false));
        assert_eq!(a("Application/JSON").unwrap(), (Accept::Json, false));
        assert_eq!(a("image/png").unwrap_err().code, "PGRST107");
        // Plans are off unless DB_PLAN_ENABLED: the next acceptable type is taken.
        assert_eq!(a("application/vnd.pgrst.plan+json, text/csv").unwrap(), (Accept::Csv, false));
    }

    #[test]
    fn plan_parameters_as_postgrest_reads_them() {
        let p = |json: bool, of: Accept, options: Vec<&'static str>| Plan { json, of, options };
        assert_eq!(p(true, Accept::Json, vec![]).content_type(), "application/vnd.pgrst.plan+json; for=\"application/json\"; charset=utf-8");
        assert_eq!(p(false, Accept::Object, vec!["analyze", "wal"]).explain(), "EXPLAIN (FORMAT TEXT, ANALYZE, WAL)");
        assert_eq!(
            p(false, Accept::Object, vec!["verbose"]).content_type(),
            "application/vnd.pgrst.plan+text; for=\"application/vnd.pgrst.object+json\"; options=verbose; charset=utf-8"
        );
        assert_eq!(media_params(" for=\"a;b\"; Options=x"), vec![("for".to_owned(), "a;b".to_owned()), ("options".to_owned(), "x".to_owned())]);
    }
}
