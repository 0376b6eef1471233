//! The catalog file: its providers, agents, prices, `[limits]` and
//! `[api_agents]`, read and checked as a whole, with each problem located
//! at its line and column.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::agents::AgentFile;
use super::limits::LimitsFile;
use super::providers::ProviderFile;
use super::{
    ApiAgentPolicy, ConfigError, LimitPolicy, ProviderConfig, ProviderKind, ScriptedReply,
    check_agent,
};
use crate::domain::{AgentSpec, Usage};

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
    limits: Option<Spanned<LimitsFile>>,
    #[serde(default)]
    api_agents: Option<Spanned<ApiAgentPolicy>>,
}

impl Catalog {
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

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Helpers for the tests of the catalog's parts.
#[cfg(test)]
pub(super) mod testing {
    use std::path::Path;

    use super::Catalog;
    use crate::config::ConfigError;

    /// Parse `text` as a catalog file named `agents.toml`.
    pub fn parse(text: &str) -> Result<Catalog, ConfigError> {
        Catalog::parse(text, Path::new("agents.toml"))
    }

    /// An agent on provider `p`, to follow the provider a test declares.
    pub const AGENT: &str =
        "\n[[agents]]\nid = \"a\"\nname = \"A\"\nprovider = \"p\"\nmodel = \"m\"\n";

    /// A catalog of one scripted agent with `agent_extra` appended to its table.
    pub fn with_agent(agent_extra: &str) -> String {
        format!(
            "[[providers]]\nname = \"p\"\nkind = \"scripted\"\n\n\
             [[agents]]\nid = \"a\"\nname = \"A\"\nprovider = \"p\"\nmodel = \"m\"\n{agent_extra}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::testing::parse;
    use super::*;

    #[test]
    fn the_documented_example_parses() {
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
}
