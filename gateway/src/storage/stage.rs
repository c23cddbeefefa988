//! Request bodies are staged before any database connection is taken, so a slow
//! client holds only its socket (and BODY_IDLE_TIMEOUT / BODY_MIN_RATE bound that):
//!
//! - [`Place::Named`] (disk uploads): a named temp file under STORAGE_ROOT/.tmp,
//!   fsynced, later renamed into place; removed when dropped unpublished (a crash
//!   leaves it to the sweeper);
//! - [`Place::Spool`] (database uploads, TUS PATCH bodies): in memory up to
//!   [`MEMORY_BOUND`], past it an anonymous temp file (unlinked from the start, so
//!   nothing outlives the process) under the given folder or TMPDIR.

use std::io::SeekFrom;
use std::path::Path;

use axum::body::Bytes;
use futures_util::{Stream, StreamExt};
use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::backend::Incoming;
use super::{StorageError, StorageResult};

/// Largest body kept in memory; larger ones spill to a temp file.
pub const MEMORY_BOUND: usize = 64 * 1024;

/// Where a body is staged.
#[derive(Clone, Copy)]
pub enum Place<'a> {
    /// Memory, then an anonymous file under this folder (None: TMPDIR).
    Spool(Option<&'a Path>),
    /// A named temp file under `<root>/.tmp` (fsynced).
    Named(&'a Path),
}

enum Content {
    Memory(Vec<u8>, usize),
    File(tokio::fs::File),
    Named(Incoming, tempfile::TempPath),
}

/// A staged body.
pub struct Staged {
    /// Bytes.
    pub size: u64,
    /// MD5 (hex).
    pub etag: String,
    content: Content,
}

/// What staging gave: the bytes that arrived, and why the body ended early (the
/// client went away, BODY_IDLE_TIMEOUT, BODY_MIN_RATE) — None when it was complete.
pub struct Outcome {
    /// The bytes received.
    pub staged: Staged,
    /// The error that cut the body short.
    pub cut: Option<StorageError>,
}

/// Reads `stream` into `place`, at most `limit` bytes (more → `too_large()`, nothing
/// kept). IO failures are errors; a failed read of the stream is [`Outcome::cut`].
pub async fn stage<S>(stream: S, place: Place<'_>, limit: u64, too_large: impl Fn() -> StorageError) -> StorageResult<Outcome>
where
    S: Stream<Item = StorageResult<Bytes>>,
{
    let mut stream = std::pin::pin!(stream);
    let mut md5 = Md5::new();
    let mut size = 0u64;
    let mut content = match place {
        Place::Spool(_) => Content::Memory(Vec::new(), 0),
        Place::Named(root) => {
            let inc = Incoming::create(root).await?;
            let guard = tempfile::TempPath::try_from_path(inc.tmp.clone())?;
            Content::Named(inc, guard)
        }
    };
    let mut cut = None;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                cut = Some(e);
                break;
            }
        };
        size += chunk.len() as u64;
        if size > limit {
            return Err(too_large());
        }
        md5.update(&chunk);
        match &mut content {
            Content::Memory(buf, _) if buf.len() + chunk.len() <= MEMORY_BOUND => buf.extend_from_slice(&chunk),
            Content::Memory(buf, _) => {
                let dir = match &place {
                    Place::Spool(d) => d.map(Path::to_path_buf),
                    Place::Named(_) => None,
                };
                let f = tokio::task::spawn_blocking(move || match dir {
                    Some(d) => std::fs::create_dir_all(&d).and_then(|_| tempfile::tempfile_in(d)),
                    None => tempfile::tempfile(),
                })
                .await
                .map_err(std::io::Error::other)??;
                let mut f = tokio::fs::File::from_std(f);
                f.write_all(buf).await?;
                f.write_all(&chunk).await?;
                content = Content::File(f);
            }
            Content::File(f) => f.write_all(&chunk).await?,
            Content::Named(inc, _) => inc.write(&chunk).await?,
        }
    }
    match &mut content {
        Content::Memory(..) => {}
        Content::File(f) => {
            f.flush().await?;
            f.seek(SeekFrom::Start(0)).await?;
        }
        Content::Named(inc, _) => {
            inc.finish().await?;
        }
    }
    Ok(Outcome { staged: Staged { size, etag: hex::encode(md5.finalize()), content }, cut })
}

impl Staged {
    /// The next at most `max` bytes (None at the end). Reads from the start, once.
    pub async fn next_piece(&mut self, max: usize) -> std::io::Result<Option<Vec<u8>>> {
        match &mut self.content {
            Content::Memory(buf, pos) => {
                if *pos >= buf.len() {
                    return Ok(None);
                }
                let end = (*pos + max).min(buf.len());
                let piece = buf[*pos..end].to_vec();
                *pos = end;
                Ok(Some(piece))
            }
            Content::File(f) => {
                let mut piece = vec![0u8; max];
                let mut n = 0;
                while n < max {
                    let r = f.read(&mut piece[n..]).await?;
                    if r == 0 {
                        break;
                    }
                    n += r;
                }
                piece.truncate(n);
                Ok((n > 0).then_some(piece))
            }
            Content::Named(..) => Err(std::io::Error::other("a named staged file is published, not read")),
        }
    }

