//! `[api_agents]`: what agents written over the API may reach.
//!
//! An administrator's key is not the operator's shell. The catalog file is
//! written by whoever runs the deployment, so its agents may name any
//! environment variable and any host; an agent written with `POST` or
//! `PUT /v1/agents` may only name what the operator lists here:
//!
//! ```toml
//! [api_agents]
//! # Variables an agent's upstream `headers_env` and `sql_query`'s
//! # `database_url_env` may name.
//! env = ["PARTNER_TOKEN", "REPORTS_DATABASE_URL"]
//! # Hosts an `http` agent's upstream and an `http_request` allow-list may
//! # name (exact names, `*.example.com`, IP addresses).
//! hosts = ["*.partner.example", "reports.internal.example"]
//! # Whether those may be loopback, private or link-local addresses.
//! allow_private = false
//! ```
//!
//! Nothing is allowed by default. The server's own secrets are never
//! allowed: a list naming `DATABASE_URL`, `REDIS_URL`, a `SWITCHYARD_`
//! variable, a provider's `api_key_env`, or another variable holding one
//! of their values stops start-up. The worker checks the same rules again
//! before it runs an agent written over the API, so an agent stored before
//! a rule was tightened cannot use what the rule now refuses.

use serde::Deserialize;

use super::{AgentProblem, ConfigError, ProviderConfig, ProviderKind, is_env_name};
use crate::domain::{AgentSpec, WorkflowKind};
use crate::net;

/// What agents written over the API may reach (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiAgentPolicy {
    /// Environment variables they may name.
    #[serde(default)]
    pub env: Vec<String>,
    /// Hosts their upstreams and `http_request` allow-lists may name.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Whether they may reach non-public addresses.
    #[serde(default)]
    pub allow_private: bool,
}

/// Variables holding the server's own secrets, which no agent written over
/// the API may name, whatever the policy lists.
const SERVER_VARIABLES: &[&str] = &["DATABASE_URL", "REDIS_URL"];

/// `DATABASE_URL`, `REDIS_URL` or a `SWITCHYARD_` variable.
fn is_server_variable(name: &str) -> bool {
    SERVER_VARIABLES.contains(&name) || name.starts_with("SWITCHYARD_")
}

impl ApiAgentPolicy {
    /// The file's own problems: names that are not variable names or hosts.
    pub(super) fn problem(&self) -> Option<String> {
        if let Some(bad) = self.env.iter().find(|v| !is_env_name(v)) {
            return Some(format!(
                "api_agents.env: {bad:?} is not an environment variable name"
            ));
        }
        if let Some(bad) = self.hosts.iter().find(|h| !net::is_host_pattern(h)) {
            return Some(format!(
                "api_agents.hosts: {bad:?} is not a host (a name, \"*.example.com\" or an IP \
                 address; no scheme, port or path)"
            ));
        }
        None
    }

    /// Refuse a policy that would hand the server's secrets to agents: a
    /// listed variable that is one of the server's own (see the module
    /// docs), or that holds the same value as one of them.
    pub fn refuse_server_secrets(
        &self,
        providers: &[ProviderConfig],
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let mut secrets: Vec<&str> = SERVER_VARIABLES.to_vec();
        secrets.extend(providers.iter().filter_map(|p| p.kind.api_key_env()));
        let value_of = |name: &str| lookup(name).map(|v| v.trim().to_owned());
        let secret_values: Vec<String> = secrets
            .iter()
            .filter_map(|name| value_of(name))
            .filter(|value| !value.is_empty())
            .collect();
        for name in &self.env {
            let own = is_server_variable(name) || secrets.contains(&name.as_str());
            let same_value = value_of(name).is_some_and(|v| secret_values.contains(&v));
            if own || same_value {
                return Err(ConfigError::Invalid {
                    name: "api_agents.env",
                    value: name.clone(),
                    problem: if own {
                        "is one of the server's own variables; agents written over the API \
                         must never read it"
                    } else {
                        "holds the same value as one of the server's own secrets (its \
                         database, Redis or a provider key)"
                    }
                    .into(),
                });
            }
        }
        Ok(())
    }

