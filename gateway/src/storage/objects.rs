//! Objects: upload (POST, PUT = update, `x-upsert`), download (also public URLs),
//! delete, list. The object row is read and written as the caller's role, so RLS
//! decides; content goes through the backend only after that.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method, Response, StatusCode};
use axum::Json;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::backend::{self, Backend, Incoming, CHUNK};
use super::buckets::one;
use super::{paths, StorageError, StorageResult};
use crate::http::caller::{Caller, CallerError};
use crate::rest::exec::{self, RequestInfo};
use crate::AppState;

fn info() -> RequestInfo<'static> {
    RequestInfo { method: "POST", path: "/storage", headers: "{}".into() }
}

/// Bucket rules: (file_size_limit, allowed_mime_types).
async fn bucket_rules(tx: &deadpool_postgres::Transaction<'_>, bucket: &str) -> StorageResult<(Option<i64>, Option<Vec<String>>)> {
    let row = tx
        .query_opt("SELECT file_size_limit, allowed_mime_types FROM storage.buckets WHERE id = $1", &[&bucket])
        .await?
        .ok_or_else(|| StorageError::not_found("bucket not found"))?;
    Ok((row.get(0), row.get(1)))
}

fn mime_allowed(allowed: &Option<Vec<String>>, mime: &str) -> bool {
    let Some(list) = allowed else { return true };
    list.is_empty()
        || list.iter().any(|a| a == mime || a.strip_suffix("/*").is_some_and(|p| mime.split('/').next() == Some(p)) || a == "*/*")
}

/// POST /storage/v1/object/{bucket}/{path}: create (or replace with `x-upsert: true`).
pub async fn upload(s: State<AppState>, caller: Result<Caller, CallerError>, p: Path<(String, String)>, headers: HeaderMap, body: Body) -> StorageResult<Json<Value>> {
    let upsert = headers.get("x-upsert").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    store(s, caller?, p, headers, body, upsert, false).await
}

/// PUT /storage/v1/object/{bucket}/{path}: replace an existing object.
pub async fn update(s: State<AppState>, caller: Result<Caller, CallerError>, p: Path<(String, String)>, headers: HeaderMap, body: Body) -> StorageResult<Json<Value>> {
    store(s, caller?, p, headers, body, true, true).await
}

