//! LLM_* settings: the providers the agent's LLM proxy and `query_database` talk to.
//! Keys stay here: the API never returns them.
//!
//! | provider    | settings                                   | default URL                  |
//! |-------------|--------------------------------------------|------------------------------|
//! | `openai`    | LLM_OPENAI_API_KEY, LLM_OPENAI_URL          | https://api.openai.com/v1    |
//! | `anthropic` | LLM_ANTHROPIC_API_KEY, LLM_ANTHROPIC_URL    | https://api.anthropic.com    |
//! | `ollama`    | LLM_OLLAMA_URL (no key)                     | —                            |
//!
//! A provider is on when its key (Ollama: its URL) is set. LLM_DEFAULT_PROVIDER and
//! LLM_DEFAULT_MODEL choose what `query_database` uses; LLM_TIMEOUT (seconds, 60)
//! bounds every call.

use super::{ConfigError, Secret, Source};

/// One configured provider.
#[derive(Debug, Clone)]
pub struct LlmProvider {
    /// `openai`, `anthropic` or `ollama`.
    pub name: &'static str,
    /// Base URL, no trailing slash.
    pub url: String,
    /// API key (none for Ollama).
    pub key: Option<Secret>,
}

/// The LLM settings.
#[derive(Debug, Clone, Default)]
pub struct LlmConfig {
    /// Configured providers.
    pub providers: Vec<LlmProvider>,
    /// LLM_DEFAULT_PROVIDER (else the first configured).
    pub default_provider: Option<String>,
    /// LLM_DEFAULT_MODEL.
    pub default_model: Option<String>,
    /// LLM_TIMEOUT in seconds.
    pub timeout_secs: u64,
}

/// Reads the settings.
pub fn from_source(src: &Source) -> Result<LlmConfig, ConfigError> {
    let url = |name: &'static str, default: Option<&str>| -> Result<Option<String>, ConfigError> {
        let v = src.get(name).or_else(|| default.map(str::to_owned));
        match v {
            Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => Err(ConfigError::Invalid { name, why: format!("{u:?} is not an http(s) URL") }),
            v => Ok(v.map(|u| u.trim_end_matches('/').to_owned())),
        }
    };
    let mut providers = Vec::new();
    if let Some(key) = src.get("LLM_OPENAI_API_KEY") {
        providers.push(LlmProvider { name: "openai", url: url("LLM_OPENAI_URL", Some("https://api.openai.com/v1"))?.unwrap_or_default(), key: Some(Secret::new(key)) });
    }
    if let Some(key) = src.get("LLM_ANTHROPIC_API_KEY") {
        providers.push(LlmProvider { name: "anthropic", url: url("LLM_ANTHROPIC_URL", Some("https://api.anthropic.com"))?.unwrap_or_default(), key: Some(Secret::new(key)) });
    }
    if let Some(u) = url("LLM_OLLAMA_URL", None)? {
        providers.push(LlmProvider { name: "ollama", url: u, key: None });
    }
    let default_provider = src.get("LLM_DEFAULT_PROVIDER");
    if let Some(p) = &default_provider {
        if !providers.iter().any(|x| x.name == p) {
            return Err(ConfigError::Invalid { name: "LLM_DEFAULT_PROVIDER", why: format!("{p:?} is not a configured provider (openai, anthropic, ollama)") });
        }
    }
    Ok(LlmConfig { providers, default_provider, default_model: src.get("LLM_DEFAULT_MODEL"), timeout_secs: src.num("LLM_TIMEOUT", 60u64)?.clamp(1, 600) })
}
