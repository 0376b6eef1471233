//! The `ollama` provider's settings: Ollama's native chat API.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::providers::{default_max_attempts, default_provider_timeout};

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OllamaSettings {
    /// e.g. `http://127.0.0.1:11434`; `/api/chat` is appended.
    pub base_url: String,
    /// The environment variable that holds a key sent as a bearer token,
    /// for Ollama behind an authenticating proxy or on ollama.com.
    pub api_key_env: Option<String>,
    /// Seconds to wait for the answer to start. Ollama loads the model
    /// into memory and reads the whole prompt before its first line, which
    /// on a cold server takes minutes, hence a longer wait than between lines.
    #[serde(default = "default_ollama_start_timeout")]
    pub start_timeout_secs: u64,
    /// Seconds of silence allowed between two lines of a started answer.
    #[serde(default = "default_provider_timeout")]
    pub timeout_secs: u64,
    /// Attempts for a retryable failure (429, 5xx, timeouts) before the run fails.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Extra HTTP headers sent with every request.
    #[serde(default)]
    pub headers: HashMap<String, String>,
    /// Model parameters sent as Ollama's `options` (`temperature`,
    /// `num_ctx`, `seed`, ...), as written.
    #[serde(default)]
    pub options: serde_json::Map<String, serde_json::Value>,
    /// How long Ollama keeps the model loaded after a call; its own default
    /// (five minutes) when unset.
    pub keep_alive: Option<KeepAlive>,
}

/// Ollama's `keep_alive`: a duration or a number of seconds.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(
    untagged,
    expecting = "a duration such as \"10m\" or a number of seconds (negative: for ever)"
)]
pub enum KeepAlive {
    Seconds(i64),
    /// Go duration syntax, e.g. `"30s"`, `"10m"`, `"1h30m"`.
    Duration(String),
}

fn default_ollama_start_timeout() -> u64 {
    300
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderKind;
    use crate::config::catalog::testing::parse;

    const OLLAMA_AGENT: &str =
        "\n[[agents]]\nid = \"a\"\nname = \"A\"\nprovider = \"local\"\nmodel = \"qwen3\"\n";

    #[test]
    fn an_ollama_provider_parses_with_its_defaults_and_pass_through_settings() {
        let catalog = parse(&format!(
            r#"
[[providers]]
name = "local"
kind = "ollama"
base_url = "http://127.0.0.1:11434"
keep_alive = "10m"
options = {{ temperature = 0.2, num_ctx = 8192, stop = ["</answer>"] }}
{OLLAMA_AGENT}"#
        ))
        .unwrap();
        let ProviderKind::Ollama(ollama) = &catalog.providers[0].kind else {
            panic!("expected an ollama provider");
        };
        assert_eq!(ollama.base_url, "http://127.0.0.1:11434");
        assert_eq!(ollama.api_key_env, None);
        assert_eq!(ollama.timeout_secs, 60);
        assert_eq!(ollama.start_timeout_secs, 300);
        assert_eq!(ollama.max_attempts, 3);
        assert_eq!(ollama.keep_alive, Some(KeepAlive::Duration("10m".into())));
        assert_eq!(
            serde_json::Value::Object(ollama.options.clone()),
            serde_json::json!({"temperature": 0.2, "num_ctx": 8192, "stop": ["</answer>"]})
        );

        let catalog = parse(&format!(
            "[[providers]]\nname = \"local\"\nkind = \"ollama\"\nbase_url = \"http://h:11434\"\nkeep_alive = -1\n{OLLAMA_AGENT}"
        ))
        .unwrap();
        let ProviderKind::Ollama(ollama) = &catalog.providers[0].kind else {
            panic!("expected an ollama provider");
        };
        assert_eq!(ollama.keep_alive, Some(KeepAlive::Seconds(-1)));
        assert!(ollama.options.is_empty());
    }

    #[test]
    fn bad_ollama_settings_name_their_line() {
        let provider = |settings: &str| {
            let text = format!(
                "[[providers]]\nname = \"local\"\nkind = \"ollama\"\n{settings}\n{OLLAMA_AGENT}"
            );
            parse(&text).unwrap_err().to_string()
        };
        let err = provider("base_url = \"127.0.0.1:11434\"");
        assert!(err.starts_with("agents.toml:1:"), "{err}");
        assert!(err.contains("http:// or https://"), "{err}");
        let err = provider("base_url = \"http://h:11434\"\nmax_attempts = 0");
        assert!(err.starts_with("agents.toml:1:"), "{err}");
        assert!(err.contains("max_attempts must be at least 1"), "{err}");
        let err = provider("base_url = \"http://h:11434\"\nkeep_alive = true");
        assert!(err.contains("a duration such as"), "{err}");
    }
}
