//! Objects: download (also public URLs), delete (one, or many by prefixes), list.
//! The object row is read as the caller's role, so RLS decides; content goes through
//! the backend only after that. Uploads are in `upload`.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use uuid::Uuid;

use super::backend::{self, Backend};
use super::buckets::one;
use super::{headers, paths, StorageError, StorageResult};
use crate::http::caller::{Caller, CallerError};
use crate::AppState;

/// An object the caller may read: its id, metadata and whether its bucket is public.
struct Visible {
    id: Uuid,
    meta: Value,
    public_bucket: bool,
}

/// The object, if the caller may read it (and, when `only` is given, if it is still
/// that object: a signed URL names one object id, not whatever holds its path now).
async fn visible(s: &AppState, caller: &Caller, bucket: &str, name: &str, only: Option<Uuid>) -> StorageResult<Visible> {
    let v = one(
        s,
        caller,
        "SELECT jsonb_build_object('id', o.id, 'metadata', o.metadata,
                'public', coalesce((SELECT b.public FROM storage.buckets b WHERE b.id = o.bucket_id), false))
           FROM storage.objects o WHERE o.bucket_id = $1 AND o.name = $2 AND ($3::uuid IS NULL OR o.id = $3)",
        &[&bucket, &name, &only],
    )
    .await?
    .ok_or_else(|| StorageError::not_found("object not found"))?;
    let id = v["id"].as_str().and_then(|i| i.parse().ok()).ok_or_else(|| StorageError::not_found("object not found"))?;
    Ok(Visible { id, meta: v["metadata"].clone(), public_bucket: v["public"].as_bool() == Some(true) })
}

/// What a download request asks beyond the object: a byte range and a cached copy.
#[derive(Debug, Default, Clone)]
pub struct Conditions {
    /// `Range: bytes=...`.
    pub range: Option<String>,
    /// `If-None-Match`.
    pub if_none_match: Option<String>,
    /// HEAD: headers only.
    pub head: bool,
}

impl Conditions {
    /// From the request's headers.
    pub fn from_headers(h: &HeaderMap, head: bool) -> Self {
        let get = |n: header::HeaderName| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Conditions { range: get(header::RANGE), if_none_match: get(header::IF_NONE_MATCH), head }
    }
}

