//! Saved database configurations (seed 001) at `/api/database-configs` and the
//! stateless `/api/db/test-postgres`, `/api/db/discover-postgres-schema`, answering
//! `{success, …}`.
//!
//! Rows live in `workbench.database_configs` (the extension's table), reached as
//! `pgstack_workbench_admin`. Passwords are encrypted with AES-256-GCM under
//! WORKBENCH_SECRET_KEY (bound to the row, host, port, database and user as associated
//! data: a ciphertext cannot be moved to another row or pointed at another server)
//! and never returned. A configuration belongs to whoever created it; the service key
//! sees all of them. `settings.allowed_tables` limits which
//! tables the configuration's schema shows and its test touches. Freshness: a
//! snapshot older than WORKBENCH_SCHEMA_MAX_AGE_HOURS, or whose DDL fingerprint no
//! longer matches the database's, needs a refresh.

use std::time::Instant;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use bytes::Bytes;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::access::Owner;
use super::allowed::allowed;
use super::error::{Configs, WbError};
use super::target::{ConfigConnection, Ssl, Target};
use super::{json_response, parse_body};
use crate::error::code::workbench as code;
use crate::AppState;

type Reply = Result<Response, Configs>;

/// The routes under `/api`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/database-configs", get(list).post(create))
        .route("/database-configs/{id}", get(one).patch(update).delete(remove))
        .route("/database-configs/{id}/refresh-schema", post(refresh_schema))
        .route("/database-configs/{id}/freshness", get(freshness))
        .route("/db/test-postgres", post(test_postgres))
        .route("/db/discover-postgres-schema", post(discover))
}

fn ok(status: StatusCode, body: Value) -> Response {
    let mut b = json!({ "success": true });
    if let (Some(o), Value::Object(extra)) = (b.as_object_mut(), body) {
        o.extend(extra);
    }
    json_response(status, &b)
}

fn db_err(e: impl std::fmt::Display) -> WbError {
    tracing::error!(error = %e, "workbench configuration store");
    WbError::new(StatusCode::SERVICE_UNAVAILABLE, code::CAPACITY, "the configuration store is unavailable").hint("Retry shortly.")
}

fn not_found() -> WbError {
    WbError::new(StatusCode::NOT_FOUND, code::CONFIG_NOT_FOUND, "no such database configuration")
}

/// Runs `f` in a transaction as pgstack_workbench_admin on the gateway's database.
async fn store<T>(s: &AppState, f: impl AsyncFnOnce(&tokio_postgres::Transaction<'_>) -> Result<T, WbError>) -> Result<T, WbError> {
    let mut c = s.pool.get().await.map_err(db_err)?;
    let tx = c.transaction().await.map_err(db_err)?;
    tx.batch_execute("SET LOCAL ROLE pgstack_workbench_admin").await.map_err(db_err)?;
    let out = f(&tx).await?;
    tx.commit().await.map_err(|e| WbError::from_pg(&e))?;
    Ok(out)
}

// --- passwords at rest ---

fn cipher(s: &AppState) -> Result<Aes256Gcm, WbError> {
    let key = s.config.workbench.secret_key.as_ref().ok_or_else(|| {
        WbError::new(StatusCode::BAD_REQUEST, code::INVALID_REQUEST, "this server cannot keep database passwords").hint("Set WORKBENCH_SECRET_KEY (32 characters or more).")
    })?;
    let digest = Sha256::digest(key.expose().as_bytes());
    Aes256Gcm::new_from_slice(&digest).map_err(|e| WbError::invalid(e.to_string()))
}

/// What a sealed password is bound to: the row and the server and user it is for (a
/// configuration pointed at another host cannot take its password along).
fn aad(id: &uuid::Uuid, t: &Target) -> Vec<u8> {
    let mut a = id.as_bytes().to_vec();
    for part in [t.host.as_str(), &t.port.to_string(), &t.database, &t.user] {
        a.extend_from_slice(&(part.len() as u32).to_le_bytes());
        a.extend_from_slice(part.as_bytes());
    }
    a
}

fn seal(s: &AppState, id: &uuid::Uuid, t: &Target, password: &str) -> Result<Vec<u8>, WbError> {
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut nonce);
    let aad = aad(id, t);
    let sealed = cipher(s)?.encrypt(Nonce::from_slice(&nonce), Payload { msg: password.as_bytes(), aad: &aad }).map_err(|_| WbError::invalid("cannot encrypt"))?;
    Ok([nonce.to_vec(), sealed].concat())
}

