//! The Vercel AI SDK's UI message stream, as a client: what `useChat`'s
//! transport sends to a route and reads back.
//!
//! The request is `POST {id, messages: [{id, role, parts: [{type: "text",
//! text}]}], trigger: "submit-message"}`. The answer is server-sent
//! events, each `data:` a JSON part: `start`, `start-step`, `text-start` /
//! `text-delta` / `text-end`, `tool-input-start` / `tool-input-delta` /
//! `tool-input-available` (or `tool-input-error`), `tool-output-available`
//! / `tool-output-error`, `finish-step`, `finish`, `error` or `abort`,
//! then `data: [DONE]`. Parts that carry nothing for a run (reasoning,
//! sources, files, `data-*`) are read and passed over, so that newer
//! routes keep working; a part that is not JSON, has no `type`, or lacks
//! a field its type needs is a malformed stream.
//!
//! The format reports no usage of its own; a route that puts the AI SDK's
//! usage (`{inputTokens, outputTokens, cachedInputTokens}`) in its message
//! metadata as `usage` or `totalUsage` has it counted.

use std::collections::VecDeque;

use eventsource_stream::Event;
use serde::Serialize;
use serde_json::{Value, json};
use switchyard_common::domain::Usage;

use super::UpstreamEvent;
use crate::providers::ChatMessage;
use crate::providers::ProviderError;
use crate::providers::streaming::{Flow, Format};

/// The body `useChat`'s transport posts.
#[derive(Serialize)]
pub(super) struct WireRequest {
    id: String,
    messages: Vec<Value>,
    trigger: &'static str,
}

impl WireRequest {
    pub(super) fn new(chat_id: &str, turns: &[ChatMessage]) -> Self {
        let messages = turns
            .iter()
            .enumerate()
            .filter_map(|(i, turn)| {
                let (role, text) = match turn {
                    ChatMessage::System { content } => ("system", content),
                    ChatMessage::User { content } => ("user", content),
                    ChatMessage::Assistant { content, .. } => ("assistant", content),
                    ChatMessage::Tool { .. } => return None,
                };
                Some(json!({
                    "id": format!("{chat_id}-{i}"),
                    "role": role,
                    "parts": [{"type": "text", "text": text}],
                }))
            })
            .collect();
        Self {
            id: chat_id.to_owned(),
            messages,
            trigger: "submit-message",
        }
    }
}

/// The state of one answer's decoding.
#[derive(Default)]
pub(super) struct Parts {
    /// A `finish` part arrived.
    finished: bool,
    /// The latest usage found in the message metadata.
    usage: Option<Usage>,
}

impl Format for Parts {
    type Message = Event;
    type Event = UpstreamEvent;

    fn message(
        &mut self,
        message: &Event,
        out: &mut VecDeque<UpstreamEvent>,
    ) -> Result<Flow, ProviderError> {
        let data = message.data.trim();
        if data == "[DONE]" {
            return Ok(Flow::End);
        }
        if data.is_empty() {
            return Ok(Flow::Continue);
        }
        let part: Value = serde_json::from_str(data)
            .map_err(|e| malformed(format!("a part is not JSON ({e}): {}", excerpt(data))))?;
        let kind = part
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed(format!("a part has no type: {}", excerpt(data))))?;
        let text = |field: &str| -> Result<String, ProviderError> {
            part.get(field)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| malformed(format!("a {kind} part has no {field}")))
        };
        if let Some(metadata) = part.get("messageMetadata") {
            self.read_usage(metadata);
        }
        match kind {
            "text-delta" => out.push_back(UpstreamEvent::Text(text("delta")?)),
            "tool-input-available" => out.push_back(UpstreamEvent::ToolInput {
                id: text("toolCallId")?,
                name: text("toolName")?,
                input: part.get("input").cloned().unwrap_or(Value::Null),
            }),
            "tool-input-error" => {
                let id = text("toolCallId")?;
                out.push_back(UpstreamEvent::ToolInput {
                    id: id.clone(),
                    name: text("toolName")?,
                    input: part.get("input").cloned().unwrap_or(Value::Null),
                });
                out.push_back(UpstreamEvent::ToolOutput {
                    id,
                    output: json!({"error": text("errorText")?}),
                    is_error: true,
                });
            }
            "tool-output-available" => out.push_back(UpstreamEvent::ToolOutput {
                id: text("toolCallId")?,
                output: part.get("output").cloned().unwrap_or(Value::Null),
                is_error: false,
            }),
            "tool-output-error" => out.push_back(UpstreamEvent::ToolOutput {
                id: text("toolCallId")?,
                output: json!({"error": text("errorText")?}),
                is_error: true,
            }),
            "finish-step" => out.push_back(UpstreamEvent::StepFinished),
            "finish" => self.finished = true,
            "error" => {
                out.push_back(UpstreamEvent::Failed(text("errorText")?));
                return Ok(Flow::End);
            }
            "abort" => {
                out.push_back(UpstreamEvent::Failed(
                    "the upstream aborted its answer".into(),
                ));
                return Ok(Flow::End);
            }
            // `start`, `start-step`, `text-start`, `text-end`,
            // `tool-input-start`, `tool-input-delta`, `message-metadata`
            // and parts without meaning for a run.
            _ => {}
        }
        Ok(Flow::Continue)
    }

    fn finished(&self) -> bool {
        self.finished
    }

    fn end(&mut self, out: &mut VecDeque<UpstreamEvent>) -> Result<(), ProviderError> {
        if let Some(usage) = self.usage.take() {
            out.push_back(UpstreamEvent::Usage(usage));
        }
        Ok(())
    }
}

