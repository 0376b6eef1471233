//! Run events in motion.
//!
//! The worker numbers each run's events (1, 2, 3…, gap-free) and hands them
//! to an [`EventWriter`], which writes them in batches to the run's Redis
//! stream and live channel (for live readers, fast) and to PostgreSQL
//! (durable: what a reconnecting client replays, even after the stream is
//! trimmed, expired or lost). [`RunEvents`] is one run's handle: it coalesces token deltas
//! so that per-token overhead stays bounded at high token rates.
//!
//! Readers ([`tail::TailHub`]) follow live channels with one Pub/Sub
//! connection per process and fill any gap from the stream or PostgreSQL.

mod coalesce;
pub mod tail;
mod writer;

pub use coalesce::RunEvents;
pub use writer::EventWriter;

use redis::streams::StreamId;

use crate::events::{RunEvent, SequencedEvent};

/// The stream entry id of event `seq`: `seq-0`, so that `XRANGE key (n-0 +`
/// is "every event after n".
pub fn entry_id(seq: i64) -> String {
    format!("{seq}-0")
}

/// Decode a stream entry written by [`EventWriter`].
pub fn decode_entry(entry: &StreamId) -> Option<SequencedEvent> {
    let seq = entry.id.split_once('-')?.0.parse().ok()?;
    let kind: String = entry.get("k")?;
    let data: String = entry.get("d")?;
    let data = serde_json::from_str(&data).ok()?;
    let event = RunEvent::from_parts(&kind, data).ok()?;
    Some(SequencedEvent { seq, event })
}
