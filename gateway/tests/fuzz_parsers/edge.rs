//! Targets at the edges of the gateway: credentials (Authorization / apikey / query
//! token, JWTs), auth inputs (e-mail, PKCE, redirect targets), webhook URLs (SSRF
//! classifier) and realtime client frames.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderValue};
use base64::Engine;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Value};

use crate::driver::{fuzz, SMALL_STACK};
use crate::gen::*;
use pgstack_gateway::auth::{pkce, redirect, validate};
use pgstack_gateway::config::{Config, Source};
use pgstack_gateway::http::caller::Caller;
use pgstack_gateway::keys;
use pgstack_gateway::realtime::{gate, hub::Hub};
use pgstack_gateway::ssrf::{is_internal, Policy};

const SITE: &str = "http://app.test";

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let map: HashMap<String, String> = [
            ("DATABASE_URL", "postgres://authenticator@127.0.0.1:1/postgres".to_owned()),
            ("JWT_SECRET", keys::generate_secret()),
            ("SITE_URL", SITE.to_owned()),
            ("ADDITIONAL_REDIRECT_URLS", "https://ok.test/cb*,myapp://callback,exact://x".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Config::load(&Source::from_map(map)).expect("fuzz config")
    })
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A token and whether it is really signed with the project's JWT secret.
fn token() -> impl Strategy<Value = (String, bool)> {
    const PIECES: &[&str] = &["eyJhbGciOiJIUzI1NiJ9", "eyJhbGciOiJub25lIn0", "e30", ".", ".", "..", "=", "+", "/", "A", "_", "-", "é", " ", "\u{0}"];
    let headers = select(
        &[
            r#"{"alg":"none"}"#,
            r#"{"alg":"HS256"}"#,
            r#"{"alg":"HS256","typ":"JWT"}"#,
            r#"{"alg":"HS512"}"#,
            r#"{"alg":"RS256"}"#,
            r#"{"alg":"HS256","crit":["x"]}"#,
            r#"{"alg":"HS256","kid":"../../etc/passwd"}"#,
            r#"{}"#,
            r#"[]"#,
            r#"{"alg":null}"#,
        ][..],
    );
    let claims = prop_oneof![
        json_value(),
        (
            select(&["anon", "authenticated", "service_role", "pgstack_auth_admin", "pg_read_server_files", "postgres", "none", "x"][..]),
            prop_oneof![Just(Value::Null), any::<i64>().prop_map(Value::from), Just(json!(4102444800i64))]
        )
            .prop_map(|(role, exp)| json!({"role": role, "exp": exp, "sub": "00000000-0000-0000-0000-000000000001"})),
    ];
    let signature = prop_oneof![Just(String::new()), bytes(40).prop_map(|b| b64(&b)), Just("AAAA".to_owned())];
    prop_oneof![
        2 => soup(PIECES, 12).prop_map(|t| (t, false)),
        3 => (headers, claims.clone(), signature).prop_map(|(h, c, s)| (format!("{}.{}.{s}", b64(h.as_bytes()), b64(c.to_string().as_bytes())), false)),
        2 => claims.prop_map(|c| {
            let key = jsonwebtoken::EncodingKey::from_secret(config().jwt_secret.expose().as_bytes());
            (jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &c, &key).expect("sign"), true)
        }),
    ]
}

#[test]
fn credentials_and_jwts() {
    let make = || (token(), 0u8..6, select(&["Bearer ", "bearer ", "BEARER  ", "Basic ", "", "Bearer", " Bearer "][..]));
    fuzz("credentials_and_jwts", SMALL_STACK, make, |((token, signed), place, scheme)| {
        let cfg = config();
        let mut h = HeaderMap::new();
        let mut query = None;
        match place {
            0 | 1 => {
                if let Ok(v) = HeaderValue::from_str(&format!("{scheme}{token}")) {
                    h.insert("authorization", v);
                }
            }
            2 | 3 => {
                if let Ok(v) = HeaderValue::from_str(&token) {
                    h.insert("apikey", v);
                }
            }
            4 => query = Some(token.as_str()),
            _ => {
                h.insert("authorization", HeaderValue::from_bytes(b"Bearer \xff\xfe").expect("obs-text"));
                query = Some(token.as_str());
            }
        }
        let resolved = Caller::resolve(&h, query, cfg);
        if !signed {
            prop_assert!(!matches!(resolved, Ok(Some(_))), "an unsigned token authenticated: {resolved:?}");
            prop_assert!(keys::verify(&token, &cfg.jwt_secret).is_err());
            prop_assert!(keys::verify_any(&token, &cfg.jwt_secret).is_err());
        }
        if let Ok(Some(c)) = &resolved {
            let role = c.pg_role.to_ascii_lowercase();
            prop_assert!(!role.starts_with("pg_") && !role.starts_with("pgstack_") && role != "none", "reserved role {role:?} accepted");
            prop_assert!(c.claims.get("url").is_none(), "a signed-URL token authenticated");
        }
        let _ = Caller::from_token(&token, cfg);
        Ok(())
    });
}

