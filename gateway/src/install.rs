//! Creating or updating the extension in a database (`pgstack install`, `pgstack dev`).
//! Needs a superuser connection: the extension creates roles and schemas.

use tokio_postgres::{Client, NoTls};

/// What [`ensure_extension`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `CREATE EXTENSION pgstack` ran; the version created.
    Created(String),
    /// `ALTER EXTENSION pgstack UPDATE` ran: from, to.
    Updated(String, String),
    /// Already at the newest available version.
    UpToDate(String),
}

/// Connects with `url` (a superuser), spawning the connection task.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "install connection closed");
        }
    });
    Ok(client)
}

/// Creates the extension, or updates it to the newest version the server has.
pub async fn ensure_extension(client: &Client) -> anyhow::Result<Outcome> {
    let row = client.query_opt("SELECT default_version, installed_version FROM pg_available_extensions WHERE name = 'pgstack'", &[]).await?;
    let Some(row) = row else {
        anyhow::bail!(
            "this PostgreSQL server has no pgstack extension files (pgstack.control). Install them with \
             `cargo pgrx install -c /usr/lib/postgresql/15/bin/pg_config` in pg_ext/ (scripts/dev.sh does it)"
        );
    };
    let available: String = row.get(0);
    let installed: Option<String> = row.get(1);
    Ok(match installed {
        None => {
            client.batch_execute("CREATE EXTENSION pgstack").await?;
            Outcome::Created(available)
        }
        Some(v) if v == available => Outcome::UpToDate(v),
        Some(v) => {
            client.batch_execute("ALTER EXTENSION pgstack UPDATE").await?;
            Outcome::Updated(v, available)
        }
    })
}

/// Gives the gateway's login role a password (scram-sha-256 on the server side).
pub async fn set_authenticator_password(client: &Client, password: &str) -> anyhow::Result<()> {
    // ALTER ROLE takes no bind parameters: format() quotes the literal server-side.
    let sql: String = client.query_one("SELECT format('ALTER ROLE authenticator WITH LOGIN PASSWORD %L', $1::text)", &[&password]).await?.get(0);
    client.batch_execute(&sql).await?;
    Ok(())
}
