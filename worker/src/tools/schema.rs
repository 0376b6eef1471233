//! Checking a tool call's arguments against the tool's JSON Schema before
//! the tool runs, so that a malformed call goes back to the model as a
//! precise complaint (`/expression: expected a string`) rather than a
//! confusing failure deep inside the tool.
//!
//! Only the part of JSON Schema the built-in tools use is understood:
//! `type`, `properties`, `required`, `additionalProperties` (`false` or a
//! schema), `enum`, `minLength` and `maxLength`, with `description` as an
//! annotation. A test checks that every tool's schema stays within it, so a
//! keyword added to a schema and silently ignored here cannot happen. (A
//! full validator crate would add some thirty crates and ~170k lines to the
//! build for these few keywords.)

use serde_json::{Map, Value};

/// Check `value` against `schema`: every violation as `path: problem`,
/// joined with `; `. Paths are JSON Pointers into the arguments.
pub fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    let mut problems = Vec::new();
    check(schema, value, "", &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn check(schema: &Value, value: &Value, path: &str, problems: &mut Vec<String>) {
    let mut problem = |text: String| {
        let at = if path.is_empty() { "arguments" } else { path };
        problems.push(format!("{at}: {text}"));
    };
    if let Some(expected) = schema.get("type").and_then(Value::as_str)
        && !has_type(value, expected)
    {
        problem(format!("expected {}", type_phrase(expected)));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let listed: Vec<String> = allowed.iter().map(Value::to_string).collect();
        problem(format!("expected one of {}", listed.join(", ")));
    }
    match value {
        Value::String(text) => {
            let chars = text.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && chars < min
            {
                problem(match min {
                    1 => "must not be empty".to_owned(),
                    _ => format!("must be at least {min} characters long"),
                });
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && chars > max
            {
                problem(format!("is longer than the limit of {max} characters"));
            }
        }
        Value::Object(members) => check_object(schema, members, path, problems),
        _ => {}
    }
}

fn check_object(
    schema: &Value,
    members: &Map<String, Value>,
    path: &str,
    problems: &mut Vec<String>,
) {
    let empty = Map::new();
    let properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    for name in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !members.contains_key(name) {
            problems.push(format!("{path}/{}: is required", escape(name)));
        }
    }
    for (name, member) in members {
        let member_path = format!("{path}/{}", escape(name));
        match (properties.get(name), schema.get("additionalProperties")) {
            (Some(property), _) => check(property, member, &member_path, problems),
            (None, Some(Value::Bool(false))) => {
                let known: Vec<&str> = properties.keys().map(String::as_str).collect();
                problems.push(match known.as_slice() {
                    [] => format!("{member_path}: unknown property (this tool takes no arguments)"),
                    _ => format!(
                        "{member_path}: unknown property (expected: {})",
                        known.join(", ")
                    ),
                });
            }
            (None, Some(additional @ Value::Object(_))) => {
                check(additional, member, &member_path, problems)
            }
            (None, _) => {}
        }
    }
}

fn has_type(value: &Value, expected: &str) -> bool {
    match expected {
        "object" => value.is_object(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "number" => value.is_number(),
        // JSON Schema counts 2.0 as an integer.
        "integer" => value.as_f64().is_some_and(|n| n.fract() == 0.0),
        "array" => value.is_array(),
        "null" => value.is_null(),
        _ => false,
    }
}

fn type_phrase(expected: &str) -> String {
    match expected {
        "object" | "integer" | "array" => format!("an {expected}"),
        "null" => "null".to_owned(),
        _ => format!("a {expected}"),
    }
}

/// A property name as a JSON Pointer segment (RFC 6901).
fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// Whether `schema` uses only what [`validate`] understands, consistently;
/// the first problem found otherwise.
#[cfg(test)]
pub fn check_schema(schema: &Value) -> Result<(), String> {
    const KEYWORDS: &[&str] = &[
        "type",
        "properties",
        "required",
        "additionalProperties",
        "enum",
        "minLength",
        "maxLength",
        "description",
    ];
    const TYPES: &[&str] = &[
        "object", "string", "boolean", "number", "integer", "array", "null",
    ];
    let Some(keywords) = schema.as_object() else {
        return Err(format!("a schema must be an object, not {schema}"));
    };
    if let Some(unknown) = keywords.keys().find(|k| !KEYWORDS.contains(&k.as_str())) {
        return Err(format!("unsupported keyword {unknown:?}"));
    }
    let kind = keywords.get("type").and_then(Value::as_str);
    match kind {
        Some(kind) if TYPES.contains(&kind) => {}
        _ => return Err(format!("missing or unknown type in {schema}")),
    }
    if let Some(allowed) = keywords.get("enum") {
        let allowed = allowed.as_array().ok_or("enum must be an array")?;
        if allowed.is_empty()
            || allowed
                .iter()
                .any(|v| !has_type(v, kind.unwrap_or_default()))
        {
            return Err(format!(
                "enum entries must be of the schema's type: {schema}"
            ));
        }
    }
    for length in ["minLength", "maxLength"] {
        if let Some(bound) = keywords.get(length)
            && (kind != Some("string") || bound.as_u64().is_none())
        {
            return Err(format!(
                "{length} needs a string schema and a count: {schema}"
            ));
        }
    }
    let object_only = ["properties", "required", "additionalProperties"];
    if kind != Some("object") && object_only.iter().any(|k| keywords.contains_key(*k)) {
        return Err(format!("object keywords on a non-object schema: {schema}"));
    }
    let empty = Map::new();
    let properties = match keywords.get("properties") {
        Some(properties) => properties
            .as_object()
            .ok_or("properties must be an object")?,
        None => &empty,
    };
    for property in properties.values() {
        check_schema(property)?;
    }
    if let Some(required) = keywords.get("required") {
        let required = required.as_array().ok_or("required must be an array")?;
        for name in required {
            match name.as_str() {
                Some(name) if properties.contains_key(name) => {}
                _ => return Err(format!("required {name} is not a declared property")),
            }
        }
    }
    match keywords.get("additionalProperties") {
        None | Some(Value::Bool(_)) => Ok(()),
        Some(additional) => check_schema(additional),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "expression": {"type": "string", "minLength": 1, "maxLength": 5},
                "method": {"type": "string", "enum": ["GET", "POST"]},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                "count": {"type": "integer"}
            },
            "required": ["expression"],
            "additionalProperties": false
        })
    }

    #[test]
    fn valid_arguments_pass() {
        let ok = json!({"expression": "1+2", "method": "GET", "headers": {"a": "b"}, "count": 2.0});
        assert_eq!(validate(&schema(), &ok), Ok(()));
    }

    #[test]
    fn each_violation_names_its_path() {
        let cases = [
            (json!({"expression": 5}), "/expression: expected a string"),
            (json!({}), "/expression: is required"),
            (json!({"expression": ""}), "/expression: must not be empty"),
            (
                json!({"expression": "123456"}),
                "/expression: is longer than the limit of 5 characters",
            ),
            (
                json!({"expression": "1", "method": "PUT"}),
                "/method: expected one of \"GET\", \"POST\"",
            ),
            (
                json!({"expression": "1", "headers": {"a/b": 1}}),
                "/headers/a~1b: expected a string",
            ),
            (
                json!({"expression": "1", "count": 1.5}),
                "/count: expected an integer",
            ),
            (
                json!({"expression": "1", "colour": "red"}),
                "/colour: unknown property (expected: count, expression, headers, method)",
            ),
            (json!([1]), "arguments: expected an object"),
        ];
        for (arguments, expected) in cases {
            assert_eq!(
                validate(&schema(), &arguments),
                Err(expected.to_owned()),
                "{arguments}"
            );
        }
    }

    #[test]
    fn all_violations_are_reported_together() {
        let err = validate(&schema(), &json!({"method": 1, "extra": true})).unwrap_err();
        assert!(err.contains("/expression: is required"), "{err}");
        assert!(err.contains("/method: expected a string"), "{err}");
        assert!(err.contains("/extra: unknown property"), "{err}");
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        assert_eq!(validate(&schema(), &json!({"expression": "ééééé"})), Ok(()));
    }

    #[test]
    fn the_schema_checker_refuses_what_validate_would_ignore() {
        assert_eq!(check_schema(&schema()), Ok(()));
        for bad in [
            json!({"type": "string", "format": "uri"}),
            json!({"type": "strin"}),
            json!({"type": "object", "required": ["x"]}),
            json!({"type": "string", "enum": [1]}),
            json!({"type": "integer", "maxLength": 3}),
            json!({"type": "object", "properties": {"x": {"type": "number", "minimum": 0}}}),
        ] {
            assert!(check_schema(&bad).is_err(), "{bad}");
        }
    }
}
