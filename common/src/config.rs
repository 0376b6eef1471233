//! Configuration: the environment for the process, a TOML file for the
//! catalog of providers and agents.
//!
//! Environment variables:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `DATABASE_URL` | PostgreSQL connection URL | required (`switchyard dev`: `postgres://postgres@127.0.0.1:5432/switchyard`) |
//! | `REDIS_URL` | Redis connection URL | required (`switchyard dev`: `redis://127.0.0.1:6379`) |
//! | `SWITCHYARD_LISTEN` | API listen address | `127.0.0.1:8080` |
//! | `SWITCHYARD_REDIS_PREFIX` | prefix of every Redis key written | `sy` |
//! | `SWITCHYARD_CONFIG` | path of the TOML catalog | built-in offline agents |
//! | `SWITCHYARD_WORKER_CONCURRENCY` | runs one worker executes at once | `64` |
//! | `SWITCHYARD_DELTA_FLUSH_MS` | token coalescing window, milliseconds | `5` |
//! | `SWITCHYARD_DELTA_MAX_BYTES` | flush a delta once it holds this many bytes | `1024` |
//! | `SWITCHYARD_MAX_MESSAGE_CHARS` | longest accepted user message | `32000` |
//! | `SWITCHYARD_DB_POOL` | PostgreSQL connections per process | three per CPU core the process may use, from 4 to 16 ([`default_db_pool`]) |
//! | `SWITCHYARD_RUN_TIMEOUT_SECS` | longest a run may take once started | `600` |
//! | `SWITCHYARD_MAX_ATTEMPTS` | attempts of a run whose worker is lost, before `worker_lost` | `3` |
//! | `SWITCHYARD_PRIORITY_AGING_SECS` | how much later a queued run ranks for each step of `priority` above 1 | `60` |
//! | `SWITCHYARD_SHUTDOWN_GRACE_SECS` | on SIGTERM, how long a worker lets its runs finish before releasing them | `30` |
//! | `SWITCHYARD_HEADER_TIMEOUT_SECS` | how long the API waits for a request's headers, from the connection's opening or the end of the previous response (so also how long an idle keep-alive connection stays open); keep a proxy's upstream idle timeout below it | `30` |
//! | `SWITCHYARD_METRICS_LISTEN` | where `/metrics` and `/health` are served apart: a worker's only HTTP port, and for the API a port of their own, `/metrics` then leaving the public port | none (the API serves `/metrics` on its port) |
//! | `SWITCHYARD_AUTH` and `SWITCHYARD_OIDC_*` | who may call the API: see [`auth`] | none (`switchyard dev`: `dev`) |
//! | `SWITCHYARD_CORS_ORIGINS`, `SWITCHYARD_CORS_CREDENTIALS` | which web pages may call the API from a browser: see [`cors`] | none (`switchyard dev`: pages on `localhost`) |
//! | `SWITCHYARD_SWEEPER_LEADER` | how the one worker that takes back lost runs is chosen: `postgres` (advisory lock), `kubernetes` (a Lease) or `auto` (`kubernetes` when `KUBERNETES_SERVICE_HOST` is set) | `auto` |
//! | `SWITCHYARD_SWEEPER_LEASE` | with `kubernetes`: the Lease's name | `{SWITCHYARD_REDIS_PREFIX}-sweeper`, made a valid name |
//! | `SWITCHYARD_NAMESPACE` | with `kubernetes`: the Lease's namespace | the pod's, from its service account |
//!
//! A malformed value stops start-up with a message naming the variable; a
//! malformed catalog names the file, the line and the problem.
//!
//! Providers in the catalog, by `kind`:
//!
//! ```toml
//! # OpenAI's chat completions, or any server speaking them (vLLM, llama.cpp,
//! # LM Studio, Ollama): `base_url` includes the API version path.
//! [[providers]]
//! name = "openai"
//! kind = "openai"
//! base_url = "https://api.openai.com/v1"
//! api_key_env = "OPENAI_API_KEY"
//!
//! # Azure OpenAI: the same format at a deployment's URL. `base_url` is the
//! # resource endpoint; requests go to
//! # `{base_url}/openai/deployments/{deployment}/chat/completions?api-version={api_version}`
//! # with the key in an `api-key` header.
//! [[providers]]
//! name = "azure"
//! kind = "openai"
//! base_url = "https://my-resource.openai.azure.com"
//! api_key_env = "AZURE_OPENAI_API_KEY"
//! azure = { deployment = "gpt-4o", api_version = "2024-10-21" }
//!
//! # Anthropic's Messages API: `base_url` WITHOUT `/v1`, as Anthropic's SDKs
//! # take it; requests go to `{base_url}/v1/messages`.
//! [[providers]]
//! name = "anthropic"
//! kind = "anthropic"
//! base_url = "https://api.anthropic.com"
//! api_key_env = "ANTHROPIC_API_KEY"
//! max_tokens = 4096
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

mod api_agents;
mod auth;
mod cors;
mod limits;
mod local;
mod priority;
mod sweeper;
mod upstream;

pub use api_agents::ApiAgentPolicy;
pub use auth::{AuthMethod, AuthSettings, OidcSettings};
pub use cors::{CorsSettings, LOCALHOST_ORIGINS, OriginRule, PREFLIGHT_MAX_AGE};
pub use limits::{DEFAULT_OPEN_STREAMS, LimitPolicy, Limits};
pub use local::{
    DEFAULT_MODEL_FILE, LocalSettings, MAX_CONTEXT_TOKENS, MODEL_DIR_ENV, Requantize,
    default_model_path, model_dir,
};
pub use priority::DEFAULT_PRIORITY_AGING;
pub use sweeper::{LeaseSettings, SweeperLeader};
use upstream::is_env_name;
pub use upstream::{DEFAULT_UPSTREAM_TIMEOUT_SECS, Upstream, UpstreamProtocol};

use crate::domain::{
    AgentSpec, AgentStatus, DEFAULT_CONTEXT_TOKENS, DEFAULT_MAX_ITERATIONS, Usage, Workflow,
    WorkflowKind,
};

