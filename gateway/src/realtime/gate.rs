//! Everything checked before a WebSocket upgrade (and for GET /ws/_presence):
//! credentials, REQUIRE_AUTHENTICATED_WS, Origin, the registration and its audience.
//! Refusals are plain HTTP responses `{"error": ...}` as the contract says.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::http::caller::{Caller, KeyKind};
use crate::AppState;

/// A refusal.
pub struct Refusal(pub StatusCode, pub String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1, "message": self.1}))).into_response()
    }
}

/// Prefix of channels that need no registered query (broadcast and presence only).
pub const AD_HOC_PREFIX: &str = "_channel_";

/// What the gate let through.
pub struct Admitted {
    /// The caller.
    pub caller: Caller,
    /// True for `_channel_*` channels.
    pub ad_hoc: bool,
    /// Clients may send broadcast frames: ad-hoc channels, and live queries
    /// registered with `allow_broadcast => true` (others are server-to-client only).
    pub allow_broadcast: bool,
}

/// A live query's registration, as the gate needs it.
struct Registration {
    audience: Option<Value>,
    public: bool,
    allow_broadcast: bool,
    /// Some table the query reads has row-level security enabled (now).
    reads_rls: bool,
}

impl Registration {
    /// A non-empty audience: `{}` admits everybody, so it is no gate.
    fn gated(&self) -> bool {
        self.audience.as_ref().and_then(Value::as_object).is_some_and(|o| !o.is_empty())
    }
}

/// Runs every check for `channel`.
pub async fn admit(s: &AppState, headers: &HeaderMap, query_token: Option<&str>, channel: &str) -> Result<Admitted, Refusal> {
    let caller = Caller::resolve(headers, query_token, &s.config)
        .map_err(|e| Refusal(StatusCode::UNAUTHORIZED, e.to_string()))?
        .ok_or_else(|| Refusal(StatusCode::UNAUTHORIZED, "authentication required: pass ?apikey=, ?token= or an Authorization header".into()))?;
    if s.config.require_authenticated_ws && caller.kind == KeyKind::Anon {
        return Err(Refusal(StatusCode::UNAUTHORIZED, "this server requires a user JWT for WebSocket connections (REQUIRE_AUTHENTICATED_WS)".into()));
    }
    check_origin(s, headers)?;
    let ad_hoc = channel.starts_with(AD_HOC_PREFIX);
    let mut allow_broadcast = ad_hoc;
    if !ad_hoc {
        let reg = registration(s, channel).await?;
        if caller.kind != KeyKind::Service {
            if let Some(aud) = &reg.audience {
                if !satisfies(aud, &caller.claims) {
                    return Err(Refusal(StatusCode::FORBIDDEN, "audience not satisfied".into()));
                }
            }
            // A table got RLS after registration: the shared result would bypass it.
            if reg.reads_rls && !reg.gated() && !reg.public {
                return Err(Refusal(
                    StatusCode::FORBIDDEN,
                    "this live query reads a table with row-level security and has no audience; re-register it with an audience or public => true".into(),
                ));
            }
        }
        allow_broadcast = reg.allow_broadcast;
    }
    Ok(Admitted { caller, ad_hoc, allow_broadcast })
}

/// The registration (404 when the query id is not registered).
async fn registration(s: &AppState, query_id: &str) -> Result<Registration, Refusal> {
    let unavailable = || Refusal(StatusCode::SERVICE_UNAVAILABLE, "subscription metadata unavailable".into());
    let client = s.pool.get().await.map_err(|_| unavailable())?;
    let row = client
        .query_opt(
            "SELECT audience, public, allow_broadcast,
                    EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = ANY (tables::oid[]) AND c.relrowsecurity)
               FROM pgr.subscriptions WHERE query_id = $1",
            &[&query_id],
        )
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot read live-query registrations");
            unavailable()
        })?;
    match row {
        None => Err(Refusal(StatusCode::NOT_FOUND, format!("subscription {query_id:?} not found"))),
        Some(r) => Ok(Registration { audience: r.get(0), public: r.get(1), allow_broadcast: r.get(2), reads_rls: r.get(3) }),
    }
}

/// Browsers send Origin; it must be allowed (ALLOWED_ORIGINS, ALLOW_PERMISSIVE_CORS)
/// or the same origin as the request. Non-browser clients send none.
fn check_origin(s: &AppState, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(origin) = headers.get("origin").and_then(|v| v.to_str().ok()) else { return Ok(()) };
    if s.config.allow_permissive_cors || s.config.allowed_origins.iter().any(|o| o == origin) {
        return Ok(());
    }
    let host = headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("");
    let origin_host = origin.split("://").nth(1).unwrap_or("");
    if !host.is_empty() && origin_host == host {
        return Ok(());
    }
    Err(Refusal(StatusCode::FORBIDDEN, format!("origin {origin} is not allowed")))
}

/// Audience predicate: every key (a dotted path into the claims) must equal the
/// value, or be one of the values when an array is given.
/// `{"role": "authenticated", "app_metadata.team": ["red", "blue"]}`.
pub fn satisfies(audience: &Value, claims: &Value) -> bool {
    let Some(rules) = audience.as_object() else { return false };
    rules.iter().all(|(path, want)| {
        let got = path.split('.').try_fold(claims, |v, k| v.get(k));
        match (got, want) {
            (Some(g), Value::Array(options)) => options.contains(g),
            (Some(g), w) => g == w,
            (None, _) => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audience_predicates() {
        let claims = json!({"role": "authenticated", "app_metadata": {"team": "red", "level": 3}});
        assert!(satisfies(&json!({"role": "authenticated"}), &claims));
        assert!(satisfies(&json!({"app_metadata.team": ["blue", "red"]}), &claims));
        assert!(satisfies(&json!({"role": "authenticated", "app_metadata.level": 3}), &claims));
        assert!(!satisfies(&json!({"app_metadata.team": "blue"}), &claims));
        assert!(!satisfies(&json!({"app_metadata.missing": "x"}), &claims));
        assert!(!satisfies(&json!({"role": "authenticated"}), &json!({"role": "anon"})));
        assert!(satisfies(&json!({}), &claims));
    }

    #[test]
    fn an_empty_audience_is_no_gate() {
        let reg = |audience: Option<Value>| Registration { audience, public: false, allow_broadcast: false, reads_rls: true };
        assert!(!reg(None).gated());
        assert!(!reg(Some(json!({}))).gated());
        assert!(reg(Some(json!({"role": "authenticated"}))).gated());
    }
}
