//! The `anthropic` provider's settings: Anthropic's Messages API.

use std::collections::HashMap;

use serde::Deserialize;

use super::providers::{default_max_attempts, default_provider_timeout};

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AnthropicSettings {
    /// e.g. `https://api.anthropic.com`, WITHOUT `/v1` (as Anthropic's SDKs
    /// take it); `/v1/messages` is appended.
    pub base_url: String,
    /// The environment variable that holds the API key (sent as `x-api-key`), if any.
    pub api_key_env: Option<String>,
    /// Seconds to wait for the response to start, and between two events.
    #[serde(default = "default_provider_timeout")]
    pub timeout_secs: u64,
    /// Attempts for a retryable failure (429, 529, 5xx, timeouts) before the run fails.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// The most tokens one answer may have: Anthropic requires a bound.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// The `anthropic-version` header: the API version the client speaks.
    #[serde(default = "default_anthropic_version")]
    pub anthropic_version: String,
    /// Extra HTTP headers sent with every request (e.g. `anthropic-beta`).
    #[serde(default)]
    pub headers: HashMap<String, String>,
}

fn default_max_tokens() -> u32 {
    4096
}

fn default_anthropic_version() -> String {
    "2023-06-01".to_owned()
}

#[cfg(test)]
mod tests {
    use crate::config::ProviderKind;
    use crate::config::catalog::testing::{AGENT, parse};

    #[test]
    fn an_anthropic_provider_parses_with_defaults() {
        let text = format!(
            "[[providers]]\nname = \"p\"\nkind = \"anthropic\"\nbase_url = \"https://api.anthropic.com\"\napi_key_env = \"ANTHROPIC_API_KEY\"\n{AGENT}"
        );
        let catalog = parse(&text).unwrap();
        let ProviderKind::Anthropic(anthropic) = &catalog.providers[0].kind else {
            panic!("expected an anthropic provider");
        };
        assert_eq!(anthropic.base_url, "https://api.anthropic.com");
        assert_eq!(anthropic.api_key_env.as_deref(), Some("ANTHROPIC_API_KEY"));
        assert_eq!(anthropic.timeout_secs, 60);
        assert_eq!(anthropic.max_attempts, 3);
        assert_eq!(anthropic.max_tokens, 4096);
        assert_eq!(anthropic.anthropic_version, "2023-06-01");
        assert!(anthropic.headers.is_empty());
    }

    #[test]
    fn bad_anthropic_settings_name_the_provider_and_the_key() {
        let cases = [
            (
                "base_url = \"api.anthropic.com\"",
                "base_url must start with http",
            ),
            (
                "base_url = \"https://api.anthropic.com\"\nmax_attempts = 0",
                "max_attempts must be at least 1",
            ),
            (
                "base_url = \"https://api.anthropic.com\"\nmax_tokens = 0",
                "max_tokens must be at least 1",
            ),
        ];
        for (settings, problem) in cases {
            let text =
                format!("[[providers]]\nname = \"p\"\nkind = \"anthropic\"\n{settings}\n{AGENT}");
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.starts_with("agents.toml:1:"), "{err}");
            assert!(err.contains("provider \"p\": "), "{err}");
            assert!(err.contains(problem), "{err}");
        }
        let text = format!(
            "[[providers]]\nname = \"p\"\nkind = \"anthropic\"\nbase_url = \"https://api.anthropic.com\"\nmax_token = 10\n{AGENT}"
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("unknown field `max_token`"), "{err}");
    }
}
