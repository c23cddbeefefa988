//! Objects: download (also public URLs), delete (one, or many by prefixes), list.
//! The object row is read as the caller's role, so RLS decides; content goes through
//! the backend only after that. Uploads are in `upload`.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, Method, Response, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::backend::{self, Backend};
use super::buckets::one;
use super::{paths, StorageError, StorageResult};
use crate::http::caller::{Caller, CallerError};
use crate::AppState;

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
    let anon = Caller::builtin(pgstack_shared::Role::Anon);
    let public = one(&s, &anon, "SELECT to_jsonb(public) FROM storage.buckets WHERE id = $1", &[&bucket]).await?;
    if public != Some(json!(true)) {
        return Err(StorageError::not_found("object not found"));
    }
    serve(&s, &anon, &bucket, &name, false).await
}

/// Streams an object the caller may read (as headers + body).
pub(super) async fn serve(s: &AppState, caller: &Caller, bucket: &str, name: &str, head: bool) -> StorageResult<Response<Body>> {
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
pub struct RemoveBody {
    prefixes: Vec<String>,
}

/// DELETE /storage/v1/object/{bucket} `{"prefixes": [...]}` (storage-js remove): the
/// named objects the caller may delete; answers what was removed.
pub async fn remove_many(State(s): State<AppState>, caller: Result<Caller, CallerError>, Path(bucket): Path<String>, body: Bytes) -> StorageResult<Json<Value>> {
    let caller = caller?;
    let b: RemoveBody = serde_json::from_slice(&body).map_err(|_| StorageError::bad("body must be {\"prefixes\": [...]}"))?;
    if b.prefixes.len() > 1000 {
        return Err(StorageError::bad("at most 1000 objects per request"));
    }
    let names = b.prefixes.iter().map(|p| paths::check(p)).collect::<Result<Vec<_>, _>>().map_err(StorageError::bad)?;
    let removed = one(
        &s,
        &caller,
        "WITH d AS (DELETE FROM storage.objects WHERE bucket_id = $1 AND name = ANY ($2) RETURNING *)
         SELECT coalesce(jsonb_agg(jsonb_build_object('name', name, 'id', id, 'bucket_id', bucket_id, 'created_at', created_at,
                'updated_at', updated_at, 'last_accessed_at', last_accessed_at, 'metadata', metadata)), '[]') FROM d",
        &[&bucket, &names],
    )
    .await?
    .unwrap_or_else(|| json!([]));
    if let Backend::Disk(root) = &s.storage_backend {
        for o in removed.as_array().into_iter().flatten() {
            if let Some(id) = o["id"].as_str().and_then(|i| i.parse().ok()) {
                let _ = tokio::fs::remove_file(backend::object_path(root, &bucket, id)).await;
            }
        }
    }
    Ok(Json(removed))
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
