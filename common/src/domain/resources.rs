//! The resources of the HTTP contract (`API.md`), exactly as clients see them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{
    MessageId, MessageRole, RunId, RunStatus, StepId, StepKind, StepStatus, ThreadId, Visibility,
};

/// Whether a thread has a queued or in-progress run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ThreadStatus {
    Idle,
    Busy,
}

/// A conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Thread {
    pub id: ThreadId,
    pub agent_id: String,
    pub title: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub status: ThreadStatus,
    /// `private` (the default) or `public`: readable by any signed-in user
    /// who has the id.
    pub visibility: Visibility,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One message of a thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Message {
    pub id: MessageId,
    pub thread_id: ThreadId,
    pub run_id: Option<RunId>,
    pub role: MessageRole,
    pub content: String,
    pub created_at: DateTime<Utc>,
}

/// Token counts as reported by the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    /// Every prompt token, cached ones included.
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// The part of `input_tokens` the provider served from its prompt cache
    /// (billed at the cached-input price).
    #[serde(default)]
    pub cached_input_tokens: i64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Self) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cached_input_tokens += other.cached_input_tokens;
    }
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunError {
    pub code: super::RunErrorCode,
    pub message: String,
}

/// One execution of an agent on a thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Run {
    pub id: RunId,
    pub thread_id: ThreadId,
    pub agent_id: String,
    pub model: String,
    /// 1 (most urgent) to 10: workers take more urgent runs first, equal
    /// priorities in order; each step of urgency counts as
    /// `SWITCHYARD_PRIORITY_AGING_SECS` of waiting, so none waits forever.
    pub priority: i16,
    pub status: RunStatus,
    /// While queued, how many runs stand before this one: its thread's
    /// active runs before it, and the ready runs of other threads that
    /// workers take first. Computed when read; `null` once it started.
    pub queue_position: Option<i64>,
    pub attempt: i32,
    pub usage: Usage,
    pub cost_usd: Option<f64>,
    pub error: Option<RunError>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One traced unit of work inside a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Step {
    pub id: StepId,
    pub run_id: RunId,
    /// The `agent` or `plan` step this step ran under; `null` at the top level.
    pub parent_id: Option<StepId>,
    pub kind: StepKind,
    pub name: String,
    #[schema(value_type = Object)]
    pub input: Value,
    #[schema(value_type = Object)]
    pub output: Option<Value>,
    pub status: StepStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub latency_ms: Option<i64>,
    pub usage: Option<Usage>,
    /// LLM steps: the call's cost from the configured price table, if priced.
    pub cost_usd: Option<f64>,
}
