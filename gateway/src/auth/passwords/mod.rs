//! Password rules and hashing: argon2id with OWASP parameters (m=19 MiB, t=2, p=1);
//! bcrypt hashes (`$2a$`, `$2b$`, `$2y$`) imported from Supabase verify too.
//! Every hash and verification waits in the line ([`line`]: at most
//! PASSWORD_HASH_CONCURRENCY at once, on the blocking pool) and runs in reused
//! working memory ([`memory`]), so a hashing flood costs a fixed amount of memory
//! and CPU; beyond the line's wait it gets 429 `over_request_rate_limit`.

mod line;
mod memory;

use argon2::password_hash::{Output, ParamsString, PasswordHash, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use line::gated;
pub use line::{configure, note_sign_in, sign_in_lane, Lane};
use memory::Memory;

use super::error::{AuthError, AuthResult};
use crate::error::code::auth as code;

/// Shortest password accepted (contract).
pub const MIN_LEN: usize = 8;
/// Longest password accepted (contract), in characters.
pub const MAX_LEN: usize = 256;
/// Longest password accepted, in bytes (256 four-byte characters). Longer input is
/// refused before any hashing; at sign-in it simply cannot match.
pub const MAX_BYTES: usize = 1024;

fn argon2() -> Argon2<'static> {
    let params = Params::new(memory::BLOCKS as u32, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Largest argon2 memory cost verified (KiB): stored hashes with more (imported
/// from elsewhere) match nothing rather than allocate without bound.
const MAX_VERIFY_M_COST: u32 = 256 * 1024;

/// A new argon2id PHC string for `password`, computed in `mem`.
fn hash_in(password: &[u8], mem: &mut Memory) -> argon2::password_hash::Result<String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    let mut raw = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut raw)?;
    let a = argon2();
    let out = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |o| Ok(a.hash_password_into_with_memory(password, salt_bytes, o, mem.blocks())?))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(a.params())?,
        salt: Some(salt.as_salt()),
        hash: Some(out),
    };
    Ok(phc.to_string())
}

/// True when `password` hashes to `stored` (any argon2 variant and parameters up
/// to [`MAX_VERIFY_M_COST`]); the comparison is constant-time ([`Output`]'s).
fn verify_in_memory(password: &[u8], stored: &PasswordHash<'_>, mem: &mut Memory) -> bool {
    let (Some(salt), Some(expected)) = (stored.salt, stored.hash) else { return false };
    let Ok(algorithm) = Algorithm::try_from(stored.algorithm) else { return false };
    let Ok(version) = stored.version.map(Version::try_from).transpose() else { return false };
    let Ok(params) = Params::try_from(stored) else { return false };
    if params.m_cost() > MAX_VERIFY_M_COST {
        tracing::warn!(m_cost = params.m_cost(), "stored argon2 hash needs more memory than allowed; treated as no match");
        return false;
    }
    let a = Argon2::new(algorithm, version.unwrap_or_default(), params);
    if a.params().block_count() > memory::BLOCKS {
        return a.verify_password(password, stored).is_ok();
    }
    let mut raw = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut raw) else { return false };
    match Output::init_with(expected.len(), |o| Ok(a.hash_password_into_with_memory(password, salt_bytes, o, mem.blocks())?)) {
        Ok(out) => out == expected,
        Err(_) => false,
    }
}

/// The contract's length rule, counted in characters (and at most [`MAX_BYTES`]).
pub fn check(password: &str) -> AuthResult<()> {
    let n = password.chars().count();
    if n < MIN_LEN {
        return Err(AuthError::new(axum::http::StatusCode::BAD_REQUEST, code::WEAK_PASSWORD, format!("password must be at least {MIN_LEN} characters")));
    }
    if n > MAX_LEN || password.len() > MAX_BYTES {
        return Err(AuthError::new(axum::http::StatusCode::BAD_REQUEST, code::WEAK_PASSWORD, format!("password must be at most {MAX_LEN} characters")));
    }
    Ok(())
}

/// What an unknown account's sign-in is checked against, so that it costs what a
/// known one does.
const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$u0ExBSoWtSBxDEFyGKOxAyHMy/bPkxKgi4LUrxkk4vM";

/// An argon2id PHC string for `password` (call [`check`] first).
pub async fn hash(password: String) -> AuthResult<String> {
    if password.len() > MAX_BYTES {
        return Err(AuthError::invalid_body("password too long"));
    }
    gated(Lane::Normal, move || hash_in(password.as_bytes(), &mut Memory::take())).await?.map_err(|e| AuthError::internal(anyhow::anyhow!("argon2: {e}")))
}

/// The hash of a new password when one is given, after the length rule.
pub async fn checked_hash(password: Option<String>) -> AuthResult<Option<String>> {
    match password {
        Some(pw) => {
            check(&pw)?;
            Ok(Some(hash(pw).await?))
        }
        None => Ok(None),
    }
}