fn open(s: &AppState, id: &uuid::Uuid, t: &Target, sealed: &[u8]) -> Result<String, WbError> {
    if sealed.len() < 12 {
        return Err(WbError::new(StatusCode::CONFLICT, code::INVALID_REQUEST, "the stored password is damaged; set it again"));
    }
    let plain = cipher(s)?
        .decrypt(Nonce::from_slice(&sealed[..12]), Payload { msg: &sealed[12..], aad: &aad(id, t) })
        .map_err(|_| WbError::new(StatusCode::CONFLICT, code::INVALID_REQUEST, "the stored password cannot be decrypted (WORKBENCH_SECRET_KEY changed?); set it again"))?;
    String::from_utf8(plain).map_err(|_| WbError::invalid("the stored password is not text"))
}

// --- rows ---

const COLUMNS: &str = "id, name, description, provider, host, port, database, username, password_enc, ssl_mode, settings, is_primary, is_active, \
                       refreshed_at, ddl_fingerprint, created_at, updated_at, deleted_at, schema_snapshot";

struct Row {
    id: uuid::Uuid,
    json: Value,
    target: ConfigTarget,
    snapshot: Option<Value>,
    refreshed_at: Option<std::time::SystemTime>,
    fingerprint: Option<String>,
    allowed: Option<Vec<String>>,
}

struct ConfigTarget {
    host: String,
    port: u16,
    database: String,
    username: String,
    password: Option<Vec<u8>>,
    ssl: String,
}

fn iso(t: Option<std::time::SystemTime>) -> Value {
    t.map(|t| Value::String(super::iso8601(t))).unwrap_or(Value::Null)
}

fn allowed_of(settings: &Value) -> Option<Vec<String>> {
    settings.get("allowed_tables").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
}

fn row(r: &tokio_postgres::Row) -> Row {
    let id: uuid::Uuid = r.get("id");
    let settings: Value = r.get("settings");
    let port: i32 = r.get("port");
    let password: Option<Vec<u8>> = r.get("password_enc");
    let ssl: String = r.get("ssl_mode");
    let target = ConfigTarget { host: r.get("host"), port: u16::try_from(port).unwrap_or(5432), database: r.get("database"), username: r.get("username"), password, ssl };
    let json = json!({
        "id": id,
        "name": r.get::<_, String>("name"),
        "description": r.get::<_, Option<String>>("description"),
        "provider": r.get::<_, String>("provider"),
        "connection_config": {
            "host": target.host, "port": target.port, "database": target.database, "username": target.username,
            "ssl": target.ssl != "disable", "ssl_mode": target.ssl, "has_password": target.password.is_some(),
        },
        "settings": settings,
        "is_primary": r.get::<_, bool>("is_primary"),
        "is_active": r.get::<_, bool>("is_active"),
        "refreshed_at": iso(r.get("refreshed_at")),
        "created_at": iso(r.get("created_at")),
        "updated_at": iso(r.get("updated_at")),
        "deleted_at": iso(r.get("deleted_at")),
    });
    Row { id, allowed: allowed_of(&settings), json, target, snapshot: r.get("schema_snapshot"), refreshed_at: r.get("refreshed_at"), fingerprint: r.get("ddl_fingerprint") }
}

fn parse_id(id: &str) -> Result<uuid::Uuid, WbError> {
    id.parse().map_err(|_| not_found())
}

/// Whose configurations a caller sees: all for the service key, else its own.
fn owner_filter(owner: &Owner) -> Option<String> {
    (owner.0 != "service").then(|| owner.0.clone())
}

async fn load(s: &AppState, owner: &Owner, id: &str) -> Result<Row, WbError> {
    let id = parse_id(id)?;
    let mine = owner_filter(owner);
    let sql = format!("select {COLUMNS} from workbench.database_configs where id = $1 and deleted_at is null and ($2::text is null or created_by = $2)");
    store(s, async |tx| tx.query_opt(&sql, &[&id, &mine]).await.map_err(db_err)).await?.map(|r| row(&r)).ok_or_else(not_found)
}

/// The target a saved configuration names (its password decrypted).
async fn target_of(s: &AppState, r: &Row) -> Result<Target, WbError> {
    let t = &r.target;
    let mut target = Target::from_config(ConfigConnection {
        host: t.host.clone(),
        port: Some(t.port),
        database: t.database.clone(),
        username: t.username.clone(),
        password: String::new(),
        ssl: Value::String(t.ssl.clone()),
    })?;
    if let Some(sealed) = &t.password {
        target.password = open(s, &r.id, &target, sealed)?;
    }
    Ok(target)
}

