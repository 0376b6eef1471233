//! Rendering a [`Reply`] into Ollama's `/api/chat` streaming format: one
//! JSON object per line (`application/x-ndjson`):
//!
//! 1. a line per text chunk, `"message": {"role": "assistant", "content"}`
//!    and `"done": false`;
//! 2. for tool calls, one line with all of them complete (Ollama parses a
//!    call whole before sending it): `"tool_calls": [{"function": {"name",
//!    "arguments": {...}}}]`, arguments a JSON object and no ids;
//! 3. a last line, `"done": true, "done_reason": "stop"`, with
//!    `prompt_eval_count` and `eval_count` when the reply has usage.
//!
//! Errors are `{"error": "..."}`, as the body of an HTTP error or,
//! mid-stream, as a line of their own. A reply is not sent as its lines:
//! some lines go out in three pieces, a moment apart, and some two lines
//! in one piece, since a client must put lines together from whatever its
//! reads hold (see [`cut`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use serde::Serialize;
use serde_json::{Value, json};

use crate::reply::{FakeToolCall, Reply, STREAM_WORDS};
use crate::sse::{Frame, paced_tokens};

/// The wait before each piece of a line sent in pieces: long enough for
/// the client to read the pieces apart rather than together.
const PIECE_PAUSE: Duration = Duration::from_millis(2);

/// Ollama's error body.
pub(crate) fn error_body(message: &str) -> Value {
    json!({ "error": message })
}

/// What every line of one response shares.
pub(crate) struct LineContext {
    model: String,
    /// One timestamp for the whole response: the client ignores it, and a
    /// clock read per line would slow long benchmark streams.
    created_at: String,
    received_at: Instant,
    /// Prompt tokens reported by [`Reply::Stream`] (the prompt's word count).
    prompt_words: u32,
}

#[derive(Serialize)]
struct Line<'a> {
    model: &'a str,
    created_at: &'a str,
    message: Message<'a>,
    done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    done_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_eval_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eval_count: Option<u32>,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallJson<'a>>,
}

#[derive(Serialize)]
struct ToolCallJson<'a> {
    function: FunctionJson<'a>,
}

#[derive(Serialize)]
struct FunctionJson<'a> {
    name: &'a str,
    arguments: Value,
}

/// One line of the body, with its line end.
struct Rendered {
    bytes: Vec<u8>,
    /// The first line carrying model output (content or a tool call).
    first_token: bool,
}

impl LineContext {
    pub(crate) fn new(model: String, prompt_words: u32) -> Self {
        Self {
            model,
            created_at: Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true),
            received_at: Instant::now(),
            prompt_words,
        }
    }

    fn line(&self, content: &str, tool_calls: Vec<ToolCallJson<'_>>) -> Vec<u8> {
        let mut out = Vec::with_capacity(192);
        self.write_line(&mut out, content, tool_calls);
        out
    }

    fn write_line(&self, out: &mut Vec<u8>, content: &str, tool_calls: Vec<ToolCallJson<'_>>) {
        write(
            out,
            &Line {
                model: &self.model,
                created_at: &self.created_at,
                message: Message {
                    role: "assistant",
                    content,
                    tool_calls,
                },
                done: false,
                done_reason: None,
                total_duration: None,
                prompt_eval_count: None,
                eval_count: None,
            },
        );
    }

    /// The last line; the counts are left out without usage, as Ollama
    /// leaves out counts it does not have.
    fn done(&self, usage: Option<(u32, u32)>) -> Vec<u8> {
        let elapsed = self.received_at.elapsed().as_nanos();
        let mut out = Vec::with_capacity(256);
        write(
            &mut out,
            &Line {
                model: &self.model,
                created_at: &self.created_at,
                message: Message {
                    role: "assistant",
                    content: "",
                    tool_calls: Vec::new(),
                },
                done: true,
                done_reason: Some("stop"),
                total_duration: Some(u64::try_from(elapsed).unwrap_or(u64::MAX)),
                prompt_eval_count: usage.map(|(prompt, _)| prompt),
                eval_count: usage.map(|(_, completion)| completion),
            },
        );
        out
    }
}

fn write(out: &mut Vec<u8>, line: &Line<'_>) {
    // Cannot fail: plain structs of strings, numbers and JSON values,
    // written to memory.
    let _ = serde_json::to_writer(&mut *out, line);
    out.push(b'\n');
}

