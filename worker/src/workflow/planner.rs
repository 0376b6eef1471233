//! The `planner` workflow: the entry agent writes a plan with the
//! `create_plan` tool, the plan's tasks run on the agent's specialists
//! (each task as soon as the tasks it depends on are done, independent
//! tasks at once), and the results come back to the agent as the tool's
//! result, from which it writes the answer.
//!
//! The plan is a `plan` step, announced as `tool.started` (its arguments
//! are the plan) and closed by `tool.finished` (the tasks' results); each
//! task is an `agent` step under it. Tasks do not speak to the user: only
//! the planner's answer is streamed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use switchyard_common::domain::RunErrorCode;

use futures::FutureExt;
use futures::future::{BoxFuture, join_all};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchyard_common::domain::{AgentSpec, StepId, StepKind};

use super::converse::{Control, Participant, Voice, answer};
use super::scope::{Failure, Scope};
use super::steps::{self, ToolStep};
use crate::providers::{ChatMessage, ToolCall, ToolSpec};

/// The planner's tool.
pub(crate) const TOOL: &str = "create_plan";

/// Most tasks one plan may have.
const MAX_TASKS: usize = 12;

/// A plan as the model writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Plan {
    steps: Vec<Task>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Task {
    id: String,
    agent: String,
    task: String,
    #[serde(default)]
    depends_on: Vec<String>,
}

/// What a task produced.
#[derive(Debug, Clone, Serialize)]
struct TaskResult {
    id: String,
    agent: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub(crate) fn tool_spec(specialists: &[Arc<AgentSpec>]) -> ToolSpec {
    let roster: Vec<String> = specialists
        .iter()
        .map(|s| {
            if s.description.is_empty() {
                format!("- {}: {}", s.id, s.name)
            } else {
                format!("- {}: {}. {}", s.id, s.name, s.description)
            }
        })
        .collect();
    ToolSpec {
        name: TOOL.to_owned(),
        description: format!(
            "Break the request into tasks for these agents and run them; returns each task's result. \
             A task may depend on earlier tasks (it then sees their results); independent tasks run at once.\n{}",
            roster.join("\n")
        ),
        parameters: json!({
            "type": "object",
            "properties": {
                "steps": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_TASKS,
                    "items": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "string", "description": "A short unique name for the task."},
                            "agent": {"type": "string", "enum": specialists.iter().map(|s| s.id.as_str()).collect::<Vec<_>>()},
                            "task": {"type": "string", "description": "What the agent should do, self-contained."},
                            "depends_on": {"type": "array", "items": {"type": "string"}}
                        },
                        "required": ["id", "agent", "task"],
                        "additionalProperties": false
                    }
                }
            },
            "required": ["steps"],
            "additionalProperties": false
        }),
    }
}

