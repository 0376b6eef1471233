//! Decoding a streamed answer: server-sent events in, [`ProviderEvent`]s out.
//!
//! Text is handed on chunk by chunk. Tool-call fragments are collected by
//! `index` and emitted whole when the answer finishes (`finish_reason` or
//! `[DONE]`). The answer is complete only if one of those arrived: a
//! connection that closes before is a dropped answer, not a short one.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::{Event, EventStreamError};
use futures::stream::{self, Stream, StreamExt};
use serde_json::Value;
use switchyard_common::domain::Usage;

use super::wire::WireChunk;
use super::{classify_status, transport_error};
use crate::providers::{ProviderError, ProviderEvent, ToolCall};

pub(super) type SseStream =
    Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

/// The events of one answer, from its server-sent events.
pub(super) fn decode(
    events: SseStream,
    idle: Duration,
) -> impl Stream<Item = Result<ProviderEvent, ProviderError>> {
    let decoder = Decoder {
        events,
        idle,
        pending: VecDeque::new(),
        tool_calls: BTreeMap::new(),
        finished: false,
        ended: false,
    };
    stream::unfold(decoder, |mut decoder| async move {
        let item = decoder.next().await?;
        Some((item, decoder))
    })
}

struct Decoder {
    events: SseStream,
    idle: Duration,
    /// Decoded but not yet handed out.
    pending: VecDeque<ProviderEvent>,
    /// Tool calls being assembled, by `index`.
    tool_calls: BTreeMap<u32, PartialToolCall>,
    /// A `finish_reason` arrived: the answer is complete.
    finished: bool,
    /// Nothing more to read (`[DONE]`, end of stream or an error).
    ended: bool,
}

#[derive(Default)]
struct PartialToolCall {
    id: String,
    name: String,
    arguments: String,
}

impl Decoder {
    async fn next(&mut self) -> Option<Result<ProviderEvent, ProviderError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.ended {
                return None;
            }
            let step = match tokio::time::timeout(self.idle, self.events.next()).await {
                // Finished but silent: the usage chunk or `[DONE]` is lost,
                // not the answer.
                Err(_) if self.finished => self.end(),
                Err(_) => Err(ProviderError::Timeout),
                Ok(Some(Ok(event))) => self.handle(&event.data),
                Ok(Some(Err(e))) => Err(sse_error(e)),
                Ok(None) if self.finished => self.end(),
                Ok(None) => Err(ProviderError::Transport(
                    "the stream ended before the answer was complete".into(),
                )),
            };
            if let Err(error) = step {
                self.ended = true;
                self.pending.clear();
                return Some(Err(error));
            }
        }
    }

    fn handle(&mut self, data: &str) -> Result<(), ProviderError> {
        if data.trim() == "[DONE]" {
            return self.end();
        }
        let chunk: WireChunk = serde_json::from_str(data)
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
                self.pending.push_back(ProviderEvent::TextDelta(text));
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
                self.flush_tool_calls()?;
            }
        }
        if let Some(usage) = chunk.usage {
            let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.pending.push_back(ProviderEvent::Usage(Usage {
                input_tokens: count(usage.prompt_tokens),
                output_tokens: count(usage.completion_tokens),
                cached_input_tokens: count(
                    usage
                        .prompt_tokens_details
                        .map_or(0, |details| details.cached_tokens),
                ),
            }));
        }
        Ok(())
    }

    fn end(&mut self) -> Result<(), ProviderError> {
        self.ended = true;
        self.flush_tool_calls()
    }

    fn flush_tool_calls(&mut self) -> Result<(), ProviderError> {
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
            self.pending.push_back(ProviderEvent::ToolCall(call));
        }
        Ok(())
    }
}

fn sse_error(error: EventStreamError<reqwest::Error>) -> ProviderError {
    match error {
        EventStreamError::Transport(e) => transport_error(&e),
        EventStreamError::Utf8(_) => {
            ProviderError::Protocol("the event stream is not valid UTF-8".into())
        }
        EventStreamError::Parser(_) => ProviderError::Protocol("malformed event stream".into()),
    }
}
