//! Running statements *as the caller*: the request's role, JWT claims and request
//! settings (`request.method`, `request.path`, `request.headers`, `request.cookies`), read-only mode,
//! time zone and statement timeout are set transaction-locally, so GRANTs and RLS
//! decide what the statement may see and do, and a pooled connection carries nothing
//! over to the next request.

use super::error::DbError;

/// Sets up a transaction as the caller; its parameters are those of [`RequestInfo`]
/// in [`setup_params`] order. Its one row has no columns: the settings' values (the
/// headers, the claims) are not sent back to be read and thrown away (Postgres
/// keeps a subquery's volatile outputs, so every set_config still runs). A writable
/// transaction is left as it began: setting `transaction_read_only` off is a no-op
/// in a read-write transaction and an error in a read-only one (after the
/// statement's snapshot), and costs Postgres a GUC change per request.
pub const SETUP: &str = "SELECT FROM (SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true), \
                            set_config('request.method', $3, true), set_config('request.path', $4, true), \
                            set_config('request.headers', $5, true), set_config('request.cookies', $9, true), \
                            CASE WHEN $6 THEN set_config('transaction_read_only', 'on', true) END, \
                            CASE WHEN $7::text IS NOT NULL THEN set_config('timezone', $7, true) END, \
                            CASE WHEN $8::text IS NOT NULL THEN set_config('statement_timeout', $8, true) END) _s";

/// [`SETUP`] as one call of the extension's `pgr.request_setup` (the same settings,
/// order and checks, set by `set_config_option` in C): Postgres compiles and runs one
/// function call instead of nine expressions under a subquery, and reads no values
/// back. Same parameters as [`SETUP`].
pub const SETUP_CALL: &str = "SELECT pgr.request_setup($1, $2, $3, $4, $5, $9, $6, $7, $8)";

/// Whether [`SETUP_CALL`] can run: the function exists (an extension built before it
/// lacks it) and the connection's role may call it.
pub const SETUP_CALL_PRESENT: &str = "SELECT has_schema_privilege(n, 'USAGE') AND has_function_privilege(f, 'EXECUTE') \
                                        FROM to_regnamespace('pgr') n, to_regprocedure('pgr.request_setup(text, text, text, text, text, text, boolean, text, text)') f";

/// True for the error of a [`SETUP_CALL`] whose function is gone or no longer
/// callable (dropped, EXECUTE revoked, schema `pgr` dropped or closed) since the schema
/// cache found it: the request is set up again with [`SETUP`].
pub fn setup_call_gone(f: &super::pipeline::DbFields) -> bool {
    match f.code.as_str() {
        "42883" | "42501" => f.message.contains("request_setup") || f.message == "permission denied for schema pgr",
        "3F000" => f.message == "schema \"pgr\" does not exist",
        _ => false,
    }
}

/// Request facts handed to Postgres as `request.*` settings, and how the
/// transaction runs.
pub struct RequestInfo<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Path below the product's base (e.g. below /rest/v1).
    pub path: &'a str,
    /// Lower-cased headers (Cookie left out) as a JSON object.
    pub headers: String,
    /// The request's cookies as a JSON object.
    pub cookies: String,
    /// Run the transaction READ ONLY (GET on functions).
    pub read_only: bool,
    /// Read `response.headers` / `response.status` after the statement (RPC).
    pub response_gucs: bool,
    /// `Prefer: timezone=`: the session time zone of this transaction.
    pub timezone: Option<String>,
    /// The request role's `statement_timeout` (from `ALTER ROLE ... SET`).
    pub statement_timeout: Option<String>,
    /// `Prefer: handling=strict, max-affected=n`: roll back (400 PGRST124) when the
    /// statement touches more rows.
    pub max_affected: Option<i64>,
    /// A write under `Accept: application/vnd.pgrst.object`: exactly one row, or the
    /// transaction rolls back (406 PGRST116), as PostgREST.
    pub singular: bool,
    /// PUT: exactly one row is written, or the transaction rolls back (400
    /// PGRST115: the body's keys did not match the URL's), as PostgREST.
    pub put_one: bool,
}

impl Default for RequestInfo<'_> {
    fn default() -> Self {
        RequestInfo {
            method: "",
            path: "",
            headers: "{}".into(),
            cookies: "{}".into(),
            read_only: false,
            response_gucs: false,
            timezone: None,
            statement_timeout: None,
            max_affected: None,
            singular: false,
            put_one: false,
        }
    }
}

