//! `current_time`: the current date and time in UTC.

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::{Tool, ToolError};

pub struct CurrentTime;

impl Tool for CurrentTime {
    fn name(&self) -> &'static str {
        "current_time"
    }

    fn description(&self) -> &'static str {
        "The current date and time in UTC, as RFC 3339."
    }

    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {}, "additionalProperties": false})
    }

    fn call(&self, arguments: Value) -> BoxFuture<'static, Result<Value, ToolError>> {
        async move {
            if arguments.as_object().is_some_and(|a| !a.is_empty()) {
                return Err(ToolError("current_time takes no arguments".into()));
            }
            Ok(json!({ "utc": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true) }))
        }
        .boxed()
    }
}
