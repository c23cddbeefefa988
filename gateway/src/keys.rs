//! Project keys: the JWT secret and the ANON_KEY / SERVICE_ROLE_KEY JWTs signed with it.

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use pgstack_shared::{JwtClaims, Role};
use rand::RngCore;
use std::collections::HashMap;

/// A string that must never be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself, for signing and comparing only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// Lifetime of a project key: ten years, as Supabase issues them.
pub const API_KEY_LIFETIME_SECS: i64 = 10 * 365 * 24 * 3600;

/// A fresh random secret: 48 bytes from the OS, base64url (64 characters).
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 48];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// An HS256 project key for `role`, signed with `secret`.
pub fn mint(role: Role, secret: &Secret) -> Result<String, jsonwebtoken::errors::Error> {
    sign(&JwtClaims::api_key(role, now(), API_KEY_LIFETIME_SECS), secret)
}

/// Signs any claims with HS256.
pub fn sign(claims: &JwtClaims, secret: &Secret) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.expose().as_bytes()))
}

/// Verifies an HS256 token (signature, expiry) and returns its claims.
pub fn verify(token: &str, secret: &Secret) -> Result<JwtClaims, jsonwebtoken::errors::Error> {
    let mut v = Validation::new(Algorithm::HS256);
    v.validate_aud = false;
    v.required_spec_claims = ["exp"].into_iter().map(String::from).collect();
    jsonwebtoken::decode::<JwtClaims>(token, &DecodingKey::from_secret(secret.expose().as_bytes()), &v).map(|d| d.claims)
}

/// Verifies an HS256 (or HS384/HS512) token signed with `secret` and returns its claims as they are
/// (no claim is required; the caller checks `exp` and `role` itself).
pub fn verify_any(token: &str, secret: &Secret) -> Result<serde_json::Value, jsonwebtoken::errors::Error> {
    let mut v = Validation::new(Algorithm::HS256);
    // The project's key is a symmetric one: any HMAC algorithm verifies with it
    // (as PostgREST's JWK of the secret does); none other does.
    v.algorithms = vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
    v.validate_aud = false;
    v.validate_exp = false;
    v.required_spec_claims.clear();
    jsonwebtoken::decode::<serde_json::Value>(token, &DecodingKey::from_secret(secret.expose().as_bytes()), &v).map(|d| d.claims)
}

/// Verified claims: the JSON value and its text (what `request.jwt.claims` is set
/// to), built once per token and shared by every request that presents it.
#[derive(Debug, PartialEq)]
pub struct Claims {
    value: serde_json::Value,
    text: String,
}

impl Claims {
    pub fn new(value: serde_json::Value) -> std::sync::Arc<Claims> {
        let text = value.to_string();
        std::sync::Arc::new(Claims { value, text })
    }

    /// The claims as a JSON value.
    pub fn value(&self) -> &serde_json::Value {
        &self.value
    }

    /// The claims as JSON text.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl std::ops::Deref for Claims {
    type Target = serde_json::Value;
    fn deref(&self) -> &serde_json::Value {
        &self.value
    }
}

/// Tokens whose signature was checked (most requests repeat the project's keys or a
/// session's token): the HMAC, the JSON parse and the claims' text are skipped for a
/// token already verified with the same secret. Only verified tokens enter (so the
/// keys are not the client's to choose); time-based claims are still checked by the
/// caller on every request. Bounded: cleared when full.
type Verified = HashMap<String, (String, std::sync::Arc<Claims>), foldhash::fast::RandomState>;
static VERIFIED: std::sync::LazyLock<std::sync::Mutex<Verified>> = std::sync::LazyLock::new(Default::default);
const MAX_VERIFIED: usize = 4096;
/// Longer tokens are verified every time rather than kept.
const MAX_CACHED_TOKEN: usize = 4096;

/// [`verify_any`], remembering tokens that verified.
pub fn verify_cached(token: &str, secret: &Secret) -> Result<std::sync::Arc<Claims>, jsonwebtoken::errors::Error> {
    if let Some((s, claims)) = VERIFIED.lock().unwrap_or_else(|e| e.into_inner()).get(token) {
        if constant_time_eq(s, secret.expose()) {
            return Ok(claims.clone());
        }
    }
    let claims = Claims::new(verify_any(token, secret)?);
    if token.len() <= MAX_CACHED_TOKEN {
        let mut m = VERIFIED.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_VERIFIED {
            m.clear();
        }
        m.insert(token.to_owned(), (secret.expose().to_owned(), claims.clone()));
    }
    Ok(claims)
}

/// Compares two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_strong_and_distinct() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        crate::config::check_secret_strength(&a).unwrap();
    }

    #[test]
    fn a_remembered_token_still_needs_its_own_secret() {
        let (s1, s2) = (Secret::new(generate_secret()), Secret::new(generate_secret()));
        let k = mint(Role::Anon, &s1).unwrap();
        assert!(verify_cached(&k, &s1).is_ok());
        assert!(verify_cached(&k, &s1).is_ok());
        assert!(verify_cached(&k, &s2).is_err());
        assert!(verify_cached(&format!("{k}x"), &s1).is_err());
    }

    #[test]
    fn minted_keys_verify_with_their_secret_only() {
        let s = Secret::new(generate_secret());
        let k = mint(Role::ServiceRole, &s).unwrap();
        let c = verify(&k, &s).unwrap();
        assert_eq!(c.role, Role::ServiceRole);
        assert!(c.exp - c.iat >= API_KEY_LIFETIME_SECS);
        assert!(verify(&k, &Secret::new(generate_secret())).is_err());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let s = Secret::new(generate_secret());
        let t = sign(&JwtClaims::api_key(Role::Anon, now() - 7200, 60), &s).unwrap();
        assert!(verify(&t, &s).is_err());
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
    }
}