impl<'a> RequestInfo<'a> {
    /// A request of `method` on `path` with no headers passed on.
    pub fn new(method: &'a str, path: &'a str) -> Self {
        RequestInfo { method, path, ..Default::default() }
    }
}

/// Who a transaction runs as: the Postgres role a request may take and its claims
/// (the JSON text of `request.jwt.claims`). Built from the request's credential by
/// `http::caller::Caller::run_as`.
pub struct RunAs<'a> {
    /// The role (`SET ROLE` transaction-locally; Postgres checks membership).
    pub role: &'a str,
    /// The verified claims as JSON text.
    pub claims: &'a str,
}

/// [`SETUP`]'s parameters as text (the pipeline's form).
pub fn setup_params<'s>(who: &'s RunAs<'_>, info: &'s RequestInfo<'_>) -> Vec<Option<&'s str>> {
    vec![
        Some(who.role),
        Some(who.claims),
        Some(info.method),
        Some(info.path),
        Some(&info.headers),
        Some(if info.read_only { "true" } else { "false" }),
        info.timezone.as_deref(),
        info.statement_timeout.as_deref(),
        Some(&info.cookies),
    ]
}

/// A `statement_timeout` setting as Postgres reads it (`3s`, `1min`, `500ms`, a bare
/// number of milliseconds); None for 0 (no timeout) or what cannot be read.
pub fn timeout_duration(setting: &str) -> Option<std::time::Duration> {
    let s = setting.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let n: f64 = s[..split].parse().ok()?;
    let ms = match s[split..].trim().to_ascii_lowercase().as_str() {
        "" | "ms" => n,
        "us" => n / 1000.0,
        "s" => n * 1000.0,
        "min" => n * 60_000.0,
        "h" => n * 3_600_000.0,
        "d" => n * 86_400_000.0,
        _ => return None,
    };
    (ms.is_finite() && ms >= 1.0).then(|| std::time::Duration::from_millis(ms as u64))
}

/// `request.headers` and `request.cookies` as PostgREST sets them: the headers with
/// lower-cased names, Cookie left out (the last of a repeated header wins); the
/// cookies by name (the first of a repeated name wins, as PostgREST's lookup does).
/// Each a JSON object with its keys in order, written straight from the header map
/// (this runs for every request). Values are read as UTF-8 (a value with bytes that
/// are not, with U+FFFD in their place; a Cookie header that is not UTF-8 is left
/// out).
pub fn request_settings(headers: &axum::http::HeaderMap) -> (String, String) {
    let mut h: Vec<(&str, std::borrow::Cow<'_, str>)> = Vec::with_capacity(headers.len());
    let mut cookies: Vec<(&str, &str)> = Vec::new();
    for (k, v) in headers {
        if k == axum::http::header::COOKIE {
            let Ok(v) = std::str::from_utf8(v.as_bytes()) else { continue };
            for pair in v.split(';') {
                let Some((name, value)) = pair.split_once('=') else { continue };
                let name = name.trim();
                if !name.is_empty() {
                    cookies.push((name, value.trim()));
                }
            }
        } else {
            h.push((k.as_str(), String::from_utf8_lossy(v.as_bytes())));
        }
    }
    // Stable sorts: a repeated name keeps its arrival order.
    h.sort_by(|a, b| a.0.cmp(b.0));
    cookies.sort_by(|a, b| a.0.cmp(b.0));
    (json_object(&h, true), json_object(&cookies, false))
}

/// A JSON object of `pairs` (sorted by name); of a repeated name, the last or the
/// first pair.
fn json_object<V: AsRef<str>>(pairs: &[(&str, V)], last_wins: bool) -> String {
    let mut out = Vec::with_capacity(2 + pairs.iter().map(|(k, v)| k.len() + v.as_ref().len() + 6).sum::<usize>());
    out.push(b'{');
    for (i, (k, v)) in pairs.iter().enumerate() {
        let repeated = if last_wins { pairs.get(i + 1).is_some_and(|n| n.0 == *k) } else { i > 0 && pairs[i - 1].0 == *k };
        if repeated {
            continue;
        }
        if out.len() > 1 {
            out.push(b',');
        }
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, k);
        out.push(b':');
        let _ = serde_json::to_writer(&mut out, v.as_ref());
    }
    out.push(b'}');
    String::from_utf8(out).unwrap_or_else(|_| "{}".to_owned())
}

