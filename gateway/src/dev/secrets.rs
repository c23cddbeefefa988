//! The keys and passwords of a `pgstack dev` project, persisted in `<dir>/dev.env`
//! (mode 0600) so a second run reuses them.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use pgstack_shared::Role;

use crate::config::Secret;
use crate::keys;

/// Everything `pgstack dev` generates once and keeps.
#[derive(Clone)]
pub struct DevSecrets {
    path: PathBuf,
    /// JWT_SECRET.
    pub jwt_secret: Secret,
    /// ANON_KEY.
    pub anon_key: Secret,
    /// SERVICE_ROLE_KEY.
    pub service_role_key: Secret,
    /// Password of the cluster's `postgres` superuser.
    pub superuser_password: Secret,
    /// Password of the gateway's `authenticator` role.
    pub authenticator_password: Secret,
    /// The Postgres port of the last run (reused when free).
    pub pg_port: Option<u16>,
}

impl DevSecrets {
    /// Loads `<dir>/dev.env`, creating it with fresh values on first use.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<DevSecrets> {
        let path = dir.join("dev.env");
        if path.exists() {
            return Self::load(&path);
        }
        let s = Self::generate(path)?;
        s.save()?;
        Ok(s)
    }

    fn generate(path: PathBuf) -> anyhow::Result<DevSecrets> {
        let jwt_secret = Secret::new(keys::generate_secret());
        Ok(DevSecrets {
            path,
            anon_key: Secret::new(keys::mint(Role::Anon, &jwt_secret)?),
            service_role_key: Secret::new(keys::mint(Role::ServiceRole, &jwt_secret)?),
            jwt_secret,
            superuser_password: Secret::new(keys::generate_secret()),
            authenticator_password: Secret::new(keys::generate_secret()),
            pg_port: None,
        })
    }

    fn load(path: &Path) -> anyhow::Result<DevSecrets> {
        let mut map = BTreeMap::new();
        for item in dotenvy::from_path_iter(path).with_context(|| format!("reading {}", path.display()))? {
            let (k, v) = item?;
            map.insert(k, v);
        }
        let get = |k: &str| map.get(k).cloned().map(Secret::new).with_context(|| format!("{} lacks {k}; delete the file to start a new dev project", path.display()));
        Ok(DevSecrets {
            path: path.to_owned(),
            jwt_secret: get("JWT_SECRET")?,
            anon_key: get("ANON_KEY")?,
            service_role_key: get("SERVICE_ROLE_KEY")?,
            superuser_password: get("PG_SUPERUSER_PASSWORD")?,
            authenticator_password: get("AUTHENTICATOR_PASSWORD")?,
            pg_port: map.get("PG_PORT").and_then(|p| p.parse().ok()),
        })
    }

    /// New JWT secret and keys; passwords stay. Existing tokens stop verifying.
    pub fn rotate_keys(&mut self) -> anyhow::Result<()> {
        self.jwt_secret = Secret::new(keys::generate_secret());
        self.anon_key = Secret::new(keys::mint(Role::Anon, &self.jwt_secret)?);
        self.service_role_key = Secret::new(keys::mint(Role::ServiceRole, &self.jwt_secret)?);
        self.save()
    }

    /// Writes the file atomically with mode 0600.
    pub fn save(&self) -> anyhow::Result<()> {
        let mut body = String::from("# pgstack dev: generated secrets. Keep private; delete to start over.\n");
        for (k, v) in self.pairs() {
            body.push_str(&format!("{k}={v}\n"));
        }
        if let Some(p) = self.pg_port {
            body.push_str(&format!("PG_PORT={p}\n"));
        }
        let tmp = self.path.with_extension("env.tmp");
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
        f.write_all(body.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        Ok(())
    }

    /// The key/value pairs, as written to the file.
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("JWT_SECRET", self.jwt_secret.expose()),
            ("ANON_KEY", self.anon_key.expose()),
            ("SERVICE_ROLE_KEY", self.service_role_key.expose()),
            ("PG_SUPERUSER_PASSWORD", self.superuser_password.expose()),
            ("AUTHENTICATOR_PASSWORD", self.authenticator_password.expose()),
        ]
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_load_returns_the_same_secrets_and_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let a = DevSecrets::load_or_create(dir.path()).unwrap();
        let b = DevSecrets::load_or_create(dir.path()).unwrap();
        assert_eq!(a.jwt_secret, b.jwt_secret);
        assert_eq!(a.anon_key, b.anon_key);
        assert_eq!(a.authenticator_password, b.authenticator_password);
        let mode = fs::metadata(a.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let claims = keys::verify(a.anon_key.expose(), &a.jwt_secret).unwrap();
        assert_eq!(claims.role, Role::Anon);
    }

    #[test]
    fn rotation_changes_keys_but_not_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = DevSecrets::load_or_create(dir.path()).unwrap();
        let before = a.clone();
        a.rotate_keys().unwrap();
        let b = DevSecrets::load_or_create(dir.path()).unwrap();
        assert_ne!(before.jwt_secret, b.jwt_secret);
        assert_ne!(before.service_role_key, b.service_role_key);
        assert_eq!(before.superuser_password, b.superuser_password);
        assert!(keys::verify(b.service_role_key.expose(), &b.jwt_secret).is_ok());
    }
}
