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
use pgstack_shared::Role;
use serde_json::Value;
use std::sync::Arc;

use crate::config::Config;
use crate::error::code::pgrst;
use crate::keys;
pub use crate::keys::Claims;
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
    /// The class of the role (anon, authenticated, service): decides 401 vs 403 and
    /// which routes it may use.
    pub role: Role,
    /// The Postgres role the request runs as: the three built-in roles, DB_ANON_ROLE,
    /// or any other role a token's `role` claim names (PostgREST-style), which
    /// Postgres itself refuses unless the login role is a member of it.
    pub pg_role: String,
    /// The verified claims, handed to Postgres as `request.jwt.claims` (shared with
    /// every request of the same token).
    pub claims: Arc<Claims>,
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
    /// A token that is not a valid JWT for this project (PGRST301).
    #[error("{0}")]
    Invalid(String),
    /// A JWT the project's key does not verify, with PostgREST's details (PGRST301):
    /// a wrong signature or key type, or an unsecured (`alg: none`) token.
    #[error("{message}")]
    Refused { message: &'static str, details: &'static str },
    /// `Authorization: Bearer` with nothing after it.
    #[error("Empty JWT is sent in Authorization header")]
    Empty,
    /// A valid JWT past its expiry.
    #[error("JWT expired")]
    Expired,
    /// A signed token whose claims cannot be used (PGRST303: `exp` not a number, not
    /// yet valid, wrong audience, a reserved role).
    #[error("{0}")]
    BadClaims(String),
}

impl CallerError {
    /// Stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            CallerError::Missing => crate::error::code::auth::NO_AUTHORIZATION,
            CallerError::Invalid(_) | CallerError::Refused { .. } | CallerError::Empty | CallerError::Expired | CallerError::BadClaims(_) => crate::error::code::auth::BAD_JWT,
        }
    }
}

