//! Tools an agent may call. A tool has a JSON-Schema'd input and answers
//! with JSON; its failure goes back to the model as an error result.

mod current_time;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;

use crate::providers::ToolSpec;

/// A tool's failure, reported to the model rather than failing the run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(pub String);

pub trait Tool: Send + Sync {
    fn name(&self) -> &'static str;
    fn description(&self) -> &'static str;
    /// JSON Schema of the arguments.
    fn parameters(&self) -> Value;
    fn call(&self, arguments: Value) -> BoxFuture<'static, Result<Value, ToolError>>;
}

/// Longest a tool call may take.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// The built-in tool called `name`.
pub fn builtin(name: &str) -> Option<Arc<dyn Tool>> {
    match name {
        "current_time" => Some(Arc::new(current_time::CurrentTime)),
        _ => None,
    }
}

pub fn spec(tool: &dyn Tool) -> ToolSpec {
    ToolSpec {
        name: tool.name().to_owned(),
        description: tool.description().to_owned(),
        parameters: tool.parameters(),
    }
}

/// Run a tool call as the model wrote it: parse, check, call, time-limit.
pub async fn invoke(tool: &dyn Tool, raw_arguments: &str) -> Result<Value, ToolError> {
    let arguments: Value = serde_json::from_str(if raw_arguments.trim().is_empty() {
        "{}"
    } else {
        raw_arguments
    })
    .map_err(|e| ToolError(format!("arguments are not valid JSON: {e}")))?;
    if !arguments.is_object() {
        return Err(ToolError("arguments must be a JSON object".into()));
    }
    match tokio::time::timeout(TOOL_TIMEOUT, tool.call(arguments)).await {
        Ok(result) => result,
        Err(_) => Err(ToolError(format!(
            "the tool did not finish within {}s",
            TOOL_TIMEOUT.as_secs()
        ))),
    }
}
