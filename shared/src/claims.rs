//! JWT claims, Supabase-compatible, so RLS policies written for Supabase run unchanged.

use crate::role::Role;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Issuer written into keys and tokens minted by pgstack.
pub const ISSUER: &str = "pgstack";

/// The claims of every token pgstack signs or accepts. Unknown claims are kept in
/// `extra` so `auth.jwt()` sees the whole token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JwtClaims {
    /// The role the request runs as.
    pub role: Role,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Subject: the user id (absent for anon / service keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Audience ("authenticated" for user tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Value>,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Every other claim (email, app_metadata, user_metadata, session_id, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl JwtClaims {
    /// Claims of a project key (ANON_KEY / SERVICE_ROLE_KEY): a role and a lifetime.
    pub fn api_key(role: Role, iat: i64, lifetime_secs: i64) -> Self {
        JwtClaims { role, iss: Some(ISSUER.to_owned()), sub: None, aud: None, iat, exp: iat + lifetime_secs, extra: Map::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_unknown_claims_for_auth_jwt() {
        let raw = r#"{"role":"authenticated","sub":"u1","iat":1,"exp":2,"email":"a@b.c","app_metadata":{"provider":"email"}}"#;
        let c: JwtClaims = serde_json::from_str(raw).unwrap();
        assert_eq!(c.role, Role::Authenticated);
        assert_eq!(c.extra["email"], "a@b.c");
        let back: Value = serde_json::to_value(&c).unwrap();
        assert_eq!(back["app_metadata"]["provider"], "email");
        assert_eq!(back["sub"], "u1");
    }

    #[test]
    fn api_key_claims_have_no_subject() {
        let c = JwtClaims::api_key(Role::Anon, 100, 10);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["role"], "anon");
        assert_eq!(v["exp"], 110);
        assert!(v.get("sub").is_none());
    }

    #[test]
    fn rejects_a_role_claim_outside_the_allowed_roles() {
        let raw = r#"{"role":"postgres","iat":1,"exp":2}"#;
        assert!(serde_json::from_str::<JwtClaims>(raw).is_err());
    }
}
