//! LLM providers: one streaming interface over every wire format.
//!
//! A provider turns a [`ChatRequest`] into a stream of [`ProviderEvent`]s:
//! text deltas as they arrive, complete tool calls, and the provider's own
//! usage figures. Failures are classified ([`ProviderError::is_retryable`])
//! so that the runner can decide whether to try again.

pub mod anthropic;
mod http;
pub mod local;
mod ndjson;
pub mod ollama;
pub mod openai;
pub mod scripted;
mod sse;
mod streaming;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;
use switchyard_common::domain::RunErrorCode;

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_common::config::{ProviderConfig, ProviderKind};
use switchyard_common::domain::Usage;

/// One conversation turn sent to a model.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatMessage {
    System {
        content: String,
    },
    User {
        content: String,
    },
    Assistant {
        content: String,
        tool_calls: Vec<ToolCall>,
    },
    Tool {
        tool_call_id: String,
        content: String,
    },
}

/// A model's request to call a tool, with its complete arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them (JSON text, possibly invalid).
    pub arguments: String,
}

/// A tool offered to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: Value,
}

/// What the model is asked.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub tools: Vec<ToolSpec>,
}

/// One item of a model's streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderEvent {
    /// A piece of the answer's text.
    TextDelta(String),
    /// A tool call, complete (its argument fragments already joined).
    ToolCall(ToolCall),
    /// The provider's own token counts for this call.
    Usage(Usage),
}

/// Why a model call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    #[error("rate limited by the provider")]
    RateLimited { retry_after: Option<Duration> },
    #[error("the provider is overloaded")]
    Overloaded { retry_after: Option<Duration> },
    #[error("the provider answered {status}: {message}")]
    Server { status: u16, message: String },
    #[error("the provider did not answer in time")]
    Timeout,
    #[error("could not reach the provider: {0}")]
    Transport(String),
    #[error("the provider refused the request: {0}")]
    BadRequest(String),
    #[error("the provider refused the credentials: {0}")]
    Auth(String),
    #[error("the provider's answer could not be read: {0}")]
    Protocol(String),
    /// The in-process model failed (its file cannot be read, inference failed).
    #[error("the local model failed: {0}")]
    Local(String),
}

impl ProviderError {
    /// Rate limits, overload, 5xx, timeouts and dropped connections are
    /// worth another attempt; everything else will fail the same way again.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. }
                | Self::Overloaded { .. }
                | Self::Server { .. }
                | Self::Timeout
                | Self::Transport(_)
        )
    }

    /// How long the provider asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } | Self::Overloaded { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// The `error.code` a run failed by this error reports.
    /// The failure's kind, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "rate_limited",
            Self::Overloaded { .. } => "overloaded",
            Self::Server { .. } => "server",
            Self::Transport(_) => "transport",
            Self::Protocol(_) => "protocol",
            Self::Timeout => "timeout",
            Self::BadRequest(_) => "bad_request",
            Self::Auth(_) => "auth",
            Self::Local(_) => "local",
        }
    }

    pub fn code(&self) -> RunErrorCode {
        match self {
            Self::RateLimited { .. } => RunErrorCode::ProviderRateLimited,
            Self::Overloaded { .. } => RunErrorCode::ProviderOverloaded,
            Self::Server { .. } | Self::Transport(_) | Self::Protocol(_) | Self::Local(_) => {
                RunErrorCode::ProviderError
            }
            Self::Timeout => RunErrorCode::ProviderTimeout,
            Self::BadRequest(_) => RunErrorCode::ProviderBadRequest,
            Self::Auth(_) => RunErrorCode::ProviderAuth,
        }
    }
}

/// The stream of one model call.
pub type ProviderStream = BoxStream<'static, Result<ProviderEvent, ProviderError>>;

/// A model endpoint.
pub trait Provider: Send + Sync {
    /// Start a streamed call. Errors before the first event (HTTP status,
    /// connection) come out of the stream as its first item.
    fn stream(&self, request: ChatRequest) -> ProviderStream;

    /// Attempts for a retryable failure before the run fails.
    fn max_attempts(&self) -> u32 {
        3
    }
}

/// Build the provider a catalog entry describes.
pub fn build(config: &ProviderConfig, http: &reqwest::Client) -> anyhow::Result<Arc<dyn Provider>> {
    Ok(match &config.kind {
        ProviderKind::Openai(settings) => Arc::new(openai::OpenAi::new(settings, http.clone())?),
        ProviderKind::Anthropic(settings) => {
            Arc::new(anthropic::Anthropic::new(settings, http.clone())?)
        }
        ProviderKind::Ollama(settings) => Arc::new(ollama::Ollama::new(settings, http.clone())?),
        ProviderKind::Scripted(settings) => Arc::new(scripted::Scripted::new(settings.clone())),
        ProviderKind::Local(settings) => Arc::new(local::Local::new(settings.clone())?),
    })
}
