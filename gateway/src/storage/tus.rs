//! Resumable uploads: the TUS 1.0.0 protocol under /storage/v1/upload/resumable, as
//! Supabase offers it (tus-js-client, Uppy): extensions `creation` and `termination`.
//!
//! POST creates an upload (Upload-Length, Upload-Metadata with bucketName /
//! objectName / contentType / cacheControl, x-upsert) after the same checks as a direct
//! upload — path, bucket rules, and the caller's right to insert the object (tried as
//! its role, then rolled back); HEAD tells the offset; PATCH appends at exactly that
//! offset (409 otherwise; 423 while another PATCH of the upload runs); DELETE
//! abandons it. Received bytes are staged durably per PATCH (database: rows in
//! storage.upload_chunks; disk: an fsynced file), so a dropped connection loses only
//! the PATCH in flight and the client resumes from HEAD's offset. The last byte
//! creates the object through the direct-upload path (`upload::store`).
//! Only the creator may touch an upload: its URL (Location) carries `?token=`, 32
//! random bytes that only the creator learns (kept at rest only as a SHA-256 digest;
//! never logged: the access log omits query strings), so
//! two clients with the same API key cannot reach each other's uploads; for a user the
//! `sub` must match as well.

use std::path::PathBuf;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures_util::StreamExt;
use uuid::Uuid;

use super::backend::{Backend, CHUNK};
use super::stage::{stage, Outcome, Place};
use super::upload::{bucket_rules, mime_allowed, store};
use super::{paths, StorageError, StorageResult};
use crate::db::{caller as as_caller, RequestInfo};
use crate::http::caller::{Caller, CallerError};
use crate::AppState;

const TUS_VERSION: &str = "1.0.0";

fn tus_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn status(code: StatusCode) -> Response {
    tus_headers(code.into_response())
}

fn check_version(h: &HeaderMap) -> StorageResult<()> {
    match h.get("tus-resumable").and_then(|v| v.to_str().ok()) {
        Some(TUS_VERSION) => Ok(()),
        _ => Err(StorageError(StatusCode::PRECONDITION_FAILED, format!("Tus-Resumable: {TUS_VERSION} is required"))),
    }
}

/// Who may continue an upload (besides knowing its token): the user's `sub`, or the
/// key's role.
fn owner_of(c: &Caller) -> String {
    c.user_id().map(str::to_owned).unwrap_or_else(|| c.pg_role.clone())
}

fn info() -> RequestInfo<'static> {
    RequestInfo::new("POST", "/storage")
}

/// `key base64,key base64` → value of `key`.
fn metadata(h: &HeaderMap, key: &str) -> Option<String> {
    let raw = h.get("upload-metadata")?.to_str().ok()?;
    raw.split(',').find_map(|pair| {
        let mut it = pair.trim().splitn(2, ' ');
        (it.next()? == key).then_some(())?;
        let v = base64::engine::general_purpose::STANDARD.decode(it.next().unwrap_or("").trim()).ok()?;
        String::from_utf8(v).ok()
    })
}

fn staging(root: &std::path::Path, id: Uuid) -> PathBuf {
    root.join(".tmp").join(format!("tus-{id}"))
}

/// OPTIONS /upload/resumable: what this server speaks.
pub async fn options() -> Response {
    let mut res = status(StatusCode::NO_CONTENT);
    let h = res.headers_mut();
    h.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    h.insert("tus-extension", HeaderValue::from_static("creation,termination"));
    res
}

