//! Tools an agent may call. A tool has a JSON-Schema'd input and answers
//! with JSON; its failure goes back to the model as an error result.
//!
//! - [`calculator`]: arithmetic, parsed by hand.
//! - [`current_time`]: the time in UTC.
//! - [`http_request`]: GET/POST to the agent's allowed hosts, public
//!   addresses only unless allowed otherwise.
//! - [`sql_query`]: one read-only query against the agent's database.
//!
//! A [`Toolbox`], built once per process, holds what the tools share (HTTP
//! clients, database pools) and hands each run its agent's tools;
//! [`invoke`] checks a call's arguments against the tool's schema
//! ([`schema`]) and bounds its time.

mod calculator;
mod current_time;
mod http_request;
mod schema;
mod sql_query;

use std::sync::Arc;
use std::time::Duration;
use switchyard_common::config::BuiltinTool;

use futures::future::BoxFuture;
use serde_json::Value;
use switchyard_common::config::ToolSettings;
use switchyard_common::domain::text;

use crate::providers::ToolSpec;

/// A tool's failure, reported to the model rather than failing the run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(pub String);

pub trait Tool: Send + Sync {
    fn name(&self) -> &'static str;
    fn description(&self) -> &'static str;
    /// JSON Schema of the arguments, within what [`schema`] understands.
    fn parameters(&self) -> Value;
    /// Longest a call may take; [`invoke`] gives up after it.
    fn timeout(&self) -> Duration {
        DEFAULT_TOOL_TIMEOUT
    }
    /// Run the call; `arguments` already match [`Tool::parameters`].
    fn call(&self, arguments: Value) -> BoxFuture<'static, Result<Value, ToolError>>;
}

/// Longest a tool call may take unless the tool says otherwise.
pub const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// What the built-in tools share within one worker process: the HTTP
/// clients of `http_request` (their own, since they must not follow
/// redirects or use a proxy, and one of them resolves names through the
/// public-address check) and the connection pools of `sql_query`, one per
/// database URL.
pub struct Toolbox {
    http: http_request::Clients,
    pools: sql_query::Pools,
    /// Switchyard's own database, which `sql_query` never reads.
    own_database: Option<sql_query::Database>,
}

