//! The scripted answers a [`FakeLlm`](crate::FakeLlm) gives.

use std::time::Duration;

/// The words a [`Reply::Stream`] cycles through, one per chunk: token `i`
/// is `STREAM_WORDS[i % STREAM_WORDS.len()]`.
pub const STREAM_WORDS: [&str; 8] = [
    "lorem ",
    "ipsum ",
    "dolor ",
    "sit ",
    "amet ",
    "consectetur ",
    "adipiscing ",
    "elit ",
];

/// What the fake answers to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Streamed text: each chunk is its own SSE event (Ollama: its own
    /// line), verbatim (split words mid-word to exercise the client).
    /// `usage` is `(prompt, completion)` tokens; `None` sends no usage
    /// chunk, like servers that do not support it.
    Text {
        chunks: Vec<String>,
        usage: Option<(u32, u32)>,
    },
    /// Streamed tool calls. OpenAI: `finish_reason: "tool_calls"`; each
    /// call gets its own `index`, and after one chunk per call carrying id,
    /// type and name, the argument fragments of all calls are interleaved
    /// round-robin, which the format allows and a client must handle.
    /// Anthropic: one `tool_use` block per call, one after the other, each
    /// fragment an `input_json_delta`; `stop_reason: "tool_use"`. Ollama:
    /// all calls whole on one line, the fragments joined into a JSON object
    /// (or, if they do not join into JSON, sent as a string), no ids.
    ToolCalls {
        calls: Vec<FakeToolCall>,
        usage: Option<(u32, u32)>,
    },
    /// An HTTP error with `message`, in the error body shape of the wire
    /// format asked for, with `Retry-After: {seconds}` when set.
    Status {
        status: u16,
        message: String,
        retry_after: Option<u64>,
    },
    /// Streamed text, then a failure reported inside the stream (the status
    /// was already 200), after which the connection closes. `status` is the
    /// HTTP status the failure would have had: Anthropic's `error` event
    /// carries the matching `error.type` (529: `overloaded_error`), OpenAI's
    /// error chunk has it as `code`, as compatible servers send it; Ollama's
    /// `{"error": message}` line has no status.
    Interrupted {
        chunks: Vec<String>,
        status: u16,
        message: String,
    },
    /// For benchmarks: `tokens` one-word chunks, one every `interval`
    /// (zero: as fast as possible, several events per write), then usage
    /// of `(prompt words, tokens)`.
    Stream { tokens: usize, interval: Duration },
    /// Each string sent as one `data:` event (Ollama: one line), as is, with
    /// nothing added (no role chunk, no `[DONE]`, no `message_stop`, no
    /// `"done": true` line): for malformed or truncated streams. In
    /// Anthropic's format the event is named by the JSON's `type`, if it
    /// has one, as Anthropic names its events.
    Raw { events: Vec<String> },
    /// Wait `delay` before answering with `reply` (response headers included):
    /// a server that stalls.
    Delayed { delay: Duration, reply: Box<Reply> },
}

/// One tool call of a [`Reply::ToolCalls`].
#[derive(Debug, Clone, PartialEq)]
pub struct FakeToolCall {
    pub id: String,
    pub name: String,
    /// The JSON arguments, cut into the pieces sent in separate chunks.
    pub argument_fragments: Vec<String>,
}

impl Reply {
    /// Streamed text from `chunks`, with usage `(prompt, completion)`.
    pub fn text(chunks: &[&str], usage: Option<(u32, u32)>) -> Self {
        let chunks = chunks.iter().map(|c| (*c).to_owned()).collect();
        Self::Text { chunks, usage }
    }

    /// A single tool call whose arguments arrive in `fragments`.
    pub fn tool_call(id: &str, name: &str, fragments: &[&str], usage: Option<(u32, u32)>) -> Self {
        Self::ToolCalls {
            calls: vec![FakeToolCall::new(id, name, fragments)],
            usage,
        }
    }

    /// An HTTP error, shaped as the wire format's error body.
    pub fn error(status: u16, message: &str, retry_after: Option<u64>) -> Self {
        Self::Status {
            status,
            message: message.to_owned(),
            retry_after,
        }
    }

    /// Text from `chunks`, then a mid-stream failure of `status`.
    pub fn interrupted(chunks: &[&str], status: u16, message: &str) -> Self {
        Self::Interrupted {
            chunks: chunks.iter().map(|c| (*c).to_owned()).collect(),
            status,
            message: message.to_owned(),
        }
    }

    /// `reply`, sent after `delay`.
    pub fn delayed(delay: Duration, reply: Reply) -> Self {
        Self::Delayed {
            delay,
            reply: Box::new(reply),
        }
    }
}

impl FakeToolCall {
    pub fn new(id: &str, name: &str, fragments: &[&str]) -> Self {
        Self {
            id: id.to_owned(),
            name: name.to_owned(),
            argument_fragments: fragments.iter().map(|f| (*f).to_owned()).collect(),
        }
    }
}

/// The text a [`Reply::Stream`] of `tokens` chunks streams.
pub fn stream_text(tokens: usize) -> String {
    (0..tokens)
        .map(|i| STREAM_WORDS[i % STREAM_WORDS.len()])
        .collect()
}
