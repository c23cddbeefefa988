//! PKCE (RFC 7636) for redirect-based sign-ins, as auth-js's `flowType: 'pkce'` and
//! supabase-py use it: the app sends `code_challenge` (+ method) when it starts a
//! flow (OAuth /authorize, sign-up, magic link, recovery); when the flow completes
//! the browser lands on `redirect_to?code=AUTH_CODE` instead of receiving tokens in
//! the fragment, and the app trades that code plus its `code_verifier` for a session
//! at POST /token?grant_type=pkce.
//!
//! Flows live in `auth.flow_state`; the authorization code is kept only as a digest,
//! is single use and expires after [`AUTH_CODE_TTL_SECS`].

use base64::Engine;
use deadpool_postgres::Transaction;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::error::{AuthError, AuthResult};
use super::tokens;

/// How long an issued authorization code may be exchanged.
pub const AUTH_CODE_TTL_SECS: f64 = 300.0;

/// A code challenge as the app sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The challenge (base64url SHA-256 of the verifier, or the verifier for `plain`).
    pub challenge: String,
    /// `s256` or `plain`.
    pub method: &'static str,
}

fn pkce_charset(s: &str) -> bool {
    (43..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Reads `code_challenge` / `code_challenge_method`; `None` when no challenge is given
/// (the implicit flow). A missing method means `s256`; anything but s256 / plain
/// (any case) is refused.
pub fn parse(challenge: Option<&str>, method: Option<&str>) -> AuthResult<Option<Challenge>> {
    let Some(challenge) = challenge.map(str::trim).filter(|c| !c.is_empty()) else { return Ok(None) };
    let method = match method.map(|m| m.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("s256") => "s256",
        Some("plain") => "plain",
        Some(other) => return Err(AuthError::invalid_body(format!("code_challenge_method {other:?} is not s256 or plain"))),
    };
    if !pkce_charset(challenge) {
        return Err(AuthError::invalid_body("code_challenge must be 43 to 128 characters of [A-Za-z0-9-._~]"));
    }
    Ok(Some(Challenge { challenge: challenge.to_owned(), method }))
}

/// The S256 challenge of `verifier`: base64url(SHA-256(verifier)), unpadded.
pub fn s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether `verifier` answers `challenge` (constant-time): the comparison that
/// `auth.pkce_grant` makes in the database, where the code is already spent.
pub fn verifies(challenge: &str, method: &str, verifier: &str) -> bool {
    use subtle::ConstantTimeEq;
    let expected = match method {
        "plain" => verifier.to_owned(),
        _ => s256(verifier),
    };
    expected.len() == challenge.len() && bool::from(expected.as_bytes().ct_eq(challenge.as_bytes()))
}

/// A flow as read back at the callback.
#[derive(Debug)]
pub struct Flow {
    /// Row id.
    pub id: Uuid,
    /// `email`, `google`, `custom:acme`, ...
    pub provider: String,
    /// Where the browser goes at the end (already checked against the allow-list).
    pub redirect_to: String,
    /// Whether the app asked for PKCE (then the browser gets `?code=`).
    pub pkce: bool,
}

/// Records a new flow; `state_digest` for OAuth round trips. Old expired flows are
/// swept on the way.
pub async fn create(tx: &Transaction<'_>, provider: &str, state_digest: Option<&str>, redirect_to: &str, challenge: Option<&Challenge>, ttl_secs: i64) -> AuthResult<Uuid> {
    tx.execute("DELETE FROM auth.flow_state WHERE expires_at < now() - interval '1 hour'", &[]).await?;
    let row = tx
        .query_one(
            "INSERT INTO auth.flow_state (provider, state_hash, redirect_to, code_challenge, code_challenge_method, expires_at)
             VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6)) RETURNING id",
            &[&provider, &state_digest, &redirect_to, &challenge.map(|c| c.challenge.as_str()), &challenge.map(|c| c.method), &(ttl_secs as f64)],
        )
        .await?;
    Ok(row.get(0))
}

/// Takes the OAuth flow whose state digest is `state_digest` (single use: the state
/// cannot be replayed). `None` when unknown or expired.
pub async fn take_by_state(tx: &Transaction<'_>, state_digest: &str) -> AuthResult<Option<Flow>> {
    let row = tx
        .query_opt(
            "UPDATE auth.flow_state SET state_hash = NULL
              WHERE state_hash = $1 AND expires_at > now()
              RETURNING id, provider, redirect_to, code_challenge IS NOT NULL",
            &[&state_digest],
        )
        .await?;
    Ok(row.map(|r| Flow { id: r.get(0), provider: r.get(1), redirect_to: r.get(2), pkce: r.get(3) }))
}

/// Reads a flow by id (e-mail links carry the id on their one-time token).
pub async fn get(tx: &Transaction<'_>, id: Uuid) -> AuthResult<Option<Flow>> {
    let row = tx.query_opt("SELECT id, provider, redirect_to, code_challenge IS NOT NULL FROM auth.flow_state WHERE id = $1", &[&id]).await?;
    Ok(row.map(|r| Flow { id: r.get(0), provider: r.get(1), redirect_to: r.get(2), pkce: r.get(3) }))
}

/// Deletes a flow that ends without a code (implicit flow, or POST /verify).
pub async fn finish(tx: &Transaction<'_>, id: Uuid) -> AuthResult<()> {
    tx.execute("DELETE FROM auth.flow_state WHERE id = $1", &[&id]).await?;
    Ok(())
}

/// Binds the signed-in `user` to the flow and returns the authorization code for the
/// redirect (only its digest is stored).
pub async fn issue_code(tx: &Transaction<'_>, flow: Uuid, user: Uuid) -> AuthResult<String> {
    let code = Uuid::new_v4().to_string();
    tx.execute(
        "UPDATE auth.flow_state SET auth_code_hash = $2, user_id = $3,
                expires_at = now() + make_interval(secs => $4)
          WHERE id = $1",
        &[&flow, &tokens::digest(&code), &user, &AUTH_CODE_TTL_SECS],
    )
    .await?;
    Ok(code)
}

/// Checks the verifier's form before any lookup.
pub fn check_verifier(verifier: &str) -> AuthResult<()> {
    if pkce_charset(verifier) {
        Ok(())
    } else {
        Err(AuthError::invalid_body("code_verifier must be 43 to 128 characters of [A-Za-z0-9-._~]"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_matches_rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(verifies(challenge, "s256", verifier));
        assert!(!verifies(challenge, "s256", "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl"));
        assert!(verifies(verifier, "plain", verifier));
        assert!(!verifies(challenge, "plain", verifier));
    }

    #[test]
    fn parse_accepts_clients_spellings_and_refuses_junk() {
        let c = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert_eq!(parse(Some(c), Some("S256")).unwrap().unwrap().method, "s256");
        assert_eq!(parse(Some(c), None).unwrap().unwrap().method, "s256");
        assert_eq!(parse(Some(c), Some("plain")).unwrap().unwrap().method, "plain");
        assert!(parse(None, Some("s256")).unwrap().is_none());
        assert!(parse(Some(""), None).unwrap().is_none());
        assert!(parse(Some(c), Some("md5")).is_err());
        assert!(parse(Some("short"), None).is_err());
        assert!(parse(Some(&format!("{c}!")), None).is_err());
    }
}
