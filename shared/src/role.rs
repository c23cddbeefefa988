//! The database roles a request may run as, created by the extension.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The login role the gateway connects as. NOINHERIT, member of every [`Role`].
pub const AUTHENTICATOR: &str = "authenticator";

/// A role a request is executed under (`set_config('role', ..., true)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Callers with only the anon key. Subject to RLS.
    Anon,
    /// Signed-in users. Subject to RLS.
    Authenticated,
    /// The service key. BYPASSRLS.
    ServiceRole,
}

impl Role {
    /// Every role, in privilege order.
    pub const ALL: [Role; 3] = [Role::Anon, Role::Authenticated, Role::ServiceRole];

    /// The role's name in Postgres and in the JWT `role` claim.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Anon => "anon",
            Role::Authenticated => "authenticated",
            Role::ServiceRole => "service_role",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `role` claim that names no known role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownRole(pub String);

impl fmt::Display for UnknownRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown role {:?}", self.0)
    }
}

impl std::error::Error for UnknownRole {}

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_role() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }

    #[test]
    fn refuses_unknown_and_differently_cased_roles() {
        assert!("postgres".parse::<Role>().is_err());
        assert!("Anon".parse::<Role>().is_err());
        assert!("authenticator".parse::<Role>().is_err());
    }
}
