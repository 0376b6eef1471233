//! Rendering a [`Reply`] into Anthropic's streaming Messages format.
//!
//! A streamed reply becomes a sequence of [`Frame`]s of SSE events, each
//! `event: {type}\ndata: {json}\n\n`, built with typed `Serialize` structs
//! so that the bytes match what Anthropic sends:
//!
//! 1. `message_start`, whose `message.usage` has the prompt's tokens (and
//!    `output_tokens: 1`, as Anthropic reports before the first token);
//! 2. per content block, one after the other: `content_block_start`, its
//!    deltas (`text_delta`, or `input_json_delta` for a `tool_use` block,
//!    whose start carries an empty `input`), `content_block_stop`; a `ping`
//!    follows each block's start;
//! 3. `message_delta` with the `stop_reason` and the output tokens;
//! 4. `message_stop`.
//!
//! Without usage (`None`), the `usage` objects are left out. Errors are
//! `{"type": "error", "error": {"type", "message"}}`, as the body of an
//! HTTP error or as an `error` event mid-stream.

use std::time::Duration;

use axum::body::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use serde::Serialize;
use serde_json::{Value, json};

use crate::reply::{FakeToolCall, Reply, STREAM_WORDS};
use crate::sse::{Frame, paced_tokens};

/// What every event of one response shares.
pub(crate) struct MessageContext {
    pub id: String,
    pub model: String,
    /// Prompt tokens reported by [`Reply::Stream`] (the prompt's word count).
    pub prompt_words: u32,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event<'a> {
    MessageStart {
        message: MessageJson<'a>,
    },
    ContentBlockStart {
        index: usize,
        content_block: Block<'a>,
    },
    Ping,
    ContentBlockDelta {
        index: usize,
        delta: Delta<'a>,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        delta: StopJson,
        #[serde(skip_serializing_if = "Option::is_none")]
        usage: Option<OutputUsage>,
    },
    MessageStop,
    Error {
        error: ErrorJson<'a>,
    },
}

impl Event<'_> {
    /// The SSE event name, which Anthropic sets to the JSON's `type`.
    fn name(&self) -> &'static str {
        match self {
            Self::MessageStart { .. } => "message_start",
            Self::ContentBlockStart { .. } => "content_block_start",
            Self::Ping => "ping",
            Self::ContentBlockDelta { .. } => "content_block_delta",
            Self::ContentBlockStop { .. } => "content_block_stop",
            Self::MessageDelta { .. } => "message_delta",
            Self::MessageStop => "message_stop",
            Self::Error { .. } => "error",
        }
    }
}

#[derive(Serialize)]
struct MessageJson<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    content: [(); 0],
    model: &'a str,
    stop_reason: Option<()>,
    stop_sequence: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<InputUsage>,
}

#[derive(Serialize)]
struct InputUsage {
    input_tokens: u32,
    cache_creation_input_tokens: u32,
    cache_read_input_tokens: u32,
    output_tokens: u32,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: &'static str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: EmptyObject,
    },
}

/// `{}`.
#[derive(Serialize)]
struct EmptyObject {}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Delta<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
struct StopJson {
    stop_reason: &'static str,
    stop_sequence: Option<()>,
}

