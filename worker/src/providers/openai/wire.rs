//! OpenAI's chat-completions JSON, as typed serde structs: the request
//! sent and the streamed chunks received (error bodies are read in
//! `providers::http`).
//!
//! Only the fields Switchyard uses are declared; unknown fields are
//! ignored, and fields compatible servers omit or send as `null` are
//! optional, so that vLLM, llama.cpp or Ollama answers read as OpenAI's do.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::providers::{ChatMessage, ChatRequest, ToolSpec};

#[derive(Serialize)]
pub(super) struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    stream: bool,
    stream_options: WireStreamOptions,
}

#[derive(Serialize)]
struct WireStreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
#[serde(tag = "role", rename_all = "snake_case")]
enum WireMessage<'a> {
    System {
        content: &'a str,
    },
    User {
        content: &'a str,
    },
    /// `content` is `null` when the turn is only tool calls.
    Assistant {
        content: Option<&'a str>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<WireToolCall<'a>>,
    },
    Tool {
        tool_call_id: &'a str,
        content: &'a str,
    },
}

#[derive(Serialize)]
struct WireToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionCall<'a>,
}

#[derive(Serialize)]
struct WireFunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// A tool offered to the model, in the shape Ollama takes too.
#[derive(Serialize)]
pub(in crate::providers) struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

#[derive(Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    description: &'a str,
    parameters: &'a Value,
}

impl<'a> WireRequest<'a> {
    pub(super) fn new(request: &'a ChatRequest) -> Self {
        let messages = request.messages.iter().map(|message| match message {
            ChatMessage::System { content } => WireMessage::System { content },
            ChatMessage::User { content } => WireMessage::User { content },
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => WireMessage::Assistant {
                content: (!content.is_empty() || tool_calls.is_empty()).then_some(content.as_str()),
                tool_calls: tool_calls
                    .iter()
                    .map(|call| WireToolCall {
                        id: &call.id,
                        kind: "function",
                        function: WireFunctionCall {
                            name: &call.name,
                            arguments: &call.arguments,
                        },
                    })
                    .collect(),
            },
            ChatMessage::Tool {
                tool_call_id,
                content,
            } => WireMessage::Tool {
                tool_call_id,
                content,
            },
        });
        Self {
            model: &request.model,
            messages: messages.collect(),
            tools: request.tools.iter().map(WireTool::new).collect(),
            stream: true,
            stream_options: WireStreamOptions {
                include_usage: true,
            },
        }
    }
}

impl<'a> WireTool<'a> {
    pub(in crate::providers) fn new(tool: &'a ToolSpec) -> Self {
        Self {
            kind: "function",
            function: WireFunction {
                name: &tool.name,
                description: &tool.description,
                parameters: &tool.parameters,
            },
        }
    }
}

#[derive(Deserialize)]
pub(super) struct WireChunk {
    pub(super) choices: Option<Vec<WireChoice>>,
    pub(super) usage: Option<WireUsage>,
    /// Some servers report failures mid-stream as a chunk with `error`.
    pub(super) error: Option<WireErrorDetail>,
}

#[derive(Deserialize)]
pub(super) struct WireChoice {
    #[serde(default)]
    pub(super) index: u32,
    pub(super) delta: Option<WireDelta>,
    pub(super) finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
pub(super) struct WireDelta {
    pub(super) content: Option<String>,
    pub(super) tool_calls: Option<Vec<WireToolCallDelta>>,
}

#[derive(Deserialize)]
pub(super) struct WireToolCallDelta {
    #[serde(default)]
    pub(super) index: u32,
    pub(super) id: Option<String>,
    pub(super) function: Option<WireFunctionDelta>,
}

#[derive(Deserialize, Default)]
pub(super) struct WireFunctionDelta {
    pub(super) name: Option<String>,
    pub(super) arguments: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct WireUsage {
    #[serde(default)]
    pub(super) prompt_tokens: u64,
    #[serde(default)]
    pub(super) completion_tokens: u64,
    #[serde(default)]
    pub(super) prompt_tokens_details: Option<WirePromptDetails>,
}

#[derive(Deserialize)]
pub(super) struct WirePromptDetails {
    #[serde(default)]
    pub(super) cached_tokens: u64,
}

/// A failure reported inside the stream, after a 200.
#[derive(Deserialize)]
pub(super) struct WireErrorDetail {
    #[serde(default)]
    pub(super) message: String,
    pub(super) code: Option<Value>,
}
