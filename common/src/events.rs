//! Run events: the one enum that every event on the wire comes from.
//!
//! The worker produces them, [`crate::bus`] numbers, stores and publishes
//! them, and the API relays them as SSE (`event: <type>`, `data: <json>`).
//! Nobody writes event JSON by hand.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{MessageId, RunError, RunId, StepId, ThreadId, Usage};

/// An event of a run, tagged by its SSE `event:` name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum RunEvent {
    #[serde(rename = "run.queued")]
    RunQueued {
        run_id: RunId,
        thread_id: ThreadId,
        queue_position: Option<i64>,
    },
    #[serde(rename = "run.started")]
    RunStarted { run_id: RunId, attempt: i32 },
    #[serde(rename = "agent.started")]
    AgentStarted { step_id: StepId, agent: String },
    #[serde(rename = "agent.finished")]
    AgentFinished { step_id: StepId, agent: String },
    #[serde(rename = "tool.started")]
    ToolStarted {
        step_id: StepId,
        tool: String,
        arguments: Value,
    },
    #[serde(rename = "tool.finished")]
    ToolFinished {
        step_id: StepId,
        tool: String,
        result: Value,
        is_error: bool,
        latency_ms: i64,
    },
    #[serde(rename = "message.delta")]
    MessageDelta {
        message_id: MessageId,
        delta: String,
    },
    #[serde(rename = "message.completed")]
    MessageCompleted {
        message_id: MessageId,
        content: String,
    },
    #[serde(rename = "usage")]
    Usage {
        input_tokens: i64,
        output_tokens: i64,
        #[serde(default)]
        cached_input_tokens: i64,
        cost_usd: Option<f64>,
    },
    #[serde(rename = "run.completed")]
    RunCompleted {
        run_id: RunId,
        message_id: MessageId,
        usage: Usage,
        cost_usd: Option<f64>,
    },
    #[serde(rename = "run.failed")]
    RunFailed { run_id: RunId, error: RunError },
    #[serde(rename = "run.cancelled")]
    RunCancelled { run_id: RunId, reason: String },
}

impl RunEvent {
    /// The SSE `event:` name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RunQueued { .. } => "run.queued",
            Self::RunStarted { .. } => "run.started",
            Self::AgentStarted { .. } => "agent.started",
            Self::AgentFinished { .. } => "agent.finished",
            Self::ToolStarted { .. } => "tool.started",
            Self::ToolFinished { .. } => "tool.finished",
            Self::MessageDelta { .. } => "message.delta",
            Self::MessageCompleted { .. } => "message.completed",
            Self::Usage { .. } => "usage",
            Self::RunCompleted { .. } => "run.completed",
            Self::RunFailed { .. } => "run.failed",
            Self::RunCancelled { .. } => "run.cancelled",
        }
    }

    /// Whether this event ends the run's stream.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::RunCompleted { .. } | Self::RunFailed { .. } | Self::RunCancelled { .. }
        )
    }

    /// The event's `data:` payload.
    pub fn data(&self) -> Value {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut map)) => map.remove("data").unwrap_or(Value::Null),
            // A derived adjacently-tagged enum always serializes to an object.
            _ => Value::Null,
        }
    }

    /// Rebuild an event from its stored kind and data.
    pub fn from_parts(kind: &str, data: Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(serde_json::json!({ "type": kind, "data": data }))
    }
}

/// An event with its sequence number within its run (the SSE `id:`).
#[derive(Debug, Clone, PartialEq)]
pub struct SequencedEvent {
    pub seq: i64,
    pub event: RunEvent,
}

impl SequencedEvent {
    /// The terminal check, forwarded.
    pub fn is_terminal(&self) -> bool {
        self.event.is_terminal()
    }
}