    /// The path of a [`Place::Named`] file (to be renamed into place).
    pub fn named_path(&self) -> Option<&Path> {
        match &self.content {
            Content::Named(inc, _) => Some(&inc.tmp),
            _ => None,
        }
    }

    /// After the named file was renamed: nothing left to remove.
    pub fn published(self) {
        if let Content::Named(_, guard) = self.content {
            let _ = guard.keep();
        }
    }

    /// Writes the staged bytes into the file at `path` from `offset` on (whatever was
    /// past `offset` goes first) and fsyncs it. Anonymous temp files are copied in the
    /// kernel (copy_file_range).
    pub async fn append_to(self, path: &Path, offset: u64) -> std::io::Result<()> {
        let mut dst = tokio::fs::OpenOptions::new().write(true).open(path).await?;
        dst.set_len(offset).await?;
        dst.seek(SeekFrom::Start(offset)).await?;
        match self.content {
            Content::Memory(buf, _) => dst.write_all(&buf).await?,
            Content::File(f) => {
                let (mut src, mut out) = (f.into_std().await, dst.into_std().await);
                dst = tokio::task::spawn_blocking(move || {
                    std::io::Seek::seek(&mut src, SeekFrom::Start(0))?;
                    std::io::copy(&mut src, &mut out)?;
                    Ok::<_, std::io::Error>(tokio::fs::File::from_std(out))
                })
                .await
                .map_err(std::io::Error::other)??;
            }
            Content::Named(..) => return Err(std::io::Error::other("a named staged file is published, not appended")),
        }
        dst.flush().await?;
        dst.sync_all().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(pieces: Vec<Vec<u8>>) -> impl Stream<Item = StorageResult<Bytes>> {
        futures_util::stream::iter(pieces.into_iter().map(|p| Ok(Bytes::from(p))))
    }

    #[tokio::test]
    async fn small_bodies_stay_in_memory_large_ones_spill_and_read_back() {
        let too_large = || StorageError(axum::http::StatusCode::PAYLOAD_TOO_LARGE, "too large".into());
        let mut small = stage(body(vec![b"hello ".to_vec(), b"world".to_vec()]), Place::Spool(None), 100, too_large).await.unwrap().staged;
        assert!(matches!(small.content, Content::Memory(..)));
        assert_eq!((small.size, small.etag.as_str()), (11, "5eb63bbbe01eeed093cb22bb8f5acdc3"));
        assert_eq!(small.next_piece(4).await.unwrap().unwrap(), b"hell");
        assert_eq!(small.next_piece(100).await.unwrap().unwrap(), b"o world");
        assert!(small.next_piece(4).await.unwrap().is_none());

        let pieces: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 10_000]).collect();
        let mut big = stage(body(pieces.clone()), Place::Spool(None), 1 << 20, too_large).await.unwrap().staged;
        assert!(matches!(big.content, Content::File(_)));
        let mut back = Vec::new();
        while let Some(p) = big.next_piece(64 * 1024).await.unwrap() {
            assert!(p.len() <= 64 * 1024);
            back.extend(p);
        }
        assert_eq!(back, pieces.concat());
        assert!(stage(body(pieces), Place::Spool(None), 399_999, too_large).await.is_err());
    }

    #[tokio::test]
    async fn named_files_vanish_unless_published_and_appends_truncate_first() {
        let dir = tempfile::tempdir().unwrap();
        let too_large = || StorageError(axum::http::StatusCode::PAYLOAD_TOO_LARGE, "too large".into());
        let named = stage(body(vec![b"abc".to_vec()]), Place::Named(dir.path()), 10, too_large).await.unwrap().staged;
        let path = named.named_path().unwrap().to_owned();
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        drop(named);
        assert!(!path.exists(), "an unpublished temp file is removed");

        let target = dir.path().join("staging");
        std::fs::write(&target, b"0123456789-garbage").unwrap();
        let big: Vec<Vec<u8>> = vec![vec![b'z'; 300_000]];
        let s = stage(body(big), Place::Spool(Some(dir.path())), 1 << 20, too_large).await.unwrap().staged;
        s.append_to(&target, 10).await.unwrap();
        let got = std::fs::read(&target).unwrap();
        assert_eq!((&got[..10], got.len()), (b"0123456789".as_slice(), 300_010));
        let s = stage(body(vec![b"!".to_vec()]), Place::Spool(None), 10, too_large).await.unwrap().staged;
        s.append_to(&target, 3).await.unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"012!");
    }
}
