//! Agents: the catalog's `[[agents]]` tables and the checks every agent
//! passes, whether it comes from the catalog or from the API.

use serde::Deserialize;

use super::{BuiltinTool, ProviderConfig, ToolSettings, Upstream};
use crate::domain::{
    AgentSpec, AgentStatus, DEFAULT_CONTEXT_TOKENS, DEFAULT_MAX_ITERATIONS, Workflow, WorkflowKind,
};

/// Why an agent definition is refused: the field at fault and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentProblem {
    pub field: &'static str,
    pub message: String,
}

impl AgentProblem {
    pub(super) fn new(field: &'static str, message: String) -> Self {
        Self { field, message }
    }
}

/// Check an agent against a deployment's providers and agents: a valid id,
/// a declared provider, known tools with the settings they need, and a
/// workflow whose hand-offs name other agents that exist.
pub fn check_agent(
    spec: &AgentSpec,
    providers: &[ProviderConfig],
    agent_exists: impl Fn(&str) -> bool,
) -> Result<(), AgentProblem> {
    if !is_slug(&spec.id) {
        return Err(AgentProblem::new(
            "id",
            format!(
                "agent id {:?} must match [a-z0-9][a-z0-9-]{{0,62}}",
                spec.id
            ),
        ));
    }
    for (field, value) in [("name", &spec.name), ("model", &spec.model)] {
        if value.trim().is_empty() {
            return Err(AgentProblem::new(
                field,
                format!("{field} must not be empty"),
            ));
        }
    }
    if spec.workflow.kind == WorkflowKind::Http {
        return check_http_agent(spec);
    }
    if spec.workflow.upstream.is_some() {
        return Err(AgentProblem::new(
            "workflow.upstream",
            "an upstream needs the http workflow".into(),
        ));
    }
    if spec.provider.is_empty() {
        return Err(AgentProblem::new(
            "provider",
            "provider is required (except for an http workflow)".into(),
        ));
    }
    if !providers.iter().any(|p| p.name == spec.provider) {
        let known: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
        return Err(AgentProblem::new(
            "provider",
            format!(
                "provider {:?} is not declared (known: {})",
                spec.provider,
                known.join(", ")
            ),
        ));
    }
    if let Some(tool) = spec.tools.iter().find(|t| BuiltinTool::named(t).is_none()) {
        return Err(AgentProblem::new(
            "tools",
            format!("unknown tool {tool:?} (known: {})", BuiltinTool::names()),
        ));
    }
    // A tool listed twice would be offered to the model twice, which
    // providers refuse.
    if let Some(tool) = (0..spec.tools.len()).find_map(|i| {
        spec.tools[..i]
            .contains(&spec.tools[i])
            .then(|| &spec.tools[i])
    }) {
        return Err(AgentProblem::new(
            "tools",
            format!("tool {tool:?} is listed twice"),
        ));
    }
    spec.tool_settings
        .validate(&spec.tools)
        .map_err(|message| AgentProblem::new("tool_settings", message))?;
    let workflow = &spec.workflow;
    if workflow.max_iterations == 0 {
        return Err(AgentProblem::new(
            "workflow.max_iterations",
            "max_iterations must be at least 1".into(),
        ));
    }
    if spec
        .allowed_models
        .iter()
        .any(|m| m.trim().is_empty() || m.len() > 200)
    {
        return Err(AgentProblem::new(
            "allowed_models",
            "each allowed model is 1 to 200 characters".into(),
        ));
    }
    if spec.context_tokens == 0 {
        return Err(AgentProblem::new(
            "context_tokens",
            "context_tokens must be at least 1".into(),
        ));
    }
    match workflow.kind {
        WorkflowKind::Single if !workflow.handoffs.is_empty() => {
            return Err(AgentProblem::new(
                "workflow.handoffs",
                "hand-offs need a triage or planner workflow".into(),
            ));
        }
        WorkflowKind::Triage | WorkflowKind::Planner if workflow.handoffs.is_empty() => {
            return Err(AgentProblem::new(
                "workflow.handoffs",
                format!(
                    "a {} workflow needs at least one agent in handoffs",
                    workflow.kind.as_str()
                ),
            ));
        }
        _ => {}
    }
    for (i, target) in workflow.handoffs.iter().enumerate() {
        if *target == spec.id {
            return Err(AgentProblem::new(
                "workflow.handoffs",
                format!("agent {target:?} cannot hand off to itself"),
            ));
        }
        if workflow.handoffs[..i].contains(target) {
            return Err(AgentProblem::new(
                "workflow.handoffs",
                format!("agent {target:?} is listed twice"),
            ));
        }
        if !agent_exists(target) {
            return Err(AgentProblem::new(
                "workflow.handoffs",
                format!("hand-off to agent {target:?}, which does not exist"),
            ));
        }
    }
    Ok(())
}

