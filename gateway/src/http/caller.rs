//! Who is calling: the API key or user JWT of a request, resolved once into a role
//! and the claims Postgres will see. An extractor, never code inside handlers.
//!
//! Order (contract: "When both Authorization and apikey headers are present, the JWT
//! is validated first"): `Authorization: Bearer`, then the `apikey` header, then
//! `?apikey=` / `?token=` where a route allows query tokens (WebSocket). A bearer equal
//! to ANON_KEY / SERVICE_ROLE_KEY is recognised by constant-time comparison before it
//! is verified as a JWT.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use pgstack_shared::{JwtClaims, Role};
use serde_json::Value;

use crate::config::Config;
use crate::keys;
use crate::AppState;

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// The project's anon key (or any valid token with role anon).
    Anon,
    /// The project's service key (or any valid token with role service_role).
    Service,
    /// A user's access token.
    User,
}

/// The resolved caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The Postgres role the request runs as.
    pub role: Role,
    /// The verified claims, handed to Postgres as `request.jwt.claims`.
    pub claims: Value,
    /// Which kind of credential it was.
    pub kind: KeyKind,
    /// The raw token, for routes that act on "this session".
    pub token: String,
}

/// Why a credential was refused (always a 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallerError {
    /// No apikey and no Authorization header.
    #[error("no API key found in request")]
    Missing,
    /// A token that is not a valid JWT for this project.
    #[error("invalid JWT: {0}")]
    Invalid(String),
    /// A valid JWT past its expiry.
    #[error("JWT expired")]
    Expired,
}

impl CallerError {
    /// Stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            CallerError::Missing => "no_authorization",
            CallerError::Invalid(_) => "bad_jwt",
            CallerError::Expired => "bad_jwt",
        }
    }
}

impl Caller {
    /// Resolves the caller from headers (and an optional query token). `Ok(None)`
    /// when the request carries no credential at all.
    pub fn resolve(headers: &HeaderMap, query_token: Option<&str>, cfg: &Config) -> Result<Option<Caller>, CallerError> {
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty());
        let apikey = headers.get("apikey").and_then(|v| v.to_str().ok()).map(str::trim).filter(|t| !t.is_empty());
        let Some(token) = bearer.or(apikey).or(query_token.filter(|t| !t.is_empty())) else {
            return Ok(None);
        };
        Self::from_token(token, cfg).map(Some)
    }

    /// Resolves one token.
    pub fn from_token(token: &str, cfg: &Config) -> Result<Caller, CallerError> {
        let claims = match keys::verify(token, &cfg.jwt_secret) {
            Ok(c) => c,
            Err(e) => {
                return Err(match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => CallerError::Expired,
                    _ => CallerError::Invalid(e.to_string()),
                })
            }
        };
        // Project keys are recognised by value as well (constant time), so a key
        // configured explicitly keeps its meaning even if its claims are unusual.
        let is = |k: &Option<crate::config::Secret>| k.as_ref().is_some_and(|k| keys::constant_time_eq(k.expose(), token));
        let kind = if is(&cfg.service_role_key) || (claims.role == Role::ServiceRole && claims.sub.is_none()) {
            KeyKind::Service
        } else if is(&cfg.anon_key) || (claims.role == Role::Anon && claims.sub.is_none()) {
            KeyKind::Anon
        } else {
            KeyKind::User
        };
        Ok(Caller { role: claims.role, claims: claims_json(&claims), kind, token: token.to_owned() })
    }

    /// The user id (claim `sub`), for user tokens.
    pub fn user_id(&self) -> Option<&str> {
        self.claims.get("sub").and_then(Value::as_str)
    }

    /// The session id claim of a user token.
    pub fn session_id(&self) -> Option<&str> {
        self.claims.get("session_id").and_then(Value::as_str)
    }
}

fn claims_json(c: &JwtClaims) -> Value {
    serde_json::to_value(c).unwrap_or(Value::Null)
}

