//! A run's view of its thread: which stored messages the model sees, and in
//! what order.
//!
//! Messages are stored in the order they arrive, so with runs queued on a
//! thread a user message can be stored before the answer to the previous
//! one: `user 1, user 2, answer 1`. A run sees the messages of every run up
//! to and including its own, each run's answer right after its question,
//! and nothing of the runs queued after it.
//!
//! An answer reached through tools is shown as it happened: each turn's
//! tool calls and their results, then the answer. The oldest messages are
//! left out when the conversation would exceed the agent's context budget.

use std::collections::HashMap;

use switchyard_common::db::messages::{MessageRow, ToolTurn};
use switchyard_common::domain::{MessageRole, RunId};

use crate::providers::{ChatMessage, ToolCall};

/// Tokens a message costs besides its text (role, separators).
const MESSAGE_OVERHEAD_TOKENS: usize = 4;

/// Order and filter `messages` (oldest first by `seq`) for the run whose user
/// message is at `input_seq`.
pub fn conversation(messages: Vec<MessageRow>, input_seq: i64) -> Vec<MessageRow> {
    // A run's place is the position of its user message.
    let run_places: HashMap<RunId, i64> = messages
        .iter()
        .filter(|m| m.role == MessageRole::User)
        .filter_map(|m| m.run_id.map(|run| (run, m.seq)))
        .collect();
    let place = |m: &MessageRow| match m.run_id {
        Some(run) => run_places.get(&run).copied().unwrap_or(i64::MIN),
        None => m.seq,
    };
    let mut kept: Vec<(i64, MessageRow)> = messages
        .into_iter()
        .map(|m| (place(&m), m))
        .filter(|(place, _)| *place <= input_seq)
        .collect();
    kept.sort_by_key(|(place, m)| (*place, m.seq));
    kept.into_iter().map(|(_, m)| m).collect()
}

/// The chat messages of a conversation (as ordered by [`conversation`]),
/// dropping its oldest messages while it exceeds `context_tokens`. The
/// last message (the run's question) is always kept.
pub fn to_chat(messages: Vec<MessageRow>, context_tokens: u32) -> Vec<ChatMessage> {
    let expanded: Vec<Vec<ChatMessage>> = messages.into_iter().map(expand).collect();
    let mut budget = context_tokens as usize;
    let mut kept = 0;
    for group in expanded.iter().rev() {
        let cost: usize = group.iter().map(estimated_tokens).sum();
        if kept > 0 && cost > budget {
            break;
        }
        budget = budget.saturating_sub(cost);
        kept += 1;
    }
    let skip = expanded.len() - kept;
    expanded.into_iter().skip(skip).flatten().collect()
}

/// A stored message as the model sees it: a tool-using answer becomes its
/// turns (text and calls, then results), then the final text.
fn expand(message: MessageRow) -> Vec<ChatMessage> {
    match message.role {
        MessageRole::User => vec![ChatMessage::User {
            content: message.content,
        }],
        MessageRole::System => vec![ChatMessage::System {
            content: message.content,
        }],
        MessageRole::Assistant => {
            let turns: Vec<ToolTurn> = message.tool_calls.map(|t| t.0).unwrap_or_default();
            let mut chat = Vec::new();
            let mut before = 0;
            for turn in turns {
                before += turn.text.len();
                chat.push(ChatMessage::Assistant {
                    content: turn.text,
                    tool_calls: turn
                        .calls
                        .iter()
                        .map(|c| ToolCall {
                            id: c.id.clone(),
                            name: c.name.clone(),
                            arguments: c.arguments.clone(),
                        })
                        .collect(),
                });
                chat.extend(turn.calls.into_iter().map(|c| ChatMessage::Tool {
                    tool_call_id: c.id,
                    content: c.result,
                }));
            }
            // The answer's content is every turn's text, then the final text.
            let last = message.content.get(before..).unwrap_or(&message.content);
            if chat.is_empty() || !last.is_empty() {
                chat.push(ChatMessage::Assistant {
                    content: last.to_owned(),
                    tool_calls: Vec::new(),
                });
            }
            chat
        }
        // Tool results are stored with the answer they led to.
        MessageRole::Tool => Vec::new(),
    }
}