/// A saved configuration named by a query or execute request (`config_id`): its
/// target, and its allowed tables when it has a list.
pub async fn resolve(s: &AppState, owner: &Owner, id: &str) -> Result<(Target, Option<Vec<String>>), WbError> {
    let r = load(s, owner, id).await?;
    if r.json["is_active"] != true {
        return Err(WbError::new(StatusCode::CONFLICT, code::CONFIG_NOT_FOUND, "this database configuration is not active"));
    }
    Ok((target_of(s, &r).await?, r.allowed))
}

/// A saved configuration a caller may use, as the agent lists it.
pub struct Usable {
    /// Its id.
    pub id: String,
    /// Its name (not unique).
    pub name: String,
    /// Where it points.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database name.
    pub database: String,
    /// Database user.
    pub user: String,
    /// SSL mode.
    pub ssl: String,
}

/// The active configurations `owner` may use (all for the service key), oldest first.
pub async fn usable(s: &AppState, owner: &Owner) -> Result<Vec<Usable>, WbError> {
    let mine = owner_filter(owner);
    let sql = "select id::text, name, host, port, database, username, ssl_mode from workbench.database_configs \
               where deleted_at is null and is_active and ($1::text is null or created_by = $1) order by created_at, id limit 500";
    let rows = store(s, async |tx| tx.query(sql, &[&mine]).await.map_err(db_err)).await?;
    Ok(rows
        .iter()
        .map(|r| Usable {
            id: r.get(0),
            name: r.get(1),
            host: r.get(2),
            port: u16::try_from(r.get::<_, i32>(3)).unwrap_or(5432),
            database: r.get(4),
            user: r.get(5),
            ssl: r.get(6),
        })
        .collect())
}

// --- handlers ---

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    include_deleted: Option<bool>,
    active_only: Option<bool>,
}

async fn list(State(s): State<AppState>, Extension(owner): Extension<Owner>, Query(q): Query<ListQuery>) -> Reply {
    let mine = owner_filter(&owner);
    let mut sql = format!("select {COLUMNS} from workbench.database_configs where ($1::text is null or created_by = $1)");
    if !q.include_deleted.unwrap_or(false) {
        sql.push_str(" and deleted_at is null");
    }
    if q.active_only.unwrap_or(false) {
        sql.push_str(" and is_active");
    }
    sql.push_str(" order by is_primary desc, created_at, id");
    let rows = store(&s, async |tx| tx.query(&sql, &[&mine]).await.map_err(db_err)).await?;
    let data: Vec<Value> = rows.iter().map(|r| row(r).json).collect();
    Ok(ok(StatusCode::OK, json!({ "data": data, "count": data.len() })))
}