    /// Whether an agent written over the API stays within this policy.
    pub fn check(&self, spec: &AgentSpec) -> Result<(), AgentProblem> {
        if let Some(upstream) = spec.workflow.upstream.as_ref()
            && spec.workflow.kind == WorkflowKind::Http
        {
            for (header, var) in &upstream.headers_env {
                self.check_env(&format!("upstream.headers_env.{header}"), var)
                    .map_err(|m| AgentProblem::new("workflow.upstream", m))?;
            }
            let host = url::Url::parse(&upstream.url)
                .ok()
                .and_then(|url| url.host_str().map(str::to_owned))
                .unwrap_or_default();
            self.check_host("upstream.url", &host, |allowed| {
                net::host_matches(allowed, &host)
            })
            .map_err(|m| AgentProblem::new("workflow.upstream", m))?;
        }
        let settings = &spec.tool_settings;
        if let Some(sql) = &settings.sql_query {
            self.check_env("sql_query.database_url_env", &sql.database_url_env)
                .map_err(|m| AgentProblem::new("tool_settings", m))?;
        }
        if let Some(http) = &settings.http_request {
            if http.allow_private && !self.allow_private {
                return Err(AgentProblem::new(
                    "tool_settings",
                    "http_request.allow_private: agents written over the API may not reach \
                     private addresses here (the operator's [api_agents] allow_private)"
                        .into(),
                ));
            }
            for entry in &http.allow_hosts {
                self.check_host("http_request.allow_hosts", entry, |allowed| {
                    net::pattern_covers(allowed, entry)
                })
                .map_err(|m| AgentProblem::new("tool_settings", m))?;
            }
        }
        Ok(())
    }

    fn check_env(&self, field: &str, var: &str) -> Result<(), String> {
        if self.env.iter().any(|allowed| allowed == var) && !is_server_variable(var) {
            return Ok(());
        }
        Err(format!(
            "{field}: agents written over the API may only name the environment variables \
             the operator lists in [api_agents] env, and {var:?} is not one of them"
        ))
    }

    fn check_host(
        &self,
        field: &str,
        host: &str,
        allowed_by: impl Fn(&str) -> bool,
    ) -> Result<(), String> {
        if !self.hosts.iter().any(|allowed| allowed_by(allowed)) {
            return Err(format!(
                "{field}: agents written over the API may only reach the hosts the operator \
                 lists in [api_agents] hosts, and {host:?} is not among them"
            ));
        }
        if !self.allow_private
            && let Some(ip) = net::ip_literal(host)
            && let Some(kind) = net::non_public(ip)
        {
            return Err(format!(
                "{field}: {host} is {kind} address, which agents written over the API may \
                 not reach here (the operator's [api_agents] allow_private)"
            ));
        }
        Ok(())
    }
}

