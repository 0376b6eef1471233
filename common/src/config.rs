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
//!
//! # Layout
//!
//! This file holds the table above, [`Config`] and its reading of the
//! environment; the rest is under `config/`, one concern a file:
//!
//! - `error.rs`: [`ConfigError`], what start-up reports.
//! - `catalog.rs`: the catalog file ([`Catalog`], [`Price`]), parsed and
//!   checked with each problem at its line and column.
//! - `agents.rs`: `[[agents]]` tables and [`check_agent`], the checks
//!   every agent passes, from the catalog or the API.
//! - `providers.rs`: `[[providers]]` tables ([`ProviderConfig`],
//!   [`ProviderKind`]); each kind's settings in `openai.rs`, `anthropic.rs`,
//!   `ollama.rs`, `scripted.rs` and `local.rs` (with the model cache).
//! - `tools.rs`: [`BUILTIN_TOOLS`] and [`ToolSettings`].
//! - `upstream.rs`: an `http` agent's [`Upstream`].
//! - `api_agents.rs`: `[api_agents]`, what agents written over the API may
//!   reach.
//! - `limits.rs`: `[limits]`, per-user limits.
//! - `auth.rs`, `cors.rs`, `sweeper.rs`, `priority.rs`: who may call the
//!   API, which web pages may call it, how the sweeper's leader is chosen,
//!   and how queued runs age.
//! - `builtin.rs`: the built-in catalog (`builtin.toml`), and its
//!   `assistant` moved to the local model (`builtin_assistant_*.toml`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

mod agents;
mod anthropic;
mod api_agents;
mod auth;
mod builtin;
mod catalog;
mod cors;
mod error;
mod limits;
mod local;
mod ollama;
mod openai;
mod priority;
mod providers;
mod scripted;
mod sweeper;
mod tools;
mod upstream;

pub use agents::{AgentProblem, check_agent, is_slug};
pub use anthropic::AnthropicSettings;
pub use api_agents::ApiAgentPolicy;
pub use auth::{AuthMethod, AuthSettings, OidcSettings};
pub use builtin::{BUILTIN_CATALOG, builtin_text_with_local};
pub use catalog::{Catalog, Price};
pub use cors::{CorsSettings, LOCALHOST_ORIGINS, OriginRule, PREFLIGHT_MAX_AGE};
pub use error::ConfigError;
pub use limits::{DEFAULT_OPEN_STREAMS, LimitPolicy, Limits};
pub use local::{
    DEFAULT_MODEL_FILE, LocalSettings, MAX_CONTEXT_TOKENS, MODEL_DIR_ENV, Requantize,
    default_model_path, model_dir,
};
pub use ollama::{KeepAlive, OllamaSettings};
pub use openai::{AzureSettings, OpenAiSettings};
pub use priority::DEFAULT_PRIORITY_AGING;
pub use providers::{ProviderConfig, ProviderKind};
pub use scripted::{ScriptedReply, ScriptedSettings};
pub use sweeper::{LeaseSettings, SweeperLeader};
pub use tools::{BuiltinTool, HttpRequestSettings, SqlQuerySettings, ToolSettings};
use upstream::is_env_name;
pub use upstream::{DEFAULT_UPSTREAM_TIMEOUT_SECS, Upstream, UpstreamProtocol};

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
                    Catalog::builtin_with_local(&model)?
                } else {
                    tracing::info!(
                        "no local model at {} (`switchyard model fetch` gets it): the built-in assistant uses the scripted model",
                        model.display()
                    );
                    Catalog::builtin()?
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
}