impl Caller {
    /// Resolves the caller from headers (and an optional query token). `Ok(None)`
    /// when the request carries no credential at all.
    pub fn resolve(headers: &HeaderMap, query_token: Option<&str>, cfg: &Config) -> Result<Option<Caller>, CallerError> {
        // A credential that is present but unreadable is refused, never skipped: an
        // `Authorization: Basic ...` or a token with bytes outside visible ASCII must
        // not fall back to the apikey (or to the anonymous role).
        let bearer = match headers.get(axum::http::header::AUTHORIZATION) {
            None => None,
            Some(v) => {
                let v = v.to_str().map_err(|_| CallerError::Invalid("the Authorization header is not visible ASCII".into()))?.trim();
                if v.eq_ignore_ascii_case("bearer") {
                    return Err(CallerError::Empty);
                }
                let (scheme, rest) = v.split_once(' ').ok_or_else(|| CallerError::Invalid("the Authorization header must be `Bearer <token>`".into()))?;
                if !scheme.eq_ignore_ascii_case("bearer") {
                    return Err(CallerError::Invalid("the Authorization header must be `Bearer <token>`".into()));
                }
                let t = rest.trim();
                if t.is_empty() {
                    return Err(CallerError::Empty);
                }
                Some(t)
            }
        };
        let apikey = match headers.get("apikey") {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| CallerError::Invalid("the apikey header is not visible ASCII".into()))?.trim()).filter(|t| !t.is_empty()),
        };
        let Some(token) = bearer.or(apikey).or(query_token.filter(|t| !t.is_empty())) else {
            return Ok(None);
        };
        Self::from_token(token, cfg).map(Some)
    }

    /// A caller with a built-in role and no token (internal requests).
    pub fn builtin(role: Role) -> Caller {
        let kind = match role {
            Role::Anon => KeyKind::Anon,
            Role::ServiceRole => KeyKind::Service,
            Role::Authenticated => KeyKind::User,
        };
        Caller { role, pg_role: role.as_str().to_owned(), claims: Claims::new(serde_json::json!({"role": role.as_str()})), kind, token: String::new() }
    }

    /// The caller of a request without any credential when DB_ANON_ROLE is set
    /// (PostgREST's db-anon-role): that role, with claims `{"role": <it>}`.
    pub fn anonymous(cfg: &Config) -> Option<Caller> {
        let r = cfg.db_anon_role.as_ref()?;
        Some(Caller { role: Role::Anon, pg_role: r.clone(), claims: Claims::new(serde_json::json!({"role": r})), kind: KeyKind::Anon, token: String::new() })
    }

    /// Resolves one token: an HS256 JWT signed with JWT_SECRET, its claims checked as
    /// PostgREST checks them ([`check_claims`]); the role claim may be missing (then
    /// the anonymous role), a built-in role, or another role name.
    pub fn from_token(token: &str, cfg: &Config) -> Result<Caller, CallerError> {
        let parts = token.split('.').count();
        if parts != 3 {
            return Err(CallerError::Invalid(format!("Expected 3 parts in JWT; got {parts}")));
        }
        let verified = keys::verify_cached(token, &cfg.jwt_secret).map_err(|e| decode_error(token, &e))?;
        let Value::Object(map) = verified.value() else { return Err(CallerError::BadClaims("Parsing claims failed".into())) };
        // A storage signed-URL token (same secret) grants one object, nothing else.
        if map.contains_key("url") {
            return Err(CallerError::BadClaims("a signed-URL token is not an API credential".into()));
        }
        check_claims(map, keys::now(), cfg)?;
        let anon_name = cfg.db_anon_role.as_deref().unwrap_or("anon");
        let pg_role = match map.get("role") {
            None | Some(Value::Null) => anon_name.to_owned(),
            Some(Value::String(r)) => r.clone(),
            Some(_) => return Err(CallerError::BadClaims("The JWT 'role' claim must be a string".into())),
        };
        let role = match pg_role.as_str() {
            "service_role" => Role::ServiceRole,
            r if r == anon_name || r == "anon" => Role::Anon,
            "authenticated" => Role::Authenticated,
            other => {
                check_role_name(other, cfg)?;
                Role::Authenticated
            }
        };
        // PostgREST hands the role to Postgres inside the claims as well.
        let claims = if map.get("role").is_none_or(Value::is_null) {
            let mut map = map.clone();
            map.insert("role".into(), Value::String(pg_role.clone()));
            Claims::new(Value::Object(map))
        } else {
            verified.clone()
        };
        let has_sub = map.get("sub").is_some_and(|s| !s.is_null());
        // Project keys are recognised by value as well (constant time), so a key
        // configured explicitly keeps its meaning even if its claims are unusual.
        let is = |k: &Option<crate::config::Secret>| k.as_ref().is_some_and(|k| keys::constant_time_eq(k.expose(), token));
        let kind = if is(&cfg.service_role_key) || (role == Role::ServiceRole && !has_sub) {
            KeyKind::Service
        } else if is(&cfg.anon_key) || (role == Role::Anon && !has_sub) {
            KeyKind::Anon
        } else {
            KeyKind::User
        };
        Ok(Caller { role, pg_role, claims, kind, token: token.to_owned() })
    }

    /// Who the caller's statements run as (its role and claims).
    pub fn run_as(&self) -> crate::db::caller::RunAs<'_> {
        crate::db::caller::RunAs { role: &self.pg_role, claims: self.claims.text() }
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

/// Seconds of clock skew allowed on `exp`, `nbf` and `iat` (PostgREST's).
pub const CLOCK_SKEW_SECS: i64 = 30;

/// The claims PostgREST checks, in its order, the first failure winning: `exp` (in
/// the past beyond the skew: "JWT expired"), `nbf` and `iat` (in the future beyond
/// the skew), `aud` (a string or an array of strings; with JWT_AUD set, it must
/// name it — an empty array passes, as in PostgREST). Each must have its type.
pub fn check_claims(map: &serde_json::Map<String, Value>, now: i64, cfg: &Config) -> Result<(), CallerError> {
    let claim = |k: &str| map.get(k).filter(|v| !v.is_null());
    let number = |k: &str| -> Result<Option<i64>, CallerError> {
        match claim(k) {
            None => Ok(None),
            // Fractions count as their whole seconds, beyond i64 as the bound.
            Some(Value::Number(n)) => Ok(Some(n.as_i64().unwrap_or_else(|| n.as_f64().map(|f| f as i64).unwrap_or(0)))),
            Some(_) => Err(CallerError::BadClaims(format!("The JWT '{k}' claim must be a number"))),
        }
    };
    match number("exp")? {
        None if cfg.jwt_require_exp => return Err(CallerError::BadClaims("The JWT has no 'exp' claim".into())),
        Some(exp) if now - CLOCK_SKEW_SECS > exp => return Err(CallerError::Expired),
        _ => {}
    }
    if number("nbf")?.is_some_and(|nbf| now + CLOCK_SKEW_SECS < nbf) {
        return Err(CallerError::BadClaims("JWT not yet valid".into()));
    }
    if number("iat")?.is_some_and(|iat| now + CLOCK_SKEW_SECS < iat) {
        return Err(CallerError::BadClaims("JWT issued at future".into()));
    }
    let matches = |a: &str| cfg.jwt_aud.as_deref().is_none_or(|want| want == a);
    let audience_ok = match claim("aud") {
        None => true,
        Some(Value::String(a)) => matches(a),
        Some(Value::Array(items)) => {
            let auds: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            let Some(auds) = auds else { return Err(CallerError::BadClaims("The JWT 'aud' claim must be a string or an array of strings".into())) };
            auds.is_empty() || auds.iter().any(|a| matches(a))
        }
        Some(_) => return Err(CallerError::BadClaims("The JWT 'aud' claim must be a string or an array of strings".into())),
    };
    if !audience_ok {
        return Err(CallerError::BadClaims("JWT not in audience".into()));
    }
    Ok(())
}

