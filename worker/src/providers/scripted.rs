//! The scripted model: deterministic, offline, instant to start.
//!
//! It is the model of the built-in agents, for demos and tests. It answers
//! the last message by these rules, in order:
//!
//! 1. After tool results: the first `replies` rule with `after_tool` naming
//!    the last result's tool answers with its `reply` (`{result}` replaced by
//!    the result); otherwise it reports the results:
//!    ``The `NAME` tool returned: …``.
//! 2. A user message starting with `/tool NAME {json}` makes it call the
//!    tool `NAME` with those arguments (`{}` when omitted), if the agent has it.
//! 3. The first `replies` rule (for this model, if the rule names one) whose
//!    `contains` occurs in the user message, and one of whose `keywords` (if
//!    it has any) does too, ignoring case, answers with its `reply`, or
//!    calls its `tool` with its `arguments`.
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
        let last_user = request
            .messages
            .iter()
            .rev()
            .find_map(|m| match m {
                ChatMessage::User { content } => Some(content.as_str()),
                _ => None,
            })
            .unwrap_or_default();
        let rules = || {
            self.settings.replies.iter().filter(|rule| {
                rule.model.as_ref().is_none_or(|m| *m == request.model) && rule.matches(last_user)
            })
        };

        let results: Vec<(&str, &str)> = request
            .messages
            .iter()
            .rev()
            .map_while(|m| match m {
                ChatMessage::Tool {
                    content,
                    tool_call_id,
                } => Some((
                    tool_name_of(&request.messages, tool_call_id).unwrap_or("unknown"),
                    content.as_str(),
                )),
                _ => None,
            })
            .collect();
        if let Some(&(last_tool, last_result)) = results.first() {
            if let Some(reply) = rules()
                .filter(|rule| rule.after_tool.as_deref() == Some(last_tool))
                .find_map(|rule| rule.reply.as_deref())
            {
                return Answer::Text(reply.replace("{result}", last_result));
            }
            let report: Vec<String> = results
                .iter()
                .rev()
                .map(|(name, content)| format!("The `{name}` tool returned: {content}"))
                .collect();
            return Answer::Text(report.join("\n"));
        }

        if let Some(command) = last_user.trim_start().strip_prefix("/tool ") {
            let command = command.trim();
            let (name, arguments) = command
                .split_once(char::is_whitespace)
                .unwrap_or((command, ""));
            let arguments = match arguments.trim() {
                "" => "{}".to_owned(),
                given => given.to_owned(),
            };
            return call(request, last_user, name, arguments);
        }

        if let Some(rule) = rules().find(|rule| rule.after_tool.is_none()) {
            return match (&rule.reply, &rule.tool) {
                (_, Some(tool)) => {
                    let arguments = rule
                        .arguments
                        .clone()
                        .unwrap_or_else(|| serde_json::json!({}));
                    call(request, last_user, tool, arguments.to_string())
                }
                (Some(reply), None) => Answer::Text(reply.clone()),
                // The catalog refuses rules with neither.
                (None, None) => Answer::Text(String::new()),
            };
        }
        Answer::Text(format!(
            "You said: \"{last_user}\". I am the scripted model: I answer offline, the same way every time."
        ))
    }
}

/// A call of the tool `name`, if the request offers it.
fn call(request: &ChatRequest, prompt: &str, name: &str, arguments: String) -> Answer {
    if !request.tools.iter().any(|t| t.name == name) {
        return Answer::Text(format!("I have no tool called `{name}`."));
    }
    Answer::Tool(ToolCall {
        id: format!("call_{}", uuid_suffix(prompt)),
        name: name.to_owned(),
        arguments,
    })
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
    use switchyard_common::config::ScriptedReply;

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
            replies: vec![
                ScriptedReply {
                    contains: "weather".into(),
                    reply: Some("Sunny.".into()),
                    ..Default::default()
                },
                ScriptedReply {
                    contains: "time".into(),
                    model: Some("other-model".into()),
                    reply: Some("Not for this model.".into()),
                    ..Default::default()
                },
                ScriptedReply {
                    contains: "time".into(),
                    tool: Some("current_time".into()),
                    ..Default::default()
                },
                ScriptedReply {
                    after_tool: Some("current_time".into()),
                    reply: Some("It is {result}.".into()),
                    ..Default::default()
                },
            ],
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

        let asked = ChatMessage::User {
            content: "what time is it?".into(),
        };
        let events = collect(&provider, request(vec![asked.clone()])).await;
        let ProviderEvent::ToolCall(call) = &events[0] else {
            panic!("expected the rule's tool call, got {events:?}");
        };
        assert_eq!(
            (call.name.as_str(), call.arguments.as_str()),
            ("current_time", "{}")
        );
        let answered = collect(
            &provider,
            request(vec![
                asked,
                ChatMessage::Assistant {
                    content: String::new(),
                    tool_calls: vec![call.clone()],
                },
                ChatMessage::Tool {
                    tool_call_id: call.id.clone(),
                    content: "noon".into(),
                },
            ]),
        )
        .await;
        assert_eq!(text(answered), "It is noon.");
    }
}
