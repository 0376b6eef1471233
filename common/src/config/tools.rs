//! The built-in tools and the settings of those that reach outside:
//! `http_request`'s hosts and `sql_query`'s database.

use serde::{Deserialize, Serialize};

use super::is_env_name;

/// The tools every deployment has, by the names agents list them under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuiltinTool {
    Calculator,
    CurrentTime,
    HttpRequest,
    SqlQuery,
}

impl BuiltinTool {
    pub const ALL: [Self; 4] = [
        Self::Calculator,
        Self::CurrentTime,
        Self::HttpRequest,
        Self::SqlQuery,
    ];

    /// The name agents list it under, and the model calls it by.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Calculator => "calculator",
            Self::CurrentTime => "current_time",
            Self::HttpRequest => "http_request",
            Self::SqlQuery => "sql_query",
        }
    }

    /// The built-in tool called `name`, if there is one.
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|tool| tool.as_str() == name)
    }

    /// Every name, for messages: `calculator, current_time, …`.
    pub fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

impl std::fmt::Display for BuiltinTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    /// [`check_agent`](super::check_agent)): every tool that needs settings
    /// has them, within bounds. Settings of a tool the agent does not use
    /// are allowed (it may be re-enabled).
    pub fn validate(&self, tools: &[String]) -> Result<(), String> {
        let uses = |tool: BuiltinTool| tools.iter().any(|t| t == tool.as_str());
        if uses(BuiltinTool::HttpRequest) && self.http_request.is_none() {
            return Err(
                "the http_request tool needs tool_settings.http_request.allow_hosts \
                 (the hosts it may call)"
                    .into(),
            );
        }
        if let Some(http) = &self.http_request {
            http.validate()?;
        }
        if uses(BuiltinTool::SqlQuery) && self.sql_query.is_none() {
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

#[cfg(test)]
mod tests {
    #[test]
    fn builtin_tools_are_named_as_serde_names_them() {
        for tool in super::BuiltinTool::ALL {
            assert_eq!(serde_json::to_value(tool).unwrap(), tool.as_str());
            assert_eq!(super::BuiltinTool::named(tool.as_str()), Some(tool));
        }
        assert_eq!(super::BuiltinTool::named("shell"), None);
    }

    use super::*;
    use crate::config::catalog::testing::{parse, with_agent};

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
}