/// A rough token count: four characters a token, plus the message's overhead.
fn estimated_tokens(message: &ChatMessage) -> usize {
    let chars = match message {
        ChatMessage::System { content } | ChatMessage::User { content } => content.len(),
        ChatMessage::Assistant {
            content,
            tool_calls,
        } => {
            content.len()
                + tool_calls
                    .iter()
                    .map(|c| c.name.len() + c.arguments.len())
                    .sum::<usize>()
        }
        ChatMessage::Tool { content, .. } => content.len(),
    };
    chars.div_ceil(4) + MESSAGE_OVERHEAD_TOKENS
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_common::domain::{MessageId, ThreadId};

    fn message(seq: i64, run: RunId, role: MessageRole) -> MessageRow {
        MessageRow {
            id: MessageId::new(),
            thread_id: ThreadId(uuid::Uuid::nil()),
            seq,
            run_id: Some(run),
            role,
            content: format!("{role:?} {seq}"),
            created_at: chrono::Utc::now(),
            tool_calls: None,
        }
    }

    fn seqs(messages: &[MessageRow]) -> Vec<i64> {
        messages.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn each_answer_follows_its_question_and_later_runs_are_left_out() {
        let (first, second, third) = (RunId::new(), RunId::new(), RunId::new());
        // Stored: question 1, question 2, answer 1, question 3, answer 2.
        let stored = vec![
            message(1, first, MessageRole::User),
            message(2, second, MessageRole::User),
            message(3, first, MessageRole::Assistant),
            message(4, third, MessageRole::User),
            message(5, second, MessageRole::Assistant),
        ];
        assert_eq!(seqs(&conversation(stored.clone(), 1)), [1, 3]);
        assert_eq!(seqs(&conversation(stored.clone(), 2)), [1, 3, 2, 5]);
        assert_eq!(seqs(&conversation(stored, 4)), [1, 3, 2, 5, 4]);
    }

    #[test]
    fn an_answer_whose_question_is_out_of_the_window_comes_first() {
        let (old, current) = (RunId::new(), RunId::new());
        let stored = vec![
            message(7, current, MessageRole::User),
            message(8, old, MessageRole::Assistant),
        ];
        assert_eq!(seqs(&conversation(stored, 7)), [8, 7]);
    }

    #[test]
    fn tool_use_is_shown_before_the_answer() {
        let run = RunId::new();
        let mut answer = message(2, run, MessageRole::Assistant);
        answer.content = "Let me check. It is noon.".into();
        answer.tool_calls = Some(sqlx::types::Json(vec![ToolTurn {
            text: "Let me check. ".into(),
            calls: vec![switchyard_common::db::messages::ToolExchange {
                id: "call_1".into(),
                name: "current_time".into(),
                arguments: "{}".into(),
                result: "\"12:00\"".into(),
            }],
        }]));
        let chat = to_chat(vec![message(1, run, MessageRole::User), answer], 10_000);
        assert_eq!(chat.len(), 4, "{chat:?}");
        assert!(
            matches!(&chat[1], ChatMessage::Assistant { content, tool_calls } if content == "Let me check. " && tool_calls[0].id == "call_1")
        );
        assert!(
            matches!(&chat[2], ChatMessage::Tool { tool_call_id, content } if tool_call_id == "call_1" && content == "\"12:00\"")
        );
        assert!(
            matches!(&chat[3], ChatMessage::Assistant { content, tool_calls } if content == "It is noon." && tool_calls.is_empty())
        );
    }

    #[test]
    fn the_oldest_messages_go_first_and_the_question_always_stays() {
        let run = RunId::new();
        let long = |seq: i64, role| {
            let mut m = message(seq, run, role);
            m.content = "x".repeat(400); // 100 tokens + overhead
            m
        };
        let stored = vec![
            long(1, MessageRole::User),
            long(2, MessageRole::Assistant),
            long(3, MessageRole::User),
        ];
        assert_eq!(to_chat(stored.clone(), 10_000).len(), 3);
        assert_eq!(to_chat(stored.clone(), 220).len(), 2);
        assert_eq!(to_chat(stored.clone(), 104).len(), 1);
        assert_eq!(to_chat(stored, 1).len(), 1);
    }
}
