//! One-time tokens (confirmation, recovery, magic link, email change): created as a
//! link token plus, for magic links, a 6-digit code; stored only as SHA-256 digests;
//! single use; expiring; a new one of a kind replaces the older ones.

use deadpool_postgres::Transaction;
use rand::Rng;
use uuid::Uuid;

use super::error::AuthResult;
use super::tokens;

/// The kinds, as stored in `auth.one_time_tokens.token_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    /// Sign-up confirmation.
    Confirmation,
    /// Password recovery.
    Recovery,
    /// Magic link / e-mail OTP.
    MagicLink,
    /// Change of e-mail address (relates_to = the new address).
    EmailChange,
}

impl TokenType {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenType::Confirmation => "confirmation",
            TokenType::Recovery => "recovery",
            TokenType::MagicLink => "magiclink",
            TokenType::EmailChange => "email_change",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "confirmation" => TokenType::Confirmation,
            "recovery" => TokenType::Recovery,
            "magiclink" => TokenType::MagicLink,
            "email_change" => TokenType::EmailChange,
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
            "email_change" => &[TokenType::EmailChange],
            _ => return None,
        })
    }
}

/// A freshly issued token: the link token and the short code.
pub struct Issued {
    /// Goes into the link.
    pub token: String,
    /// 6 digits, for `verifyOtp({email, token})`.
    pub code: String,
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

/// Issues a token of kind `t` for `user`, replacing unused older ones; `flow` ties
/// it to a PKCE flow (the link then ends with `?code=`).
pub async fn issue(tx: &Transaction<'_>, user: Uuid, t: TokenType, relates_to: &str, ttl_secs: i64, flow: Option<Uuid>) -> AuthResult<Issued> {
    let token = tokens::opaque();
    let code = format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000u32));
    tx.execute(
        "DELETE FROM auth.one_time_tokens WHERE user_id = $1 AND token_type = $2",
        &[&user, &t.as_str()],
    )
    .await?;
    tx.execute(
        "INSERT INTO auth.one_time_tokens (user_id, token_type, token_hash, relates_to, expires_at, flow_id)
         SELECT $1, $2, h, $4, now() + make_interval(secs => $5), $6 FROM unnest($3::text[]) AS h",
        &[&user, &t.as_str(), &vec![tokens::digest(&token), code_digest(user, &code)], &relates_to, &(ttl_secs as f64), &flow],
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

/// Consumes a link token (or, with `user`, a 6-digit code) of one of `kinds`.
/// All tokens of that kind for the account are spent with it.
pub async fn consume(tx: &Transaction<'_>, token: &str, code_user: Option<Uuid>, kinds: &[TokenType]) -> AuthResult<Option<Consumed>> {
    let hash = match code_user {
        Some(u) => code_digest(u, token.trim()),
        None => tokens::digest(token),
    };
    let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    let row = tx
        .query_opt(
            "UPDATE auth.one_time_tokens SET used_at = now()
              WHERE token_hash = $1 AND token_type = ANY ($2) AND used_at IS NULL AND expires_at > now()
              RETURNING user_id, token_type, relates_to, flow_id",
            &[&hash, &names],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let c = Consumed {
        user: row.get(0),
        kind: TokenType::parse(row.get::<_, &str>(1)).unwrap_or(TokenType::Confirmation),
        relates_to: row.get(2),
        flow: row.get(3),
    };
    tx.execute(
        "UPDATE auth.one_time_tokens SET used_at = now() WHERE user_id = $1 AND token_type = $2 AND used_at IS NULL",
        &[&c.user, &c.kind.as_str()],
    )
    .await?;
    Ok(Some(c))
}

/// Applies the effect of a consumed token on the account: confirms the address
/// (confirmation, magic link), or switches to the new one (email change).
pub async fn apply(tx: &Transaction<'_>, c: &Consumed) -> AuthResult<()> {
    match c.kind {
        TokenType::Confirmation | TokenType::MagicLink => {
            tx.execute(
                "UPDATE auth.users SET email_confirmed_at = coalesce(email_confirmed_at, now()), updated_at = now() WHERE id = $1",
                &[&c.user],
            )
            .await?;
        }
        TokenType::EmailChange => {
            tx.execute(
                "UPDATE auth.users SET email = $2, email_confirmed_at = now(), updated_at = now() WHERE id = $1",
                &[&c.user, &c.relates_to],
            )
            .await?;
            tx.execute(
                "UPDATE auth.identities SET identity_data = identity_data || jsonb_build_object('email', $2::text), updated_at = now()
                  WHERE user_id = $1 AND provider = 'email'",
                &[&c.user, &c.relates_to],
            )
            .await?;
        }
        TokenType::Recovery => {}
    }
    Ok(())
}
