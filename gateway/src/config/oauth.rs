//! Which OAuth providers are on, read from EXTERNAL_* settings.
//!
//! | provider (`?provider=`)   | settings prefix            | protocol            |
//! |---------------------------|----------------------------|---------------------|
//! | `google`                  | EXTERNAL_GOOGLE_           | OpenID Connect      |
//! | `github`                  | EXTERNAL_GITHUB_           | OAuth 2 + user API  |
//! | `apple`                   | EXTERNAL_APPLE_            | OIDC, form_post     |
//! | `microsoft` (or `azure`)  | EXTERNAL_MICROSOFT_ / EXTERNAL_AZURE_ | OIDC     |
//! | `oidc`                    | EXTERNAL_OIDC_             | OIDC (discovery)    |
//! | `custom:<name>`           | EXTERNAL_CUSTOM_<NAME>_ (names listed in EXTERNAL_CUSTOM_PROVIDERS) | OIDC |
//!
//! Per provider: `CLIENT_ID` (turns it on), `SECRET` (required), `URL` (issuer; the
//! built-in ones have defaults, `oidc` / custom need it; for GitHub the Enterprise
//! base URL), `REDIRECT_URI` (default `API_EXTERNAL_URL/auth/v1/callback`),
//! `SCOPES` (extra scopes, comma or space separated), `ENABLED=false` to switch
//! one off without removing its keys.

use super::{ConfigError, Secret, Source};

/// How a provider is spoken to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// OpenID Connect with discovery at `{issuer}/.well-known/openid-configuration`.
    Oidc {
        /// Issuer URL.
        issuer: String,
        /// Whether the id_token's `iss` must equal the issuer (false for Microsoft's
        /// multi-tenant endpoints, whose tokens name the user's tenant).
        check_issuer: bool,
        /// Apple: the answer comes back as an HTML form POST.
        form_post: bool,
    },
    /// GitHub: OAuth 2, then the REST API for the profile and verified e-mails.
    Github {
        /// https://github.com (or an Enterprise server).
        web: String,
        /// https://api.github.com (or `{web}/api/v3`).
        api: String,
    },
}

/// One enabled provider.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The name stored on identities: google, github, apple, azure, oidc, custom:<name>.
    pub name: String,
    /// Protocol and endpoints.
    pub protocol: Protocol,
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret (Apple: the client-secret JWT).
    pub secret: Secret,
    /// Callback URL registered at the provider; None = API_EXTERNAL_URL/auth/v1/callback.
    pub redirect_uri: Option<String>,
    /// Scopes asked for (defaults plus EXTERNAL_*_SCOPES).
    pub scopes: Vec<String>,
}

/// Normalises the `?provider=` spelling: `azure` is Microsoft, names are lower case.
pub fn canonical(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    match n.as_str() {
        "microsoft" => "azure".to_owned(),
        _ => n,
    }
}

fn read(src: &Source, prefix: &str, name: String, default: Option<(Protocol, &[&str])>) -> Result<Option<ProviderConfig>, ConfigError> {
    let key = |k: &str| format!("{prefix}{k}");
    let Some(client_id) = src.get(&key("CLIENT_ID")).filter(|v| !v.trim().is_empty()) else { return Ok(None) };
    if matches!(src.get(&key("ENABLED")).as_deref().map(str::trim), Some("false" | "0" | "off" | "no")) {
        return Ok(None);
    }
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let secret = src.get(&key("SECRET")).filter(|v| !v.is_empty()).ok_or_else(|| ConfigError::Missing(leak(key("SECRET")), " (the OAuth client secret of this provider)"))?;
    let url = src.get(&key("URL")).map(|u| u.trim().trim_end_matches('/').to_owned()).filter(|u| !u.is_empty());
    if let Some(u) = &url {
        if !(u.starts_with("https://") || u.starts_with("http://")) {
            return Err(ConfigError::Invalid { name: leak(key("URL")), why: format!("{u:?} is not an http(s) URL") });
        }
    }
    let (protocol, scopes) = match (default, url) {
        (Some((Protocol::Github { .. }, scopes)), Some(u)) => (Protocol::Github { api: format!("{u}/api/v3"), web: u }, scopes),
        (Some((Protocol::Oidc { check_issuer, form_post, .. }, scopes)), Some(u)) => {
            let check_issuer = check_issuer || !(u.contains("/common/") || u.contains("/organizations/") || u.contains("/consumers/"));
            (Protocol::Oidc { issuer: u, check_issuer, form_post }, scopes)
        }
        (Some(d), None) => d,
        (None, Some(u)) => (Protocol::Oidc { issuer: u, check_issuer: true, form_post: false }, &["openid", "email", "profile"][..]),
        (None, None) => return Err(ConfigError::Missing(leak(key("URL")), " (the OpenID issuer URL of this provider)")),
    };
    let mut scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
    for extra in src.get(&key("SCOPES")).unwrap_or_default().split([',', ' ']).filter(|s| !s.is_empty()) {
        if !scopes.iter().any(|s| s == extra) {
            scopes.push(extra.to_owned());
        }
    }
    Ok(Some(ProviderConfig { name, protocol, client_id, secret: Secret::new(secret), redirect_uri: src.get(&key("REDIRECT_URI")).filter(|v| !v.is_empty()), scopes }))
}

