//! Signed URLs: POST /object/sign/{bucket}/{path} `{expiresIn}` (the caller must be
//! able to read the object) → `{"signedURL": "/object/sign/{bucket}/{path}?token=..."}`;
//! GET on that URL serves the object with no other credential until it expires. The
//! token is an HS256 JWT over the object's key and its id, signed with JWT_SECRET: it
//! opens that one object, not whatever holds the path later (a replacement, or another
//! user's upload after a delete, has a new id → 404).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{Response, StatusCode};
use axum::Json;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::objects::serve;
use super::{paths, StorageError, StorageResult};
use crate::http::caller::{Caller, CallerError};
use crate::AppState;

#[derive(Serialize, Deserialize)]
struct UrlClaims {
    url: String,
    /// The object's id when it was signed.
    oid: Uuid,
    iat: i64,
    exp: i64,
}

#[derive(Deserialize)]
struct SignBody {
    #[serde(rename = "expiresIn")]
    expires_in: Value,
}

/// POST /storage/v1/object/sign/{bucket}/{path}.
pub async fn sign(
    State(s): State<AppState>,
    caller: Result<Caller, CallerError>,
    Path((bucket, raw)): Path<(String, String)>,
    super::JsonBody(body): super::JsonBody,
) -> StorageResult<Json<Value>> {
    let caller = caller?;
    let name = paths::check(&raw).map_err(StorageError::bad)?;
    let b: SignBody = serde_json::from_slice(&body).map_err(|_| StorageError::bad("body must be {\"expiresIn\": seconds}"))?;
    // supabase-py sends a string.
    let secs = match &b.expires_in {
        Value::Number(n) => n.as_i64(),
        Value::String(t) => t.trim().parse().ok(),
        _ => None,
    }
    .filter(|n| *n > 0 && *n <= 10 * 365 * 86400)
    .ok_or_else(|| StorageError::bad("expiresIn must be a positive number of seconds"))?;
    // Only what the caller may read can be signed (RLS, as the caller).
    let oid: Uuid = super::buckets::one(&s, &caller, "SELECT to_jsonb(id) FROM storage.objects WHERE bucket_id = $1 AND name = $2", &[&bucket, &name])
        .await?
        .and_then(|v| v.as_str()?.parse().ok())
        .ok_or_else(|| StorageError::not_found("object not found"))?;
    let now = crate::keys::now();
    let key = format!("{bucket}/{name}");
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &UrlClaims { url: key, oid, iat: now, exp: now + secs },
        &EncodingKey::from_secret(s.config.jwt_secret.expose().as_bytes()),
    )
    .map_err(|_| StorageError(StatusCode::INTERNAL_SERVER_ERROR, "cannot sign".into()))?;
    // Path segments percent-encoded (a space is %20 in a path; `+` would be a plus).
    let encoded: String = raw.split('/').map(|seg| form_urlencoded::byte_serialize(seg.as_bytes()).collect::<String>().replace('+', "%20")).collect::<Vec<_>>().join("/");
    let url = format!("/object/sign/{bucket}/{encoded}?token={token}");
    Ok(Json(json!({"signedURL": url, "signedUrl": url})))
}

#[derive(Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// GET /storage/v1/object/sign/{bucket}/{path}?token=...
pub async fn get_signed(
    State(s): State<AppState>,
    Path((bucket, raw)): Path<(String, String)>,
    Query(q): Query<TokenQuery>,
    method: axum::http::Method,
    headers: axum::http::HeaderMap,
) -> StorageResult<Response<Body>> {
    let name = paths::check(&raw).map_err(StorageError::bad)?;
    let token = q.token.ok_or_else(|| StorageError::bad("token is required"))?;
    let mut v = Validation::new(Algorithm::HS256);
    v.required_spec_claims = ["exp"].into_iter().map(String::from).collect();
    v.leeway = 0;
    let claims = jsonwebtoken::decode::<UrlClaims>(&token, &DecodingKey::from_secret(s.config.jwt_secret.expose().as_bytes()), &v)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => StorageError::bad("the signed URL has expired"),
            _ => StorageError::bad("invalid signature"),
        })?
        .claims;
    if claims.url != format!("{bucket}/{name}") {
        return Err(StorageError::bad("the token was signed for another object"));
    }
    // Served only while the path still holds the object that was signed.
    let service = Caller::builtin(pgstack_shared::Role::ServiceRole);
    serve(&s, &service, &bucket, &name, Some(claims.oid), &super::objects::Conditions::from_headers(&headers, method == axum::http::Method::HEAD)).await
}
