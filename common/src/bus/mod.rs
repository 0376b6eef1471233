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
//! How events look in Redis, and the fence that keeps an attempt that lost
//! its run from reaching readers, is [`wire`].

mod coalesce;
pub mod tail;
pub mod wire;
mod writer;

pub use coalesce::RunEvents;
pub use wire::{decode_entry, entry_id};
pub use writer::EventWriter;

use redis::aio::ConnectionManager;
use redis::streams::StreamRangeReply;
use sqlx::PgPool;

use crate::db;
use crate::domain::RunId;
use crate::events::SequencedEvent;
use crate::redis_conn::Keys;

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

/// The last event id in a run's Redis stream (`None`: no stream).
pub async fn last_published(
    conn: &mut ConnectionManager,
    keys: &Keys,
    run_id: RunId,
) -> redis::RedisResult<Option<i64>> {
    let reply: StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(keys.run_events(run_id))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    Ok(reply
        .ids
        .first()
        .and_then(|entry| entry.id.split_once('-')?.0.parse().ok()))
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

/// Take over the events a lost attempt published but did not store, as
/// the writer of generation `generation` (see [`wire`]): raise the run's
/// fence, so that the lost attempt can add nothing more, then copy what
/// the run's Redis stream holds after `stored` (the last event in
/// PostgreSQL) into PostgreSQL. Returns the run's last event, from which the
/// new writer numbers on, so that no id a client may have seen is reused
/// and PostgreSQL stays gap-free. If Redis cannot be read, `stored`.
pub async fn adopt_published(
    conn: &mut ConnectionManager,
    keys: &Keys,
    pool: &PgPool,
    run_id: RunId,
    generation: i32,
    stored: i64,
) -> Result<i64, sqlx::Error> {
    let published = match wire::fence(conn, keys, run_id, generation).await {
        Ok(_) => stream_after(conn, keys, run_id, stored).await,
        Err(error) => Err(error),
    };
    let published = match published {
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
