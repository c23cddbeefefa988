//! Buckets: create / delete with the service key; list and get with any key.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{StorageError, StorageResult};
use crate::db::{caller as as_caller, RequestInfo};
use crate::http::caller::{Caller, CallerError, KeyKind};
use crate::AppState;

/// Default bucket size limit (contract example: 50 MiB).
pub const DEFAULT_FILE_SIZE_LIMIT: i64 = 52_428_800;

const BUCKET_JSON: &str = "jsonb_build_object('id', b.id, 'name', b.name, 'owner', coalesce(b.owner::text, ''), 'public', b.public,
    'file_size_limit', b.file_size_limit, 'allowed_mime_types', b.allowed_mime_types,
    'created_at', b.created_at, 'updated_at', b.updated_at)";

fn service(caller: &Caller) -> StorageResult<()> {
    if caller.kind == KeyKind::Service {
        Ok(())
    } else {
        Err(StorageError(StatusCode::FORBIDDEN, "service_role key required".into()))
    }
}

/// Runs one statement as the caller and returns its first column.
pub async fn one(s: &AppState, caller: &Caller, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> StorageResult<Option<Value>> {
    let info = RequestInfo::new("GET", "/storage");
    let mut client = s.pool.get().await.map_err(crate::db::DbError::from)?;
    let tx = as_caller::begin(&mut client, &caller.run_as(), &info).await?;
    let row = tx.query_opt(sql, params).await?;
    tx.commit().await?;
    Ok(row.map(|r| r.get(0)))
}

#[derive(Deserialize)]
struct CreateParams {
    id: Option<String>,
    name: Option<String>,
    #[serde(default)]
    public: bool,
    file_size_limit: Option<Value>,
    allowed_mime_types: Option<Vec<String>>,
}

/// POST /storage/v1/bucket → 201 bucket (with `name`, as storage-js reads it).
pub async fn create(State(s): State<AppState>, caller: Result<Caller, CallerError>, super::JsonBody(body): super::JsonBody) -> StorageResult<(StatusCode, Json<Value>)> {
    let caller = caller?;
    service(&caller)?;
    let p: CreateParams = serde_json::from_slice(&body).map_err(|_| StorageError::bad("invalid request body"))?;
    let id = p.id.or(p.name.clone()).ok_or_else(|| StorageError::bad("id or name is required"))?;
    let name = p.name.unwrap_or_else(|| id.clone());
    let limit: i64 = match p.file_size_limit {
        None | Some(Value::Null) => DEFAULT_FILE_SIZE_LIMIT,
        Some(Value::Number(n)) => n.as_i64().filter(|n| *n > 0).ok_or_else(|| StorageError::bad("file_size_limit must be a positive integer"))?,
        Some(Value::String(s)) => parse_size(&s).ok_or_else(|| StorageError::bad("file_size_limit must be bytes or like 10MB"))?,
        Some(_) => return Err(StorageError::bad("file_size_limit must be a number")),
    };
    let sql = format!(
        "WITH b AS (INSERT INTO storage.buckets (id, name, public, file_size_limit, allowed_mime_types)
                    VALUES ($1, $2, $3, $4, $5) RETURNING *) SELECT {BUCKET_JSON} FROM b"
    );
    let res = one(&s, &caller, &sql, &[&id, &name, &p.public, &limit, &p.allowed_mime_types]).await;
    match res {
        Ok(Some(v)) => Ok((StatusCode::CREATED, Json(v))),
        Ok(None) => Err(StorageError::bad("bucket not created")),
        Err(StorageError(StatusCode::CONFLICT, _)) => Err(StorageError(StatusCode::CONFLICT, "bucket already exists".into())),
        Err(StorageError(st, m)) if st == StatusCode::BAD_REQUEST && m.contains("check constraint") => {
            Err(StorageError::bad("invalid bucket id: letters, digits, . _ - ; not a reserved name (public, sign, list, ...)"))
        }
        Err(e) => Err(e),
    }
}

/// `file_size_limit` as a string: bytes, or a number with B / KB / MB / GB. None for
/// anything else, zero, negative or past i64 (`9999999999GB` overflowed before).
pub fn parse_size(s: &str) -> Option<i64> {
    let s = s.trim().to_ascii_uppercase();
    let (num, mult) = [("GB", 1i64 << 30), ("MB", 1 << 20), ("KB", 1 << 10), ("B", 1)]
        .iter()
        .find_map(|(suffix, m)| s.strip_suffix(suffix).map(|n| (n.trim().to_owned(), *m)))
        .unwrap_or((s.clone(), 1));
    num.parse::<i64>().ok().filter(|n| *n > 0).and_then(|n| n.checked_mul(mult))
}