/// Check a plan the model wrote; the problem goes back to the model.
fn parse(arguments: &str, specialists: &[Arc<AgentSpec>]) -> Result<Plan, String> {
    let plan: Plan =
        serde_json::from_str(arguments).map_err(|e| format!("the plan is not valid: {e}"))?;
    if plan.steps.is_empty() || plan.steps.len() > MAX_TASKS {
        return Err(format!("a plan has 1 to {MAX_TASKS} steps"));
    }
    let mut ids = HashSet::new();
    for task in &plan.steps {
        if task.id.trim().is_empty() || !ids.insert(task.id.as_str()) {
            return Err(format!(
                "step ids must be unique and not empty ({:?})",
                task.id
            ));
        }
        if !specialists.iter().any(|s| s.id == task.agent) {
            return Err(format!(
                "step {:?}: no agent {:?} (use one of: {})",
                task.id,
                task.agent,
                specialists
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    for task in &plan.steps {
        if let Some(missing) = task.depends_on.iter().find(|d| !ids.contains(d.as_str())) {
            return Err(format!(
                "step {:?} depends on unknown step {missing:?}",
                task.id
            ));
        }
    }
    if waves(&plan).is_none() {
        return Err("the steps' dependencies form a cycle".into());
    }
    Ok(plan)
}

/// The plan's tasks in waves: each wave depends only on earlier waves.
/// `None` if the dependencies form a cycle.
fn waves(plan: &Plan) -> Option<Vec<Vec<usize>>> {
    let mut done: HashSet<&str> = HashSet::new();
    let mut left: Vec<usize> = (0..plan.steps.len()).collect();
    let mut waves = Vec::new();
    while !left.is_empty() {
        let (ready, blocked): (Vec<usize>, Vec<usize>) = left.into_iter().partition(|&i| {
            plan.steps[i]
                .depends_on
                .iter()
                .all(|d| done.contains(d.as_str()))
        });
        if ready.is_empty() {
            return None;
        }
        done.extend(ready.iter().map(|&i| plan.steps[i].id.as_str()));
        waves.push(ready);
        left = blocked;
    }
    Some(waves)
}

/// Carry out a `create_plan` call: the tool result the planner reads.
/// Boxed: a plan's tasks run agent loops, which may call this again.
pub(crate) fn execute<'a>(
    scope: &'a Scope<'_>,
    planner: &'a Participant,
    specialists: &'a [Arc<AgentSpec>],
    call: &'a ToolCall,
) -> BoxFuture<'a, Result<Value, Failure>> {
    async move {
        let arguments = steps::arguments_value(call);
        let step = ToolStep::start(
            scope,
            planner.parent,
            StepKind::Plan,
            "plan",
            TOOL,
            arguments,
        )
        .await?;
        match parse(&call.arguments, specialists) {
            Ok(plan) => {
                let results = run_plan(scope, step.id, specialists, &plan).await?;
                step.finish(scope, results, false).await
            }
            Err(problem) => step.finish(scope, json!({ "error": problem }), true).await,
        }
    }
    .boxed()
}

async fn run_plan(
    scope: &Scope<'_>,
    plan_step: StepId,
    specialists: &[Arc<AgentSpec>],
    plan: &Plan,
) -> Result<Value, Failure> {
    let mut results: HashMap<&str, TaskResult> = HashMap::new();
    for wave in waves(plan).unwrap_or_default() {
        let finished = join_all(wave.iter().map(|&i| {
            let task = &plan.steps[i];
            let failed_dependency = task
                .depends_on
                .iter()
                .find(|d| results.get(d.as_str()).is_some_and(|r| r.error.is_some()));
            let inputs: Vec<&TaskResult> = task
                .depends_on
                .iter()
                .filter_map(|d| results.get(d.as_str()))
                .collect();
            let failed_dependency = failed_dependency.cloned();
            async move {
                if let Some(dependency) = failed_dependency {
                    return Ok(TaskResult {
                        id: task.id.clone(),
                        agent: task.agent.clone(),
                        output: None,
                        error: Some(format!("not run: step {dependency:?} failed")),
                    });
                }
                run_task(scope, plan_step, specialists, task, &inputs).await
            }
        }))
        .await;
        for (&i, result) in wave.iter().zip(finished) {
            results.insert(plan.steps[i].id.as_str(), result?);
        }
    }
    let ordered: Vec<&TaskResult> = plan
        .steps
        .iter()
        .filter_map(|t| results.get(t.id.as_str()))
        .collect();
    Ok(json!({ "results": ordered }))
}

/// One task on its specialist, as an `agent` step under the plan. The
/// task's failure is its result; only our own infrastructure failing
/// fails the run.
async fn run_task(
    scope: &Scope<'_>,
    plan_step: StepId,
    specialists: &[Arc<AgentSpec>],
    task: &Task,
    inputs: &[&TaskResult],
) -> Result<TaskResult, Failure> {
    let specialist = specialists
        .iter()
        .find(|s| s.id == task.agent)
        .cloned()
        .ok_or_else(|| {
            Failure::new(RunErrorCode::Internal, format!("no agent {:?}", task.agent))
        })?;
    let input = json!({"task_id": task.id, "task": task.task, "depends_on": task.depends_on});
    let step_id = steps::start_agent(scope, &specialist.id, Some(plan_step), &input).await?;
    let mut prompt = task.task.clone();
    if !inputs.is_empty() {
        prompt.push_str("\n\nResults of the steps this one depends on:");
        for input in inputs {
            let output = input.output.as_deref().unwrap_or_default();
            prompt.push_str(&format!("\n- {} ({}): {output}", input.id, input.agent));
        }
    }
    let outcome = async {
        let agent = Participant::new(
            scope,
            specialist.clone(),
            None,
            Some(step_id),
            Voice::Internal,
        )?;
        let messages = agent.prompt(&[ChatMessage::User { content: prompt }]);
        answer(scope, &agent, &Control::None, messages).await
    }
    .await;
    steps::finish_agent(scope, step_id, &specialist.id, outcome.as_deref()).await?;
    match outcome {
        Ok(text) => Ok(TaskResult {
            id: task.id.clone(),
            agent: task.agent.clone(),
            output: Some(text),
            error: None,
        }),
        Err(failure) if failure.is_internal() => Err(failure),
        Err(failure) => Ok(TaskResult {
            id: task.id.clone(),
            agent: task.agent.clone(),
            output: None,
            error: Some(failure.message),
        }),
    }
}

/// Run a planner agent on `conversation`.
pub(crate) async fn run(
    scope: &Scope<'_>,
    entry: Arc<AgentSpec>,
    model: Option<String>,
    conversation: &[ChatMessage],
) -> Result<(), Failure> {
    let specialists = super::specialists(scope, &entry).await?;
    let step_id = steps::start_agent(scope, &entry.id, None, &json!({"role": "planner"})).await?;
    let outcome = async {
        let planner = Participant::new(scope, entry.clone(), model, Some(step_id), Voice::User)?;
        let control = Control::Planner(specialists);
        answer(scope, &planner, &control, planner.prompt(conversation)).await
    }
    .await;
    steps::finish_agent(scope, step_id, &entry.id, outcome.as_deref()).await?;
    outcome.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specialists() -> Vec<Arc<AgentSpec>> {
        ["flights", "hotels"]
            .into_iter()
            .map(|id| {
                Arc::new(AgentSpec {
                    id: id.into(),
                    name: id.into(),
                    description: String::new(),
                    provider: "p".into(),
                    model: "m".into(),
                    instructions: String::new(),
                    tools: Vec::new(),
                    workflow: Default::default(),
                    tool_settings: Default::default(),
                    context_tokens: 1000,
                    status: Default::default(),
                    allowed_models: Vec::new(),
                })
            })
            .collect()
    }

    #[test]
    fn plans_run_in_dependency_waves() {
        let plan = parse(
            r#"{"steps": [
                {"id": "a", "agent": "flights", "task": "x"},
                {"id": "c", "agent": "hotels", "task": "z", "depends_on": ["a", "b"]},
                {"id": "b", "agent": "hotels", "task": "y"}
            ]}"#,
            &specialists(),
        )
        .unwrap();
        assert_eq!(waves(&plan).unwrap(), vec![vec![0, 2], vec![1]]);
    }

    #[test]
    fn bad_plans_are_explained() {
        let problem = |json: &str| parse(json, &specialists()).unwrap_err();
        assert!(problem("{}").contains("not valid"));
        assert!(problem(r#"{"steps": []}"#).contains("1 to"));
        assert!(
            problem(r#"{"steps": [{"id": "a", "agent": "cars", "task": "x"}]}"#)
                .contains("no agent \"cars\"")
        );
        assert!(
            problem(r#"{"steps": [{"id": "a", "agent": "flights", "task": "x"}, {"id": "a", "agent": "flights", "task": "y"}]}"#)
                .contains("unique")
        );
        assert!(
            problem(
                r#"{"steps": [{"id": "a", "agent": "flights", "task": "x", "depends_on": ["z"]}]}"#
            )
            .contains("unknown step")
        );
        assert!(
            problem(r#"{"steps": [{"id": "a", "agent": "flights", "task": "x", "depends_on": ["b"]}, {"id": "b", "agent": "hotels", "task": "y", "depends_on": ["a"]}]}"#)
                .contains("cycle")
        );
    }
}
