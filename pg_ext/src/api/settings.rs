//! Settings where Postgres decides (GUCs, `pgstack.*`): the webhook outbox's attempt
//! budget and payload limit. Every gateway reads them from the database, so they hold
//! however many gateways deliver. Superuser-only (SUSET) once the library is loaded in
//! a session (the outbox trigger reads the payload limit as a plain setting, without
//! loading it, so a role's own SET there changes only its own events). Set them like any
//! setting:
//!
//! ```sql
//! ALTER DATABASE postgres SET pgstack.webhook_max_attempts = 5;  -- new sessions
//! ```

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

/// Delivery attempts before an outbox event is dead (contract: 3).
pub static WEBHOOK_MAX_ATTEMPTS: GucSetting<i32> = GucSetting::<i32>::new(3);
/// Largest webhook event body; a larger row's event carries its primary key only.
pub static WEBHOOK_MAX_PAYLOAD_BYTES: GucSetting<i32> = GucSetting::<i32>::new(1024 * 1024);

/// Registers the settings (from `_PG_init`, when the library loads in a session).
pub fn register() {
    GucRegistry::define_int_guc(
        c"pgstack.webhook_max_attempts",
        c"Delivery attempts before a webhook event is kept as dead.",
        c"Attempt n that fails is retried after 4^(n-1) seconds (1 s, 4 s, 16 s, ... at most an hour); after this many attempts the event is dead (POST /rest/v1/webhooks/retry sends it again).",
        &WEBHOOK_MAX_ATTEMPTS,
        1,
        100,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pgstack.webhook_max_payload_bytes",
        c"Largest webhook event body, in bytes.",
        c"An event whose record / old_record would make it larger carries only the rows' primary keys and \"truncated\": true; the receiver reads the row itself.",
        &WEBHOOK_MAX_PAYLOAD_BYTES,
        1024,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
}