/// GET /storage/v1/bucket.
pub async fn list(State(s): State<AppState>, caller: Result<Caller, CallerError>) -> StorageResult<Json<Value>> {
    let caller = caller?;
    let sql = format!("SELECT coalesce(jsonb_agg({BUCKET_JSON} ORDER BY b.created_at, b.id), '[]') FROM storage.buckets b");
    Ok(Json(one(&s, &caller, &sql, &[]).await?.unwrap_or_else(|| json!([]))))
}

/// GET /storage/v1/bucket/{id}.
pub async fn get(State(s): State<AppState>, caller: Result<Caller, CallerError>, Path(id): Path<String>) -> StorageResult<Json<Value>> {
    let caller = caller?;
    let sql = format!("SELECT {BUCKET_JSON} FROM storage.buckets b WHERE b.id = $1");
    one(&s, &caller, &sql, &[&id]).await?.map(Json).ok_or_else(|| StorageError::not_found("bucket not found"))
}

#[derive(Deserialize)]
struct UpdateParams {
    public: Option<bool>,
    file_size_limit: Option<Value>,
    allowed_mime_types: Option<Vec<String>>,
}

/// PUT /storage/v1/bucket/{id} (service key) → `{"message": "Successfully updated"}`.
pub async fn update(State(s): State<AppState>, caller: Result<Caller, CallerError>, Path(id): Path<String>, super::JsonBody(body): super::JsonBody) -> StorageResult<Json<Value>> {
    let caller = caller?;
    service(&caller)?;
    let p: UpdateParams = serde_json::from_slice(&body).map_err(|_| StorageError::bad("invalid request body"))?;
    let limit: Option<i64> = match p.file_size_limit {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_i64().filter(|n| *n > 0).ok_or_else(|| StorageError::bad("file_size_limit must be a positive integer"))?),
        Some(Value::String(t)) => Some(parse_size(&t).ok_or_else(|| StorageError::bad("file_size_limit must be bytes or like 10MB"))?),
        Some(_) => return Err(StorageError::bad("file_size_limit must be a number")),
    };
    let sql = "UPDATE storage.buckets SET public = coalesce($2, public), file_size_limit = coalesce($3, file_size_limit),
               allowed_mime_types = CASE WHEN $4::text[] IS NULL THEN allowed_mime_types ELSE $4 END, updated_at = now()
               WHERE id = $1 RETURNING to_jsonb(id)";
    one(&s, &caller, sql, &[&id, &p.public, &limit, &p.allowed_mime_types]).await?.ok_or_else(|| StorageError::not_found("bucket not found"))?;
    Ok(Json(json!({"message": "Successfully updated"})))
}

/// POST /storage/v1/bucket/{id}/empty (service key): deletes every object.
pub async fn empty(State(s): State<AppState>, caller: Result<Caller, CallerError>, Path(id): Path<String>) -> StorageResult<Json<Value>> {
    let caller = caller?;
    service(&caller)?;
    let ids = one(&s, &caller, "WITH d AS (DELETE FROM storage.objects WHERE bucket_id = $1 RETURNING id) SELECT coalesce(jsonb_agg(id), '[]') FROM d", &[&id])
        .await?
        .unwrap_or_default();
    if let super::backend::Backend::Disk(root) = &s.storage_backend {
        for oid in ids.as_array().into_iter().flatten().filter_map(|v| v.as_str()?.parse().ok()) {
            let _ = tokio::fs::remove_file(super::backend::object_path(root, &id, oid)).await;
        }
    }
    Ok(Json(json!({"message": "Successfully emptied"})))
}

/// DELETE /storage/v1/bucket/{id} → 200 `{"message": "bucket deleted"}`; 409 when
/// it still holds objects.
pub async fn delete(State(s): State<AppState>, caller: Result<Caller, CallerError>, Path(id): Path<String>) -> StorageResult<Json<Value>> {
    let caller = caller?;
    service(&caller)?;
    let sql = "WITH d AS (DELETE FROM storage.buckets WHERE id = $1
                          AND NOT EXISTS (SELECT 1 FROM storage.objects WHERE bucket_id = $1) RETURNING 1)
               SELECT to_jsonb(json_build_object('deleted', (SELECT count(*) FROM d), 'exists', EXISTS (SELECT 1 FROM storage.buckets WHERE id = $1)))";
    let v = one(&s, &caller, sql, &[&id]).await?.unwrap_or_default();
    if v["deleted"].as_i64() == Some(1) {
        Ok(Json(json!({"message": "bucket deleted"})))
    } else if v["exists"].as_bool() == Some(true) {
        Err(StorageError(StatusCode::CONFLICT, "bucket is not empty".into()))
    } else {
        Err(StorageError::not_found("bucket not found"))
    }
}
