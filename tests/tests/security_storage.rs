//! Issue 14 ("Safe to expose"), storage: regression tests against a real cluster and the
//! real gateway, on both backends where content handling differs.
//!
//! - A signed URL opens the object it was signed for, not whatever holds its path later
//!   (another user's upload after a delete, a replacement, a move).
//! - Default policies are owner-only for writes: no upsert / update / delete / move /
//!   copy over another user's object, no anon writes, no names of others in listings.
//! - Object responses cannot act on the API's origin: nosniff, a sandboxing CSP,
//!   HTML / SVG / XML as attachments, and private objects never publicly cacheable.
//! - A TUS upload can be continued only with the token of its URL (two clients with the
//!   same anon key cannot reach each other's uploads); the token is not kept at rest.

use base64::Engine;
use pgstack_gateway::config::Secret;
use pgstack_gateway::keys;
use pgstack_shared::{JwtClaims, Role};
use pgstack_tests::{Gateway, TestCluster, JWT_SECRET};
use reqwest::header::HeaderMap;
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
    tc: TestCluster,
    _dir: tempfile::TempDir,
}

impl S {
    async fn start(backend: &str, extra: &[(&str, &str)]) -> S {
        let tc = TestCluster::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("objects");
        let s = Secret::new(JWT_SECRET);
        let mut env = vec![("STORAGE_BACKEND", backend), ("STORAGE_ROOT", root.to_str().unwrap())];
        env.extend_from_slice(extra);
        let gw = Gateway::serve(&tc, &env).await.unwrap();
        S {
            http: Client::new(),
            gw,
            anon: keys::mint(Role::Anon, &s).unwrap(),
            service: keys::mint(Role::ServiceRole, &s).unwrap(),
            a: user(USER_A),
            b: user(USER_B),
            tc,
            _dir: dir,
        }
    }
    /// A request under /storage/v1 with `key` (None: no credential at all).
    async fn send(&self, method: &str, path: &str, key: Option<&str>, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut r = self.http.request(method.parse().unwrap(), self.gw.url(&format!("/storage/v1{path}")));
        if let Some(k) = key {
            r = r.header("apikey", &self.anon).bearer_auth(k);
        }
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
        let (st, _, b) = self.send(method, path, Some(key), &[("content-type", "application/json")], body.map(|v| v.to_string().into_bytes())).await;
        (st, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }
    async fn put(&self, bucket: &str, path: &str, key: &str, headers: &[(&str, &str)], data: &[u8]) -> StatusCode {
        self.send("POST", &format!("/object/{bucket}/{path}"), Some(key), headers, Some(data.to_vec())).await.0
    }
    async fn bucket(&self, id: &str, public: bool) {
        assert_eq!(self.json("POST", "/bucket", &self.service, Some(json!({"id": id, "public": public}))).await.0, StatusCode::CREATED);
    }
    async fn sign(&self, bucket: &str, path: &str, key: &str) -> String {
        let (st, v) = self.json("POST", &format!("/object/sign/{bucket}/{path}"), key, Some(json!({"expiresIn": 600}))).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        v["signedURL"].as_str().unwrap().to_owned()
    }
}

/// A storage error in the contract's shape with this status.
fn storage_error(st: StatusCode, body: &[u8], want: StatusCode) {
    assert_eq!(st, want, "{}", String::from_utf8_lossy(body));
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)));
    assert!(v["error"].is_string() && v["message"].is_string() && v["statusCode"] == want.as_str(), "{v}");
}

// ---------------------------------------------------------------------------------
// 4. Signed URLs are bound to the object, not the path.

