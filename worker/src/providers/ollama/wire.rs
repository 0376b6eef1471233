//! Ollama's `/api/chat` JSON, as typed serde structs: the request sent and
//! the lines of the streamed answer received.
//!
//! Only the fields Switchyard uses are declared; unknown fields (timings,
//! `created_at`, a thinking model's `thinking` text) are ignored.

use std::collections::HashMap;

use serde::ser::Error as _;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use switchyard_common::config::KeepAlive;

use crate::providers::openai::wire::WireTool;
use crate::providers::{ChatMessage, ChatRequest, ToolCall};

#[derive(Serialize)]
pub(super) struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    /// In OpenAI's shape, which Ollama takes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    stream: bool,
    #[serde(skip_serializing_if = "Map::is_empty")]
    options: &'a Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keep_alive: Option<&'a KeepAlive>,
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
    /// `content` is `""` when the turn is only tool calls: Ollama's
    /// content is a string, never `null`.
    Assistant {
        content: &'a str,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<WireToolCall<'a>>,
    },
    /// Ollama matches a result to its call by the tool's name, not an id.
    Tool {
        content: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        tool_name: Option<&'a str>,
    },
}

/// A call as Ollama takes it: `{"function": {"name", "arguments"}}`, the
/// arguments a JSON object, not JSON text as in OpenAI's format. Arguments
/// that are not an object cannot be sent, and fail the request's encoding.
struct WireToolCall<'a>(&'a ToolCall);

#[derive(Serialize)]
struct WireToolCallJson<'a> {
    function: WireFunctionCall<'a>,
}

#[derive(Serialize)]
struct WireFunctionCall<'a> {
    name: &'a str,
    arguments: Map<String, Value>,
}

impl Serialize for WireToolCall<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let call = self.0;
        let arguments = serde_json::from_str(&call.arguments).map_err(|_| {
            S::Error::custom(format!(
                "the arguments of tool call {} ({}) are not a JSON object",
                call.id, call.name
            ))
        })?;
        let json = WireToolCallJson {
            function: WireFunctionCall {
                name: &call.name,
                arguments,
            },
        };
        json.serialize(serializer)
    }
}

impl<'a> WireRequest<'a> {
    pub(super) fn new(
        request: &'a ChatRequest,
        options: &'a Map<String, Value>,
        keep_alive: Option<&'a KeepAlive>,
    ) -> Self {
        // A tool result names the tool of the call it answers: the latest
        // call with its id (ids repeat across turns, `call_0` each time).
        let mut tool_names: HashMap<&str, &str> = HashMap::new();
        let mut messages = Vec::with_capacity(request.messages.len());
        for message in &request.messages {
            messages.push(match message {
                ChatMessage::System { content } => WireMessage::System { content },
                ChatMessage::User { content } => WireMessage::User { content },
                ChatMessage::Assistant {
                    content,
                    tool_calls,
                } => {
                    for call in tool_calls {
                        tool_names.insert(&call.id, &call.name);
                    }
                    WireMessage::Assistant {
                        content,
                        tool_calls: tool_calls.iter().map(WireToolCall).collect(),
                    }
                }
                ChatMessage::Tool {
                    tool_call_id,
                    content,
                } => WireMessage::Tool {
                    content,
                    tool_name: tool_names.get(tool_call_id.as_str()).copied(),
                },
            });
        }
        Self {
            model: &request.model,
            messages,
            tools: request.tools.iter().map(WireTool::new).collect(),
            stream: true,
            options,
            keep_alive,
        }
    }
}

/// One line of a streamed answer.
#[derive(Deserialize)]
pub(super) struct WireLine {
    pub(super) message: Option<WireAnswer>,
    #[serde(default)]
    pub(super) done: bool,
    /// Prompt tokens, those read from the cache included; absent from
    /// older servers when the whole prompt was cached.
    pub(super) prompt_eval_count: Option<u64>,
    /// The part of `prompt_eval_count` read from the cache (newer servers).
    pub(super) prompt_eval_cached_count: Option<u64>,
    pub(super) eval_count: Option<u64>,
    /// A failure after the answer started (the status was already 200).
    pub(super) error: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct WireAnswer {
    pub(super) content: Option<String>,
    pub(super) tool_calls: Option<Vec<WireToolCallOut>>,
}

#[derive(Deserialize)]
pub(super) struct WireToolCallOut {
    pub(super) function: WireFunctionOut,
}

#[derive(Deserialize)]
pub(super) struct WireFunctionOut {
    #[serde(default)]
    pub(super) name: String,
    #[serde(default)]
    pub(super) arguments: Value,
}
