//! Rendering a [`Reply`] into OpenAI's streaming wire format.
//!
//! A streamed reply becomes a sequence of [`Frame`]s, each one or more
//! complete SSE events (`data: {chat.completion.chunk}\n\n`), built with
//! typed `Serialize` structs so that the bytes match what OpenAI sends:
//!
//! 1. a first chunk with `delta.role = "assistant"`;
//! 2. the content or tool-call chunks;
//! 3. a chunk with an empty delta and `finish_reason`;
//! 4. if the request asked for `stream_options.include_usage`, a chunk with
//!    `"choices": []` and `usage` (every earlier chunk then has `"usage": null`);
//! 5. `data: [DONE]`.
//!
//! Errors are `{"error": {"message", "type", "param", "code"}}`, as the body
//! of an HTTP error or, mid-stream, as a chunk of their own.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use serde::Serialize;
use serde_json::{Value, json};

use crate::reply::{FakeToolCall, Reply, STREAM_WORDS};

/// Events per write when a [`Reply::Stream`] runs without pacing.
const UNPACED_BATCH: usize = 64;

/// Some bytes of the response body.
pub(crate) struct Frame {
    pub bytes: Bytes,
    /// The first frame carrying model output (content or a tool call).
    pub first_token: bool,
}

/// What every chunk of one response shares.
pub(crate) struct ChunkContext {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub include_usage: bool,
    /// Prompt tokens reported by [`Reply::Stream`] (the prompt's word count).
    pub prompt_words: u32,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<Choice<'a>>,
    /// Absent without `include_usage`; `null` on all but the last chunk with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<UsageJson>>,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallDelta<'a>>,
}

#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Serialize)]
struct UsageJson {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

impl ChunkContext {
    fn write_chunk(
        &self,
        out: &mut Vec<u8>,
        delta: Delta<'_>,
        finish_reason: Option<&'static str>,
    ) {
        let choices = vec![Choice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason,
        }];
        self.write(out, choices, None);
    }

    fn write(&self, out: &mut Vec<u8>, choices: Vec<Choice<'_>>, usage: Option<UsageJson>) {
        let chunk = Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices,
            usage: self.include_usage.then_some(usage),
        };
        out.extend_from_slice(b"data: ");
        // Cannot fail: plain structs of strings and numbers, written to memory.
        let _ = serde_json::to_writer(&mut *out, &chunk);
        out.extend_from_slice(b"\n\n");
    }

    fn frame(
        &self,
        delta: Delta<'_>,
        finish_reason: Option<&'static str>,
        first_token: bool,
    ) -> Frame {
        let mut out = Vec::with_capacity(192);
        self.write_chunk(&mut out, delta, finish_reason);
        Frame {
            bytes: out.into(),
            first_token,
        }
    }

    fn role(&self) -> Frame {
        self.frame(
            Delta {
                role: Some("assistant"),
                content: Some(""),
                ..Delta::default()
            },
            None,
            false,
        )
    }

    /// The finish chunk, the usage chunk if asked for and available, `[DONE]`.
    fn end(&self, finish_reason: &'static str, usage: Option<(u32, u32)>) -> Frame {
        let mut out = Vec::with_capacity(512);
        self.write_chunk(&mut out, Delta::default(), Some(finish_reason));
        if let (true, Some((prompt, completion))) = (self.include_usage, usage) {
            let usage = UsageJson {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: prompt.saturating_add(completion),
            };
            self.write(&mut out, Vec::new(), Some(usage));
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        Frame {
            bytes: out.into(),
            first_token: false,
        }
    }
}