/// PostgREST's PGRST301 messages for a token that cannot be decoded or verified:
/// an unsecured token (`alg: none`) and a signature or algorithm the project's key
/// does not verify carry PostgREST's details; anything undecodable is a failed
/// cryptographic operation.
fn decode_error(token: &str, e: &jsonwebtoken::errors::Error) -> CallerError {
    use jsonwebtoken::errors::ErrorKind;
    let alg = header_alg(token);
    if alg.as_deref().is_some_and(|a| a.eq_ignore_ascii_case("none")) {
        return CallerError::Refused { message: "Wrong or unsupported encoding algorithm", details: "JWT is unsecured but expected 'alg' was not 'none'" };
    }
    const KNOWN: [&str; 12] = ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "PS384", "PS512", "EdDSA"];
    if alg.as_deref().is_some_and(|a| !KNOWN.contains(&a)) {
        return CallerError::Invalid("Wrong or unsupported encoding algorithm".into());
    }
    match e.kind() {
        ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::InvalidKeyFormat => {
            CallerError::Refused { message: "No suitable key or wrong key type", details: "None of the keys was able to decode the JWT" }
        }
        ErrorKind::Json(_) if alg.is_some() => CallerError::BadClaims("Parsing claims failed".into()),
        _ => CallerError::Invalid("JWT cryptographic operation failed".into()),
    }
}

/// The `alg` of a token's header, when the header is base64url JSON (at most 1 KiB).
fn header_alg(token: &str) -> Option<String> {
    use base64::Engine;
    let head = token.split('.').next().filter(|h| h.len() <= 1024)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head.trim_end_matches('=')).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("alg")?.as_str().map(str::to_owned)
}

/// Roles a token may never name, whatever the login role is a member of: the
/// gateway's internal roles, Postgres's predefined roles, the login role itself.
fn check_role_name(role: &str, cfg: &Config) -> Result<(), CallerError> {
    // `none` is not a role: `set_config('role', 'none')` resets to the login role.
    // The other keywords name no role a request may take either.
    let keyword = ["none", "public", "current_user", "current_role", "session_user", "default", "all"].iter().any(|k| role.eq_ignore_ascii_case(k));
    let lower = role.to_ascii_lowercase();
    let reserved = keyword
        || lower.starts_with("pgstack_")
        || lower.starts_with("pg_")
        || lower == "postgres"
        || lower == "authenticator"
        || Some(role) == cfg.login_role.as_deref()
        || role.chars().any(|c| c.is_control());
    if reserved || role.is_empty() || role.len() > 63 {
        return Err(CallerError::BadClaims(format!("role {role:?} cannot be used by a request")));
    }
    Ok(())
}

