//! Issue 15: multi-statement auth flows are one statement each (one round trip, one
//! transaction), and REST renders every representation (CSV, stripped nulls, single
//! object) in its one statement — counted by pg_stat_statements on a real cluster,
//! through the real gateway. Their behaviour is covered in auth_accounts.rs,
//! auth_email.rs and rest_postgrest_settings.rs.

use pgstack_gateway::config::Secret;
use pgstack_tests::{Gateway, TestCluster, JWT_SECRET};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

struct T {
    http: Client,
    gw: Gateway,
    anon: String,
    tc: TestCluster,
}

impl T {
    async fn start() -> T {
        let tc = TestCluster::start_with_statement_stats().await.unwrap();
        let secret = Secret::new(JWT_SECRET);
        let anon = pgstack_gateway::keys::mint(pgstack_shared::Role::Anon, &secret).unwrap();
        let service = pgstack_gateway::keys::mint(pgstack_shared::Role::ServiceRole, &secret).unwrap();
        let gw = Gateway::serve(&tc, &[("ANON_KEY", &anon), ("SERVICE_ROLE_KEY", &service)]).await.unwrap();
        T { http: Client::new(), gw, anon, tc }
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let res = self.http.post(self.gw.url(path)).header("apikey", &self.anon).json(&body).send().await.unwrap();
        let st = res.status();
        (st, res.json().await.unwrap_or(Value::Null))
    }

    /// Runs `f`'s request and returns the statements that touched the auth schema
    /// meanwhile (as the gateway's login role or the auth admin role it switches to):
    /// (calls, their texts).
    async fn auth_statements<F: std::future::Future<Output = (StatusCode, Value)>>(&self, f: F) -> ((StatusCode, Value), i64, String) {
        let su = self.tc.superuser().await.unwrap();
        su.batch_execute("SELECT pg_stat_statements_reset()").await.unwrap();
        let out = f.await;
        let row = su
            .query_one(
                "SELECT coalesce(sum(s.calls), 0)::bigint, coalesce(string_agg(s.query, ' | '), '')
                   FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
                  WHERE r.rolname IN ('authenticator', 'pgstack_auth_admin')
                    AND (s.query ILIKE '%auth%' OR s.query ~* '^\\s*(BEGIN|COMMIT|ROLLBACK|START)')",
                &[],
            )
            .await
            .unwrap();
        (out, row.get(0), row.get(1))
    }

    /// Runs a REST request and returns the statements run meanwhile by the login role
    /// or as anon that read the table or render JSON / CSV (a conversion afterwards
    /// would be one more), apart from the per-request settings and the schema cache's
    /// background reloads (its SQL starts with a comment): (calls, texts).
    async fn rest_statements(&self, method: reqwest::Method, path: &str, accept: &str) -> (StatusCode, String, String, i64, String) {
        let su = self.tc.superuser().await.unwrap();
        su.batch_execute("SELECT pg_stat_statements_reset()").await.unwrap();
        let res = self.http.request(method, self.gw.url(path)).header("apikey", &self.anon).header("accept", accept).send().await.unwrap();
        let (st, ct) = (res.status(), res.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default());
        let body = res.text().await.unwrap();
        let row = su
            .query_one(
                "SELECT coalesce(sum(s.calls), 0)::bigint, coalesce(string_agg(s.query, ' | '), '')
                   FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
                  WHERE r.rolname IN ('authenticator', 'anon')
                    AND (s.query LIKE '%rt_items%' OR s.query ~ 'json|csv|string_agg')
                    AND s.query NOT LIKE 'SELECT set_config(''role''%'
                    AND s.query NOT LIKE '--%'",
                &[],
            )
            .await
            .unwrap();
        (st, ct, body, row.get(0), row.get(1))
    }
}

