//! One-time tokens (confirmation, recovery, magic link, email change): created as a
//! link token plus, for magic links only (the one e-mail that shows a code), a 6-digit
//! code; stored only as SHA-256 digests; single use; expiring; a new one of a kind
//! replaces the older ones.
//!
//! A code is 6 digits, so tries are counted per account and kind in the database
//! (`attempts`, so the count holds across gateways): each try on an account locks
//! and counts against its live tokens of that kind first, and at OTP_MAX_ATTEMPTS
//! wrong tries they are all spent. Link tokens are 256 random bits.

use axum::http::StatusCode;
use deadpool_postgres::Transaction;
use rand::Rng;
use uuid::Uuid;

use super::error::{AuthError, AuthResult};
use super::tokens;
use crate::error::code::auth as code;

/// The kinds, as stored in `auth.one_time_tokens.token_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    /// Sign-up confirmation.
    Confirmation,
    /// Password recovery.
    Recovery,
    /// Magic link / e-mail OTP.
    MagicLink,
    /// Change of e-mail address, the link sent to the new address (relates_to = it).
    EmailChange,
    /// Change of e-mail address, the link sent to the current address (relates_to =
    /// the new one). Both must be followed (GoTrue's secure e-mail change).
    EmailChangeCurrent,
}

impl TokenType {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenType::Confirmation => "confirmation",
            TokenType::Recovery => "recovery",
            TokenType::MagicLink => "magiclink",
            TokenType::EmailChange => "email_change",
            TokenType::EmailChangeCurrent => "email_change_current",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "confirmation" => TokenType::Confirmation,
            "recovery" => TokenType::Recovery,
            "magiclink" => TokenType::MagicLink,
            "email_change" => TokenType::EmailChange,
            "email_change_current" => TokenType::EmailChangeCurrent,
            _ => return None,
        })
    }
    /// The `type` of /verify (GoTrue's names) → kinds it may consume.
    pub fn from_verify_type(t: &str) -> Option<&'static [TokenType]> {
        Some(match t {
            "signup" | "invite" => &[TokenType::Confirmation],
            "recovery" => &[TokenType::Recovery],
            "magiclink" => &[TokenType::MagicLink],
            "email" => &[TokenType::MagicLink, TokenType::Confirmation],
            "email_change" => &[TokenType::EmailChange, TokenType::EmailChangeCurrent],
            _ => return None,
        })
    }
}

/// A freshly issued token: the link token and, for magic links, the short code.
pub struct Issued {
    /// Goes into the link.
    pub token: String,
    /// 6 digits, for `verifyOtp({email, token})`: magic links only.
    pub code: Option<String>,
}

fn code_digest(user: Uuid, code: &str) -> String {
    tokens::digest(&format!("{user}:{code}"))
}

/// Seconds since the last token of this kind was issued to `user`, if any.
pub async fn seconds_since_last(tx: &Transaction<'_>, user: Uuid, t: TokenType) -> AuthResult<Option<f64>> {
    let row = tx
        .query_one(
            "SELECT extract(epoch FROM now() - max(created_at))::float8 FROM auth.one_time_tokens
              WHERE user_id = $1 AND token_type = $2",
            &[&user, &t.as_str()],
        )
        .await?;
    Ok(row.get(0))
}

/// Issues a token of kind `t` for `user`, replacing older ones of that kind; `flow`
/// ties it to a PKCE flow (the link then ends with `?code=`). Only magic links get a
/// code: no other e-mail shows one, so a code for them would only be something to guess.
pub async fn issue(tx: &Transaction<'_>, user: Uuid, t: TokenType, relates_to: &str, ttl_secs: i64, flow: Option<Uuid>) -> AuthResult<Issued> {
    let token = tokens::opaque();
    let code = (t == TokenType::MagicLink).then(|| format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000u32)));
    tx.execute("DELETE FROM auth.one_time_tokens WHERE user_id = $1 AND token_type = $2", &[&user, &t.as_str()]).await?;
    let mut hashes = vec![tokens::digest(&token)];
    if let Some(c) = &code {
        hashes.push(code_digest(user, c));
    }
    tx.execute(
        "INSERT INTO auth.one_time_tokens (user_id, token_type, token_hash, relates_to, expires_at, flow_id)
         SELECT $1, $2, h, $4, now() + make_interval(secs => $5), $6 FROM unnest($3::text[]) AS h",
        &[&user, &t.as_str(), &hashes, &relates_to, &(ttl_secs as f64), &flow],
    )
    .await?;
    Ok(Issued { token, code })
}