/// POST /upload/resumable → 201 with Location.
pub async fn create(State(s): State<AppState>, caller: Result<Caller, CallerError>, headers: HeaderMap) -> StorageResult<Response> {
    let caller = caller?;
    check_version(&headers)?;
    if headers.contains_key("upload-defer-length") {
        return Err(StorageError::bad("Upload-Defer-Length is not supported: send Upload-Length"));
    }
    let length: i64 = headers
        .get("upload-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .filter(|n| *n >= 0)
        .ok_or_else(|| StorageError::bad("Upload-Length must be a non-negative integer"))?;
    let bucket = metadata(&headers, "bucketName").ok_or_else(|| StorageError::bad("Upload-Metadata must name bucketName"))?;
    let name = paths::check(&metadata(&headers, "objectName").ok_or_else(|| StorageError::bad("Upload-Metadata must name objectName"))?).map_err(StorageError::bad)?;
    let mime = metadata(&headers, "contentType").filter(|m| !m.is_empty()).unwrap_or_else(|| "application/octet-stream".into());
    let cache_control = match metadata(&headers, "cacheControl") {
        Some(v) if v.chars().all(|c| c.is_ascii_digit()) && !v.is_empty() => format!("max-age={v}"),
        Some(v) if !v.is_empty() => v,
        _ => "max-age=3600".into(),
    };
    let upsert = headers.get("x-upsert").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("true"));

    let mut client = s.pool.get().await.map_err(crate::db::DbError::from)?;
    let tx = as_caller::begin(&mut client, &caller.run_as(), &info()).await?;
    let (limit, allowed) = bucket_rules(&tx, &bucket).await?;
    if limit.is_some_and(|l| length > l) {
        return Err(StorageError(StatusCode::PAYLOAD_TOO_LARGE, "object exceeds the bucket's file_size_limit".into()));
    }
    if !mime_allowed(&allowed, &mime) {
        return Err(StorageError(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("mime type {mime} is not allowed in this bucket")));
    }
    // May this caller create the object at all? Tried as its role, then undone.
    tx.batch_execute("SAVEPOINT probe").await?;
    if upsert {
        tx.execute("DELETE FROM storage.objects WHERE bucket_id = $1 AND name = $2", &[&bucket, &name]).await?;
    }
    match tx.execute("INSERT INTO storage.objects (bucket_id, name) VALUES ($1, $2)", &[&bucket, &name]).await {
        Ok(_) => {}
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => return Err(StorageError(StatusCode::CONFLICT, "the resource already exists".into())),
        Err(e) => return Err(StorageError::from_db(e, caller.role == pgstack_shared::Role::Anon)),
    }
    tx.batch_execute("ROLLBACK TO SAVEPOINT probe").await?;
    tx.query_one("SELECT set_config('role', 'pgstack_storage_admin', true)", &[]).await?;
    // An abandoned upload to this path past its lifetime no longer holds the path.
    tx.execute(
        "DELETE FROM storage.uploads WHERE bucket_id = $1 AND name = $2 AND created_at < now() - make_interval(secs => $3)",
        &[&bucket, &name, &(s.config.storage_tmp_max_age_secs as f64)],
    )
    .await?;
    let token = crate::auth::tokens::opaque();
    let id: Uuid = match tx
        .query_one(
            "INSERT INTO storage.uploads (bucket_id, name, owner, token_hash, upload_length, mimetype, cache_control, upsert)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            &[&bucket, &name, &owner_of(&caller), &crate::auth::tokens::digest(&token), &length, &mime, &cache_control, &upsert],
        )
        .await
    {
        Ok(r) => r.get(0),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            return Err(StorageError(StatusCode::CONFLICT, "an upload to this path is already in progress".into()))
        }
        Err(e) => return Err(e.into()),
    };
    tx.commit().await?;
    if let Backend::Disk(root) = &s.storage_backend {
        tokio::fs::create_dir_all(root.join(".tmp")).await?;
        tokio::fs::File::create(staging(root, id)).await?;
    }
    let mut res = status(StatusCode::CREATED);
    let location = format!("{}/storage/v1/upload/resumable/{id}?token={token}", s.config.api_external_url);
    res.headers_mut().insert(header::LOCATION, HeaderValue::from_str(&location).map_err(|_| StorageError::bad("bad location"))?);
    res.headers_mut().insert("upload-offset", HeaderValue::from_static("0"));
    Ok(res)
}

struct Upload {
    bucket: String,
    name: String,
    length: i64,
    offset: i64,
    mime: String,
    cache_control: String,
    upsert: bool,
}

/// The upload, if it exists, `token` is its token and it belongs to the caller; locked
/// when `lock`. Anything else is the same 404. The row is found by the token's SHA-256
/// digest (as auth finds its hashed tokens), so a wrong token locks nothing and the
/// comparison's timing says nothing about the token.
async fn load(tx: &deadpool_postgres::Transaction<'_>, id: Uuid, token: &str, caller: &Caller, lock: bool) -> StorageResult<Upload> {
    let sql = format!(
        "SELECT bucket_id, name, upload_length, upload_offset, mimetype, cache_control, upsert, owner
           FROM storage.uploads WHERE id = $1 AND token_hash = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    if lock {
        // Another PATCH of this upload still running: wait a little, then 423.
        tx.batch_execute("SET LOCAL lock_timeout = '2s'").await?;
    }
    let row = match tx.query_opt(sql.as_str(), &[&id, &crate::auth::tokens::digest(token)]).await {
        Ok(r) => r,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) || e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) => {
            return Err(StorageError(StatusCode::LOCKED, "another request is writing to this upload".into()))
        }
        Err(e) => return Err(e.into()),
    };
    let row = row.ok_or_else(|| StorageError::not_found("upload not found"))?;
    if row.get::<_, String>(7) != owner_of(caller) {
        return Err(StorageError::not_found("upload not found"));
    }
    Ok(Upload { bucket: row.get(0), name: row.get(1), length: row.get(2), offset: row.get(3), mime: row.get(4), cache_control: row.get(5), upsert: row.get(6) })
}