#[tokio::test]
async fn every_rest_representation_is_rendered_by_its_one_statement() {
    let t = T::start().await;
    let su = t.tc.superuser().await.unwrap();
    su.batch_execute(
        "CREATE TABLE public.rt_items (id int PRIMARY KEY, name text, note text);
         INSERT INTO public.rt_items VALUES (1, 'plain', NULL), (2, 'with, comma', 'say \"hi\"'), (3, E'two\nlines', 'x');
         GRANT SELECT ON public.rt_items TO anon;",
    )
    .await
    .unwrap();
    // The schema cache reloads asynchronously: wait until the table is served.
    for _ in 0..100 {
        let res = t.http.get(t.gw.url("/rest/v1/rt_items?limit=1")).header("apikey", &t.anon).send().await.unwrap();
        if res.status() == StatusCode::OK {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Let the schema cache's reloads for the DDL above settle.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let get = reqwest::Method::GET;
    let (st, ct, body, calls, texts) = t.rest_statements(get.clone(), "/rest/v1/rt_items?order=id", "text/csv").await;
    assert_eq!((st, ct.as_str()), (StatusCode::OK, "text/csv; charset=utf-8"));
    assert_eq!(body, "id,name,note\n1,plain,\n2,\"with, comma\",\"say \"\"hi\"\"\"\n3,\"two\nlines\",x");
    assert_eq!(calls, 1, "statements: {texts}");
    let (st, _, body, calls, texts) = t.rest_statements(get.clone(), "/rest/v1/rt_items?id=gt.5", "text/csv").await;
    assert_eq!((st, body.as_str()), (StatusCode::OK, "\n"), "no rows: a lone line break, as PostgREST's statement renders it");
    assert_eq!(calls, 1, "statements: {texts}");
    let (st, ct, body, calls, texts) = t.rest_statements(get.clone(), "/rest/v1/rt_items?order=id&id=lt.3", "application/vnd.pgrst.array+json;nulls=stripped").await;
    assert_eq!((st, ct.as_str()), (StatusCode::OK, "application/vnd.pgrst.array+json;nulls=stripped; charset=utf-8"));
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!([{"id": 1, "name": "plain"}, {"id": 2, "name": "with, comma", "note": "say \"hi\""}]));
    assert_eq!(calls, 1, "statements: {texts}");
    let (st, _, body, calls, texts) = t.rest_statements(get.clone(), "/rest/v1/rt_items?id=eq.1", "application/vnd.pgrst.object+json;nulls=stripped").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!({"id": 1, "name": "plain"}));
    assert_eq!(calls, 1, "statements: {texts}");
    let (st, _, body, calls, _) = t.rest_statements(get.clone(), "/rest/v1/rt_items", "application/vnd.pgrst.object+json").await;
    assert_eq!(st, StatusCode::NOT_ACCEPTABLE, "{body}");
    assert_eq!(calls, 1);
    let (st, _, body, calls, texts) = t.rest_statements(get, "/rest/v1/rt_items?id=eq.3", "application/json").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!([{"id": 3, "name": "two\nlines", "note": "x"}]));
    assert_eq!(calls, 1, "statements: {texts}");
}