/// Every enabled provider.
pub fn from_source(src: &Source) -> Result<Vec<ProviderConfig>, ConfigError> {
    let oidc = |issuer: &str, check_issuer: bool, form_post: bool| Protocol::Oidc { issuer: issuer.to_owned(), check_issuer, form_post };
    let mut out = Vec::new();
    let builtin: [(&str, &str, Protocol, &[&str]); 5] = [
        ("EXTERNAL_GOOGLE_", "google", oidc("https://accounts.google.com", true, false), &["openid", "email", "profile"]),
        ("EXTERNAL_GITHUB_", "github", Protocol::Github { web: "https://github.com".into(), api: "https://api.github.com".into() }, &["read:user", "user:email"]),
        ("EXTERNAL_APPLE_", "apple", oidc("https://appleid.apple.com", true, true), &["openid", "name", "email"]),
        ("EXTERNAL_MICROSOFT_", "azure", oidc("https://login.microsoftonline.com/common/v2.0", false, false), &["openid", "email", "profile"]),
        ("EXTERNAL_OIDC_", "oidc", Protocol::Oidc { issuer: String::new(), check_issuer: true, form_post: false }, &["openid", "email", "profile"]),
    ];
    for (prefix, name, protocol, scopes) in builtin {
        let default = if name == "oidc" { None } else { Some((protocol, scopes)) };
        let mut found = read(src, prefix, name.to_owned(), default.clone())?;
        if found.is_none() && name == "azure" {
            found = read(src, "EXTERNAL_AZURE_", name.to_owned(), default)?;
        }
        out.extend(found);
    }
    for custom in src.get("EXTERNAL_CUSTOM_PROVIDERS").unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let ok = custom.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(ConfigError::Invalid { name: "EXTERNAL_CUSTOM_PROVIDERS", why: format!("{custom:?}: use letters, digits, - and _") });
        }
        let prefix = format!("EXTERNAL_CUSTOM_{}_", custom.to_ascii_uppercase().replace('-', "_"));
        let name = format!("custom:{}", custom.to_ascii_lowercase());
        match read(src, &prefix, name, None)? {
            Some(p) => out.push(p),
            None => return Err(ConfigError::Invalid { name: "EXTERNAL_CUSTOM_PROVIDERS", why: format!("{custom:?} is listed but {prefix}CLIENT_ID is not set") }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn src(pairs: &[(&str, &str)]) -> Source {
        Source::from_map(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>())
    }

    #[test]
    fn providers_need_an_id_and_a_secret() {
        assert!(from_source(&src(&[])).unwrap().is_empty());
        assert!(from_source(&src(&[("EXTERNAL_GOOGLE_CLIENT_ID", "x")])).is_err());
        let p = from_source(&src(&[("EXTERNAL_GOOGLE_CLIENT_ID", "x"), ("EXTERNAL_GOOGLE_SECRET", "s")])).unwrap();
        assert_eq!(p[0].name, "google");
        assert_eq!(p[0].scopes, ["openid", "email", "profile"]);
        let off = from_source(&src(&[("EXTERNAL_GOOGLE_CLIENT_ID", "x"), ("EXTERNAL_GOOGLE_SECRET", "s"), ("EXTERNAL_GOOGLE_ENABLED", "false")]));
        assert!(off.unwrap().is_empty());
    }

    #[test]
    fn generic_and_custom_oidc_need_an_issuer() {
        assert!(from_source(&src(&[("EXTERNAL_OIDC_CLIENT_ID", "x"), ("EXTERNAL_OIDC_SECRET", "s")])).is_err());
        let p = from_source(&src(&[
            ("EXTERNAL_CUSTOM_PROVIDERS", "Acme"),
            ("EXTERNAL_CUSTOM_ACME_CLIENT_ID", "x"),
            ("EXTERNAL_CUSTOM_ACME_SECRET", "s"),
            ("EXTERNAL_CUSTOM_ACME_URL", "https://id.acme.test/"),
            ("EXTERNAL_CUSTOM_ACME_SCOPES", "groups offline_access"),
        ]))
        .unwrap();
        assert_eq!(p[0].name, "custom:acme");
        assert_eq!(p[0].protocol, Protocol::Oidc { issuer: "https://id.acme.test".into(), check_issuer: true, form_post: false });
        assert_eq!(p[0].scopes, ["openid", "email", "profile", "groups", "offline_access"]);
        assert!(from_source(&src(&[("EXTERNAL_CUSTOM_PROVIDERS", "ghost")])).is_err());
        assert!(from_source(&src(&[("EXTERNAL_CUSTOM_PROVIDERS", "a/b")])).is_err());
    }

    #[test]
    fn microsoft_is_azure_and_multi_tenant_skips_the_issuer_check() {
        let p = from_source(&src(&[("EXTERNAL_AZURE_CLIENT_ID", "x"), ("EXTERNAL_AZURE_SECRET", "s")])).unwrap();
        assert_eq!(p[0].name, "azure");
        assert!(matches!(p[0].protocol, Protocol::Oidc { check_issuer: false, .. }));
        let p = from_source(&src(&[
            ("EXTERNAL_MICROSOFT_CLIENT_ID", "x"),
            ("EXTERNAL_MICROSOFT_SECRET", "s"),
            ("EXTERNAL_MICROSOFT_URL", "https://login.microsoftonline.com/0000-tenant/v2.0"),
        ]))
        .unwrap();
        assert!(matches!(p[0].protocol, Protocol::Oidc { check_issuer: true, .. }));
        assert_eq!(canonical("Microsoft"), "azure");
        let gh = from_source(&src(&[("EXTERNAL_GITHUB_CLIENT_ID", "x"), ("EXTERNAL_GITHUB_SECRET", "s"), ("EXTERNAL_GITHUB_URL", "https://ghe.corp")])).unwrap();
        assert_eq!(gh[0].protocol, Protocol::Github { web: "https://ghe.corp".into(), api: "https://ghe.corp/api/v3".into() });
    }
}
