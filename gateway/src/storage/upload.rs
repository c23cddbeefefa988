//! Uploads: POST (create, `x-upsert: true` replaces) and PUT (replace), with a raw
//! body (its Content-Type) or multipart/form-data (the file part; a `cacheControl`
//! field). The row is written as the caller's role (RLS).
//!
//! No database connection is held while the client sends: the bucket's rules, a
//! declared Content-Length and the caller's right to write are checked first (in a
//! transaction that is rolled back), then the body is staged (`stage`, under
//! BODY_IDLE_TIMEOUT / BODY_MIN_RATE), then one short transaction writes the row and
//! the content (database chunks, or the disk file renamed into place before commit).

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use futures_util::{Stream, StreamExt};
use serde_json::{json, Value};
use uuid::Uuid;

use super::backend::{self, Backend, CHUNK};
use super::stage::{self, Outcome, Place, Staged};
use super::{paths, StorageError, StorageResult};
use crate::db::{caller as as_caller, RequestInfo};
use crate::http::body::{self as req_body, BodyError, BodyLimits};
use crate::http::caller::{Caller, CallerError};
use crate::AppState;

fn info() -> RequestInfo<'static> {
    RequestInfo::new("POST", "/storage")
}

/// POST /storage/v1/object/{bucket}/{path}: create (or replace with `x-upsert: true`).
pub async fn upload(s: State<AppState>, caller: Result<Caller, CallerError>, p: Path<(String, String)>, headers: HeaderMap, body: Body) -> StorageResult<Json<Value>> {
    let upsert = headers.get("x-upsert").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    receive(s, caller?, p, headers, body, upsert, false).await
}

/// PUT /storage/v1/object/{bucket}/{path}: replace an existing object.
pub async fn update(s: State<AppState>, caller: Result<Caller, CallerError>, p: Path<(String, String)>, headers: HeaderMap, body: Body) -> StorageResult<Json<Value>> {
    receive(s, caller?, p, headers, body, true, true).await
}

#[tracing::instrument(level = "debug", skip_all, fields(%bucket))]
async fn receive(
    State(s): State<AppState>,
    caller: Caller,
    Path((bucket, raw_path)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
    upsert: bool,
    must_exist: bool,
) -> StorageResult<Json<Value>> {
    let name = paths::check(&raw_path).map_err(StorageError::bad)?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let mut cache_control = headers.get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).unwrap_or("max-age=3600").to_owned();
    let boundary = multer::parse_boundary(&content_type).ok();
    let raw_mime = Some(content_type.split(';').next().unwrap_or("").trim().to_owned()).filter(|v| !v.is_empty()).unwrap_or_else(|| "application/octet-stream".into());
    let declared = req_body::declared_length(&headers);
    // Before any byte of the body (a multipart body's type and size are known only
    // from its file part).
    let limit = precheck(&s, &caller, &bucket, &name, boundary.is_none().then_some(raw_mime.as_str()), declared.filter(|_| boundary.is_none()), upsert, must_exist).await?;
    let limits = BodyLimits::from_config(&s.config);
    let Some(boundary) = boundary else {
        let stream = req_body::guard(body, limits).map(|r| r.map_err(StorageError::from));
        let out = stage_object(&s, stream, limit).await?;
        return commit(&s, &caller, &bucket, &name, &raw_mime, &cache_control, out, upsert, must_exist).await;
    };
    // Fields besides the file are skipped unread, except a bounded cacheControl; the
    // whole body may exceed the file's limit only by the multipart framing.
    let constraints = multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(limit.saturating_add(MULTIPART_SLACK)).for_field("cacheControl", 1024));
    let mut mp = multer::Multipart::with_constraints(req_body::guard(body, limits), boundary, constraints);
    while let Some(field) = mp.next_field().await.map_err(multipart_error)? {
        let is_file = field.file_name().is_some() || matches!(field.name(), None | Some("") | Some("file"));
        if !is_file {
            if field.name() == Some("cacheControl") {
                let v = field.text().await.map_err(multipart_error)?;
                if !v.is_empty() {
                    cache_control = if v.chars().all(|c| c.is_ascii_digit()) { format!("max-age={v}") } else { v };
                }
            }
            continue;
        }
        let mime = field.content_type().map(|m| m.essence_str().to_owned()).unwrap_or_else(|| "application/octet-stream".into());
        let out = stage_object(&s, field.map(|r| r.map_err(multipart_error)), limit).await?;
        return commit(&s, &caller, &bucket, &name, &mime, &cache_control, out, upsert, must_exist).await;
    }
    Err(StorageError::bad("the multipart body has no file part"))
}

