//! Agents: what an agent is ([`AgentSpec`]), as declared in the
//! configuration file or written over the API, and the stored resource.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AgentStatus;
use crate::config::{ToolSettings, Upstream};

/// Model turns one agent may take in a run unless its workflow says otherwise.
pub const DEFAULT_MAX_ITERATIONS: u32 = 8;

/// Tokens of thread history shown to the model unless the agent says otherwise.
pub const DEFAULT_CONTEXT_TOKENS: u32 = 16_000;

/// An agent's definition: a model on a provider, with instructions, tools and
/// a workflow. The body of `POST /v1/agents` and `PUT /v1/agents/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// A slug: `[a-z0-9][a-z0-9-]{0,62}`. Optional in a `PUT` body (the
    /// path names the agent); when given it must match the path.
    #[serde(default)]
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The name of a provider declared in the configuration; left out
    /// (empty) by an `http` agent, whose answers come from its upstream.
    #[serde(default)]
    pub provider: String,
    /// The model called; an `http` agent's name for its upstream (sent as
    /// `model` to an `openai` upstream).
    pub model: String,
    #[serde(default)]
    pub instructions: String,
    /// Built-in tools the agent may call.
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(default)]
    pub workflow: Workflow,
    /// Settings of the tools that need them, e.g.
    /// `{"http_request": {"allow_hosts": ["api.example.com"]}}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub tool_settings: ToolSettings,
    /// Tokens of thread history the model is shown (estimated at four
    /// characters a token), trimmed from the oldest end.
    #[serde(default = "default_context_tokens")]
    pub context_tokens: u32,
    /// `inactive`: listed and readable, but takes no new runs.
    #[serde(default)]
    pub status: AgentStatus,
    /// Other models a run may ask for (a run's `model`); none: only
    /// `model`. A caller cannot pick a costlier model than the operator
    /// or administrator allowed.
    #[serde(default)]
    pub allowed_models: Vec<String>,
}

fn default_context_tokens() -> u32 {
    DEFAULT_CONTEXT_TOKENS
}

/// How an agent runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    pub kind: WorkflowKind,
    /// The specialist agents a `triage` agent hands over to, or a `planner`
    /// agent assigns plan steps to.
    #[serde(default)]
    pub handoffs: Vec<String>,
    /// Model turns (LLM calls) of one agent before it gives up.
    #[serde(default = "default_max_iterations")]
    pub max_iterations: u32,
    /// An `http` workflow's upstream endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Upstream>,
}

fn default_max_iterations() -> u32 {
    DEFAULT_MAX_ITERATIONS
}

impl Default for Workflow {
    fn default() -> Self {
        Self {
            kind: WorkflowKind::Single,
            handoffs: Vec::new(),
            max_iterations: DEFAULT_MAX_ITERATIONS,
            upstream: None,
        }
    }
}

/// The workflows an agent can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowKind {
    /// The tool loop until the model answers.
    Single,
    /// The agent answers or hands the conversation to one specialist, who answers.
    Triage,
    /// The agent writes a plan of tasks for specialists, the tasks run
    /// (independent ones at once), and the agent answers from their results.
    Planner,
    /// The answer comes from an upstream streaming endpoint (an AI SDK
    /// route or an OpenAI-compatible server), relayed and stored.
    Http,
}

impl WorkflowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Triage => "triage",
            Self::Planner => "planner",
            Self::Http => "http",
        }
    }
}

/// Where an agent's definition lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentSource {
    /// Declared in the configuration file: re-applied at every start-up, so
    /// it is changed there, not over the API.
    Config,
    /// Written over the API.
    Api,
}

/// A stored agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Agent {
    #[serde(flatten)]
    pub spec: AgentSpec,
    pub source: AgentSource,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Agent {
    /// The agent as a caller who does not administer it sees it: what it
    /// is and how to call it, without how it is made (its instructions,
    /// its tools' settings, its upstream), which an administrator wrote
    /// for the deployment, not for its users.
    pub fn for_users(mut self) -> Self {
        self.spec.instructions.clear();
        self.spec.tool_settings = Default::default();
        self.spec.workflow.upstream = None;
        self
    }
}
