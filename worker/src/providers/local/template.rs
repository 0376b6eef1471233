//! The ChatML template of SmolLM2 and other chat models:
//! `<|im_start|>ROLE\nCONTENT<|im_end|>\n` per turn, then
//! `<|im_start|>assistant\n` for the answer.
//!
//! The model knows the roles `system`, `user` and `assistant`. A tool
//! result is a `user` turn that says which tool returned what
//! (``Result of the tool `NAME`: …``), and an assistant turn that called
//! tools says so in its text (``Calling the tool `NAME` with {…}.``): the
//! local model offers no tool calls of its own, but reads conversations
//! that other models' tools took part in.

use super::model::{IM_END, IM_START, Model};
use crate::providers::ChatMessage;

/// One turn as the model sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub role: &'static str,
    pub content: String,
}

/// The turns of a conversation, in the roles the model knows.
pub fn turns(messages: &[ChatMessage]) -> Vec<Turn> {
    let tool_name = |id: &str| {
        messages.iter().find_map(|m| match m {
            ChatMessage::Assistant { tool_calls, .. } => tool_calls
                .iter()
                .find(|c| c.id == id)
                .map(|c| c.name.clone()),
            _ => None,
        })
    };
    messages
        .iter()
        .map(|message| match message {
            ChatMessage::System { content } => Turn {
                role: "system",
                content: content.clone(),
            },
            ChatMessage::User { content } => Turn {
                role: "user",
                content: content.clone(),
            },
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => {
                let mut text = content.clone();
                for call in tool_calls {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&format!(
                        "Calling the tool `{}` with {}.",
                        call.name, call.arguments
                    ));
                }
                Turn {
                    role: "assistant",
                    content: text,
                }
            }
            ChatMessage::Tool {
                tool_call_id,
                content,
            } => Turn {
                role: "user",
                content: format!(
                    "Result of the tool `{}`: {content}",
                    tool_name(tool_call_id).unwrap_or_else(|| tool_call_id.clone())
                ),
            },
        })
        .collect()
}

/// The template's text of `turns`, generation prompt included (for
/// reading and tests; the model is given [`prompt_ids`]).
pub fn render(turns: &[Turn]) -> String {
    let mut text = String::new();
    for turn in turns {
        text.push_str(&format!(
            "{IM_START}{}\n{}{IM_END}\n",
            turn.role, turn.content
        ));
    }
    text.push_str(IM_START);
    text.push_str("assistant\n");
    text
}

/// The token ids of the prompt for `turns`, the markers placed by id.
pub fn prompt_ids(model: &Model, turns: &[Turn]) -> Result<Vec<u32>, String> {
    let newline = model.tokenizer.encode("\n")?;
    let mut ids = Vec::new();
    for turn in turns {
        ids.push(model.im_start);
        ids.extend(
            model
                .tokenizer
                .encode(&format!("{}\n{}", turn.role, turn.content))?,
        );
        ids.push(model.im_end);
        ids.extend(&newline);
    }
    ids.push(model.im_start);
    ids.extend(model.tokenizer.encode("assistant\n")?);
    Ok(ids)
}

/// The prompt of the conversation's latest turns that fit in `budget`
/// tokens: system turns are kept, then turns are taken back from the
/// newest until the next would not fit. Fails when even the last turn
/// does not fit.
pub fn fit(model: &Model, turns: &[Turn], budget: usize) -> Result<Vec<u32>, String> {
    let (system, rest): (Vec<&Turn>, Vec<&Turn>) = turns.iter().partition(|t| t.role == "system");
    let build = |from: usize| {
        let chosen: Vec<Turn> = system
            .iter()
            .chain(rest[from..].iter())
            .map(|t| (*t).clone())
            .collect();
        prompt_ids(model, &chosen)
    };
    let last = rest.len().saturating_sub(1);
    let mut from = 0;
    loop {
        let ids = build(from)?;
        if ids.len() <= budget {
            return Ok(ids);
        }
        if from >= last {
            return Err(format!(
                "the prompt is {} tokens; the local model's context leaves {budget} for it",
                ids.len()
            ));
        }
        from += 1;
    }
}