async fn signed_urls_follow_the_object(backend: &str) {
    let s = S::start(backend, &[]).await;
    s.bucket("priv", false).await;
    let text = &[("content-type", "text/plain")];
    assert_eq!(s.put("priv", "shared/report.pdf", &s.a, text, b"A's report").await, StatusCode::OK);
    let url = s.sign("priv", "shared/report.pdf", &s.a).await;
    let (st, _, body) = s.send("GET", &url, None, &[], None).await;
    assert_eq!((st, body.as_slice()), (StatusCode::OK, b"A's report".as_slice()));

    // A deletes the object; B (any user may create a free path) uploads to the same path.
    assert_eq!(s.json("DELETE", "/object/priv/shared/report.pdf", &s.a, None).await.0, StatusCode::OK);
    assert_eq!(s.put("priv", "shared/report.pdf", &s.b, text, b"B's private bytes").await, StatusCode::OK);
    for method in ["GET", "HEAD"] {
        let (st, _, body) = s.send(method, &url, None, &[], None).await;
        assert_ne!(st, StatusCode::OK, "{method}: A's signed URL must not open B's object");
        if method == "GET" {
            assert!(!String::from_utf8_lossy(&body).contains("B's private"), "B's bytes leaked");
            storage_error(st, &body, StatusCode::NOT_FOUND);
        }
    }
    let (st, _, body) = s.send("GET", &url, None, &[("range", "bytes=0-3")], None).await;
    storage_error(st, &body, StatusCode::NOT_FOUND);

    // A replacement (upsert / PUT) is a new object: URLs signed before it stop working.
    assert_eq!(s.put("priv", "a/doc.txt", &s.a, text, b"version 1").await, StatusCode::OK);
    let before = s.sign("priv", "a/doc.txt", &s.a).await;
    assert_eq!(s.put("priv", "a/doc.txt", &s.a, &[("content-type", "text/plain"), ("x-upsert", "true")], b"version 2").await, StatusCode::OK);
    let (st, _, body) = s.send("GET", &before, None, &[], None).await;
    storage_error(st, &body, StatusCode::NOT_FOUND);
    let after = s.sign("priv", "a/doc.txt", &s.a).await;
    assert_eq!(s.send("GET", &after, None, &[], None).await.2, b"version 2");

    // A move keeps the id but not the path; another object moved onto the path is not it.
    assert_eq!(s.put("priv", "a/other.txt", &s.a, text, b"other").await, StatusCode::OK);
    let mv = |from: &str, to: &str| json!({"bucketId": "priv", "sourceKey": from, "destinationKey": to});
    assert_eq!(s.json("POST", "/object/move", &s.a, Some(mv("a/doc.txt", "a/renamed.txt"))).await.0, StatusCode::OK);
    assert_eq!(s.json("POST", "/object/move", &s.a, Some(mv("a/other.txt", "a/doc.txt"))).await.0, StatusCode::OK);
    let (st, _, body) = s.send("GET", &after, None, &[], None).await;
    storage_error(st, &body, StatusCode::NOT_FOUND);

    // A token in the old form (path only, no object id) is refused.
    let now = keys::now();
    let old = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"url": "priv/a/doc.txt", "iat": now, "exp": now + 600}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let (st, _, body) = s.send("GET", &format!("/object/sign/priv/a/doc.txt?token={old}"), None, &[], None).await;
    storage_error(st, &body, StatusCode::BAD_REQUEST);
    // Names with spaces sign to a URL that opens them.
    assert_eq!(s.put("priv", "a/with%20space.txt", &s.a, text, b"spaced").await, StatusCode::OK);
    let spaced = s.sign("priv", "a/with%20space.txt", &s.a).await;
    assert!(spaced.contains("with%20space.txt"), "{spaced}");
    assert_eq!(s.send("GET", &spaced, None, &[], None).await.2, b"spaced");
}

#[tokio::test]
async fn signed_urls_follow_the_object_database() {
    signed_urls_follow_the_object("database").await;
}

#[tokio::test]
async fn signed_urls_follow_the_object_disk() {
    signed_urls_follow_the_object("disk").await;
}

// ---------------------------------------------------------------------------------
// 4. Default policies: owner-only writes.

