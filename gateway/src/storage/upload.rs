//! Uploads: POST (create, `x-upsert: true` replaces) and PUT (replace), with a raw
//! body (its Content-Type) or multipart/form-data (the file part; a `cacheControl`
//! field), streamed to the backend. The row is written as the caller's role (RLS).

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use futures_util::{Stream, StreamExt};
use serde_json::{json, Value};
use uuid::Uuid;

use md5::{Digest, Md5};

use super::backend::{self, Backend, Incoming, CHUNK};
use super::{paths, StorageError, StorageResult};
use crate::http::caller::{Caller, CallerError};
use crate::rest::exec::{self, RequestInfo};
use crate::AppState;

fn info() -> RequestInfo<'static> {
    RequestInfo { method: "POST", path: "/storage", headers: "{}".into(), ..Default::default() }
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
    if let Ok(boundary) = multer::parse_boundary(&content_type) {
        let mut mp = multer::Multipart::new(body.into_data_stream(), boundary);
        while let Some(field) = mp.next_field().await.map_err(|e| StorageError::bad(format!("invalid multipart body: {e}")))? {
            let is_file = field.file_name().is_some() || matches!(field.name(), None | Some("") | Some("file"));
            if !is_file {
                if field.name() == Some("cacheControl") {
                    let v = field.text().await.unwrap_or_default();
                    if !v.is_empty() {
                        cache_control = if v.chars().all(|c| c.is_ascii_digit()) { format!("max-age={v}") } else { v };
                    }
                }
                continue;
            }
            let mime = field.content_type().map(|m| m.essence_str().to_owned()).unwrap_or_else(|| "application/octet-stream".into());
            return store(&s, &caller, &bucket, &name, &mime, &cache_control, field, upsert, must_exist).await;
        }
        return Err(StorageError::bad("the multipart body has no file part"));
    }
    let mime = Some(content_type.split(';').next().unwrap_or("").trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "application/octet-stream".into());
    store(&s, &caller, &bucket, &name, &mime, &cache_control, body.into_data_stream(), upsert, must_exist).await
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
    list.is_empty()
        || list.iter().any(|a| a == mime || a.strip_suffix("/*").is_some_and(|p| mime.split('/').next() == Some(p)) || a == "*/*")
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn store<S, E>(
    s: &AppState,
    caller: &Caller,
    bucket: &str,
    name: &str,
    mime: &str,
    cache_control: &str,
    mut stream: S,
    upsert: bool,
    must_exist: bool,
) -> StorageResult<Json<Value>>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let (bucket, name) = (bucket.to_owned(), name.to_owned());

    let mut client = s.pool.get().await.map_err(crate::rest::error::RestError::from)?;
    let tx = exec::begin(&mut client, caller, &info()).await?;
    let (limit, allowed) = bucket_rules(&tx, &bucket).await?;
    if !mime_allowed(&allowed, mime) {
        return Err(StorageError(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("mime type {mime} is not allowed in this bucket")));
    }
    let limit = limit.unwrap_or(i64::MAX) as u64;
    let too_large = || StorageError(StatusCode::PAYLOAD_TOO_LARGE, "object exceeds the bucket's file_size_limit".into());

    // Replacing = a new object id (content per id never changes); the old row goes.
    let old: Option<Uuid> = tx
        .query_opt("DELETE FROM storage.objects WHERE bucket_id = $1 AND name = $2 AND $3 RETURNING id", &[&bucket, &name, &upsert])
        .await?
        .map(|r| r.get(0));
    if must_exist && old.is_none() {
        return Err(StorageError::not_found("object not found"));
    }
    let id: Uuid = match tx
        .query_one("INSERT INTO storage.objects (bucket_id, name) VALUES ($1, $2) RETURNING id", &[&bucket, &name])
        .await
    {
        Ok(r) => r.get(0),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            return Err(StorageError(StatusCode::CONFLICT, "the resource already exists".into()))
        }
        // RLS refusals: 401 for the anon key, 403 for users (as REST maps 42501).
        Err(e) => return Err(crate::rest::error::RestError::from_db(e, caller.role == pgstack_shared::Role::Anon).into()),
    };

    let (size, etag, disk_tmp) = match &s.storage_backend {
        Backend::Database => {
            tx.query_one("SELECT set_config('role', 'pgstack_storage_admin', true)", &[]).await?;
            let (mut buf, mut n, mut size) = (Vec::with_capacity(CHUNK), 0i32, 0u64);
            let mut md5 = Md5::new();
            loop {
                let next = stream.next().await;
                if let Some(chunk) = &next {
                    let chunk = chunk.as_ref().map_err(|_| StorageError::bad("upload interrupted"))?;
                    size += chunk.len() as u64;
                    if size > limit {
                        return Err(too_large());
                    }
                    md5.update(chunk);
                    buf.extend_from_slice(chunk);
                }
                // Chunks are exactly CHUNK bytes (the last one shorter), so a byte
                // offset maps to a chunk number (Range requests).
                while buf.len() >= CHUNK || (next.is_none() && !buf.is_empty()) {
                    let rest = if buf.len() > CHUNK { buf.split_off(CHUNK) } else { Vec::new() };
                    let data = std::mem::replace(&mut buf, rest);
                    tx.execute("INSERT INTO storage.object_chunks (object_id, n, data) VALUES ($1, $2, $3)", &[&id, &n, &data]).await?;
                    n += 1;
                }
                if next.is_none() {
                    break;
                }
            }
            tx.query_one("SELECT set_config('role', $1, true)", &[&caller.pg_role.as_str()]).await?;
            (size, hex::encode(md5.finalize()), None)
        }
        Backend::Disk(root) => {
            let mut inc = Incoming::create(root).await?;
            while let Some(chunk) = stream.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(_) => {
                        let _ = tokio::fs::remove_file(&inc.tmp).await;
                        return Err(StorageError::bad("upload interrupted"));
                    }
                };
                inc.write(&chunk).await?;
                if inc.size > limit {
                    let _ = tokio::fs::remove_file(&inc.tmp).await;
                    return Err(too_large());
                }
            }
            let etag = inc.finish().await?;
            (inc.size, etag, Some(inc.tmp))
        }
    };
    let metadata = json!({"size": size, "mimetype": mime, "eTag": format!("\"{etag}\""), "cacheControl": cache_control,
                          "contentLength": size, "lastModified": null});
    tx.execute("UPDATE storage.objects SET metadata = $2, updated_at = now() WHERE id = $1", &[&id, &metadata]).await?;
    if let (Backend::Disk(root), Some(tmp)) = (&s.storage_backend, &disk_tmp) {
        backend::publish(root, &bucket, id, tmp).await?;
        if let Err(e) = tx.commit().await {
            let _ = tokio::fs::remove_file(backend::object_path(root, &bucket, id)).await;
            return Err(e.into());
        }
        if let Some(old) = old {
            let _ = tokio::fs::remove_file(backend::object_path(root, &bucket, old)).await;
        }
    } else {
        tx.commit().await?;
    }
    let key = format!("{bucket}/{name}");
    Ok(Json(json!({"id": id, "key": key, "Id": id, "Key": key})))
}

