//! A run's view of its thread: which stored messages the model sees, and in
//! what order.
//!
//! Messages are stored in the order they arrive, so with runs queued on a
//! thread a user message can be stored before the answer to the previous
//! one: `user 1, user 2, answer 1`. A run sees the messages of every run up
//! to and including its own, each run's answer right after its question,
//! and nothing of the runs queued after it.

use std::collections::HashMap;

use switchyard_common::db::messages::MessageRow;
use switchyard_common::domain::{MessageRole, RunId};

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
}
