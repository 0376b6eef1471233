//! The scripted model: deterministic, offline, instant to start.
//!
//! It is the model of the built-in agents, for demos and tests. It answers
//! the last user message by these rules, in order:
//!
//! 1. After a tool result, it reports the result: ``The `NAME` tool returned: …``.
//! 2. A message starting with `/tool NAME {json}` makes it call the tool
//!    `NAME` with those arguments (`{}` when omitted), if the agent has it.
//! 3. The first `replies` rule of its configuration whose `contains`
//!    occurs in the message answers with that rule's `reply`.
//! 4. Otherwise it echoes: `You said: "…". …`.
//!
//! The answer is streamed word by word, `chunk_delay_ms` apart. Its usage
//! figures are its own: whitespace-separated words of the prompt in, chunks
//! streamed out.

use std::time::Duration;

use futures::StreamExt;
use switchyard_common::config::ScriptedSettings;
use switchyard_common::domain::Usage;

use super::{ChatMessage, ChatRequest, Provider, ProviderEvent, ProviderStream, ToolCall};

pub struct Scripted {
    settings: ScriptedSettings,
}

impl Scripted {
    pub fn new(settings: ScriptedSettings) -> Self {
        Self { settings }
    }

    fn answer(&self, request: &ChatRequest) -> Answer {
        let tool_result = request.messages.iter().rev().map_while(|m| match m {
            ChatMessage::Tool {
                content,
                tool_call_id,
            } => Some((tool_call_id, content)),
            _ => None,
        });
        let results: Vec<String> = tool_result
            .map(|(id, content)| {
                let name = tool_name_of(&request.messages, id).unwrap_or("unknown");
                format!("The `{name}` tool returned: {content}")
            })
            .collect();
        if !results.is_empty() {
            return Answer::Text(results.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }

        let last_user = request
            .messages
            .iter()
            .rev()
            .find_map(|m| match m {
                ChatMessage::User { content } => Some(content.as_str()),
                _ => None,
            })
            .unwrap_or_default();

        if let Some(command) = last_user.trim_start().strip_prefix("/tool ") {
            let command = command.trim();
            let (name, arguments) = command
                .split_once(char::is_whitespace)
                .unwrap_or((command, ""));
            if !request.tools.iter().any(|t| t.name == name) {
                return Answer::Text(format!("I have no tool called `{name}`."));
            }
            let arguments = match arguments.trim() {
                "" => "{}".to_owned(),
                given => given.to_owned(),
            };
            return Answer::Tool(ToolCall {
                id: format!("call_{}", uuid_suffix(last_user)),
                name: name.to_owned(),
                arguments,
            });
        }

        if let Some(rule) = self
            .settings
            .replies
            .iter()
            .find(|r| last_user.contains(&r.contains))
        {
            return Answer::Text(rule.reply.clone());
        }
        Answer::Text(format!(
            "You said: \"{last_user}\". I am the scripted model: I answer offline, the same way every time."
        ))
    }
}

enum Answer {
    Text(String),
    Tool(ToolCall),
}

fn tool_name_of<'a>(messages: &'a [ChatMessage], call_id: &str) -> Option<&'a str> {
    messages.iter().rev().find_map(|m| match m {
        ChatMessage::Assistant { tool_calls, .. } => tool_calls
            .iter()
            .find(|c| c.id == call_id)
            .map(|c| c.name.as_str()),
        _ => None,
    })
}