async fn writes_are_owner_only(backend: &str) {
    let s = S::start(backend, &[]).await;
    s.bucket("files", false).await;
    s.bucket("pub", true).await;
    let text = &[("content-type", "text/plain")];
    assert_eq!(s.put("files", "a/mine.txt", &s.a, text, b"A's bytes").await, StatusCode::OK);
    assert_eq!(s.put("pub", "a/page.txt", &s.a, text, b"A's public bytes").await, StatusCode::OK);
    assert_eq!(s.put("files", "b/own.txt", &s.b, text, b"B's bytes").await, StatusCode::OK);

    // B cannot replace, update or remove A's objects, in a private or a public bucket.
    for bucket in ["files", "pub"] {
        let path = if bucket == "files" { "a/mine.txt" } else { "a/page.txt" };
        let upsert = s.put(bucket, path, &s.b, &[("content-type", "text/plain"), ("x-upsert", "true")], b"B was here").await;
        assert!(upsert == StatusCode::CONFLICT || upsert == StatusCode::FORBIDDEN, "{bucket}: upsert over A's object: {upsert}");
        let (st, _, _) = s.send("PUT", &format!("/object/{bucket}/{path}"), Some(&s.b), text, Some(b"B was here".to_vec())).await;
        assert!(st == StatusCode::NOT_FOUND || st == StatusCode::FORBIDDEN, "{bucket}: PUT over A's object: {st}");
        assert_eq!(s.json("DELETE", &format!("/object/{bucket}/{path}"), &s.b, None).await.0, StatusCode::NOT_FOUND);
        assert_eq!(s.json("DELETE", &format!("/object/{bucket}"), &s.b, Some(json!({"prefixes": [path]}))).await.1, json!([]));
        let mv = |from: &str, to: &str| json!({"bucketId": bucket, "sourceKey": from, "destinationKey": to});
        assert_eq!(s.json("POST", "/object/move", &s.b, Some(mv(path, "b/taken.txt"))).await.0, StatusCode::NOT_FOUND);
        // Not by moving or copying onto it either.
        let onto = json!({"bucketId": "files", "sourceKey": "b/own.txt", "destinationKey": path, "destinationBucket": bucket});
        assert_eq!(s.json("POST", "/object/copy", &s.b, Some(onto.clone())).await.0, StatusCode::CONFLICT);
        assert_eq!(s.json("POST", "/object/move", &s.b, Some(onto)).await.0, StatusCode::CONFLICT);
        // Nor through a resumable upload with x-upsert.
        let meta = format!("bucketName {},objectName {}", b64(bucket), b64(path));
        let (st, _, _) =
            s.send("POST", "/upload/resumable", Some(&s.b), &[("tus-resumable", "1.0.0"), ("upload-length", "3"), ("upload-metadata", &meta), ("x-upsert", "true")], None).await;
        assert!(st == StatusCode::CONFLICT || st == StatusCode::FORBIDDEN, "{bucket}: TUS upsert over A's object: {st}");
    }
    let (st, _, body) = s.send("GET", "/object/files/a/mine.txt", Some(&s.a), &[], None).await;
    assert_eq!((st, body.as_slice()), (StatusCode::OK, b"A's bytes".as_slice()), "A's object is intact");
    let (st, _, body) = s.send("GET", "/object/public/pub/a/page.txt", None, &[], None).await;
    assert_eq!((st, body.as_slice()), (StatusCode::OK, b"A's public bytes".as_slice()), "A's public object is intact");

    // The anon key writes nothing by default (no anon policy), not even to a public bucket.
    for bucket in ["files", "pub"] {
        let (st, _, body) = s.send("POST", &format!("/object/{bucket}/anon.txt"), Some(&s.anon), text, Some(b"x".to_vec())).await;
        storage_error(st, &body, StatusCode::UNAUTHORIZED);
    }
    // Listings show only what the caller may read.
    assert_eq!(s.json("GET", "/object/list/files?prefix=", &s.b, None).await.1.as_array().unwrap().len(), 1);
    let (_, l) = s.json("POST", "/object/list/files", &s.b, Some(json!({"prefix": "a"}))).await;
    assert_eq!(l, json!([]), "B sees no names of A's private objects");
    assert_eq!(s.json("GET", "/object/list/files?prefix=a/", &s.anon, None).await.1, json!([]));

    // A bucket name that is a traversal reaches neither the database nor the disk.
    for bucket in ["..", "%2e%2e", ".tmp"] {
        let st = s.put(bucket, "x.txt", &s.service, text, b"x").await;
        assert!(st == StatusCode::NOT_FOUND || st == StatusCode::BAD_REQUEST, "{bucket}: {st}");
    }
    if backend == "disk" {
        let root = s._dir.path().join("objects");
        assert!(!s._dir.path().join("x.txt").exists() && !root.join(".tmp/x.txt").exists());
    }
}

fn b64(v: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(v)
}

#[tokio::test]
async fn writes_are_owner_only_database() {
    writes_are_owner_only("database").await;
}

#[tokio::test]
async fn writes_are_owner_only_disk() {
    writes_are_owner_only("disk").await;
}

// ---------------------------------------------------------------------------------
// 7. Uploaded content cannot act on the API's origin.

fn assert_protected(h: &HeaderMap, what: &str) {
    assert_eq!(h.get("x-content-type-options").map(|v| v.to_str().unwrap()), Some("nosniff"), "{what}");
    let csp = h.get("content-security-policy").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    assert!(csp.contains("sandbox") && csp.contains("default-src 'none'"), "{what}: CSP {csp:?}");
}

