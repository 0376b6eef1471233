//! A local fake of OpenAI's chat-completions API, Anthropic's Messages API
//! and Ollama's chat API, speaking their real streaming wire formats, for
//! tests and benchmarks.
//!
//! Provider clients are only trustworthy if they are tested against the
//! bytes a real server sends: SSE events split at arbitrary points, tool-call
//! arguments in fragments, a usage chunk with no choices, `[DONE]`, `ping`
//! events, JSON lines cut across writes, error bodies with `Retry-After`.
//! This crate serves exactly that on `127.0.0.1`, with no network access
//! and no API key, so that tests drive the real HTTP client end to end.
//!
//! ```no_run
//! # async fn demo() {
//! use switchyard_fake_llm::{FakeLlm, Reply};
//!
//! let fake = FakeLlm::start().await;
//! fake.push(Reply::text(&["Hel", "lo"], Some((3, 2))));
//! // ... point the client at fake.base_url() and call it ...
//! let sent = fake.requests();
//! assert_eq!(sent[0].body["model"], "gpt-test");
//! # }
//! ```
//!
//! Served, streamed only (a non-streaming request gets a 400):
//!
//! - `POST /v1/chat/completions`: OpenAI ([`FakeLlm::base_url`]);
//! - `POST /openai/deployments/{deployment}/chat/completions`: the same,
//!   at Azure OpenAI's path ([`FakeLlm::origin`] is the Azure endpoint);
//! - `POST /v1/messages`: Anthropic ([`FakeLlm::origin`] is the base URL);
//! - `POST /api/chat`: Ollama ([`FakeLlm::origin`] is the base URL), which
//!   streams unless the request says `"stream": false`.
//!
//! The same [`Reply`] renders in every format. Replies come from a queue
//! ([`FakeLlm::push`]), then from a default ([`FakeLlm::set_default`]).
//! Every request is recorded ([`FakeLlm::requests`]), together with the
//! instant its first token was handed to the connection, for
//! time-to-first-token measurements ([`FakeLlm::first_token_at`]).
//!
//! Responses are generated lazily and written as produced; the server
//! holds no per-token state, so hundreds of concurrent streams at tens of
//! thousands of tokens per second cost little besides JSON encoding.

mod anthropic;
mod ollama;
mod reply;
mod sse;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use tokio::task::JoinSet;

pub use reply::{FakeToolCall, Reply, STREAM_WORDS, stream_text};

/// A running fake server. Dropping it stops accepting connections (streams
/// under way end with their runtime).
pub struct FakeLlm {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// The accept loop, held to be aborted when dropped.
    _server: JoinSet<()>,
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// The JSON body; `Value::Null` if it was not JSON.
    pub body: Value,
    pub headers: HeaderMap,
    /// The path and query asked for.
    pub uri: Uri,
    pub received_at: Instant,
    /// When the first chunk carrying content or a tool call was handed to
    /// the connection; `None` if none was (yet).
    pub first_token_at: Option<Instant>,
}

impl RecordedRequest {
    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The text of the last `"role": "user"` message that has text (in
    /// Anthropic's format, a user turn may hold only tool results).
    pub fn last_user_message(&self) -> Option<String> {
        let parsed = IncomingRequest::deserialize(&self.body).ok()?;
        parsed.last_user_message()
    }
}

impl FakeLlm {
    /// Serve on `127.0.0.1` at a free port.
    ///
    /// # Panics
    /// If no local port can be bound; see [`FakeLlm::try_start`].
    pub async fn start() -> Self {
        match Self::try_start().await {
            Ok(fake) => fake,
            Err(e) => panic!("fake LLM server could not bind 127.0.0.1: {e}"),
        }
    }

    /// Serve on `127.0.0.1` at a free port, in a task of the current runtime.
    pub async fn try_start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route(
                "/openai/deployments/{deployment}/chat/completions",
                post(chat_completions),
            )
            .route("/v1/messages", post(messages))
            .route("/api/chat", post(ollama_chat))
            .fallback(|| async { error_response(Format::OpenAi, 404, "unknown path", None) })
            .with_state(Arc::clone(&shared));
        let mut server = JoinSet::new();
        server.spawn(async move {
            // Only fails if accepting fails for good; the fake then just stops.
            // Each chunk must leave as it is written, as a real provider's does.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            shared,
            _server: server,
        })
    }

    /// The OpenAI base URL, e.g. `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The server's root, e.g. `http://127.0.0.1:PORT`: Anthropic's base
    /// URL (without `/v1`), Ollama's, and Azure OpenAI's resource endpoint.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answer the next request (in arrival order) with `reply`.
    pub fn push(&self, reply: Reply) {
        lock(&self.shared.queue).push_back(reply);
    }

    /// The answer when the queue is empty. Initially a short text with usage.
    pub fn set_default(&self, reply: Reply) {
        *lock(&self.shared.default) = Some(reply);
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Forget the requests received so far (long benchmarks).
    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
        lock(&self.shared.first_tokens).clear();
    }

    /// When the first token of the first request whose last user message
    /// was `content` was handed to the connection.
    pub fn first_token_at(&self, content: &str) -> Option<Instant> {
        lock(&self.shared.first_tokens).get(content).copied()
    }
}

#[derive(Default)]
struct Shared {
    queue: Mutex<VecDeque<Reply>>,
    default: Mutex<Option<Reply>>,
    requests: Mutex<Vec<RecordedRequest>>,
    first_tokens: Mutex<HashMap<String, Instant>>,
}

impl Shared {
    fn next_reply(&self) -> Reply {
        if let Some(reply) = lock(&self.queue).pop_front() {
            return reply;
        }
        lock(&self.default).clone().unwrap_or_else(|| {
            Reply::text(
                &["Hello", " from", " the", " fake", " model."],
                Some((10, 5)),
            )
        })
    }