/// Everything a Switchyard process needs to know at start-up.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub redis_url: String,
    pub listen: SocketAddr,
    /// Every Redis key Switchyard writes starts with `{redis_prefix}:`.
    pub redis_prefix: String,
    pub catalog: Catalog,
    pub worker_concurrency: usize,
    pub delta_flush_interval: Duration,
    pub delta_max_bytes: usize,
    pub max_message_chars: usize,
    pub db_pool_size: u32,
    /// Longest a run may take from its start; it then fails with `timeout`.
    pub run_timeout: Duration,
    /// Attempts of a run whose worker is lost before it fails with `worker_lost`.
    pub max_attempts: i32,
    /// On SIGTERM: how long a worker lets its runs finish before handing
    /// the rest to other workers.
    pub shutdown_grace: Duration,
    /// How much sooner a run is taken per step of urgency: a queued run
    /// ranks as if created `(priority − 1) × priority_aging` later.
    pub priority_aging: Duration,
    /// How the one worker that takes back lost runs is chosen.
    pub sweeper_leader: SweeperLeader,
    /// Who may call the API (see [`auth`]).
    pub auth: AuthSettings,
    /// Which web pages may call it from a browser (see [`cors`]).
    pub cors: CorsSettings,
    /// Whether chat UIs of the conversations surface show tool results
    /// (`GET /api/settings`).
    pub show_func_result: bool,
    /// Where a worker process serves `/metrics` and `/health`; the API
    /// serves them on its own port.
    pub metrics_listen: Option<SocketAddr>,
    /// How long the API waits for a request's headers, from a connection's
    /// opening or the end of its previous response: it also closes idle
    /// keep-alive connections.
    pub header_timeout: Duration,
}

/// A problem with the configuration, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name} is not set and cannot be inferred: {problem}")]
    Uninferable { name: &'static str, problem: String },
    #[error("{name}={value:?} is invalid: {problem}")]
    Invalid {
        name: &'static str,
        value: String,
        problem: String,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {problem}")]
    File {
        path: PathBuf,
        line: usize,
        column: usize,
        problem: String,
    },
}

/// Defaults applied where the environment is silent, for `switchyard dev`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Defaults {
    pub database_url: Option<&'static str>,
    pub redis_url: Option<&'static str>,
    /// Authenticators when `SWITCHYARD_AUTH` is unset.
    pub auth: Option<&'static str>,
    /// Allowed browser origins when `SWITCHYARD_CORS_ORIGINS` is unset.
    pub cors_origins: Option<&'static str>,
}

impl Defaults {
    /// The local services of a developer's laptop.
    pub const LAPTOP: Self = Self {
        database_url: Some("postgres://postgres@127.0.0.1:5432/switchyard"),
        redis_url: Some("redis://127.0.0.1:6379"),
        auth: Some("dev"),
        cors_origins: Some(LOCALHOST_ORIGINS),
    };
}

impl Config {
    /// Read the process environment.
    pub fn from_env(defaults: Defaults) -> Result<Self, ConfigError> {
        Self::from_lookup(defaults, |name| std::env::var(name).ok())
    }

    /// Read configuration through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(
        defaults: Defaults,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let required = |name: &'static str, default: Option<&'static str>| {
            lookup(name)
                .filter(|v| !v.is_empty())
                .or(default.map(str::to_owned))
                .ok_or(ConfigError::Missing(name))
        };
        let parsed = |name: &'static str, default: &str| -> Result<String, ConfigError> {
            Ok(lookup(name)
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_owned()))
        };
        let number = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
            let value = parsed(name, &default.to_string())?;
            value
                .parse()
                .map_err(|e: std::num::ParseIntError| ConfigError::Invalid {
                    name,
                    problem: e.to_string(),
                    value,
                })
        };

        let listen_raw = parsed("SWITCHYARD_LISTEN", "127.0.0.1:8080")?;
        let listen =
            listen_raw
                .parse()
                .map_err(|e: std::net::AddrParseError| ConfigError::Invalid {
                    name: "SWITCHYARD_LISTEN",
                    value: listen_raw.clone(),
                    problem: e.to_string(),
                })?;
        let redis_prefix = parsed("SWITCHYARD_REDIS_PREFIX", "sy")?;
        if redis_prefix.contains(char::is_whitespace) {
            return Err(ConfigError::Invalid {
                name: "SWITCHYARD_REDIS_PREFIX",
                value: redis_prefix,
                problem: "must not contain whitespace".into(),
            });
        }
        let sweeper_leader = SweeperLeader::from_lookup(
            &lookup,
            &redis_prefix,
            Path::new(sweeper::SERVICE_ACCOUNT_NAMESPACE),
        )?;
        let catalog = match lookup("SWITCHYARD_CONFIG").filter(|v| !v.is_empty()) {
            Some(path) => Catalog::load(Path::new(&path))?,
            None => {
                let model = default_model_path(&lookup);
                if model.is_file() {
                    Catalog::builtin_with_local(&model)
                } else {
                    tracing::info!(
                        "no local model at {} (`switchyard model fetch` gets it): the built-in assistant uses the scripted model",
                        model.display()
                    );
                    Catalog::builtin()
                }
            }
        };
        catalog
            .api_agents
            .refuse_server_secrets(&catalog.providers, &lookup)?;
        let auth = AuthSettings::from_lookup(&lookup, defaults.auth)?;
        auth.refuse_unsafe_dev(listen, flag(&lookup, "SWITCHYARD_DEV_FORCE", false)?)?;
        let positive = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
            match number(name, default)? {
                0 => Err(ConfigError::Invalid {
                    name,
                    value: "0".into(),
                    problem: "must be at least 1".into(),
                }),
                n => Ok(n),
            }
        };

        Ok(Self {
            database_url: required("DATABASE_URL", defaults.database_url)?,
            redis_url: required("REDIS_URL", defaults.redis_url)?,
            listen,
            redis_prefix,
            catalog,
            worker_concurrency: positive("SWITCHYARD_WORKER_CONCURRENCY", 64)? as usize,
            delta_flush_interval: Duration::from_millis(number("SWITCHYARD_DELTA_FLUSH_MS", 5)?),
            delta_max_bytes: positive("SWITCHYARD_DELTA_MAX_BYTES", 1024)? as usize,
            max_message_chars: positive("SWITCHYARD_MAX_MESSAGE_CHARS", 32_000)? as usize,
            db_pool_size: positive("SWITCHYARD_DB_POOL", default_db_pool())? as u32,
            run_timeout: Duration::from_secs(positive("SWITCHYARD_RUN_TIMEOUT_SECS", 600)?),
            max_attempts: i32::try_from(positive("SWITCHYARD_MAX_ATTEMPTS", 3)?)
                .unwrap_or(i32::MAX),
            shutdown_grace: Duration::from_secs(number("SWITCHYARD_SHUTDOWN_GRACE_SECS", 30)?),
            priority_aging: priority::priority_aging(&lookup)?,
            sweeper_leader,
            auth,
            cors: CorsSettings::from_lookup(&lookup, defaults.cors_origins)?,
            show_func_result: flag(&lookup, "SWITCHYARD_SHOW_FUNC_RESULT", true)?,
            header_timeout: Duration::from_secs(positive("SWITCHYARD_HEADER_TIMEOUT_SECS", 30)?),
            metrics_listen: match lookup("SWITCHYARD_METRICS_LISTEN").filter(|v| !v.is_empty()) {
                None => None,
                Some(raw) => Some(raw.parse().map_err(|e: std::net::AddrParseError| {
                    ConfigError::Invalid {
                        name: "SWITCHYARD_METRICS_LISTEN",
                        value: raw.clone(),
                        problem: e.to_string(),
                    }
                })?),
            },
        })
    }
}