async fn admin_tx(client: &mut deadpool_postgres::Object) -> StorageResult<deadpool_postgres::Transaction<'_>> {
    let tx = client.transaction().await?;
    tx.batch_execute("SET LOCAL ROLE pgstack_storage_admin").await?;
    Ok(tx)
}

fn id_of(raw: &str) -> StorageResult<Uuid> {
    raw.parse().map_err(|_| StorageError::not_found("upload not found"))
}

/// The `token` of an upload URL's query (none → the same 404 as a wrong one).
fn token_of(q: &Option<String>) -> StorageResult<String> {
    q.as_deref()
        .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned()))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| StorageError::not_found("upload not found"))
}

/// HEAD /upload/resumable/{id} → Upload-Offset and Upload-Length.
pub async fn head(State(s): State<AppState>, caller: Result<Caller, CallerError>, Path(raw): Path<String>, RawQuery(q): RawQuery) -> StorageResult<Response> {
    let caller = caller?;
    let id = id_of(&raw)?;
    let token = token_of(&q)?;
    let mut client = s.pool.get().await.map_err(crate::db::DbError::from)?;
    let tx = admin_tx(&mut client).await?;
    let u = load(&tx, id, &token, &caller, false).await?;
    tx.commit().await?;
    let mut res = status(StatusCode::OK);
    res.headers_mut().insert("upload-offset", HeaderValue::from(u.offset));
    res.headers_mut().insert("upload-length", HeaderValue::from(u.length));
    Ok(res)
}

/// DELETE /upload/resumable/{id} → 204; the staged bytes go.
pub async fn terminate(
    State(s): State<AppState>,
    caller: Result<Caller, CallerError>,
    Path(raw): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> StorageResult<Response> {
    let caller = caller?;
    check_version(&headers)?;
    let id = id_of(&raw)?;
    let token = token_of(&q)?;
    let mut client = s.pool.get().await.map_err(crate::db::DbError::from)?;
    let tx = admin_tx(&mut client).await?;
    load(&tx, id, &token, &caller, true).await?;
    tx.execute("DELETE FROM storage.uploads WHERE id = $1", &[&id]).await?;
    tx.commit().await?;
    if let Backend::Disk(root) = &s.storage_backend {
        let _ = tokio::fs::remove_file(staging(root, id)).await;
    }
    Ok(status(StatusCode::NO_CONTENT))
}

/// Uploads with a PATCH running in this gateway (a second PATCH of one of them → 423
/// before its body is read; across gateways the offset check under the row lock
/// answers 409 instead).
fn in_flight() -> &'static std::sync::Mutex<std::collections::HashSet<Uuid>> {
    static SET: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<Uuid>>> = std::sync::OnceLock::new();
    SET.get_or_init(Default::default)
}

/// This gateway's claim on an upload for one PATCH; released on drop.
struct Busy(Uuid);

impl Busy {
    fn claim(id: Uuid) -> StorageResult<Busy> {
        let mut set = in_flight().lock().unwrap_or_else(|e| e.into_inner());
        if !set.insert(id) {
            return Err(StorageError(StatusCode::LOCKED, "another request is writing to this upload".into()));
        }
        Ok(Busy(id))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        in_flight().lock().unwrap_or_else(|e| e.into_inner()).remove(&self.0);
    }
}