async fn store(
    State(s): State<AppState>,
    caller: Caller,
    Path((bucket, raw_path)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
    upsert: bool,
    must_exist: bool,
) -> StorageResult<Json<Value>> {
    let name = paths::check(&raw_path).map_err(StorageError::bad)?;
    let mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_owned())
        .filter(|v| !v.is_empty() && !v.starts_with("multipart/"))
        .unwrap_or_else(|| "application/octet-stream".into());
    let cache_control = headers.get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).unwrap_or("max-age=3600").to_owned();

    let mut client = s.pool.get().await.map_err(crate::rest::error::RestError::from)?;
    let tx = exec::begin(&mut client, &caller, &info()).await?;
    let (limit, allowed) = bucket_rules(&tx, &bucket).await?;
    if !mime_allowed(&allowed, &mime) {
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

    let mut stream = body.into_data_stream();
    let (size, etag, disk_tmp) = match &s.storage_backend {
        Backend::Database => {
            tx.query_one("SELECT set_config('role', 'pgstack_storage_admin', true)", &[]).await?;
            let (mut buf, mut n, mut size, mut parts) = (Vec::with_capacity(CHUNK), 0i32, 0u64, Vec::new());
            let mut md5 = Vec::new();
            loop {
                let next = stream.next().await;
                if let Some(chunk) = &next {
                    let chunk = chunk.as_ref().map_err(|_| StorageError::bad("upload interrupted"))?;
                    size += chunk.len() as u64;
                    if size > limit {
                        return Err(too_large());
                    }
                    buf.extend_from_slice(chunk);
                }
                if buf.len() >= CHUNK || (next.is_none() && !buf.is_empty()) {
                    let data = std::mem::take(&mut buf);
                    tx.execute("INSERT INTO storage.object_chunks (object_id, n, data) VALUES ($1, $2, $3)", &[&id, &n, &data]).await?;
                    md5.push(Bytes::from(data));
                    n += 1;
                    if md5.len() > 8 {
                        // Keep memory bounded: fold finished chunks into one digest input.
                        let folded = backend::md5_hex(&md5);
                        md5 = vec![Bytes::from(folded)];
                    }
                    parts.push(n);
                }
                if next.is_none() {
                    break;
                }
            }
            tx.query_one("SELECT set_config('role', $1, true)", &[&caller.role.as_str()]).await?;
            (size, backend::md5_hex(&md5), None)
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

/// The object's id and metadata, if the caller may read it.
async fn visible(s: &AppState, caller: &Caller, bucket: &str, name: &str) -> StorageResult<(Uuid, Value)> {
    let v = one(
        s,
        caller,
        "SELECT jsonb_build_object('id', id, 'metadata', metadata) FROM storage.objects WHERE bucket_id = $1 AND name = $2",
        &[&bucket, &name],
    )
    .await?
    .ok_or_else(|| StorageError::not_found("object not found"))?;
    let id = v["id"].as_str().and_then(|i| i.parse().ok()).ok_or_else(|| StorageError::not_found("object not found"))?;
    Ok((id, v["metadata"].clone()))
}

/// GET /storage/v1/object/{bucket}/{path}.
pub async fn download(State(s): State<AppState>, caller: Result<Caller, CallerError>, Path((bucket, raw)): Path<(String, String)>, method: Method) -> StorageResult<Response<Body>> {
    let caller = caller?;
    let name = paths::check(&raw).map_err(StorageError::bad)?;
    serve(&s, &caller, &bucket, &name, method == Method::HEAD).await
}

/// GET /storage/v1/object/public/{bucket}/{path}: public buckets, no key needed.
pub async fn download_public(State(s): State<AppState>, Path((bucket, raw)): Path<(String, String)>) -> StorageResult<Response<Body>> {
    let name = paths::check(&raw).map_err(StorageError::bad)?;
    let anon = Caller { role: pgstack_shared::Role::Anon, claims: json!({"role": "anon"}), kind: crate::http::caller::KeyKind::Anon, token: String::new() };
    let public = one(&s, &anon, "SELECT to_jsonb(public) FROM storage.buckets WHERE id = $1", &[&bucket]).await?;
    if public != Some(json!(true)) {
        return Err(StorageError::not_found("object not found"));
    }
    serve(&s, &anon, &bucket, &name, false).await
}

async fn serve(s: &AppState, caller: &Caller, bucket: &str, name: &str, head: bool) -> StorageResult<Response<Body>> {
    let (id, meta) = visible(s, caller, bucket, name).await?;
    let mime = meta["mimetype"].as_str().unwrap_or("application/octet-stream").to_owned();
    let mut res = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, mime)
        .header(header::CACHE_CONTROL, meta["cacheControl"].as_str().unwrap_or("max-age=3600"));
    if let Some(e) = meta["eTag"].as_str() {
        res = res.header(header::ETAG, e);
    }
    if let Some(size) = meta["size"].as_u64() {
        res = res.header(header::CONTENT_LENGTH, size);
    }
    if head {
        return Ok(res.body(Body::empty()).unwrap_or_default());
    }
    let body = match &s.storage_backend {
        Backend::Disk(root) => {
            let f = tokio::fs::File::open(backend::object_path(root, bucket, id)).await.map_err(|_| StorageError::not_found("object content missing"))?;
            Body::from_stream(tokio_util::io::ReaderStream::with_capacity(f, 64 * 1024))
        }
        Backend::Database => {
            let pool = s.pool.clone();
            let stream = futures_util::stream::unfold(0i32, move |n| {
                let pool = pool.clone();
                async move {
                    if n < 0 {
                        return None;
                    }
                    let read = async {
                        let client = pool.get().await.map_err(std::io::Error::other)?;
                        let row = client.query_one("SELECT storage.read_chunk($1, $2)", &[&id, &n]).await.map_err(std::io::Error::other)?;
                        Ok::<_, std::io::Error>(row.get::<_, Option<Vec<u8>>>(0))
                    };
                    match read.await {
                        Ok(Some(d)) => Some((Ok(Bytes::from(d)), n + 1)),
                        Ok(None) => None,
                        // Abort the response rather than end it short.
                        Err(e) => {
                            tracing::warn!(error = %e, "object content could not be read");
                            Some((Err(e), -1))
                        }
                    }
                }
            });
            Body::from_stream(stream)
        }
    };
    Ok(res.body(body).unwrap_or_default())
}

/// DELETE /storage/v1/object/{bucket}/{path} → 200 `{"message": "object deleted"}`.
pub async fn delete(State(s): State<AppState>, caller: Result<Caller, CallerError>, Path((bucket, raw)): Path<(String, String)>) -> StorageResult<Json<Value>> {
    let caller = caller?;
    let name = paths::check(&raw).map_err(StorageError::bad)?;
    let id = one(&s, &caller, "DELETE FROM storage.objects WHERE bucket_id = $1 AND name = $2 RETURNING to_jsonb(id)", &[&bucket, &name])
        .await?
        .ok_or_else(|| StorageError::not_found("object not found"))?;
    if let (Backend::Disk(root), Some(id)) = (&s.storage_backend, id.as_str().and_then(|i| i.parse().ok())) {
        let _ = tokio::fs::remove_file(backend::object_path(root, &bucket, id)).await;
    }
    Ok(Json(json!({"message": "object deleted"})))
}

#[derive(Deserialize)]
pub struct PrefixQuery {
    prefix: Option<String>,
}

/// GET /storage/v1/object/list/{bucket}?prefix= (contract): every object under the
/// prefix with full names.
pub async fn list_get(State(s): State<AppState>, caller: Result<Caller, CallerError>, Path(bucket): Path<String>, Query(q): Query<PrefixQuery>) -> StorageResult<Json<Value>> {
    let caller = caller?;
    let prefix = q.prefix.unwrap_or_default();
    let v = one(
        &s,
        &caller,
        "SELECT coalesce(jsonb_agg(jsonb_build_object('id', id, 'name', name, 'size', (metadata->>'size')::bigint,
                 'mime_type', metadata->>'mimetype', 'created_at', created_at) ORDER BY name), '[]')
           FROM storage.objects WHERE bucket_id = $1 AND starts_with(name, $2)",
        &[&bucket, &prefix],
    )
    .await?;
    Ok(Json(v.unwrap_or_else(|| json!([]))))
}

