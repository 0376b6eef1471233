//! Ollama's native chat API, streamed.
//!
//! One call is `POST {base_url}/api/chat` with `"stream": true`, answered
//! by one JSON object per line (`application/x-ndjson`), each carrying a
//! piece of the assistant's message, the last one `"done": true` with the
//! token counts. Where it differs from OpenAI's format: tool calls arrive
//! whole, their arguments a JSON object and without ids (ids `call_{n}`
//! are made up here, and serve only to pair a call with its result); a
//! tool result names its tool (`tool_name`) instead of a call id; the
//! configured `options` (temperature, `num_ctx`, ...) and `keep_alive` are
//! sent with every call. See `wire` for the request and `decode` for how
//! the answer is read.
//!
//! Usage: `prompt_eval_count` is the input (the whole prompt), and
//! `prompt_eval_cached_count` the part read from Ollama's prompt cache;
//! missing counts are 0. Servers before that field report no cached part,
//! and some older ones omit `prompt_eval_count` when the whole prompt was
//! cached, so their input can read 0.
//!
//! Timeouts: Ollama loads the model into memory and reads the whole prompt
//! before it answers anything, which with a large model on a cold server
//! takes minutes. So `start_timeout_secs` bounds the wait for the answer to
//! start, and `timeout_secs` every silence between two lines after that.
//!
//! Sending, error classification and key scrubbing are shared with the
//! other HTTP providers (see `http`): 404 (the model is not pulled) and 400
//! are refusals and 401/403 bad credentials, none retried; 429, 503
//! (Ollama's queue is full) and other 5xx are retried. An `{"error": ...}`
//! line once the answer has started is a failure while generating (the
//! model's runner stopped, or ran out of memory), a server error like a
//! 500. An answer that ends without its last line was dropped, and is
//! retried as the other providers retry a stream cut short.

use reqwest::header::AUTHORIZATION;
use serde_json::{Map, Value};
use switchyard_common::config::{KeepAlive, OllamaSettings};

use self::decode::Answer;
use self::wire::WireRequest;
use super::http::{self, Endpoint};
use super::{ChatRequest, Provider, ProviderStream};

mod decode;
mod wire;

/// A provider speaking Ollama's native, streamed chat API.
#[derive(Debug)]
pub struct Ollama {
    endpoint: Endpoint,
    max_attempts: u32,
    options: Map<String, Value>,
    keep_alive: Option<KeepAlive>,
}

impl Ollama {
    /// Reads the API key from the environment now, so that a missing key
    /// stops start-up rather than failing every run.
    pub fn new(settings: &OllamaSettings, http: reqwest::Client) -> anyhow::Result<Self> {
        let url = http::url("Ollama", &settings.base_url, &["api", "chat"])?;
        let endpoint = Endpoint::new(http, url, settings.timeout_secs)?
            .with_start_timeout(settings.start_timeout_secs)?
            .with_api_key(settings.api_key_env.as_deref(), AUTHORIZATION, "Bearer ")?
            .with_configured_headers(&settings.headers)?;
        Ok(Self {
            endpoint,
            max_attempts: settings.max_attempts,
            options: settings.options.clone(),
            keep_alive: settings.keep_alive.clone(),
        })
    }
}

impl Provider for Ollama {
    fn stream(&self, request: ChatRequest) -> ProviderStream {
        let body = WireRequest::new(&request, &self.options, self.keep_alive.as_ref());
        self.endpoint.stream(&body, Answer::default())
    }

    fn max_attempts(&self) -> u32 {
        self.max_attempts
    }
}
