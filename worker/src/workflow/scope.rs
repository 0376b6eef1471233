//! What the agents of one run share.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use switchyard_common::domain::RunErrorCode;

use futures::{Stream, StreamExt};
use serde_json::Value;

use switchyard_common::bus::RunEvents;
use switchyard_common::db::{self, messages::ToolTurn, runs::RunRow};
use switchyard_common::domain::{AgentSpec, MessageId, StepId, Usage, text};
use switchyard_common::events::RunEvent;
use switchyard_common::lifecycle::Produced;

use crate::providers::{Provider, ProviderError};
use crate::runner::Runner;
use crate::tools::Tool;

/// Why a run ends early, as the run's `error`.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub code: RunErrorCode,
    pub message: String,
}

impl Failure {
    /// `message` often quotes a provider, an upstream or a tool: it is
    /// stored as the run's error, so a NUL in it is replaced.
    pub fn new(code: RunErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: text::without_nul(message.into()),
        }
    }

    /// The agent `id` was deleted (or never existed).
    pub fn agent_gone(id: &str) -> Self {
        Self::new(
            RunErrorCode::AgentUnavailable,
            format!("agent {id:?} does not exist any more"),
        )
    }

    /// Failures of our own infrastructure, as opposed to the agent's work.
    pub fn is_internal(&self) -> bool {
        self.code == RunErrorCode::Internal
    }
}

impl From<ProviderError> for Failure {
    fn from(error: ProviderError) -> Self {
        Self::new(error.code(), error.to_string())
    }
}

/// A database failure while running: logged in full, reported plainly.
pub(crate) fn internal(what: &str, error: sqlx::Error) -> Failure {
    tracing::error!(%error, "{what} failed");
    Failure::new(RunErrorCode::Internal, format!("{what} failed"))
}

/// The run's shared state: its events, its answer so far, its bill.
pub(crate) struct Scope<'a> {
    pub runner: &'a Runner,
    pub run: &'a RunRow,
    /// The answer's id, known before its first delta.
    pub message_id: MessageId,
    events: Mutex<RunEvents>,
    state: Mutex<State>,
    /// Tool steps of earlier attempts whose results this attempt reused.
    reused: Mutex<HashSet<StepId>>,
}

/// What a run has produced so far: the text streamed to the user (the
/// answer), the tool use that led to it turn by turn, the usage, and the
/// cost of the LLM calls (`None` once a call had no price).
pub(crate) type State = Produced;

impl<'a> Scope<'a> {
    pub fn new(runner: &'a Runner, run: &'a RunRow, events: RunEvents) -> Self {
        Self {
            runner,
            run,
            message_id: MessageId::new(),
            events: Mutex::new(events),
            state: Mutex::new(State {
                cost_usd: Some(0.0),
                ..State::default()
            }),
            reused: Mutex::new(HashSet::new()),
        }
    }

    /// The event stream and what the run produced, once its agents are done.
    pub fn into_parts(self) -> (RunEvents, State) {
        (
            self.events
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner),
            self.state
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    fn events(&self) -> MutexGuard<'_, RunEvents> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn emit(&self, event: RunEvent) {
        self.events().emit(event);
    }

    /// A piece of the answer: streamed (coalesced) and kept.
    pub fn say(&self, text: &str) {
        self.events().delta(self.message_id, text);
        self.state().content.push_str(text);
    }

    /// Bytes of the answer streamed so far.
    pub fn said(&self) -> usize {
        self.state().content.len()
    }

    pub fn flush(&self) {
        self.events().flush();
    }

    /// The stream's next item. While waiting, with `flushing`, coalesced
    /// deltas go out when they are due.
    pub async fn next_flushing<S: Stream + Unpin>(
        &self,
        stream: &mut S,
        flushing: bool,
    ) -> Option<S::Item> {
        loop {
            let deadline = if flushing {
                self.events().deadline()
            } else {
                None
            };
            tokio::select! {
                item = stream.next() => return item,
                () = sleep_until(deadline) => self.flush(),
            }
        }
    }

    /// Count an LLM call's usage; returns its cost when its model is priced.
    pub fn bill(&self, model: &str, usage: Usage) -> Option<f64> {
        let cost = self
            .runner
            .config
            .catalog
            .prices
            .get(model)
            .map(|price| price.cost(&usage));
        let mut state = self.state();
        state.usage += usage;
        state.cost_usd = match (state.cost_usd, cost) {
            (Some(total), Some(cost)) => Some(total + cost),
            _ => None,
        };
        cost
    }

    /// Record a turn of tool use that is part of the answer.
    pub fn record_turn(&self, turn: ToolTurn) {
        self.state().tool_turns.push(turn);
    }

    /// On a retried attempt: the result of the same tool call (tool and
    /// arguments) that an earlier attempt completed and this attempt has
    /// not reused yet.
    pub async fn reusable_result(
        &self,
        tool: &str,
        arguments: &Value,
    ) -> Result<Option<Value>, Failure> {
        if self.run.attempt <= 1 {
            return Ok(None);
        }
        let earlier = db::steps::completed_earlier(
            &self.runner.pool,
            self.run.id,
            self.run.attempt,
            tool,
            arguments,
        )
        .await
        .map_err(|e| internal("reading earlier tool calls", e))?;
        let mut reused = self.reused.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(earlier
            .into_iter()
            .find_map(|(step_id, output)| reused.insert(step_id).then_some(output)))
    }

    /// An agent by id, as stored now; deleted agents, and agents written
    /// over the API beyond what `[api_agents]` allows, are unavailable.
    pub async fn agent(&self, id: &str) -> Result<AgentSpec, Failure> {
        let agent = db::agents::get(&self.runner.pool, id)
            .await
            .map_err(|e| internal("loading an agent", e))?
            .ok_or_else(|| Failure::agent_gone(id))?;
        self.runner.vet(agent)
    }

    /// The provider an agent runs on.
    pub fn provider(&self, agent: &AgentSpec) -> Result<Arc<dyn Provider>, Failure> {
        self.runner
            .providers
            .get(&agent.provider)
            .cloned()
            .ok_or_else(|| {
                Failure::new(
                    RunErrorCode::AgentUnavailable,
                    format!(
                        "agent {:?} uses provider {:?}, which is not configured",
                        agent.id, agent.provider
                    ),
                )
            })
    }

    /// The tools an agent may call. A tool that cannot be set up (its
    /// database variable unset, say) makes the agent unavailable.
    pub fn tools(&self, agent: &AgentSpec) -> Result<Vec<Arc<dyn Tool>>, Failure> {
        self.runner
            .toolbox
            .for_agent(&agent.tools, &agent.tool_settings)
            .map_err(|error| {
                Failure::new(
                    RunErrorCode::AgentUnavailable,
                    format!("agent {:?}: {}", agent.id, error.0),
                )
            })
    }
}

/// Sleep until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
