//! How run events look in Redis, in one place: the stream entries, the
//! live-channel batches, and the fenced write that adds to both.
//!
//! - A stream entry has the id `<seq>-0` (so that `XRANGE key (n-0 +` is
//!   "every event after n") and the fields `k` (the event's kind) and `d`
//!   (its data as JSON).
//! - A live batch is a JSON array of `[seq, kind, data]`.
//! - PostgreSQL's rows hold the same kind and data (`crate::db::events`);
//!   all three decode through [`RunEvent::from_parts`].
//!
//! # Fencing
//!
//! Every write goes through one script, [`APPEND`], which keeps a fence per
//! run ([`Keys::run_fence`]): the highest *writer generation* that has
//! written or claimed the run. A worker writes as its attempt; the API
//! writes `run.queued` as [`CREATION`], takes over a lost attempt's events
//! as the attempt that would come next, and ends a queued run as
//! [`ENDED`]. A write
//! of an older generation than the fence is refused whole (nothing appended,
//! nothing published), so a worker that lost its run to a later attempt
//! can no longer reach the run's readers. A new attempt raises the fence
//! ([`fence`]) before it reads what the stream holds, so that nothing of
//! the old attempt lands after that read.

use redis::aio::ConnectionManager;
use redis::streams::StreamId;
use serde_json::Value;

use crate::domain::RunId;
use crate::events::{RunEvent, SequencedEvent};
use crate::redis_conn::Keys;

/// Live streams (and their fences) are kept this long after their last
/// event; PostgreSQL keeps the events for as long as the run exists.
pub const STREAM_TTL_SECS: i64 = 24 * 3600;
/// Bound on a stream's length (approximate trimming).
pub const STREAM_MAX_LEN: usize = 10_000;

/// The writer generation of a run's first event, `run.queued`, written by
/// the API before any attempt.
pub const CREATION: i32 = 0;
/// The writer generation of an event that ends a run outside any attempt
/// (the API cancelling a queued run): nothing may be written after it.
pub const ENDED: i32 = i32::MAX;

/// The stream entry id of event `seq`.
pub fn entry_id(seq: i64) -> String {
    format!("{seq}-0")
}

/// Decode a stream entry.
pub fn decode_entry(entry: &StreamId) -> Option<SequencedEvent> {
    let seq = entry.id.split_once('-')?.0.parse().ok()?;
    let kind: String = entry.get("k")?;
    let data: String = entry.get("d")?;
    let data = serde_json::from_str(&data).ok()?;
    let event = RunEvent::from_parts(&kind, data).ok()?;
    Some(SequencedEvent { seq, event })
}

/// Encode events as one live-channel message.
pub fn live_batch<'a>(events: impl IntoIterator<Item = (i64, &'a RunEvent)>) -> String {
    let items: Vec<Value> = events
        .into_iter()
        .map(|(seq, event)| serde_json::json!([seq, event.kind(), event.data()]))
        .collect();
    Value::Array(items).to_string()
}

/// Decode a live-channel message; `None` if any part of it is not an event.
pub fn decode_live_batch(payload: &str) -> Option<Vec<SequencedEvent>> {
    let items: Vec<(i64, String, Value)> = serde_json::from_str(payload).ok()?;
    items
        .into_iter()
        .map(|(seq, kind, data)| {
            RunEvent::from_parts(&kind, data)
                .ok()
                .map(|event| SequencedEvent { seq, event })
        })
        .collect()
}

/// The fenced write. `KEYS`: the run's stream, its fence. `ARGV`: the
/// writer's generation, the live channel (empty: publish nothing), the
/// stream's bound, its time to live, whether to renew that, the live
/// message, then `seq, kind, data` for each event. Entries at or below the
/// stream's last id are skipped (a retried batch). Returns 1, or 0 when a
/// later generation holds the fence.
const APPEND: &str = r"
local generation = tonumber(ARGV[1])
local fence = tonumber(redis.call('GET', KEYS[2]) or '-1')
if fence > generation then return 0 end
if fence < generation then redis.call('SET', KEYS[2], generation, 'EX', ARGV[4]) end
if #ARGV < 7 then return 1 end
local last = 0
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #newest > 0 then last = tonumber(string.match(newest[1][1], '^(%d+)')) end
for i = 7, #ARGV, 3 do
  local seq = tonumber(ARGV[i])
  if seq > last then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], seq .. '-0', 'k', ARGV[i + 1], 'd', ARGV[i + 2])
    last = seq
  end
