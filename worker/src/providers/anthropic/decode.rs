//! Decoding a streamed Messages answer into [`ProviderEvent`]s.
//!
//! The events are dispatched by their JSON `type` (the SSE `event:` line
//! repeats it). Text deltas are handed on as they arrive. A `tool_use`
//! block's input arrives as `input_json_delta` fragments; they are joined
//! per block `index` and the call is emitted whole at `content_block_stop`.
//! Usage comes in two halves, the prompt's counts in `message_start` and
//! the output's in `message_delta`, and is emitted once, when the answer
//! ends. `message_delta` means the model has finished (it carries the
//! `stop_reason`); `message_stop` ends the stream.
//!
//! An `error` event is a failure after the 200 status: it is classified by
//! its `error.type`, as the HTTP status Anthropic gives that type.

use std::collections::{BTreeMap, VecDeque};

use eventsource_stream::Event;
use switchyard_common::domain::Usage;

use super::wire::{WireBlock, WireDelta, WireEvent, WireUsage};
use crate::providers::http::classify_status;
use crate::providers::streaming::{Flow, Format};
use crate::providers::{ProviderError, ProviderEvent, ToolCall};

/// The state of one answer's decoding.
#[derive(Default)]
pub(super) struct Messages {
    /// `tool_use` blocks started and not yet stopped, by `index`.
    tool_uses: BTreeMap<u32, PartialToolUse>,
    usage: Counts,
    /// `message_delta` arrived: the answer is complete.
    finished: bool,
}

struct PartialToolUse {
    id: String,
    name: String,
    /// The input as given by `content_block_start` (`{}` when streamed).
    initial_input: String,
    /// The `input_json_delta` fragments so far.
    input: String,
}

/// The usage figures seen so far; later ones replace earlier ones, since
/// Anthropic's counts are cumulative.
#[derive(Default)]
struct Counts {
    input: Option<u64>,
    output: Option<u64>,
    cache_read: Option<u64>,
    cache_creation: Option<u64>,
}

impl Format for Messages {
    type Message = Event;
    type Event = ProviderEvent;

    fn message(
        &mut self,
        event: &Event,
        out: &mut VecDeque<ProviderEvent>,
    ) -> Result<Flow, ProviderError> {
        let decoded: WireEvent = serde_json::from_str(&event.data)
            .map_err(|e| ProviderError::Protocol(format!("malformed event: {e}")))?;
        match decoded {
            WireEvent::MessageStart { message } => self.usage.update(message.usage),
            WireEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                WireBlock::Text { text } if !text.is_empty() => {
                    out.push_back(ProviderEvent::TextDelta(text));
                }
                WireBlock::ToolUse { id, name, input } => {
                    let initial_input = input.map(|i| i.to_string()).unwrap_or_default();
                    let tool_use = PartialToolUse {
                        id,
                        name,
                        initial_input,
                        input: String::new(),
                    };
                    self.tool_uses.insert(index, tool_use);
                }
                WireBlock::Text { .. } | WireBlock::Other => {}
            },
            WireEvent::ContentBlockDelta { index, delta } => match delta {
                WireDelta::TextDelta { text } if !text.is_empty() => {
                    out.push_back(ProviderEvent::TextDelta(text));
                }
                WireDelta::InputJsonDelta { partial_json } => {
                    let Some(tool_use) = self.tool_uses.get_mut(&index) else {
                        return Err(ProviderError::Protocol(format!(
                            "tool input for block {index}, which is not a started tool_use block"
                        )));
                    };
                    tool_use.input.push_str(&partial_json);
                }
                WireDelta::TextDelta { .. } | WireDelta::Other => {}
            },
            WireEvent::ContentBlockStop { index } => {
                if let Some(tool_use) = self.tool_uses.remove(&index) {
                    out.push_back(ProviderEvent::ToolCall(tool_use.into_call()));
                }
            }
            WireEvent::MessageDelta { usage } => {
                self.finished = true;
                self.usage.update(usage);
            }
            WireEvent::MessageStop => return Ok(Flow::End),
            WireEvent::Error { error } => {
                return Err(classify_status(status_of(&error.kind), error.message, None));
            }
            WireEvent::Other => {}
        }
        Ok(Flow::Continue)
    }

    fn finished(&self) -> bool {
        self.finished
    }

    fn end(&mut self, out: &mut VecDeque<ProviderEvent>) -> Result<(), ProviderError> {
        // Blocks never stopped are still whole calls once the message ended.
        for (_, tool_use) in std::mem::take(&mut self.tool_uses) {
            out.push_back(ProviderEvent::ToolCall(tool_use.into_call()));
        }
        out.extend(self.usage.total().map(ProviderEvent::Usage));
        Ok(())
    }
}

impl PartialToolUse {
    /// A tool with no parameters gets no fragments: its input is the
    /// block's own (`{}`).
    fn into_call(self) -> ToolCall {
        let arguments = if self.input.is_empty() {
            self.initial_input
        } else {
            self.input
        };
        ToolCall {
            id: self.id,
            name: self.name,
            arguments,
        }
    }
}

impl Counts {
    fn update(&mut self, usage: Option<WireUsage>) {
        let Some(usage) = usage else {
            return;
        };
        self.input = usage.input_tokens.or(self.input);
        self.output = usage.output_tokens.or(self.output);
        self.cache_read = usage.cache_read_input_tokens.or(self.cache_read);
        self.cache_creation = usage.cache_creation_input_tokens.or(self.cache_creation);
    }

    /// Anthropic's `input_tokens` leaves out the tokens read from or written
    /// to the prompt cache; Switchyard's input count is the whole prompt.
    fn total(&self) -> Option<Usage> {
        if self.input.is_none() && self.output.is_none() {
            return None;
        }
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let cache_read = self.cache_read.unwrap_or(0);
        let prompt = self
            .input
            .unwrap_or(0)
            .saturating_add(cache_read)
            .saturating_add(self.cache_creation.unwrap_or(0));
        Some(Usage {
            input_tokens: count(prompt),
            output_tokens: count(self.output.unwrap_or(0)),
            cached_input_tokens: count(cache_read),
        })
    }
}

/// The HTTP status Anthropic answers an error `type` with, so that an error
/// event is classified like the same failure before the stream.
fn status_of(error_type: &str) -> u16 {
    match error_type {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        // `api_error`, and types added later.
        _ => 500,
    }
}