/// A lookup over fixed `(name, value)` pairs, for tests.
#[cfg(test)]
pub(crate) fn lookup_of(
    pairs: &'static [(&'static str, &'static str)],
) -> impl Fn(&str) -> Option<String> {
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

/// A `true`/`false` (or `1`/`0`) variable; `default` when unset or empty.
fn flag(
    lookup: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    match lookup(name).as_deref().map(str::trim) {
        None | Some("") => Ok(default),
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => Err(ConfigError::Invalid {
            name,
            value: other.to_owned(),
            problem: "must be true or false".into(),
        }),
    }
}

/// The providers and agents a deployment offers.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    pub providers: Vec<ProviderConfig>,
    pub agents: Vec<AgentSpec>,
    /// Prices per model name, for the cost of runs and LLM steps.
    pub prices: HashMap<String, Price>,
    /// Per-user limits (`[limits]`).
    pub limits: LimitPolicy,
    /// What agents written over the API may reach (`[api_agents]`).
    pub api_agents: ApiAgentPolicy,
}

/// What a model costs, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Prompt tokens served from the provider's cache; `input` when not set.
    pub cached_input: Option<f64>,
}

impl Price {
    /// The cost of `usage` at this price.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_input_tokens.clamp(0, usage.input_tokens);
        let uncached = usage.input_tokens - cached;
        let per_token = |price: f64| price / 1_000_000.0;
        uncached as f64 * per_token(self.input)
            + cached as f64 * per_token(self.cached_input.unwrap_or(self.input))
            + usage.output_tokens as f64 * per_token(self.output)
    }
}

/// Why an agent definition is refused: the field at fault and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentProblem {
    pub field: &'static str,
    pub message: String,
}

