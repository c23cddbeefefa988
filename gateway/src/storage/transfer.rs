//! POST /object/move and POST /object/copy (storage-js move / copy): within a bucket
//! or to another one, as the caller's role — RLS decides (move = UPDATE of the source
//! row, copy = SELECT of the source + INSERT of the new row).
//!
//! Disk backend: content is per object id, so a move only renames the file when the
//! bucket changes (before the commit, undone if the commit fails); a copy writes a
//! temp file, fsyncs and renames it into place, then commits — the same crash
//! behaviour as uploads.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::backend::{self, Backend, Incoming};
use super::{paths, StorageError, StorageResult};
use crate::db::{caller as as_caller, RequestInfo};
use crate::http::caller::{Caller, CallerError};
use crate::AppState;

#[derive(Deserialize)]
struct TransferBody {
    #[serde(rename = "bucketId")]
    bucket_id: String,
    #[serde(rename = "sourceKey")]
    source_key: String,
    #[serde(rename = "destinationKey")]
    destination_key: String,
    #[serde(rename = "destinationBucket")]
    destination_bucket: Option<String>,
}

struct Transfer {
    from_bucket: String,
    from: String,
    to_bucket: String,
    to: String,
}

fn parse(body: &[u8]) -> StorageResult<Transfer> {
    let b: TransferBody = serde_json::from_slice(body).map_err(|_| StorageError::bad("body must be {\"bucketId\", \"sourceKey\", \"destinationKey\"[, \"destinationBucket\"]}"))?;
    Ok(Transfer {
        from: paths::check(&b.source_key).map_err(StorageError::bad)?,
        to: paths::check(&b.destination_key).map_err(StorageError::bad)?,
        to_bucket: b.destination_bucket.filter(|d| !d.is_empty()).unwrap_or_else(|| b.bucket_id.clone()),
        from_bucket: b.bucket_id,
    })
}

fn db_error(e: tokio_postgres::Error, caller: &Caller) -> StorageError {
    match e.code() {
        Some(c) if *c == tokio_postgres::error::SqlState::UNIQUE_VIOLATION => StorageError(StatusCode::CONFLICT, "the resource already exists".into()),
        Some(c) if *c == tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION => StorageError::not_found("bucket not found"),
        _ => StorageError::from_db(e, caller.role == pgstack_shared::Role::Anon),
    }
}

/// Another bucket's rules apply to what enters it: size and mime type of the object
/// (from its metadata) against the destination's file_size_limit / allowed_mime_types.
async fn destination_accepts(tx: &deadpool_postgres::Transaction<'_>, t: &Transfer) -> StorageResult<()> {
    if t.from_bucket == t.to_bucket {
        return Ok(());
    }
    let (limit, allowed) = super::upload::bucket_rules(tx, &t.to_bucket).await?;
    let meta: Option<Value> = tx.query_opt("SELECT metadata FROM storage.objects WHERE bucket_id = $1 AND name = $2", &[&t.from_bucket, &t.from]).await?.map(|r| r.get(0));
    let Some(meta) = meta else { return Err(StorageError::not_found("object not found")) };
    if limit.is_some_and(|l| meta["size"].as_i64().unwrap_or(0) > l) {
        return Err(StorageError(StatusCode::PAYLOAD_TOO_LARGE, "object exceeds the destination bucket's file_size_limit".into()));
    }
    let mime = meta["mimetype"].as_str().unwrap_or("application/octet-stream");
    if !super::upload::mime_allowed(&allowed, mime) {
        return Err(StorageError(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("mime type {mime} is not allowed in the destination bucket")));
    }
    Ok(())
}

fn info() -> RequestInfo<'static> {
    RequestInfo::new("POST", "/storage")
}

