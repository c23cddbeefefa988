//! Every SQL statement of auth, on the extension's `auth` tables. Each call runs
//! inside a transaction opened by [`begin`] as role `pgstack_auth_admin`.

use deadpool_postgres::{Object, Transaction};
use serde_json::Value;
use uuid::Uuid;

use super::error::{AuthError, AuthResult};
use super::tokens;

/// Opens a transaction with the auth tables' role.
pub async fn begin(client: &mut Object) -> AuthResult<Transaction<'_>> {
    let tx = client.transaction().await?;
    tx.batch_execute("SET LOCAL ROLE pgstack_auth_admin").await?;
    Ok(tx)
}

/// A new account.
pub struct NewUser<'a> {
    /// Lower-cased email, if any.
    pub email: Option<&'a str>,
    /// argon2id hash, if any.
    pub password_hash: Option<&'a str>,
    /// anon / authenticated / service_role.
    pub role: &'a str,
    /// user_metadata.
    pub user_meta: &'a Value,
    /// app_metadata.
    pub app_meta: &'a Value,
    /// Email confirmed now, and how: `auto` (sign-up without verification: nothing
    /// proven), `admin` (service key), `oauth`; `None` = not confirmed.
    pub confirmed_by: Option<&'static str>,
    /// Anonymous account.
    pub is_anonymous: bool,
}

/// Inserts a user (and its email identity). `None` when the email is taken.
pub async fn create_user(tx: &Transaction<'_>, u: &NewUser<'_>) -> AuthResult<Option<Uuid>> {
    const SQL: &str = "
        WITH u AS (
            INSERT INTO auth.users (email, encrypted_password, role, raw_user_meta_data,
                                    raw_app_meta_data, email_confirmed_at, email_confirmed_by, is_anonymous)
            VALUES ($1, $2, $3, $4, $5, CASE WHEN $6::text IS NOT NULL THEN now() END, $6::text, $7)
            ON CONFLICT DO NOTHING
            RETURNING *),
        i AS (
            INSERT INTO auth.identities (user_id, provider, provider_id, identity_data)
            SELECT u.id, 'email', u.id::text,
                   jsonb_build_object('sub', u.id::text, 'email', u.email,
                                      'email_verified', u.email_confirmed_at IS NOT NULL)
              FROM u WHERE u.email IS NOT NULL)
        SELECT id FROM u";
    let row = tx.query_opt(SQL, &[&u.email, &u.password_hash, &u.role, u.user_meta, u.app_meta, &u.confirmed_by, &u.is_anonymous]).await?;
    Ok(row.map(|r| r.get(0)))
}

/// The user object of a live account.
pub async fn user_json(tx: &Transaction<'_>, id: Uuid) -> AuthResult<Option<Value>> {
    let row = tx.query_opt("SELECT auth.user_json(u) FROM auth.users u WHERE u.id = $1 AND u.deleted_at IS NULL", &[&id]).await?;
    Ok(row.map(|r| r.get(0)))
}

/// What a password sign-in needs: id, hash, banned now.
pub async fn find_by_email(tx: &Transaction<'_>, email: &str) -> AuthResult<Option<(Uuid, Option<String>, bool)>> {
    Ok(find_account(tx, email).await?.map(|a| (a.0, a.1, a.2)))
}

/// id, hash, banned now, e-mail confirmed.
pub async fn find_account(tx: &Transaction<'_>, email: &str) -> AuthResult<Option<(Uuid, Option<String>, bool, bool)>> {
    let row = tx
        .query_opt(
            "SELECT id, encrypted_password, coalesce(banned_until > now(), false), email_confirmed_at IS NOT NULL
               FROM auth.users WHERE lower(email) = lower($1) AND deleted_at IS NULL",
            &[&email],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))))
}

/// Starts a session with its first refresh token; returns (session id, refresh token).
pub async fn start_session(tx: &Transaction<'_>, user: Uuid, user_agent: Option<&str>, ip: Option<&str>) -> AuthResult<(Uuid, String)> {
    let refresh = tokens::opaque();
    const SQL: &str = "
        WITH s AS (
            INSERT INTO auth.sessions (user_id, user_agent, ip) VALUES ($1, $2, $3) RETURNING id),
        r AS (
            INSERT INTO auth.refresh_tokens (token_hash, user_id, session_id)
            SELECT $4, $1, s.id FROM s),
        u AS (
            UPDATE auth.users SET last_sign_in_at = now() WHERE id = $1)
        SELECT id FROM s";
    let row = tx.query_one(SQL, &[&user, &user_agent, &ip, &tokens::digest(&refresh)]).await?;
    Ok((row.get(0), refresh))
}

/// Whether a session still exists.
pub async fn session_exists(tx: &Transaction<'_>, session: Uuid) -> AuthResult<bool> {
    Ok(tx.query_opt("SELECT 1 FROM auth.sessions WHERE id = $1", &[&session]).await?.is_some())
}