end
if ARGV[5] == '1' then
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[6]) end
return 1
";

fn script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(APPEND))
}

/// Add to `pipe`: append `events` (consecutive, of one run) to the run's
/// stream and publish them on its live channel, as `generation`, unless
/// the run's fence is past it. The command's reply is 1, or 0 if fenced.
pub fn append(
    pipe: &mut redis::Pipeline,
    keys: &Keys,
    run_id: RunId,
    generation: i32,
    events: &[(i64, &RunEvent)],
) {
    let mut invocation = script().key(keys.run_events(run_id));
    invocation.key(keys.run_fence(run_id));
    // A stream's expiry is set when its run is queued and when it starts
    // (so that the stream of a run that never ran, or whose worker died,
    // still goes away) and renewed when it ends; not on every event.
    let renew = events.iter().any(|(_, event)| {
        matches!(
            event,
            RunEvent::RunQueued { .. } | RunEvent::RunStarted { .. }
        ) || event.is_terminal()
    });
    invocation
        .arg(generation)
        .arg(keys.run_live(run_id))
        .arg(STREAM_MAX_LEN)
        .arg(STREAM_TTL_SECS)
        .arg(if renew { "1" } else { "0" })
        .arg(live_batch(events.iter().map(|(seq, event)| (*seq, *event))));
    for (seq, event) in events {
        invocation
            .arg(*seq)
            .arg(event.kind())
            .arg(event.data().to_string());
    }
    pipe.invoke_script(&invocation);
}

/// Run a pipeline of [`append`]s: loads the script first if Redis does not
/// know it (a new or restarted Redis). Returns each append's reply.
pub async fn run_appends(
    conn: &mut ConnectionManager,
    pipe: &redis::Pipeline,
) -> redis::RedisResult<Vec<i64>> {
    match pipe.query_async(conn).await {
        Err(error)
            if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
        {
            script().prepare_invoke().load_async(conn).await?;
            pipe.query_async(conn).await
        }
        result => result,
    }
}

/// Raise a run's fence to `generation`: from now on, writes of earlier
/// generations are refused. Returns false if a later generation holds it.
pub async fn fence(
    conn: &mut ConnectionManager,
    keys: &Keys,
    run_id: RunId,
    generation: i32,
) -> redis::RedisResult<bool> {
    let mut pipe = redis::pipe();
    let mut invocation = script().key(keys.run_events(run_id));
    invocation
        .key(keys.run_fence(run_id))
        .arg(generation)
        .arg("")
        .arg(STREAM_MAX_LEN)
        .arg(STREAM_TTL_SECS)
        .arg("0");
    pipe.invoke_script(&invocation);
    let replies = run_appends(conn, &pipe).await?;
    Ok(replies.first() == Some(&1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MessageId;

    #[test]
    fn live_batches_round_trip() {
        let delta = RunEvent::MessageDelta {
            message_id: MessageId::new(),
            delta: "hi \"there\"\n".into(),
        };
        let started = RunEvent::RunStarted {
            run_id: RunId::new(),
            attempt: 2,
        };
        let payload = live_batch([(3, &started), (4, &delta)]);
        let decoded = decode_live_batch(&payload).expect("decodes");
        assert_eq!(
            decoded,
            vec![
                SequencedEvent {
                    seq: 3,
                    event: started
                },
                SequencedEvent {
                    seq: 4,
                    event: delta
                },
            ]
        );
        assert_eq!(decode_live_batch("[[1, \"no.such.event\", {}]]"), None);
    }
}
