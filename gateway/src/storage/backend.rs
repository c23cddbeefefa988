//! Where object content lives: STORAGE_BACKEND=database (chunks in
//! storage.object_chunks, written in the object's own transaction) or disk
//! (STORAGE_ROOT/<bucket>/<object id>; uploads go to a temp file, fsync, then rename;
//! the database row commits after the rename, so a crash leaves at most an orphan file,
//! never a row without content).

use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

/// Size of one stored chunk.
pub const CHUNK: usize = 1 << 20;

/// The configured backend.
#[derive(Clone, Debug)]
pub enum Backend {
    /// Content in Postgres.
    Database,
    /// Content under this folder.
    Disk(PathBuf),
}

/// A file being received (disk backend).
pub struct Incoming {
    /// Temp path.
    pub tmp: PathBuf,
    file: tokio::fs::File,
    /// Bytes so far.
    pub size: u64,
    md5: Md5,
}

impl Incoming {
    /// A temp file under `root/.tmp`.
    pub async fn create(root: &Path) -> std::io::Result<Incoming> {
        let dir = root.join(".tmp");
        tokio::fs::create_dir_all(&dir).await?;
        let tmp = dir.join(Uuid::new_v4().to_string());
        let file = tokio::fs::OpenOptions::new().write(true).create_new(true).open(&tmp).await?;
        Ok(Incoming { tmp, file, size: 0, md5: Md5::new() })
    }
    /// Appends bytes.
    pub async fn write(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.md5.update(b);
        self.size += b.len() as u64;
        self.file.write_all(b).await
    }
    /// Flushes to disk; returns the etag.
    pub async fn finish(&mut self) -> std::io::Result<String> {
        self.file.flush().await?;
        self.file.sync_all().await?;
        Ok(hex::encode(self.md5.clone().finalize()))
    }
}

/// Final path of an object's content.
pub fn object_path(root: &Path, bucket: &str, id: Uuid) -> PathBuf {
    root.join(bucket).join(id.to_string())
}

/// Moves a finished upload into place (and makes the rename durable).
pub async fn publish(root: &Path, bucket: &str, id: Uuid, tmp: &Path) -> std::io::Result<()> {
    let dir = root.join(bucket);
    tokio::fs::create_dir_all(&dir).await?;
    tokio::fs::rename(tmp, object_path(root, bucket, id)).await?;
    if let Ok(d) = tokio::fs::File::open(&dir).await {
        let _ = d.sync_all().await;
    }
    Ok(())
}

/// Removes temp files under `root/.tmp` older than `max_age`: what uploads that were
/// interrupted by a crash left behind (a live upload keeps writing, so its file stays
/// young). Returns how many were removed.
pub async fn sweep_temp(root: &Path, max_age: std::time::Duration) -> usize {
    let Ok(mut dir) = tokio::fs::read_dir(root.join(".tmp")).await else { return 0 };
    let mut removed = 0;
    while let Ok(Some(e)) = dir.next_entry().await {
        let Ok(meta) = e.metadata().await else { continue };
        let old = meta.modified().ok().and_then(|m| m.elapsed().ok()).is_some_and(|age| age > max_age);
        if meta.is_file() && old && tokio::fs::remove_file(e.path()).await.is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Sweeps at start and then every hour (disk backend).
pub fn spawn_sweeper(root: PathBuf, max_age: std::time::Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            tick.tick().await;
            let n = sweep_temp(&root, max_age).await;
            if n > 0 {
                tracing::info!(removed = n, "storage: removed temp files of interrupted uploads");
            }
        }
    });
}
