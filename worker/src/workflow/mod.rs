//! Workflows: how a run unfolds once claimed.
//!
//! Every workflow is built from one piece, [`converse`]: an agent's tool
//! loop (model turn, tool calls run at once, their results back to the
//! model) until the model answers, hands off, or runs out of turns.
//!
//! - `single` ([`single`]): the agent's tool loop.
//! - `triage` ([`triage`]): the agent answers, or hands the conversation
//!   to one of its specialists through a `transfer_to_<agent>` tool; the
//!   specialist answers.
//! - `planner` ([`planner`]): the agent calls `create_plan` with tasks for
//!   its specialists; the tasks run (independent ones at once) and their
//!   results come back to the agent as the tool's result, from which it
//!   writes the answer.
//! - `http` ([`http`]): the answer comes from the agent's upstream (an AI
//!   SDK route or an OpenAI-compatible server), relayed as it streams.
//!
//! A run's [`Scope`] holds what its agents share: the event stream, the
//! answer being streamed, the usage and cost so far, and the tool exchanges
//! behind the answer (stored with it, shown to later runs' models).

mod converse;
pub mod http;
pub mod planner;
mod scope;
mod steps;
pub mod triage;
mod turn;

use std::sync::Arc;

use switchyard_common::domain::AgentSpec;

pub(crate) use converse::{Control, Participant, Voice, answer};
pub(crate) use scope::{Failure, Scope, State, internal};

use crate::providers::ChatMessage;

/// The `single` workflow: the entry agent's tool loop, speaking to the user.
pub(crate) async fn single(
    scope: &Scope<'_>,
    entry: Participant,
    conversation: &[ChatMessage],
) -> Result<(), Failure> {
    answer(scope, &entry, &Control::None, entry.prompt(conversation)).await?;
    Ok(())
}

/// The agents an agent hands off to, loaded and checked to be runnable.
pub(crate) async fn specialists(
    scope: &Scope<'_>,
    agent: &AgentSpec,
) -> Result<Vec<Arc<AgentSpec>>, Failure> {
    let mut found = Vec::with_capacity(agent.workflow.handoffs.len());
    for id in &agent.workflow.handoffs {
        let specialist = scope.agent(id).await?;
        found.push(Arc::new(specialist));
    }
    Ok(found)
}
