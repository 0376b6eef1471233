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
//! Timeouts: `timeout_secs` bounds the wait for the response to start and
//! every silence between two chunks, never the whole answer, so that long
//! answers work while a stalled connection is noticed. The shared
//! `reqwest::Client` must therefore not set a total request timeout.
//!
//! Failures are classified for the runner's retry decision (429 rate
//! limited, 503/529 overloaded, other 5xx, timeouts and dropped connections
//! retryable; 400/404/422 and 401/403 not), and the API key is scrubbed
//! from every error text, since some servers echo the credentials they
//! refuse.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use eventsource_stream::Eventsource;
use futures::stream::{self, StreamExt, TryStreamExt};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use switchyard_common::config::OpenAiSettings;

use self::decode::decode;
use self::wire::{WireErrorBody, WireRequest};
use super::{ChatRequest, Provider, ProviderError, ProviderStream};

mod decode;
mod wire;

/// The most of an error body read to find the provider's message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A provider speaking OpenAI's streamed chat completions.
pub struct OpenAi {
    http: reqwest::Client,
    url: reqwest::Url,
    /// Authorization and the configured extra headers.
    headers: HeaderMap,
    scrubber: Scrubber,
    timeout: Duration,
    max_attempts: u32,
}

impl OpenAi {
    /// Reads the API key from the environment now, so that a missing key
    /// stops start-up rather than failing every run.
    pub fn new(settings: &OpenAiSettings, http: reqwest::Client) -> anyhow::Result<Self> {
        let base = settings.base_url.trim_end_matches('/');
        let url = reqwest::Url::parse(&format!("{base}/chat/completions"))
            .with_context(|| format!("invalid OpenAI base_url {:?}", settings.base_url))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!(
                "OpenAI base_url {:?} must be http or https",
                settings.base_url
            );
        }
        if settings.timeout_secs == 0 {
            bail!("timeout_secs must be at least 1");
        }

        let api_key = match &settings.api_key_env {
            None => None,
            Some(var) => match std::env::var(var) {
                Ok(key) if !key.trim().is_empty() => Some(key.trim().to_owned()),
                Ok(_) => bail!("the environment variable {var} (api_key_env) is empty"),
                Err(std::env::VarError::NotPresent) => {
                    bail!("the environment variable {var} (api_key_env) is not set")
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    bail!("the environment variable {var} (api_key_env) is not valid UTF-8")
                }
            },
        };

        let mut headers = HeaderMap::new();
        if let Some(key) = &api_key {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| anyhow!("the API key has characters not allowed in an HTTP header"))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        // After Authorization, so that a configured header (e.g. Azure's
        // `api-key` scheme) can replace it.
        for (name, value) in &settings.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .with_context(|| format!("invalid HTTP header name {name:?}"))?;
            let mut value = HeaderValue::from_str(value)
                .with_context(|| format!("invalid value for HTTP header {name}"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }

        Ok(Self {
            http,
            url,
            headers,
            scrubber: Scrubber(api_key.map(Arc::from)),
            timeout: Duration::from_secs(settings.timeout_secs),
            max_attempts: settings.max_attempts,
        })
    }
}

impl std::fmt::Debug for OpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAi")
            .field("url", &self.url.as_str())
            .field("has_api_key", &self.scrubber.0.is_some())
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl Provider for OpenAi {
    fn stream(&self, request: ChatRequest) -> ProviderStream {
        let scrubber = self.scrubber.clone();
        let body = match serde_json::to_vec(&WireRequest::new(&request)) {
            Ok(body) => body,
            Err(e) => {
                let error = ProviderError::Protocol(format!("cannot encode the request: {e}"));
                return stream::iter([Err(error)]).boxed();
            }
        };
        let send = self
            .http
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send();
        let timeout = self.timeout;
        let start = async move {
            let response = tokio::time::timeout(timeout, send)
                .await
                .map_err(|_| ProviderError::Timeout)?
                .map_err(|e| transport_error(&e))?;
            if !response.status().is_success() {
                return Err(status_error(response, timeout).await);
            }
            if let Some(kind) = response.headers().get(CONTENT_TYPE) {
                let kind = String::from_utf8_lossy(kind.as_bytes());
                if !kind.trim_start().starts_with("text/event-stream") {
                    let problem = format!("expected an event stream, got {kind}");
                    return Err(ProviderError::Protocol(problem));
                }
            }
            Ok(decode(
                Box::pin(response.bytes_stream().eventsource()),
                timeout,
            ))
        };
        stream::once(start)
            .try_flatten()
            .map_err(move |e| scrubber.scrub(e))
            .boxed()
    }

    fn max_attempts(&self) -> u32 {
        self.max_attempts
    }
}

/// Removes the API key from error texts.
#[derive(Clone)]
struct Scrubber(Option<Arc<str>>);

impl Scrubber {
    fn scrub(&self, error: ProviderError) -> ProviderError {
        let Some(key) = self.0.as_deref() else {
            return error;
        };
        let clean = |text: String| text.replace(key, "[redacted]");
        match error {
            ProviderError::Server { status, message } => ProviderError::Server {
                status,
                message: clean(message),
            },
            ProviderError::Transport(m) => ProviderError::Transport(clean(m)),
            ProviderError::BadRequest(m) => ProviderError::BadRequest(clean(m)),
            ProviderError::Auth(m) => ProviderError::Auth(clean(m)),
            ProviderError::Protocol(m) => ProviderError::Protocol(clean(m)),
            other => other,
        }
    }
}

/// What a failed HTTP status means for the caller. 408 counts as a
/// timeout; 4xx statuses not named below are refusals like 400.
fn classify_status(status: u16, message: String, retry_after: Option<Duration>) -> ProviderError {
    match status {
        429 => ProviderError::RateLimited { retry_after },
        503 | 529 => ProviderError::Overloaded { retry_after },
        408 => ProviderError::Timeout,
        401 | 403 => ProviderError::Auth(message),
        400 | 404 | 422 => ProviderError::BadRequest(message),
        405..=499 => ProviderError::BadRequest(format!("HTTP {status}: {message}")),
        500..=599 => ProviderError::Server { status, message },
        _ => ProviderError::Protocol(format!("unexpected HTTP status {status}: {message}")),
    }
}

async fn status_error(mut response: reqwest::Response, timeout: Duration) -> ProviderError {
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let mut body = Vec::new();
    let read = async {
        while let Ok(Some(chunk)) = response.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() >= MAX_ERROR_BODY {
                break;
            }
        }
    };
    // A body that never comes still leaves the status to report.
    let _ = tokio::time::timeout(timeout, read).await;
    let message = match serde_json::from_slice::<WireErrorBody>(&body) {
        Ok(WireErrorBody::Nested { error }) => error.message,
        Ok(WireErrorBody::Flat { error: message } | WireErrorBody::Message { message }) => message,
        Err(_) => String::from_utf8_lossy(&body)
            .trim()
            .chars()
            .take(500)
            .collect(),
    };
    let message = if message.is_empty() {
        status.canonical_reason().unwrap_or("no message").to_owned()
    } else {
        message
    };
    classify_status(status.as_u16(), message, retry_after)
}

/// `retry-after-ms` (OpenAI's own) or `Retry-After` in seconds.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    let millis =
        number("retry-after-ms").and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok());
    millis.or_else(|| Duration::try_from_secs_f64(number("retry-after")?).ok())
}

fn transport_error(error: &reqwest::Error) -> ProviderError {
    if error.is_timeout() {
        return ProviderError::Timeout;
    }
    // reqwest's own text omits the cause ("connection refused", ...).
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    ProviderError::Transport(text)
}
