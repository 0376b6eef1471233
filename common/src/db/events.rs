//! Run events, durably: the record the SSE endpoint replays from.

use sqlx::{PgConnection, PgPool};

use crate::domain::RunId;
use crate::events::{RunEvent, SequencedEvent};

/// Store one event inside the caller's transaction.
pub async fn insert(
    tx: &mut PgConnection,
    run_id: RunId,
    seq: i64,
    event: &RunEvent,
) -> Result<(), sqlx::Error> {
    sqlx::query("insert into run_events (run_id, seq, kind, data) values ($1, $2, $3, $4)")
        .bind(run_id)
        .bind(seq)
        .bind(event.kind())
        .bind(event.data())
        .execute(tx)
        .await?;
    Ok(())
}

/// A row of a batch insert.
pub struct EventRecord<'a> {
    pub run_id: RunId,
    pub seq: i64,
    pub event: &'a RunEvent,
}

/// Store many events (of any runs) in one statement. Re-storing an event
/// that is already there is a no-op, so a retried batch is harmless.
pub async fn insert_batch(
    conn: &mut PgConnection,
    records: &[EventRecord<'_>],
) -> Result<(), sqlx::Error> {
    if records.is_empty() {
        return Ok(());
    }
    let run_ids: Vec<uuid::Uuid> = records.iter().map(|r| r.run_id.0).collect();
    let seqs: Vec<i64> = records.iter().map(|r| r.seq).collect();
    let kinds: Vec<&str> = records.iter().map(|r| r.event.kind()).collect();
    let data: Vec<serde_json::Value> = records.iter().map(|r| r.event.data()).collect();
    sqlx::query(
        "insert into run_events (run_id, seq, kind, data)
         select * from unnest($1::uuid[], $2::int8[], $3::text[], $4::jsonb[])
         on conflict (run_id, seq) do nothing",
    )
    .bind(run_ids)
    .bind(seqs)
    .bind(kinds)
    .bind(data)
    .execute(conn)
    .await?;
    Ok(())
}

/// Events of a run after `after`, in order, at most `limit`.
pub async fn list_after(
    pool: &PgPool,
    run_id: RunId,
    after: i64,
    limit: i64,
) -> Result<Vec<SequencedEvent>, sqlx::Error> {
    let rows: Vec<(i64, String, serde_json::Value)> = sqlx::query_as(
        "select seq, kind, data from run_events where run_id = $1 and seq > $2 order by seq limit $3",
    )
    .bind(run_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(seq, kind, data)| {
            RunEvent::from_parts(&kind, data)
                .map(|event| SequencedEvent { seq, event })
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))
        })
        .collect()
}

/// The last stored event of a run (0 when none).
pub async fn last_seq(pool: &PgPool, run_id: RunId) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("select coalesce(max(seq), 0) from run_events where run_id = $1")
        .bind(run_id)
        .fetch_one(pool)
        .await
}