#[derive(Serialize)]
struct OutputUsage {
    output_tokens: u32,
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

/// Anthropic's error `type` for an HTTP status.
fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// Anthropic's error body for an HTTP `status`.
pub(crate) fn error_body(status: u16, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}

fn write(out: &mut Vec<u8>, event: &Event<'_>) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.name().as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // Cannot fail: plain structs of strings and numbers, written to memory.
    let _ = serde_json::to_writer(&mut *out, event);
    out.extend_from_slice(b"\n\n");
}

fn frame(events: &[Event<'_>], first_token: bool) -> Frame {
    let mut out = Vec::with_capacity(192 * events.len());
    for event in events {
        write(&mut out, event);
    }
    Frame {
        bytes: out.into(),
        first_token,
    }
}

impl MessageContext {
    fn start(&self, usage: Option<(u32, u32)>) -> Frame {
        let message = MessageJson {
            id: &self.id,
            kind: "message",
            role: "assistant",
            content: [],
            model: &self.model,
            stop_reason: None,
            stop_sequence: None,
            usage: usage.map(|(prompt, _)| InputUsage {
                input_tokens: prompt,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 0,
                output_tokens: 1,
            }),
        };
        frame(&[Event::MessageStart { message }], false)
    }
}

/// A text block's start (and a ping), without its stop.
fn text_start() -> Frame {
    let start = Event::ContentBlockStart {
        index: 0,
        content_block: Block::Text { text: "" },
    };
    frame(&[start, Event::Ping], false)
}

fn text_delta(text: &str, first_token: bool) -> Frame {
    let delta = Event::ContentBlockDelta {
        index: 0,
        delta: Delta::TextDelta { text },
    };
    frame(&[delta], first_token)
}

/// The stop of block `index` (if any), `message_delta` and `message_stop`.
fn end(block: Option<usize>, stop_reason: &'static str, usage: Option<(u32, u32)>) -> Frame {
    let stop = block.map(|index| Event::ContentBlockStop { index });
    let delta = Event::MessageDelta {
        delta: StopJson {
            stop_reason,
            stop_sequence: None,
        },
        usage: usage.map(|(_, completion)| OutputUsage {
            output_tokens: completion,
        }),
    };
    let events: Vec<Event<'_>> = stop
        .into_iter()
        .chain([delta, Event::MessageStop])
        .collect();
    frame(&events, false)
}

/// The body of a streamed reply. `reply` must not be `Status` or `Delayed`
/// (the server resolves those first); they yield an empty body.
pub(crate) fn frames(reply: Reply, ctx: MessageContext) -> BoxStream<'static, Frame> {
    match reply {
        Reply::Text { chunks, usage } => {
            let mut out = vec![ctx.start(usage)];
            out.extend(text_frames(&chunks));
            out.push(end(Some(0), "end_turn", usage));
            stream::iter(out).boxed()
        }
        Reply::ToolCalls { calls, usage } => {
            let mut out = vec![ctx.start(usage)];
            out.extend(tool_use_frames(&calls));
            out.push(end(None, "tool_use", usage));
            stream::iter(out).boxed()
        }
        Reply::Interrupted {
            chunks,
            status,
            message,
        } => {
            let mut out = vec![ctx.start(None)];
            out.extend(text_frames(&chunks));
            let error = ErrorJson {
                kind: error_type(status),
                message: &message,
            };
            out.push(frame(&[Event::Error { error }], false));
            stream::iter(out).boxed()
        }
        Reply::Raw { events } => stream::iter(events.into_iter().map(raw_frame)).boxed(),
        Reply::Stream { tokens, interval } => paced_stream(tokens, interval, &ctx),
        Reply::Status { .. } | Reply::Delayed { .. } => stream::empty().boxed(),
    }
}

/// A text block's start and deltas; the first non-empty one is the first token.
fn text_frames(chunks: &[String]) -> Vec<Frame> {
    let mut out = vec![text_start()];
    let mut first = true;
    for chunk in chunks {
        out.push(text_delta(chunk, first && !chunk.is_empty()));
        first &= chunk.is_empty();
    }
    out
}

/// One complete `tool_use` block per call, the first one's start being the
/// first token. Like Anthropic, the input's first delta is empty.
fn tool_use_frames(calls: &[FakeToolCall]) -> Vec<Frame> {
    let mut out = Vec::new();
    for (index, call) in calls.iter().enumerate() {
        let start = Event::ContentBlockStart {
            index,
            content_block: Block::ToolUse {
                id: &call.id,
                name: &call.name,
                input: EmptyObject {},
            },
        };
        out.push(frame(&[start, Event::Ping], index == 0));
        let fragments =
            std::iter::once("").chain(call.argument_fragments.iter().map(String::as_str));
        for partial_json in fragments {
            let delta = Event::ContentBlockDelta {
                index,
                delta: Delta::InputJsonDelta { partial_json },
            };
            out.push(frame(&[delta], false));
        }
        out.push(frame(&[Event::ContentBlockStop { index }], false));
    }
    out
}

/// A [`Reply::Raw`] event, named by its JSON `type` when it has one.
fn raw_frame(data: String) -> Frame {
    let kind = serde_json::from_str::<Value>(&data)
        .ok()
        .and_then(|json| json.get("type")?.as_str().map(str::to_owned));
    let bytes = match kind {
        Some(kind) => format!("event: {kind}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    };
    Frame {
        bytes: Bytes::from(bytes),
        first_token: false,
    }
}

/// [`Reply::Stream`]: generated lazily, so that long streams cost no memory.
fn paced_stream(
    tokens: usize,
    interval: Duration,
    ctx: &MessageContext,
) -> BoxStream<'static, Frame> {
    let usage = Some((ctx.prompt_words, u32::try_from(tokens).unwrap_or(u32::MAX)));
    let head = stream::iter([ctx.start(usage), text_start()]);
    let tail = stream::once(async move { end(Some(0), "end_turn", usage) });
    let body = paced_tokens(tokens, interval, |range| {
        let first_token = range.start == 0;
        let deltas: Vec<Event<'_>> = range
            .map(|i| Event::ContentBlockDelta {
                index: 0,
                delta: Delta::TextDelta {
                    text: STREAM_WORDS[i % STREAM_WORDS.len()],
                },
            })
            .collect();
        frame(&deltas, first_token)
    });
    head.chain(body).chain(tail).boxed()
}