async fn one(State(s): State<AppState>, Extension(owner): Extension<Owner>, Path(id): Path<String>) -> Reply {
    let r = load(&s, &owner, &id).await?;
    Ok(ok(StatusCode::OK, json!({ "data": r.json })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewConfig {
    name: String,
    description: Option<String>,
    provider: Option<String>,
    connection_config: ConfigConnection,
    settings: Option<Map<String, Value>>,
    is_primary: Option<bool>,
    is_active: Option<bool>,
}

fn check_settings(settings: &Map<String, Value>) -> Result<(), WbError> {
    match settings.get("allowed_tables") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(a)) if a.len() <= 1000 && a.iter().all(|t| t.as_str().is_some_and(|t| !t.is_empty() && t.len() <= 130)) => Ok(()),
        Some(_) => Err(WbError::invalid("settings.allowed_tables must be a list of \"schema.table\" names")),
    }
}

fn check_provider(p: Option<&str>) -> Result<(), WbError> {
    match p {
        None | Some("postgresql") | Some("postgres") => Ok(()),
        Some(other) => Err(WbError::invalid(format!("provider {other:?} is not supported; use \"postgresql\""))),
    }
}

async fn create(State(s): State<AppState>, Extension(owner): Extension<Owner>, body: Bytes) -> Reply {
    let b: NewConfig = parse_body(&body)?;
    check_provider(b.provider.as_deref())?;
    let settings = b.settings.unwrap_or_default();
    check_settings(&settings)?;
    // Validates host, port, names and SSL like any target.
    let t = Target::from_config(b.connection_config.clone())?;
    let id = uuid::Uuid::new_v4();
    let sealed = if t.password.is_empty() { None } else { Some(seal(&s, &id, &t, &t.password)?) };
    let (is_primary, is_active) = (b.is_primary.unwrap_or(false), b.is_active.unwrap_or(true));
    let port = i32::from(t.port);
    let settings = Value::Object(settings);
    let sql = format!(
        "insert into workbench.database_configs (id, name, description, host, port, database, username, password_enc, ssl_mode, settings, is_primary, is_active, created_by) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) returning {COLUMNS}"
    );
    let r = store(&s, async |tx| {
        if is_primary {
            // One primary per owner: another user's configurations are not touched.
            tx.execute("update workbench.database_configs set is_primary = false, updated_at = now() where is_primary and deleted_at is null and created_by = $1", &[&owner.0])
                .await
                .map_err(db_err)?;
        }
        tx.query_one(&sql, &[&id, &b.name, &b.description, &t.host, &port, &t.database, &t.user, &sealed, &t.ssl.name(), &settings, &is_primary, &is_active, &owner.0])
            .await
            .map_err(|e| WbError::from_pg(&e))
    })
    .await?;
    Ok(ok(StatusCode::CREATED, json!({ "data": row(&r).json })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    name: Option<String>,
    description: Option<String>,
    provider: Option<String>,
    connection_config: Option<Map<String, Value>>,
    settings: Option<Map<String, Value>>,
    is_primary: Option<bool>,
    is_active: Option<bool>,
}

async fn update(State(s): State<AppState>, Extension(owner): Extension<Owner>, Path(id): Path<String>, body: Bytes) -> Reply {
    let p: Patch = parse_body(&body)?;
    check_provider(p.provider.as_deref())?;
    let current = load(&s, &owner, &id).await?;
    // The connection: the stored one with the given fields on top; a password is
    // replaced only when one is given.
    let mut conn = current.json["connection_config"].as_object().cloned().unwrap_or_default();
    conn.remove("has_password");
    let new_password = p.connection_config.as_ref().and_then(|c| c.get("password")).and_then(Value::as_str).map(str::to_owned);
    if let Some(given) = &p.connection_config {
        for (k, v) in given {
            conn.insert(k.clone(), v.clone());
        }
        if given.contains_key("ssl") && !given.contains_key("ssl_mode") {
            conn.remove("ssl_mode");
        }
    }
    if let Some(mode) = conn.remove("ssl_mode") {
        conn.insert("ssl".into(), mode);
    }
    conn.insert("password".into(), json!(new_password.clone().unwrap_or_default()));
    let cc: ConfigConnection = serde_json::from_value(Value::Object(conn)).map_err(|e| WbError::invalid(format!("connection_config: {e}")))?;
    let t = Target::from_config(cc)?;
    let moved = t.host != current.target.host || t.port != current.target.port || t.database != current.target.database;
    let other_user = moved || t.user != current.target.username;
    let sealed = match &new_password {
        Some(pw) if !pw.is_empty() => Some(seal(&s, &current.id, &t, pw)?),
        Some(_) => None,
        None if other_user && current.target.password.is_some() => {
            return Err(WbError::invalid("a new password is required when the host, port, database or username changes").hint("Send connection_config.password too.").into());
        }
        None => current.target.password.clone(),
    };
    let settings = match &p.settings {
        Some(m) => {
            check_settings(m)?;
            Value::Object(m.clone())
        }
        None => current.json["settings"].clone(),
    };
    let name = p.name.clone().unwrap_or_else(|| current.json["name"].as_str().unwrap_or_default().to_owned());
    let description = p.description.clone().or_else(|| current.json["description"].as_str().map(str::to_owned));
    let is_primary = p.is_primary.unwrap_or(current.json["is_primary"] == true);
    let is_active = p.is_active.unwrap_or(current.json["is_active"] == true);
    let port = i32::from(t.port);
    let sql = format!(
        "update workbench.database_configs set name = $2, description = $3, host = $4, port = $5, database = $6, username = $7, password_enc = $8, \
         ssl_mode = $9, settings = $10, is_primary = $11, is_active = $12, updated_at = now(), \
         schema_snapshot = case when $13 then null else schema_snapshot end, refreshed_at = case when $13 then null else refreshed_at end, \
         ddl_fingerprint = case when $13 then null else ddl_fingerprint end \
         where id = $1 and deleted_at is null returning {COLUMNS}"
    );
    let id = current.id;
    let r = store(&s, async |tx| {
        if is_primary {
            tx.execute(
                "update workbench.database_configs set is_primary = false, updated_at = now() where is_primary and id <> $1 and deleted_at is null \
                 and created_by is not distinct from (select created_by from workbench.database_configs where id = $1)",
                &[&id],
            )
            .await
            .map_err(db_err)?;
        }
        tx.query_opt(&sql, &[&id, &name, &description, &t.host, &port, &t.database, &t.user, &sealed, &t.ssl.name(), &settings, &is_primary, &is_active, &moved])
            .await
            .map_err(|e| WbError::from_pg(&e))
    })
    .await?
    .ok_or_else(not_found)?;
    Ok(ok(StatusCode::OK, json!({ "data": row(&r).json })))
}

async fn remove(State(s): State<AppState>, Extension(owner): Extension<Owner>, Path(id): Path<String>) -> Reply {
    let id = parse_id(&id)?;
    let mine = owner_filter(&owner);
    let n = store(&s, async |tx| {
        tx.execute(
            "update workbench.database_configs set deleted_at = now(), is_primary = false, is_active = false, updated_at = now() \
             where id = $1 and deleted_at is null and ($2::text is null or created_by = $2)",
            &[&id, &mine],
        )
        .await
        .map_err(db_err)
    })
    .await?;
    if n == 0 {
        return Err(not_found().into());
    }
    Ok(ok(StatusCode::OK, json!({ "message": "Database configuration deleted", "id": id })))
}

/// Seed 001's schema shape: tables with columns, filtered by allowed_tables.
fn tables_of(tree: &Value, list: &Option<Vec<String>>) -> Vec<Value> {
    let mut out = Vec::new();
    for s in tree["schemas"].as_array().into_iter().flatten() {
        let schema = s["name"].as_str().unwrap_or_default();
        for t in s["tables"].as_array().into_iter().flatten().chain(s["views"].as_array().into_iter().flatten()) {
            let name = t["name"].as_str().unwrap_or_default();
            if !allowed(list, schema, name) {
                continue;
            }
            let columns: Vec<Value> = t["columns"].as_array().into_iter().flatten().map(|c| json!({ "name": c["name"], "type": c["type"], "nullable": c["nullable"] })).collect();
            out.push(json!({ "name": name, "schema": schema, "kind": t["kind"], "columns": columns }));
        }
    }
    out
}

/// A fingerprint of the database's DDL: relations, columns and their types.
const FINGERPRINT_SQL: &str = "select md5(coalesce(string_agg(format('%s.%s.%s:%s:%s', n.nspname, c.relname, a.attnum, a.attname, a.atttypid::regtype), ',' \
    order by n.nspname, c.relname, a.attnum), '')) from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
    join pg_catalog.pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped \
    where c.relkind in ('r', 'p', 'v', 'm', 'f') and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg\\_toast%'";

async fn refresh_schema(State(s): State<AppState>, Extension(owner): Extension<Owner>, Path(id): Path<String>) -> Reply {
    let r = load(&s, &owner, &id).await?;
    let t = target_of(&s, &r).await?;
    let mut lease = s.workbench.pools.connect(&t).await?;
    let tree = super::schema::discover(lease.client(), None, s.config.workbench.statement_timeout_ms).await?;
    let fingerprint: String = lease.client().query_one(FINGERPRINT_SQL, &[]).await.map_err(|e| WbError::from_pg(&e))?.get(0);
    lease.done();
    drop(lease);
    let tables = tables_of(&tree, &r.allowed);
    let snapshot = json!({ "tables": tables });
    let at: std::time::SystemTime = store(&s, async |tx| {
        tx.query_one(
            "update workbench.database_configs set schema_snapshot = $2, refreshed_at = now(), ddl_fingerprint = $3, updated_at = now() where id = $1 returning refreshed_at",
            &[&r.id, &snapshot, &fingerprint],
        )
        .await
        .map_err(db_err)
        .map(|row| row.get(0))
    })
    .await?;
    Ok(ok(StatusCode::OK, json!({ "schema": snapshot, "refreshed_at": super::iso8601(at) })))
}

async fn freshness(State(s): State<AppState>, Extension(owner): Extension<Owner>, Path(id): Path<String>) -> Reply {
    let r = load(&s, &owner, &id).await?;
    let Some(at) = r.refreshed_at else {
        return Ok(ok(StatusCode::OK, json!({ "needs_refresh": true, "last_refresh": null, "age_hours": null, "reason": "never_refreshed" })));
    };
    let age = std::time::SystemTime::now().duration_since(at).unwrap_or_default();
    let age_hours = age.as_secs() / 3600;
    let mut reason = Value::Null;
    if age_hours >= s.config.workbench.schema_max_age_hours {
        reason = json!("stale");
    } else {
        // Young enough: has the DDL changed since? (A database that cannot be reached
        // now says so instead of guessing.)
        let t = target_of(&s, &r).await?;
        let mut lease = s.workbench.pools.connect(&t).await?;
        let now: String = lease.client().query_one(FINGERPRINT_SQL, &[]).await.map_err(|e| WbError::from_pg(&e))?.get(0);
        lease.done();
        if r.fingerprint.as_deref() != Some(now.as_str()) || r.snapshot.is_none() {
            reason = json!("schema_changed");
        }
    }
    Ok(ok(StatusCode::OK, json!({ "needs_refresh": !reason.is_null(), "last_refresh": super::iso8601(at), "age_hours": age_hours, "reason": reason })))
}

/// `/api/db/*` bodies: a connection and the tables to look at.
#[derive(Deserialize)]
struct TestBody {
    #[serde(flatten)]
    connection: ConfigConnection,
    #[serde(default)]
    allowed_tables: Vec<String>,
}

impl TestBody {
    fn target(&self) -> Result<Target, WbError> {
        Target::from_config(self.connection.clone())
    }
}

async fn test_postgres(State(s): State<AppState>, body: Bytes) -> Reply {
    let b: TestBody = parse_body(&body)?;
    let t = b.target()?;
    let started = Instant::now();
    let mut lease = s.workbench.pools.connect(&t).await?;
    lease.client().simple_query("select 1").await.map_err(|e| WbError::from_pg(&e))?;
    let latency = started.elapsed().as_millis() as u64;
    let mut body = json!({ "latency_ms": latency, "ssl": t.ssl != Ssl::Disable });
    if let Some(first) = b.allowed_tables.first() {
        // Can this user read it? Resolved and checked by the server, never spliced.
        let answer = lease.client().query_one("select case when to_regclass($1) is null then null else has_table_privilege(to_regclass($1), 'SELECT') end", &[first]).await;
        body["tested_table"] = json!(first);
        match answer {
            Ok(row) => {
                let accessible: Option<bool> = row.get(0);
                body["tested_table_accessible"] = json!(accessible.unwrap_or(false));
                if accessible.is_none() {
                    body["tested_table_error"] = json!("no such table");
                }
            }
            // Not a table name at all (42602 invalid name, 3F000 no such schema).
            Err(e) if e.as_db_error().is_some() => {
                body["tested_table_accessible"] = json!(false);
                body["tested_table_error"] = json!(e.as_db_error().map(|d| d.message().to_owned()));
            }
            Err(e) => return Err(WbError::from_pg(&e).into()),
        }
    }
    lease.done();
    Ok(ok(StatusCode::OK, body))
}

async fn discover(State(s): State<AppState>, body: Bytes) -> Reply {
    let b: TestBody = parse_body(&body)?;
    let t = b.target()?;
    let started = Instant::now();
    let mut lease = s.workbench.pools.connect(&t).await?;
    let tree = super::schema::discover(lease.client(), None, s.config.workbench.statement_timeout_ms).await;
    lease.done();
    let tree = tree?;
    let list = if b.allowed_tables.is_empty() { None } else { Some(b.allowed_tables.clone()) };
    let schemas: Vec<Value> = tree["schemas"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|sch| {
            let name = sch["name"].as_str().unwrap_or_default();
            let rel = |key: &str| -> Vec<Value> {
                sch[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|t| allowed(&list, name, t["name"].as_str().unwrap_or_default()))
                    .map(|t| json!({ "name": t["name"], "full_name": format!("{name}.{}", t["name"].as_str().unwrap_or_default()), "row_count": t["row_estimate"] }))
                    .collect()
            };
            json!({ "name": name, "tables": rel("tables"), "views": rel("views") })
        })
        .collect();
    Ok(ok(StatusCode::OK, json!({ "schemas": schemas, "duration_ms": started.elapsed().as_millis() as u64 })))
}
