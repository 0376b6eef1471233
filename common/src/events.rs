//! Run events: the one enum that every event on the wire comes from.
//!
//! The worker produces them, [`crate::bus`] numbers, stores and publishes
//! them, and the API relays them as SSE (`event: <type>`, `data: <json>`).
//! Nobody writes event JSON by hand.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{CancelReason, MessageId, RunError, RunId, StepId, ThreadId, Usage};

/// Defines [`RunEvent`] with each event's wire name written once: the serde
/// tag and [`RunEvent::kind`] both come from it.
macro_rules! run_events {
    ($(
        $(#[$meta:meta])*
        $name:literal => $variant:ident { $( $(#[$field_meta:meta])* $field:ident : $ty:ty ),* $(,)? }
    ),* $(,)?) => {
        /// An event of a run, tagged by its SSE `event:` name.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type", content = "data")]
        pub enum RunEvent {
            $(
                $(#[$meta])*
                #[serde(rename = $name)]
                $variant { $( $(#[$field_meta])* $field: $ty ),* },
            )*
        }

        impl RunEvent {
            /// The SSE `event:` name.
            pub fn kind(&self) -> &'static str {
                match self {
                    $( Self::$variant { .. } => $name, )*
                }
            }

            /// Every event name, in declaration order.
            pub const KINDS: &'static [&'static str] = &[$($name),*];
        }
    };
}

run_events! {
    "run.queued" => RunQueued {
        run_id: RunId,
        thread_id: ThreadId,
        queue_position: Option<i64>,
    },
    "run.started" => RunStarted { run_id: RunId, attempt: i32 },
    "agent.started" => AgentStarted { step_id: StepId, agent: String },
    "agent.finished" => AgentFinished { step_id: StepId, agent: String },
    "tool.started" => ToolStarted {
        step_id: StepId,
        tool: String,
        arguments: Value,
    },
    "tool.finished" => ToolFinished {
        step_id: StepId,
        tool: String,
        result: Value,
        is_error: bool,
        latency_ms: i64,
    },
    "message.delta" => MessageDelta {
        message_id: MessageId,
        delta: String,
    },
    "message.completed" => MessageCompleted {
        message_id: MessageId,
        content: String,
    },
    "usage" => Usage {
        input_tokens: i64,
        output_tokens: i64,
        #[serde(default)]
        cached_input_tokens: i64,
        cost_usd: Option<f64>,
    },
    "run.completed" => RunCompleted {
        run_id: RunId,
        message_id: MessageId,
        usage: Usage,
        cost_usd: Option<f64>,
    },
    "run.failed" => RunFailed { run_id: RunId, error: RunError },
    "run.cancelled" => RunCancelled { run_id: RunId, reason: CancelReason },
}

impl RunEvent {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_is_tagged_with_its_kind_and_round_trips() {
        let events = [
            RunEvent::RunStarted {
                run_id: RunId::new(),
                attempt: 2,
            },
            RunEvent::MessageDelta {
                message_id: MessageId::new(),
                delta: "hi".into(),
            },
            RunEvent::RunCancelled {
                run_id: RunId::new(),
                reason: CancelReason::Interrupted,
            },
        ];
        for event in events {
            let value = serde_json::to_value(&event).unwrap();
            assert_eq!(value["type"], event.kind());
            assert_eq!(
                RunEvent::from_parts(event.kind(), event.data()).unwrap(),
                event
            );
        }
        assert_eq!(
            serde_json::to_value(RunEvent::RunCancelled {
                run_id: RunId::new(),
                reason: CancelReason::Requested,
            })
            .unwrap()["data"]["reason"],
            "cancelled"
        );
        let mut kinds = RunEvent::KINDS.to_vec();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), RunEvent::KINDS.len());
    }
}
