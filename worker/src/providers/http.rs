//! What the HTTP providers share: where and how a call is sent, and what
//! a failed response means.
//!
//! An [`Endpoint`] holds the URL, the credentials and configured headers,
//! and the timeouts; [`Endpoint::stream`] posts one JSON request and hands
//! the messages of a successful answer (server-sent events or JSON lines,
//! as the wire [`Format`] reads) to the shared read loop. The wire formats
//! differ; sending, reading an error response and classifying it for the
//! runner's retry decision do not.
//!
//! Timeouts: `timeout_secs` bounds the wait for the response to start and
//! every silence between two messages, never the whole answer, so that long
//! answers work while a stalled connection is noticed. A server that reads
//! the whole prompt or loads the model before it answers anything (Ollama)
//! gets a longer wait for the response and its first message
//! ([`Endpoint::with_start_timeout`]). The shared `reqwest::Client` must
//! therefore not set a total request timeout.
//!
//! Failures are classified (429 rate limited, 503/529 overloaded, other
//! 5xx, timeouts and dropped connections retryable; other 4xx not), and the
//! API key is scrubbed from every error text, since some servers echo the
//! credentials they refuse.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::ProviderError;
use super::streaming::{self, Deadlines, Format, Framing};

/// The most of an error body read to find the provider's message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// `base_url` with `segments` appended as path segments (escaped, so that
/// e.g. a deployment name cannot change the path). `provider` names the
/// format in errors.
pub(super) fn url(provider: &str, base_url: &str, segments: &[&str]) -> anyhow::Result<Url> {
    let mut url = Url::parse(base_url.trim_end_matches('/'))
        .with_context(|| format!("invalid {provider} base_url {base_url:?}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("{provider} base_url {base_url:?} must be http or https");
    }
    url.path_segments_mut()
        .map_err(|()| anyhow!("{provider} base_url {base_url:?} cannot take a path"))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// Where and how one provider's calls are sent.
pub(super) struct Endpoint {
    http: reqwest::Client,
    url: Url,
    /// Credentials, format headers and the configured extra headers.
    headers: HeaderMap,
    scrubber: Scrubber,
    /// For the response and its first message, counted from sending.
    start_timeout: Duration,
    /// For each silence between messages, and for an error body.
    timeout: Duration,
}

impl Endpoint {
    pub(super) fn new(http: reqwest::Client, url: Url, timeout_secs: u64) -> anyhow::Result<Self> {
        if timeout_secs == 0 {
            bail!("timeout_secs must be at least 1");
        }
        Ok(Self {
            http,
            url,
            headers: HeaderMap::new(),
            scrubber: Scrubber(Vec::new()),
            start_timeout: Duration::from_secs(timeout_secs),
            timeout: Duration::from_secs(timeout_secs),
        })
    }

    /// Wait up to `start_timeout_secs` rather than `timeout_secs` for the
    /// response and its first message, for a server that has long work to
    /// do before it answers anything.
    pub(super) fn with_start_timeout(mut self, start_timeout_secs: u64) -> anyhow::Result<Self> {
        if start_timeout_secs == 0 {
            bail!("start_timeout_secs must be at least 1");
        }
        self.start_timeout = Duration::from_secs(start_timeout_secs);
        Ok(self)
    }

    /// Send the key held by the environment variable `var` (if one is
    /// configured) as `{header}: {prefix}{key}`. Reads it now, so that a
    /// missing key stops start-up rather than failing every run.
    pub(super) fn with_api_key(
        mut self,
        var: Option<&str>,
        header: HeaderName,
        prefix: &str,
    ) -> anyhow::Result<Self> {
        let Some(var) = var else {
            return Ok(self);
        };
        let key = match std::env::var(var) {
            Ok(key) if !key.trim().is_empty() => key.trim().to_owned(),
            Ok(_) => bail!("the environment variable {var} (api_key_env) is empty"),
            Err(std::env::VarError::NotPresent) => {
                bail!("the environment variable {var} (api_key_env) is not set")
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                bail!("the environment variable {var} (api_key_env) is not valid UTF-8")
            }
        };
        let mut value = HeaderValue::from_str(&format!("{prefix}{key}"))
            .map_err(|_| anyhow!("the API key has characters not allowed in an HTTP header"))?;
        value.set_sensitive(true);
        self.headers.insert(header, value);
        self.scrubber.0.push(Arc::from(key));
        Ok(self)
    }

    /// Headers whose values are credentials (read from the environment by
    /// the caller): sent as sensitive and scrubbed from every error text.
    pub(super) fn with_secret_headers(
        mut self,
        headers: &[(HeaderName, String)],
    ) -> anyhow::Result<Self> {
        for (name, secret) in headers {
            let mut value = HeaderValue::from_str(secret).map_err(|_| {
                anyhow!("the value of HTTP header {name} has characters not allowed in a header")
            })?;
            value.set_sensitive(true);
            self.headers.insert(name.clone(), value);
            if !secret.is_empty() {
                self.scrubber.0.push(Arc::from(secret.as_str()));
            }
        }
        Ok(self)
    }

    /// A header every request carries, e.g. the API version.
    pub(super) fn with_header(mut self, name: HeaderName, value: &str) -> anyhow::Result<Self> {
        let value = HeaderValue::from_str(value)
            .with_context(|| format!("invalid value for HTTP header {name}"))?;
        self.headers.insert(name, value);
        Ok(self)
    }

    /// The `headers` of the provider's settings. Call last, so that a
    /// configured header replaces one set before (e.g. a gateway that
    /// wants its own credentials header).
    pub(super) fn with_configured_headers(
        mut self,
        headers: &HashMap<String, String>,
    ) -> anyhow::Result<Self> {
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .with_context(|| format!("invalid HTTP header name {name:?}"))?;
            let mut value = HeaderValue::from_str(value)
                .with_context(|| format!("invalid value for HTTP header {name}"))?;
            value.set_sensitive(true);
            self.headers.insert(name, value);
        }
        Ok(self)
    }

    /// Post `body` as JSON and decode the streamed answer with `format`.
    /// Errors before the first event (HTTP status, connection) come out of
    /// the stream as its first item.
    pub(super) fn stream<F: Format>(
        &self,
        body: &impl Serialize,
        format: F,
    ) -> BoxStream<'static, Result<F::Event, ProviderError>> {
        let scrubber = self.scrubber.clone();
        let body = match serde_json::to_vec(body) {
            Ok(body) => body,
            Err(e) => {
                let error = ProviderError::Protocol(format!("cannot encode the request: {e}"));
                return stream::iter([Err(error)]).boxed();
            }
        };
        let mut request = self
            .http
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json");
        // The model call's trace continues at the provider (`traceparent`).
        for (name, value) in switchyard_common::telemetry::inject() {
            request = request.header(name, value);
        }
        let send = request.body(body).send();
        let (start_timeout, timeout) = (self.start_timeout, self.timeout);
        let start = async move {
            let start_due = Instant::now() + start_timeout;
            let response = tokio::time::timeout_at(start_due, send)
                .await
                .map_err(|_| ProviderError::Timeout)?
                .map_err(|e| transport_error(&e))?;
            if !response.status().is_success() {
                return Err(status_error(response, timeout).await);
            }
            if let Some(kind) = response.headers().get(CONTENT_TYPE) {
                let kind = String::from_utf8_lossy(kind.as_bytes());
                if !F::Message::accepts(&kind) {
                    let expected = F::Message::DESCRIPTION;
                    let problem = format!("expected {expected}, got {kind}");
                    return Err(ProviderError::Protocol(problem));
                }
            }
            // Headers that come late still leave the usual wait for the
            // first message.
            let deadlines = Deadlines {
                first: start_due.max(Instant::now() + timeout),
                idle: timeout,
            };
            let messages = F::Message::messages(response);
            Ok(streaming::decode(messages, deadlines, format))
        };
        stream::once(start)
            .try_flatten()
            .map_err(move |e| scrubber.scrub(e))
            .boxed()
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url.as_str())
            .field("has_api_key", &!self.scrubber.0.is_empty())
            .field("start_timeout", &self.start_timeout)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Removes the API key and other secrets from error texts.
#[derive(Clone)]
struct Scrubber(Vec<Arc<str>>);

impl Scrubber {
    fn scrub(&self, error: ProviderError) -> ProviderError {
        if self.0.is_empty() {
            return error;
        }
        let clean = |text: String| {
            self.0
                .iter()
                .fold(text, |text, secret| text.replace(&**secret, "[redacted]"))
        };
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
pub(super) fn classify_status(
    status: u16,
    message: String,
    retry_after: Option<Duration>,
) -> ProviderError {
    match status {
        429 => ProviderError::RateLimited { retry_after },
        503 | 529 => ProviderError::Overloaded { retry_after },
        408 => ProviderError::Timeout,
        401 | 403 => ProviderError::Auth(message),
        400 | 404 | 413 | 422 => ProviderError::BadRequest(message),
        405..=499 => ProviderError::BadRequest(format!("HTTP {status}: {message}")),
        500..=599 => ProviderError::Server { status, message },
        _ => ProviderError::Protocol(format!("unexpected HTTP status {status}: {message}")),
    }
}

/// Error bodies: `{"error": {"message": …}}` (OpenAI's, and Anthropic's
/// with a `type` beside it), `{"error": "…"}` (Ollama's), then shapes seen
/// from compatible servers.
#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorBody {
    Nested { error: ErrorMessage },
    Flat { error: String },
    Message { message: String },
}

#[derive(Deserialize)]
struct ErrorMessage {
    #[serde(default)]
    message: String,
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
    let message = match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(ErrorBody::Nested { error }) => error.message,
        Ok(ErrorBody::Flat { error: message } | ErrorBody::Message { message }) => message,
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

pub(super) fn transport_error(error: &reqwest::Error) -> ProviderError {
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
