//! Anthropic's Messages API, streamed.
//!
//! One call is `POST {base_url}/v1/messages` (`base_url` without `/v1`, as
//! Anthropic's SDKs take it) with `"stream": true`, the key in `x-api-key`
//! and the API version in `anthropic-version`. The answer is a sequence of
//! server-sent events: `message_start` (with the prompt's token counts),
//! for each content block a `content_block_start`, its deltas and a
//! `content_block_stop`, then `message_delta` (stop reason, output tokens)
//! and `message_stop`, with `ping`s anywhere. See `wire` for how a
//! conversation is put into Anthropic's shape and `decode` for how the
//! answer is read.
//!
//! Sending, timeouts, error classification and key scrubbing are shared
//! with the other HTTP providers (see `http`); Anthropic's 529 is
//! "overloaded", and its error bodies carry `error.message` as OpenAI's do.

use reqwest::header::HeaderName;
use switchyard_common::config::AnthropicSettings;

use self::decode::Messages;
use self::wire::WireRequest;
use super::http::{self, Endpoint};
use super::{ChatRequest, Provider, ProviderStream};

mod decode;
mod wire;

/// A provider speaking Anthropic's streamed Messages API.
#[derive(Debug)]
pub struct Anthropic {
    endpoint: Endpoint,
    max_tokens: u32,
    max_attempts: u32,
}

impl Anthropic {
    /// Reads the API key from the environment now, so that a missing key
    /// stops start-up rather than failing every run.
    pub fn new(settings: &AnthropicSettings, http: reqwest::Client) -> anyhow::Result<Self> {
        let url = http::url("Anthropic", &settings.base_url, &["v1", "messages"])?;
        let endpoint = Endpoint::new(http, url, settings.timeout_secs)?
            .with_api_key(
                settings.api_key_env.as_deref(),
                HeaderName::from_static("x-api-key"),
                "",
            )?
            .with_header(
                HeaderName::from_static("anthropic-version"),
                &settings.anthropic_version,
            )?
            .with_configured_headers(&settings.headers)?;
        Ok(Self {
            endpoint,
            max_tokens: settings.max_tokens,
            max_attempts: settings.max_attempts,
        })
    }
}

impl Provider for Anthropic {
    fn stream(&self, request: ChatRequest) -> ProviderStream {
        let body = WireRequest::new(&request, self.max_tokens);
        self.endpoint.stream(&body, Messages::default())
    }

    fn max_attempts(&self) -> u32 {
        self.max_attempts
    }
}