/// Extractor: a caller is required (401 otherwise), unless DB_ANON_ROLE makes
/// requests without a credential run as that role.
impl FromRequestParts<AppState> for Caller {
    type Rejection = CallerError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match Caller::resolve(&parts.headers, None, &state.config)? {
            Some(c) => Ok(c),
            None => Caller::anonymous(&state.config).ok_or(CallerError::Missing),
        }
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

// A refused credential in each product's dialect.

impl From<CallerError> for crate::error::gotrue::AuthError {
    fn from(e: CallerError) -> Self {
        Self::new(axum::http::StatusCode::UNAUTHORIZED, e.code(), e.to_string())
    }
}

impl From<CallerError> for crate::error::postgrest::RestError {
    fn from(e: CallerError) -> Self {
        let code = match e {
            CallerError::Expired | CallerError::BadClaims(_) => pgrst::JWT_CLAIMS,
            CallerError::Invalid(_) | CallerError::Refused { .. } | CallerError::Empty => pgrst::JWT_INVALID,
            CallerError::Missing => pgrst::JWT_MISSING,
        };
        match e {
            CallerError::Refused { message, details } => Self::new(code, message, Some(details.to_owned()), None),
            e => Self::of(code, e.to_string()),
        }
    }
}

impl axum::response::IntoResponse for CallerError {
    fn into_response(self) -> axum::response::Response {
        let (status, msg) = (axum::http::StatusCode::UNAUTHORIZED, self.to_string());
        let body = crate::error::Dialect::GoTrue.body(status, self.code(), &msg, serde_json::Value::Null, serde_json::Value::Null);
        let mut res = (status, axum::Json(body)).into_response();
        res.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, Source};
    use axum::http::HeaderValue;
    use pgstack_shared::JwtClaims;

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
        let got = Caller::resolve(&headers(&[("apikey", anon.expose()), ("authorization", &bearer)]), None, &c).unwrap().unwrap();
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

    #[test]
    fn postgrest_style_tokens_name_any_role_but_reserved_ones() {
        let mut c = cfg();
        let sign = |v: Value| jsonwebtoken::encode(&jsonwebtoken::Header::default(), &v, &jsonwebtoken::EncodingKey::from_secret(c.jwt_secret.expose().as_bytes())).unwrap();
        let e = Caller::from_token(&sign(serde_json::json!({"role": "anon"})), &c).unwrap_err();
        assert_eq!(e, CallerError::BadClaims("The JWT has no 'exp' claim".into()), "tokens without exp are refused by default");
        c.jwt_require_exp = false;
        let sign = |v: Value| jsonwebtoken::encode(&jsonwebtoken::Header::default(), &v, &jsonwebtoken::EncodingKey::from_secret(c.jwt_secret.expose().as_bytes())).unwrap();
        let got = Caller::from_token(&sign(serde_json::json!({"role": "postgrest_test_author", "id": "jdoe"})), &c).unwrap();
        assert_eq!((got.pg_role.as_str(), got.role, got.kind), ("postgrest_test_author", Role::Authenticated, KeyKind::User));
        let got = Caller::from_token(&sign(serde_json::json!({"id": 1})), &c).unwrap();
        assert_eq!((got.pg_role.as_str(), got.role), ("anon", Role::Anon), "no role claim = the anonymous role");
        for reserved in ["pgstack_auth_admin", "pg_read_all_data", "postgres", "a"] {
            let e = Caller::from_token(&sign(serde_json::json!({"role": reserved})), &c).unwrap_err();
            assert!(matches!(e, CallerError::BadClaims(_)), "{reserved}: {e:?}");
        }
        let e = Caller::from_token(&sign(serde_json::json!({"role": "anon", "exp": "soon"})), &c).unwrap_err();
        assert_eq!(e, CallerError::BadClaims("The JWT 'exp' claim must be a number".into()));
        let e = Caller::from_token(&sign(serde_json::json!({"role": "anon", "exp": 1446678149})), &c).unwrap_err();
        assert_eq!(e, CallerError::Expired);
        assert!(Caller::anonymous(&c).is_none(), "without DB_ANON_ROLE a request needs a key");
    }

