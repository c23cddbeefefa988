//! argon2's working memory, reused. Every argon2id run fills 19 MiB; allocating it
//! afresh each time made a hashing flood's memory depend on the allocator (freed
//! blocks stay resident until it purges them, per thread of the blocking pool).
//! Here a run borrows a buffer from a small store and gives it back: one buffer per
//! running hash, and hashes are bounded by the line ([`super::line`]), so a flood
//! holds at most PASSWORD_HASH_CONCURRENCY × 19 MiB whatever arrives. Buffers idle
//! for [`IDLE`] are freed, so a quiet gateway holds none.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Block;

/// Blocks (1 KiB each) of the buffers kept: the OWASP parameters' 19 MiB.
pub(super) const BLOCKS: usize = 19 * 1024;
/// How long a spare buffer is kept unused.
const IDLE: Duration = Duration::from_secs(10);

static SPARE: Mutex<Vec<(Box<[Block]>, Instant)>> = Mutex::new(Vec::new());

fn spare() -> std::sync::MutexGuard<'static, Vec<(Box<[Block]>, Instant)>> {
    SPARE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A buffer of [`BLOCKS`] blocks, returned to the store when dropped.
pub(super) struct Memory(Option<Box<[Block]>>);

impl Memory {
    pub(super) fn take() -> Memory {
        let reused = spare().pop().map(|(b, _)| b);
        Memory(Some(reused.unwrap_or_else(|| vec![Block::default(); BLOCKS].into_boxed_slice())))
    }

    pub(super) fn blocks(&mut self) -> &mut [Block] {
        self.0.as_mut().expect("present until dropped")
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            spare().push((b, Instant::now()));
        }
    }
}

/// Frees the buffers unused for `idle`; returns how many remain.
pub(super) fn trim(idle: Duration) -> usize {
    let mut s = spare();
    s.retain(|(_, since)| since.elapsed() < idle);
    s.len()
}

/// Trims every few seconds for the life of the runtime.
pub(super) fn start_trimming() {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async {
            loop {
                tokio::time::sleep(IDLE / 2).await;
                trim(IDLE);
            }
        });
    }
}
