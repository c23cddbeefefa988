//! Fuzz harness for every parser a request reaches: the REST query grammar and the
//! planner behind it, Prefer / Accept / Range / profile headers, JSON and CSV bodies,
//! storage paths, Range and content headers, bucket sizes, realtime client frames,
//! credentials (Authorization / apikey / JWTs), redirect targets and webhook URLs.
//!
//! Each target asserts: no panic, no stack overflow (the target runs on a 256 KiB
//! thread), a bounded time per input, and the target's own safety properties (errors
//! are 4xx; refused depths stay refused; accepted paths cannot traverse; accepted
//! redirects stay on allowed hosts; accepted webhook IP literals are not internal;
//! unsigned tokens never authenticate; ...).
//!
//! Bounded mode (CI, the default): `FUZZ_CASES` cases per target (2000).
//! Long mode, 30 minutes per target, one target at a time:
//! `FUZZ_SECONDS=1800 cargo test --release -p pgstack-gateway --test fuzz_parsers -- --nocapture --test-threads 1`
//! (or `scripts/fuzz`). See `fuzz_parsers/driver.rs` for the other settings.

#[path = "fuzz_parsers/driver.rs"]
mod driver;
#[path = "fuzz_parsers/edge.rs"]
mod edge;
#[path = "fuzz_parsers/gen.rs"]
mod gen;

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderValue, Method};
use proptest::prelude::*;
use serde_json::Value;

use driver::{fuzz, SMALL_STACK};
use gen::*;
use pgstack_gateway::db::schema_cache::{Column, ForeignKey, SchemaCache, Table};
use pgstack_gateway::rest::error::RestError;
use pgstack_gateway::rest::plan::{self, OnConflict, Payload};
use pgstack_gateway::rest::prefer::Accept;
use pgstack_gateway::rest::request::rows::Rows;
use pgstack_gateway::rest::request::{self, MAX_DEPTH};
use pgstack_gateway::rest::{format, prefer};
use pgstack_gateway::storage::{buckets, headers, objects, paths};

/// A refused request is the client's fault: 4xx (or PostgREST's 300 for an ambiguous
/// embed), never a 5xx.
fn client_error<T>(r: &Result<T, RestError>) -> Result<(), TestCaseError> {
    if let Err(e) = r {
        prop_assert!((300..500).contains(&e.status.as_u16()), "{} {}: {}", e.status, e.code, e.message);
    }
    Ok(())
}

