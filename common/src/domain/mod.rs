//! Domain types: ids, statuses and the resources of the HTTP contract.

mod agent;
mod ids;
mod resources;
mod run_error;
mod status;
pub mod text;

pub use agent::{
    Agent, AgentSource, AgentSpec, DEFAULT_CONTEXT_TOKENS, DEFAULT_MAX_ITERATIONS, Workflow,
    WorkflowKind,
};
pub use ids::{MessageId, RunId, StepId, ThreadId, UserId};
pub use resources::{Message, Run, RunError, Step, Thread, ThreadStatus, Usage};
pub use run_error::RunErrorCode;
pub use status::{
    AgentStatus, CancelReason, MessageRole, Multitask, RunStatus, StepKind, StepStatus, Visibility,
};
