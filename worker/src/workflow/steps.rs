//! Steps with events: an agent's part of a run, and tool calls.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use switchyard_common::db;
use switchyard_common::domain::{StepId, StepKind, StepStatus};
use switchyard_common::events::RunEvent;

use super::scope::{Failure, Scope, internal};
use crate::providers::ToolCall;
use crate::tools::{self, Tool};

/// Start an `agent` step and announce it (`agent.started`).
pub(crate) async fn start_agent(
    scope: &Scope<'_>,
    agent: &str,
    parent: Option<StepId>,
    input: &Value,
) -> Result<StepId, Failure> {
    let step = db::steps::NewStep {
        run_id: scope.run.id,
        attempt: scope.run.attempt,
        parent_id: parent,
        kind: StepKind::Agent,
        name: agent,
        input,
    };
    let step_id = db::steps::start(&scope.runner.pool, step)
        .await
        .map_err(|e| internal("recording a step", e))?;
    scope.emit(RunEvent::AgentStarted {
        step_id,
        agent: agent.to_owned(),
    });
    Ok(step_id)
}

/// End an `agent` step (`agent.finished`), with the agent's answer or failure.
pub(crate) async fn finish_agent(
    scope: &Scope<'_>,
    step_id: StepId,
    agent: &str,
    outcome: Result<&str, &Failure>,
) -> Result<(), Failure> {
    let (status, output) = match outcome {
        Ok(text) => (StepStatus::Completed, json!({ "text": text })),
        Err(failure) => (
            StepStatus::Failed,
            json!({"error": {"code": failure.code, "message": failure.message}}),
        ),
    };
    finish(scope, step_id, status, &output).await?;
    scope.emit(RunEvent::AgentFinished {
        step_id,
        agent: agent.to_owned(),
    });
    Ok(())
}

/// End a step that has no usage of its own.
pub(crate) async fn finish(
    scope: &Scope<'_>,
    step_id: StepId,
    status: StepStatus,
    output: &Value,
) -> Result<(), Failure> {
    let end = db::steps::StepEnd {
        status,
        output,
        usage: None,
        cost_usd: None,
    };
    db::steps::finish(&scope.runner.pool, step_id, end)
        .await
        .map_err(|e| internal("recording a step", e))
}

/// The JSON a tool call's arguments are recorded as: parsed if they parse.
pub(crate) fn arguments_value(call: &ToolCall) -> Value {
    serde_json::from_str(&call.arguments).unwrap_or_else(|_| Value::String(call.arguments.clone()))
}

/// Run a tool call as a step (`tool.started`, `tool.finished`). A tool's
/// own failure is its result (`is_error`), for the model to read.
pub(crate) async fn call_tool(
    scope: &Scope<'_>,
    parent: Option<StepId>,
    tools: &[Arc<dyn Tool>],
    call: &ToolCall,
) -> Result<(Value, bool), Failure> {
    let arguments = arguments_value(call);
    let step = db::steps::NewStep {
        run_id: scope.run.id,
        attempt: scope.run.attempt,
        parent_id: parent,
        kind: StepKind::Tool,
        name: &call.name,
        input: &arguments,
    };
    let step_id = db::steps::start(&scope.runner.pool, step)
        .await
        .map_err(|e| internal("recording a step", e))?;
    scope.emit(RunEvent::ToolStarted {
        step_id,
        tool: call.name.clone(),
        arguments: arguments.clone(),
    });
    let started = Instant::now();
    let result = match scope.reusable_result(&call.name, &arguments).await? {
        // An earlier attempt of the run made this call: its effect happened.
        Some(recorded) => Ok(recorded),
        None => match tools.iter().find(|t| t.name() == call.name) {
            Some(tool) => tools::invoke(tool.as_ref(), &call.arguments).await,
            None => Err(tools::ToolError(format!(
                "there is no tool called {:?}",
                call.name
            ))),
        },
    };
    let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let (value, is_error) = match result {
        Ok(value) => (value, false),
        Err(error) => (json!({"error": error.0}), true),
    };
    let status = if is_error {
        StepStatus::Failed
    } else {
        StepStatus::Completed
    };
    finish(scope, step_id, status, &value).await?;
    scope.emit(RunEvent::ToolFinished {
        step_id,
        tool: call.name.clone(),
        result: value.clone(),
        is_error,
        latency_ms,
    });
    Ok((value, is_error))
}
