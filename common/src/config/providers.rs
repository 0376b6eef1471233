//! Providers: the catalog's `[[providers]]` tables, whose `kind` selects
//! the wire format and its settings (each kind's settings in a file of
//! their own).

use serde::Deserialize;

use super::{AnthropicSettings, LocalSettings, OllamaSettings, OpenAiSettings, ScriptedSettings};

/// An LLM endpoint agents can use.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
}

/// The wire format a provider speaks, with its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderKind {
    /// OpenAI chat completions, streamed (also vLLM, llama.cpp, LM Studio,
    /// Ollama's `/v1`, Azure OpenAI).
    Openai(OpenAiSettings),
    /// Anthropic's Messages API, streamed.
    Anthropic(AnthropicSettings),
    /// Ollama's native chat API (`/api/chat`, streamed as JSON lines).
    Ollama(OllamaSettings),
    /// Switchyard's own deterministic offline model (see the worker's
    /// `providers::scripted`).
    Scripted(ScriptedSettings),
    /// A GGUF model run in the worker process (see the worker's
    /// `providers::local`).
    Local(LocalSettings),
}

/// A `[[providers]]` table as written: `kind` selects the variant.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum ProviderFile {
    Openai {
        name: String,
        #[serde(flatten)]
        settings: OpenAiSettings,
    },
    Anthropic {
        name: String,
        #[serde(flatten)]
        settings: AnthropicSettings,
    },
    Ollama {
        name: String,
        #[serde(flatten)]
        settings: OllamaSettings,
    },
    Scripted {
        name: String,
        #[serde(flatten)]
        settings: ScriptedSettings,
    },
    Local {
        name: String,
        #[serde(flatten)]
        settings: LocalSettings,
    },
}

impl From<ProviderFile> for ProviderConfig {
    fn from(file: ProviderFile) -> Self {
        match file {
            ProviderFile::Openai { name, settings } => Self {
                name,
                kind: ProviderKind::Openai(settings),
            },
            ProviderFile::Anthropic { name, settings } => Self {
                name,
                kind: ProviderKind::Anthropic(settings),
            },
            ProviderFile::Ollama { name, settings } => Self {
                name,
                kind: ProviderKind::Ollama(settings),
            },
            ProviderFile::Scripted { name, settings } => Self {
                name,
                kind: ProviderKind::Scripted(settings),
            },
            ProviderFile::Local { name, settings } => Self {
                name,
                kind: ProviderKind::Local(settings),
            },
        }
    }
}

pub(super) fn default_provider_timeout() -> u64 {
    60
}

pub(super) fn default_max_attempts() -> u32 {
    3
}

impl ProviderKind {
    /// What is wrong with these settings, if anything, for the catalog's
    /// error message.
    pub(super) fn problem(&self) -> Option<String> {
        let http = |base_url: &str, max_attempts: u32| {
            if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                Some("base_url must start with http:// or https://".to_owned())
            } else if max_attempts == 0 {
                Some("max_attempts must be at least 1".to_owned())
            } else {
                None
            }
        };
        match self {
            Self::Openai(openai) => http(&openai.base_url, openai.max_attempts).or_else(|| {
                let azure = openai.azure.as_ref()?;
                if azure.deployment.trim().is_empty() {
                    Some("azure.deployment must not be empty".to_owned())
                } else if azure.api_version.trim().is_empty() {
                    Some("azure.api_version must not be empty".to_owned())
                } else {
                    None
                }
            }),
            Self::Anthropic(anthropic) => http(&anthropic.base_url, anthropic.max_attempts)
                .or_else(|| {
                    (anthropic.max_tokens == 0).then(|| "max_tokens must be at least 1".to_owned())
                }),
            Self::Ollama(ollama) => http(&ollama.base_url, ollama.max_attempts),
            Self::Scripted(_) => None,
            Self::Local(local) => local.problem(),
        }
    }
}
