//! `current_time`: the current date and time in UTC.

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use switchyard_common::config::BuiltinTool;

use super::{Tool, ToolError};

pub struct CurrentTime;

impl Tool for CurrentTime {
    fn name(&self) -> &'static str {
        BuiltinTool::CurrentTime.as_str()
    }

    fn description(&self) -> &'static str {
        "The current date and time in UTC, as RFC 3339."
    }

    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {}, "additionalProperties": false})
    }

    fn call(&self, _arguments: Value) -> BoxFuture<'static, Result<Value, ToolError>> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        async move { Ok(json!({ "utc": now })) }.boxed()
    }
}
