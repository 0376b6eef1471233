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
//! Failures are classified for the runner's retry decision (see
//! [`classify_status`]), and the API key is scrubbed from every error text,
//! since some servers echo the credentials they refuse.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::stream::{self, Stream, StreamExt, TryStreamExt};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_common::config::OpenAiSettings;
use switchyard_common::domain::Usage;

use super::{
    ChatMessage, ChatRequest, Provider, ProviderError, ProviderEvent, ProviderStream, ToolCall,
};

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

type SseStream =
    Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

/// The events of one answer, from its server-sent events.
fn decode(
    events: SseStream,
    idle: Duration,
) -> impl Stream<Item = Result<ProviderEvent, ProviderError>> {
    let decoder = Decoder {
        events,
        idle,
        pending: VecDeque::new(),
        tool_calls: BTreeMap::new(),
        finished: false,
        ended: false,
    };
    stream::unfold(decoder, |mut decoder| async move {
        let item = decoder.next().await?;
        Some((item, decoder))
    })
}

struct Decoder {
    events: SseStream,
    idle: Duration,
    /// Decoded but not yet handed out.
    pending: VecDeque<ProviderEvent>,
    /// Tool calls being assembled, by `index`.
    tool_calls: BTreeMap<u32, PartialToolCall>,
    /// A `finish_reason` arrived: the answer is complete.
    finished: bool,
    /// Nothing more to read (`[DONE]`, end of stream or an error).
    ended: bool,
}

#[derive(Default)]
struct PartialToolCall {
    id: String,
    name: String,
    arguments: String,
}

impl Decoder {
    async fn next(&mut self) -> Option<Result<ProviderEvent, ProviderError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.ended {
                return None;
            }
            let step = match tokio::time::timeout(self.idle, self.events.next()).await {
                Err(_) => Err(ProviderError::Timeout),
                Ok(Some(Ok(event))) => self.handle(&event.data),
                Ok(Some(Err(e))) => Err(sse_error(e)),
                Ok(None) if self.finished => self.end(),
                Ok(None) => Err(ProviderError::Transport(
                    "the stream ended before the answer was complete".into(),
                )),
            };
            if let Err(error) = step {
                self.ended = true;
                self.pending.clear();
                return Some(Err(error));
            }
        }
    }

    fn handle(&mut self, data: &str) -> Result<(), ProviderError> {
        if data.trim() == "[DONE]" {
            return self.end();
        }
        let chunk: WireChunk = serde_json::from_str(data)
            .map_err(|e| ProviderError::Protocol(format!("malformed chunk: {e}")))?;
        if let Some(error) = chunk.error {
            // The status was already 200: classify by the error's own code
            // when it is an HTTP status, else as a server failure.
            let status = error
                .code
                .as_ref()
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok());
            let status = status.filter(|s| (400..600).contains(s)).unwrap_or(500);
            return Err(classify_status(status, error.message, None));
        }
        // Only one choice is asked for (no `n`): choice 0.
        for choice in chunk
            .choices
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.index == 0)
        {
            let delta = choice.delta.unwrap_or_default();
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                self.pending.push_back(ProviderEvent::TextDelta(text));
            }
            for fragment in delta.tool_calls.unwrap_or_default() {
                let call = self.tool_calls.entry(fragment.index).or_default();
                if let Some(id) = fragment.id.filter(|id| !id.is_empty()) {
                    call.id = id;
                }
                let function = fragment.function.unwrap_or_default();
                call.name
                    .push_str(function.name.as_deref().unwrap_or_default());
                call.arguments
                    .push_str(function.arguments.as_deref().unwrap_or_default());
            }
            if choice.finish_reason.is_some() {
                self.finished = true;
                self.flush_tool_calls()?;
            }
        }
        if let Some(usage) = chunk.usage {
            let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.pending.push_back(ProviderEvent::Usage(Usage {
                input_tokens: count(usage.prompt_tokens),
                output_tokens: count(usage.completion_tokens),
            }));
        }
        Ok(())
    }

    fn end(&mut self) -> Result<(), ProviderError> {
        self.ended = true;
        self.flush_tool_calls()
    }

    fn flush_tool_calls(&mut self) -> Result<(), ProviderError> {
        for (index, call) in std::mem::take(&mut self.tool_calls) {
            if call.name.is_empty() {
                return Err(ProviderError::Protocol(format!(
                    "tool call {index} has no name"
                )));
            }
            // Some servers omit ids; the id only has to match the tool result.
            let id = if call.id.is_empty() {
                format!("call_{index}")
            } else {
                call.id
            };
            let call = ToolCall {
                id,
                name: call.name,
                arguments: call.arguments,
            };
            self.pending.push_back(ProviderEvent::ToolCall(call));
        }
        Ok(())
    }
}

fn sse_error(error: EventStreamError<reqwest::Error>) -> ProviderError {
    match error {
        EventStreamError::Transport(e) => transport_error(&e),
        EventStreamError::Utf8(_) => {
            ProviderError::Protocol("the event stream is not valid UTF-8".into())
        }
        EventStreamError::Parser(_) => ProviderError::Protocol("malformed event stream".into()),
    }
}