fn attachment(h: &HeaderMap) -> bool {
    h.get("content-disposition").is_some_and(|v| v.to_str().unwrap().starts_with("attachment"))
}

async fn content_cannot_run_on_the_api_origin(backend: &str) {
    let s = S::start(backend, &[]).await;
    s.bucket("site", true).await;
    s.bucket("priv", false).await;
    let html = b"<html><script>fetch('/auth/v1/user')</script></html>";
    let kinds: [(&str, &str, bool); 7] = [
        ("evil.html", "text/html", true),
        ("evil.svg", "image/svg+xml", true),
        ("evil.xhtml", "application/xhtml+xml", true),
        ("evil.xml", "text/xml", true),
        ("feed.rss", "application/rss+xml", true),
        ("pic.png", "image/png", false),
        ("note.txt", "text/plain", false),
    ];
    for (name, mime, _) in kinds {
        assert_eq!(s.put("site", name, &s.service, &[("content-type", mime)], html).await, StatusCode::OK, "{name}");
    }
    for (name, mime, active) in kinds {
        // Public URL, authenticated GET, signed URL, HEAD, a Range request.
        let url = s.sign("site", name, &s.service).await;
        let public = format!("/object/public/site/{name}");
        let authed = format!("/object/site/{name}");
        let answers = [
            ("public GET", s.send("GET", &public, None, &[], None).await),
            ("public HEAD", s.send("HEAD", &public, None, &[], None).await),
            ("public Range", s.send("GET", &public, None, &[("range", "bytes=0-5")], None).await),
            ("authenticated GET", s.send("GET", &authed, Some(&s.a), &[], None).await),
            ("authenticated HEAD", s.send("HEAD", &authed, Some(&s.a), &[], None).await),
            ("signed GET", s.send("GET", &url, None, &[], None).await),
        ];
        for (what, (st, h, _)) in &answers {
            assert!(st.is_success(), "{name} {what}: {st}");
            assert_protected(h, &format!("{name} {what}"));
            assert_eq!(h["content-type"], mime, "{name} {what}");
            assert_eq!(attachment(h), active, "{name} {what}: Content-Disposition {:?}", h.get("content-disposition"));
        }
        // 304 and 416 answers carry the same headers.
        let etag = answers[0].1 .1["etag"].to_str().unwrap().to_owned();
        let (st, h, _) = s.send("GET", &public, None, &[("if-none-match", &etag)], None).await;
        assert_eq!(st, StatusCode::NOT_MODIFIED);
        assert_protected(&h, &format!("{name} 304"));
        let (st, h, _) = s.send("GET", &public, None, &[("range", "bytes=99999-")], None).await;
        assert_eq!(st, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_protected(&h, &format!("{name} 416"));
    }
    let (_, h, _) = s.send("GET", "/object/public/site/evil.html", None, &[], None).await;
    assert_eq!(h["content-disposition"], "attachment; filename*=UTF-8''evil.html");

    // A type with parameters or odd case is still recognised; a type list is not served.
    assert_eq!(s.put("site", "odd.html", &s.service, &[("content-type", "Text/HTML; charset=utf-8")], html).await, StatusCode::OK);
    let (_, h, _) = s.send("GET", "/object/public/site/odd.html", None, &[], None).await;
    assert!(attachment(&h), "{h:?}");
    let meta = format!("bucketName {},objectName {},contentType {}", b64("site"), b64("list.html"), b64("text/plain, text/html"));
    let (st, h, _) = s.send("POST", "/upload/resumable", Some(&s.service), &[("tus-resumable", "1.0.0"), ("upload-length", "4"), ("upload-metadata", &meta)], None).await;
    assert_eq!(st, StatusCode::CREATED);
    let loc = h["location"].to_str().unwrap().split("/storage/v1").nth(1).unwrap().to_owned();
    let (st, _, _) = s
        .send("PATCH", &loc, Some(&s.service), &[("tus-resumable", "1.0.0"), ("upload-offset", "0"), ("content-type", "application/offset+octet-stream")], Some(b"<b>x".to_vec()))
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (_, h, _) = s.send("GET", "/object/public/site/list.html", None, &[], None).await;
    assert_eq!(h["content-type"], "application/octet-stream", "a browser could pick text/html out of a list");

    // Private objects: the uploader's `public` caching is not passed on; public buckets keep it.
    let cc = &[("content-type", "text/plain"), ("cache-control", "public, max-age=31536000")];
    assert_eq!(s.put("priv", "a/secret.txt", &s.a, cc, b"secret").await, StatusCode::OK);
    assert_eq!(s.put("site", "cached.txt", &s.service, cc, b"public").await, StatusCode::OK);
    let url = s.sign("priv", "a/secret.txt", &s.a).await;
    for (what, (st, h, _)) in [
        ("authenticated", s.send("GET", "/object/priv/a/secret.txt", Some(&s.a), &[], None).await),
        ("signed", s.send("GET", &url, None, &[], None).await),
        ("range", s.send("GET", "/object/priv/a/secret.txt", Some(&s.a), &[("range", "bytes=0-1")], None).await),
    ] {
        assert!(st.is_success(), "{what}");
        let v = h["cache-control"].to_str().unwrap().to_owned();
        assert!(!v.contains("public") && v.contains("private") && v.contains("max-age=31536000"), "{what}: {v}");
        assert_protected(&h, what);
    }
    let (_, h, _) = s.send("GET", "/object/public/site/cached.txt", None, &[], None).await;
    assert_eq!(h["cache-control"], "public, max-age=31536000");
    // A stored cacheControl that is not a header value (TUS metadata is any text) cannot
    // break the answer or add a header.
    let meta = format!("bucketName {},objectName {},cacheControl {}", b64("priv"), b64("a/tus.txt"), b64("max-age=5\r\nSet-Cookie: a=b"));
    let (st, h, _) = s.send("POST", "/upload/resumable", Some(&s.a), &[("tus-resumable", "1.0.0"), ("upload-length", "4"), ("upload-metadata", &meta)], None).await;
    assert_eq!(st, StatusCode::CREATED);
    let loc = h["location"].to_str().unwrap().split("/storage/v1").nth(1).unwrap().to_owned();
    let (st, _, _) =
        s.send("PATCH", &loc, Some(&s.a), &[("tus-resumable", "1.0.0"), ("upload-offset", "0"), ("content-type", "application/offset+octet-stream")], Some(b"form".to_vec())).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, h, body) = s.send("GET", "/object/priv/a/tus.txt", Some(&s.a), &[], None).await;
    assert_eq!((st, body.as_slice()), (StatusCode::OK, b"form".as_slice()));
    assert!(h.get("set-cookie").is_none() && h["cache-control"].to_str().unwrap().starts_with("private"), "{h:?}");
}

