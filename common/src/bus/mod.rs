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

use redis::aio::ConnectionManager;
use redis::streams::{StreamId, StreamRangeReply};
use sqlx::PgPool;

use crate::db;
use crate::domain::RunId;
use crate::events::{RunEvent, SequencedEvent};
use crate::redis_conn::Keys;

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

/// What a run's Redis stream holds after event `after`, in order.
pub async fn stream_after(
    conn: &mut ConnectionManager,
    keys: &Keys,
    run_id: RunId,
    after: i64,
) -> redis::RedisResult<Vec<SequencedEvent>> {
    let reply: StreamRangeReply = range_after(keys, run_id, after).query_async(conn).await?;
    Ok(reply.ids.iter().filter_map(decode_entry).collect())
}

/// `XRANGE` of a run's stream after event `after`.
fn range_after(keys: &Keys, run_id: RunId, after: i64) -> redis::Cmd {
    let mut cmd = redis::cmd("XRANGE");
    cmd.arg(keys.run_events(run_id))
        .arg(format!("({}", entry_id(after)))
        .arg("+");
    cmd
}

/// What a run's Redis stream holds after event `after`, or `None` when
/// there is no such stream (never written, or expired).
pub async fn stream_news(
    conn: &mut ConnectionManager,
    keys: &Keys,
    run_id: RunId,
    after: i64,
) -> redis::RedisResult<Option<Vec<SequencedEvent>>> {
    let (exists, reply): (bool, StreamRangeReply) = redis::pipe()
        .cmd("EXISTS")
        .arg(keys.run_events(run_id))
        .add_command(range_after(keys, run_id, after))
        .query_async(conn)
        .await?;
    Ok(exists.then(|| reply.ids.iter().filter_map(decode_entry).collect()))
}

/// Take over the events a lost worker published but did not store: copy
/// what the run's Redis stream holds after `stored` (the last event in
/// PostgreSQL) into PostgreSQL. Returns the run's last event, from which a
/// new attempt numbers on, so that no id a client may have seen is reused
/// and PostgreSQL stays gap-free. If Redis cannot be read, `stored`.
pub async fn adopt_published(
    conn: &mut ConnectionManager,
    keys: &Keys,
    pool: &PgPool,
    run_id: RunId,
    stored: i64,
) -> Result<i64, sqlx::Error> {
    let published = match stream_after(conn, keys, run_id, stored).await {
        Ok(published) => published,
        Err(error) => {
            tracing::warn!(%error, run.id = %run_id, "reading the run's stream failed; numbering after PostgreSQL");
            return Ok(stored);
        }
    };
    // Only the run of consecutive events right after `stored` can be kept gap-free.
    let adopted: Vec<&SequencedEvent> = published
        .iter()
        .zip(stored + 1..)
        .take_while(|(event, seq)| event.seq == *seq)
        .map(|(event, _)| event)
        .collect();
    let Some(last) = adopted.last().map(|e| e.seq) else {
        return Ok(stored);
    };
    let records: Vec<db::events::EventRecord<'_>> = adopted
        .iter()
        .map(|e| db::events::EventRecord {
            run_id,
            seq: e.seq,
            event: &e.event,
        })
        .collect();
    let mut conn = pool.acquire().await?;
    db::events::insert_batch(&mut conn, &records).await?;
    tracing::info!(run.id = %run_id, adopted = records.len(), "stored the events of the lost attempt");
    Ok(last)
}