/// The rest of [`check_agent`] for an `http` agent: an upstream with valid
/// settings, and nothing that Switchyard would run itself (a provider,
/// tools, hand-offs).
fn check_http_agent(spec: &AgentSpec) -> Result<(), AgentProblem> {
    let Some(upstream) = &spec.workflow.upstream else {
        return Err(AgentProblem::new(
            "workflow.upstream",
            "an http workflow needs an upstream ({url, protocol})".into(),
        ));
    };
    if let Some(problem) = upstream.problem() {
        return Err(AgentProblem::new("workflow.upstream", problem));
    }
    let refused = [
        ("provider", !spec.provider.is_empty()),
        ("tools", !spec.tools.is_empty()),
        ("workflow.handoffs", !spec.workflow.handoffs.is_empty()),
    ];
    if let Some((field, _)) = refused.iter().find(|(_, set)| *set) {
        return Err(AgentProblem::new(
            field,
            format!("an http agent's answer comes from its upstream: leave {field} out"),
        ));
    }
    if spec.context_tokens == 0 {
        return Err(AgentProblem::new(
            "context_tokens",
            "context_tokens must be at least 1".into(),
        ));
    }
    Ok(())
}

/// Whether `id` is a valid agent slug: `[a-z0-9][a-z0-9-]{0,62}`.
pub fn is_slug(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && id.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// An agent as written in the catalog file (`[[agents]]`): the workflow's
/// settings are flat keys here and an object in the API's [`AgentSpec`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AgentFile {
    id: String,
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    provider: String,
    model: String,
    #[serde(default)]
    instructions: String,
    #[serde(default)]
    tools: Vec<String>,
    #[serde(default = "default_workflow_kind")]
    workflow: WorkflowKind,
    #[serde(default)]
    upstream: Option<Upstream>,
    #[serde(default)]
    handoffs: Vec<String>,
    #[serde(default = "default_max_iterations")]
    max_iterations: u32,
    #[serde(default)]
    tool_settings: ToolSettings,
    #[serde(default = "default_context_tokens")]
    context_tokens: u32,
    #[serde(default)]
    status: AgentStatus,
    #[serde(default)]
    allowed_models: Vec<String>,
}

fn default_workflow_kind() -> WorkflowKind {
    WorkflowKind::Single
}

fn default_max_iterations() -> u32 {
    DEFAULT_MAX_ITERATIONS
}

fn default_context_tokens() -> u32 {
    DEFAULT_CONTEXT_TOKENS
}

impl From<AgentFile> for AgentSpec {
    fn from(file: AgentFile) -> Self {
        Self {
            id: file.id,
            name: file.name,
            description: file.description,
            provider: file.provider,
            model: file.model,
            instructions: file.instructions,
            tools: file.tools,
            workflow: Workflow {
                kind: file.workflow,
                handoffs: file.handoffs,
                max_iterations: file.max_iterations,
                upstream: file.upstream,
            },
            tool_settings: file.tool_settings,
            context_tokens: file.context_tokens,
            status: file.status,
            allowed_models: file.allowed_models,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::catalog::testing::{parse, with_agent};

    #[test]
    fn a_tool_listed_twice_is_refused() {
        let text = "[[providers]]\nname = \"p\"\nkind = \"scripted\"\n\n[[agents]]\nid = \"a\"\nname = \"A\"\nprovider = \"p\"\nmodel = \"m\"\ntools = [\"current_time\", \"current_time\"]\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("\"current_time\" is listed twice"), "{err}");
    }

    #[test]
    fn an_unknown_tool_is_refused() {
        let err = parse(&with_agent("tools = [\"shell\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("agents.toml:"), "{err}");
        assert!(err.contains("unknown tool \"shell\""), "{err}");
    }

    #[test]
    fn slugs() {
        assert!(is_slug("support-triage"));
        assert!(is_slug("a"));
        assert!(!is_slug("-a"));
        assert!(!is_slug("A"));
        assert!(!is_slug(""));
        assert!(!is_slug(&"a".repeat(64)));
    }
}