/// Hosts a redirect may land on (SITE_URL and ADDITIONAL_REDIRECT_URLS).
const REDIRECT_HOSTS: &[&str] = &["app.test", "ok.test", "callback", "x"];

#[test]
fn auth_inputs_and_redirects() {
    let make = || (mixed(URL, 16), mixed(&["a", "@", ".", "..", "b.test", " ", "<", ",", "\u{0}", "É", "x"], 12), mixed(&["a", "-", ".", "_", "~", "=", "+", "/", "é", "A"], 160));
    fuzz("auth_inputs_and_redirects", SMALL_STACK, make, |(url, email, verifier)| {
        let cfg = config();
        let target = redirect::target(cfg, Some(&url));
        if target != cfg.site_url {
            prop_assert_eq!(target.as_str(), url.trim());
            if let Ok(u) = reqwest::Url::parse(&target) {
                if let Some(host) = u.host_str() {
                    prop_assert!(REDIRECT_HOSTS.contains(&host) && u.username().is_empty(), "redirect to {target:?} (host {host:?}) allowed");
                }
            }
        }
        let _ = redirect::with_query(&url, &[("code", email.clone())]);
        let _ = redirect::with_fragment(&url, &[("access_token", verifier.clone())]);
        if let Ok(e) = validate::email(&email) {
            prop_assert!(e.len() <= 320 && e.matches('@').count() == 1 && !e.chars().any(|c| c.is_whitespace() || c.is_control()), "{e:?}");
        }
        for method in [None, Some("S256"), Some("plain"), Some(verifier.as_str())] {
            if let Ok(Some(c)) = pkce::parse(Some(&verifier), method) {
                prop_assert!((43..=128).contains(&c.challenge.len()), "{c:?}");
            }
        }
        let _ = pkce::check_verifier(&verifier);
        let _ = pkce::verifies(&verifier, "s256", &email);
        let _ = pkce::verifies(&verifier, "plain", &verifier);
        Ok(())
    });
}

/// An IPv4 address in one of the spellings URL parsers accept.
fn v4_spelling() -> impl Strategy<Value = String> {
    (any::<u32>(), 0u8..6).prop_map(|(n, how)| {
        let o = n.to_be_bytes();
        match how {
            0 => Ipv4Addr::from(n).to_string(),
            1 => n.to_string(),
            2 => format!("0x{n:x}"),
            3 => format!("0{:o}.{}.{}.{}", o[0], o[1], o[2], o[3]),
            4 => format!("[::ffff:{}]", Ipv4Addr::from(n)),
            _ => format!("[64:ff9b::{}]", Ipv4Addr::from(n)),
        }
    })
}

#[test]
fn webhook_urls() {
    let make = || {
        let host = prop_oneof![v4_spelling(), any::<u128>().prop_map(|n| format!("[{}]", Ipv6Addr::from(n))), soup(URL, 3)];
        let structured = (select(&["http://", "https://", "HTTP://", "ftp://", ""][..]), host, select(&["", ":80", ":8080", ":0"][..]), soup(URL, 3))
            .prop_map(|(s, h, p, rest)| format!("{s}{h}{p}/{rest}"));
        (prop_oneof![structured, mixed(URL, 12)], any::<u32>(), any::<bool>())
    };
    fuzz("webhook_urls", SMALL_STACK, make, |(raw, n, allow_listed)| {
        let policy = if allow_listed { Policy { allow_private: false, allowed_hosts: vec!["10.0.0.1".into(), "localhost:8080".into()], setting: "X" } } else { Policy::default() };
        if let Ok(url) = policy.check_url(&raw) {
            prop_assert!(matches!(url.scheme(), "http" | "https") && url.username().is_empty() && url.password().is_none(), "{url}");
            // The parsed host as the connection would use it (IP literals are normalised).
            let ip = url.host_str().and_then(|h| h.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok());
            if let Some(ip) = ip {
                let exempt = allow_listed && ip == IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
                prop_assert!(exempt || !is_internal(ip), "{raw:?} → {url} reaches internal {ip}");
            }
        }
        // IPv6 forms that embed an IPv4 address are judged by that address.
        let v4 = Ipv4Addr::from(n);
        let o = v4.octets();
        let inside = is_internal(IpAddr::V4(v4));
        let hi = u16::from_be_bytes([o[0], o[1]]);
        let lo = u16::from_be_bytes([o[2], o[3]]);
        for v6 in [v4.to_ipv6_mapped(), v4.to_ipv6_compatible(), Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo), Ipv6Addr::new(0x2002, hi, lo, 0, 0, 0, 0, 1)] {
            prop_assert_eq!(is_internal(IpAddr::V6(v6)), inside, "{} vs {}", v6, v4);
        }
        Ok(())
    });
}

