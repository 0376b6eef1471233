//! The `triage` workflow: the entry agent answers, or hands the
//! conversation to one of its specialists, who answers.
//!
//! Each specialist is offered as a tool `transfer_to_<agent>` (dashes become
//! underscores; names are cut to the 64 characters providers accept) taking
//! a `reason`. The first hand-off of a turn wins; other calls of that turn
//! are not run. Both agents are `agent` steps with `agent.started` and
//! `agent.finished` events; both speak to the user.

use std::sync::Arc;

use serde_json::{Value, json};
use switchyard_common::domain::{AgentSpec, StepId};

use super::converse::{Control, Ending, Participant, Voice, answer, converse};
use super::scope::{Failure, Scope};
use super::steps;
use crate::providers::{ChatMessage, ToolCall, ToolSpec};

/// Longest tool name the providers accept.
const MAX_TOOL_NAME: usize = 64;

/// The hand-off tools of a triage agent.
pub(crate) struct Handoffs {
    tools: Vec<(String, Arc<AgentSpec>)>,
}

impl Handoffs {
    pub fn new(specialists: Vec<Arc<AgentSpec>>) -> Self {
        let mut tools: Vec<(String, Arc<AgentSpec>)> = Vec::with_capacity(specialists.len());
        for specialist in specialists {
            let mut name: String = format!("transfer_to_{}", specialist.id.replace('-', "_"))
                .chars()
                .take(MAX_TOOL_NAME)
                .collect();
            if tools.iter().any(|(taken, _)| *taken == name) {
                let suffix = format!("_{}", tools.len());
                name.truncate(MAX_TOOL_NAME - suffix.len());
                name.push_str(&suffix);
            }
            tools.push((name, specialist));
        }
        Self { tools }
    }

    pub fn tool_specs(&self) -> Vec<ToolSpec> {
        self.tools
            .iter()
            .map(|(name, specialist)| ToolSpec {
                name: name.clone(),
                description: format!(
                    "Hand the conversation to {} ({}), who will answer the user.{}",
                    specialist.name,
                    specialist.id,
                    if specialist.description.is_empty() {
                        String::new()
                    } else {
                        format!(" {}", specialist.description)
                    }
                ),
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "reason": {
                            "type": "string",
                            "description": "Why this specialist should answer, for them to read."
                        }
                    },
                    "additionalProperties": false
                }),
            })
            .collect()
    }

    /// The first hand-off among a turn's calls, with its reason.
    pub fn chosen<'c>(
        &self,
        calls: &'c [ToolCall],
    ) -> Option<(&'c ToolCall, Arc<AgentSpec>, String)> {
        calls.iter().find_map(|call| {
            let (_, specialist) = self.tools.iter().find(|(name, _)| *name == call.name)?;
            let reason = serde_json::from_str::<Value>(&call.arguments)
                .ok()
                .and_then(|a| a.get("reason").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default();
            Some((call, specialist.clone(), reason))
        })
    }
}

/// Run a triage agent on `conversation`.
pub(crate) async fn run(
    scope: &Scope<'_>,
    entry: Arc<AgentSpec>,
    model: Option<String>,
    conversation: &[ChatMessage],
) -> Result<(), Failure> {
    let specialists = super::specialists(scope, &entry).await?;
    let handoffs = Control::Triage(Handoffs::new(specialists));

    let step_id = steps::start_agent(scope, &entry.id, None, &json!({"role": "triage"})).await?;
    let triage = Participant::new(scope, entry.clone(), model, Some(step_id), Voice::User)?;
    let ending = converse(scope, &triage, &handoffs, triage.prompt(conversation)).await;
    let summary = match &ending {
        Ok(Ending::Answered { text }) => Ok(text.as_str()),
        Ok(Ending::HandOff { to, .. }) => Ok(to.id.as_str()),
        Err(failure) => Err(failure),
    };
    steps::finish_agent(scope, step_id, &entry.id, summary).await?;
    let (to, reason) = match ending? {
        Ending::Answered { .. } => return Ok(()),
        Ending::HandOff { to, reason } => (to, reason),
    };

    let input = json!({"handed_off_by": entry.id, "reason": reason});
    let step_id = steps::start_agent(scope, &to.id, None, &input).await?;
    let outcome =
        answer_as_specialist(scope, &entry, to.clone(), step_id, &reason, conversation).await;
    steps::finish_agent(scope, step_id, &to.id, outcome.as_deref()).await?;
    outcome.map(|_| ())
}

/// The specialist's answer: its own instructions, a note of the hand-off,
/// then the conversation. A specialist answers; it does not hand off again.
async fn answer_as_specialist(
    scope: &Scope<'_>,
    triage: &AgentSpec,
    specialist: Arc<AgentSpec>,
    step_id: StepId,
    reason: &str,
    conversation: &[ChatMessage],
) -> Result<String, Failure> {
    let agent = Participant::new(scope, specialist, None, Some(step_id), Voice::User)?;
    let mut messages = agent.prompt(&[]);
    let note = if reason.is_empty() {
        format!("{} handed this conversation to you.", triage.name)
    } else {
        format!("{} handed this conversation to you: {reason}", triage.name)
    };
    messages.push(ChatMessage::System { content: note });
    messages.extend_from_slice(conversation);
    answer(scope, &agent, &Control::None, messages).await
}
