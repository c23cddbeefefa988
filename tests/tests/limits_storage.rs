//! Issue 20 (storage): slow uploads hold only their own sockets. Six raw TCP
//! connections trickle upload bodies (1 byte every 2 s of a declared 1000: four raw
//! POSTs, a multipart POST, a TUS PATCH; and a JSON body of the object list) into a
//! gateway with DB_POOL_SIZE=4; meanwhile
//! /health, the bucket list and a password sign-in answer within a second, and each
//! trickle is answered 408 in the storage error shape once BODY_MIN_RATE's grace period
//! is over (a body that sends nothing: BODY_IDLE_TIMEOUT). Oversized Content-Length,
//! a PUT of a missing object and a refused caller are answered before any body byte.
//! Both backends.

use std::time::{Duration, Instant};

use base64::Engine;
use pgstack_gateway::config::Secret;
use pgstack_gateway::keys;
use pgstack_shared::Role;
use pgstack_tests::{Gateway, TestCluster, JWT_SECRET};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const IDLE: u64 = 3;
const GRACE: u64 = 6;

struct S {
    http: Client,
    gw: Gateway,
    anon: String,
    service: String,
    _tc: TestCluster,
    _dir: tempfile::TempDir,
}

impl S {
    async fn start(backend: &str) -> S {
        let tc = TestCluster::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("objects");
        let secret = Secret::new(JWT_SECRET);
        let (anon, service) = (keys::mint(Role::Anon, &secret).unwrap(), keys::mint(Role::ServiceRole, &secret).unwrap());
        let (idle, grace) = (IDLE.to_string(), GRACE.to_string());
        let gw = Gateway::serve(
            &tc,
            &[
                ("STORAGE_BACKEND", backend),
                ("STORAGE_ROOT", root.to_str().unwrap()),
                ("DB_POOL_SIZE", "4"),
                ("ANON_KEY", &anon),
                ("SERVICE_ROLE_KEY", &service),
                ("BODY_IDLE_TIMEOUT", &idle),
                ("BODY_MIN_RATE", "1024"),
                ("BODY_MIN_RATE_GRACE", &grace),
            ],
        )
        .await
        .unwrap();
        S { http: Client::new(), gw, anon, service, _tc: tc, _dir: dir }
    }

    async fn call(&self, method: &str, path: &str, key: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut r = self.http.request(method.parse().unwrap(), self.gw.url(path)).header("apikey", &self.anon).bearer_auth(key);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some(b) = body {
            r = r.body(b);
        }
        let res = r.send().await.unwrap();
        let (st, h) = (res.status(), res.headers().clone());
        let text = res.text().await.unwrap();
        (st, h, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    fn addr(&self) -> String {
        self.gw.url("").trim_start_matches("http://").trim_end_matches('/').to_owned()
    }

    /// A raw connection that has sent `method path` with `headers` (and Host,
    /// Content-Length: `length`) but no body yet.
    async fn open(&self, method: &str, path: &str, key: &str, headers: &[(&str, &str)], length: usize) -> TcpStream {
        let mut c = TcpStream::connect(self.addr()).await.unwrap();
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\napikey: {}\r\nAuthorization: Bearer {key}\r\nContent-Length: {length}\r\n", self.addr(), self.anon);
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        c.write_all(head.as_bytes()).await.unwrap();
        c
    }
}

/// The status and JSON body of the response on `c` (None: closed without one, or
/// nothing within `within`).
async fn response(c: &mut tokio::net::tcp::OwnedReadHalf, within: Duration) -> Option<(u16, Value)> {
    let read = async {
        let mut buf = Vec::new();
        let mut tmp = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    let status = head.split(' ').nth(1)?.parse().ok()?;
                    return Some((status, serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap_or(Value::Null)));
                }
            }
            let n = c.read(&mut tmp).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&tmp[..n]);
        }
    };
    tokio::time::timeout(within, read).await.ok().flatten()
}