impl Parts {
    /// Usage in the message metadata (`usage` or `totalUsage`, the AI
    /// SDK's field names); later metadata replaces earlier.
    fn read_usage(&mut self, metadata: &Value) {
        let Some(found) = ["totalUsage", "usage"]
            .iter()
            .find_map(|key| metadata.get(key).filter(|v| v.is_object()))
        else {
            return;
        };
        let count = |key: &str| found.get(key).and_then(Value::as_i64).unwrap_or(0).max(0);
        self.usage = Some(Usage {
            input_tokens: count("inputTokens"),
            output_tokens: count("outputTokens"),
            cached_input_tokens: count("cachedInputTokens"),
        });
    }
}

fn malformed(problem: String) -> ProviderError {
    ProviderError::Protocol(format!("malformed UI message stream: {problem}"))
}

/// The start of a part, for an error message.
fn excerpt(data: &str) -> String {
    data.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(lines: &[&str]) -> Result<Vec<UpstreamEvent>, ProviderError> {
        let mut parts = Parts::default();
        let mut out = VecDeque::new();
        for line in lines {
            let event = Event {
                data: (*line).to_owned(),
                ..Event::default()
            };
            if let Flow::End = parts.message(&event, &mut out)? {
                break;
            }
        }
        parts.end(&mut out)?;
        Ok(out.into_iter().collect())
    }

    #[test]
    fn text_tools_and_usage_in_metadata_are_read() {
        let events = decode(&[
            r#"{"type":"start","messageId":"m1"}"#,
            r#"{"type":"start-step"}"#,
            r#"{"type":"tool-input-start","toolCallId":"t1","toolName":"weather"}"#,
            r#"{"type":"tool-input-available","toolCallId":"t1","toolName":"weather","input":{"city":"Oslo"}}"#,
            r#"{"type":"tool-output-available","toolCallId":"t1","output":{"sky":"clear"}}"#,
            r#"{"type":"finish-step"}"#,
            r#"{"type":"reasoning-delta","id":"r","delta":"hmm"}"#,
            r#"{"type":"text-start","id":"x"}"#,
            r#"{"type":"text-delta","id":"x","delta":"Clear."}"#,
            r#"{"type":"finish","messageMetadata":{"totalUsage":{"inputTokens":12,"outputTokens":3}}}"#,
            "[DONE]",
        ])
        .unwrap();
        assert_eq!(
            events,
            [
                UpstreamEvent::ToolInput {
                    id: "t1".into(),
                    name: "weather".into(),
                    input: json!({"city": "Oslo"})
                },
                UpstreamEvent::ToolOutput {
                    id: "t1".into(),
                    output: json!({"sky": "clear"}),
                    is_error: false
                },
                UpstreamEvent::StepFinished,
                UpstreamEvent::Text("Clear.".into()),
                UpstreamEvent::Usage(Usage {
                    input_tokens: 12,
                    output_tokens: 3,
                    cached_input_tokens: 0
                }),
            ]
        );
    }

    #[test]
    fn malformed_parts_are_protocol_errors() {
        for bad in [
            "{not json",
            r#"{"delta":"no type"}"#,
            r#"{"type":"text-delta","id":"x"}"#,
        ] {
            let error = decode(&[bad]).unwrap_err();
            assert!(
                matches!(error, ProviderError::Protocol(_)),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn the_request_is_the_transports_body() {
        let body = WireRequest::new(
            "chat-1",
            &[
                ChatMessage::System {
                    content: "Be brief.".into(),
                },
                ChatMessage::User {
                    content: "Hi".into(),
                },
            ],
        );
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"id": "chat-1", "trigger": "submit-message", "messages": [
                {"id": "chat-1-0", "role": "system", "parts": [{"type": "text", "text": "Be brief."}]},
                {"id": "chat-1-1", "role": "user", "parts": [{"type": "text", "text": "Hi"}]},
            ]})
        );
    }
}