/// The body of a streamed reply. `reply` must not be `Status` or `Delayed`
/// (the server resolves those first); they yield an empty body.
pub(crate) fn frames(reply: Reply, ctx: LineContext) -> BoxStream<'static, Frame> {
    match reply {
        Reply::Text { chunks, usage } => {
            let mut lines = text_lines(&chunks, &ctx);
            lines.push(Rendered {
                bytes: ctx.done(usage),
                first_token: false,
            });
            cut(lines)
        }
        Reply::Interrupted {
            chunks, message, ..
        } => {
            let mut lines = text_lines(&chunks, &ctx);
            lines.push(Rendered {
                bytes: format!("{}\n", error_body(&message)).into_bytes(),
                first_token: false,
            });
            cut(lines)
        }
        Reply::ToolCalls { calls, usage } => {
            let calls_line = Rendered {
                bytes: ctx.line("", calls.iter().map(tool_call).collect()),
                first_token: true,
            };
            let done = Rendered {
                bytes: ctx.done(usage),
                first_token: false,
            };
            cut(vec![calls_line, done])
        }
        Reply::Raw { events } => {
            let line = |event: String| Rendered {
                bytes: format!("{event}\n").into_bytes(),
                first_token: false,
            };
            cut(events.into_iter().map(line).collect())
        }
        Reply::Stream { tokens, interval } => paced_stream(tokens, interval, ctx),
        Reply::Status { .. } | Reply::Delayed { .. } => stream::empty().boxed(),
    }
}

/// One line per piece of text; the first non-empty one is the first token.
fn text_lines(chunks: &[String], ctx: &LineContext) -> Vec<Rendered> {
    let mut lines = Vec::with_capacity(chunks.len() + 1);
    let mut first = true;
    for chunk in chunks {
        lines.push(Rendered {
            bytes: ctx.line(chunk, Vec::new()),
            first_token: first && !chunk.is_empty(),
        });
        first &= chunk.is_empty();
    }
    lines
}

/// A call with its fragments joined: Ollama sends arguments as a JSON
/// object. Fragments that do not join into JSON go as a JSON string, which
/// Ollama never sends, for testing a client's refusal.
fn tool_call(call: &FakeToolCall) -> ToolCallJson<'_> {
    let text = call.argument_fragments.concat();
    let arguments = serde_json::from_str(&text).unwrap_or(Value::String(text));
    ToolCallJson {
        function: FunctionJson {
            name: &call.name,
            arguments,
        },
    }
}

/// The writes of a reply's lines: the second of every three lines in three
/// pieces cut at a third and two thirds of its bytes (inside a character,
/// at times), each after [`PIECE_PAUSE`]; the third together with the line
/// after it; the others whole.
fn cut(lines: Vec<Rendered>) -> BoxStream<'static, Frame> {
    let mut writes: Vec<(Frame, bool)> = Vec::with_capacity(lines.len() * 2);
    let mut lines = lines.into_iter().enumerate();
    while let Some((i, line)) = lines.next() {
        let frame = |bytes: Vec<u8>, first_token| Frame {
            bytes: bytes.into(),
            first_token,
        };
        match i % 3 {
            1 => {
                let len = line.bytes.len();
                let (a, b) = (len / 3, 2 * len / 3);
                for (start, end) in [(0, a), (a, b), (b, len)] {
                    if start < end {
                        // The line is usable once its last piece is out.
                        let first_token = line.first_token && end == len;
                        writes.push((frame(line.bytes[start..end].to_vec(), first_token), true));
                    }
                }
            }
            2 => {
                let mut bytes = line.bytes;
                let mut first_token = line.first_token;
                if let Some((_, next)) = lines.next() {
                    bytes.extend_from_slice(&next.bytes);
                    first_token |= next.first_token;
                }
                writes.push((frame(bytes, first_token), false));
            }
            _ => writes.push((frame(line.bytes, line.first_token), false)),
        }
    }
    stream::iter(writes)
        .then(|(frame, pause)| async move {
            if pause {
                tokio::time::sleep(PIECE_PAUSE).await;
            }
            frame
        })
        .boxed()
}

/// [`Reply::Stream`]: generated lazily, so that long streams cost no
/// memory; lines are written whole, one or a batch at a time.
fn paced_stream(tokens: usize, interval: Duration, ctx: LineContext) -> BoxStream<'static, Frame> {
    let usage = Some((ctx.prompt_words, u32::try_from(tokens).unwrap_or(u32::MAX)));
    let ctx = Arc::new(ctx);
    let tail_ctx = Arc::clone(&ctx);
    let tail = stream::once(async move {
        Frame {
            bytes: tail_ctx.done(usage).into(),
            first_token: false,
        }
    });
    let body = paced_tokens(tokens, interval, move |range| {
        let mut out = Vec::with_capacity(range.len() * 192);
        let first_token = range.start == 0;
        for i in range {
            ctx.write_line(&mut out, STREAM_WORDS[i % STREAM_WORDS.len()], Vec::new());
        }
        Frame {
            bytes: out.into(),
            first_token,
        }
    });
    body.chain(tail).boxed()
}