#[derive(Deserialize)]
struct ListBody {
    prefix: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
    search: Option<String>,
    #[serde(rename = "sortBy")]
    sort_by: Option<SortBy>,
}

#[derive(Deserialize)]
struct SortBy {
    column: Option<String>,
    order: Option<String>,
}

/// POST /storage/v1/object/list/{bucket} (storage-js): one folder level — names
/// relative to the prefix, sub-folders as entries with `id: null`.
pub async fn list_post(State(s): State<AppState>, caller: Result<Caller, CallerError>, Path(bucket): Path<String>, body: Bytes) -> StorageResult<Json<Value>> {
    let caller = caller?;
    let p: ListBody = serde_json::from_slice(if body.is_empty() { b"{}" } else { &body }).map_err(|_| StorageError::bad("invalid request body"))?;
    let mut prefix = p.prefix.unwrap_or_default();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    let column = match p.sort_by.as_ref().and_then(|s| s.column.as_deref()).unwrap_or("name") {
        c @ ("name" | "created_at" | "updated_at" | "last_accessed_at") => c,
        _ => return Err(StorageError::bad("sortBy.column must be name, created_at, updated_at or last_accessed_at")),
    };
    let desc = p.sort_by.as_ref().and_then(|s| s.order.as_deref()).is_some_and(|o| o.eq_ignore_ascii_case("desc"));
    let sql = format!(
        "WITH rel AS (
            SELECT substr(name, length($2) + 1) AS rest, * FROM storage.objects
             WHERE bucket_id = $1 AND starts_with(name, $2) AND ($3 = '' OR substr(name, length($2) + 1) ILIKE '%' || $3 || '%')),
         entries AS (
            SELECT DISTINCT ON (split_part(rest, '/', 1))
                   split_part(rest, '/', 1) AS name, position('/' IN rest) > 0 AS folder, id, created_at, updated_at, last_accessed_at, metadata
              FROM rel ORDER BY split_part(rest, '/', 1), position('/' IN rest) > 0)
         SELECT coalesce(jsonb_agg(jsonb_build_object(
                'name', name, 'id', CASE WHEN folder THEN NULL ELSE id END,
                'created_at', CASE WHEN folder THEN NULL ELSE created_at END,
                'updated_at', CASE WHEN folder THEN NULL ELSE updated_at END,
                'last_accessed_at', CASE WHEN folder THEN NULL ELSE last_accessed_at END,
                'metadata', CASE WHEN folder THEN NULL ELSE metadata END) ORDER BY {column} {dir}), '[]')
           FROM (SELECT * FROM entries ORDER BY {column} {dir} LIMIT $4 OFFSET $5) e",
        dir = if desc { "DESC" } else { "ASC" }
    );
    let search = p.search.unwrap_or_default();
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    let offset = p.offset.unwrap_or(0).max(0);
    let v = one(&s, &caller, &sql, &[&bucket, &prefix, &search, &limit, &offset]).await?;
    Ok(Json(v.unwrap_or_else(|| json!([]))))
}
