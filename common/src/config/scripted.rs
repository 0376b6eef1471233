//! The `scripted` provider's settings: Switchyard's own deterministic
//! offline model, answering by rules.

use serde::Deserialize;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ScriptedSettings {
    /// Pause between streamed chunks, to look like a real model.
    #[serde(default)]
    pub chunk_delay_ms: u64,
    /// Canned behaviour, first matching rule wins (see the worker's
    /// `providers::scripted` for the order in which it answers).
    #[serde(default)]
    pub replies: Vec<ScriptedReply>,
}

/// One rule of the scripted model.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedReply {
    /// Applies when the last user message contains this text (any message
    /// when empty).
    #[serde(default)]
    pub contains: String,
    /// Applies when the last user message contains any of these at the
    /// start of a word, ignoring case (any message when empty): word stems
    /// such as `charge` or `fail`, so that a rule meets everyday wording,
    /// not one phrase.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Applies only to requests for this model, so that agents sharing the
    /// scripted provider can behave differently.
    pub model: Option<String>,
    /// Applies only right after a result of this tool (and not to a user
    /// message): the answer to a tool's result.
    pub after_tool: Option<String>,
    /// Answer with this text; `{result}` is replaced by the tool result
    /// that an `after_tool` rule answers.
    pub reply: Option<String>,
    /// Call this tool instead of answering.
    pub tool: Option<String>,
    /// The arguments of `tool` (an empty object when not set).
    pub arguments: Option<serde_json::Value>,
}

/// Whether `needle` occurs in `text` at the start of a word (`charge` in
/// "charged", not in "discharge").
fn starts_a_word(text: &str, needle: &str) -> bool {
    text.match_indices(needle).any(|(at, _)| {
        text[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric())
    })
}

impl ScriptedReply {
    /// Whether this rule's `contains` and `keywords` match `message`.
    pub fn matches(&self, message: &str) -> bool {
        if !message.contains(&self.contains) {
            return false;
        }
        if self.keywords.is_empty() {
            return true;
        }
        let message = message.to_lowercase();
        self.keywords
            .iter()
            .any(|keyword| starts_a_word(&message, &keyword.to_lowercase()))
    }

    pub(super) fn problem(&self) -> Option<&'static str> {
        if self.keywords.iter().any(|k| k.trim().is_empty()) {
            return Some("`keywords` must not be empty strings");
        }
        match (&self.reply, &self.tool) {
            (Some(_), Some(_)) => Some("a reply rule has both `reply` and `tool`"),
            (None, None) => Some("a reply rule needs `reply` or `tool`"),
            (None, Some(_)) if self.after_tool.is_some() => {
                Some("an `after_tool` rule answers with `reply`")
            }
            (_, None) if self.arguments.is_some() => Some("`arguments` needs `tool`"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_match_the_start_of_a_word_ignoring_case() {
        let rule = ScriptedReply {
            keywords: vec!["charge".into(), "Card".into()],
            reply: Some("Billing.".into()),
            ..ScriptedReply::default()
        };
        assert!(rule.matches("I was CHARGED twice"));
        assert!(rule.matches("my (card) expired"));
        assert!(!rule.matches("discard the discharge notes"));
        assert!(!rule.matches("hello"));
        let both = ScriptedReply {
            contains: "refund".into(),
            ..rule
        };
        assert!(!both.matches("I was charged twice"));
        assert!(both.matches("refund the charge"));
    }
}
