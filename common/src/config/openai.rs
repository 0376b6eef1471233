//! The `openai` provider's settings: OpenAI's chat completions, or any
//! server speaking them, Azure OpenAI included.

use std::collections::HashMap;

use serde::Deserialize;

use super::providers::{default_max_attempts, default_provider_timeout};

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OpenAiSettings {
    /// e.g. `https://api.openai.com/v1`; `/chat/completions` is appended.
    /// For Azure OpenAI, the resource endpoint (see [`AzureSettings`]).
    pub base_url: String,
    /// The environment variable that holds the API key, if any.
    pub api_key_env: Option<String>,
    /// Seconds to wait for the response to start.
    #[serde(default = "default_provider_timeout")]
    pub timeout_secs: u64,
    /// Attempts for a retryable failure (429, 5xx, timeouts) before the run fails.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Extra HTTP headers sent with every request.
    #[serde(default)]
    pub headers: HashMap<String, String>,
    /// Set for Azure OpenAI, which serves the same format at a
    /// deployment's URL and takes the key in another header.
    #[serde(default)]
    pub azure: Option<AzureSettings>,
}

/// Azure OpenAI's addressing: requests go to
/// `{base_url}/openai/deployments/{deployment}/chat/completions?api-version={api_version}`,
/// and the key is sent as `api-key: KEY` rather than `Authorization: Bearer KEY`.
/// The deployment decides the model; the agent's `model` is still sent in
/// the body, where Azure ignores it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureSettings {
    /// The deployment's name, as created in the Azure resource.
    pub deployment: String,
    /// The `api-version` query parameter, e.g. `2024-10-21`.
    pub api_version: String,
}

#[cfg(test)]
mod tests {
    use crate::config::ProviderKind;
    use crate::config::catalog::testing::{AGENT, parse};

    #[test]
    fn an_azure_openai_provider_parses_and_is_checked() {
        let provider = "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"https://r.openai.azure.com\"\n";
        let text = format!(
            "{provider}azure = {{ deployment = \"gpt-4o\", api_version = \"2024-10-21\" }}\n{AGENT}"
        );
        let catalog = parse(&text).unwrap();
        let ProviderKind::Openai(openai) = &catalog.providers[0].kind else {
            panic!("expected an openai provider");
        };
        let azure = openai.azure.as_ref().expect("azure settings");
        assert_eq!(azure.deployment, "gpt-4o");
        assert_eq!(azure.api_version, "2024-10-21");

        let text = format!(
            "{provider}azure = {{ deployment = \"\", api_version = \"2024-10-21\" }}\n{AGENT}"
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("azure.deployment must not be empty"), "{err}");
        let text = format!("{provider}azure = {{ deployment = \"gpt-4o\" }}\n{AGENT}");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("api_version"), "{err}");
    }
}
