//! Text from outside that Switchyard stores: model output, tool results,
//! upstream answers. PostgreSQL's `text` and `jsonb` cannot hold U+0000,
//! so a NUL there would fail the write that records it (and with it the
//! run); it is replaced by U+FFFD, the replacement character, before the
//! text is streamed or stored. A JSON number at the edge of what a double
//! holds is stored by `jsonb` but may not read back as one (`1.7976931348623157e308`
//! comes back out of range), which would break every later read of the
//! row: such numbers are kept as their text. Request bodies are refused
//! instead (see the API's extractors): a client can be told, a model
//! cannot.

use serde_json::{Number, Value};

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

/// The magnitude from which a JSON number is not stored as one.
pub const MAX_STORED_NUMBER: f64 = 1e308;

/// Whether PostgreSQL may not give `number` back as one.
fn unstorable(number: &Number) -> bool {
    number.as_f64().is_none_or(|x| x.abs() >= MAX_STORED_NUMBER)
}

/// Whether `value` holds a number PostgreSQL may not give back as one.
pub fn has_unstorable_number(value: &Value) -> bool {
    match value {
        Value::Number(n) => unstorable(n),
        Value::Array(items) => items.iter().any(has_unstorable_number),
        Value::Object(fields) => fields.values().any(has_unstorable_number),
        _ => false,
    }
}

/// `value` with every NUL in its strings and keys replaced, and numbers
/// too large to read back kept as their text.
pub fn storable_json(value: Value) -> Value {
    match value {
        Value::String(text) => Value::String(without_nul(text)),
        Value::Number(n) if unstorable(&n) => Value::String(n.to_string()),
        Value::Array(items) => Value::Array(items.into_iter().map(storable_json).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(key, value)| (without_nul(key), storable_json(value)))
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
            storable_json(value),
            json!({"k\u{FFFD}": ["x\u{FFFD}", {"n": 1, "s": "\u{FFFD}"}], "b": true})
        );
    }

    #[test]
    fn numbers_at_the_edge_of_a_double_are_kept_as_text() {
        let value: Value =
            serde_json::from_str(r#"{"x": 1.7976931348623157e308, "y": [-1e308, 1e307, 5]}"#)
                .unwrap();
        assert!(has_unstorable_number(&value));
        assert_eq!(
            storable_json(value),
            json!({"x": "1.7976931348623157e+308", "y": ["-1e+308", 1e307, 5]})
        );
        assert!(!has_unstorable_number(&json!({"ok": [1, 2.5, -1e307]})));
    }
}