/// PATCH /upload/resumable/{id}: appends at Upload-Offset → 204 with the new offset;
/// the last byte creates the object.
///
/// No connection is held while the body arrives: the upload is looked up (404 / 409
/// at once), the body is staged (memory or an anonymous temp file, under
/// BODY_IDLE_TIMEOUT / BODY_MIN_RATE), then one short transaction locks the row,
/// checks the offset again and appends. A body cut short (the client went away, or a
/// timeout → 408) still keeps the bytes that arrived: the client resumes from HEAD.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn patch(
    State(s): State<AppState>,
    caller: Result<Caller, CallerError>,
    Path(raw): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> StorageResult<Response> {
    let caller = caller?;
    check_version(&headers)?;
    let id = id_of(&raw)?;
    let token = token_of(&q)?;
    if headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) != Some("application/offset+octet-stream") {
        return Err(StorageError(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/offset+octet-stream".into()));
    }
    let claimed: i64 =
        headers.get("upload-offset").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok()).ok_or_else(|| StorageError::bad("Upload-Offset is required"))?;
    let u = {
        let mut client = s.pool.get().await.map_err(crate::db::DbError::from)?;
        let tx = admin_tx(&mut client).await?;
        let u = load(&tx, id, &token, &caller, false).await?;
        tx.commit().await?;
        u
    };
    let _busy = Busy::claim(id)?;
    if claimed != u.offset {
        return Err(StorageError(StatusCode::CONFLICT, format!("Upload-Offset is {}, not {claimed}", u.offset)));
    }
    if u.offset == u.length {
        // Every byte is here (a zero-length upload, or a finish that failed on the
        // server's side): an empty PATCH at the end (re)creates the object.
        finish(&s, &caller, id, &token, &u).await?;
        let mut res = status(StatusCode::NO_CONTENT);
        res.headers_mut().insert("upload-offset", HeaderValue::from(u.offset));
        return Ok(res);
    }
    let too_long = || StorageError(StatusCode::PAYLOAD_TOO_LARGE, "more bytes than Upload-Length".into());
    let room = (u.length - u.offset) as u64;
    if crate::http::body::declared_length(&headers).is_some_and(|n| n > room) {
        return Err(too_long());
    }
    let stream = crate::http::body::guard(body, crate::http::body::BodyLimits::from_config(&s.config)).map(|r| r.map_err(StorageError::from));
    let spool = match &s.storage_backend {
        Backend::Disk(root) => Some(root.join(".tmp")),
        Backend::Database => None,
    };
    let Outcome { mut staged, cut } = stage(stream, Place::Spool(spool.as_deref()), room, too_long).await?;
    let offset = u.offset + staged.size as i64;
    if staged.size > 0 {
        let mut client = s.pool.get().await.map_err(crate::db::DbError::from)?;
        let tx = admin_tx(&mut client).await?;
        let now = load(&tx, id, &token, &caller, true).await?;
        if now.offset != claimed {
            tx.rollback().await?;
            return Err(StorageError(StatusCode::CONFLICT, format!("Upload-Offset is {}, not {claimed}", now.offset)));
        }
        match &s.storage_backend {
            Backend::Database => {
                // Chunks stay CHUNK-aligned across PATCHes (as object_chunks must be, so
                // that the finish moves them as they are): a short last chunk is topped
                // up first.
                let last = tx.query_opt("SELECT n, octet_length(data) FROM storage.upload_chunks WHERE upload_id = $1 ORDER BY n DESC LIMIT 1", &[&id]).await?;
                let mut n: i32 = match last {
                    Some(row) => {
                        let (last_n, len): (i32, i32) = (row.get(0), row.get(1));
                        let room = CHUNK.saturating_sub(len as usize);
                        if room > 0 {
                            if let Some(data) = staged.next_piece(room).await? {
                                tx.execute("UPDATE storage.upload_chunks SET data = data || $3 WHERE upload_id = $1 AND n = $2", &[&id, &last_n, &data]).await?;
                            }
                        }
                        last_n + 1
                    }
                    None => 0,
                };
                while let Some(data) = staged.next_piece(CHUNK).await? {
                    tx.execute("INSERT INTO storage.upload_chunks (upload_id, n, data) VALUES ($1, $2, $3)", &[&id, &n, &data]).await?;
                    n += 1;
                }
            }
            // Whatever a failed PATCH left past the committed offset is dropped.
            Backend::Disk(root) => staged.append_to(&staging(root, id), u.offset as u64).await.map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => StorageError::not_found("upload staging missing"),
                _ => e.into(),
            })?,
        }
        tx.execute("UPDATE storage.uploads SET upload_offset = $2 WHERE id = $1", &[&id, &offset]).await?;
        tx.commit().await?;
    }
    if let Some(e) = cut {
        return Err(e);
    }
    if offset == u.length {
        finish(&s, &caller, id, &token, &u).await?;
    }
    let mut res = status(StatusCode::NO_CONTENT);
    res.headers_mut().insert("upload-offset", HeaderValue::from(offset));
    Ok(res)
}

