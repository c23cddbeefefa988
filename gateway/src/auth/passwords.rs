//! Password rules and hashing: argon2id with OWASP parameters (m=19 MiB, t=2, p=1);
//! bcrypt hashes (`$2a$`, `$2b$`, `$2y$`) imported from Supabase verify too.
//! Hashing runs on the blocking pool, never on the async workers.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use super::error::{AuthError, AuthResult};

/// Shortest password accepted (contract).
pub const MIN_LEN: usize = 8;
/// Longest password accepted (contract).
pub const MAX_LEN: usize = 256;

fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The contract's length rule, counted in characters.
pub fn check(password: &str) -> AuthResult<()> {
    let n = password.chars().count();
    if n < MIN_LEN {
        return Err(AuthError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "weak_password",
            format!("password must be at least {MIN_LEN} characters"),
        ));
    }
    if n > MAX_LEN {
        return Err(AuthError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "weak_password",
            format!("password must be at most {MAX_LEN} characters"),
        ));
    }
    Ok(())
}

/// An argon2id PHC string for `password`.
pub async fn hash(password: String) -> AuthResult<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        argon2().hash_password(password.as_bytes(), &salt).map(|h| h.to_string())
    })
    .await
    .map_err(AuthError::internal)?
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
/// hash a dummy verification still runs, so unknown accounts take as long as known ones.
pub async fn verify(password: String, stored: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || match stored.as_deref() {
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
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn argon2id_round_trip_with_owasp_parameters() {
        let h = hash("correct horse battery".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify("correct horse battery".into(), Some(h.clone())).await);
        assert!(!verify("wrong horse battery".into(), Some(h)).await);
        assert!(!verify("anything".into(), None).await);
    }

    #[tokio::test]
    async fn imported_bcrypt_hashes_verify() {
        let h = bcrypt::hash("imported-password", 4).unwrap();
        assert!(verify("imported-password".into(), Some(h.clone())).await);
        assert!(!verify("other-password".into(), Some(h)).await);
        assert!(!verify("x".into(), Some("not a hash".into())).await);
    }

    #[test]
    fn length_rules_follow_the_contract() {
        assert_eq!(check("1234567").unwrap_err().message, "password must be at least 8 characters");
        assert!(check("12345678").is_ok());
        assert!(check(&"é".repeat(256)).is_ok());
        assert_eq!(check(&"a".repeat(257)).unwrap_err().message, "password must be at most 256 characters");
    }
}
