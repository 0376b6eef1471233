//! Domain types: ids, statuses and the resources of the HTTP contract.

mod ids;
mod resources;
mod status;

pub use ids::{MessageId, RunId, StepId, ThreadId, UserId};
pub use resources::{Agent, Message, Run, RunError, Step, Thread, ThreadStatus, Usage, Workflow};
pub use status::{MessageRole, Multitask, RunStatus, StepKind, StepStatus};