impl ProviderKind {
    /// The variable holding this provider's key, if it has one.
    fn api_key_env(&self) -> Option<&str> {
        match self {
            Self::Openai(s) => s.api_key_env.as_deref(),
            Self::Anthropic(s) => s.api_key_env.as_deref(),
            Self::Ollama(s) => s.api_key_env.as_deref(),
            Self::Scripted(_) | Self::Local(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn policy(env: &[&str], hosts: &[&str], allow_private: bool) -> ApiAgentPolicy {
        ApiAgentPolicy {
            env: env.iter().map(|s| s.to_string()).collect(),
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            allow_private,
        }
    }

    fn http_agent(url: &str, headers_env: &[(&str, &str)]) -> AgentSpec {
        let headers: serde_json::Map<String, Value> = headers_env
            .iter()
            .map(|(h, v)| (h.to_string(), Value::from(*v)))
            .collect();
        serde_json::from_value(json!({
            "id": "relay", "name": "Relay", "model": "m",
            "workflow": {"kind": "http", "upstream": {
                "url": url, "protocol": "ai-sdk", "headers_env": headers}},
        }))
        .unwrap()
    }

    fn tool_agent(sql_env: Option<&str>, hosts: &[&str], allow_private: bool) -> AgentSpec {
        let mut settings = json!({});
        if let Some(var) = sql_env {
            settings["sql_query"] = json!({"database_url_env": var});
        }
        if !hosts.is_empty() {
            settings["http_request"] =
                json!({"allow_hosts": hosts, "allow_private": allow_private});
        }
        serde_json::from_value(json!({
            "id": "tools", "name": "Tools", "provider": "p", "model": "m",
            "tool_settings": settings,
        }))
        .unwrap()
    }

    fn refusal(policy: &ApiAgentPolicy, spec: &AgentSpec) -> String {
        let problem = policy.check(spec).unwrap_err();
        format!("{}: {}", problem.field, problem.message)
    }

    #[test]
    fn nothing_is_reachable_by_default() {
        let none = ApiAgentPolicy::default();
        let message = refusal(&none, &http_agent("https://x.example/api", &[]));
        assert!(message.contains("[api_agents] hosts"), "{message}");
        let message = refusal(&none, &tool_agent(Some("REPORTS_URL"), &[], false));
        assert!(message.contains("[api_agents] env"), "{message}");
        let message = refusal(&none, &tool_agent(None, &["api.example.com"], false));
        assert!(message.contains("[api_agents] hosts"), "{message}");
        assert_eq!(none.check(&tool_agent(None, &[], false)), Ok(()));
    }

    #[test]
    fn listed_variables_and_hosts_are_allowed() {
        let policy = policy(&["PARTNER_TOKEN", "REPORTS_URL"], &["*.example.com"], false);
        let agent = http_agent(
            "https://chat.example.com/api",
            &[("authorization", "PARTNER_TOKEN")],
        );
        assert_eq!(policy.check(&agent), Ok(()));
        let agent = tool_agent(
            Some("REPORTS_URL"),
            &["api.example.com", "*.eu.example.com"],
            false,
        );
        assert_eq!(policy.check(&agent), Ok(()));
        let message = refusal(
            &policy,
            &http_agent("https://chat.example.com/api", &[("x-db", "DATABASE_URL")]),
        );
        assert!(message.contains("\"DATABASE_URL\""), "{message}");
        let message = refusal(&policy, &tool_agent(None, &["*.com"], false));
        assert!(message.contains("\"*.com\""), "{message}");
        let message = refusal(&policy, &http_agent("https://example.org/api", &[]));
        assert!(message.contains("\"example.org\""), "{message}");
    }

    #[test]
    fn private_addresses_need_the_policy() {
        let closed = policy(&[], &["127.0.0.1", "10.0.0.0", "*.internal"], false);
        let message = refusal(&closed, &http_agent("http://127.0.0.1:9/api", &[]));
        assert!(message.contains("a loopback address"), "{message}");
        let message = refusal(&closed, &tool_agent(None, &["*.internal"], true));
        assert!(message.contains("allow_private"), "{message}");
        assert_eq!(
            closed.check(&tool_agent(None, &["*.internal"], false)),
            Ok(())
        );
        let open = ApiAgentPolicy {
            allow_private: true,
            ..closed
        };
        assert_eq!(
            open.check(&http_agent("http://127.0.0.1:9/api", &[])),
            Ok(())
        );
        assert_eq!(open.check(&tool_agent(None, &["*.internal"], true)), Ok(()));
    }

    #[test]
    fn the_servers_own_variables_are_never_allowed() {
        let env = crate::config::lookup_of;
        let lookup = env(&[
            ("DATABASE_URL", "postgres://sy@db/sy"),
            ("COPY_OF_DB", " postgres://sy@db/sy"),
            ("OPENAI_API_KEY", "sk-1"),
            ("PARTNER_TOKEN", "Bearer p"),
        ]);
        let providers = crate::config::Catalog::parse(
            "[[providers]]\nname = \"o\"\nkind = \"openai\"\nbase_url = \"https://api.openai.com/v1\"\n\
             api_key_env = \"OPENAI_API_KEY\"\n[[agents]]\nid = \"a\"\nname = \"A\"\nprovider = \"o\"\nmodel = \"m\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap()
        .providers;
        for (name, expected) in [
            ("DATABASE_URL", "server's own"),
            ("REDIS_URL", "server's own"),
            ("SWITCHYARD_OIDC_ISSUER", "server's own"),
            ("OPENAI_API_KEY", "server's own"),
            ("COPY_OF_DB", "same value"),
        ] {
            let err = policy(&[name], &[], false)
                .refuse_server_secrets(&providers, &lookup)
                .unwrap_err()
                .to_string();
            assert!(err.contains(name) && err.contains(expected), "{err}");
        }
        assert!(
            policy(&["PARTNER_TOKEN", "UNSET_ONE"], &[], false)
                .refuse_server_secrets(&providers, &lookup)
                .is_ok()
        );
    }

    #[test]
    fn start_up_fails_on_a_policy_naming_a_server_secret() {
        let path = std::env::temp_dir().join(format!("api-agents-{}.toml", uuid::Uuid::now_v7()));
        std::fs::write(
            &path,
            "[[providers]]\nname = \"p\"\nkind = \"scripted\"\n[[agents]]\nid = \"a\"\n\
             name = \"A\"\nprovider = \"p\"\nmodel = \"m\"\n[api_agents]\nenv = [\"REDIS_URL\"]\n",
        )
        .unwrap();
        let config_path = path.to_string_lossy().into_owned();
        let result = crate::config::Config::from_lookup(Default::default(), |name| match name {
            "SWITCHYARD_CONFIG" => Some(config_path.clone()),
            "DATABASE_URL" => Some("postgres://db/sy".into()),
            "REDIS_URL" => Some("redis://cache".into()),
            _ => None,
        });
        std::fs::remove_file(&path).ok();
        let err = result.unwrap_err().to_string();
        assert!(
            err.contains("REDIS_URL") && err.contains("server's own"),
            "{err}"
        );
    }

    #[test]
    fn the_file_names_variables_and_hosts() {
        assert!(
            policy(&["not a name"], &[], false)
                .problem()
                .unwrap()
                .contains("api_agents.env")
        );
        assert!(
            policy(&[], &["https://x.example"], false)
                .problem()
                .unwrap()
                .contains("api_agents.hosts")
        );
        assert_eq!(policy(&["A_B"], &["*.x.example"], true).problem(), None);
    }
}
