//! Access tokens (HS256 JWTs with Supabase's claims), opaque refresh tokens and
//! one-time tokens (stored only as SHA-256 digests), and the session body.

use base64::Engine;
use pgstack_shared::{JwtClaims, Role};
use rand::RngCore;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::error::{AuthError, AuthResult};
use crate::config::Config;
use crate::keys;

/// A new opaque token: 32 random bytes, base64url.
pub fn opaque() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// How a token is kept at rest.
pub fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// How the user signed in, for the `amr` claim.
#[derive(Debug, Clone, Copy)]
pub enum Method {
    /// Email + password.
    Password,
    /// Anonymous sign-in.
    Anonymous,
    /// Refresh keeps the original method; recorded as token refresh.
    Refresh,
    /// An e-mailed link or code.
    Otp,
    /// An OAuth / OpenID provider.
    OAuth,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Password => "password",
            Method::Anonymous => "anonymous",
            Method::Refresh => "token_refresh",
            Method::Otp => "otp",
            Method::OAuth => "oauth",
        }
    }
}

/// Signs an access token for `user` (the JSON from `auth.user_json`) in `session_id`.
pub fn access_token(cfg: &Config, user: &Value, session_id: &str, method: Method) -> AuthResult<(String, i64)> {
    let role: Role = user["role"].as_str().unwrap_or("authenticated").parse().map_err(AuthError::internal)?;
    let now = keys::now();
    let exp = now + cfg.jwt_expiry_secs as i64;
    let mut extra = Map::new();
    for k in ["email", "phone", "app_metadata", "user_metadata", "is_anonymous"] {
        extra.insert(k.into(), user[k].clone());
    }
    extra.insert("session_id".into(), session_id.into());
    extra.insert("aal".into(), "aal1".into());
    extra.insert("amr".into(), json!([{ "method": method.as_str(), "timestamp": now }]));
    let claims = JwtClaims {
        role,
        iss: Some(format!("{}/auth/v1", cfg.site_url.trim_end_matches('/'))),
        sub: user["id"].as_str().map(str::to_owned),
        aud: Some("authenticated".into()),
        iat: now,
        exp,
        extra,
    };
    let token = keys::sign(&claims, &cfg.jwt_secret).map_err(AuthError::internal)?;
    Ok((token, exp))
}

/// The session body of signup / token / verify: the contract's fields plus
/// `expires_at` and the user, as auth-js needs.
pub fn session_body(cfg: &Config, user: Value, session_id: &str, refresh_token: &str, method: Method) -> AuthResult<Value> {
    let (access, exp) = access_token(cfg, &user, session_id, method)?;
    Ok(json!({
        "access_token": access,
        "token_type": "bearer",
        "expires_in": cfg.jwt_expiry_secs,
        "expires_at": exp,
        "refresh_token": refresh_token,
        "user": user,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_tokens_are_random_and_digests_stable() {
        let a = opaque();
        assert_ne!(a, opaque());
        assert_eq!(a.len(), 43);
        assert_eq!(digest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
