//! Setup, the scenario dispatch, and the scenarios made of whole HTTP requests:
//! password hashing, the batch reference bomb, abandoned slow queries (alone and inside
//! a batch), big reads, and webhook outbox growth.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::{abuser_clients, err_key, raw, Env, Hist};

/// Runs scenario `name`; returns its outcome counts.
pub async fn run(env: &Env, name: &str) -> anyhow::Result<Value> {
    match name {
        "hashing" => hashing(env).await,
        "batch_bomb" => batch_bomb(env).await,
        "slow_abandon" => slow_queries(env, false).await,
        "batch_slow" => slow_queries(env, true).await,
        "slow_uploads" => raw::slow_uploads(env).await,
        "flood" => raw::flood(env).await,
        "ws_backlog" => raw::ws_backlog(env).await,
        "big_reads" | "big_reads_unbounded" => big_reads(env).await,
        "webhook_outbox" => webhook_outbox(env).await,
        other => bail!("unknown scenario {other:?}"),
    }
}

/// Rows of the slow-filter table and of the ~1 KB-per-row big table.
fn rows(var: &str, default: u64) -> u64 {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

// ---------------------------------------------------------------------------------
// Setup

pub async fn setup(env: &Env) -> anyhow::Result<()> {
    let (db, conn) = tokio_postgres::connect(&env.su, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let docs = rows("DOCS_ROWS", env.pick(300_000, 100_000));
    let big = rows("BIG_ROWS", 100_000);
    let t = Instant::now();
    db.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS abuse_notes (id bigserial PRIMARY KEY, title text);
         GRANT SELECT, INSERT ON abuse_notes TO anon; GRANT USAGE ON SEQUENCE abuse_notes_id_seq TO anon;
         CREATE TABLE IF NOT EXISTS abuse_docs (id int PRIMARY KEY, body text NOT NULL);
         INSERT INTO abuse_docs SELECT g, md5(g::text) || ' quick brown ' || md5((g * 7)::text) || ' fox jumps ' || g
           FROM generate_series(1, {docs}) g ON CONFLICT DO NOTHING;
         GRANT SELECT ON abuse_docs TO anon;
         CREATE TABLE IF NOT EXISTS abuse_big (id int PRIMARY KEY, pad text NOT NULL);
         INSERT INTO abuse_big SELECT g, repeat(md5(g::text), 31) FROM generate_series(1, {big}) g ON CONFLICT DO NOTHING;
         GRANT SELECT ON abuse_big TO anon;
         CREATE TABLE IF NOT EXISTS abuse_events (id bigserial PRIMARY KEY, sent_at timestamptz NOT NULL DEFAULT clock_timestamp(), payload text);
         ANALYZE abuse_docs; ANALYZE abuse_big;"
    ))
    .await?;
    eprintln!("setup: tables ({docs} docs rows, {big} big rows) in {:.1}s", t.elapsed().as_secs_f64());
    let http = reqwest::Client::new();
    let svc = |r: reqwest::RequestBuilder| r.header("apikey", &env.service).bearer_auth(&env.service);
    // The schema cache reloads after DDL: wait until the new tables answer.
    for _ in 0..60 {
        let r = http.get(format!("{}/rest/v1/abuse_notes?limit=1", env.api)).header("apikey", &env.anon).send().await?;
        if r.status().is_success() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (email, pass) in [(super::SAMPLER_EMAIL, super::SAMPLER_PASSWORD)] {
        let r = svc(http.post(format!("{}/auth/v1/admin/users", env.api))).json(&json!({"email": email, "password": pass, "email_confirm": true})).send().await?;
        let st = r.status().as_u16();
        if st != 200 && st != 201 && st != 409 && st != 422 {
            bail!("creating {email}: {st} {}", r.text().await.unwrap_or_default());
        }
    }
    let r = svc(http.post(format!("{}/storage/v1/bucket", env.api))).json(&json!({"id": "abuse", "name": "abuse"})).send().await?;
    eprintln!("setup: bucket {}", r.status());
    if let Ok(port) = std::env::var("RPORT") {
        let existing = svc(http.get(format!("{}/rest/v1/webhooks", env.api))).send().await?.text().await?;
        if !existing.contains("abuse_events") {
            let r = svc(http.post(format!("{}/rest/v1/webhooks", env.api)))
                .json(&json!({"url": format!("http://127.0.0.1:{port}/hook"), "table_name": "abuse_events", "events": ["INSERT"]}))
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("creating the webhook: {} {}", r.status(), r.text().await.unwrap_or_default());
            }
        }
    }
    // The slow filter must really be slow (longer than the 1–3 s abandonment).
    let t = Instant::now();
    let slow = db.simple_query(&format!("SET statement_timeout = '5s'; SELECT count(*) FROM abuse_docs WHERE {}", slow_sql())).await;
    eprintln!("setup: the slow filter takes {:.1}s in psql ({})", t.elapsed().as_secs_f64(), if slow.is_ok() { "finished" } else { "longer than 5 s" });
    Ok(())
}