    #[test]
    fn claims_are_checked_as_postgrest_checks_them() {
        let mut c = cfg();
        c.jwt_require_exp = false;
        let sign = |v: Value| jsonwebtoken::encode(&jsonwebtoken::Header::default(), &v, &jsonwebtoken::EncodingKey::from_secret(c.jwt_secret.expose().as_bytes())).unwrap();
        let msg = |e: CallerError| e.to_string();
        let now = keys::now();
        // Structure and signature: PGRST301.
        assert_eq!(msg(Caller::from_token("a.b", &c).unwrap_err()), "Expected 3 parts in JWT; got 2");
        assert_eq!(msg(Caller::from_token("a.b.c.d", &c).unwrap_err()), "Expected 3 parts in JWT; got 4");
        let t = sign(serde_json::json!({"role": "anon"}));
        let wrong_key =
            jsonwebtoken::encode(&jsonwebtoken::Header::default(), &serde_json::json!({"role": "anon"}), &jsonwebtoken::EncodingKey::from_secret(b"wrong secret")).unwrap();
        let no_key = CallerError::Refused { message: "No suitable key or wrong key type", details: "None of the keys was able to decode the JWT" };
        assert_eq!(Caller::from_token(&wrong_key, &c).unwrap_err(), no_key);
        let (_, rest) = t.split_once('.').unwrap();
        let unsecured = format!("eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.{rest}");
        let alg_none = CallerError::Refused { message: "Wrong or unsupported encoding algorithm", details: "JWT is unsecured but expected 'alg' was not 'none'" };
        assert_eq!(Caller::from_token(&unsecured, &c).unwrap_err(), alg_none);
        assert_eq!(Caller::from_token("quifquirndsjagnrgniur.fonvoienqhhdj.iuqvnvhojah", &c).unwrap_err(), CallerError::Invalid("JWT cryptographic operation failed".into()));
        // {"alg":"hs256"}: not an algorithm name.
        assert_eq!(Caller::from_token(&format!("eyJhbGciOiJoczI1NiJ9.{rest}"), &c).unwrap_err(), CallerError::Invalid("Wrong or unsupported encoding algorithm".into()));
        let hs512 = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
            &serde_json::json!({"role": "anon"}),
            &jsonwebtoken::EncodingKey::from_secret(c.jwt_secret.expose().as_bytes()),
        )
        .unwrap();
        assert!(Caller::from_token(&hs512, &c).is_ok(), "any HMAC algorithm verifies with the project's key");
        // Times, with 30 s of skew either way.
        assert!(Caller::from_token(&sign(serde_json::json!({"exp": now - 10})), &c).is_ok(), "expired within the skew");
        assert_eq!(Caller::from_token(&sign(serde_json::json!({"exp": now - 31})), &c).unwrap_err(), CallerError::Expired);
        assert_eq!(msg(Caller::from_token(&sign(serde_json::json!({"nbf": now + 60})), &c).unwrap_err()), "JWT not yet valid");
        assert!(Caller::from_token(&sign(serde_json::json!({"nbf": now + 10})), &c).is_ok());
        assert_eq!(msg(Caller::from_token(&sign(serde_json::json!({"iat": now + 60})), &c).unwrap_err()), "JWT issued at future");
        assert_eq!(msg(Caller::from_token(&sign(serde_json::json!({"nbf": "x"})), &c).unwrap_err()), "The JWT 'nbf' claim must be a number");
        assert_eq!(msg(Caller::from_token(&sign(serde_json::json!({"iat": true})), &c).unwrap_err()), "The JWT 'iat' claim must be a number");
        // exp is checked first.
        assert_eq!(Caller::from_token(&sign(serde_json::json!({"exp": 1, "nbf": "x"})), &c).unwrap_err(), CallerError::Expired);
        // Audience: any without JWT_AUD, but always a string or an array of strings.
        assert!(Caller::from_token(&sign(serde_json::json!({"aud": "whatever"})), &c).is_ok());
        let bad_aud = "The JWT 'aud' claim must be a string or an array of strings";
        assert_eq!(msg(Caller::from_token(&sign(serde_json::json!({"aud": 1})), &c).unwrap_err()), bad_aud);
        assert_eq!(msg(Caller::from_token(&sign(serde_json::json!({"aud": ["a", 1]})), &c).unwrap_err()), bad_aud);
        c.jwt_aud = Some("youraudience".into());
        let sign = |v: Value| jsonwebtoken::encode(&jsonwebtoken::Header::default(), &v, &jsonwebtoken::EncodingKey::from_secret(c.jwt_secret.expose().as_bytes())).unwrap();
        assert!(Caller::from_token(&sign(serde_json::json!({"aud": "youraudience"})), &c).is_ok());
        assert!(Caller::from_token(&sign(serde_json::json!({"aud": ["other", "youraudience"]})), &c).is_ok());
        assert!(Caller::from_token(&sign(serde_json::json!({"aud": []})), &c).is_ok(), "an empty audience passes, as in PostgREST");
        assert!(Caller::from_token(&sign(serde_json::json!({})), &c).is_ok(), "no aud claim passes");
        assert_eq!(msg(Caller::from_token(&sign(serde_json::json!({"aud": "other"})), &c).unwrap_err()), "JWT not in audience");
        assert_eq!(msg(Caller::from_token(&sign(serde_json::json!({"aud": ["a", "b"]})), &c).unwrap_err()), "JWT not in audience");
        // The role is inserted into the claims Postgres receives.
        let got = Caller::from_token(&sign(serde_json::json!({"id": 1})), &c).unwrap();
        assert_eq!(*got.claims.value(), serde_json::json!({"id": 1, "role": "anon"}));
    }
}
