//! Outbox retention: delivered events are kept WEBHOOK_RETENTION seconds and at most
//! WEBHOOK_RETENTION_MAX_ROWS (newest first), dead events WEBHOOK_DEAD_RETENTION
//! seconds after their last attempt; pending and in-flight events are never pruned.
//! Runs once at start and every minute, in batches of `BATCH` rows (one short
//! transaction each) through `pgr.webhook_prune`, which lets one gateway at a time
//! prune (advisory lock).

use std::time::Duration;

use crate::AppState;

/// Rows deleted per statement.
const BATCH: i32 = 1000;
/// Batches per run at most (the rest waits for the next run).
const MAX_BATCHES: usize = 1000;
/// Time between runs.
const EVERY: Duration = Duration::from_secs(60);

/// Starts the pruning task.
pub fn spawn(s: AppState) {
    let c = &s.config;
    if c.webhook_retention_secs == 0 && c.webhook_dead_retention_secs == 0 && c.webhook_retention_max_rows == 0 {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match prune(&s).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "webhook outbox pruned"),
                Err(e) => tracing::debug!(error = %e, "webhook outbox not pruned"),
            }
        }
    });
}

/// Deletes what is past retention, batch after batch; returns how many rows went.
pub async fn prune(s: &AppState) -> anyhow::Result<u64> {
    let c = &s.config;
    // Postgres intervals end somewhere; a century is "forever" enough.
    let secs = |v: u64| v.min(100 * 365 * 86_400) as i64;
    let (delivered, dead) = (secs(c.webhook_retention_secs), secs(c.webhook_dead_retention_secs));
    let mut total = 0u64;
    for _ in 0..MAX_BATCHES {
        let client = s.pool.get().await?;
        let n: i32 = client.query_one("SELECT pgr.webhook_prune($1, $2, $3, $4)", &[&delivered, &dead, &c.webhook_retention_max_rows, &BATCH]).await?.get(0);
        drop(client);
        total += n.max(0) as u64;
        if n < BATCH {
            break;
        }
        // Leave room for the requests between batches.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(total)
}
