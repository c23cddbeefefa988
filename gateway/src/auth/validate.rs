//! Input checks shared by the auth routes. Pure functions.

use super::error::{AuthError, AuthResult};
use serde_json::Value;

/// A plausible address (`local@domain.tld`, no spaces or control characters, at
/// most 320 bytes), lower-cased.
pub fn email(raw: &str) -> AuthResult<String> {
    let e = raw.trim().to_lowercase();
    let ok = e.len() <= 320
        && !e.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"' | ',' | ';'))
        && match e.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty() && !domain.contains('@') && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.') && !domain.contains("..")
            }
            None => false,
        };
    if ok {
        Ok(e)
    } else {
        Err(AuthError::invalid_body("invalid email address"))
    }
}

/// Metadata must be a JSON object (or absent / null).
pub fn metadata(v: Option<&Value>) -> AuthResult<Option<&Value>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(o @ Value::Object(_)) => Ok(Some(o)),
        Some(_) => Err(AuthError::invalid_body("data must be a JSON object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(email(" Jane@Example.COM ").unwrap(), "jane@example.com");
        for bad in ["", "jane", "jane@", "@example.com", "jane@example", "ja ne@example.com", "a@b@c.com", "a@.com", "a@b..com", "a\u{0}@b.com"] {
            assert_eq!(email(bad).unwrap_err().message, "invalid email address", "{bad:?}");
        }
    }
}
