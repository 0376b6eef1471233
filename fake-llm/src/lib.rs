//! A local fake of OpenAI's chat-completions API, speaking the real
//! streaming wire format, for tests and benchmarks.
//!
//! Provider clients are only trustworthy if they are tested against the
//! bytes a real server sends: SSE events split at arbitrary points, tool-call
//! arguments in fragments, a usage chunk with no choices, `[DONE]`, error
//! bodies with `Retry-After`. This crate serves exactly that on
//! `127.0.0.1`, with no network access and no API key, so that tests drive
//! the real HTTP client end to end.
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
//! Only `POST {base_url}/chat/completions` with `"stream": true` is served;
//! a non-streaming request gets a 400. Replies come from a queue
//! ([`FakeLlm::push`]), then from a default ([`FakeLlm::set_default`]).
//! Every request is recorded ([`FakeLlm::requests`]), together with the
//! instant its first token was handed to the connection, for
//! time-to-first-token measurements ([`FakeLlm::first_token_at`]).
//!
//! Responses are generated lazily and written as produced; the server
//! holds no per-token state, so hundreds of concurrent streams at tens of
//! thousands of tokens per second cost little besides JSON encoding.

mod reply;
mod sse;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;

pub use reply::{FakeToolCall, Reply, STREAM_WORDS, stream_text};

/// A running fake server. Dropping it stops accepting connections (streams
/// under way end with their runtime).
pub struct FakeLlm {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// The JSON body; `Value::Null` if it was not JSON.
    pub body: Value,
    pub headers: HeaderMap,
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

    /// The text of the last `"role": "user"` message.
    pub fn last_user_message(&self) -> Option<String> {
        let parsed = IncomingRequest::deserialize(&self.body).ok()?;
        parsed.last_user_message().map(str::to_owned)
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
            .fallback(|| async { error_response(Reply::error(404, "unknown path", None)) })
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
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
            server,
        })
    }

    /// The OpenAI base URL, e.g. `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
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

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.server.abort();
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

/// The parts of a request body the fake acts on.
#[derive(Deserialize)]
struct IncomingRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
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

impl IncomingRequest {
    fn last_user_message(&self) -> Option<&str> {
        let message = self.messages.iter().rev().find(|m| m.role == "user")?;
        message.content.as_ref()?.as_str()
    }

    fn prompt_words(&self) -> u32 {
        let words = self
            .messages
            .iter()
            .filter_map(|m| m.content.as_ref()?.as_str());
        let count: usize = words.map(|c| c.split_whitespace().count()).sum();
        u32::try_from(count).unwrap_or(u32::MAX)
    }
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received_at = Instant::now();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let parsed = IncomingRequest::deserialize(&body);
    let index = {
        let mut requests = lock(&shared.requests);
        requests.push(RecordedRequest {
            body,
            headers,
            received_at,
            first_token_at: None,
        });
        requests.len() - 1
    };
    let request = match parsed {
        Ok(request) if request.stream => request,
        Ok(_) => {
            return error_response(Reply::error(
                400,
                "the fake LLM only serves \"stream\": true",
                None,
            ));
        }
        Err(e) => {
            return error_response(Reply::error(
                400,
                &format!("invalid request body: {e}"),
                None,
            ));
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
    if let Reply::Status { .. } = reply {
        return error_response(reply);
    }

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
    let last_user = request.last_user_message().map(str::to_owned);
    let frames = sse::frames(reply, ctx).map(move |frame| {
        if frame.first_token {
            shared.record_first_token(index, last_user.as_deref(), Instant::now());
        }
        Ok::<_, std::convert::Infallible>(frame.bytes)
    });
    let mut response = Body::from_stream(frames).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A `Reply::Status` as an HTTP response; other replies give a 500.
fn error_response(reply: Reply) -> Response {
    let Reply::Status {
        status,
        body,
        retry_after,
    } = reply
    else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
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