impl Toolbox {
    /// The tools of a process whose own database is at `database_url`.
    pub fn new(database_url: &str) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: http_request::Clients::new()?,
            pools: sql_query::Pools::default(),
            own_database: sql_query::Database::of(database_url),
        })
    }

    /// A client that connects only to public addresses and follows no
    /// redirects (the one `http_request` uses without `allow_private`).
    pub fn public_only_http(&self) -> reqwest::Client {
        self.http.public_only()
    }

    /// The tools called `tools`, in that order, configured by `settings`.
    /// An error (unknown tool, missing settings, `database_url_env` not
    /// set) is the agent's configuration problem, worded for its operator.
    pub fn for_agent(
        &self,
        tools: &[String],
        settings: &ToolSettings,
    ) -> Result<Vec<Arc<dyn Tool>>, ToolError> {
        self.for_agent_with(tools, settings, |name| std::env::var(name).ok())
    }

    /// [`Toolbox::for_agent`] reading environment variables through `env`.
    fn for_agent_with(
        &self,
        tools: &[String],
        settings: &ToolSettings,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<Arc<dyn Tool>>, ToolError> {
        settings.validate(tools).map_err(ToolError)?;
        tools
            .iter()
            .map(|name| self.tool(name, settings, &env))
            .collect()
    }

    fn tool(
        &self,
        name: &str,
        settings: &ToolSettings,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Arc<dyn Tool>, ToolError> {
        let missing = || ToolError(format!("{name} needs tool_settings.{name}"));
        let Some(tool) = BuiltinTool::named(name) else {
            return Err(ToolError(format!(
                "there is no built-in tool called {name:?}"
            )));
        };
        Ok(match tool {
            BuiltinTool::Calculator => Arc::new(calculator::Calculator),
            BuiltinTool::CurrentTime => Arc::new(current_time::CurrentTime),
            BuiltinTool::HttpRequest => {
                let http = settings.http_request.as_ref().ok_or_else(missing)?;
                Arc::new(http_request::HttpRequest::new(&self.http, http))
            }
            BuiltinTool::SqlQuery => {
                let sql = settings.sql_query.as_ref().ok_or_else(missing)?;
                let var = &sql.database_url_env;
                let url = env(var).filter(|url| !url.trim().is_empty()).ok_or_else(|| {
                    ToolError(format!(
                        "sql_query: the environment variable {var} (database_url_env) is not set"
                    ))
                })?;
                if self.own_database.is_some()
                    && sql_query::Database::of(url.trim()) == self.own_database
                {
                    return Err(ToolError(format!(
                        "sql_query: the environment variable {var} (database_url_env) names \
                         Switchyard's own database, which no agent may read"
                    )));
                }
                let pool = self.pools.get(url.trim()).map_err(|problem| {
                    ToolError(format!(
                        "sql_query: the environment variable {var} (database_url_env): {problem}"
                    ))
                })?;
                Arc::new(sql_query::SqlQuery::new(pool, sql))
            }
        })
    }
}

pub fn spec(tool: &dyn Tool) -> ToolSpec {
    ToolSpec {
        name: tool.name().to_owned(),
        description: tool.description().to_owned(),
        parameters: tool.parameters(),
    }
}

/// Run a tool call as the model wrote it: parse, check against the tool's
/// schema, call, time-limit. Every failure is a [`ToolError`] for the model.
pub async fn invoke(tool: &dyn Tool, raw_arguments: &str) -> Result<Value, ToolError> {
    let arguments: Value = serde_json::from_str(if raw_arguments.trim().is_empty() {
        "{}"
    } else {
        raw_arguments
    })
    .map_err(|e| ToolError(format!("arguments are not valid JSON: {e}")))?;
    schema::validate(&tool.parameters(), &arguments).map_err(ToolError)?;
    let limit = tool.timeout();
    match tokio::time::timeout(limit, tool.call(arguments)).await {
        // What a tool brings back is outside text, stored as the step's output.
        Ok(Ok(result)) => Ok(text::storable_json(result)),
        Ok(Err(ToolError(message))) => Err(ToolError(text::without_nul(message))),
        Err(_) => Err(ToolError(format!(
            "{} did not finish within {}",
            tool.name(),
            duration_text(limit)
        ))),
    }
}

fn duration_text(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;
    use serde_json::json;
    use switchyard_common::config::{HttpRequestSettings, SqlQuerySettings};

    use super::*;

    fn names(tools: &[&str]) -> Vec<String> {
        tools.iter().map(|t| (*t).to_owned()).collect()
    }

    fn full_settings() -> ToolSettings {
        ToolSettings {
            http_request: Some(HttpRequestSettings {
                allow_hosts: vec!["example.com".into()],
                allow_private: false,
                max_response_bytes: 1024,
                timeout_secs: 7,
            }),
            sql_query: Some(SqlQuerySettings {
                database_url_env: "REPORTS_URL".into(),
                max_rows: 10,
                statement_timeout_ms: 1500,
            }),
        }
    }

    fn env(name: &str) -> Option<String> {
        (name == "REPORTS_URL").then(|| "postgres://reader@127.0.0.1:5432/reports".to_owned())
    }

    #[tokio::test]
    async fn every_tool_is_built_in_order_with_a_supported_schema() {
        let toolbox = Toolbox::new("postgres://switchyard@db.invalid/switchyard").unwrap();
        let all: Vec<&str> = BuiltinTool::ALL.map(BuiltinTool::as_str).to_vec();
        let tools = toolbox
            .for_agent_with(&names(&all), &full_settings(), env)
            .unwrap();
        let built: Vec<&str> = tools.iter().map(|t| t.name()).collect();
        assert_eq!(built, all);
        for tool in &tools {
            let parameters = tool.parameters();
            assert_eq!(parameters["type"], "object", "{}", tool.name());
            schema::check_schema(&parameters).unwrap_or_else(|e| panic!("{}: {e}", tool.name()));
            assert!(!tool.description().is_empty());
        }
        let timeouts: Vec<Duration> = tools.iter().map(|t| t.timeout()).collect();
        assert_eq!(
            timeouts,
            [
                DEFAULT_TOOL_TIMEOUT,
                DEFAULT_TOOL_TIMEOUT,
                Duration::from_secs(7),
                Duration::from_millis(11_500)
            ]
        );
    }

    #[tokio::test]
    async fn agents_without_what_their_tools_need_are_refused() {
        let toolbox = Toolbox::new("postgres://switchyard@db.invalid/switchyard").unwrap();
        let err = |tools: &[&str], settings: &ToolSettings| match toolbox.for_agent_with(
            &names(tools),
            settings,
            env,
        ) {
            Ok(_) => panic!("{tools:?} was accepted"),
            Err(e) => e.0,
        };
        let none = ToolSettings::default();
        assert!(err(&["shell"], &none).contains("no built-in tool called \"shell\""));
        assert!(err(&["http_request"], &none).contains("allow_hosts"));
        assert!(err(&["sql_query"], &none).contains("database_url_env"));

        let mut unset = full_settings();
        if let Some(sql) = &mut unset.sql_query {
            sql.database_url_env = "NOT_SET_ANYWHERE".into();
        }
        assert_eq!(
            err(&["sql_query"], &unset),
            "sql_query: the environment variable NOT_SET_ANYWHERE (database_url_env) is not set"
        );
        let not_a_url = toolbox.for_agent_with(&names(&["sql_query"]), &full_settings(), |_| {
            Some("mysql://secret@db".to_owned())
        });
        let message = not_a_url.err().map(|e| e.0).unwrap_or_default();
        assert_eq!(
            message,
            "sql_query: the environment variable REPORTS_URL (database_url_env): \
             it does not hold a valid PostgreSQL URL"
        );
    }

    #[tokio::test]
    async fn sql_query_never_reads_switchyards_own_database() {
        let toolbox = Toolbox::new("postgres://switchyard:pw@localhost:5432/switchyard").unwrap();
        for own in [
            "postgres://reader@127.0.0.1:5432/switchyard",
            "postgresql://other:x@LOCALHOST/switchyard?sslmode=disable",
        ] {
            let refused = toolbox.for_agent_with(&names(&["sql_query"]), &full_settings(), |_| {
                Some(own.to_owned())
            });
            let message = refused.err().map(|e| e.0).unwrap_or_default();
            assert!(
                message.contains("Switchyard's own database"),
                "{own}: {message}"
            );
            assert!(
                !message.contains("reader") && !message.contains("other:x"),
                "{message}"
            );
        }
        for elsewhere in [
            "postgres://reader@127.0.0.1:5432/reports",
            "postgres://reader@127.0.0.1:5433/switchyard",
            "postgres://reader@db.internal/switchyard",
        ] {
            assert!(
                toolbox
                    .for_agent_with(&names(&["sql_query"]), &full_settings(), |_| {
                        Some(elsewhere.to_owned())
                    })
                    .is_ok(),
                "{elsewhere}"
            );
        }
    }

    #[tokio::test]
    async fn arguments_are_checked_against_the_schema_before_the_call() {
        let tools = Toolbox::new("postgres://switchyard@db.invalid/switchyard")
            .unwrap()
            .for_agent(
                &["calculator".into(), "current_time".into()],
                &ToolSettings::default(),
            )
            .unwrap();
        let (calculator, clock) = (&tools[0], &tools[1]);
        assert_eq!(
            invoke(calculator.as_ref(), r#"{"expression": 5}"#).await,
            Err(ToolError("/expression: expected a string".into()))
        );
        assert_eq!(
            invoke(calculator.as_ref(), "").await,
            Err(ToolError("/expression: is required".into()))
        );
        assert_eq!(
            invoke(clock.as_ref(), r#"{"zone": "CET"}"#).await,
            Err(ToolError(
                "/zone: unknown property (this tool takes no arguments)".into()
            ))
        );
        assert_eq!(
            invoke(clock.as_ref(), "[]").await,
            Err(ToolError("arguments: expected an object".into()))
        );
        let err = invoke(clock.as_ref(), "{").await.unwrap_err();
        assert!(err.0.starts_with("arguments are not valid JSON"), "{err}");

        let answer = invoke(calculator.as_ref(), r#"{"expression": "6 * 7"}"#)
            .await
            .unwrap();
        assert_eq!(answer["result"], 42);
        let now = invoke(clock.as_ref(), "").await.unwrap();
        assert!(
            now["utc"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{now}"
        );
    }

    /// A tool that never finishes on its own.
    struct Stuck;

    impl Tool for Stuck {
        fn name(&self) -> &'static str {
            "stuck"
        }

        fn description(&self) -> &'static str {
            "Never answers."
        }

        fn parameters(&self) -> Value {
            json!({"type": "object", "properties": {}, "additionalProperties": false})
        }

        fn timeout(&self) -> Duration {
            Duration::from_millis(50)
        }

        fn call(&self, _: Value) -> BoxFuture<'static, Result<Value, ToolError>> {
            std::future::pending().boxed()
        }
    }

    #[tokio::test]
    async fn a_call_is_cut_off_at_the_tools_own_time_limit() {
        assert_eq!(
            invoke(&Stuck, "{}").await,
            Err(ToolError("stuck did not finish within 50 ms".into()))
        );
    }
}