#[tokio::test]
async fn content_cannot_run_on_the_api_origin_database() {
    content_cannot_run_on_the_api_origin("database").await;
}

#[tokio::test]
async fn content_cannot_run_on_the_api_origin_disk() {
    content_cannot_run_on_the_api_origin("disk").await;
}

#[tokio::test]
async fn inline_html_only_when_allowed_and_still_sandboxed() {
    let s = S::start("database", &[("STORAGE_ALLOW_INLINE_HTML", "true")]).await;
    s.bucket("site", true).await;
    assert_eq!(s.put("site", "page.html", &s.service, &[("content-type", "text/html")], b"<p>hi</p>").await, StatusCode::OK);
    let (st, h, _) = s.send("GET", "/object/public/site/page.html", None, &[], None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(!attachment(&h), "inline when STORAGE_ALLOW_INLINE_HTML=true");
    assert_protected(&h, "inline html");
}

// ---------------------------------------------------------------------------------
// Suspected: TUS uploads started with an API key were shared by every client of that key.

async fn tus_uploads_belong_to_their_creator(backend: &str) {
    let s = S::start(backend, &[]).await;
    s.bucket("drop", true).await;
    s.bucket("tus", false).await;
    // The project lets anon clients drop files into one bucket (as on Supabase, by policy).
    s.tc.superuser()
        .await
        .unwrap()
        .batch_execute("CREATE POLICY anon_drop ON storage.objects FOR ALL TO anon USING (bucket_id = 'drop') WITH CHECK (bucket_id = 'drop')")
        .await
        .unwrap();
    let create = |key: String, bucket: &'static str, name: &'static str, len: usize| {
        let s = &s;
        async move {
            let meta = format!("bucketName {},objectName {},contentType {}", b64(bucket), b64(name), b64("text/plain"));
            let (st, h, b) =
                s.send("POST", "/upload/resumable", Some(&key), &[("tus-resumable", "1.0.0"), ("upload-length", &len.to_string()), ("upload-metadata", &meta)], None).await;
            assert_eq!(st, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
            h["location"].to_str().unwrap().split("/storage/v1").nth(1).unwrap().to_owned()
        }
    };
    let tus = |extra: &[(&'static str, &'static str)]| {
        let mut h = vec![("tus-resumable", "1.0.0")];
        h.extend_from_slice(extra);
        h
    };
    let oct = [("content-type", "application/offset+octet-stream"), ("upload-offset", "0")];

    // Client 1 (anon key) starts an upload; its URL carries an unguessable token.
    let one = create(s.anon.clone(), "drop", "inbox/one.txt", 5).await;
    let two = create(s.anon.clone(), "drop", "inbox/two.txt", 5).await;
    let token_of = |u: &str| u.split("token=").nth(1).map(str::to_owned).unwrap_or_default();
    let (t1, t2) = (token_of(&one), token_of(&two));
    assert!(t1.len() >= 43 && t2.len() >= 43, "the upload URL carries a 256-bit token: {one}");
    assert_ne!(t1, t2);
    // Nothing in the database holds the token itself (only its digest).
    let rows: Vec<String> = s.tc.superuser().await.unwrap().query("SELECT to_jsonb(u)::text FROM storage.uploads u", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert!(!r.contains(&t1) && !r.contains(&t2), "a token is kept at rest: {r}");
    }

    // Client 2, same anon key, knows the upload's id (e.g. from a log line) but not its
    // token, or guesses a token: 404 for HEAD, PATCH and DELETE.
    let bare = one.split('?').next().unwrap().to_owned();
    let forged = format!("{bare}?token={}", "A".repeat(43));
    for url in [&bare, &forged, &format!("{bare}?token={t2}")] {
        assert_eq!(s.send("HEAD", url, Some(&s.anon), &tus(&[]), None).await.0, StatusCode::NOT_FOUND, "HEAD {url}");
        let (st, _, body2) = s.send("PATCH", url, Some(&s.anon), &tus(&oct), Some(b"evil!".to_vec())).await;
        storage_error(st, &body2, StatusCode::NOT_FOUND);
        let (st, _, body3) = s.send("DELETE", url, Some(&s.anon), &tus(&[]), None).await;
        storage_error(st, &body3, StatusCode::NOT_FOUND);
    }
    // There is no listing of uploads to find the URL in.
    let (st, _, _) = s.send("GET", "/upload/resumable", Some(&s.anon), &tus(&[]), None).await;
    assert!(!st.is_success(), "GET /upload/resumable: {st}");
    // Nothing of client 2's reached the upload; client 1 finishes it with its URL.
    let (st, h, _) = s.send("HEAD", &one, Some(&s.anon), &tus(&[]), None).await;
    assert_eq!((st, h["upload-offset"].to_str().unwrap()), (StatusCode::OK, "0"));
    let (st, h, _) = s.send("PATCH", &one, Some(&s.anon), &tus(&oct), Some(b"hello".to_vec())).await;
    assert_eq!((st, h["upload-offset"].to_str().unwrap()), (StatusCode::NO_CONTENT, "5"));
    let (st, _, body) = s.send("GET", "/object/public/drop/inbox/one.txt", None, &[], None).await;
    assert_eq!((st, body.as_slice()), (StatusCode::OK, b"hello".as_slice()));
    // Client 2 terminates its own upload with its own URL.
    assert_eq!(s.send("DELETE", &two, Some(&s.anon), &tus(&[]), None).await.0, StatusCode::NO_CONTENT);

    // A user's upload: the URL alone is not enough for another user (or the anon key),
    // and the user's own id alone is not enough without the token.
    let mine = create(s.a.clone(), "tus", "a/story.txt", 3).await;
    for key in [&s.b, &s.anon, &s.service] {
        assert_eq!(s.send("HEAD", &mine, Some(key), &tus(&[]), None).await.0, StatusCode::NOT_FOUND);
    }
    let bare = mine.split('?').next().unwrap().to_owned();
    assert_eq!(s.send("HEAD", &bare, Some(&s.a), &tus(&[]), None).await.0, StatusCode::NOT_FOUND);
    let (st, _, _) = s.send("PATCH", &mine, Some(&s.a), &tus(&oct), Some(b"abc".to_vec())).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(s.send("GET", "/object/tus/a/story.txt", Some(&s.a), &[], None).await.2, b"abc");
}

#[tokio::test]
async fn tus_uploads_belong_to_their_creator_database() {
    tus_uploads_belong_to_their_creator("database").await;
}

#[tokio::test]
async fn tus_uploads_belong_to_their_creator_disk() {
    tus_uploads_belong_to_their_creator("disk").await;
}
