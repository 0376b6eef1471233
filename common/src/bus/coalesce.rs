//! One run's event handle: numbering and token-delta coalescing.

use std::time::Duration;

use tokio::time::Instant;

use crate::domain::{MessageId, RunId};
use crate::events::RunEvent;

use super::EventWriter;

/// Numbers a run's events and coalesces its `message.delta`s.
///
/// The first delta after a quiet period goes out at once (time to first
/// token); the ones that follow within `flush_interval` are joined, and a
/// joined delta is sent early once it reaches `max_bytes`. The caller flushes
/// at [`RunEvents::deadline`].
pub struct RunEvents {
    run_id: RunId,
    /// The attempt writing (see [`super::wire`]'s fencing).
    attempt: i32,
    writer: EventWriter,
    last_seq: i64,
    flush_interval: Duration,
    max_bytes: usize,
    pending: Option<(MessageId, String)>,
    last_flush: Option<Instant>,
}

impl RunEvents {
    pub fn new(
        run_id: RunId,
        attempt: i32,
        writer: EventWriter,
        last_seq: i64,
        flush_interval: Duration,
        max_bytes: usize,
    ) -> Self {
        Self {
            run_id,
            attempt,
            writer,
            last_seq,
            flush_interval,
            max_bytes,
            pending: None,
            last_flush: None,
        }
    }

    /// Emit an event (after any pending delta, to keep the order).
    pub fn emit(&mut self, event: RunEvent) {
        self.flush();
        self.last_seq += 1;
        self.writer
            .write(self.run_id, self.attempt, self.last_seq, event);
    }

    /// Reserve the next sequence number for an event the caller stores itself
    /// (in a transaction with other rows); publish it with [`Self::publish_stored`].
    pub fn reserve(&mut self) -> i64 {
        self.flush();
        self.last_seq += 1;
        self.last_seq
    }

    /// Publish an event already stored in PostgreSQL under a reserved number.
    pub fn publish_stored(&self, seq: i64, event: RunEvent) {
        self.writer
            .publish_only(self.run_id, self.attempt, seq, event);
    }

    /// Add text to the message being streamed.
    pub fn delta(&mut self, message_id: MessageId, text: &str) {
        if text.is_empty() {
            return;
        }
        match &mut self.pending {
            Some((id, buffer)) if *id == message_id => buffer.push_str(text),
            _ => {
                self.flush();
                self.pending = Some((message_id, text.to_owned()));
            }
        }
        let quiet = self
            .last_flush
            .is_none_or(|at| at.elapsed() >= self.flush_interval);
        let full = self
            .pending
            .as_ref()
            .is_some_and(|(_, b)| b.len() >= self.max_bytes);
        if quiet || full {
            self.flush();
        }
    }

    /// When the pending delta must go out, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.as_ref().map(|_| {
            self.last_flush
                .map_or_else(Instant::now, |at| at + self.flush_interval)
        })
    }

    /// Send the pending delta now.
    pub fn flush(&mut self) {
        if let Some((message_id, delta)) = self.pending.take() {
            self.last_seq += 1;
            self.writer.write(
                self.run_id,
                self.attempt,
                self.last_seq,
                RunEvent::MessageDelta { message_id, delta },
            );
            self.last_flush = Some(Instant::now());
        }
    }

    /// Wait until every event so far is durable in PostgreSQL.
    pub async fn sync(&mut self) {
        self.flush();
        self.writer.flush().await;
    }
}
