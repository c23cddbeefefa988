//! Changing the address of an account (`PUT /user {"email"}`), GoTrue's "secure
//! e-mail change" in every configuration: the new address is only recorded as
//! pending (`new_email`, `email_change_sent_at` in the user object) and a link goes
//! to the new address and one to the current one; the change applies when both have
//! been followed (see `one_time::apply`). An account without an address (anonymous)
//! confirms from the new address alone.

use axum::http::StatusCode;
use deadpool_postgres::Transaction;
use uuid::Uuid;

use super::email::{send_fields, url_with};
use crate::auth::error::{AuthError, AuthResult};
use crate::auth::mailer::{Fields, Kind};
use crate::auth::one_time::{self, TokenType};
use crate::auth::store;
use crate::error::code::auth as code;
use crate::AppState;

/// A recorded change whose e-mails are still to be sent (after commit).
pub struct Pending {
    new_email: String,
    current: Option<String>,
    to_new: one_time::Issued,
    to_current: Option<one_time::Issued>,
}

/// Inside the caller's transaction: checks that the address is free, that mail can
/// go out and that EMAIL_MIN_INTERVAL has passed, records the pending change and
/// issues both tokens.
pub async fn prepare(s: &AppState, tx: &Transaction<'_>, user: Uuid, current: Option<&str>, new_email: &str) -> AuthResult<Pending> {
    if store::find_by_email(tx, new_email).await?.is_some_and(|(other, _, _)| other != user) {
        return Err(AuthError::new(StatusCode::CONFLICT, code::EMAIL_EXISTS, "email already registered"));
    }
    if !s.mailer.enabled() {
        return Err(AuthError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code::EMAIL_SEND_FAILED,
            "no e-mail can be sent (SMTP_HOST is not set), so a change of address cannot be confirmed",
        ));
    }
    // Serializes concurrent requests of one account.
    tx.execute("SELECT 1 FROM auth.users WHERE id = $1 FOR UPDATE", &[&user]).await?;
    if let Some(since) = one_time::seconds_since_last(tx, user, TokenType::EmailChange).await? {
        let min = s.config.email_min_interval_secs as f64;
        if since < min {
            let wait = (min - since).ceil() as u64;
            return Err(AuthError {
                retry_after: Some(wait.max(1)),
                ..AuthError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    code::OVER_EMAIL_SEND_RATE_LIMIT,
                    format!("For security purposes, you can only request this after {} seconds.", wait.max(1)),
                )
            });
        }
    }
    one_time::request_email_change(tx, user, new_email).await?;
    let ttl = s.config.mailer_otp_exp_secs;
    let to_new = one_time::issue(tx, user, TokenType::EmailChange, new_email, ttl, None).await?;
    let to_current = match current {
        Some(_) => Some(one_time::issue(tx, user, TokenType::EmailChangeCurrent, new_email, ttl, None).await?),
        None => None,
    };
    Ok(Pending { new_email: new_email.to_owned(), current: current.map(str::to_owned), to_new, to_current })
}

/// After commit: sends the links (or, in `pgstack dev` without SMTP, logs them).
/// 503 when an e-mail could not be sent (the change stays pending, unconfirmable).
pub async fn send_links(s: &AppState, p: Pending) -> AuthResult<()> {
    let target = super::email::redirect_target(&s.config, None);
    let link = |t: &one_time::Issued| url_with(&s.config.api_external_url, "/verify", &[("token", &t.token), ("type", "email_change"), ("redirect_to", &target)]);
    // {{ .Email }} is the current address, {{ .NewEmail }} the new one (GoTrue's).
    let email = p.current.as_deref().unwrap_or(&p.new_email);
    let mut to: Vec<(&str, &one_time::Issued)> = vec![(&p.new_email, &p.to_new)];
    if let (Some(cur), Some(t)) = (&p.current, &p.to_current) {
        to.push((cur, t));
    }
    let mut ok = true;
    for (addr, t) in to {
        let url = link(t);
        let f = Fields { url: &url, token: &t.token, code: None, email, new_email: Some(&p.new_email) };
        ok &= send_fields(s, Kind::EmailChange, addr, &f).await;
    }
    if ok {
        Ok(())
    } else {
        Err(AuthError::new(StatusCode::SERVICE_UNAVAILABLE, code::EMAIL_SEND_FAILED, "the confirmation e-mail could not be sent, try again later"))
    }
}
