//! Decoding a streamed answer's lines into [`ProviderEvent`]s.
//!
//! Text is handed on line by line. Tool calls arrive whole, arguments as a
//! JSON object and without ids: they are emitted as they come, arguments
//! as JSON text, with ids `call_{n}` numbered in order of arrival. The
//! answer is complete with its last line, `"done": true`, which carries
//! the token counts.

use std::collections::VecDeque;

use serde_json::Value;
use switchyard_common::domain::Usage;

use super::wire::{WireFunctionOut, WireLine};
use crate::providers::http::classify_status;
use crate::providers::ndjson::Line;
use crate::providers::streaming::{Flow, Format};
use crate::providers::{ProviderError, ProviderEvent, ToolCall};

/// The state of one answer's decoding.
#[derive(Default)]
pub(super) struct Answer {
    /// Tool calls so far, for their ids.
    tool_calls: usize,
    /// The last line arrived.
    done: bool,
}

impl Format for Answer {
    type Message = Line;
    type Event = ProviderEvent;

    fn message(
        &mut self,
        line: &Line,
        out: &mut VecDeque<ProviderEvent>,
    ) -> Result<Flow, ProviderError> {
        let line: WireLine = serde_json::from_slice(line.as_bytes())
            .map_err(|e| ProviderError::Protocol(format!("malformed line: {e}")))?;
        if let Some(message) = line.error {
            // The status was already 200: the model failed while answering
            // (its runner stopped, memory ran out), which may not recur.
            return Err(classify_status(500, message, None));
        }
        if let Some(message) = line.message {
            if let Some(text) = message.content.filter(|t| !t.is_empty()) {
                out.push_back(ProviderEvent::TextDelta(text));
            }
            for call in message.tool_calls.unwrap_or_default() {
                out.push_back(ProviderEvent::ToolCall(self.tool_call(call.function)?));
            }
        }
        if !line.done {
            return Ok(Flow::Continue);
        }
        self.done = true;
        let count = |n: Option<u64>| i64::try_from(n.unwrap_or(0)).unwrap_or(i64::MAX);
        out.push_back(ProviderEvent::Usage(Usage {
            input_tokens: count(line.prompt_eval_count),
            output_tokens: count(line.eval_count),
            cached_input_tokens: count(line.prompt_eval_cached_count),
        }));
        Ok(Flow::End)
    }

    fn finished(&self) -> bool {
        self.done
    }

    /// Calls and usage are handed on as their lines arrive: nothing is held.
    fn end(&mut self, _out: &mut VecDeque<ProviderEvent>) -> Result<(), ProviderError> {
        Ok(())
    }
}

impl Answer {
    fn tool_call(&mut self, function: WireFunctionOut) -> Result<ToolCall, ProviderError> {
        if function.name.is_empty() {
            return Err(ProviderError::Protocol("a tool call has no name".into()));
        }
        let arguments = match function.arguments {
            Value::Null => "{}".to_owned(),
            arguments @ Value::Object(_) => arguments.to_string(),
            other => {
                return Err(ProviderError::Protocol(format!(
                    "the arguments of tool call {} are not a JSON object: {other}",
                    function.name
                )));
            }
        };
        let id = format!("call_{}", self.tool_calls);
        self.tool_calls += 1;
        Ok(ToolCall {
            id,
            name: function.name,
            arguments,
        })
    }
}
