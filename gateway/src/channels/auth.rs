//! Who joins a channel, and what a private channel lets them do: RLS policies on
//! `realtime.messages` decide, exactly as Supabase Realtime Authorization — reads by
//! probe rows the subscriber must be able to SELECT, writes by an INSERT the
//! subscriber's policies must accept; both in a transaction that is rolled back.

use std::sync::Arc;

use serde_json::Value;

use super::subscription::Who;
use crate::db::caller::SETUP;
use crate::http::caller::{Caller, CallerError};
use crate::AppState;

/// A verified subscriber.
pub struct Viewer {
    pub caller: Caller,
    pub who: Arc<Who>,
    /// `exp` of the token (seconds since the epoch).
    pub exp: Option<i64>,
}

/// Verifies a token as the REST API does (same secret, claims and roles).
pub fn viewer(token: &str, cfg: &crate::config::Config) -> Result<Viewer, String> {
    let caller = Caller::from_token(token, cfg).map_err(|e| match e {
        CallerError::Expired => {
            let ago = expired_ago(token).map(|s| format!(" {s} seconds ago")).unwrap_or_default();
            format!("InvalidJWTToken: Token has expired{ago}")
        }
        CallerError::Invalid(m) => format!("MalformedJWT: {m}"),
        other => format!("InvalidJWTToken: {other}"),
    })?;
    let exp = caller.claims.get("exp").and_then(Value::as_f64).map(|e| e as i64);
    let who = Arc::new(Who { role: caller.pg_role.clone(), claims: caller.claims.text().to_owned() });
    Ok(Viewer { caller, who, exp })
}

/// Seconds since an (unverified) token expired, for the error text only.
fn expired_ago(token: &str) -> Option<i64> {
    use base64::Engine;
    let body = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body.trim_end_matches('=')).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    Some(crate::keys::now() - v["exp"].as_f64()? as i64)
}

async fn as_viewer(tx: &deadpool_postgres::Transaction<'_>, who: &Who, topic: &str, read_only: bool) -> Result<(), tokio_postgres::Error> {
    let none: Option<String> = None;
    tx.query(SETUP, &[&who.role, &who.claims, &"GET", &"/realtime/v1/websocket", &"{}", &read_only, &none, &none, &"{}"]).await?;
    tx.execute("SELECT set_config('realtime.topic', $1, true)", &[&topic]).await?;
    Ok(())
}

fn dberr(e: tokio_postgres::Error) -> String {
    e.as_db_error().map(|d| format!("{}: {}", d.code().code(), d.message())).unwrap_or_else(|| e.to_string())
}

/// Read policies of a private topic: (broadcast, presence).
pub async fn read_policies(st: &AppState, who: &Who, topic: &str) -> Result<(bool, bool), String> {
    {
        let mut c = st.pool.get().await.map_err(|e| e.to_string())?;
        let tx = c.transaction().await.map_err(|e| e.to_string())?;
        let ids: Vec<uuid::Uuid> = vec![uuid::Uuid::new_v4(), uuid::Uuid::new_v4()];
        let exts = vec!["broadcast".to_owned(), "presence".to_owned()];
        tx.execute("SELECT realtime._probe($1, $2, $3)", &[&ids, &topic, &exts]).await.map_err(dberr)?;
        as_viewer(&tx, who, topic, true).await.map_err(dberr)?;
        let rows = tx.query("SELECT extension FROM realtime.messages WHERE id = ANY ($1)", &[&ids]).await;
        let _ = tx.rollback().await;
        let rows = match rows {
            Ok(r) => r,
            // No SELECT privilege at all: nothing is readable.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => return Ok((false, false)),
            Err(e) => return Err(dberr(e)),
        };
        let has = |x: &str| rows.iter().any(|r| r.get::<_, String>(0) == x);
        Ok((has("broadcast"), has("presence")))
    }
}

/// Whether the write policies of a private topic accept `extension` (broadcast or
/// presence) from this viewer.
pub async fn may_write(st: &AppState, who: &Who, topic: &str, extension: &str) -> bool {
    let run = async {
        let mut c = st.pool.get().await.map_err(|e| e.to_string())?;
        let tx = c.transaction().await.map_err(dberr)?;
        as_viewer(&tx, who, topic, false).await.map_err(dberr)?;
        let r = tx.execute("INSERT INTO realtime.messages (topic, extension, private) VALUES ($1, $2, true)", &[&topic, &extension]).await;
        let _ = tx.rollback().await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => Ok(false),
            Err(e) => Err(dberr(e)),
        }
    };
    match run.await {
        Ok(ok) => ok,
        Err(e) => {
            tracing::warn!(error = %e, topic, "private channel write check failed");
            false
        }
    }
}
