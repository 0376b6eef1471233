//! The upstream of an `http` agent: an existing agent endpoint whose
//! streamed answer Switchyard relays (see `workflow::http`).
//!
//! Two wire formats: the Vercel AI SDK's UI message stream ([`ai_sdk`]),
//! what a Next.js `useChat` route answers, and OpenAI's streamed chat
//! completions (the `openai` provider's format and decoder). Both decode
//! into [`UpstreamEvent`]s: text, the tool calls the upstream ran with
//! their results, its usage, and the failures it reports in the stream.
//!
//! Sending, timeouts (`timeout_secs` for the response to start and for
//! every silence after), HTTP error classification and the scrubbing of
//! credentials from error texts are the providers' (`http`). The headers
//! named in `headers_env` are read from the environment when the client
//! is built, once per run, so that agents written over the API work
//! without a restart. An upstream call is never retried: the upstream may
//! have run tools with effects.

mod ai_sdk;

use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::Url;
use reqwest::header::HeaderName;
use serde_json::Value;
use switchyard_common::config::{Upstream, UpstreamProtocol};
use switchyard_common::domain::Usage;

use super::http::{self, Endpoint};
use super::{ChatMessage, ChatRequest, ProviderError, ProviderEvent, openai};

/// One item of an upstream's streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamEvent {
    /// A piece of the answer's text.
    Text(String),
    /// The upstream called a tool with this input.
    ToolInput {
        id: String,
        name: String,
        input: Value,
    },
    /// The result of a tool call the upstream ran (or its error).
    ToolOutput {
        id: String,
        output: Value,
        is_error: bool,
    },
    /// The upstream finished one step of its own loop (a model call and
    /// the tools it ran).
    StepFinished,
    /// The upstream's own token counts.
    Usage(Usage),
    /// The upstream reported a failure in the stream (an `error` or
    /// `abort` part): nothing follows.
    Failed(String),
}

/// The stream of one upstream call.
pub type UpstreamStream = BoxStream<'static, Result<UpstreamEvent, ProviderError>>;

/// A client for one agent's upstream.
#[derive(Debug)]
pub struct UpstreamClient {
    endpoint: Endpoint,
    protocol: UpstreamProtocol,
}

impl UpstreamClient {
    /// Reads the `headers_env` variables now: a missing one is an error
    /// naming it.
    pub fn new(settings: &Upstream, http: reqwest::Client) -> anyhow::Result<Self> {
        let url = match settings.protocol {
            UpstreamProtocol::AiSdk => Url::parse(&settings.url)?,
            UpstreamProtocol::Openai => {
                http::url("upstream", &settings.url, &["chat", "completions"])?
            }
        };
        let mut headers = Vec::with_capacity(settings.headers_env.len());
        for (name, var) in &settings.headers_env {
            let value = match std::env::var(var) {
                Ok(value) if !value.trim().is_empty() => value.trim().to_owned(),
                Ok(_) => anyhow::bail!(
                    "the environment variable {var} (upstream.headers_env.{name}) is empty"
                ),
                Err(_) => anyhow::bail!(
                    "the environment variable {var} (upstream.headers_env.{name}) is not set"
                ),
            };
            headers.push((HeaderName::from_bytes(name.as_bytes())?, value));
        }
        let endpoint =
            Endpoint::new(http, url, settings.timeout_secs)?.with_secret_headers(&headers)?;
        Ok(Self {
            endpoint,
            protocol: settings.protocol,
        })
    }

    /// Send the conversation of `request` (its text turns) and stream the
    /// answer. `chat_id` names the conversation (the thread) where the
    /// format has a place for it.
    pub fn stream(&self, chat_id: &str, request: &ChatRequest) -> UpstreamStream {
        match self.protocol {
            UpstreamProtocol::AiSdk => {
                let body = ai_sdk::WireRequest::new(chat_id, &text_turns(&request.messages));
                self.endpoint.stream(&body, ai_sdk::Parts::default())
            }
            UpstreamProtocol::Openai => {
                let request = ChatRequest {
                    messages: text_turns(&request.messages),
                    ..request.clone()
                };
                openai::stream_at(&self.endpoint, &request)
                    .map(|item| item.map(from_provider))
                    .boxed()
            }
        }
    }
}

/// An OpenAI-format event as an upstream's: a tool call there is one the
/// upstream wants its client to run (it has no output).
fn from_provider(event: ProviderEvent) -> UpstreamEvent {
    match event {
        ProviderEvent::TextDelta(text) => UpstreamEvent::Text(text),
        ProviderEvent::Usage(usage) => UpstreamEvent::Usage(usage),
        ProviderEvent::ToolCall(call) => UpstreamEvent::ToolInput {
            input: serde_json::from_str(&call.arguments).unwrap_or(Value::String(call.arguments)),
            id: call.id,
            name: call.name,
        },
    }
}

/// The conversation as text turns, which is what an upstream is sent:
/// tool exchanges of earlier answers are left out (the upstream ran them
/// and keeps no state here), and an answer's texts around them are joined.
fn text_turns(messages: &[ChatMessage]) -> Vec<ChatMessage> {
    let mut turns: Vec<ChatMessage> = Vec::with_capacity(messages.len());
    for message in messages {
        match message {
            ChatMessage::Tool { .. } => {}
            ChatMessage::Assistant { content, .. } => match turns.last_mut() {
                Some(ChatMessage::Assistant {
                    content: joined, ..
                }) => joined.push_str(content),
                _ => turns.push(ChatMessage::Assistant {
                    content: content.clone(),
                    tool_calls: Vec::new(),
                }),
            },
            other => turns.push(other.clone()),
        }
    }
    turns.retain(
        |turn| !matches!(turn, ChatMessage::Assistant { content, .. } if content.is_empty()),
    );
    turns
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ToolCall;

    #[test]
    fn earlier_tool_exchanges_are_sent_as_the_answers_text() {
        let call = ToolCall {
            id: "c1".into(),
            name: "weather".into(),
            arguments: "{}".into(),
        };
        let turns = text_turns(&[
            ChatMessage::User {
                content: "Weather?".into(),
            },
            ChatMessage::Assistant {
                content: "Checking. ".into(),
                tool_calls: vec![call],
            },
            ChatMessage::Tool {
                tool_call_id: "c1".into(),
                content: "sunny".into(),
            },
            ChatMessage::Assistant {
                content: "Sunny.".into(),
                tool_calls: Vec::new(),
            },
            ChatMessage::User {
                content: "Thanks".into(),
            },
        ]);
        assert_eq!(
            turns,
            [
                ChatMessage::User {
                    content: "Weather?".into()
                },
                ChatMessage::Assistant {
                    content: "Checking. Sunny.".into(),
                    tool_calls: Vec::new()
                },
                ChatMessage::User {
                    content: "Thanks".into()
                },
            ]
        );
    }
}
