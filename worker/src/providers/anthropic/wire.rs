//! Anthropic's Messages JSON, as typed serde structs: the request sent and
//! the streamed events received (error bodies are read in
//! `providers::http`).
//!
//! Only the fields Switchyard uses are declared; unknown fields are
//! ignored, and unknown event, block and delta types (thinking, citations,
//! server tools, types added later) decode as `Other`, as Anthropic asks
//! clients to tolerate.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::providers::{ChatMessage, ChatRequest};

#[derive(Serialize)]
pub(super) struct WireRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    /// Every system message of the conversation, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    stream: bool,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: Role,
    content: Vec<WireContent<'a>>,
}

#[derive(Serialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Role {
    User,
    Assistant,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireContent<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: &'a str,
    },
}

#[derive(Serialize)]
struct WireTool<'a> {
    name: &'a str,
    description: &'a str,
    input_schema: &'a Value,
}

impl<'a> WireRequest<'a> {
    /// Anthropic takes the system prompt apart from the turns, wants user
    /// and assistant turns to alternate, and takes tool results as blocks of
    /// a user turn: so system messages are lifted out, and turns of the same
    /// role (several tool results, a tool result and the next question) are
    /// merged into one. Empty texts are left out, since Anthropic refuses
    /// empty text blocks.
    pub(super) fn new(request: &'a ChatRequest, max_tokens: u32) -> Self {
        let mut system: Vec<&str> = Vec::new();
        let mut messages: Vec<WireMessage<'a>> = Vec::new();
        let mut push = |role: Role, content: Vec<WireContent<'a>>| {
            if content.is_empty() {
                return;
            }
            match messages.last_mut() {
                Some(last) if last.role == role => last.content.extend(content),
                _ => messages.push(WireMessage { role, content }),
            }
        };
        let text = |text: &'a String| (!text.is_empty()).then_some(WireContent::Text { text });
        for message in &request.messages {
            match message {
                ChatMessage::System { content } => system.push(content),
                ChatMessage::User { content } => {
                    push(Role::User, text(content).into_iter().collect())
                }
                ChatMessage::Assistant {
                    content,
                    tool_calls,
                } => {
                    let calls = tool_calls.iter().map(|call| WireContent::ToolUse {
                        id: &call.id,
                        name: &call.name,
                        input: tool_input(&call.arguments),
                    });
                    push(
                        Role::Assistant,
                        text(content).into_iter().chain(calls).collect(),
                    );
                }
                ChatMessage::Tool {
                    tool_call_id,
                    content,
                } => push(
                    Role::User,
                    vec![WireContent::ToolResult {
                        tool_use_id: tool_call_id,
                        content,
                    }],
                ),
            }
        }
        system.retain(|s| !s.is_empty());
        let tools = request.tools.iter().map(|tool| WireTool {
            name: &tool.name,
            description: &tool.description,
            input_schema: &tool.parameters,
        });
        Self {
            model: &request.model,
            max_tokens,
            system: (!system.is_empty()).then(|| system.join("\n\n")),
            messages,
            tools: tools.collect(),
            stream: true,
        }
    }
}

/// The `input` of a `tool_use` block, which must be a JSON object.
/// Arguments that are not one (invalid or cut-off JSON, which the tool then
/// refused) are sent back as `{"invalid_arguments": "<the text>"}`: the
/// model then sees what it wrote, next to the tool's complaint, rather than
/// a call it never made. No arguments at all are `{}`.
fn tool_input(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return Value::Object(Map::new());
    }
    match serde_json::from_str(arguments) {
        Ok(Value::Object(input)) => Value::Object(input),
        _ => {
            let mut input = Map::new();
            input.insert("invalid_arguments".into(), Value::from(arguments));
            Value::Object(input)
        }
    }
}

/// One streamed event, by its `type`.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum WireEvent {
    MessageStart {
        message: WireMessageStart,
    },
    ContentBlockStart {
        index: u32,
        content_block: WireBlock,
    },
    ContentBlockDelta {
        index: u32,
        delta: WireDelta,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        usage: Option<WireUsage>,
    },
    MessageStop,
    Error {
        error: WireError,
    },
    /// `ping` and any event type added later.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
pub(super) struct WireMessageStart {
    pub(super) usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum WireBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        /// Empty (`{}`) when streamed: the input comes as `input_json_delta`s.
        #[serde(default)]
        input: Option<Value>,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum WireDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

/// Token counts; `message_start` has the input side, `message_delta` the
/// output (cumulative, and some gateways put the input counts there too).
#[derive(Deserialize)]
pub(super) struct WireUsage {
    pub(super) input_tokens: Option<u64>,
    pub(super) output_tokens: Option<u64>,
    pub(super) cache_read_input_tokens: Option<u64>,
    pub(super) cache_creation_input_tokens: Option<u64>,
}

#[derive(Deserialize)]
pub(super) struct WireError {
    #[serde(rename = "type", default)]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) message: String,
}