/// POST /storage/v1/object/move → 200 `{"message": "Successfully moved"}`.
pub async fn move_object(State(s): State<AppState>, caller: Result<Caller, CallerError>, super::JsonBody(body): super::JsonBody) -> StorageResult<Json<Value>> {
    let caller = caller?;
    let t = parse(&body)?;
    let mut client = s.pool.get().await.map_err(crate::db::DbError::from)?;
    let tx = as_caller::begin(&mut client, &caller.run_as(), &info()).await?;
    destination_accepts(&tx, &t).await?;
    let id: Uuid = tx
        .query_opt(
            "UPDATE storage.objects SET bucket_id = $3, name = $4, updated_at = now()
              WHERE bucket_id = $1 AND name = $2 RETURNING id",
            &[&t.from_bucket, &t.from, &t.to_bucket, &t.to],
        )
        .await
        .map_err(|e| db_error(e, &caller))?
        .ok_or_else(|| StorageError::not_found("object not found"))?
        .get(0);
    match &s.storage_backend {
        Backend::Disk(root) if t.from_bucket != t.to_bucket => {
            let (old, new) = (backend::object_path(root, &t.from_bucket, id), backend::object_path(root, &t.to_bucket, id));
            tokio::fs::create_dir_all(root.join(&t.to_bucket)).await?;
            tokio::fs::rename(&old, &new).await?;
            if let Err(e) = tx.commit().await {
                let _ = tokio::fs::rename(&new, &old).await;
                return Err(e.into());
            }
        }
        _ => tx.commit().await?,
    }
    Ok(Json(json!({"message": "Successfully moved"})))
}

/// POST /storage/v1/object/copy → 200 `{"Key": "bucket/name", "Id", "id", "key"}`.
pub async fn copy_object(State(s): State<AppState>, caller: Result<Caller, CallerError>, super::JsonBody(body): super::JsonBody) -> StorageResult<Json<Value>> {
    let caller = caller?;
    let t = parse(&body)?;
    let mut client = s.pool.get().await.map_err(crate::db::DbError::from)?;
    let tx = as_caller::begin(&mut client, &caller.run_as(), &info()).await?;
    destination_accepts(&tx, &t).await?;
    // The source as the caller sees it (RLS), then the new row as the caller inserts it.
    let row = tx
        .query_opt(
            "WITH src AS (SELECT id, metadata FROM storage.objects WHERE bucket_id = $1 AND name = $2)
             INSERT INTO storage.objects (bucket_id, name, metadata)
             SELECT $3, $4, metadata FROM src RETURNING id, (SELECT id FROM src)",
            &[&t.from_bucket, &t.from, &t.to_bucket, &t.to],
        )
        .await
        .map_err(|e| db_error(e, &caller))?
        .ok_or_else(|| StorageError::not_found("object not found"))?;
    let (new_id, src_id): (Uuid, Uuid) = (row.get(0), row.get(1));
    match &s.storage_backend {
        Backend::Database => {
            tx.query_one("SELECT set_config('role', 'pgstack_storage_admin', true)", &[]).await?;
            tx.execute("INSERT INTO storage.object_chunks (object_id, n, data) SELECT $1, n, data FROM storage.object_chunks WHERE object_id = $2", &[&new_id, &src_id]).await?;
            tx.commit().await?;
        }
        Backend::Disk(root) => {
            let mut inc = Incoming::create(root).await?;
            let mut src = tokio::fs::File::open(backend::object_path(root, &t.from_bucket, src_id)).await.map_err(|_| StorageError::not_found("object content missing"))?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = tokio::io::AsyncReadExt::read(&mut src, &mut buf).await?;
                if n == 0 {
                    break;
                }
                if let Err(e) = inc.write(&buf[..n]).await {
                    let _ = tokio::fs::remove_file(&inc.tmp).await;
                    return Err(e.into());
                }
            }
            inc.finish().await?;
            backend::publish(root, &t.to_bucket, new_id, &inc.tmp).await?;
            if let Err(e) = tx.commit().await {
                let _ = tokio::fs::remove_file(backend::object_path(root, &t.to_bucket, new_id)).await;
                return Err(e.into());
            }
        }
    }
    let key = format!("{}/{}", t.to_bucket, t.to);
    Ok(Json(json!({"Key": key, "Id": new_id, "key": key, "id": new_id})))
}