impl AgentProblem {
    fn new(field: &'static str, message: String) -> Self {
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
    if let Some(tool) = spec
        .tools
        .iter()
        .find(|t| !BUILTIN_TOOLS.contains(&t.as_str()))
    {
        return Err(AgentProblem::new(
            "tools",
            format!(
                "unknown tool {tool:?} (known: {})",
                BUILTIN_TOOLS.join(", ")
            ),
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

/// An LLM endpoint agents can use.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
}

/// The wire format a provider speaks, with its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderKind {
    /// OpenAI chat completions, streamed (also vLLM, llama.cpp, LM Studio,
    /// Ollama's `/v1`, Azure OpenAI).
    Openai(OpenAiSettings),
    /// Anthropic's Messages API, streamed.
    Anthropic(AnthropicSettings),
    /// Ollama's native chat API (`/api/chat`, streamed as JSON lines).
    Ollama(OllamaSettings),
    /// Switchyard's own deterministic offline model (see the worker's
    /// `providers::scripted`).
    Scripted(ScriptedSettings),
    /// A GGUF model run in the worker process (see the worker's
    /// `providers::local`).
    Local(LocalSettings),
}

/// A `[[providers]]` table as written: `kind` selects the variant.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum ProviderFile {
    Openai {
        name: String,
        #[serde(flatten)]
        settings: OpenAiSettings,
    },
    Anthropic {
        name: String,
        #[serde(flatten)]
        settings: AnthropicSettings,
    },
    Ollama {
        name: String,
        #[serde(flatten)]
        settings: OllamaSettings,
    },
    Scripted {
        name: String,
        #[serde(flatten)]
        settings: ScriptedSettings,
    },
    Local {
        name: String,
        #[serde(flatten)]
        settings: LocalSettings,
    },
}

impl From<ProviderFile> for ProviderConfig {
    fn from(file: ProviderFile) -> Self {
        match file {
            ProviderFile::Openai { name, settings } => Self {
                name,
                kind: ProviderKind::Openai(settings),
            },
            ProviderFile::Anthropic { name, settings } => Self {
                name,
                kind: ProviderKind::Anthropic(settings),
            },
            ProviderFile::Ollama { name, settings } => Self {
                name,
                kind: ProviderKind::Ollama(settings),
            },
            ProviderFile::Scripted { name, settings } => Self {
                name,
                kind: ProviderKind::Scripted(settings),
            },
            ProviderFile::Local { name, settings } => Self {
                name,
                kind: ProviderKind::Local(settings),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OpenAiSettings {
    /// e.g. `https://api.openai.com/v1`; `/chat/completions` is appended.
    /// For Azure OpenAI, the resource endpoint (see [`AzureSettings`]).
    pub base_url: String,
    /// The environment variable that holds the API key, if any.
    pub api_key_env: Option<String>,
    /// Seconds to wait for the response to start.
    #[serde(default = "default_provider_timeout")]
    pub timeout_secs: u64,
    /// Attempts for a retryable failure (429, 5xx, timeouts) before the run fails.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Extra HTTP headers sent with every request.
    #[serde(default)]
    pub headers: HashMap<String, String>,
    /// Set for Azure OpenAI, which serves the same format at a
    /// deployment's URL and takes the key in another header.
    #[serde(default)]
    pub azure: Option<AzureSettings>,
}

/// Azure OpenAI's addressing: requests go to
/// `{base_url}/openai/deployments/{deployment}/chat/completions?api-version={api_version}`,
/// and the key is sent as `api-key: KEY` rather than `Authorization: Bearer KEY`.
/// The deployment decides the model; the agent's `model` is still sent in
/// the body, where Azure ignores it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureSettings {
    /// The deployment's name, as created in the Azure resource.
    pub deployment: String,
    /// The `api-version` query parameter, e.g. `2024-10-21`.
    pub api_version: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AnthropicSettings {
    /// e.g. `https://api.anthropic.com`, WITHOUT `/v1` (as Anthropic's SDKs
    /// take it); `/v1/messages` is appended.
    pub base_url: String,
    /// The environment variable that holds the API key (sent as `x-api-key`), if any.
    pub api_key_env: Option<String>,
    /// Seconds to wait for the response to start, and between two events.
    #[serde(default = "default_provider_timeout")]
    pub timeout_secs: u64,
    /// Attempts for a retryable failure (429, 529, 5xx, timeouts) before the run fails.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// The most tokens one answer may have: Anthropic requires a bound.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// The `anthropic-version` header: the API version the client speaks.
    #[serde(default = "default_anthropic_version")]
    pub anthropic_version: String,
    /// Extra HTTP headers sent with every request (e.g. `anthropic-beta`).
    #[serde(default)]
    pub headers: HashMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OllamaSettings {
    /// e.g. `http://127.0.0.1:11434`; `/api/chat` is appended.
    pub base_url: String,
    /// The environment variable that holds a key sent as a bearer token,
    /// for Ollama behind an authenticating proxy or on ollama.com.
    pub api_key_env: Option<String>,
    /// Seconds to wait for the answer to start. Ollama loads the model
    /// into memory and reads the whole prompt before its first line, which
    /// on a cold server takes minutes, hence a longer wait than between lines.
    #[serde(default = "default_ollama_start_timeout")]
    pub start_timeout_secs: u64,
    /// Seconds of silence allowed between two lines of a started answer.
    #[serde(default = "default_provider_timeout")]
    pub timeout_secs: u64,
    /// Attempts for a retryable failure (429, 5xx, timeouts) before the run fails.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Extra HTTP headers sent with every request.
    #[serde(default)]
    pub headers: HashMap<String, String>,
    /// Model parameters sent as Ollama's `options` (`temperature`,
    /// `num_ctx`, `seed`, ...), as written.
    #[serde(default)]
    pub options: serde_json::Map<String, serde_json::Value>,
    /// How long Ollama keeps the model loaded after a call; its own default
    /// (five minutes) when unset.
    pub keep_alive: Option<KeepAlive>,
}

/// Ollama's `keep_alive`: a duration or a number of seconds.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(
    untagged,
    expecting = "a duration such as \"10m\" or a number of seconds (negative: for ever)"
)]
pub enum KeepAlive {
    Seconds(i64),
    /// Go duration syntax, e.g. `"30s"`, `"10m"`, `"1h30m"`.
    Duration(String),
}

fn default_provider_timeout() -> u64 {
    60
}

fn default_ollama_start_timeout() -> u64 {
    300
}

fn default_max_attempts() -> u32 {
    3
}

fn default_max_tokens() -> u32 {
    4096
}

fn default_anthropic_version() -> String {
    "2023-06-01".to_owned()
}

impl ProviderKind {
    /// What is wrong with these settings, if anything, for the catalog's
    /// error message.
    fn problem(&self) -> Option<String> {
        let http = |base_url: &str, max_attempts: u32| {
            if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                Some("base_url must start with http:// or https://".to_owned())
            } else if max_attempts == 0 {
                Some("max_attempts must be at least 1".to_owned())
            } else {
                None
            }
        };
        match self {
            Self::Openai(openai) => http(&openai.base_url, openai.max_attempts).or_else(|| {
                let azure = openai.azure.as_ref()?;
                if azure.deployment.trim().is_empty() {
                    Some("azure.deployment must not be empty".to_owned())
                } else if azure.api_version.trim().is_empty() {
                    Some("azure.api_version must not be empty".to_owned())
                } else {
                    None
                }
            }),
            Self::Anthropic(anthropic) => http(&anthropic.base_url, anthropic.max_attempts)
                .or_else(|| {
                    (anthropic.max_tokens == 0).then(|| "max_tokens must be at least 1".to_owned())
                }),
            Self::Ollama(ollama) => http(&ollama.base_url, ollama.max_attempts),
            Self::Scripted(_) => None,
            Self::Local(local) => local.problem(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ScriptedSettings {
    /// Pause between streamed chunks, to look like a real model.
    #[serde(default)]
    pub chunk_delay_ms: u64,
    /// Canned behaviour, first matching rule wins (see the worker's
    /// `providers::scripted` for the order in which it answers).
    #[serde(default)]
    pub replies: Vec<ScriptedReply>,
}

/// One rule of the scripted model.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedReply {
    /// Applies when the last user message contains this text (any message
    /// when empty).
    #[serde(default)]
    pub contains: String,
    /// Applies when the last user message contains any of these at the
    /// start of a word, ignoring case (any message when empty): word stems
    /// such as `charge` or `fail`, so that a rule meets everyday wording,
    /// not one phrase.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Applies only to requests for this model, so that agents sharing the
    /// scripted provider can behave differently.
    pub model: Option<String>,
    /// Applies only right after a result of this tool (and not to a user
    /// message): the answer to a tool's result.
    pub after_tool: Option<String>,
    /// Answer with this text; `{result}` is replaced by the tool result
    /// that an `after_tool` rule answers.
    pub reply: Option<String>,
    /// Call this tool instead of answering.
    pub tool: Option<String>,
    /// The arguments of `tool` (an empty object when not set).
    pub arguments: Option<serde_json::Value>,
}

/// Whether `needle` occurs in `text` at the start of a word (`charge` in
/// "charged", not in "discharge").
fn starts_a_word(text: &str, needle: &str) -> bool {
    text.match_indices(needle).any(|(at, _)| {
        text[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric())
    })
}

impl ScriptedReply {
    /// Whether this rule's `contains` and `keywords` match `message`.
    pub fn matches(&self, message: &str) -> bool {
        if !message.contains(&self.contains) {
            return false;
        }
        if self.keywords.is_empty() {
            return true;
        }
        let message = message.to_lowercase();
        self.keywords
            .iter()
            .any(|keyword| starts_a_word(&message, &keyword.to_lowercase()))
    }

    fn problem(&self) -> Option<&'static str> {
        if self.keywords.iter().any(|k| k.trim().is_empty()) {
            return Some("`keywords` must not be empty strings");
        }
        match (&self.reply, &self.tool) {
            (Some(_), Some(_)) => Some("a reply rule has both `reply` and `tool`"),
            (None, None) => Some("a reply rule needs `reply` or `tool`"),
            (None, Some(_)) if self.after_tool.is_some() => {
                Some("an `after_tool` rule answers with `reply`")
            }
            (_, None) if self.arguments.is_some() => Some("`arguments` needs `tool`"),
            _ => None,
        }
    }
}

/// An agent as written in the catalog file (`[[agents]]`): the workflow's
/// settings are flat keys here and an object in the API's [`AgentSpec`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
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

/// The file as written, with positions kept for error messages.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    providers: Vec<Spanned<ProviderFile>>,
    #[serde(default)]
    agents: Vec<Spanned<AgentFile>>,
    #[serde(default)]
    prices: HashMap<String, Price>,
    #[serde(default)]
    limits: Option<Spanned<limits::LimitsFile>>,
    #[serde(default)]
    api_agents: Option<Spanned<ApiAgentPolicy>>,
}

/// The tools every deployment has.
pub const BUILTIN_TOOLS: &[&str] = &["calculator", "current_time", "http_request", "sql_query"];

/// What an agent's tools may reach: tools that touch the outside world
/// need to be told where (TOML `[agents.tool_settings.http_request]`, JSON
/// `{"http_request": {...}}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_request: Option<HttpRequestSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql_query: Option<SqlQuerySettings>,
}

/// Where `http_request` may go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRequestSettings {
    /// Hosts the agent may call: exact names (`api.example.com`), subdomain
    /// wildcards (`*.example.com`, which does not match `example.com`
    /// itself) or IP addresses.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// Also reach loopback, private, link-local and other non-public
    /// addresses (off: an allowed name resolving to one is refused).
    #[serde(default)]
    pub allow_private: bool,
    /// The most of a response body read; the rest is cut off.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
    /// Seconds one request may take, body included.
    #[serde(default = "default_http_timeout")]
    pub timeout_secs: u64,
}

/// Which database `sql_query` reads, and how much.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlQuerySettings {
    /// The environment variable holding the PostgreSQL URL (the URL itself
    /// carries credentials, so it is never written in the catalog).
    pub database_url_env: String,
    /// Rows returned at most; a longer result is marked truncated.
    #[serde(default = "default_max_rows")]
    pub max_rows: u32,
    /// PostgreSQL's `statement_timeout` for the query, in milliseconds.
    #[serde(default = "default_statement_timeout_ms")]
    pub statement_timeout_ms: u64,
}

fn default_max_response_bytes() -> u64 {
    64 * 1024
}

fn default_http_timeout() -> u64 {
    10
}

fn default_max_rows() -> u32 {
    100
}

fn default_statement_timeout_ms() -> u64 {
    5000
}

impl ToolSettings {
    /// Check the settings of an agent using `tools` (known tools, see
    /// [`check_agent`]): every tool that needs settings has them, within
    /// bounds. Settings of a tool the agent does not use are allowed (it
    /// may be re-enabled).
    pub fn validate(&self, tools: &[String]) -> Result<(), String> {
        let uses = |name: &str| tools.iter().any(|t| t == name);
        if uses("http_request") && self.http_request.is_none() {
            return Err(
                "the http_request tool needs tool_settings.http_request.allow_hosts \
                 (the hosts it may call)"
                    .into(),
            );
        }
        if let Some(http) = &self.http_request {
            http.validate()?;
        }
        if uses("sql_query") && self.sql_query.is_none() {
            return Err(
                "the sql_query tool needs tool_settings.sql_query.database_url_env \
                 (the environment variable holding the database URL)"
                    .into(),
            );
        }
        if let Some(sql) = &self.sql_query {
            sql.validate()?;
        }
        Ok(())
    }
}

impl HttpRequestSettings {
    /// The largest `max_response_bytes`: a tool result goes back into the
    /// model's context.
    pub const MAX_RESPONSE_BYTES: u64 = 1024 * 1024;
    /// The longest `timeout_secs`.
    pub const MAX_TIMEOUT_SECS: u64 = 120;

    fn validate(&self) -> Result<(), String> {
        if self.allow_hosts.is_empty() {
            return Err("tool_settings.http_request.allow_hosts is empty: \
                        list the hosts the http_request tool may call"
                .into());
        }
        if let Some(bad) = self
            .allow_hosts
            .iter()
            .find(|h| !crate::net::is_host_pattern(h))
        {
            return Err(format!(
                "tool_settings.http_request.allow_hosts: {bad:?} is not a host \
                 (write a name such as \"api.example.com\", a wildcard such as \
                 \"*.example.com\", or an IP address; no scheme, port or path)"
            ));
        }
        if !(1..=Self::MAX_RESPONSE_BYTES).contains(&self.max_response_bytes) {
            return Err(format!(
                "tool_settings.http_request.max_response_bytes must be between 1 and {}",
                Self::MAX_RESPONSE_BYTES
            ));
        }
        if !(1..=Self::MAX_TIMEOUT_SECS).contains(&self.timeout_secs) {
            return Err(format!(
                "tool_settings.http_request.timeout_secs must be between 1 and {}",
                Self::MAX_TIMEOUT_SECS
            ));
        }
        Ok(())
    }
}

impl SqlQuerySettings {
    /// The largest `max_rows`.
    pub const MAX_ROWS: u32 = 10_000;
    /// The longest `statement_timeout_ms`.
    pub const MAX_STATEMENT_TIMEOUT_MS: u64 = 120_000;

    fn validate(&self) -> Result<(), String> {
        let var = &self.database_url_env;
        if !is_env_name(var) {
            return Err(format!(
                "tool_settings.sql_query.database_url_env: {var:?} is not an environment \
                 variable name (the URL itself belongs in the environment, not here)"
            ));
        }
        if !(1..=Self::MAX_ROWS).contains(&self.max_rows) {
            return Err(format!(
                "tool_settings.sql_query.max_rows must be between 1 and {}",
                Self::MAX_ROWS
            ));
        }
        if !(1..=Self::MAX_STATEMENT_TIMEOUT_MS).contains(&self.statement_timeout_ms) {
            return Err(format!(
                "tool_settings.sql_query.statement_timeout_ms must be between 1 and {}",
                Self::MAX_STATEMENT_TIMEOUT_MS
            ));
        }
        Ok(())
    }
}

/// The text of the built-in catalog (see [`Catalog::builtin`]).
pub const BUILTIN_CATALOG: &str = include_str!("config/builtin.toml");

/// The built-in `assistant` agent on the scripted model, as the built-in
/// catalog declares it.
const BUILTIN_ASSISTANT_SCRIPTED: &str = r#"[[agents]]
id = "assistant"
name = "Assistant"
description = "A general assistant on the offline scripted model."
provider = "scripted"
model = "scripted-1"
instructions = "You are a helpful assistant."
tools = ["current_time"]
"#;

/// The built-in `assistant` agent on the local model (`{path}`: the model
/// file as a TOML string).
const BUILTIN_ASSISTANT_LOCAL: &str = r#"[[providers]]
name = "local"
kind = "local"
model_path = {path}

[[agents]]
id = "assistant"
name = "Assistant"
description = "A general assistant on SmolLM2-135M-Instruct, run in the worker."
provider = "local"
model = "smollm2-135m-instruct"
instructions = "You are a helpful assistant."
"#;

/// The text of the built-in catalog with its `assistant` agent on the
/// local model at `model`.
pub fn builtin_text_with_local(model: &Path) -> String {
    let path = toml::Value::String(model.to_string_lossy().into_owned()).to_string();
    BUILTIN_CATALOG.replace(
        BUILTIN_ASSISTANT_SCRIPTED,
        &BUILTIN_ASSISTANT_LOCAL.replace("{path}", &path),
    )
}

impl Catalog {
    /// The built-in catalog with its `assistant` agent on the local model
    /// at `model` (the other agents stay scripted: they need tool calls).
    pub fn builtin_with_local(model: &Path) -> Self {
        Self::parse(
            &builtin_text_with_local(model),
            Path::new("<built-in catalog>"),
        )
        .expect("the built-in catalog with the local model is valid")
    }

    /// The catalog used when `SWITCHYARD_CONFIG` is not set: works offline.
    pub fn builtin() -> Self {
        // The built-in text is a constant checked by the `builtin_catalog_is_valid` test.
        Self::parse(BUILTIN_CATALOG, Path::new("<built-in catalog>"))
            .expect("the built-in catalog is valid")
    }

    /// Read and check a catalog file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parse and check catalog text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let at = |span: std::ops::Range<usize>, problem: String| {
            let (line, column) = line_and_column(text, span.start);
            ConfigError::File {
                path: path.to_owned(),
                line,
                column,
                problem,
            }
        };
        let file: CatalogFile = toml::from_str(text)
            .map_err(|e| at(e.span().unwrap_or(0..0), e.message().to_owned()))?;

        let mut providers: Vec<ProviderConfig> = Vec::new();
        for spanned in file.providers {
            let span = spanned.span();
            let provider = ProviderConfig::from(spanned.into_inner());
            if providers.iter().any(|p| p.name == provider.name) {
                return Err(at(
                    span,
                    format!("provider {:?} is declared twice", provider.name),
                ));
            }
            if let Some(problem) = provider.kind.problem() {
                return Err(at(span, format!("provider {:?}: {problem}", provider.name)));
            }
            if let ProviderKind::Scripted(scripted) = &provider.kind
                && let Some(problem) = scripted.replies.iter().find_map(ScriptedReply::problem)
            {
                return Err(at(span, format!("provider {:?}: {problem}", provider.name)));
            }
            providers.push(provider);
        }

        let declared: Vec<(std::ops::Range<usize>, AgentSpec)> = file
            .agents
            .into_iter()
            .map(|spanned| (spanned.span(), AgentSpec::from(spanned.into_inner())))
            .collect();
        for (i, (span, agent)) in declared.iter().enumerate() {
            if declared[..i].iter().any(|(_, a)| a.id == agent.id) {
                return Err(at(
                    span.clone(),
                    format!("agent {:?} is declared twice", agent.id),
                ));
            }
            check_agent(agent, &providers, |id| {
                declared.iter().any(|(_, a)| a.id == id)
            })
            .map_err(|problem| {
                at(
                    span.clone(),
                    format!("agent {:?}: {}", agent.id, problem.message),
                )
            })?;
        }
        if declared.is_empty() {
            return Err(at(0..0, "the catalog declares no agents".into()));
        }
        for (model, price) in &file.prices {
            let prices = [price.input, price.output, price.cached_input.unwrap_or(0.0)];
            if prices.iter().any(|p| !p.is_finite() || *p < 0.0) {
                return Err(at(
                    0..0,
                    format!("prices of model {model:?} must be finite and not negative"),
                ));
            }
        }
        let limits = match file.limits {
            Some(spanned) => {
                let span = spanned.span();
                LimitPolicy::from_file(spanned.into_inner()).map_err(|problem| at(span, problem))?
            }
            None => LimitPolicy::default(),
        };
        let api_agents = match file.api_agents {
            Some(spanned) => {
                let span = spanned.span();
                let policy = spanned.into_inner();
                if let Some(problem) = policy.problem() {
                    return Err(at(span, problem));
                }
                policy
            }
            None => ApiAgentPolicy::default(),
        };
        let agents = declared.into_iter().map(|(_, agent)| agent).collect();
        Ok(Self {
            providers,
            agents,
            prices: file.prices,
            limits,
            api_agents,
        })
    }

    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.name == name)
    }

    pub fn agent(&self, id: &str) -> Option<&AgentSpec> {
        self.agents.iter().find(|a| a.id == id)
    }
}

