//! OpenAI chat completions, streamed: the format OpenAI, Azure OpenAI,
//! vLLM, llama.cpp, LM Studio and Ollama (`/v1`) all speak.
//!
//! One call is `POST {base_url}/chat/completions` with `"stream": true` and
//! `stream_options.include_usage`, answered by server-sent events, each a
//! `chat.completion.chunk`, ended by `data: [DONE]`. Text deltas are passed
//! on as they arrive, so that users see tokens at the model's pace. Tool
//! calls arrive as fragments keyed by `index` (the id and name first, the
//! JSON arguments cut anywhere, several calls possibly interleaved); they
//! are joined here and emitted whole once the model has finished, since
//! nothing can act on half a tool call. The last chunk carries no choices,
//! only `usage`.
//!
//! Azure OpenAI ([`AzureSettings`](switchyard_common::config::AzureSettings))
//! serves the same format at
//! `{base_url}/openai/deployments/{deployment}/chat/completions?api-version=…`
//! and takes the key as `api-key: KEY` instead of `Authorization: Bearer KEY`.
//!
//! Sending, timeouts, error classification and key scrubbing are shared
//! with the other HTTP providers (see `http`).

use reqwest::header::{AUTHORIZATION, HeaderName};
use switchyard_common::config::OpenAiSettings;

use self::decode::Chunks;
use self::wire::WireRequest;
use super::http::{self, Endpoint};
use super::{ChatRequest, Provider, ProviderStream};

mod decode;
pub(super) mod wire;

/// A provider speaking OpenAI's streamed chat completions.
#[derive(Debug)]
pub struct OpenAi {
    endpoint: Endpoint,
    max_attempts: u32,
}

impl OpenAi {
    /// Reads the API key from the environment now, so that a missing key
    /// stops start-up rather than failing every run.
    pub fn new(settings: &OpenAiSettings, http: reqwest::Client) -> anyhow::Result<Self> {
        let key_env = settings.api_key_env.as_deref();
        let endpoint = match &settings.azure {
            None => {
                let url = http::url("OpenAI", &settings.base_url, &["chat", "completions"])?;
                Endpoint::new(http, url, settings.timeout_secs)?.with_api_key(
                    key_env,
                    AUTHORIZATION,
                    "Bearer ",
                )?
            }
            Some(azure) => {
                let path = [
                    "openai",
                    "deployments",
                    &azure.deployment,
                    "chat",
                    "completions",
                ];
                let mut url = http::url("Azure OpenAI", &settings.base_url, &path)?;
                url.query_pairs_mut()
                    .append_pair("api-version", &azure.api_version);
                Endpoint::new(http, url, settings.timeout_secs)?.with_api_key(
                    key_env,
                    HeaderName::from_static("api-key"),
                    "",
                )?
            }
        };
        Ok(Self {
            endpoint: endpoint.with_configured_headers(&settings.headers)?,
            max_attempts: settings.max_attempts,
        })
    }
}

/// One streamed chat-completions call to `endpoint`, in OpenAI's format
/// (also how an `http` agent calls an `openai` upstream).
pub(super) fn stream_at(endpoint: &Endpoint, request: &ChatRequest) -> ProviderStream {
    endpoint.stream(&WireRequest::new(request), Chunks::default())
}

impl Provider for OpenAi {
    fn stream(&self, request: ChatRequest) -> ProviderStream {
        stream_at(&self.endpoint, &request)
    }

    fn max_attempts(&self) -> u32 {
        self.max_attempts
    }
}