#[test]
fn realtime_frames() {
    let make = || {
        let frame = prop_oneof![
            3 => json_value().prop_map(|state| json!({"type": "presence", "state": state}).to_string()),
            2 => json_value().prop_map(|payload| json!({"type": "broadcast", "payload": payload}).to_string()),
            2 => soup(JSON, 48),
            1 => deep_json().prop_map(|d| format!("{{\"type\":\"presence\",\"state\":{d}}}")),
            1 => text(64),
        ];
        (frame, json_value(), json_value())
    };
    fuzz("realtime_frames", SMALL_STACK, make, |(text, audience, claims)| {
        let hub = Hub::new(8);
        hub.set_presence_limits(4096, 1 << 20);
        let channel = hub.channel("fuzz");
        // What the socket does with a client frame (realtime/socket.rs `handle`).
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            match v.get("type").and_then(Value::as_str) {
                Some("presence") => {
                    let state = v.get("state").cloned().unwrap_or_else(|| json!({}));
                    if channel.presence_set("c1", state.clone()).is_ok() {
                        channel.publish(1, json!({"type": "presence_join", "channel": "fuzz", "client_id": "c1", "state": state}).to_string());
                    }
                    prop_assert!(hub.presence_bytes() <= 4096);
                    channel.presence_remove("c1");
                    prop_assert_eq!(hub.presence_bytes(), 0);
                }
                Some("broadcast") => channel.publish(1, json!({"type": "broadcast", "from": "c1", "payload": v.get("payload")}).to_string()),
                _ => {}
            }
        }
        let _ = gate::satisfies(&audience, &claims);
        let _ = gate::satisfies(&json!({"role": "authenticated", "app_metadata.team": ["red"]}), &claims);
        Ok(())
    });
}

/// SQL pieces that make statements, and the pieces that hide or split them.
const SQL: &[&str] = &[
    "select",
    "1",
    "*",
    "from",
    "t",
    "where",
    "a",
    "=",
    "'x'",
    "'; delete from t; '",
    ";",
    ";;",
    "--",
    "\n",
    "/*",
    "*/",
    "$$",
    "$q$",
    "(",
    ")",
    "with",
    "d",
    "as",
    "delete",
    "update",
    "insert",
    "into",
    "values",
    "for",
    "share",
    "union",
    "all",
    "explain",
    "analyze",
    "show",
    "lateral",
    ",",
    "\"",
    "E'\\''",
    "begin",
    "commit",
    "set",
    "x",
    "returning",
    "table",
    "recursive",
    "e'\\\\'",
    "::int",
    "$1",
    " not ",
    " join ",
    " on ",
    " case ",
    " when ",
    " then ",
    " else ",
    " end ",
    " and ",
    " or ",
    "||",
    "array[",
    "]",
    " is ",
    " null",
    " in ",
    " between ",
    "-",
    " cross join ",
    " union ",
];

#[test]
fn workbench_sql() {
    let make = || prop_oneof![4 => soup(SQL, 24), 1 => mixed(SQL, 24), 1 => depth().prop_map(|d| nest("(select ", "1", ")", d))];
    // Production parses on a thread of its own with this stack (db::classify).
    fuzz("workbench_sql", pgstack_gateway::db::classify::PARSE_STACK, make, |sql| {
        use pgstack_gateway::db::classify::{classify_now, nesting_estimate, tree_depth, Kind, MAX_NESTING};
        // The token estimate bounds the real depth (the estimate is what keeps the
        // recursive decode within the parsing thread's stack).
        if let Ok(estimate) = nesting_estimate(&sql) {
            if estimate <= MAX_NESTING {
                if let Some(depth) = tree_depth(&sql) {
                    prop_assert!(depth <= estimate + 24, "{sql:?}: depth {depth} > estimate {estimate}");
                }
            }
        }
        if let Ok(st) = classify_now(&sql) {
            // A read is wrapped as a subquery for paging: the wrapped text must still
            // be exactly one read, whatever comments and quotes the statement holds.
            if st.kind == Kind::Select && nesting_estimate(&sql).is_ok_and(|e| e + 20 < MAX_NESTING) {
                let wrapped = format!("SELECT * FROM (\n{}\n) AS pgstack_q", st.text);
                let again = classify_now(&wrapped);
                prop_assert!(matches!(&again, Ok(w) if w.kind == Kind::Select), "{sql:?} wraps into {again:?}");
            }
            prop_assert!(!st.text.is_empty());
        }
        Ok(())
    });
}