/// Whether `id` is a valid agent slug: `[a-z0-9][a-z0-9-]{0,62}`.
pub fn is_slug(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && id.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// The default of `SWITCHYARD_DB_POOL`: three connections per CPU core this
/// process may use (the cgroup's quota in a container), from 4 to 16 (a
/// pod without a CPU limit sees the node's cores; PostgreSQL's own limit,
/// 100 connections by default, is shared by every pod).
///
/// Each connection can keep one PostgreSQL backend busy. More busy backends
/// than the cores can run make no more progress, and where PostgreSQL
/// shares the cores (a laptop, a single-node deployment) they take the CPU
/// that relays tokens: on 2 cores with 100 concurrent streamed runs, 16
/// connections per process gave added TTFT p50 11.6–16.3 ms and 6 gave
/// 4.4–4.5 ms at the same throughput (README, Performance).
pub fn default_db_pool() -> u64 {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    (3 * cores as u64).clamp(4, 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Catalog, ConfigError> {
        Catalog::parse(text, Path::new("agents.toml"))
    }

    #[test]
    fn builtin_catalog_is_valid() {
        let catalog = Catalog::builtin();
        assert_eq!(catalog.agents[0].id, "assistant");
        assert!(BUILTIN_CATALOG.contains(BUILTIN_ASSISTANT_SCRIPTED));
    }

    #[test]
    fn the_builtin_assistant_moves_to_the_local_model() {
        let catalog = Catalog::builtin_with_local(Path::new("/models/a \"b\".gguf"));
        let assistant = catalog.agent("assistant").unwrap();
        assert_eq!(assistant.provider, "local");
        let Some(ProviderKind::Local(local)) = catalog.provider("local").map(|p| &p.kind) else {
            panic!("expected the local provider");
        };
        assert_eq!(local.model_file(), Path::new("/models/a \"b\".gguf"));
        assert_eq!(catalog.agent("billing").unwrap().provider, "scripted");
        assert_eq!(catalog.agents.len(), Catalog::builtin().agents.len());
    }

    #[test]
    fn local_providers_parse_and_bad_settings_are_refused() {
        let catalog = parse(
            r#"
[[providers]]
name = "small"
kind = "local"
model_path = "m.gguf"
temperature = 0
seed = 7
max_tokens = 64
stop = ["User:"]

[[agents]]
id = "a"
name = "A"
provider = "small"
model = "smollm2"
instructions = "Hi."
"#,
        )
        .unwrap();
        let ProviderKind::Local(local) = &catalog.providers[0].kind else {
            panic!("expected a local provider");
        };
        assert_eq!(local.seed, Some(7));
        assert_eq!(local.max_tokens, 64);
        assert_eq!(local.requantize, Requantize::Q8_0);
        let error = parse(
            "[[providers]]\nname = \"small\"\nkind = \"local\"\ntop_p = 2\n\n[[agents]]\nid = \"a\"\nname = \"A\"\nprovider = \"small\"\nmodel = \"m\"\ninstructions = \"x\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("top_p"), "{error}");
    }

    #[test]
    fn the_issue_example_parses() {
        let catalog = parse(
            r#"
[[providers]]
name = "local-mock"
kind = "openai"
base_url = "http://127.0.0.1:9100/v1"
api_key_env = "OPENAI_API_KEY"

[[agents]]
id = "assistant"
name = "Assistant"
provider = "local-mock"
model = "gpt-4o-mini"
instructions = "You are a helpful assistant."
"#,
        )
        .unwrap();
        let ProviderKind::Openai(openai) = &catalog.providers[0].kind else {
            panic!("expected an openai provider");
        };
        assert_eq!(openai.api_key_env.as_deref(), Some("OPENAI_API_KEY"));
        assert_eq!(catalog.agents[0].model, "gpt-4o-mini");
    }

    const OLLAMA_AGENT: &str =
        "\n[[agents]]\nid = \"a\"\nname = \"A\"\nprovider = \"local\"\nmodel = \"qwen3\"\n";

    #[test]
    fn an_ollama_provider_parses_with_its_defaults_and_pass_through_settings() {
        let catalog = parse(&format!(
            r#"
[[providers]]
name = "local"
kind = "ollama"
base_url = "http://127.0.0.1:11434"
keep_alive = "10m"
options = {{ temperature = 0.2, num_ctx = 8192, stop = ["</answer>"] }}
{OLLAMA_AGENT}"#
        ))
        .unwrap();
        let ProviderKind::Ollama(ollama) = &catalog.providers[0].kind else {
            panic!("expected an ollama provider");
        };
        assert_eq!(ollama.base_url, "http://127.0.0.1:11434");
        assert_eq!(ollama.api_key_env, None);
        assert_eq!(ollama.timeout_secs, 60);
        assert_eq!(ollama.start_timeout_secs, 300);
        assert_eq!(ollama.max_attempts, 3);
        assert_eq!(ollama.keep_alive, Some(KeepAlive::Duration("10m".into())));
        assert_eq!(
            serde_json::Value::Object(ollama.options.clone()),
            serde_json::json!({"temperature": 0.2, "num_ctx": 8192, "stop": ["</answer>"]})
        );

        let catalog = parse(&format!(
            "[[providers]]\nname = \"local\"\nkind = \"ollama\"\nbase_url = \"http://h:11434\"\nkeep_alive = -1\n{OLLAMA_AGENT}"
        ))
        .unwrap();
        let ProviderKind::Ollama(ollama) = &catalog.providers[0].kind else {
            panic!("expected an ollama provider");
        };
        assert_eq!(ollama.keep_alive, Some(KeepAlive::Seconds(-1)));
        assert!(ollama.options.is_empty());
    }

    #[test]
    fn bad_ollama_settings_name_their_line() {
        let provider = |settings: &str| {
            let text = format!(
                "[[providers]]\nname = \"local\"\nkind = \"ollama\"\n{settings}\n{OLLAMA_AGENT}"
            );
            parse(&text).unwrap_err().to_string()
        };
        let err = provider("base_url = \"127.0.0.1:11434\"");
        assert!(err.starts_with("agents.toml:1:"), "{err}");
        assert!(err.contains("http:// or https://"), "{err}");
        let err = provider("base_url = \"http://h:11434\"\nmax_attempts = 0");
        assert!(err.starts_with("agents.toml:1:"), "{err}");
        assert!(err.contains("max_attempts must be at least 1"), "{err}");
        let err = provider("base_url = \"http://h:11434\"\nkeep_alive = true");
        assert!(err.contains("a duration such as"), "{err}");
    }

    #[test]
    fn a_syntax_error_names_file_and_line() {
        let err = parse("[[providers]]\nname = \"x\"\nkind = openai\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("agents.toml:3:"), "{text}");
    }

    #[test]
    fn an_unknown_provider_kind_names_its_line() {
        let err = parse("\n\n[[providers]]\nname = \"x\"\nkind = \"bogus\"\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("agents.toml:3:") || text.starts_with("agents.toml:5:"),
            "{text}"
        );
        assert!(text.contains("bogus"), "{text}");
    }

    #[test]
    fn an_agent_on_an_undeclared_provider_names_its_line() {
        let text = "[[providers]]\nname = \"p\"\nkind = \"scripted\"\n\n[[agents]]\nid = \"a\"\nname = \"A\"\nprovider = \"nope\"\nmodel = \"m\"\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(
            err.starts_with("agents.toml:5:") || err.starts_with("agents.toml:6:"),
            "{err}"
        );
        assert!(err.contains("\"nope\""), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = parse("[[providers]]\nname = \"p\"\nkind = \"scripted\"\ncolour = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour"), "{err}");
    }

    /// A catalog of one scripted agent with `agent_extra` appended to its table.
    fn with_agent(agent_extra: &str) -> String {
        format!(
            "[[providers]]\nname = \"p\"\nkind = \"scripted\"\n\n\
             [[agents]]\nid = \"a\"\nname = \"A\"\nprovider = \"p\"\nmodel = \"m\"\n{agent_extra}"
        )
    }

    #[test]
    fn tool_settings_are_read_with_defaults() {
        let catalog = parse(&with_agent(
            "tools = [\"http_request\", \"sql_query\", \"calculator\"]\n\
             [agents.tool_settings.http_request]\n\
             allow_hosts = [\"api.example.com\", \"*.example.org\", \"10.1.2.3\", \"[::1]\"]\n\
             [agents.tool_settings.sql_query]\n\
             database_url_env = \"REPORTS_DATABASE_URL\"\n\
             max_rows = 20\n",
        ))
        .unwrap();
        let settings = &catalog.agents[0].tool_settings;
        let http = settings.http_request.as_ref().unwrap();
        assert_eq!(http.allow_hosts.len(), 4);
        assert!(!http.allow_private);
        assert_eq!(http.max_response_bytes, 64 * 1024);
        assert_eq!(http.timeout_secs, 10);
        let sql = settings.sql_query.as_ref().unwrap();
        assert_eq!(sql.database_url_env, "REPORTS_DATABASE_URL");
        assert_eq!(sql.max_rows, 20);
        assert_eq!(sql.statement_timeout_ms, 5000);

        // Stored as JSON in the agents table, read back unchanged.
        let json = serde_json::to_value(settings).unwrap();
        assert_eq!(json["http_request"]["allow_hosts"][0], "api.example.com");
        assert_eq!(
            serde_json::from_value::<ToolSettings>(json).unwrap(),
            *settings
        );
        assert_eq!(
            serde_json::to_value(ToolSettings::default()).unwrap(),
            serde_json::json!({})
        );
    }

    #[test]
    fn http_request_without_allow_hosts_names_the_agent_line() {
        let err = parse(&with_agent("tools = [\"http_request\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("agents.toml:5:") || err.starts_with("agents.toml:6:"),
            "{err}"
        );
        assert!(
            err.contains("\"a\"") && err.contains("allow_hosts"),
            "{err}"
        );

        let err = parse(&with_agent(
            "tools = [\"http_request\"]\n[agents.tool_settings.http_request]\nallow_hosts = []\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("agents.toml:"), "{err}");
        assert!(err.contains("allow_hosts is empty"), "{err}");
    }

    #[test]
    fn sql_query_without_a_database_names_the_agent_line() {
        let err = parse(&with_agent("tools = [\"sql_query\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("agents.toml:5:") || err.starts_with("agents.toml:6:"),
            "{err}"
        );
        assert!(err.contains("database_url_env"), "{err}");

        // The settings table without the variable is a parse error at its line.
        let err = parse(&with_agent(
            "tools = [\"sql_query\"]\n[agents.tool_settings.sql_query]\nmax_rows = 5\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("agents.toml:"), "{err}");
        assert!(err.contains("database_url_env"), "{err}");
    }

    #[test]
    fn tool_settings_out_of_bounds_are_refused() {
        let settings = |http: &str, sql: &str| -> ToolSettings {
            toml::from_str(&format!(
                "[http_request]\n{http}\n[sql_query]\ndatabase_url_env = \"DB\"\n{sql}"
            ))
            .unwrap()
        };
        let tools = ["http_request".to_owned(), "sql_query".to_owned()];
        let ok = "allow_hosts = [\"example.com\"]";
        assert_eq!(settings(ok, "").validate(&tools), Ok(()));
        for (http, sql, expected) in [
            (
                "allow_hosts = [\"https://example.com\"]",
                "",
                "is not a host",
            ),
            ("allow_hosts = [\"example.com:8080\"]", "", "is not a host"),
            ("allow_hosts = [\"example.com/path\"]", "", "is not a host"),
            ("allow_hosts = [\"*\"]", "", "is not a host"),
            (
                "allow_hosts = [\"example.com\"]\nmax_response_bytes = 0",
                "",
                "max_response_bytes",
            ),
            (
                "allow_hosts = [\"example.com\"]\ntimeout_secs = 0",
                "",
                "timeout_secs",
            ),
            (ok, "max_rows = 0", "max_rows"),
            (ok, "statement_timeout_ms = 0", "statement_timeout_ms"),
        ] {
            let err = settings(http, sql).validate(&tools).unwrap_err();
            assert!(err.contains(expected), "{http} / {sql}: {err}");
        }
        let url_in_place_of_variable = ToolSettings {
            sql_query: Some(SqlQuerySettings {
                database_url_env: "postgres://u:p@db/x".into(),
                max_rows: 1,
                statement_timeout_ms: 1,
            }),
            ..ToolSettings::default()
        };
        let err = url_in_place_of_variable
            .validate(&["sql_query".to_owned()])
            .unwrap_err();
        assert!(err.contains("not an environment variable name"), "{err}");
    }

    #[test]
    fn an_unknown_tool_is_refused() {
        let err = parse(&with_agent("tools = [\"shell\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("agents.toml:"), "{err}");
        assert!(err.contains("unknown tool \"shell\""), "{err}");
    }

    const AGENT: &str = "\n[[agents]]\nid = \"a\"\nname = \"A\"\nprovider = \"p\"\nmodel = \"m\"\n";

    #[test]
    fn an_anthropic_provider_parses_with_defaults() {
        let text = format!(
            "[[providers]]\nname = \"p\"\nkind = \"anthropic\"\nbase_url = \"https://api.anthropic.com\"\napi_key_env = \"ANTHROPIC_API_KEY\"\n{AGENT}"
        );
        let catalog = parse(&text).unwrap();
        let ProviderKind::Anthropic(anthropic) = &catalog.providers[0].kind else {
            panic!("expected an anthropic provider");
        };
        assert_eq!(anthropic.base_url, "https://api.anthropic.com");
        assert_eq!(anthropic.api_key_env.as_deref(), Some("ANTHROPIC_API_KEY"));
        assert_eq!(anthropic.timeout_secs, 60);
        assert_eq!(anthropic.max_attempts, 3);
        assert_eq!(anthropic.max_tokens, 4096);
        assert_eq!(anthropic.anthropic_version, "2023-06-01");
        assert!(anthropic.headers.is_empty());
    }

    #[test]
    fn bad_anthropic_settings_name_the_provider_and_the_key() {
        let cases = [
            (
                "base_url = \"api.anthropic.com\"",
                "base_url must start with http",
            ),
            (
                "base_url = \"https://api.anthropic.com\"\nmax_attempts = 0",
                "max_attempts must be at least 1",
            ),
            (
                "base_url = \"https://api.anthropic.com\"\nmax_tokens = 0",
                "max_tokens must be at least 1",
            ),
        ];
        for (settings, problem) in cases {
            let text =
                format!("[[providers]]\nname = \"p\"\nkind = \"anthropic\"\n{settings}\n{AGENT}");
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.starts_with("agents.toml:1:"), "{err}");
            assert!(err.contains("provider \"p\": "), "{err}");
            assert!(err.contains(problem), "{err}");
        }
        let text = format!(
            "[[providers]]\nname = \"p\"\nkind = \"anthropic\"\nbase_url = \"https://api.anthropic.com\"\nmax_token = 10\n{AGENT}"
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("unknown field `max_token`"), "{err}");
    }

    #[test]
    fn an_azure_openai_provider_parses_and_is_checked() {
        let provider = "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"https://r.openai.azure.com\"\n";
        let text = format!(
            "{provider}azure = {{ deployment = \"gpt-4o\", api_version = \"2024-10-21\" }}\n{AGENT}"
        );
        let catalog = parse(&text).unwrap();
        let ProviderKind::Openai(openai) = &catalog.providers[0].kind else {
            panic!("expected an openai provider");
        };
        let azure = openai.azure.as_ref().expect("azure settings");
        assert_eq!(azure.deployment, "gpt-4o");
        assert_eq!(azure.api_version, "2024-10-21");

        let text = format!(
            "{provider}azure = {{ deployment = \"\", api_version = \"2024-10-21\" }}\n{AGENT}"
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("azure.deployment must not be empty"), "{err}");
        let text = format!("{provider}azure = {{ deployment = \"gpt-4o\" }}\n{AGENT}");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("api_version"), "{err}");
    }

    #[test]
    fn environment_is_read_with_defaults() {
        let config = Config::from_lookup(Defaults::LAPTOP, |_| None).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.redis_prefix, "sy");
        let err = Config::from_lookup(Defaults::default(), |_| None).unwrap_err();
        assert_eq!(err.to_string(), "DATABASE_URL is not set");
        let err = Config::from_lookup(Defaults::LAPTOP, |name| {
            (name == "SWITCHYARD_LISTEN").then(|| "nowhere".to_owned())
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("SWITCHYARD_LISTEN=\"nowhere\" is invalid")
        );
    }

    #[test]
    fn a_tool_listed_twice_is_refused() {
        let text = "[[providers]]\nname = \"p\"\nkind = \"scripted\"\n\n[[agents]]\nid = \"a\"\nname = \"A\"\nprovider = \"p\"\nmodel = \"m\"\ntools = [\"current_time\", \"current_time\"]\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("\"current_time\" is listed twice"), "{err}");
    }

    #[test]
    fn keywords_match_the_start_of_a_word_ignoring_case() {
        let rule = ScriptedReply {
            keywords: vec!["charge".into(), "Card".into()],
            reply: Some("Billing.".into()),
            ..ScriptedReply::default()
        };
        assert!(rule.matches("I was CHARGED twice"));
        assert!(rule.matches("my (card) expired"));
        assert!(!rule.matches("discard the discharge notes"));
        assert!(!rule.matches("hello"));
        let both = ScriptedReply {
            contains: "refund".into(),
            ..rule
        };
        assert!(!both.matches("I was charged twice"));
        assert!(both.matches("refund the charge"));
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
