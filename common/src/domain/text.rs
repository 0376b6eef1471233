//! Text from outside that Switchyard stores: model output, tool results,
//! upstream answers. PostgreSQL's `text` and `jsonb` cannot hold U+0000,
//! so a NUL there would fail the write that records it (and with it the
//! run); it is replaced by U+FFFD, the replacement character, before the
//! text is streamed or stored. Request bodies are refused instead (see the
//! API's extractors): a client can be told, a model cannot.

use serde_json::Value;

/// What stands for a NUL in stored text.
pub const NUL_REPLACEMENT: char = '\u{FFFD}';

/// `text` with every NUL replaced; no copy when there is none.
pub fn without_nul(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}

/// `value` with every NUL in its strings and keys replaced.
pub fn json_without_nul(value: Value) -> Value {
    match value {
        Value::String(text) => Value::String(without_nul(text)),
        Value::Array(items) => Value::Array(items.into_iter().map(json_without_nul).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(key, value)| (without_nul(key), json_without_nul(value)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nul_becomes_the_replacement_character_everywhere() {
        assert_eq!(without_nul("a\0b\0".into()), "a\u{FFFD}b\u{FFFD}");
        assert_eq!(without_nul("plain".into()), "plain");
        let value: Value =
            serde_json::from_str(r#"{"k\u0000": ["x\u0000", {"n": 1, "s": "\u0000"}], "b": true}"#)
                .unwrap();
        assert_eq!(
            json_without_nul(value),
            json!({"k\u{FFFD}": ["x\u{FFFD}", {"n": 1, "s": "\u{FFFD}"}], "b": true})
        );
    }
}