/// Ends sessions of `user`: `local` = this one, `global` = all, `others` = all but this.
pub async fn logout(tx: &Transaction<'_>, user: Uuid, session: Option<Uuid>, scope: &str) -> AuthResult<u64> {
    let n = match scope {
        "global" => tx.execute("DELETE FROM auth.sessions WHERE user_id = $1", &[&user]).await?,
        "others" => tx.execute("DELETE FROM auth.sessions WHERE user_id = $1 AND id IS DISTINCT FROM $2", &[&user, &session]).await?,
        _ => tx.execute("DELETE FROM auth.sessions WHERE user_id = $1 AND id = $2", &[&user, &session]).await?,
    };
    Ok(n)
}

/// Changes of `PUT /user` and admin updates; `None` leaves a field as it is.
#[derive(Default)]
pub struct UserChanges<'a> {
    /// New lower-cased email: admin only (users go through a confirmed e-mail change).
    pub email: Option<&'a str>,
    /// New password hash.
    pub password_hash: Option<&'a str>,
    /// Merged into user_metadata.
    pub user_meta: Option<&'a Value>,
    /// Merged into app_metadata.
    pub app_meta: Option<&'a Value>,
}

/// Applies `c`; `Ok(false)` when the new email belongs to another account.
pub async fn update_user(tx: &Transaction<'_>, id: Uuid, c: &UserChanges<'_>) -> AuthResult<bool> {
    if let Some(email) = c.email {
        let taken = tx.query_opt("SELECT 1 FROM auth.users WHERE lower(email) = lower($1) AND id <> $2 AND deleted_at IS NULL", &[&email, &id]).await?;
        if taken.is_some() {
            return Ok(false);
        }
    }
    tx.execute(
        "UPDATE auth.users SET
             email = coalesce($2, email),
             encrypted_password = coalesce($3, encrypted_password),
             raw_user_meta_data = raw_user_meta_data || coalesce($4, '{}'::jsonb),
             raw_app_meta_data = raw_app_meta_data || coalesce($5, '{}'::jsonb),
             is_anonymous = is_anonymous AND $2::text IS NULL,
             email_confirmed_by = CASE WHEN $2::text IS NOT NULL AND email_confirmed_at IS NOT NULL
                                       THEN 'admin' ELSE email_confirmed_by END,
             email_change = CASE WHEN $2::text IS NOT NULL THEN NULL ELSE email_change END,
             updated_at = now()
         WHERE id = $1",
        &[&id, &c.email, &c.password_hash, &c.user_meta, &c.app_meta],
    )
    .await?;
    if let Some(email) = c.email {
        tx.execute(
            "INSERT INTO auth.identities (user_id, provider, provider_id, identity_data)
             VALUES ($1, 'email', $3::text, jsonb_build_object('sub', $3::text, 'email', $2::text, 'email_verified', true))
             ON CONFLICT (provider, provider_id) DO UPDATE
                SET identity_data = excluded.identity_data, updated_at = now()",
            &[&id, &email, &id.to_string()],
        )
        .await?;
    }
    Ok(true)
}

/// Admin list: one page of users, newest first, and the total.
pub async fn list_users(tx: &Transaction<'_>, page: i64, per_page: i64) -> AuthResult<(Vec<Value>, i64)> {
    let rows = tx
        .query(
            "SELECT auth.user_json(u), count(*) OVER () FROM auth.users u WHERE u.deleted_at IS NULL
              ORDER BY u.created_at DESC, u.id LIMIT $1 OFFSET $2",
            &[&per_page, &((page - 1) * per_page)],
        )
        .await?;
    let total = match rows.first() {
        Some(r) => r.get(1),
        None => tx.query_one("SELECT count(*) FROM auth.users WHERE deleted_at IS NULL", &[]).await?.get(0),
    };
    Ok((rows.iter().map(|r| r.get(0)).collect(), total))
}

/// Deletes an account (hard, or soft: keeps the row, frees the email, ends sessions).
/// Returns the user object as it was, or `None` when there is no such user.
pub async fn delete_user(tx: &Transaction<'_>, id: Uuid, soft: bool) -> AuthResult<Option<Value>> {
    let Some(user) = user_json(tx, id).await? else { return Ok(None) };
    if soft {
        tx.execute(
            "WITH s AS (DELETE FROM auth.sessions WHERE user_id = $1)
             UPDATE auth.users SET deleted_at = now(), email = NULL, encrypted_password = NULL, updated_at = now()
              WHERE id = $1",
            &[&id],
        )
        .await?;
    } else {
        tx.execute("DELETE FROM auth.users WHERE id = $1", &[&id]).await?;
    }
    Ok(Some(user))
}

/// Appends to the audit log.
pub async fn audit(tx: &Transaction<'_>, action: &str, actor: Option<Uuid>, payload: Value, ip: Option<&str>) -> AuthResult<()> {
    tx.execute("INSERT INTO auth.audit_log_entries (action, actor_id, payload, ip_address) VALUES ($1, $2, $3, coalesce($4, ''))", &[&action, &actor, &payload, &ip]).await?;
    Ok(())
}

/// Maps "not found" to the contract's 404.
pub fn found<T>(v: Option<T>) -> AuthResult<T> {
    v.ok_or_else(AuthError::user_not_found)
}
