//! Password rules and hashing: argon2id with OWASP parameters (m=19 MiB, t=2, p=1);
//! bcrypt hashes (`$2a$`, `$2b$`, `$2y$`) imported from Supabase verify too.
//! Hashing runs on the blocking pool, never on the async workers, and at most
//! PASSWORD_HASH_CONCURRENCY hashes (default: the number of cores) run at once in a
//! gateway: every argon2 run takes 19 MiB, so unbounded concurrency is a memory and
//! CPU flood. Others wait in line up to PASSWORD_HASH_QUEUE_TIMEOUT seconds, then get
//! 429 `over_request_rate_limit` with `Retry-After`. Sign-in verification takes the
//! same line.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::{AuthError, AuthResult};

/// Shortest password accepted (contract).
pub const MIN_LEN: usize = 8;
/// Longest password accepted (contract), in characters.
pub const MAX_LEN: usize = 256;
/// Longest password accepted, in bytes (256 four-byte characters). Longer input is
/// refused before any hashing; at sign-in it simply cannot match.
pub const MAX_BYTES: usize = 1024;

fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The line hashes wait in.
struct Gate {
    permits: Arc<Semaphore>,
    wait: Duration,
}

static GATE: OnceLock<Gate> = OnceLock::new();

/// Sets the gateway-wide bound (first call wins; the router calls it at start).
pub fn configure(concurrency: usize, wait_secs: u64) {
    let _ = GATE.set(Gate { permits: Arc::new(Semaphore::new(concurrency.max(1))), wait: Duration::from_secs(wait_secs.max(1)) });
}

fn gate() -> &'static Gate {
    GATE.get_or_init(|| Gate {
        permits: Arc::new(Semaphore::new(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2))),
        wait: Duration::from_secs(5),
    })
}

/// A place in the line, or 429 when none frees up in time.
async fn permit() -> AuthResult<OwnedSemaphorePermit> {
    let g = gate();
    match tokio::time::timeout(g.wait, g.permits.clone().acquire_owned()).await {
        Ok(Ok(p)) => Ok(p),
        _ => {
            tracing::warn!("password hashing is saturated; request refused");
            Err(AuthError::too_many("too many password operations in progress, try again later", g.wait.as_secs()))
        }
    }
}

/// Runs `f` on the blocking pool holding a permit (kept until `f` ends, even when
/// the request is dropped meanwhile).
async fn gated<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> AuthResult<T> {
    let p = permit().await?;
    tokio::task::spawn_blocking(move || {
        let out = f();
        drop(p);
        out
    })
    .await
    .map_err(AuthError::internal)
}

/// The contract's length rule, counted in characters (and at most [`MAX_BYTES`]).
pub fn check(password: &str) -> AuthResult<()> {
    let n = password.chars().count();
    if n < MIN_LEN {
        return Err(AuthError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "weak_password",
            format!("password must be at least {MIN_LEN} characters"),
        ));
    }
    if n > MAX_LEN || password.len() > MAX_BYTES {
        return Err(AuthError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "weak_password",
            format!("password must be at most {MAX_LEN} characters"),
        ));
    }
    Ok(())
}

/// An argon2id PHC string for `password` (call [`check`] first).
pub async fn hash(password: String) -> AuthResult<String> {
    if password.len() > MAX_BYTES {
        return Err(AuthError::invalid_body("password too long"));
    }
    gated(move || {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        argon2().hash_password(password.as_bytes(), &salt).map(|h| h.to_string())
    })
    .await?
    .map_err(|e| AuthError::internal(anyhow::anyhow!("argon2: {e}")))
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
    if password.len() > MAX_BYTES {
        return Ok(false);
    }
    gated(move || match stored.as_deref() {
        Some(h) if h.starts_with("$2a$") || h.starts_with("$2b$") || h.starts_with("$2y$") => {
            bcrypt::verify(&password, h).unwrap_or(false)
        }
        Some(h) => match PasswordHash::new(h) {
            Ok(parsed) => argon2().verify_password(password.as_bytes(), &parsed).is_ok(),
            Err(_) => false,
        },
        None => {
            let _ = argon2().hash_password(password.as_bytes(), &SaltString::from_b64("c29tZXNhbHRzb21lc2FsdA").unwrap());
            false
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn argon2id_round_trip_with_owasp_parameters() {
        let h = hash("correct horse battery".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify("correct horse battery".into(), Some(h.clone())).await.unwrap());
        assert!(!verify("wrong horse battery".into(), Some(h)).await.unwrap());
        assert!(!verify("anything".into(), None).await.unwrap());
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