/// GET / HEAD /storage/v1/object/{bucket}/{path}.
pub async fn download(
    State(s): State<AppState>,
    caller: Result<Caller, CallerError>,
    Path((bucket, raw)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> StorageResult<Response<Body>> {
    let caller = caller?;
    let name = paths::check(&raw).map_err(StorageError::bad)?;
    serve(&s, &caller, &bucket, &name, None, &Conditions::from_headers(&headers, method == Method::HEAD)).await
}

/// GET /storage/v1/object/public/{bucket}/{path}: public buckets, no key needed.
pub async fn download_public(State(s): State<AppState>, Path((bucket, raw)): Path<(String, String)>, method: Method, headers: HeaderMap) -> StorageResult<Response<Body>> {
    let name = paths::check(&raw).map_err(StorageError::bad)?;
    let anon = Caller::builtin(pgstack_shared::Role::Anon);
    let public = one(&s, &anon, "SELECT to_jsonb(public) FROM storage.buckets WHERE id = $1", &[&bucket]).await?;
    if public != Some(json!(true)) {
        return Err(StorageError::not_found("object not found"));
    }
    serve(&s, &anon, &bucket, &name, None, &Conditions::from_headers(&headers, method == Method::HEAD)).await
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` against `size` → Ok(Some((first, last))),
/// Ok(None) when the header is absent or not a single byte range (then the whole
/// object is sent), Err(()) when it cannot be satisfied (416: nothing more to say).
#[allow(clippy::result_unit_err)]
pub fn byte_range(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return Ok(None) };
    let (a, b) = (a.trim(), b.trim());
    let (first, last) = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(first), Ok(last)) if last >= first => (first, last.min(size.saturating_sub(1))),
        (Ok(first), Err(_)) if b.is_empty() => (first, size.saturating_sub(1)),
        (Err(_), Ok(n)) if a.is_empty() && n > 0 => (size.saturating_sub(n), size.saturating_sub(1)),
        _ => return Ok(None),
    };
    if size == 0 || first >= size {
        return Err(());
    }
    Ok(Some((first, last)))
}

/// Whether `If-None-Match` names `etag` (or is `*`); weak tags compare by value.
fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").trim_matches('"').to_owned();
    if_none_match.split(',').any(|t| t.trim() == "*" || bare(t) == bare(etag))
}

/// Streams an object the caller may read: 200, 206 for a byte range, 304 when the
/// client's copy is current, 416 for a range past the end. `only`: serve it only if
/// the path still holds that object id (signed URLs). Every answer carries the
/// content-safety headers (`headers::protect`).
#[tracing::instrument(level = "debug", skip_all, fields(%bucket))]
pub(super) async fn serve(s: &AppState, caller: &Caller, bucket: &str, name: &str, only: Option<Uuid>, c: &Conditions) -> StorageResult<Response<Body>> {
    let Visible { id, meta, public_bucket } = visible(s, caller, bucket, name, only).await?;
    let mime = headers::content_type(meta["mimetype"].as_str().unwrap_or("application/octet-stream"));
    let size = meta["size"].as_u64().unwrap_or(0);
    let etag = meta["eTag"].as_str().filter(|e| HeaderValue::from_str(e).is_ok()).map(str::to_owned);
    let mut res =
        headers::protect(Response::builder(), &mime, name, public_bucket, meta["cacheControl"].as_str(), s.config.storage_allow_inline_html).header(header::ACCEPT_RANGES, "bytes");
    if let Some(e) = &etag {
        res = res.header(header::ETAG, e);
    }
    if let (Some(inm), Some(e)) = (&c.if_none_match, &etag) {
        if etag_matches(inm, e) {
            return Ok(res.status(StatusCode::NOT_MODIFIED).body(Body::empty()).unwrap_or_default());
        }
    }
    res = res.header(header::CONTENT_TYPE, mime);
    let range = match byte_range(c.range.as_deref(), size) {
        Ok(r) => r,
        Err(()) => return Ok(res.status(StatusCode::RANGE_NOT_SATISFIABLE).header(header::CONTENT_RANGE, format!("bytes */{size}")).body(Body::empty()).unwrap_or_default()),
    };
    let (first, len) = match range {
        Some((a, b)) => {
            res = res.status(StatusCode::PARTIAL_CONTENT).header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{size}"));
            (a, b - a + 1)
        }
        None => {
            res = res.status(StatusCode::OK);
            (0, size)
        }
    };
    res = res.header(header::CONTENT_LENGTH, len);
    if c.head {
        return Ok(res.body(Body::empty()).unwrap_or_default());
    }
    let body = match &s.storage_backend {
        Backend::Disk(root) => {
            let mut f = tokio::fs::File::open(backend::object_path(root, bucket, id)).await.map_err(|_| StorageError::not_found("object content missing"))?;
            f.seek(std::io::SeekFrom::Start(first)).await?;
            Body::from_stream(tokio_util::io::ReaderStream::with_capacity(f.take(len), 64 * 1024))
        }
        Backend::Database => Body::from_stream(db_chunks(s.pool.clone(), id, first, len)),
    };
    Ok(res.body(body).unwrap_or_default())
}

/// The bytes `first .. first+len` of an object stored in chunks, read one chunk per
/// step (nothing holds the whole object).
fn db_chunks(pool: crate::db::fair::FairPool<deadpool_postgres::Pool>, id: Uuid, first: u64, len: u64) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> {
    let chunk = backend::CHUNK as u64;
    let start = ((first / chunk) as i32, (first % chunk) as usize, len);
    futures_util::stream::unfold(Some(start), move |state| {
        let pool = pool.clone();
        async move {
            let (n, skip, left) = state?;
            if left == 0 {
                return None;
            }
            let read = async {
                let client = pool.get().await.map_err(std::io::Error::other)?;
                let row = client.query_one("SELECT storage.read_chunk($1, $2)", &[&id, &n]).await.map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(row.get::<_, Option<Vec<u8>>>(0))
            };
            match read.await {
                Ok(Some(d)) => {
                    let mut b = Bytes::from(d);
                    let b = if skip < b.len() { b.split_off(skip) } else { Bytes::new() };
                    let b = b.slice(..(left.min(b.len() as u64) as usize));
                    let left = left - b.len() as u64;
                    Some((Ok(b), Some((n + 1, 0, left))))
                }
                Ok(None) => None,
                // Abort the response rather than end it short.
                Err(e) => {
                    tracing::warn!(error = %e, "object content could not be read");
                    Some((Err(e), None))
                }
            }
        }
    })
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
pub async fn remove_many(
    State(s): State<AppState>,
    caller: Result<Caller, CallerError>,
    Path(bucket): Path<String>,
    super::JsonBody(body): super::JsonBody,
) -> StorageResult<Json<Value>> {
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
pub async fn list_post(
    State(s): State<AppState>,
    caller: Result<Caller, CallerError>,
    Path(bucket): Path<String>,
    super::JsonBody(body): super::JsonBody,
) -> StorageResult<Json<Value>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges() {
        assert_eq!(byte_range(None, 10), Ok(None));
        assert_eq!(byte_range(Some("bytes=0-3"), 10), Ok(Some((0, 3))));
        assert_eq!(byte_range(Some("bytes=4-"), 10), Ok(Some((4, 9))));
        assert_eq!(byte_range(Some("bytes=-3"), 10), Ok(Some((7, 9))));
        assert_eq!(byte_range(Some("bytes=5-100"), 10), Ok(Some((5, 9))));
        assert_eq!(byte_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(byte_range(Some("bytes=0-1,4-5"), 10), Ok(None));
        assert_eq!(byte_range(Some("items=0-1"), 10), Ok(None));
        assert!(etag_matches("\"abc\"", "\"abc\""));
        assert!(etag_matches("W/\"abc\", \"x\"", "\"abc\""));
        assert!(etag_matches("*", "\"abc\""));
        assert!(!etag_matches("\"abd\"", "\"abc\""));
    }
}
