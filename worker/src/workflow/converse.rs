//! An agent's tool loop.

use std::sync::Arc;
use switchyard_common::domain::RunErrorCode;

use futures::future::join_all;
use serde_json::{Value, json};
use switchyard_common::db::messages::{ToolExchange, ToolTurn};
use switchyard_common::domain::{AgentSpec, StepId};

use super::scope::{Failure, Scope};
use super::{planner, steps, triage, turn};
use crate::providers::{ChatMessage, ChatRequest, Provider, ToolCall};
use crate::tools::{self, Tool};

/// Whether an agent's text reaches the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Voice {
    /// Streamed as the run's answer.
    User,
    /// Kept for the workflow (a planner's task): not streamed.
    Internal,
}

/// An agent taking part in a run, ready to call.
pub(crate) struct Participant {
    pub spec: Arc<AgentSpec>,
    pub model: String,
    pub provider: Arc<dyn Provider>,
    pub tools: Vec<Arc<dyn Tool>>,
    /// The `agent` step its steps are recorded under.
    pub parent: Option<StepId>,
    pub voice: Voice,
}

impl Participant {
    /// `model` overrides the agent's own (a run's `model`).
    pub fn new(
        scope: &Scope<'_>,
        spec: Arc<AgentSpec>,
        model: Option<String>,
        parent: Option<StepId>,
        voice: Voice,
    ) -> Result<Self, Failure> {
        Ok(Self {
            provider: scope.provider(&spec)?,
            tools: scope.tools(&spec)?,
            model: model.unwrap_or_else(|| spec.model.clone()),
            spec,
            parent,
            voice,
        })
    }

    /// The agent's instructions, then `conversation`.
    pub fn prompt(&self, conversation: &[ChatMessage]) -> Vec<ChatMessage> {
        let mut messages = Vec::with_capacity(conversation.len() + 1);
        if !self.spec.instructions.is_empty() {
            messages.push(ChatMessage::System {
                content: self.spec.instructions.clone(),
            });
        }
        messages.extend_from_slice(conversation);
        messages
    }
}

/// The workflow's own tools, offered next to the agent's.
pub(crate) enum Control {
    None,
    /// Hand-off tools, one per specialist.
    Triage(triage::Handoffs),
    /// `create_plan` over these specialists.
    Planner(Vec<Arc<AgentSpec>>),
}

/// How an agent's loop ended.
pub(crate) enum Ending {
    /// The model answered; `text` is everything it said in the loop.
    Answered { text: String },
    /// The model handed the conversation to a specialist.
    HandOff { to: Arc<AgentSpec>, reason: String },
}

/// Run `agent`'s tool loop on `messages` until the model answers without
/// calling a tool, hands off, or used up its `max_iterations` turns. The
/// tool calls of one turn run at once.
pub(crate) async fn converse(
    scope: &Scope<'_>,
    agent: &Participant,
    control: &Control,
    messages: Vec<ChatMessage>,
) -> Result<Ending, Failure> {
    let mut tool_specs: Vec<_> = agent
        .tools
        .iter()
        .map(|t| tools::spec(t.as_ref()))
        .collect();
    match control {
        Control::None => {}
        Control::Triage(handoffs) => tool_specs.extend(handoffs.tool_specs()),
        Control::Planner(specialists) => tool_specs.push(planner::tool_spec(specialists)),
    }
    let mut request = ChatRequest {
        model: agent.model.clone(),
        messages,
        tools: tool_specs,
    };
    let mut said = String::new();
    for _ in 0..agent.spec.workflow.max_iterations {
        let turn = turn::model_turn(scope, agent, &request).await?;
        said.push_str(&turn.text);
        if turn.tool_calls.is_empty() {
            return Ok(Ending::Answered { text: said });
        }
        if let Control::Triage(handoffs) = control
            && let Some((call, to, reason)) = handoffs.chosen(&turn.tool_calls)
        {
            let result = json!({ "handed_off_to": to.id });
            if agent.voice == Voice::User {
                scope.record_turn(ToolTurn {
                    text: turn.text,
                    calls: vec![exchange(call, &result)],
                });
            }
            return Ok(Ending::HandOff { to, reason });
        }

        let results = join_all(
            turn.tool_calls
                .iter()
                .map(|call| execute(scope, agent, control, call)),
        )
        .await;
        request.messages.push(ChatMessage::Assistant {
            content: turn.text.clone(),
            tool_calls: turn.tool_calls.clone(),
        });
        let mut exchanges = Vec::with_capacity(results.len());
        for (call, result) in turn.tool_calls.iter().zip(results) {
            let result = result?;
            request.messages.push(ChatMessage::Tool {
                tool_call_id: call.id.clone(),
                content: result.to_string(),
            });
            exchanges.push(exchange(call, &result));
        }
        if agent.voice == Voice::User {
            scope.record_turn(ToolTurn {
                text: turn.text,
                calls: exchanges,
            });
        }
    }
    Err(Failure::new(
        RunErrorCode::MaxIterations,
        format!(
            "agent {:?} did not answer within {} model turns",
            agent.spec.id, agent.spec.workflow.max_iterations
        ),
    ))
}

/// [`converse`] for an agent that cannot hand off: its answer.
pub(crate) async fn answer(
    scope: &Scope<'_>,
    agent: &Participant,
    control: &Control,
    messages: Vec<ChatMessage>,
) -> Result<String, Failure> {
    match converse(scope, agent, control, messages).await? {
        Ending::Answered { text } => Ok(text),
        Ending::HandOff { to, .. } => Err(Failure::new(
            RunErrorCode::Internal,
            format!(
                "agent {:?} handed off to {:?} outside a triage",
                agent.spec.id, to.id
            ),
        )),
    }
}

/// One tool call of a turn: the workflow's own tool or one of the agent's.
async fn execute(
    scope: &Scope<'_>,
    agent: &Participant,
    control: &Control,
    call: &ToolCall,
) -> Result<Value, Failure> {
    match control {
        Control::Planner(specialists) if call.name == planner::TOOL => {
            planner::execute(scope, agent, specialists, call).await
        }
        _ => steps::call_tool(scope, agent.parent, &agent.tools, call).await,
    }
}

fn exchange(call: &ToolCall, result: &Value) -> ToolExchange {
    ToolExchange {
        id: call.id.clone(),
        name: call.name.clone(),
        arguments: call.arguments.clone(),
        result: result.to_string(),
    }
}