/// Request text never shapes the statement: outside quoted identifiers and string
/// literals the SQL holds no comment, no statement separator and no control
/// character, and its quotes are balanced (what a planner bug that pastes request
/// text would break).
fn sql_shape(r: &Result<pgstack_gateway::db::sql::Sql, RestError>) -> Result<(), TestCaseError> {
    let Ok(sql) = r else { return Ok(()) };
    let b = sql.text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'') => {
                i += 1;
                loop {
                    prop_assert!(i < b.len(), "unbalanced {} in {}", q as char, sql.text);
                    if b[i] == q {
                        if b.get(i + 1) == Some(&q) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => prop_assert!(false, "comment in {}", sql.text),
            b'/' if b.get(i + 1) == Some(&b'*') => prop_assert!(false, "comment in {}", sql.text),
            b';' => prop_assert!(false, "separator in {}", sql.text),
            c if c < 0x20 && c != b' ' => prop_assert!(false, "control byte in {}", sql.text),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

// ---------------------------------------------------------------- REST query grammar

#[test]
fn rest_query() {
    let make = || {
        let q = prop_oneof![5 => mixed(QUERY, 80), 2 => deep_query().prop_map(|(q, _)| q), 1 => bytes(200).prop_map(|b| String::from_utf8_lossy(&b).into_owned())];
        (q, any::<bool>())
    };
    fuzz("rest_query", SMALL_STACK, make, |(q, rpc)| {
        let r = request::parse_query(&q, rpc);
        client_error(&r)
    });
}

#[test]
fn rest_query_nesting() {
    fuzz("rest_query_nesting", SMALL_STACK, deep_query, |(q, must_refuse)| {
        let r = request::parse_query(&q, false);
        client_error(&r)?;
        if must_refuse {
            prop_assert!(r.is_err(), "nesting past MAX_DEPTH = {MAX_DEPTH} was accepted");
        }
        Ok(())
    });
}

#[test]
fn rest_filter_field_list() {
    let make = || (mixed(QUERY, 24), mixed(QUERY, 24), prop::sample::select(&[',', '.', ':', '('][..]));
    fuzz("rest_filter_field_list", SMALL_STACK, make, |(k, v, sep)| {
        client_error(&request::parse_filter(&k, &v))?;
        client_error(&request::parse_field(&k))?;
        client_error(&request::parse_list(&v))?;
        // split_top only splits: the pieces put back together are the input.
        let parts = request::split_top(&v, sep);
        prop_assert_eq!(parts.join(sep.to_string().as_str()), v.clone());
        Ok(())
    });
}

// ---------------------------------------------------------------- query → SQL (planner)

fn col(name: &str, ty: &str) -> Column {
    Column { name: name.into(), type_name: ty.into(), scalar: None, nullable: true, has_default: name == "id", generated: false, default_sql: None }
}

fn table(name: &str, columns: Vec<Column>) -> Table {
    Table { schema: "public".into(), name: name.into(), is_view: false, quiet: true, columns, primary_key: vec!["id".into()], writable: 4 | 8 | 16 }
}

fn fk(name: &str, from: (&str, &str), to: (&str, &str), unique: bool) -> ForeignKey {
    let p = |t: &str| ("public".to_owned(), t.to_owned());
    ForeignKey { name: name.into(), table: p(from.0), columns: vec![from.1.into()], ref_table: p(to.0), ref_columns: vec![to.1.into()], unique }
}

/// items (self-referencing, so embeds can nest to any depth) → owners; items ↔ tags
/// through item_tags.
fn cache() -> &'static SchemaCache {
    static CACHE: OnceLock<SchemaCache> = OnceLock::new();
    CACHE.get_or_init(|| {
        let tables = [
            table(
                "items",
                vec![
                    col("id", "integer"),
                    col("name", "text"),
                    col("data", "jsonb"),
                    col("tags", "text[]"),
                    col("owner", "integer"),
                    col("parent", "integer"),
                    col("qty", "numeric"),
                    col("x y", "text"),
                ],
            ),
            table("owners", vec![col("id", "integer"), col("name", "text")]),
            table("tags", vec![col("id", "integer"), col("tag", "text")]),
            table("item_tags", vec![col("id", "integer"), col("item_id", "integer"), col("tag_id", "integer")]),
        ];
        let types = [("text", "\"pg_catalog\".\"text\""), ("int4", "\"pg_catalog\".\"int4\""), ("jsonb", "\"pg_catalog\".\"jsonb\"")];
        SchemaCache {
            schemas: vec!["public".into()],
            tables: tables.into_iter().map(|t| (("public".to_owned(), t.name.clone()), t)).collect(),
            functions: HashMap::new(),
            foreign_keys: vec![
                fk("items_owner_fkey", ("items", "owner"), ("owners", "id"), false),
                fk("items_parent_fkey", ("items", "parent"), ("items", "id"), false),
                fk("item_tags_item_fkey", ("item_tags", "item_id"), ("items", "id"), false),
                fk("item_tags_tag_fkey", ("item_tags", "tag_id"), ("tags", "id"), false),
            ],
            role_timeouts: HashMap::new(),
            types: types.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
            // `qty` has a data representation: every formatter / parser path is fuzzed.
            reps: HashMap::from([(
                "numeric".to_owned(),
                pgstack_gateway::db::schema_cache::Representation {
                    to_json: Some("\"public\".\"json\"".into()),
                    from_text: Some("\"public\".\"qty\"".into()),
                    from_json: Some("\"public\".\"qty\"".into()),
                },
            )]),
            request_setup: false,
        }
    })
}

#[test]
fn rest_plan() {
    let make = || {
        let q = prop_oneof![4 => soup(QUERY, 48), 1 => deep_query().prop_map(|(q, _)| q)];
        let accepts = [Accept::Json, Accept::Object, Accept::JsonStripped, Accept::ObjectStripped, Accept::Csv];
        (q, json_value(), prop::sample::select(&["items", "owners", "item_tags"][..]), prop::sample::select(accepts.to_vec()))
    };
    fuzz("rest_plan", SMALL_STACK, make, |(q, body, name, accept)| {
        let c = cache();
        let t = c.table("public", name).expect("fuzz table");
        let Ok(qp) = request::parse_query(&q, false) else { return Ok(()) };
        let read = plan::read(c, t, &qp, Some(plan::CountMode::Exact), accept);
        client_error(&read)?;
        sql_shape(&read)?;
        let delete = plan::delete(c, t, &qp, Some(accept));
        client_error(&delete)?;
        sql_shape(&delete)?;
        let rows = Rows::from_value(&body);
        client_error(&rows)?;
        let Ok(rows) = rows else { return Ok(()) };
        let payload = Payload::new(&rows, qp.columns.as_deref());
        client_error(&payload)?;
        if let Ok(p) = payload {
            for r in [plan::insert(c, t, &qp, &p, OnConflict::Merge, Some(accept), true), plan::update(c, t, &qp, &p, None, true), plan::put(c, t, &qp, &p, Some(accept))] {
                client_error(&r)?;
                sql_shape(&r)?;
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------- REST headers

const HEADER: &[&str] = &[
    "return=representation",
    "return=minimal",
    "return=headers-only",
    "return=",
    "count=exact",
    "count=planned",
    "resolution=merge-duplicates",
    "resolution=ignore-duplicates",
    "tx=rollback",
    "tx=commit",
    "missing=default",
    "handling=strict",
    "handling=lenient",
    "timezone=",
    "UTC",
    "max-affected=",
    "9223372036854775808",
    "-1",
    "5",
    "application/json",
    "application/vnd.pgrst.object+json",
    "application/vnd.pgrst.array+json",
    "text/csv",
    "*/*",
    "nulls=stripped",
    "q=0.5",
    "bytes=",
    "items=",
    "0",
    "-",
    "1",
    "9223372036854775807",
    "-9223372036854775808",
    "public",
    "api",
    "=",
    ",",
    ", ",
    ";",
    " ",
    "\t",
    "x",
    "é",
    "\u{7f}",
    "\u{0}",
    "\u{ff}",
];

#[test]
fn rest_headers() {
    let make = || {
        let headers = prop::collection::vec((0usize..5, prop_oneof![4 => soup(HEADER, 12), 1 => text(16)]), 0..6);
        let page = prop_oneof![Just(None), (0i64..100).prop_map(Some), (0i64..=i64::MAX).prop_map(Some)];
        (headers, page.clone(), page)
    };
    fuzz("rest_headers", SMALL_STACK, make, |(items, offset, limit)| {
        let mut h = HeaderMap::new();
        for (k, v) in items {
            if let Ok(v) = HeaderValue::from_bytes(v.as_bytes()) {
                h.append(["prefer", "accept", "range", "accept-profile", "content-profile"][k], v);
            }
        }
        let p = prefer::prefer(&h);
        let _ = (p.applied(true, true), p.applied(false, false));
        client_error(&prefer::prefer_checked(&h))?;
        client_error(&prefer::accept(&h))?;
        let exposed = vec!["public".to_owned(), "api".to_owned()];
        client_error(&prefer::schema(&h, &Method::GET, &exposed))?;
        client_error(&prefer::schema(&h, &Method::POST, &exposed))?;
        client_error(&prefer::schema(&h, &Method::POST, &[]))?;
        let (mut o, mut l) = (offset, limit);
        let r = prefer::apply_range(&h, &mut o, &mut l);
        client_error(&r)?;
        if r.is_ok() {
            prop_assert!(o.unwrap_or(0) >= 0 && l.unwrap_or(0) >= 0, "offset {o:?} limit {l:?}");
        }
        Ok(())
    });
}

// ---------------------------------------------------------------- bodies

#[test]
fn json_and_csv_bodies() {
    let make = || {
        prop_oneof![
            3 => soup(JSON, 64).prop_map(String::into_bytes),
            2 => deep_json().prop_map(String::into_bytes),
            2 => json_value().prop_map(|v| v.to_string().into_bytes()),
            1 => bytes(256),
            1 => soup(&["a", ",", "\"", "\"\"", "\n", "\r\n", "\r", "NULL", "id", "é", " "], 64).prop_map(String::into_bytes),
        ]
    };
    fuzz("json_and_csv_bodies", SMALL_STACK, make, |body| {
        // A write's rows: read without building values; refused with a 4xx or
        // read whole.
        match Rows::from_json(&body) {
            Ok(rows) => {
                prop_assert!(serde_json::from_str::<serde::de::IgnoredAny>(&rows.json).is_ok(), "rows that are not JSON: {}", rows.json);
                client_error(&Payload::new(&rows, None))?;
                client_error(&Payload::new(&rows, Some(&["id".to_owned()])))?;
            }
            Err(e) => prop_assert!(e.status.is_client_error(), "{e:?}"),
        }
        // serde_json's recursion limit (128) must stay on: deeper bodies are refused.
        if body.len() >= 200 && body[..200].iter().all(|b| *b == b'[') {
            prop_assert!(serde_json::from_slice::<Value>(&body).is_err(), "JSON nested past 200 levels was parsed");
        }
        if let Err(e) = pgstack_gateway::auth::error::parse_body::<Value>(&body) {
            prop_assert!(e.status.is_client_error());
        }
        client_error(&format::parse_csv(&body))?;
        Ok(())
    });
}

// ---------------------------------------------------------------- storage

#[test]
fn storage_paths() {
    let make = || prop_oneof![4 => soup(PATH, 40), 1 => text(64), 1 => prop::collection::vec(prop::sample::select(&['a', '.', '/', 'é'][..]), 1000..1100).prop_map(|v| v.into_iter().collect::<String>())];
    fuzz("storage_paths", SMALL_STACK, make, |raw| {
        let Ok(p) = paths::check(&raw) else { return Ok(()) };
        // One name, one spelling: the stored form checks as itself.
        prop_assert_eq!(paths::check(&p), Ok(p.clone()));
        prop_assert!(!p.is_empty() && !p.starts_with('/') && !p.contains('\\'), "{p:?}");
        prop_assert!(!p.chars().any(char::is_control), "{p:?}");
        let b = p.as_bytes();
        prop_assert!(!(b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic()), "drive letter: {p:?}");
        for seg in p.split('/') {
            prop_assert!(!seg.is_empty() && !seg.trim_end_matches([' ', '.']).is_empty() && seg != "." && seg != "..", "segment {seg:?} of {p:?}");
        }
        Ok(())
    });
}

#[test]
fn storage_range_and_headers() {
    let make = || {
        let v =
            prop_oneof![3 => soup(HEADER, 10), 2 => soup(&["bytes=", "0", "1", "-", ",", " ", "18446744073709551615", "18446744073709551616", "99", "+1"][..], 8), 1 => text(16)];
        let size = prop_oneof![0u64..4, 0u64..1_000_000, any::<u64>(), Just(u64::MAX)];
        (v.clone(), size, v, any::<bool>())
    };
    fuzz("storage_range_and_headers", SMALL_STACK, make, |(range, size, value, public)| {
        if let Ok(Some((first, last))) = objects::byte_range(Some(&range), size) {
            prop_assert!(first <= last && last < size, "range {first}-{last} of {size}");
        }
        let ct = headers::content_type(&value);
        prop_assert!(HeaderValue::from_str(&ct).is_ok() && ct.split('/').count() == 2, "content type {ct:?}");
        let _ = headers::active(&ct);
        let cc = headers::cache_control(Some(&value), public);
        prop_assert!(HeaderValue::from_str(&cc).is_ok(), "cache-control {cc:?}");
        if !public {
            prop_assert!(!cc.split(',').any(|d| matches!(d.trim().split('=').next(), Some("public" | "s-maxage" | "proxy-revalidate"))), "{cc:?}");
        }
        let a = headers::attachment(&value);
        prop_assert!(HeaderValue::from_str(&a).is_ok(), "content-disposition {a:?}");
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(range.as_bytes()) {
            h.insert("range", v);
        }
        let _ = objects::Conditions::from_headers(&h, public);
        Ok(())
    });
}

#[test]
fn storage_bucket_size() {
    let make = || soup(&["1", "0", "9", "99999999999", "9223372036854775807", "-", "+", " ", "B", "KB", "MB", "GB", "kb", "gb", "TB", "x", "é"][..], 8);
    fuzz("storage_bucket_size", SMALL_STACK, make, |s| {
        if let Some(n) = buckets::parse_size(&s) {
            prop_assert!(n > 0, "{s:?} → {n}");
        }
        Ok(())
    });
}

/// Bodies shaped to make collecting a payload's columns quadratic: many rows with
/// distinct keys (JSON), and a wide CSV. Far below the 2 MB body limit.
#[test]
fn rest_payload_adversarial() {
    let bound = driver::time_bound();
    let rows: Vec<Value> = (0..40_000).map(|i| serde_json::json!({ format!("k{i}"): 0 })).collect();
    let t = std::time::Instant::now();
    let rows = Rows::from_value(&Value::Array(rows)).expect("rows");
    let _ = Payload::new(&rows, None);
    let json = t.elapsed();
    let wide_csv = |cols: usize, rows: usize| {
        let mut csv = (0..cols).map(|i| format!("c{i}")).collect::<Vec<_>>().join(",");
        for _ in 0..rows {
            csv.push('\n');
            csv.push_str(&",".repeat(cols - 1));
        }
        csv
    };
    // Past the CSV bounds (1600 columns, 250,000 fields): refused before the tree is built.
    assert_eq!(format::parse_csv(wide_csv(2000, 200).as_bytes()).unwrap_err().status.as_u16(), 413);
    assert_eq!(format::parse_csv(wide_csv(100, 3000).as_bytes()).unwrap_err().status.as_u16(), 413);
    let csv = wide_csv(1500, 60);
    let t = std::time::Instant::now();
    let rows = Rows::from_value(&format::parse_csv(csv.as_bytes()).expect("csv")).expect("rows");
    let _ = Payload::new(&rows, None);
    let wide = t.elapsed();
    println!("40,000 distinct keys: {json:?}; CSV 1500 columns x 60 rows: {wide:?}");
    assert!(json <= bound && wide <= bound, "over the {bound:?} bound: distinct keys {json:?}, wide CSV {wide:?}");
}
