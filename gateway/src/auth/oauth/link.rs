//! From a provider profile to an account: an identity already known signs its user
//! in; otherwise an account with the same address is linked when the provider
//! vouches for the address; otherwise a new account is made.
//!
//! Linking to an account whose address was never proven would let whoever
//! registered that address first (possibly not its owner) keep a way into the owner's
//! account. Proven means confirmed by a flow: a link or code e-mailed to the address,
//! a provider, or the service key; an address confirmed automatically at sign-up
//! (REQUIRE_EMAIL_VERIFICATION=false, `email_confirmed_by = 'auto'`) is not. So such an account is linked only after its password is cleared, its
//! sessions ended and its other identities removed: the provider has just proved who
//! owns the address. And an address a provider does not vouch for never becomes an
//! account's e-mail (it stays in the identity's data), so it cannot be used to claim
//! the address's later, verified sign-ins.

use axum::http::StatusCode;
use deadpool_postgres::Transaction;
use serde_json::json;
use uuid::Uuid;

use super::client::Profile;
use crate::auth::error::{AuthError, AuthResult};
use crate::error::code::auth as code;

/// The account `profile` signs in to (created or linked as needed).
pub async fn account_for(tx: &Transaction<'_>, provider: &str, profile: &Profile) -> AuthResult<Uuid> {
    let known = tx
        .query_opt(
            "UPDATE auth.identities SET identity_data = $3, last_sign_in_at = now(), updated_at = now()
              WHERE provider = $1 AND provider_id = $2 RETURNING user_id",
            &[&provider, &profile.provider_id, &profile.data],
        )
        .await?;
    let user = match known {
        Some(row) => row.get(0),
        None => link_or_create(tx, provider, profile).await?,
    };
    let row = tx.query_one("SELECT deleted_at IS NOT NULL, coalesce(banned_until > now(), false) FROM auth.users WHERE id = $1", &[&user]).await?;
    if row.get::<_, bool>(0) {
        return Err(AuthError::user_not_found());
    }
    if row.get::<_, bool>(1) {
        return Err(AuthError::new(StatusCode::FORBIDDEN, code::USER_BANNED, "user is banned"));
    }
    Ok(user)
}

async fn link_or_create(tx: &Transaction<'_>, provider: &str, profile: &Profile) -> AuthResult<Uuid> {
    let existing = match &profile.email {
        Some(email) => tx
            .query_opt(
                "SELECT id, email_confirmed_at IS NOT NULL AND email_confirmed_by IS DISTINCT FROM 'auto' FROM auth.users
                  WHERE lower(email) = lower($1) AND deleted_at IS NULL FOR UPDATE",
                &[email],
            )
            .await?
            .map(|r| (r.get::<_, Uuid>(0), r.get::<_, bool>(1))),
        None => None,
    };
    let user = match existing {
        Some((id, proven)) => {
            if !profile.email_verified {
                return Err(AuthError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    code::EMAIL_EXISTS,
                    "an account with this email exists and the provider has not verified the address",
                ));
            }
            if !proven {
                tx.execute(
                    "WITH s AS (DELETE FROM auth.sessions WHERE user_id = $1),
                          i AS (DELETE FROM auth.identities WHERE user_id = $1 AND provider <> 'email')
                     UPDATE auth.users SET encrypted_password = NULL, email_confirmed_at = NULL, email_change = NULL,
                            raw_app_meta_data = raw_app_meta_data || jsonb_build_object('providers', jsonb_build_array('email'))
                      WHERE id = $1",
                    &[&id],
                )
                .await?;
            }
            tx.execute(
                "UPDATE auth.users SET
                     email_confirmed_by = CASE WHEN email_confirmed_at IS NULL THEN 'oauth' ELSE email_confirmed_by END,
                     email_confirmed_at = coalesce(email_confirmed_at, now()),
                     raw_app_meta_data = CASE
                         WHEN coalesce(raw_app_meta_data -> 'providers', '[]') ? $2 THEN raw_app_meta_data
                         ELSE jsonb_set(raw_app_meta_data, '{providers}',
                                        coalesce(raw_app_meta_data -> 'providers', '[]') || to_jsonb($2::text)) END,
                     updated_at = now()
                  WHERE id = $1",
                &[&id, &provider],
            )
            .await?;
            id
        }
        None => {
            let app_meta = json!({"provider": provider, "providers": [provider]});
            let email = profile.email.as_ref().filter(|_| profile.email_verified);
            tx.query_one(
                "INSERT INTO auth.users (email, role, raw_user_meta_data, raw_app_meta_data, email_confirmed_at, email_confirmed_by)
                 VALUES ($1, 'authenticated', $2, $3, CASE WHEN $4 THEN now() END, CASE WHEN $4 THEN 'oauth' END) RETURNING id",
                &[&email, &profile.data, &app_meta, &email.is_some()],
            )
            .await?
            .get(0)
        }
    };
    tx.execute(
        "INSERT INTO auth.identities (user_id, provider, provider_id, identity_data, last_sign_in_at)
         VALUES ($1, $2, $3, $4, now())",
        &[&user, &provider, &profile.provider_id, &profile.data],
    )
    .await?;
    Ok(user)
}