/// Extractor: a caller is required (401 otherwise).
impl FromRequestParts<AppState> for Caller {
    type Rejection = CallerError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Caller::resolve(&parts.headers, None, &state.config)?.ok_or(CallerError::Missing)
    }
}

/// Extractor: a caller if the request carries a credential. An invalid one is still
/// refused; routes open to everyone use this.
#[derive(Debug, Clone)]
pub struct MaybeCaller(pub Option<Caller>);

impl FromRequestParts<AppState> for MaybeCaller {
    type Rejection = CallerError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Caller::resolve(&parts.headers, None, &state.config).map(MaybeCaller)
    }
}

impl axum::response::IntoResponse for CallerError {
    fn into_response(self) -> axum::response::Response {
        let msg = self.to_string();
        let mut res = (
            axum::http::StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({
                "error": msg, "message": msg, "msg": msg, "code": self.code(), "error_code": self.code(),
            })),
        )
            .into_response();
        res.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, Source};
    use axum::http::HeaderValue;

    fn cfg() -> Config {
        let secret = "caller-test-secret-0123456789-abcdefghijklmn";
        let s = Secret::new(secret);
        let map = [
            ("DATABASE_URL", "postgres://a@127.0.0.1/db".to_owned()),
            ("JWT_SECRET", secret.to_owned()),
            ("ANON_KEY", keys::mint(Role::Anon, &s).unwrap()),
            ("SERVICE_ROLE_KEY", keys::mint(Role::ServiceRole, &s).unwrap()),
        ];
        Config::load(&Source::from_map(map.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())).unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn resolves_project_keys_and_prefers_the_bearer() {
        let c = cfg();
        let anon = c.anon_key.clone().unwrap();
        let service = c.service_role_key.clone().unwrap();
        let got = Caller::resolve(&headers(&[("apikey", anon.expose())]), None, &c).unwrap().unwrap();
        assert_eq!((got.role, got.kind), (Role::Anon, KeyKind::Anon));
        let bearer = format!("Bearer {}", service.expose());
        let got = Caller::resolve(&headers(&[("apikey", anon.expose()), ("authorization", &bearer)]), None, &c)
            .unwrap()
            .unwrap();
        assert_eq!((got.role, got.kind), (Role::ServiceRole, KeyKind::Service));
    }

    #[test]
    fn user_tokens_carry_their_claims() {
        let c = cfg();
        let mut claims = JwtClaims::api_key(Role::Authenticated, keys::now(), 60);
        claims.sub = Some("2b1c7a52-0f1e-4a8e-9d55-1f0e6a4b9c10".into());
        claims.extra.insert("email".into(), "a@b.c".into());
        let t = keys::sign(&claims, &c.jwt_secret).unwrap();
        let got = Caller::resolve(&headers(&[("authorization", &format!("bearer {t}"))]), None, &c).unwrap().unwrap();
        assert_eq!(got.kind, KeyKind::User);
        assert_eq!(got.user_id(), claims.sub.as_deref());
        assert_eq!(got.claims["email"], "a@b.c");
    }

    #[test]
    fn refuses_bad_and_expired_tokens_and_reports_missing_ones() {
        let c = cfg();
        assert_eq!(Caller::resolve(&HeaderMap::new(), None, &c).unwrap().map(|c| c.role), None);
        let e = Caller::resolve(&headers(&[("apikey", "garbage")]), None, &c).unwrap_err();
        assert!(matches!(e, CallerError::Invalid(_)));
        let old = keys::sign(&JwtClaims::api_key(Role::Anon, keys::now() - 7200, 60), &c.jwt_secret).unwrap();
        assert_eq!(Caller::resolve(&headers(&[("apikey", &old)]), None, &c).unwrap_err(), CallerError::Expired);
        let other = keys::mint(Role::ServiceRole, &Secret::new("some-other-secret-0123456789-abcdefghij")).unwrap();
        assert!(Caller::resolve(&headers(&[("apikey", &other)]), None, &c).is_err());
    }
}
