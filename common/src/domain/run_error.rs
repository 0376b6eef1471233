//! Why a run failed: the closed set of codes a run's `error` carries.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A run's error code, as stored (`runs.error_code`, a text column) and
/// sent (`run.failed`, `Run.error.code`, the compatible surfaces' errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum RunErrorCode {
    /// Switchyard's own infrastructure failed (the database, mostly).
    Internal,
    /// The run's worker was lost `SWITCHYARD_MAX_ATTEMPTS` times.
    WorkerLost,
    /// The run took longer than `SWITCHYARD_RUN_TIMEOUT_SECS`.
    Timeout,
    /// The agent called tools for more turns than its `max_iterations`.
    MaxIterations,
    /// The agent is gone, or no longer keeps within `[api_agents]`.
    AgentUnavailable,
    ProviderRateLimited,
    ProviderOverloaded,
    /// A provider's server error, a transport or protocol failure, or the
    /// embedded model's own.
    ProviderError,
    ProviderTimeout,
    ProviderBadRequest,
    ProviderAuth,
    /// An `http` agent's upstream answered 429.
    UpstreamRateLimited,
    UpstreamTimeout,
    /// An upstream's stream was not the protocol spoken to it.
    UpstreamProtocol,
    UpstreamAuth,
    UpstreamBadRequest,
    /// An upstream's server error, overload or transport failure.
    UpstreamError,
    /// An upstream asked the client to run a tool, which a relay cannot.
    UpstreamClientTool,
}

impl RunErrorCode {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Internal => "internal",
            Self::WorkerLost => "worker_lost",
            Self::Timeout => "timeout",
            Self::MaxIterations => "max_iterations",
            Self::AgentUnavailable => "agent_unavailable",
            Self::ProviderRateLimited => "provider_rate_limited",
            Self::ProviderOverloaded => "provider_overloaded",
            Self::ProviderError => "provider_error",
            Self::ProviderTimeout => "provider_timeout",
            Self::ProviderBadRequest => "provider_bad_request",
            Self::ProviderAuth => "provider_auth",
            Self::UpstreamRateLimited => "upstream_rate_limited",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamProtocol => "upstream_protocol",
            Self::UpstreamAuth => "upstream_auth",
            Self::UpstreamBadRequest => "upstream_bad_request",
            Self::UpstreamError => "upstream_error",
            Self::UpstreamClientTool => "upstream_client_tool",
        }
    }
}

impl std::fmt::Display for RunErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_form_is_the_serde_form() {
        for code in [
            RunErrorCode::Internal,
            RunErrorCode::WorkerLost,
            RunErrorCode::MaxIterations,
            RunErrorCode::ProviderBadRequest,
            RunErrorCode::UpstreamClientTool,
        ] {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::json!(code.as_str())
            );
        }
    }
}