/// True when `password` matches `stored` (argon2 PHC or bcrypt). With no stored
/// hash a dummy verification still runs, so unknown accounts take as long as known
/// ones. A password over [`MAX_BYTES`] matches nothing and is not hashed. 429 when
/// the hashing line is full.
pub async fn verify(password: String, stored: Option<String>) -> AuthResult<bool> {
    verify_in(Lane::Normal, password, stored).await
}

/// [`verify`] in the given line (sign-ins: [`sign_in_lane`]).
pub async fn verify_in(lane: Lane, password: String, stored: Option<String>) -> AuthResult<bool> {
    if password.len() > MAX_BYTES {
        return Ok(false);
    }
    gated(lane, move || match stored.as_deref() {
        Some(h) if h.starts_with("$2a$") || h.starts_with("$2b$") || h.starts_with("$2y$") => bcrypt::verify(&password, h).unwrap_or(false),
        Some(h) => match PasswordHash::new(h) {
            Ok(parsed) => verify_in_memory(password.as_bytes(), &parsed, &mut Memory::take()),
            Err(_) => false,
        },
        None => {
            let _ = verify_in_memory(password.as_bytes(), &PasswordHash::new(DUMMY).expect("valid PHC string"), &mut Memory::take());
            false
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::PasswordHasher;

    #[tokio::test]
    async fn argon2id_round_trip_with_owasp_parameters() {
        let h = hash("correct horse battery".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify("correct horse battery".into(), Some(h.clone())).await.unwrap());
        assert!(!verify("wrong horse battery".into(), Some(h)).await.unwrap());
        assert!(!verify("anything".into(), None).await.unwrap());
    }

    #[tokio::test]
    async fn reused_memory_hashes_are_standard_argon2id() {
        // Ours verify with the library's own verifier, and the library's with ours.
        let ours = hash("interop-password".into()).await.unwrap();
        assert!(argon2().verify_password(b"interop-password", &PasswordHash::new(&ours).unwrap()).is_ok());
        assert!(argon2().verify_password(b"interop-passworD", &PasswordHash::new(&ours).unwrap()).is_err());
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let theirs = argon2().hash_password(b"interop-password", &salt).unwrap().to_string();
        assert!(verify("interop-password".into(), Some(theirs.clone())).await.unwrap());
        assert!(!verify("interop-passworD".into(), Some(theirs)).await.unwrap());
        // Other variants and smaller parameters (imported hashes) use the same memory.
        let small = Argon2::new(Algorithm::Argon2i, Version::V0x10, Params::new(4096, 3, 2, Some(24)).unwrap());
        let other = small.hash_password(b"imported-argon", &salt).unwrap().to_string();
        assert!(verify("imported-argon".into(), Some(other.clone())).await.unwrap());
        assert!(!verify("imported-argoN".into(), Some(other)).await.unwrap());
        // A stored hash asking for more memory than allowed matches nothing.
        let huge = "$argon2id$v=19$m=4194304,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$u0ExBSoWtSBxDEFyGKOxAyHMy/bPkxKgi4LUrxkk4vM";
        assert!(!verify("whatever-password".into(), Some(huge.into())).await.unwrap());
        assert!(PasswordHash::new(DUMMY).is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_flood_of_hashes_holds_one_buffer_per_slot_and_frees_them_when_idle() {
        let slots = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let runs: Vec<_> = (0..4 * slots).map(|i| tokio::spawn(hash(format!("flood-password-{i}")))).collect();
        for r in runs {
            r.await.unwrap().unwrap();
        }
        // Every buffer is back in the store, and there are never more than slots.
        let kept = memory::trim(std::time::Duration::from_secs(3600));
        assert!((1..=slots).contains(&kept), "{kept} buffers for {slots} slots");
        assert_eq!(memory::trim(std::time::Duration::ZERO), 0, "idle buffers are freed");
    }

    #[tokio::test]
    async fn imported_bcrypt_hashes_verify() {
        let h = bcrypt::hash("imported-password", 4).unwrap();
        assert!(verify("imported-password".into(), Some(h.clone())).await.unwrap());
        assert!(!verify("other-password".into(), Some(h)).await.unwrap());
        assert!(!verify("x".into(), Some("not a hash".into())).await.unwrap());
    }

    #[test]
    fn length_rules_follow_the_contract() {
        assert_eq!(check("1234567").unwrap_err().message, "password must be at least 8 characters");
        assert!(check("12345678").is_ok());
        assert!(check(&"é".repeat(256)).is_ok());
        assert_eq!(check(&"a".repeat(257)).unwrap_err().message, "password must be at most 256 characters");
    }

    #[tokio::test]
    async fn oversized_passwords_are_never_hashed() {
        assert!(!verify("a".repeat(MAX_BYTES + 1), None).await.unwrap());
        assert_eq!(hash("a".repeat(MAX_BYTES + 1)).await.unwrap_err().status, axum::http::StatusCode::BAD_REQUEST);
    }
}
