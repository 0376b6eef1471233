//! Decoding a streamed answer's chunks into [`ProviderEvent`]s.
//!
//! Text is handed on chunk by chunk. Tool-call fragments are collected by
//! `index` and emitted whole when the answer finishes (`finish_reason` or
//! `[DONE]`). The model has finished once a `finish_reason` arrived.

use std::collections::{BTreeMap, VecDeque};

use eventsource_stream::Event;
use serde_json::Value;
use switchyard_common::domain::Usage;

use super::wire::WireChunk;
use crate::providers::http::classify_status;
use crate::providers::streaming::{Flow, Format};
use crate::providers::{ProviderError, ProviderEvent, ToolCall};

/// The state of one answer's decoding.
#[derive(Default)]
pub(super) struct Chunks {
    /// Tool calls being assembled, by `index`.
    tool_calls: BTreeMap<u32, PartialToolCall>,
    /// A `finish_reason` arrived: the answer is complete.
    finished: bool,
}

#[derive(Default)]
struct PartialToolCall {
    id: String,
    name: String,
    arguments: String,
}

impl Format for Chunks {
    type Message = Event;
    type Event = ProviderEvent;

    fn message(
        &mut self,
        event: &Event,
        out: &mut VecDeque<ProviderEvent>,
    ) -> Result<Flow, ProviderError> {
        if event.data.trim() == "[DONE]" {
            return Ok(Flow::End);
        }
        let chunk: WireChunk = serde_json::from_str(&event.data)
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
                out.push_back(ProviderEvent::TextDelta(text));
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
                self.flush_tool_calls(out)?;
            }
        }
        if let Some(usage) = chunk.usage {
            let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            out.push_back(ProviderEvent::Usage(Usage {
                input_tokens: count(usage.prompt_tokens),
                output_tokens: count(usage.completion_tokens),
                cached_input_tokens: count(
                    usage
                        .prompt_tokens_details
                        .map_or(0, |details| details.cached_tokens),
                ),
            }));
        }
        Ok(Flow::Continue)
    }

    fn finished(&self) -> bool {
        self.finished
    }

    fn end(&mut self, out: &mut VecDeque<ProviderEvent>) -> Result<(), ProviderError> {
        self.flush_tool_calls(out)
    }
}

impl Chunks {
    fn flush_tool_calls(&mut self, out: &mut VecDeque<ProviderEvent>) -> Result<(), ProviderError> {
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
            out.push_back(ProviderEvent::ToolCall(call));
        }
        Ok(())
    }
}