/// A short deterministic id fragment, so that the same prompt gives the same call id.
fn uuid_suffix(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// Split text into word chunks that keep their whitespace, so they concatenate back exactly.
fn chunks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if !c.is_whitespace() && current.ends_with(char::is_whitespace) {
            out.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn prompt_words(request: &ChatRequest) -> i64 {
    request
        .messages
        .iter()
        .map(|m| match m {
            ChatMessage::System { content }
            | ChatMessage::User { content }
            | ChatMessage::Assistant { content, .. }
            | ChatMessage::Tool { content, .. } => content.split_whitespace().count() as i64,
        })
        .sum()
}

impl Provider for Scripted {
    fn stream(&self, request: ChatRequest) -> ProviderStream {
        let input_tokens = prompt_words(&request);
        let delay = Duration::from_millis(self.settings.chunk_delay_ms);
        match self.answer(&request) {
            Answer::Tool(call) => futures::stream::iter([
                Ok(ProviderEvent::ToolCall(call)),
                Ok(ProviderEvent::Usage(Usage {
                    input_tokens,
                    output_tokens: 1,
                    cached_input_tokens: 0,
                })),
            ])
            .boxed(),
            Answer::Text(text) => {
                let pieces = chunks(&text);
                let usage = Usage {
                    input_tokens,
                    output_tokens: pieces.len() as i64,
                    cached_input_tokens: 0,
                };
                let deltas = futures::stream::iter(pieces.into_iter().enumerate()).then(
                    move |(i, piece)| async move {
                        if i > 0 && !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        Ok(ProviderEvent::TextDelta(piece))
                    },
                );
                deltas
                    .chain(futures::stream::once(async move {
                        Ok(ProviderEvent::Usage(usage))
                    }))
                    .boxed()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ToolSpec;

    fn request(messages: Vec<ChatMessage>) -> ChatRequest {
        ChatRequest {
            model: "scripted-1".into(),
            messages,
            tools: vec![ToolSpec {
                name: "current_time".into(),
                description: String::new(),
                parameters: serde_json::json!({"type": "object"}),
            }],
        }
    }

    async fn collect(provider: &Scripted, request: ChatRequest) -> Vec<ProviderEvent> {
        provider
            .stream(request)
            .map(|e| e.expect("the scripted model does not fail"))
            .collect()
            .await
    }

    #[test]
    fn chunks_concatenate_to_the_text() {
        let text = "  Hello,  world!\nNew line ";
        assert_eq!(chunks(text).concat(), text);
        assert_eq!(chunks("a b"), vec!["a ", "b"]);
    }

    #[tokio::test]
    async fn echoes_and_counts_its_own_usage() {
        let provider = Scripted::new(ScriptedSettings::default());
        let events = collect(
            &provider,
            request(vec![ChatMessage::User {
                content: "hi there".into(),
            }]),
        )
        .await;
        let text: String = events
            .iter()
            .filter_map(|e| match e {
                ProviderEvent::TextDelta(d) => Some(d.as_str()),
                _ => None,
            })
            .collect();
        assert!(text.starts_with("You said: \"hi there\"."), "{text}");
        let deltas = events
            .iter()
            .filter(|e| matches!(e, ProviderEvent::TextDelta(_)))
            .count();
        assert_eq!(
            events.last(),
            Some(&ProviderEvent::Usage(Usage {
                input_tokens: 2,
                output_tokens: deltas as i64,
                cached_input_tokens: 0,
            }))
        );
    }

    #[tokio::test]
    async fn calls_a_tool_then_reports_its_result() {
        let provider = Scripted::new(ScriptedSettings::default());
        let user = ChatMessage::User {
            content: "/tool current_time {\"tz\":\"UTC\"}".into(),
        };
        let events = collect(&provider, request(vec![user.clone()])).await;
        let ProviderEvent::ToolCall(call) = &events[0] else {
            panic!("expected a tool call, got {events:?}");
        };
        assert_eq!(call.name, "current_time");
        assert_eq!(call.arguments, "{\"tz\":\"UTC\"}");

        let followup = request(vec![
            user,
            ChatMessage::Assistant {
                content: String::new(),
                tool_calls: vec![call.clone()],
            },
            ChatMessage::Tool {
                tool_call_id: call.id.clone(),
                content: "\"noon\"".into(),
            },
        ]);
        let text: String = collect(&provider, followup)
            .await
            .into_iter()
            .filter_map(|e| match e {
                ProviderEvent::TextDelta(d) => Some(d),
                _ => None,
            })
            .collect();
        assert_eq!(text, "The `current_time` tool returned: \"noon\"");
    }

    #[tokio::test]
    async fn refuses_tools_the_agent_lacks_and_follows_reply_rules() {
        let provider = Scripted::new(ScriptedSettings {
            chunk_delay_ms: 0,
            replies: vec![switchyard_common::config::ScriptedReply {
                contains: "weather".into(),
                reply: "Sunny.".into(),
            }],
        });
        let text = |events: Vec<ProviderEvent>| -> String {
            events
                .into_iter()
                .filter_map(|e| match e {
                    ProviderEvent::TextDelta(d) => Some(d),
                    _ => None,
                })
                .collect()
        };
        let missing = collect(
            &provider,
            request(vec![ChatMessage::User {
                content: "/tool rm -rf".into(),
            }]),
        )
        .await;
        assert_eq!(text(missing), "I have no tool called `rm`.");
        let rule = collect(
            &provider,
            request(vec![ChatMessage::User {
                content: "the weather?".into(),
            }]),
        )
        .await;
        assert_eq!(text(rule), "Sunny.");
    }
}