/// 20 full-text terms that match nothing: every row is tested against every term.
fn terms() -> Vec<String> {
    (0..20).map(|i| format!("zq{i}x")).collect()
}

fn slow_sql() -> String {
    terms().iter().map(|t| format!("to_tsvector(body) @@ to_tsquery('{t}')")).collect::<Vec<_>>().join(" OR ")
}

/// `GET /rest/v1/abuse_docs?…` with the slow `or=(…fts…)` filter.
fn slow_path() -> String {
    let or: Vec<String> = terms().iter().map(|t| format!("body.fts.{t}")).collect();
    format!("/rest/v1/abuse_docs?select=id&or=({})", or.join(","))
}

/// A fresh confirmed user (admin API): its id and a signed-in access token.
async fn fresh_user(env: &Env, email: &str) -> anyhow::Result<(String, String)> {
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/auth/v1/admin/users", env.api))
        .header("apikey", &env.service)
        .bearer_auth(&env.service)
        .json(&json!({"email": email, "password": super::VICTIM_PASSWORD, "email_confirm": true}))
        .send()
        .await?;
    let st = r.status();
    let u: Value = r.json().await.unwrap_or(Value::Null);
    let id = u["id"].as_str().or(u["user"]["id"].as_str()).with_context(|| format!("creating {email}: {st} {u}"))?.to_owned();
    let r = http
        .post(format!("{}/auth/v1/token?grant_type=password", env.api))
        .header("apikey", &env.anon)
        .json(&json!({"email": email, "password": super::VICTIM_PASSWORD}))
        .send()
        .await?;
    let st = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    let token = v["access_token"].as_str().with_context(|| format!("signing in {email}: {st} {v}"))?.to_owned();
    Ok((id, token))
}

// ---------------------------------------------------------------------------------
// Password hashing (issue 14): 300 concurrent requests to every hashing route.