/// What a consumed token was for.
pub struct Consumed {
    /// The account.
    pub user: Uuid,
    /// Its kind.
    pub kind: TokenType,
    /// Extra data (the new e-mail of an email change).
    pub relates_to: String,
    /// The PKCE flow it belongs to, if any.
    pub flow: Option<Uuid>,
}

/// Whether a link token of one of `kinds` is live (unused, unexpired), without using it.
pub async fn is_live(tx: &Transaction<'_>, token: &str, kinds: &[TokenType]) -> AuthResult<bool> {
    let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    let row = tx
        .query_opt(
            "SELECT 1 FROM auth.one_time_tokens
              WHERE token_hash = $1 AND token_type = ANY ($2) AND used_at IS NULL AND expires_at > now()",
            &[&tokens::digest(token), &names],
        )
        .await?;
    Ok(row.is_some())
}

fn consumed(r: &tokio_postgres::Row) -> Consumed {
    Consumed {
        user: r.get("user_id"),
        kind: TokenType::parse(r.get::<_, &str>("token_type")).unwrap_or(TokenType::Confirmation),
        relates_to: r.get("relates_to"),
        flow: r.get("flow_id"),
    }
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Consumes a link token (or, with `code_user`, a 6-digit code of that account) of
/// one of `kinds`. All tokens of that kind for the account are spent with it. A code
/// try counts against the account's live tokens of `kinds` (row locks serialize
/// concurrent tries); at `max_attempts` wrong tries they are spent. The caller must
/// commit even when this returns `None`, so the count sticks.
pub async fn consume(tx: &Transaction<'_>, token: &str, code_user: Option<Uuid>, kinds: &[TokenType], max_attempts: i32) -> AuthResult<Option<Consumed>> {
    let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    let c = match code_user {
        None => tx
            .query_opt(
                "UPDATE auth.one_time_tokens SET used_at = now()
                  WHERE token_hash = $1 AND token_type = ANY ($2) AND used_at IS NULL AND expires_at > now()
                  RETURNING user_id, token_type, relates_to, flow_id",
                &[&tokens::digest(token), &names],
            )
            .await?
            .map(|r| consumed(&r)),
        Some(user) => {
            let want = code_digest(user, token.trim());
            let live = tx
                .query(
                    "UPDATE auth.one_time_tokens SET attempts = attempts + 1
                      WHERE user_id = $1 AND token_type = ANY ($2) AND used_at IS NULL AND expires_at > now()
                      RETURNING id, token_hash, attempts, user_id, token_type, relates_to, flow_id",
                    &[&user, &names],
                )
                .await?;
            let hit = live.iter().find(|r| r.get::<_, i32>("attempts") <= max_attempts && same(r.get("token_hash"), &want));
            match hit {
                Some(r) => {
                    tx.execute("UPDATE auth.one_time_tokens SET used_at = now() WHERE id = $1", &[&r.get::<_, Uuid>("id")]).await?;
                    Some(consumed(r))
                }
                None => {
                    if live.iter().any(|r| r.get::<_, i32>("attempts") >= max_attempts) {
                        tx.execute(
                            "UPDATE auth.one_time_tokens SET used_at = now()
                              WHERE user_id = $1 AND token_type = ANY ($2) AND used_at IS NULL",
                            &[&user, &names],
                        )
                        .await?;
                        tracing::warn!(%user, "too many wrong codes: the account's outstanding codes were spent");
                    }
                    None
                }
            }
        }
    };
    let Some(c) = c else { return Ok(None) };
    tx.execute("UPDATE auth.one_time_tokens SET used_at = now() WHERE user_id = $1 AND token_type = $2 AND used_at IS NULL", &[&c.user, &c.kind.as_str()]).await?;
    Ok(Some(c))
}

/// What applying a consumed token did.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// Done (the address is confirmed, switched, ...).
    Done,
    /// One half of an e-mail change: the link sent to the other address is still due.
    AwaitingOther,
}

