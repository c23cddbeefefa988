//! Issue 5 (first slice): buckets and objects on both backends against a real cluster:
//! upload / upsert / update / download / public URLs / delete / list, RLS between two
//! users and anon, size and mime limits, and a table of hostile paths refused with 400.

use pgstack_gateway::config::Secret;
use pgstack_gateway::keys;
use pgstack_shared::{JwtClaims, Role};
use pgstack_tests::{Gateway, TestCluster, JWT_SECRET};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const USER_A: &str = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
const USER_B: &str = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb";

fn user(sub: &str) -> String {
    let mut c = JwtClaims::api_key(Role::Authenticated, keys::now(), 600);
    c.sub = Some(sub.into());
    keys::sign(&c, &Secret::new(JWT_SECRET)).unwrap()
}

struct S {
    http: Client,
    gw: Gateway,
    anon: String,
    service: String,
    a: String,
    b: String,
    _tc: TestCluster,
    _dir: tempfile::TempDir,
}

impl S {
    async fn start(backend: &str) -> S {
        let tc = TestCluster::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("objects");
        let s = Secret::new(JWT_SECRET);
        let gw = Gateway::serve(&tc, &[("STORAGE_BACKEND", backend), ("STORAGE_ROOT", root.to_str().unwrap())]).await.unwrap();
        S {
            http: Client::new(),
            gw,
            anon: keys::mint(Role::Anon, &s).unwrap(),
            service: keys::mint(Role::ServiceRole, &s).unwrap(),
            a: user(USER_A),
            b: user(USER_B),
            _tc: tc,
            _dir: dir,
        }
    }
    async fn send(&self, method: &str, path: &str, key: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
        let mut r = self.http.request(method.parse().unwrap(), self.gw.url(&format!("/storage/v1{path}"))).header("apikey", &self.anon).bearer_auth(key);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some(b) = body {
            r = r.body(b);
        }
        let res = r.send().await.unwrap();
        (res.status(), res.headers().clone(), res.bytes().await.unwrap().to_vec())
    }
    async fn json(&self, method: &str, path: &str, key: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (st, _, b) = self.send(method, path, key, &[("content-type", "application/json")], body.map(|v| v.to_string().into_bytes())).await;
        (st, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }
    async fn put_object(&self, bucket: &str, path: &str, key: &str, mime: &str, data: &[u8], upsert: bool) -> (StatusCode, Value) {
        let (st, _, b) =
            self.send("POST", &format!("/object/{bucket}/{path}"), key, &[("content-type", mime), ("x-upsert", if upsert { "true" } else { "false" })], Some(data.to_vec())).await;
        (st, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }
}

async fn suite(backend: &str) {
    let s = S::start(backend).await;
    // Buckets: service key only; names checked; reserved names refused.
    let (st, b) = s.json("POST", "/bucket", &s.service, Some(json!({"name": "avatars", "public": false}))).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    assert_eq!((b["id"].as_str(), b["name"].as_str(), b["file_size_limit"].as_i64()), (Some("avatars"), Some("avatars"), Some(52428800)));
    assert_eq!(s.json("POST", "/bucket", &s.service, Some(json!({"id": "pub", "public": true}))).await.0, StatusCode::CREATED);
    assert_eq!(s.json("POST", "/bucket", &s.service, Some(json!({"id": "images", "file_size_limit": 1000, "allowed_mime_types": ["image/*"]}))).await.0, StatusCode::CREATED);
    assert_eq!(s.json("POST", "/bucket", &s.a, Some(json!({"id": "mine"}))).await.0, StatusCode::FORBIDDEN);
    assert_eq!(s.json("POST", "/bucket", &s.service, Some(json!({"id": "avatars"}))).await.0, StatusCode::CONFLICT);
    for bad in ["public", "sign", "list", "../x", "a b"] {
        assert_eq!(s.json("POST", "/bucket", &s.service, Some(json!({"id": bad}))).await.0, StatusCode::BAD_REQUEST, "{bad}");
    }
    let (st, list) = s.json("GET", "/bucket", &s.anon, None).await;
    assert_eq!((st, list.as_array().unwrap().len()), (StatusCode::OK, 3));
    assert_eq!(s.json("GET", "/bucket/images", &s.a, None).await.1["allowed_mime_types"], json!(["image/*"]));
    assert_eq!(s.json("GET", "/bucket/nope", &s.a, None).await.0, StatusCode::NOT_FOUND);

    // Upload as user A; duplicates need x-upsert; PUT updates.
    let (st, up) = s.put_object("avatars", "users/a/photo.png", &s.a, "image/png", b"first version", false).await;
    assert_eq!(st, StatusCode::OK, "{up}");
    assert_eq!((up["Key"].as_str(), up["key"].as_str()), (Some("avatars/users/a/photo.png"), Some("avatars/users/a/photo.png")));
    assert_eq!(s.put_object("avatars", "users/a/photo.png", &s.a, "image/png", b"again", false).await.0, StatusCode::CONFLICT);
    assert_eq!(s.put_object("avatars", "users/a/photo.png", &s.a, "image/png", b"second version", true).await.0, StatusCode::OK);
    let (st, _, _) = s.send("PUT", "/object/avatars/users/a/photo.png", &s.a, &[("content-type", "image/png")], Some(b"third version".to_vec())).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(s.send("PUT", "/object/avatars/users/a/none.png", &s.a, &[], Some(b"x".to_vec())).await.0, StatusCode::NOT_FOUND);
    s.put_object("avatars", "users/a/notes/today.txt", &s.a, "text/plain", "résumé ✓".as_bytes(), false).await;

    // RLS: the owner reads; another user and anon do not even see it.
    let (st, h, body) = s.send("GET", "/object/avatars/users/a/photo.png", &s.a, &[], None).await;
    assert_eq!((st, body.as_slice()), (StatusCode::OK, b"third version".as_slice()));
    assert_eq!(h["content-type"], "image/png");
    assert!(h.contains_key("etag"));
    assert_eq!(s.send("GET", "/object/avatars/users/a/photo.png", &s.b, &[], None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(s.send("GET", "/object/avatars/users/a/photo.png", &s.anon, &[], None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(s.send("GET", "/object/avatars/users/a/photo.png", &s.service, &[], None).await.0, StatusCode::OK);
    assert_eq!(s.put_object("avatars", "anon.txt", &s.anon, "text/plain", b"x", false).await.0, StatusCode::UNAUTHORIZED);
    let (_, _, text) = s.send("GET", "/object/avatars/users/a/notes/today.txt", &s.a, &[], None).await;
    assert_eq!(String::from_utf8(text).unwrap(), "résumé ✓");

    // Listing: the contract's GET with prefix, storage-js's POST with folders.
    let (_, l) = s.json("GET", "/object/list/avatars?prefix=users/", &s.a, None).await;
    let names: Vec<&str> = l.as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["users/a/notes/today.txt", "users/a/photo.png"]);
    assert_eq!(l[1]["size"], 13);
    assert_eq!(l[1]["mime_type"], "image/png");
    assert_eq!(s.json("GET", "/object/list/avatars?prefix=users/", &s.b, None).await.1, json!([]));
    let (_, l) = s.json("POST", "/object/list/avatars", &s.a, Some(json!({"prefix": "users/a", "limit": 10, "offset": 0, "sortBy": {"column": "name", "order": "asc"}}))).await;
    assert_eq!(l.as_array().unwrap().len(), 2, "{l}");
    assert_eq!((l[0]["name"].as_str(), l[0]["id"].is_null()), (Some("notes"), true));
    assert_eq!((l[1]["name"].as_str(), l[1]["id"].is_string()), (Some("photo.png"), true));

    // Public bucket: readable without a key through the public URL.
    assert_eq!(s.put_object("pub", "docs/hello.txt", &s.service, "text/plain", b"hello world", false).await.0, StatusCode::OK);
    let res = s.http.get(s.gw.url("/storage/v1/object/public/pub/docs/hello.txt")).send().await.unwrap();
    assert_eq!((res.status(), res.text().await.unwrap()), (StatusCode::OK, "hello world".to_owned()));
    assert_eq!(s.http.get(s.gw.url("/storage/v1/object/public/avatars/users/a/photo.png")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(s.send("GET", "/object/pub/docs/hello.txt", &s.anon, &[], None).await.0, StatusCode::OK);

    // Bucket limits.
    assert_eq!(s.put_object("images", "big.png", &s.service, "image/png", &[7u8; 2000], false).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(s.put_object("images", "doc.txt", &s.service, "text/plain", b"text", false).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(s.put_object("images", "ok.png", &s.service, "image/png", &[1u8; 900], false).await.0, StatusCode::OK);
    assert_eq!(s.json("GET", "/object/list/images", &s.service, None).await.1.as_array().unwrap().len(), 1, "refused uploads leave nothing behind");
    assert_eq!(s.put_object("nope", "x.txt", &s.service, "text/plain", b"x", false).await.0, StatusCode::NOT_FOUND);

    // Several chunks (> 1 MiB) round-trip intact.
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
    assert_eq!(s.put_object("avatars", "big.bin", &s.service, "application/octet-stream", &big, false).await.0, StatusCode::OK);
    let (st, h, back) = s.send("GET", "/object/avatars/big.bin", &s.service, &[], None).await;
    assert_eq!((st, back.len()), (StatusCode::OK, big.len()));
    assert!(back == big, "content differs");
    assert_eq!(h["content-length"], big.len().to_string().as_str());
    assert_eq!(h["accept-ranges"], "bytes");

    // Range requests (206), across a chunk boundary too; 416 past the end.
    let etag = h["etag"].to_str().unwrap().to_owned();
    let mb = 1024 * 1024;
    for (range, first, last) in [
        ("bytes=0-9", 0, 9),
        (&*format!("bytes={}-{}", mb - 5, mb + 4), mb - 5, mb + 4),
        ("bytes=-7", big.len() - 7, big.len() - 1),
        (&*format!("bytes={}-", 3 * mb), 3 * mb, big.len() - 1),
    ] {
        let (st, h, part) = s.send("GET", "/object/avatars/big.bin", &s.service, &[("range", range)], None).await;
        assert_eq!(st, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(h["content-range"].to_str().unwrap(), format!("bytes {first}-{last}/{}", big.len()), "{range}");
        assert_eq!(part.as_slice(), &big[first..=last], "{range}");
        assert_eq!(h["content-length"], (last - first + 1).to_string().as_str());
    }
    let (st, h, _) = s.send("GET", "/object/avatars/big.bin", &s.service, &[("range", "bytes=99999999-")], None).await;
    assert_eq!((st, h["content-range"].to_str().unwrap()), (StatusCode::RANGE_NOT_SATISFIABLE, &*format!("bytes */{}", big.len())));
    // If-None-Match: 304 without a body when the client's copy is current.
    let (st, h, body) = s.send("GET", "/object/avatars/big.bin", &s.service, &[("if-none-match", &etag)], None).await;
    assert_eq!((st, body.len()), (StatusCode::NOT_MODIFIED, 0));
    assert_eq!(h["etag"].to_str().unwrap(), etag);
    assert_eq!(s.send("GET", "/object/avatars/big.bin", &s.service, &[("if-none-match", "\"stale\"")], None).await.0, StatusCode::OK);
    let res = s.http.get(s.gw.url("/storage/v1/object/public/pub/docs/hello.txt")).header("range", "bytes=6-").send().await.unwrap();
    assert_eq!((res.status(), res.text().await.unwrap()), (StatusCode::PARTIAL_CONTENT, "world".to_owned()));

    // Move and copy, within a bucket and across buckets, as the caller (RLS).
    let mv = |from: &str, to: &str, dest: Option<&str>| json!({"bucketId": "avatars", "sourceKey": from, "destinationKey": to, "destinationBucket": dest});
    assert_eq!(s.put_object("avatars", "users/a/move-me.txt", &s.a, "text/plain", b"moving", false).await.0, StatusCode::OK);
    assert_eq!(s.json("POST", "/object/move", &s.b, Some(mv("users/a/move-me.txt", "users/b/stolen.txt", None))).await.0, StatusCode::NOT_FOUND, "B cannot move A's object");
    let (st, v) = s.json("POST", "/object/move", &s.a, Some(mv("users/a/move-me.txt", "users/a/moved.txt", None))).await;
    assert_eq!((st, v), (StatusCode::OK, json!({"message": "Successfully moved"})));
    assert_eq!(s.send("GET", "/object/avatars/users/a/move-me.txt", &s.a, &[], None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(s.send("GET", "/object/avatars/users/a/moved.txt", &s.a, &[], None).await.2, b"moving");
    let (st, v) = s.json("POST", "/object/copy", &s.a, Some(mv("users/a/moved.txt", "users/a/copy.txt", None))).await;
    assert_eq!((st, v["Key"].as_str()), (StatusCode::OK, Some("avatars/users/a/copy.txt")));
    assert_eq!(s.send("GET", "/object/avatars/users/a/copy.txt", &s.a, &[], None).await.2, b"moving");
    assert_eq!(s.json("POST", "/object/copy", &s.a, Some(mv("users/a/moved.txt", "users/a/copy.txt", None))).await.0, StatusCode::CONFLICT);
    let (st, _) = s.json("POST", "/object/copy", &s.service, Some(mv("big.bin", "big-copy.bin", Some("pub")))).await;
    assert_eq!(st, StatusCode::OK);
    let res = s.http.get(s.gw.url("/storage/v1/object/public/pub/big-copy.bin")).send().await.unwrap();
    assert!(res.bytes().await.unwrap().as_ref() == big.as_slice(), "a copied multi-chunk object is intact");
    let (st, _) = s.json("POST", "/object/move", &s.service, Some(mv("users/a/copy.txt", "moved-here.txt", Some("pub")))).await;
    assert_eq!(st, StatusCode::OK);
    let res = s.http.get(s.gw.url("/storage/v1/object/public/pub/moved-here.txt")).send().await.unwrap();
    assert_eq!(res.text().await.unwrap(), "moving", "a move across buckets keeps the content");
    assert_eq!(s.json("POST", "/object/move", &s.a, Some(mv("../x", "y", None))).await.0, StatusCode::BAD_REQUEST);
    // The destination bucket's rules apply (images: image/* only, at most 1000 bytes).
    assert_eq!(s.json("POST", "/object/copy", &s.service, Some(mv("big.bin", "big.png", Some("images")))).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(s.json("POST", "/object/move", &s.a, Some(mv("users/a/moved.txt", "moved.txt", Some("images")))).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(s.json("POST", "/object/copy", &s.a, Some(json!({"nope": 1}))).await.0, StatusCode::BAD_REQUEST);
    for o in ["users/a/moved.txt"] {
        s.json("DELETE", &format!("/object/avatars/{o}"), &s.service, None).await;
    }
    for o in ["big-copy.bin", "moved-here.txt"] {
        s.json("DELETE", &format!("/object/pub/{o}"), &s.service, None).await;
    }

    // Delete: only the owner (or the service key).
    assert_eq!(s.json("DELETE", "/object/avatars/users/a/photo.png", &s.b, None).await.0, StatusCode::NOT_FOUND);
    let (st, v) = s.json("DELETE", "/object/avatars/users/a/photo.png", &s.a, None).await;
    assert_eq!((st, v), (StatusCode::OK, json!({"message": "object deleted"})));
    assert_eq!(s.send("GET", "/object/avatars/users/a/photo.png", &s.a, &[], None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(s.json("DELETE", "/bucket/avatars", &s.service, None).await.0, StatusCode::CONFLICT);
    s.json("DELETE", "/object/avatars/users/a/notes/today.txt", &s.service, None).await;
    s.json("DELETE", "/object/avatars/big.bin", &s.service, None).await;
    assert_eq!(s.json("DELETE", "/bucket/avatars", &s.service, None).await, (StatusCode::OK, json!({"message": "bucket deleted"})));
    assert_eq!(s.json("DELETE", "/bucket/avatars", &s.service, None).await.0, StatusCode::NOT_FOUND);

    // Hostile paths: 400 before any database or filesystem access, on every route.
    let hostile = [
        "..",
        "../x",
        "a/../../etc/passwd",
        "%2e%2e/x",
        "%2E%2E%2Fetc%2Fpasswd",
        "a/%2e%2e/b",
        "./x",
        "a/./b",
        "a/.",
        "a/..",
        "%2Fetc%2Fpasswd",
        "/etc/passwd",
        "C:%5Cwindows%5Cwin.ini",
        "c:/x",
        "D:x",
        "%5C%5Cserver%5Cshare",
        "a%5Cb",
        "%5C..%5Cx",
        "a%00b",
        "%00",
        "a/b%00.png",
        "x%0Ay",
        "x%0Dy",
        "%09tab",
        "%1Bescape",
        "a//b",
        "a/",
        "...",
        "a/.../b",
        ". /x",
        "a/ ..",
        "..%2F..%2F..%2Froot",
        "%7F",
    ];
    assert!(hostile.len() >= 30);
    // Sent byte for byte (HTTP clients would normalise `..` away before sending).
    for p in hostile {
        let (st, body) = raw(&s, "POST", &format!("/storage/v1/object/pub/{p}"), b"x").await;
        assert_eq!(st, 400, "upload {p}: {body}");
        // Request lines HTTP itself cannot carry (raw spaces, control bytes) are refused
        // by the HTTP layer with an empty 400; everything else gets the JSON error.
        if !body.is_empty() {
            let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{p}: {body}"));
            assert!(v["error"].is_string() && v["statusCode"] == "400", "{v}");
        } else {
            assert!(p.contains(' ') || p.contains("%0") || p.contains("%1") || p.contains("%7F"), "{p} answered an empty 400");
        }
        let (st, body) = raw(&s, "GET", &format!("/storage/v1/object/pub/{p}"), b"").await;
        assert_eq!(st, 400, "download {p}: {body}");
        let (st, _) = raw(&s, "DELETE", &format!("/storage/v1/object/pub/{p}"), b"").await;
        assert_eq!(st, 400, "delete {p}");
    }
    let (_, l) = s.json("GET", "/object/list/pub", &s.service, None).await;
    assert_eq!(l.as_array().unwrap().len(), 1, "no hostile path was stored: {l}");
}

/// One HTTP/1.1 request written as is; returns (status, body).
async fn raw(s: &S, method: &str, target: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.gw.base.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        s.service,
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body).await.unwrap();
    let mut out = Vec::new();
    conn.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[tokio::test]
async fn storage_on_the_database_backend() {
    suite("database").await;
}

#[tokio::test]
async fn storage_on_the_disk_backend() {
    suite("disk").await;
}

#[tokio::test]
async fn signed_urls_expire_and_bind_to_one_object() {
    let s = S::start("database").await;
    s.json("POST", "/bucket", &s.service, Some(json!({"id": "docs"}))).await;
    s.put_object("docs", "a.txt", &s.a, "text/plain", b"secret a", false).await;
    s.put_object("docs", "b.txt", &s.a, "text/plain", b"secret b", false).await;
    // Only what the caller can read can be signed.
    assert_eq!(s.json("POST", "/object/sign/docs/a.txt", &s.b, Some(json!({"expiresIn": 60}))).await.0, StatusCode::NOT_FOUND);
    let (st, v) = s.json("POST", "/object/sign/docs/a.txt", &s.a, Some(json!({"expiresIn": "1"}))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let url = v["signedURL"].as_str().unwrap().to_owned();
    assert!(url.starts_with("/object/sign/docs/a.txt?token="), "{url}");
    let res = s.http.get(s.gw.url(&format!("/storage/v1{url}"))).send().await.unwrap();
    assert_eq!((res.status(), res.text().await.unwrap()), (StatusCode::OK, "secret a".to_owned()));
    let token = url.split("token=").nth(1).unwrap();
    let other = s.http.get(s.gw.url(&format!("/storage/v1/object/sign/docs/b.txt?token={token}"))).send().await.unwrap();
    assert_eq!(other.status(), StatusCode::BAD_REQUEST, "a token opens only its own object");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let late = s.http.get(s.gw.url(&format!("/storage/v1{url}"))).send().await.unwrap();
    assert_eq!(late.status(), StatusCode::BAD_REQUEST);
    assert!(late.text().await.unwrap().contains("expired"));
    assert_eq!(s.json("POST", "/object/sign/docs/a.txt", &s.a, Some(json!({"expiresIn": -5}))).await.0, StatusCode::BAD_REQUEST);

    // Bulk remove returns what went; emptying and updating buckets.
    let (st, removed) = s.json("DELETE", "/object/docs", &s.a, Some(json!({"prefixes": ["a.txt", "missing.txt"]}))).await;
    assert_eq!((st, removed.as_array().unwrap().len()), (StatusCode::OK, 1));
    assert_eq!(s.json("DELETE", "/object/docs", &s.a, Some(json!({"prefixes": ["../x"]}))).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(s.json("POST", "/bucket/docs/empty", &s.a, None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(s.json("POST", "/bucket/docs/empty", &s.service, None).await, (StatusCode::OK, json!({"message": "Successfully emptied"})));
    assert_eq!(s.json("GET", "/object/list/docs", &s.service, None).await.1, json!([]));
    assert_eq!(s.json("PUT", "/bucket/docs", &s.service, Some(json!({"public": true, "file_size_limit": "1KB"}))).await.0, StatusCode::OK);
    let b = s.json("GET", "/bucket/docs", &s.service, None).await.1;
    assert_eq!((b["public"].as_bool(), b["file_size_limit"].as_i64()), (Some(true), Some(1024)));
}

/// Kills the gateway with SIGKILL in the middle of a streamed upload; after a restart
/// the object is neither listed nor downloadable, and no content file was published.
async fn crash_mid_upload(backend: &str) {
    let mut s = S::start(backend).await;
    s.json("POST", "/bucket", &s.service, Some(json!({"id": "crash"}))).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let url = s.gw.url("/storage/v1/object/crash/half.bin");
    let service = s.service.clone();
    let upload = tokio::spawn(async move { reqwest::Client::new().post(url).bearer_auth(service).header("content-type", "application/octet-stream").body(body).send().await });
    for _ in 0..3 {
        tx.send(Ok(vec![9u8; 512 * 1024])).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    std::process::Command::new("kill").args(["-9", &s.gw.pid().unwrap().to_string()]).status().unwrap();
    let _ = s.gw.terminate().await;
    drop(tx);
    assert!(upload.await.unwrap().is_err(), "the upload cannot have succeeded");
    let root = s._dir.path().join("objects");
    let temps = || std::fs::read_dir(root.join(".tmp")).map(|d| d.count()).unwrap_or(0);
    if backend == "disk" {
        assert_eq!(temps(), 1, "the interrupted upload left its temp file");
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    }
    // Restarted with a short temp-file age: the sweeper removes the leftover at start.
    s.gw = Gateway::serve(&s._tc, &[("STORAGE_BACKEND", backend), ("STORAGE_ROOT", root.to_str().unwrap()), ("STORAGE_TMP_MAX_AGE", "1")]).await.unwrap();
    if backend == "disk" {
        assert!(pgstack_tests::eventually(std::time::Duration::from_secs(5), || async { temps() == 0 }).await, "the sweeper removed the temp file");
    }
    assert_eq!(s.json("GET", "/object/list/crash", &s.service, None).await.1, json!([]));
    assert_eq!(s.send("GET", "/object/crash/half.bin", &s.service, &[], None).await.0, StatusCode::NOT_FOUND);
    let rows: i64 = s._tc.superuser().await.unwrap().query_one("SELECT count(*) FROM storage.objects", &[]).await.unwrap().get(0);
    assert_eq!(rows, 0, "no object row survives");
    if backend == "disk" {
        let published = std::fs::read_dir(root.join("crash")).map(|d| d.count()).unwrap_or(0);
        assert_eq!(published, 0, "no content file was published");
    }
    // The same name can be uploaded afterwards.
    assert_eq!(s.put_object("crash", "half.bin", &s.service, "application/octet-stream", b"whole", false).await.0, StatusCode::OK);
}

fn tokio_stream_from(mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn a_crash_mid_upload_leaves_no_half_object_database() {
    crash_mid_upload("database").await;
}

#[tokio::test]
async fn a_crash_mid_upload_leaves_no_half_object_disk() {
    crash_mid_upload("disk").await;
}

/// TUS resumable uploads on one backend: create, PATCH in pieces, HEAD, a retried
/// PATCH at a stale offset, termination, and every refusal.
async fn tus_suite(backend: &str) {
    use base64::Engine;
    let s = S::start(backend).await;
    s.json("POST", "/bucket", &s.service, Some(json!({"id": "tus", "file_size_limit": 10_000_000}))).await;
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    let meta = |name: &str| format!("bucketName {},objectName {},contentType {}", b64("tus"), b64(name), b64("text/plain"));
    let create = |key: String, name: String, len: usize| {
        let m = meta(&name);
        let s = &s;
        async move {
            let (st, h, _) = s.send("POST", "/upload/resumable", &key, &[("tus-resumable", "1.0.0"), ("upload-length", &len.to_string()), ("upload-metadata", &m)], None).await;
            (st, h.get("location").map(|l| l.to_str().unwrap().to_owned()))
        }
    };
    let (st, loc) = create(s.a.clone(), "users/a/story.txt".into(), 11).await;
    assert_eq!(st, StatusCode::CREATED);
    let loc = loc.unwrap();
    let path = loc.split("/storage/v1").nth(1).unwrap().to_owned();
    let patch = |key: &str, offset: &str, body: &[u8], ct: &str| {
        let (key, offset, body, ct, path) = (key.to_owned(), offset.to_owned(), body.to_vec(), ct.to_owned(), path.clone());
        let s = &s;
        async move { s.send("PATCH", &path, &key, &[("tus-resumable", "1.0.0"), ("upload-offset", &offset), ("content-type", &ct)], Some(body)).await }
    };
    let oct = "application/offset+octet-stream";
    let (st, h, _) = patch(&s.a, "0", b"hello", oct).await;
    assert_eq!((st, h["upload-offset"].to_str().unwrap()), (StatusCode::NO_CONTENT, "5"));
    // A client retrying with a stale offset, a wrong type, another user: refused.
    assert_eq!(patch(&s.a, "0", b"hello", oct).await.0, StatusCode::CONFLICT);
    assert_eq!(patch(&s.a, "5", b" world", "text/plain").await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(patch(&s.b, "5", b" world", oct).await.0, StatusCode::NOT_FOUND);
    assert_eq!(s.send("HEAD", &path, &s.b, &[("tus-resumable", "1.0.0")], None).await.0, StatusCode::NOT_FOUND);
    let (st, h, _) = s.send("HEAD", &path, &s.a, &[("tus-resumable", "1.0.0")], None).await;
    assert_eq!((st, h["upload-offset"].to_str().unwrap(), h["upload-length"].to_str().unwrap()), (StatusCode::OK, "5", "11"));
    assert_eq!(patch(&s.a, "5", b" world and more", oct).await.0, StatusCode::PAYLOAD_TOO_LARGE, "past Upload-Length");
    let (st, h, _) = patch(&s.a, "5", b" world", oct).await;
    assert_eq!((st, h["upload-offset"].to_str().unwrap()), (StatusCode::NO_CONTENT, "11"));
    // The last byte made the object, owned by A (RLS: B does not see it).
    let (st, _, body) = s.send("GET", "/object/tus/users/a/story.txt", &s.a, &[], None).await;
    assert_eq!((st, body.as_slice()), (StatusCode::OK, b"hello world".as_slice()));
    assert_eq!(s.send("GET", "/object/tus/users/a/story.txt", &s.b, &[], None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(s.send("HEAD", &path, &s.a, &[("tus-resumable", "1.0.0")], None).await.0, StatusCode::NOT_FOUND);

    // Refused at creation: an existing object, over the bucket limit, anon (RLS),
    // hostile paths, no Tus-Resumable.
    assert_eq!(create(s.a.clone(), "users/a/story.txt".into(), 3).await.0, StatusCode::CONFLICT);
    assert_eq!(create(s.a.clone(), "users/a/huge.txt".into(), 20_000_000).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(create(s.anon.clone(), "anon.txt".into(), 3).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(create(s.a.clone(), "../escape".into(), 3).await.0, StatusCode::BAD_REQUEST);
    let (st, _, _) = s.send("POST", "/upload/resumable", &s.a, &[("upload-length", "3"), ("upload-metadata", &meta("x.txt"))], None).await;
    assert_eq!(st, StatusCode::PRECONDITION_FAILED);
    // Termination: the upload and its staged bytes go; the path is free again.
    let (_, loc) = create(s.a.clone(), "users/a/draft.txt".into(), 100).await;
    let draft = loc.unwrap().split("/storage/v1").nth(1).unwrap().to_owned();
    s.send("PATCH", &draft, &s.a, &[("tus-resumable", "1.0.0"), ("upload-offset", "0"), ("content-type", oct)], Some(b"partial".to_vec())).await;
    assert_eq!(s.send("DELETE", &draft, &s.a, &[("tus-resumable", "1.0.0")], None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(s.send("HEAD", &draft, &s.a, &[("tus-resumable", "1.0.0")], None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(create(s.a.clone(), "users/a/draft.txt".into(), 100).await.0, StatusCode::CREATED);
    let staged: i64 = s._tc.superuser().await.unwrap().query_one("SELECT count(*) FROM storage.upload_chunks", &[]).await.unwrap().get(0);
    assert_eq!(staged, 0, "no staged bytes of finished or terminated uploads remain");
    let (st, h, _) = s.send("OPTIONS", "/upload/resumable", &s.a, &[], None).await;
    assert_eq!((st, h["tus-version"].to_str().unwrap()), (StatusCode::NO_CONTENT, "1.0.0"));
}

#[tokio::test]
async fn tus_resumable_uploads_database() {
    tus_suite("database").await;
}

#[tokio::test]
async fn tus_resumable_uploads_disk() {
    tus_suite("disk").await;
}
