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

/// Store a worker's events (of any runs), each as written by an attempt
/// of its run: an event is stored only while its attempt holds the run
/// (in progress, not taken back or over by a later attempt). The runs' rows
/// are share-locked, so a claim or a take-back waits for this statement and
/// nothing of an earlier attempt lands after it. Returns the runs whose
/// events were refused.
pub async fn insert_fenced(
    conn: &mut PgConnection,
    records: &[(EventRecord<'_>, i32)],
) -> Result<Vec<RunId>, sqlx::Error> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let run_ids: Vec<uuid::Uuid> = records.iter().map(|(r, _)| r.run_id.0).collect();
    let seqs: Vec<i64> = records.iter().map(|(r, _)| r.seq).collect();
    let kinds: Vec<&str> = records.iter().map(|(r, _)| r.event.kind()).collect();
    let data: Vec<serde_json::Value> = records.iter().map(|(r, _)| r.event.data()).collect();
    let attempts: Vec<i32> = records.iter().map(|(_, attempt)| *attempt).collect();
    sqlx::query_scalar(
        "with input as (
             select * from unnest($1::uuid[], $2::int8[], $3::text[], $4::jsonb[], $5::int4[])
                 as i(run_id, seq, kind, data, attempt)
         ), holders as (
             select r.id, r.attempt from runs r
             where r.id in (select run_id from input) and r.status = 'in_progress'
             order by r.id
             for share
         ), stored as (
             insert into run_events (run_id, seq, kind, data)
             select i.run_id, i.seq, i.kind, i.data
             from input i join holders h on h.id = i.run_id and h.attempt = i.attempt
             on conflict (run_id, seq) do nothing
         )
         select distinct i.run_id from input i
         where not exists (select 1 from holders h where h.id = i.run_id and h.attempt = i.attempt)",
    )
    .bind(run_ids)
    .bind(seqs)
    .bind(kinds)
    .bind(data)
    .bind(attempts)
    .fetch_all(conn)
    .await
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