#[tokio::test]
async fn a_refresh_grant_is_one_statement() {
    let t = T::start().await;
    let (st, body) = t.post("/auth/v1/signup", json!({"email": "rt@example.com", "password": "round-trip-password-1"})).await;
    assert!(st.is_success(), "{st} {body}");
    let (st, session) = t.post("/auth/v1/token?grant_type=password", json!({"email": "rt@example.com", "password": "round-trip-password-1"})).await;
    assert_eq!(st, StatusCode::OK, "{session}");
    let token = session["refresh_token"].as_str().unwrap().to_owned();
    // Warm: the gateway prepares its statement once per connection.
    let (st, next) = t.post("/auth/v1/token?grant_type=refresh_token", json!({"refresh_token": token})).await;
    assert_eq!(st, StatusCode::OK, "{next}");
    let token = next["refresh_token"].as_str().unwrap().to_owned();
    let ((st, third), calls, texts) = t.auth_statements(t.post("/auth/v1/token?grant_type=refresh_token", json!({"refresh_token": token}))).await;
    assert_eq!(st, StatusCode::OK, "{third}");
    assert_eq!(third["user"]["email"], "rt@example.com");
    assert_ne!(third["refresh_token"], next["refresh_token"]);
    assert_eq!(calls, 1, "statements: {texts}");
    // Reuse after the grace window (10 s by default: made old by hand) revokes the
    // session, in the same one statement.
    let su = t.tc.superuser().await.unwrap();
    su.batch_execute("UPDATE auth.refresh_tokens SET updated_at = now() - interval '1 hour' WHERE revoked").await.unwrap();
    let ((st, err), calls, texts) = t.auth_statements(t.post("/auth/v1/token?grant_type=refresh_token", json!({"refresh_token": token}))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{err}");
    assert_eq!(err["error_code"], "refresh_token_already_used", "{err}");
    assert_eq!(calls, 1, "statements: {texts}");
    let (st, _) = t.post("/auth/v1/token?grant_type=refresh_token", json!({"refresh_token": third["refresh_token"]})).await;
    assert!(st.is_client_error(), "the session is gone with the reused token: {st}");
}

#[tokio::test]
async fn a_pkce_redemption_is_one_statement() {
    let t = T::start().await;
    let (st, body) = t.post("/auth/v1/signup", json!({"email": "pk@example.com", "password": "round-trip-password-1"})).await;
    assert!(st.is_success(), "{st} {body}");
    let verifier = "pkce-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";
    let challenge = pgstack_gateway::auth::pkce::s256(verifier);
    let su = t.tc.superuser().await.unwrap();
    let flow = |code: &'static str| {
        let hash = hex::encode(Sha256::digest(code.as_bytes()));
        let (su, challenge) = (&su, challenge.clone());
        async move {
            su.execute(
                "INSERT INTO auth.flow_state (provider, redirect_to, code_challenge, code_challenge_method, auth_code_hash, user_id, expires_at)
                 SELECT 'email', 'http://localhost:3000', $1, 's256', $2, id, now() + interval '5 minutes' FROM auth.users WHERE email = 'pk@example.com'",
                &[&challenge, &hash],
            )
            .await
            .unwrap();
        }
    };
    flow("warm-code").await;
    let (st, s) = t.post("/auth/v1/token?grant_type=pkce", json!({"auth_code": "warm-code", "code_verifier": verifier})).await;
    assert_eq!(st, StatusCode::OK, "{s} {}", t.gw.stderr());
    flow("the-code").await;
    let ((st, session), calls, texts) = t.auth_statements(t.post("/auth/v1/token?grant_type=pkce", json!({"auth_code": "the-code", "code_verifier": verifier}))).await;
    assert_eq!(st, StatusCode::OK, "{session}");
    assert_eq!(session["user"]["email"], "pk@example.com");
    assert!(session["refresh_token"].is_string() && session["access_token"].is_string());
    assert_eq!(calls, 1, "statements: {texts}");
    // The code is spent: a second redemption finds nothing.
    let (st, err) = t.post("/auth/v1/token?grant_type=pkce", json!({"auth_code": "the-code", "code_verifier": verifier})).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{err}");
    // A wrong verifier spends the code too (403), in one statement.
    flow("third-code").await;
    let ((st, err), calls, _) = t
        .auth_statements(t.post("/auth/v1/token?grant_type=pkce", json!({"auth_code": "third-code", "code_verifier": "pkce-verifier-0123456789-abcdefghijklmnopqrstuvwxyZ"})))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{err}");
    assert_eq!(calls, 1);
    let (st, _) = t.post("/auth/v1/token?grant_type=pkce", json!({"auth_code": "third-code", "code_verifier": verifier})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // An account banned or deleted after its code was issued gets no session (a 4xx in
    // the auth shape, not a 500), and the code is spent.
    flow("banned-code").await;
    su.batch_execute("UPDATE auth.users SET banned_until = now() + interval '1 day' WHERE email = 'pk@example.com'").await.unwrap();
    let (st, err) = t.post("/auth/v1/token?grant_type=pkce", json!({"auth_code": "banned-code", "code_verifier": verifier})).await;
    assert_eq!((st, err["error_code"].as_str()), (StatusCode::FORBIDDEN, Some("user_banned")), "{err}");
    flow("deleted-code").await;
    su.batch_execute("UPDATE auth.users SET banned_until = NULL, deleted_at = now() WHERE email = 'pk@example.com'").await.unwrap();
    let (st, err) = t.post("/auth/v1/token?grant_type=pkce", json!({"auth_code": "deleted-code", "code_verifier": verifier})).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{err}");
    assert!(err["error_code"].is_string() && err["msg"].is_string(), "{err}");
    let sessions: i64 = su.query_one("SELECT count(*) FROM auth.sessions s JOIN auth.users u ON u.id = s.user_id WHERE u.email = 'pk@example.com'", &[]).await.unwrap().get(0);
    assert_eq!(sessions, 3, "the sign-up's session and the two successful redemptions, no more");
    let (st, _) = t.post("/auth/v1/token?grant_type=pkce", json!({"auth_code": "deleted-code", "code_verifier": verifier})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn one_refresh_token_yields_a_bounded_number_of_siblings() {
    // The grace window lets a few tabs refresh one token at once; 40 callers at once
    // get at most 10 tokens between them, the rest a 401 in the auth shape (the
    // session itself stays valid).
    let t = T::start().await;
    let (st, body) = t.post("/auth/v1/signup", json!({"email": "sib@example.com", "password": "round-trip-password-1"})).await;
    assert!(st.is_success(), "{st} {body}");
    let (st, session) = t.post("/auth/v1/token?grant_type=password", json!({"email": "sib@example.com", "password": "round-trip-password-1"})).await;
    assert_eq!(st, StatusCode::OK, "{session}");
    let token = session["refresh_token"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (http, url, anon, token) = (t.http.clone(), t.gw.url("/auth/v1/token?grant_type=refresh_token"), t.anon.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let res = http.post(url).header("apikey", anon).json(&json!({"refresh_token": token})).send().await.unwrap();
            let st = res.status();
            (st, res.json::<Value>().await.unwrap_or(Value::Null))
        }));
    }
    let mut fresh = Vec::new();
    for task in tasks {
        let (st, v) = task.await.unwrap();
        if st == StatusCode::OK {
            fresh.push(v["refresh_token"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
            assert_eq!(v["error_code"], "refresh_token_already_used", "{v}");
        }
    }
    assert!(!fresh.is_empty() && fresh.len() <= 10, "{} tokens from one", fresh.len());
    // Any of them still works: the session was not revoked.
    let (st, v) = t.post("/auth/v1/token?grant_type=refresh_token", json!({"refresh_token": fresh[0]})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn a_tus_finish_is_one_statement_and_no_byte_leaves_postgres() {
    use base64::Engine;
    let t = T::start().await;
    let secret = Secret::new(JWT_SECRET);
    let service = pgstack_gateway::keys::mint(pgstack_shared::Role::ServiceRole, &secret).unwrap();
    let mut claims = pgstack_shared::JwtClaims::api_key(pgstack_shared::Role::Authenticated, pgstack_gateway::keys::now(), 600);
    claims.sub = Some("aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa".into());
    let user = pgstack_gateway::keys::sign(&claims, &secret).unwrap();
    let send = |method: &str, path: &str, key: &str, headers: Vec<(&str, String)>, body: Vec<u8>| {
        let mut r = t.http.request(method.parse().unwrap(), t.gw.url(&format!("/storage/v1{path}"))).header("apikey", &t.anon).bearer_auth(key).body(body);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        async move {
            let res = r.send().await.unwrap();
            (res.status(), res.headers().clone(), res.bytes().await.unwrap().to_vec())
        }
    };
    let (st, _, b) = send("POST", "/bucket", &service, vec![("content-type", "application/json".into())], json!({"id": "rt"}).to_string().into_bytes()).await;
    assert!(st.is_success(), "{st} {}", String::from_utf8_lossy(&b));
    // 2.5 MiB in uneven pieces, so that PATCHes do not end on chunk boundaries.
    let data: Vec<u8> = (0..(5 << 19)).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    let meta = format!("bucketName {},objectName {},contentType {}", b64("rt"), b64("big.bin"), b64("application/octet-stream"));
    let tus = |extra: Vec<(&'static str, String)>| {
        let mut h = vec![("tus-resumable", "1.0.0".to_owned())];
        h.extend(extra);
        h
    };
    let (st, h, _) = send("POST", "/upload/resumable", &user, tus(vec![("upload-length", data.len().to_string()), ("upload-metadata", meta)]), Vec::new()).await;
    assert_eq!(st, StatusCode::CREATED);
    let path = h["location"].to_str().unwrap().split("/storage/v1").nth(1).unwrap().to_owned();
    let cuts = [0, 700 * 1024, 2 * 1024 * 1024 + 5, data.len()];
    let su = t.tc.superuser().await.unwrap();
    for w in cuts.windows(2) {
        let last = w[1] == data.len();
        if last {
            su.batch_execute("SELECT pg_stat_statements_reset()").await.unwrap();
        }
        let headers = tus(vec![("upload-offset", w[0].to_string()), ("content-type", "application/offset+octet-stream".into())]);
        let (st, h, b) = send("PATCH", &path, &user, headers, data[w[0]..w[1]].to_vec()).await;
        assert_eq!(st, StatusCode::NO_CONTENT, "{}", String::from_utf8_lossy(&b));
        assert_eq!(h["upload-offset"].to_str().unwrap(), w[1].to_string());
    }
    let row = su
        .query_one(
            "SELECT coalesce(sum(s.calls) FILTER (WHERE s.query LIKE '%finish_upload%'), 0)::bigint,
                    coalesce(sum(s.calls) FILTER (WHERE s.query ~* 'object_chunks|INTO storage\\.objects|read_upload_chunk|storage\\.buckets'), 0)::bigint,
                    coalesce(string_agg(s.query, ' | '), '')
               FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
              WHERE r.rolname IN ('authenticator', 'authenticated', 'pgstack_storage_admin') AND s.toplevel",
            &[],
        )
        .await
        .unwrap();
    let (finish, by_hand, texts): (i64, i64, String) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((finish, by_hand), (1, 0), "statements: {texts}");
    // The object is whole, its chunks aligned (a Range read across a boundary), and its
    // ETag S3's multipart form for three chunks.
    let (st, h, body) = send("GET", "/object/rt/big.bin", &user, Vec::new(), Vec::new()).await;
    assert_eq!(st, StatusCode::OK);
    assert!(body == data, "content differs ({} bytes, {} sent)", body.len(), data.len());
    assert!(h["etag"].to_str().unwrap().ends_with("-3\""), "{:?}", h["etag"]);
    let (st, _, part) = send("GET", "/object/rt/big.bin", &user, vec![("range", "bytes=1048570-1048585".into())], Vec::new()).await;
    assert_eq!((st, part.as_slice()), (StatusCode::PARTIAL_CONTENT, &data[1_048_570..=1_048_585]));
    let staged: i64 = su.query_one("SELECT count(*) FROM storage.uploads", &[]).await.unwrap().get(0);
    assert_eq!(staged, 0);
}