/// What a multipart body may carry besides the file itself.
const MULTIPART_SLACK: u64 = 64 * 1024;

fn multipart_error(e: multer::Error) -> StorageError {
    match e {
        multer::Error::StreamReadFailed(inner) => match inner.downcast::<BodyError>() {
            Ok(b) => StorageError::from(*b),
            Err(_) => StorageError::bad("upload interrupted"),
        },
        multer::Error::StreamSizeExceeded { .. } => too_large(),
        multer::Error::FieldSizeExceeded { .. } => StorageError(StatusCode::PAYLOAD_TOO_LARGE, "a multipart field is too large".into()),
        e => StorageError::bad(format!("invalid multipart body: {e}")),
    }
}

fn too_large() -> StorageError {
    StorageError(StatusCode::PAYLOAD_TOO_LARGE, "object exceeds the bucket's file_size_limit".into())
}

/// Bucket rules: (file_size_limit, allowed_mime_types).
pub(super) async fn bucket_rules(tx: &deadpool_postgres::Transaction<'_>, bucket: &str) -> StorageResult<(Option<i64>, Option<Vec<String>>)> {
    let row = tx
        .query_opt("SELECT file_size_limit, allowed_mime_types FROM storage.buckets WHERE id = $1", &[&bucket])
        .await?
        .ok_or_else(|| StorageError::not_found("bucket not found"))?;
    Ok((row.get(0), row.get(1)))
}

pub(super) fn mime_allowed(allowed: &Option<Vec<String>>, mime: &str) -> bool {
    let Some(list) = allowed else { return true };
    list.is_empty() || list.iter().any(|a| a == mime || a.strip_suffix("/*").is_some_and(|p| mime.split('/').next() == Some(p)) || a == "*/*")
}

/// The row this upload will write, tried as the caller: replaces the old one
/// (`upsert`), which must exist (`must_exist`), then inserts. Returns the old id.
async fn write_row(tx: &deadpool_postgres::Transaction<'_>, caller: &Caller, bucket: &str, name: &str, upsert: bool, must_exist: bool) -> StorageResult<(Option<Uuid>, Uuid)> {
    // Replacing = a new object id (content per id never changes); the old row goes.
    let old: Option<Uuid> = tx.query_opt("DELETE FROM storage.objects WHERE bucket_id = $1 AND name = $2 AND $3 RETURNING id", &[&bucket, &name, &upsert]).await?.map(|r| r.get(0));
    if must_exist && old.is_none() {
        return Err(StorageError::not_found("object not found"));
    }
    match tx.query_one("INSERT INTO storage.objects (bucket_id, name) VALUES ($1, $2) RETURNING id", &[&bucket, &name]).await {
        Ok(r) => Ok((old, r.get(0))),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => Err(StorageError(StatusCode::CONFLICT, "the resource already exists".into())),
        // RLS refusals: 401 for the anon key, 403 for users (as REST maps 42501).
        Err(e) => Err(StorageError::from_db(e, caller.role == pgstack_shared::Role::Anon)),
    }
}

/// Everything that can refuse an upload before its body is read: the bucket, the
/// mime type (`mime`, when known), a declared length over the bucket's limit, and the
/// caller's right to write the row (tried, then rolled back). Returns the limit.
#[allow(clippy::too_many_arguments)]
pub(super) async fn precheck(
    s: &AppState,
    caller: &Caller,
    bucket: &str,
    name: &str,
    mime: Option<&str>,
    declared: Option<u64>,
    upsert: bool,
    must_exist: bool,
) -> StorageResult<u64> {
    let mut client = s.pool.get().await.map_err(crate::db::DbError::from)?;
    let tx = as_caller::begin(&mut client, &caller.run_as(), &info()).await?;
    let (limit, allowed) = bucket_rules(&tx, bucket).await?;
    if let Some(mime) = mime.filter(|m| !mime_allowed(&allowed, m)) {
        return Err(StorageError(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("mime type {mime} is not allowed in this bucket")));
    }
    let limit = limit.unwrap_or(i64::MAX).max(0) as u64;
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    write_row(&tx, caller, bucket, name, upsert, must_exist).await?;
    tx.rollback().await?;
    Ok(limit)
}