    fn record_first_token(&self, index: usize, last_user: Option<&str>, at: Instant) {
        if let Some(request) = lock(&self.requests).get_mut(index) {
            request.first_token_at.get_or_insert(at);
        }
        if let Some(content) = last_user {
            lock(&self.first_tokens)
                .entry(content.to_owned())
                .or_insert(at);
        }
    }
}

/// A poisoned lock only means a test panicked elsewhere; the data is fine.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The parts of a request body the fake acts on, in either format.
#[derive(Deserialize)]
struct IncomingRequest {
    #[serde(default)]
    model: String,
    /// Absent: Ollama streams, the others do not.
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    /// Anthropic's system prompt, apart from the messages.
    #[serde(default)]
    system: Option<Value>,
    #[serde(default)]
    messages: Vec<IncomingMessage>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct IncomingMessage {
    role: String,
    #[serde(default)]
    content: Option<Value>,
}

/// The text of a `content`: a string, or (Anthropic) the `text` blocks of
/// an array; `None` if it has none.
fn text_of(content: Option<&Value>) -> Option<String> {
    match content? {
        Value::String(text) => Some(text.clone()),
        Value::Array(blocks) => {
            let texts: Vec<&str> = blocks
                .iter()
                .filter(|block| block["type"] == "text")
                .filter_map(|block| block["text"].as_str())
                .collect();
            (!texts.is_empty()).then(|| texts.concat())
        }
        _ => None,
    }
}

impl IncomingRequest {
    fn last_user_message(&self) -> Option<String> {
        self.messages
            .iter()
            .rev()
            .filter(|m| m.role == "user")
            .find_map(|m| text_of(m.content.as_ref()))
    }

    fn prompt_words(&self) -> u32 {
        let texts = self
            .messages
            .iter()
            .map(|m| m.content.as_ref())
            .chain([self.system.as_ref()])
            .filter_map(text_of);
        let count: usize = texts.map(|c| c.split_whitespace().count()).sum();
        u32::try_from(count).unwrap_or(u32::MAX)
    }
}

/// The wire format a route speaks.
#[derive(Clone, Copy)]
enum Format {
    OpenAi,
    Anthropic,
    Ollama,
}

impl Format {
    /// Whether a request that does not say `stream` is streamed.
    fn streams_by_default(self) -> bool {
        matches!(self, Self::Ollama)
    }

    /// The `Content-Type` of a streamed answer.
    fn content_type(self) -> &'static str {
        match self {
            Self::OpenAi | Self::Anthropic => "text/event-stream",
            Self::Ollama => "application/x-ndjson",
        }
    }
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(&shared, Format::OpenAi, uri, headers, &body).await
}

async fn messages(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(&shared, Format::Anthropic, uri, headers, &body).await
}

async fn ollama_chat(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(&shared, Format::Ollama, uri, headers, &body).await
}

/// Record the request, then answer it with the next reply, in `format`.
async fn answer(
    shared: &Arc<Shared>,
    format: Format,
    uri: Uri,
    headers: HeaderMap,
    body: &[u8],
) -> Response {
    let received_at = Instant::now();
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let parsed = IncomingRequest::deserialize(&body);
    let index = {
        let mut requests = lock(&shared.requests);
        requests.push(RecordedRequest {
            body,
            headers,
            uri,
            received_at,
            first_token_at: None,
        });
        requests.len() - 1
    };
    let request = match parsed {
        Ok(request) if request.stream.unwrap_or(format.streams_by_default()) => request,
        Ok(_) => {
            let message = "the fake LLM only serves streamed answers";
            return error_response(format, 400, message, None);
        }
        Err(e) => {
            let message = format!("invalid request body: {e}");
            return error_response(format, 400, &message, None);
        }
    };

    let mut reply = shared.next_reply();
    while let Reply::Delayed {
        delay,
        reply: inner,
    } = reply
    {
        tokio::time::sleep(delay).await;
        reply = *inner;
    }
    if let Reply::Status {
        status,
        message,
        retry_after,
    } = &reply
    {
        return error_response(format, *status, message, *retry_after);
    }

    let frames = match format {
        Format::OpenAi => {
            let ctx = sse::ChunkContext {
                id: format!("chatcmpl-fake-{index}"),
                created: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                model: request.model.clone(),
                include_usage: request
                    .stream_options
                    .as_ref()
                    .is_some_and(|o| o.include_usage),
                prompt_words: request.prompt_words(),
            };
            sse::frames(reply, ctx)
        }
        Format::Anthropic => {
            let ctx = anthropic::MessageContext {
                id: format!("msg_fake_{index}"),
                model: request.model.clone(),
                prompt_words: request.prompt_words(),
            };
            anthropic::frames(reply, ctx)
        }
        Format::Ollama => {
            let ctx = ollama::LineContext::new(request.model.clone(), request.prompt_words());
            ollama::frames(reply, ctx)
        }
    };
    let last_user = request.last_user_message();
    let shared = Arc::clone(shared);
    let frames = frames.map(move |frame| {
        if frame.first_token {
            shared.record_first_token(index, last_user.as_deref(), Instant::now());
        }
        Ok::<_, std::convert::Infallible>(frame.bytes)
    });
    let mut response = Body::from_stream(frames).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// An HTTP error with the error body of `format`.
fn error_response(
    format: Format,
    status: u16,
    message: &str,
    retry_after: Option<u64>,
) -> Response {
    let body = match format {
        Format::OpenAi => sse::error_body(status, message),
        Format::Anthropic => anthropic::error_body(status, message),
        Format::Ollama => ollama::error_body(message),
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
