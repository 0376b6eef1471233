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
//! | `SWITCHYARD_DB_POOL` | PostgreSQL connections per process | `16` |
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

use serde::Deserialize;
use toml::Spanned;

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
}

/// A problem with the configuration, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
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
}

impl Defaults {
    /// The local services of a developer's laptop.
    pub const LAPTOP: Self = Self {
        database_url: Some("postgres://postgres@127.0.0.1:5432/switchyard"),
        redis_url: Some("redis://127.0.0.1:6379"),
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
        let catalog = match lookup("SWITCHYARD_CONFIG").filter(|v| !v.is_empty()) {
            Some(path) => Catalog::load(Path::new(&path))?,
            None => Catalog::builtin(),
        };
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
            db_pool_size: positive("SWITCHYARD_DB_POOL", 16)? as u32,
        })
    }
}

/// The providers and agents a deployment offers.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    pub providers: Vec<ProviderConfig>,
    pub agents: Vec<AgentConfig>,
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
    /// Switchyard's own deterministic offline model (see the worker's
    /// `providers::scripted`).
    Scripted(ScriptedSettings),
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
    Scripted {
        name: String,
        #[serde(flatten)]
        settings: ScriptedSettings,
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
            ProviderFile::Scripted { name, settings } => Self {
                name,
                kind: ProviderKind::Scripted(settings),
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

fn default_provider_timeout() -> u64 {
    60
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
            Self::Scripted(_) => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ScriptedSettings {
    /// Pause between streamed chunks, to look like a real model.
    #[serde(default)]
    pub chunk_delay_ms: u64,
    /// Canned answers: the first rule whose `contains` occurs in the user's
    /// message answers with `reply`.
    #[serde(default)]
    pub replies: Vec<ScriptedReply>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedReply {
    pub contains: String,
    pub reply: String,
}

/// An agent as declared in the catalog; stored in PostgreSQL at start-up.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub provider: String,
    pub model: String,
    #[serde(default)]
    pub instructions: String,
    #[serde(default)]
    pub tools: Vec<String>,
    /// Model turns (LLM calls) one run may make before it fails.
    #[serde(default = "default_max_iterations")]
    pub max_iterations: u32,
}

fn default_max_iterations() -> u32 {
    8
}

/// The file as written, with positions kept for error messages.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    providers: Vec<Spanned<ProviderFile>>,
    #[serde(default)]
    agents: Vec<Spanned<AgentConfig>>,
}

/// The tools every deployment has.
pub const BUILTIN_TOOLS: &[&str] = &["current_time"];

const BUILTIN_CATALOG: &str = r#"
[[providers]]
name = "scripted"
kind = "scripted"
chunk_delay_ms = 15

[[agents]]
id = "assistant"
name = "Assistant"
description = "A general assistant on the offline scripted model."
provider = "scripted"
model = "scripted-1"
instructions = "You are a helpful assistant."
tools = ["current_time"]
"#;

impl Catalog {
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
            providers.push(provider);
        }

        let mut agents: Vec<AgentConfig> = Vec::new();
        for spanned in file.agents {
            let span = spanned.span();
            let agent = spanned.into_inner();
            if !is_slug(&agent.id) {
                return Err(at(
                    span,
                    format!(
                        "agent id {:?} must match [a-z0-9][a-z0-9-]{{0,62}}",
                        agent.id
                    ),
                ));
            }
            if agents.iter().any(|a| a.id == agent.id) {
                return Err(at(span, format!("agent {:?} is declared twice", agent.id)));
            }
            if !providers.iter().any(|p| p.name == agent.provider) {
                return Err(at(
                    span,
                    format!(
                        "agent {:?} uses provider {:?}, which is not declared",
                        agent.id, agent.provider
                    ),
                ));
            }
            if let Some(tool) = agent
                .tools
                .iter()
                .find(|t| !BUILTIN_TOOLS.contains(&t.as_str()))
            {
                return Err(at(
                    span,
                    format!(
                        "agent {:?} uses unknown tool {tool:?} (known: {})",
                        agent.id,
                        BUILTIN_TOOLS.join(", ")
                    ),
                ));
            }
            if agent.max_iterations == 0 {
                return Err(at(
                    span,
                    format!("agent {:?}: max_iterations must be at least 1", agent.id),
                ));
            }
            agents.push(agent);
        }
        if agents.is_empty() {
            return Err(at(0..0, "the catalog declares no agents".into()));
        }
        Ok(Self { providers, agents })
    }

    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.name == name)
    }

    pub fn agent(&self, id: &str) -> Option<&AgentConfig> {
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
    fn slugs() {
        assert!(is_slug("support-triage"));
        assert!(is_slug("a"));
        assert!(!is_slug("-a"));
        assert!(!is_slug("A"));
        assert!(!is_slug(""));
        assert!(!is_slug(&"a".repeat(64)));
    }
}