/// Opens a transaction on `client` running as `who`.
pub async fn begin<'a>(client: &'a mut deadpool_postgres::Object, who: &RunAs<'_>, info: &RequestInfo<'_>) -> Result<deadpool_postgres::Transaction<'a>, DbError> {
    let tx = client.transaction().await?;
    let stmt = tx.prepare_cached(SETUP).await?;
    tx.query(&stmt, &[&who.role, &who.claims, &info.method, &info.path, &info.headers, &info.read_only, &info.timezone, &info.statement_timeout, &info.cookies]).await?;
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use super::{request_settings, setup_call_gone, timeout_duration};
    use serde_json::{json, Value};
    use std::time::Duration;

    #[test]
    fn cookies_are_split_out_of_the_headers() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("cookie", "a=1; b = two;c=x=y; a=3".parse().unwrap());
        h.insert("X-Thing", "v".parse().unwrap());
        let (headers, cookies) = request_settings(&h);
        assert_eq!(serde_json::from_str::<Value>(&headers).unwrap(), json!({"x-thing": "v"}));
        assert_eq!(serde_json::from_str::<Value>(&cookies).unwrap(), json!({"a": "1", "b": "two", "c": "x=y"}));
    }

    #[test]
    fn headers_are_a_sorted_object_where_the_last_repeat_wins() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("x-b", "1".parse().unwrap());
        h.append("x-a", "first".parse().unwrap());
        h.append("x-a", "say \"hi\"\\".parse().unwrap());
        h.insert("cookie", "z=1; y=2; z=3".parse().unwrap());
        let (headers, cookies) = request_settings(&h);
        assert_eq!(headers, r#"{"x-a":"say \"hi\"\\","x-b":"1"}"#);
        assert_eq!(cookies, r#"{"y":"2","z":"1"}"#);
        assert_eq!(request_settings(&axum::http::HeaderMap::new()), ("{}".to_owned(), "{}".to_owned()));
    }

    #[test]
    fn values_beyond_ascii_are_kept() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("x-name", axum::http::HeaderValue::from_bytes("Zoë 😀".as_bytes()).unwrap());
        h.insert("x-latin1", axum::http::HeaderValue::from_bytes(b"caf\xe9").unwrap());
        h.insert("cookie", axum::http::HeaderValue::from_bytes("who=Zoë".as_bytes()).unwrap());
        let (headers, cookies) = request_settings(&h);
        assert_eq!(serde_json::from_str::<Value>(&headers).unwrap(), json!({"x-latin1": "caf\u{fffd}", "x-name": "Zoë 😀"}));
        assert_eq!(serde_json::from_str::<Value>(&cookies).unwrap(), json!({"who": "Zoë"}));
        h.insert("cookie", axum::http::HeaderValue::from_bytes(b"who=caf\xe9").unwrap());
        assert_eq!(request_settings(&h).1, "{}");
    }

    #[test]
    fn only_a_gone_set_up_function_fails_over() {
        let f = |code: &str, message: &str| crate::db::pipeline::DbFields { code: code.into(), message: message.into(), ..Default::default() };
        assert!(setup_call_gone(&f("42883", "function pgr.request_setup(unknown, unknown) does not exist")));
        assert!(setup_call_gone(&f("42501", "permission denied for function request_setup")));
        assert!(setup_call_gone(&f("42501", "permission denied for schema pgr")));
        assert!(setup_call_gone(&f("3F000", "schema \"pgr\" does not exist")));
        assert!(!setup_call_gone(&f("42501", "permission denied for table items")));
        assert!(!setup_call_gone(&f("42883", "function public.nope() does not exist")));
        assert!(!setup_call_gone(&f("22023", "invalid value for parameter \"TimeZone\": \"request_setup\"")));
    }

    #[test]
    fn statement_timeouts_read_as_postgres_reads_them() {
        assert_eq!(timeout_duration("3s"), Some(Duration::from_secs(3)));
        assert_eq!(timeout_duration(" 8s "), Some(Duration::from_secs(8)));
        assert_eq!(timeout_duration("1500"), Some(Duration::from_millis(1500)));
        assert_eq!(timeout_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(timeout_duration("2min"), Some(Duration::from_secs(120)));
        assert_eq!(timeout_duration("0"), None);
        assert_eq!(timeout_duration("soon"), None);
        assert_eq!(timeout_duration("3 fortnights"), None);
    }
}