async fn hashing(env: &Env) -> anyhow::Result<Value> {
    // Fresh victims per run: the scenario changes their passwords.
    let nonce = std::process::id();
    let victim_email = format!("victim-{nonce}@abuse.test");
    let (_, token) = fresh_user(env, &victim_email).await?;
    let (victim2_id, _) = fresh_user(env, &format!("victim2-{nonce}@abuse.test")).await?;
    let clients = Arc::new(abuser_clients()?);
    let n = env.pick(300, 40);
    let passes = env.pick(2, 1);
    let mut out = serde_json::Map::new();
    let routes = ["signup", "token", "recover_confirm", "put_user", "admin_create", "admin_update"];
    for pass in 0..passes {
        for route in routes {
            let hist = Hist::default();
            let t = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for i in 0..n {
                let c = clients[(i + pass * 7) % clients.len()].clone();
                let (env, hist, token, victim2_id, victim_email) = (env.clone(), hist.clone(), token.clone(), victim2_id.clone(), victim_email.clone());
                set.spawn(async move {
                    let api = &env.api;
                    let strong = format!("Abuse-{pass}-{i}-{nonce}-password-xyz");
                    let req = match route {
                        "signup" => c
                            .post(format!("{api}/auth/v1/signup"))
                            .header("apikey", &env.anon)
                            .json(&json!({"email": format!("abuse-{nonce}-{pass}-{i}@abuse.test"), "password": strong})),
                        "token" => c.post(format!("{api}/auth/v1/token?grant_type=password")).header("apikey", &env.anon).json(&json!({"email": victim_email, "password": strong})),
                        "recover_confirm" => c.post(format!("{api}/auth/v1/recover/confirm")).header("apikey", &env.anon).json(&json!({"token": "x", "password": "a".repeat(256)})),
                        "put_user" => c.put(format!("{api}/auth/v1/user")).header("apikey", &env.anon).bearer_auth(&token).json(&json!({"password": strong})),
                        "admin_create" => c
                            .post(format!("{api}/auth/v1/admin/users"))
                            .header("apikey", &env.service)
                            .bearer_auth(&env.service)
                            .json(&json!({"email": format!("admin-{nonce}-{pass}-{i}@abuse.test"), "password": strong, "email_confirm": true})),
                        _ => c.put(format!("{api}/auth/v1/admin/users/{victim2_id}")).header("apikey", &env.service).bearer_auth(&env.service).json(&json!({"password": strong})),
                    };
                    match req.timeout(Duration::from_secs(30)).send().await {
                        Ok(r) => {
                            hist.bump(r.status().as_u16().to_string());
                            let _ = r.bytes().await;
                        }
                        Err(e) => hist.bump(err_key(&e)),
                    }
                });
            }
            while set.join_next().await.is_some() {}
            out.insert(format!("{route}#{pass}"), json!({"outcomes": hist.json(), "secs": (t.elapsed().as_secs_f64() * 10.0).round() / 10.0}));
        }
    }
    Ok(json!({"concurrent_per_route": n, "routes": out}))
}

// ---------------------------------------------------------------------------------
// Batch reference bomb: a 100,000-char title, referenced 20,000 times in one string.

async fn batch_bomb(env: &Env) -> anyhow::Result<Value> {
    let body = json!({
        "atomic": true,
        "operations": [
            {"id": "a", "method": "POST", "path": "/rest/v1/abuse_notes", "body": {"title": "x".repeat(100_000)}},
            {"id": "b", "method": "POST", "path": "/rest/v1/abuse_notes", "body": {"title": "{{a.title}}".repeat(20_000)}},
        ]
    })
    .to_string();
    let clients = abuser_clients()?;
    let (n, conc) = (env.pick(300, 20), env.pick(30, 10));
    let hist = Hist::default();
    let url = format!("{}/rest/v1/batch", env.api);
    futures_util::stream::iter(0..n)
        .for_each_concurrent(conc, |i| {
            let req = clients[i % clients.len()].post(&url).header("apikey", &env.anon).header("content-type", "application/json").body(body.clone());
            let hist = hist.clone();
            async move {
                match req.timeout(Duration::from_secs(30)).send().await {
                    Ok(r) => {
                        hist.bump(r.status().as_u16().to_string());
                        let _ = r.bytes().await;
                    }
                    Err(e) => hist.bump(err_key(&e)),
                }
            }
        })
        .await;
    Ok(json!({"requests": n, "concurrency": conc, "request_bytes": body.len(), "outcomes": hist.json()}))
}

// ---------------------------------------------------------------------------------
// Slow filters abandoned after 1–3 s, alone or as an operation of /rest/v1/batch.