/// The last byte arrived: the object is created from the staged bytes exactly as a
/// direct upload would be (as the caller, bucket rules, crash-safe publishing), then
/// the upload and its staging are removed. Database backend: one statement
/// (`storage.finish_upload`), in the caller's transaction; no byte leaves Postgres.
#[tracing::instrument(level = "debug", skip_all, fields(%id))]
async fn finish(s: &AppState, caller: &Caller, id: Uuid, token: &str, u: &Upload) -> StorageResult<()> {
    let result = match &s.storage_backend {
        Backend::Database => finish_in_database(s, caller, id, token).await,
        Backend::Disk(root) => {
            // A staged file that cannot be read is the server's failure, not the upload's.
            let unreadable = |e: std::io::Error| {
                tracing::warn!(error = %e, "storage: a staged upload could not be read");
                StorageError(StatusCode::SERVICE_UNAVAILABLE, "the staged upload could not be read; retry".into())
            };
            let f = tokio::fs::File::open(staging(root, id)).await?;
            let stream = tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024).map(|r| r.map_err(unreadable));
            store(s, caller, &u.bucket, &u.name, &u.mime, &u.cache_control, stream, u.upsert, false).await.map(|_| ())
        }
    };
    // A server-side failure keeps the staged bytes: the client's retry (an empty PATCH
    // at the end) finishes again. Success, or a refusal of the object (RLS, rules,
    // conflict), ends the upload (the database finish removed it already on success).
    match &result {
        Err(e) if e.0.is_server_error() => return result,
        Ok(()) if matches!(s.storage_backend, Backend::Database) => return result,
        _ => {}
    }
    let mut client = s.pool.get().await.map_err(crate::db::DbError::from)?;
    let tx = admin_tx(&mut client).await?;
    tx.execute("DELETE FROM storage.uploads WHERE id = $1", &[&id]).await?;
    tx.commit().await?;
    if let Backend::Disk(root) = &s.storage_backend {
        let _ = tokio::fs::remove_file(staging(root, id)).await;
    }
    result
}

/// `storage.finish_upload` as the caller: RLS refusals answer as a direct upload's
/// (401 / 403), an existing object 409, a bucket rule its own status.
async fn finish_in_database(s: &AppState, caller: &Caller, id: Uuid, token: &str) -> StorageResult<()> {
    let mut client = s.pool.get().await.map_err(crate::db::DbError::from)?;
    let tx = as_caller::begin(&mut client, &caller.run_as(), &info()).await?;
    let row = match tx.query_one("SELECT refusal, message FROM storage.finish_upload($1, $2)", &[&id, &crate::auth::tokens::digest(token)]).await {
        Ok(row) => row,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => return Err(StorageError(StatusCode::CONFLICT, "the resource already exists".into())),
        Err(e) => return Err(StorageError::from_db(e, caller.role == pgstack_shared::Role::Anon)),
    };
    let (refusal, message): (i32, Option<String>) = (row.get(0), row.get(1));
    if refusal != 0 {
        let status = StatusCode::from_u16(refusal as u16).unwrap_or(StatusCode::BAD_REQUEST);
        return Err(StorageError(status, message.unwrap_or_default()));
    }
    tx.commit().await?;
    Ok(())
}

/// Routes under /upload/resumable.
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::{any, post};
    axum::Router::new().route("/upload/resumable", post(create).options(options)).route("/upload/resumable/", post(create).options(options)).route(
        "/upload/resumable/{id}",
        any(|m: Method, st: State<AppState>, c: Result<Caller, CallerError>, p: Path<String>, q: RawQuery, h: HeaderMap, b: Body| async move {
            match m {
                Method::HEAD => head(st, c, p, q).await.into_response(),
                Method::PATCH => patch(st, c, p, q, h, b).await.into_response(),
                Method::DELETE => terminate(st, c, p, q, h).await.into_response(),
                Method::OPTIONS => options().await,
                _ => StorageError(StatusCode::METHOD_NOT_ALLOWED, "use HEAD, PATCH or DELETE".into()).into_response(),
            }
        }),
    )
}

/// Removes uploads older than STORAGE_TMP_MAX_AGE (and their staged chunks), hourly.
pub fn spawn_expiry(s: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            tick.tick().await;
            let run = async {
                let mut client = s.pool.get().await.map_err(|e| e.to_string())?;
                let tx = admin_tx(&mut client).await.map_err(|e| e.1)?;
                let n = tx
                    .execute("DELETE FROM storage.uploads WHERE created_at < now() - make_interval(secs => $1)", &[&(s.config.storage_tmp_max_age_secs as f64)])
                    .await
                    .map_err(|e| e.to_string())?;
                tx.commit().await.map_err(|e| e.to_string())?;
                Ok::<u64, String>(n)
            };
            match run.await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "storage: expired resumable uploads removed"),
                Err(e) => tracing::warn!(error = %e, "storage: expiring resumable uploads failed"),
            }
        }
    });
}