/// OpenAI's error object for an HTTP `status`.
pub(crate) fn error_body(status: u16, message: &str) -> Value {
    let (kind, code) = match status {
        401 | 403 => ("invalid_request_error", "invalid_api_key"),
        404 => ("invalid_request_error", "model_not_found"),
        429 => ("requests", "rate_limit_exceeded"),
        500..=599 => ("server_error", "server_error"),
        _ => ("invalid_request_error", "invalid_request"),
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// The body of a streamed reply. `reply` must not be `Status` or `Delayed`
/// (the server resolves those first); they yield an empty body.
pub(crate) fn frames(reply: Reply, ctx: ChunkContext) -> BoxStream<'static, Frame> {
    match reply {
        Reply::Text { chunks, usage } => {
            let mut out = text_frames(&chunks, &ctx);
            out.push(ctx.end("stop", usage));
            stream::iter(out).boxed()
        }
        Reply::Interrupted {
            chunks,
            status,
            message,
        } => {
            let mut out = text_frames(&chunks, &ctx);
            // As compatible servers send it: the status as the error's code.
            let mut error = error_body(status, &message);
            error["error"]["code"] = Value::from(status);
            out.push(Frame {
                bytes: format!("data: {error}\n\n").into(),
                first_token: false,
            });
            stream::iter(out).boxed()
        }
        Reply::ToolCalls { calls, usage } => {
            stream::iter(tool_call_frames(&calls, usage, &ctx)).boxed()
        }
        Reply::Raw { events } => {
            let frame = |e: String| Frame {
                bytes: format!("data: {e}\n\n").into(),
                first_token: false,
            };
            stream::iter(events.into_iter().map(frame)).boxed()
        }
        Reply::Stream { tokens, interval } => paced_stream(tokens, interval, Arc::new(ctx)),
        Reply::Status { .. } | Reply::Delayed { .. } => stream::empty().boxed(),
    }
}

/// The role chunk and one chunk per piece of text.
fn text_frames(chunks: &[String], ctx: &ChunkContext) -> Vec<Frame> {
    let mut out = vec![ctx.role()];
    let mut first = true;
    for chunk in chunks {
        let delta = Delta {
            content: Some(chunk),
            ..Delta::default()
        };
        out.push(ctx.frame(delta, None, first && !chunk.is_empty()));
        first &= chunk.is_empty();
    }
    out
}

fn tool_call_frames(
    calls: &[FakeToolCall],
    usage: Option<(u32, u32)>,
    ctx: &ChunkContext,
) -> Vec<Frame> {
    let mut out = vec![ctx.role()];
    for (index, call) in calls.iter().enumerate() {
        let function = FunctionDelta {
            name: Some(&call.name),
            arguments: "",
        };
        let header = ToolCallDelta {
            index,
            id: Some(&call.id),
            kind: Some("function"),
            function,
        };
        out.push(ctx.frame(
            Delta {
                tool_calls: vec![header],
                ..Delta::default()
            },
            None,
            index == 0,
        ));
    }
    let rounds = calls
        .iter()
        .map(|c| c.argument_fragments.len())
        .max()
        .unwrap_or(0);
    for round in 0..rounds {
        for (index, call) in calls.iter().enumerate() {
            let Some(fragment) = call.argument_fragments.get(round) else {
                continue;
            };
            let function = FunctionDelta {
                name: None,
                arguments: fragment,
            };
            let delta = ToolCallDelta {
                index,
                id: None,
                kind: None,
                function,
            };
            out.push(ctx.frame(
                Delta {
                    tool_calls: vec![delta],
                    ..Delta::default()
                },
                None,
                false,
            ));
        }
    }
    out.push(ctx.end("tool_calls", usage));
    out
}

/// [`Reply::Stream`]: generated lazily, so that long streams cost no memory.
fn paced_stream(
    tokens: usize,
    interval: Duration,
    ctx: Arc<ChunkContext>,
) -> BoxStream<'static, Frame> {
    let usage = Some((ctx.prompt_words, u32::try_from(tokens).unwrap_or(u32::MAX)));
    let head = stream::iter([ctx.role()]);
    let tail_ctx = Arc::clone(&ctx);
    let tail = stream::once(async move { tail_ctx.end("stop", usage) });
    let body = paced_tokens(tokens, interval, move |range| {
        let mut out = Vec::with_capacity(range.len() * 192);
        let first_token = range.start == 0;
        for i in range {
            let delta = Delta {
                content: Some(STREAM_WORDS[i % STREAM_WORDS.len()]),
                ..Delta::default()
            };
            ctx.write_chunk(&mut out, delta, None);
        }
        Frame {
            bytes: out.into(),
            first_token,
        }
    });
    head.chain(body).chain(tail).boxed()
}

/// The body of a [`Reply::Stream`] of `tokens` tokens, `render`ed a range
/// of token numbers at a time: one token every `interval`, or without
/// pacing, [`UNPACED_BATCH`] at once (several events per write).
pub(crate) fn paced_tokens(
    tokens: usize,
    interval: Duration,
    render: impl Fn(Range<usize>) -> Frame + Send + 'static,
) -> BoxStream<'static, Frame> {
    if interval.is_zero() {
        return stream::iter((0..tokens).step_by(UNPACED_BATCH))
            .map(move |start| render(start..tokens.min(start + UNPACED_BATCH)))
            .boxed();
    }
    let mut ticker = tokio::time::interval(interval);
    // Late ticks fire at once, so the average rate holds under load.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    stream::unfold(
        (ticker, 0, render),
        move |(mut ticker, i, render)| async move {
            if i >= tokens {
                return None;
            }
            ticker.tick().await;
            let frame = render(i..i + 1);
            Some((frame, (ticker, i + 1, render)))
        },
    )
    .boxed()
}