async fn slow_queries(env: &Env, in_batch: bool) -> anyhow::Result<Value> {
    let clients = abuser_clients()?;
    let (n, conc) = if in_batch { (env.pick(100, 20), env.pick(20, 10)) } else { (env.pick(300, 40), env.pick(30, 10)) };
    let hist = Hist::default();
    let path = slow_path();
    let batch = json!({"operations": [{"id": "q", "method": "GET", "path": path}]}).to_string();
    futures_util::stream::iter(0..n)
        .for_each_concurrent(conc, |i| {
            let c = &clients[i % clients.len()];
            let req = if in_batch {
                c.post(format!("{}/rest/v1/batch", env.api)).header("content-type", "application/json").body(batch.clone())
            } else {
                c.get(format!("{}{}", env.api, path))
            }
            .header("apikey", &env.anon);
            let hist = hist.clone();
            let abandon = Duration::from_millis(1000 + (i as u64 * 677) % 2000);
            async move {
                let attempt = async {
                    let r = req.send().await?;
                    let st = r.status().as_u16();
                    r.bytes().await?;
                    Ok::<u16, reqwest::Error>(st)
                };
                match tokio::time::timeout(abandon, attempt).await {
                    Ok(Ok(st)) => hist.bump(st.to_string()),
                    Ok(Err(e)) => hist.bump(err_key(&e)),
                    Err(_) => hist.bump("abandoned"),
                }
            }
        })
        .await;
    Ok(json!({"requests": n, "concurrency": conc, "in_batch": in_batch, "outcomes": hist.json()}))
}

// ---------------------------------------------------------------------------------
// Big reads: 6 parallel unfiltered reads of a ~100 MB table, a few rounds.

async fn big_reads(env: &Env) -> anyhow::Result<Value> {
    let clients = abuser_clients()?;
    let rounds = env.pick(5, 1);
    let hist = Hist::default();
    let max_bytes = Arc::new(AtomicU64::new(0));
    for round in 0..rounds {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..6 {
            let req = clients[(round * 6 + i) % clients.len()].get(format!("{}/rest/v1/abuse_big?select=*", env.api)).header("apikey", &env.anon);
            let (hist, max_bytes) = (hist.clone(), max_bytes.clone());
            set.spawn(async move {
                let attempt = async {
                    let mut r = req.send().await?;
                    let st = r.status().as_u16();
                    let mut n = 0u64;
                    while let Some(chunk) = r.chunk().await? {
                        n += chunk.len() as u64;
                    }
                    Ok::<(u16, u64), reqwest::Error>((st, n))
                };
                match tokio::time::timeout(Duration::from_secs(60), attempt).await {
                    Ok(Ok((st, n))) => {
                        hist.bump(st.to_string());
                        max_bytes.fetch_max(n, Ordering::Relaxed);
                    }
                    Ok(Err(e)) => hist.bump(err_key(&e)),
                    Err(_) => hist.bump("timeout"),
                }
            });
        }
        while set.join_next().await.is_some() {}
    }
    Ok(json!({"parallel": 6, "rounds": rounds, "outcomes": hist.json(), "largest_body_bytes": max_bytes.load(Ordering::Relaxed)}))
}

// ---------------------------------------------------------------------------------
// Webhook outbox growth: inserts into a table with a webhook, as fast as 2 writers go.

async fn webhook_outbox(env: &Env) -> anyhow::Result<Value> {
    let secs = env.pick(60, 8);
    let written = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let (su, written) = (env.su.clone(), written.clone());
        set.spawn(async move {
            let (db, conn) = tokio_postgres::connect(&su, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            while Instant::now() < deadline {
                let n = db.execute("INSERT INTO abuse_events (payload) SELECT 'x' FROM generate_series(1, 50)", &[]).await?;
                written.fetch_add(n, Ordering::Relaxed);
            }
            Ok::<(), anyhow::Error>(())
        });
    }
    let mut errors = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(Err(e)) = r {
            errors.push(format!("{e:#}"));
        }
    }
    let (db, conn) = tokio_postgres::connect(&env.su, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let by_status: Vec<(String, i64)> =
        db.query("SELECT status::text, count(*) FROM pgr.webhook_outbox GROUP BY 1 ORDER BY 1", &[]).await?.iter().map(|r| (r.get(0), r.get(1))).collect();
    let by_status: serde_json::Map<String, Value> = by_status.into_iter().map(|(k, v)| (k, json!(v))).collect();
    Ok(json!({"writers": 2, "secs": secs, "rows_written": written.load(Ordering::Relaxed), "outbox_by_status_at_end_of_writes": by_status, "errors": errors}))
}