/// GoTrue's answer to the first of the two e-mail change links.
pub const AWAITING_OTHER: &str = "Confirmation link accepted. Please proceed to confirm link sent to the other email";

/// Applies the effect of a consumed token on the account: confirms the address
/// (confirmation, magic link, recovery: the inbox was reached), or, for an e-mail
/// change, records one confirmation and switches once both addresses confirmed.
pub async fn apply(tx: &Transaction<'_>, c: &Consumed) -> AuthResult<Applied> {
    match c.kind {
        TokenType::Confirmation | TokenType::MagicLink | TokenType::Recovery => {
            tx.execute(
                "UPDATE auth.users SET email_confirmed_at = coalesce(email_confirmed_at, now()), email_confirmed_by = 'email',
                        updated_at = now()
                  WHERE id = $1",
                &[&c.user],
            )
            .await?;
            Ok(Applied::Done)
        }
        TokenType::EmailChange | TokenType::EmailChangeCurrent => email_change(tx, c).await,
    }
}

async fn email_change(tx: &Transaction<'_>, c: &Consumed) -> AuthResult<Applied> {
    let row = tx
        .query_opt(
            "SELECT email_change, email_change_confirm_status, email IS NOT NULL FROM auth.users
              WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
            &[&c.user],
        )
        .await?
        .ok_or_else(AuthError::user_not_found)?;
    let (pending, status, has_current): (Option<String>, i16, bool) = (row.get(0), row.get(1), row.get(2));
    // A token of an older request (a newer one replaced the pending address).
    if pending.as_deref() != Some(c.relates_to.as_str()) {
        return Err(AuthError::otp_invalid());
    }
    if has_current && status == 0 {
        tx.execute("UPDATE auth.users SET email_change_confirm_status = 1, updated_at = now() WHERE id = $1", &[&c.user]).await?;
        return Ok(Applied::AwaitingOther);
    }
    let taken = tx.query_opt("SELECT 1 FROM auth.users WHERE lower(email) = lower($1) AND id <> $2 AND deleted_at IS NULL", &[&c.relates_to, &c.user]).await?;
    if taken.is_some() {
        return Err(AuthError::new(StatusCode::CONFLICT, code::EMAIL_EXISTS, "email already registered"));
    }
    tx.execute(
        "UPDATE auth.users SET email = $2, email_confirmed_at = now(), email_confirmed_by = 'email',
                email_change = NULL, email_change_sent_at = NULL, email_change_confirm_status = 0,
                is_anonymous = false, updated_at = now()
          WHERE id = $1",
        &[&c.user, &c.relates_to],
    )
    .await?;
    tx.execute(
        "INSERT INTO auth.identities (user_id, provider, provider_id, identity_data)
         VALUES ($1, 'email', $3::text, jsonb_build_object('sub', $3::text, 'email', $2::text, 'email_verified', true))
         ON CONFLICT (provider, provider_id) DO UPDATE
            SET identity_data = auth.identities.identity_data || excluded.identity_data, updated_at = now()",
        &[&c.user, &c.relates_to, &c.user.to_string()],
    )
    .await?;
    tx.execute(
        "UPDATE auth.one_time_tokens SET used_at = now()
          WHERE user_id = $1 AND token_type IN ('email_change', 'email_change_current') AND used_at IS NULL",
        &[&c.user],
    )
    .await?;
    Ok(Applied::Done)
}

/// Records a requested change of address (both confirmations still due).
pub async fn request_email_change(tx: &Transaction<'_>, user: Uuid, new_email: &str) -> AuthResult<()> {
    tx.execute(
        "UPDATE auth.users SET email_change = $2, email_change_sent_at = now(), email_change_confirm_status = 0,
                updated_at = now()
          WHERE id = $1",
        &[&user, &new_email],
    )
    .await?;
    Ok(())
}
