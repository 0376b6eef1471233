//! The closed sets of states and kinds, mapped to PostgreSQL enums.

use serde::{Deserialize, Serialize};

/// Where a run is in its life. `queued → in_progress → completed | failed | cancelled`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "run_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    InProgress,
    Completed,
    Failed,
    Cancelled,
}

impl RunStatus {
    /// The wire and database form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// A terminal run never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// Whether an agent takes new runs.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "agent_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    #[default]
    Active,
    /// Listed and readable; a new run on it is refused (`409`). Runs
    /// already queued still run.
    Inactive,
}

/// Who may read a thread: its owner only, or any signed-in user who has
/// its id (who may still not write to it, nor see it listed).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "thread_visibility", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    #[default]
    Private,
    Public,
}

/// Who wrote a message.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "message_role", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum MessageRole {
    User,
    Assistant,
    Tool,
    System,
}

/// What a step traced.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "step_kind", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Llm,
    Tool,
    Agent,
    Plan,
}

/// Where a step is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "step_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Running,
    Completed,
    Failed,
}

/// What a new run does when its thread already has an active run.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "multitask_strategy", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Multitask {
    /// Wait for the active runs to finish, then run (the default).
    #[default]
    Enqueue,
    /// Refuse with `409 conflict`.
    Reject,
    /// Cancel the active run, then run.
    Interrupt,
}

/// Why a run is cancelled, as its `cancel_reason` (a text column) and
/// `run.cancelled` reason.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "text")]
pub enum CancelReason {
    /// `POST /v1/runs/{id}/cancel`.
    #[serde(rename = "cancelled")]
    #[sqlx(rename = "cancelled")]
    Requested,
    /// A newer run on the thread asked for `multitask: interrupt`.
    #[serde(rename = "interrupted")]
    #[sqlx(rename = "interrupted")]
    Interrupted,
}

impl CancelReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "cancelled",
            Self::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for CancelReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