/// Writes `body` one byte every 2 s (until the server stops reading) and waits for
/// the answer: (status, body, seconds until it came).
fn trickle(c: TcpStream, body: Vec<u8>) -> tokio::task::JoinHandle<(Option<(u16, Value)>, Duration)> {
    tokio::spawn(async move {
        let start = Instant::now();
        let (mut r, mut w) = c.into_split();
        let writer = tokio::spawn(async move {
            for b in body {
                if w.write_all(&[b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            // Dropping the write half would half-close the socket: keep it open.
            std::future::pending::<()>().await;
            drop(w);
        });
        let res = response(&mut r, Duration::from_secs(60)).await;
        let took = start.elapsed();
        writer.abort();
        (res, took)
    })
}

async fn slow_clients_do_not_starve_others(backend: &str) {
    let s = S::start(backend).await;
    let (st, _, b) = s.call("POST", "/storage/v1/bucket", &s.service, &[("content-type", "application/json")], Some(br#"{"id":"slow"}"#.to_vec())).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let (st, _, b) = s
        .call("POST", "/auth/v1/signup", &s.anon, &[("content-type", "application/json")], Some(br#"{"email":"u@example.com","password":"correct horse battery"}"#.to_vec()))
        .await;
    assert!(st.is_success(), "{st} {b}");

    // A TUS upload to trickle into.
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    let meta = format!("bucketName {},objectName {}", b64("slow"), b64("tus.bin"));
    let (st, h, _) = s.call("POST", "/storage/v1/upload/resumable", &s.service, &[("tus-resumable", "1.0.0"), ("upload-length", "1000"), ("upload-metadata", &meta)], None).await;
    assert_eq!(st, StatusCode::CREATED);
    let tus_path = h["location"].to_str().unwrap().split_once("/storage/v1").map(|(_, p)| format!("/storage/v1{p}")).unwrap();

    let oct = [("content-type", "application/octet-stream")];
    let mut slow = Vec::new();
    for i in 0..4 {
        let c = s.open("POST", &format!("/storage/v1/object/slow/raw-{i}.bin"), &s.service, &oct, 1000).await;
        slow.push(("raw", trickle(c, vec![b'x'; 1000])));
    }
    let c = s.open("POST", "/storage/v1/object/slow/form.bin", &s.service, &[("content-type", "multipart/form-data; boundary=XyZ")], 1000).await;
    let mut form = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"form.bin\"\r\n\r\n".to_vec();
    form.resize(1000, b'f');
    slow.push(("multipart", trickle(c, form)));
    let c = s.open("PATCH", &tus_path, &s.service, &[("tus-resumable", "1.0.0"), ("upload-offset", "0"), ("content-type", "application/offset+octet-stream")], 1000).await;
    slow.push(("tus", trickle(c, vec![b't'; 1000])));
    // A small JSON body trickled the same way (list, move, copy, sign, buckets).
    let c = s.open("POST", "/storage/v1/object/list/slow", &s.service, &[("content-type", "application/json")], 1000).await;
    let mut list = b"{\"prefix\": \"".to_vec();
    list.resize(1000, b'p');
    slow.push(("json", trickle(c, list)));
    // And one that never sends a body byte: the idle timeout.
    let silent = trickle(s.open("POST", "/storage/v1/object/slow/silent.bin", &s.service, &oct, 1000).await, Vec::new());

    // While they trickle, everyone else is served promptly.
    let started = Instant::now();
    let mut probes = 0;
    while started.elapsed() < Duration::from_secs(GRACE - 1) {
        let t = Instant::now();
        let health = s.http.get(s.gw.url("/health")).send().await.unwrap().status();
        assert_eq!((health, t.elapsed() < Duration::from_secs(1)), (StatusCode::OK, true), "/health took {:?}", t.elapsed());
        let t = Instant::now();
        let (st, _, list) = s.call("GET", "/storage/v1/bucket", &s.anon, &[], None).await;
        assert_eq!((st, t.elapsed() < Duration::from_secs(1)), (StatusCode::OK, true), "bucket list took {:?}: {list}", t.elapsed());
        let t = Instant::now();
        let (st, _, tok) = s
            .call(
                "POST",
                "/auth/v1/token?grant_type=password",
                &s.anon,
                &[("content-type", "application/json")],
                Some(br#"{"email":"u@example.com","password":"correct horse battery"}"#.to_vec()),
            )
            .await;
        assert_eq!((st, t.elapsed() < Duration::from_secs(1)), (StatusCode::OK, true), "sign-in took {:?}: {tok}", t.elapsed());
        assert!(tok["access_token"].is_string());
        probes += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(probes >= 3, "only {probes} rounds of probes");

    // Each trickle ends with a 408 in the storage shape once the grace period is over.
    for (kind, t) in slow {
        let (res, took) = t.await.unwrap();
        let (status, body) = res.unwrap_or_else(|| panic!("{kind}: no answer"));
        assert_eq!((status, body["statusCode"].as_str()), (408, Some("408")), "{kind}: {body}");
        assert!(body["error"].as_str().unwrap().contains("BODY_MIN_RATE"), "{kind}: {body}");
        assert!(took >= Duration::from_secs(GRACE - 1) && took < Duration::from_secs(GRACE + 3), "{kind}: answered after {took:?}");
    }
    let (res, took) = silent.await.unwrap();
    let (status, body) = res.expect("the silent upload is answered");
    assert_eq!((status, body["statusCode"].as_str()), (408, Some("408")), "{body}");
    assert!(body["error"].as_str().unwrap().contains("BODY_IDLE_TIMEOUT"), "{body}");
    assert!(took >= Duration::from_secs(IDLE - 1) && took < Duration::from_secs(IDLE + 3), "silent: answered after {took:?}");

    // Nothing half-made; the bytes of the cut TUS PATCH were kept for resuming.
    let (_, _, list) = s.call("POST", "/storage/v1/object/list/slow", &s.service, &[("content-type", "application/json")], Some(b"{}".to_vec())).await;
    assert_eq!(list, json!([]));
    let (st, h, _) = s.call("HEAD", &tus_path, &s.service, &[("tus-resumable", "1.0.0")], None).await;
    let offset: usize = h["upload-offset"].to_str().unwrap().parse().unwrap();
    assert!(st == StatusCode::OK && (1..10).contains(&offset), "{st} offset {offset}");
    let (st, h, _) = s
        .call(
            "PATCH",
            &tus_path,
            &s.service,
            &[("tus-resumable", "1.0.0"), ("upload-offset", &offset.to_string()), ("content-type", "application/offset+octet-stream")],
            Some(vec![b't'; 1000 - offset]),
        )
        .await;
    assert_eq!((st, h["upload-offset"].to_str().unwrap()), (StatusCode::NO_CONTENT, "1000"));
    let (st, _, _) = s.call("HEAD", "/storage/v1/object/slow/tus.bin", &s.service, &[], None).await;
    assert_eq!(st, StatusCode::OK);
    // A normal upload still works afterwards.
    let (st, _, b) = s.call("POST", "/storage/v1/object/slow/ok.bin", &s.service, &oct, Some(vec![7u8; 300_000])).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let res = s.http.get(s.gw.url("/storage/v1/object/slow/ok.bin")).bearer_auth(&s.service).header("apikey", &s.anon).send().await.unwrap();
    assert_eq!(res.bytes().await.unwrap().as_ref(), vec![7u8; 300_000].as_slice());
}

/// Refusals that need no body are given before any byte of it is read.
async fn refused_before_the_body(backend: &str) {
    let s = S::start(backend).await;
    s.call("POST", "/storage/v1/bucket", &s.service, &[("content-type", "application/json")], Some(br#"{"id":"small","file_size_limit":1000}"#.to_vec())).await;
    s.call("POST", "/storage/v1/bucket", &s.service, &[("content-type", "application/json")], Some(br#"{"id":"pics","allowed_mime_types":["image/*"]}"#.to_vec())).await;
    let user = {
        let mut c = pgstack_shared::JwtClaims::api_key(Role::Authenticated, keys::now(), 600);
        c.sub = Some("aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa".into());
        keys::sign(&c, &Secret::new(JWT_SECRET)).unwrap()
    };
    let oct = [("content-type", "application/octet-stream")];
    let (st, _, b) = s.call("POST", "/storage/v1/object/small/taken.bin", &user, &oct, Some(b"first".to_vec())).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    type Case<'a> = (&'a str, &'a str, String, Vec<(&'a str, &'a str)>, usize, u16);
    let cases: Vec<Case> = vec![
        ("POST", "/storage/v1/object/small/big.bin", s.service.clone(), oct.to_vec(), 5000, 413),
        ("POST", "/storage/v1/object/pics/a.txt", s.service.clone(), vec![("content-type", "text/plain")], 100, 415),
        ("PUT", "/storage/v1/object/small/missing.bin", s.service.clone(), oct.to_vec(), 100, 404),
        ("POST", "/storage/v1/object/nobucket/a.bin", s.service.clone(), oct.to_vec(), 100, 404),
        ("POST", "/storage/v1/object/small/anon.bin", s.anon.clone(), oct.to_vec(), 100, 401),
        ("POST", "/storage/v1/object/small/taken.bin", user.clone(), oct.to_vec(), 100, 409),
    ];
    for (method, path, key, headers, length, want) in cases {
        let c = s.open(method, path, &key, &headers, length).await;
        let (mut r, _w) = c.into_split();
        let t = Instant::now();
        let res = response(&mut r, Duration::from_secs(2)).await;
        let (status, body) = res.unwrap_or_else(|| panic!("{method} {path}: no answer before the body"));
        assert_eq!((status, body["statusCode"].as_str()), (want, Some(want.to_string().as_str())), "{method} {path}: {body}");
        assert!(t.elapsed() < Duration::from_secs(1), "{method} {path}: took {:?}", t.elapsed());
    }
    // Over the limit without a Content-Length (chunked): cut off at the limit.
    let chunked = futures_util::stream::iter([Ok::<_, std::io::Error>(vec![1u8; 600]), Ok(vec![1u8; 401])]);
    let res = s
        .http
        .post(s.gw.url("/storage/v1/object/small/chunked.bin"))
        .header("apikey", &s.anon)
        .bearer_auth(&s.service)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(chunked))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let (st, _, b) = s.call("POST", "/storage/v1/object/small/fits.bin", &s.service, &oct, Some(vec![1u8; 1000])).await;
    assert_eq!(st, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn slow_uploads_hold_no_pooled_connection_database() {
    slow_clients_do_not_starve_others("database").await;
}

#[tokio::test]
async fn slow_uploads_hold_no_pooled_connection_disk() {
    slow_clients_do_not_starve_others("disk").await;
}

#[tokio::test]
async fn uploads_are_refused_before_their_body_database() {
    refused_before_the_body("database").await;
}

#[tokio::test]
async fn uploads_are_refused_before_their_body_disk() {
    refused_before_the_body("disk").await;
}