/// Stages an object's content where its backend wants it (no connection held).
async fn stage_object<S>(s: &AppState, stream: S, limit: u64) -> StorageResult<Outcome>
where
    S: Stream<Item = StorageResult<Bytes>>,
{
    let place = match &s.storage_backend {
        Backend::Database => Place::Spool(None),
        Backend::Disk(root) => Place::Named(root),
    };
    stage::stage(stream, place, limit, too_large).await
}

/// Stages `stream` and creates the object from it (TUS: the staged upload).
#[allow(clippy::too_many_arguments)]
pub(super) async fn store<S>(
    s: &AppState,
    caller: &Caller,
    bucket: &str,
    name: &str,
    mime: &str,
    cache_control: &str,
    stream: S,
    upsert: bool,
    must_exist: bool,
) -> StorageResult<Json<Value>>
where
    S: Stream<Item = StorageResult<Bytes>>,
{
    let out = stage_object(s, stream, u64::MAX).await?;
    commit(s, caller, bucket, name, mime, cache_control, out, upsert, must_exist).await
}

/// One short transaction as the caller: the bucket's rules again (they may have
/// changed), the row, the content, the metadata. A body that was cut short creates
/// nothing.
#[allow(clippy::too_many_arguments)]
#[tracing::instrument(level = "debug", skip_all, fields(%bucket))]
async fn commit(
    s: &AppState,
    caller: &Caller,
    bucket: &str,
    name: &str,
    mime: &str,
    cache_control: &str,
    out: Outcome,
    upsert: bool,
    must_exist: bool,
) -> StorageResult<Json<Value>> {
    let mut staged: Staged = match out {
        Outcome { cut: Some(e), .. } => return Err(e),
        Outcome { staged, cut: None } => staged,
    };
    let mut client = s.pool.get().await.map_err(crate::db::DbError::from)?;
    let tx = as_caller::begin(&mut client, &caller.run_as(), &info()).await?;
    let (limit, allowed) = bucket_rules(&tx, bucket).await?;
    if !mime_allowed(&allowed, mime) {
        return Err(StorageError(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("mime type {mime} is not allowed in this bucket")));
    }
    if limit.is_some_and(|l| staged.size > l.max(0) as u64) {
        return Err(too_large());
    }
    let (old, id) = write_row(&tx, caller, bucket, name, upsert, must_exist).await?;
    if let Backend::Database = &s.storage_backend {
        tx.query_one("SELECT set_config('role', 'pgstack_storage_admin', true)", &[]).await?;
        // Chunks are exactly CHUNK bytes (the last one shorter), so a byte offset maps
        // to a chunk number (Range requests).
        let mut n = 0i32;
        while let Some(data) = staged.next_piece(CHUNK).await? {
            tx.execute("INSERT INTO storage.object_chunks (object_id, n, data) VALUES ($1, $2, $3)", &[&id, &n, &data]).await?;
            n += 1;
        }
        tx.query_one("SELECT set_config('role', $1, true)", &[&caller.pg_role.as_str()]).await?;
    }
    let size = staged.size;
    let metadata = json!({"size": size, "mimetype": mime, "eTag": format!("\"{}\"", staged.etag), "cacheControl": cache_control,
                          "contentLength": size, "lastModified": null});
    tx.execute("UPDATE storage.objects SET metadata = $2, updated_at = now() WHERE id = $1", &[&id, &metadata]).await?;
    match (&s.storage_backend, staged.named_path()) {
        (Backend::Disk(root), Some(tmp)) => {
            backend::publish(root, bucket, id, tmp).await?;
            staged.published();
            if let Err(e) = tx.commit().await {
                let _ = tokio::fs::remove_file(backend::object_path(root, bucket, id)).await;
                return Err(e.into());
            }
            if let Some(old) = old {
                let _ = tokio::fs::remove_file(backend::object_path(root, bucket, old)).await;
            }
        }
        _ => tx.commit().await?,
    }
    let key = format!("{bucket}/{name}");
    Ok(Json(json!({"id": id, "key": key, "Id": id, "Key": key})))
}
