//! The analysis behind the report: which runs each killed worker held and
//! when they started again, what became of each cancelled run, and the
//! clients' events against the stored ones.
//!
//! Which runs a killed worker held comes from the fake LLM's records: each
//! worker names itself in a request header (see
//! `switchyard_bench::stack::WORKER_HEADER`), so a run was on the killed
//! worker if its latest request before the kill came from that worker and
//! its client had not received its end by then.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::Instant;

use anyhow::Context as _;
use serde_json::Value;
use sqlx::{Connection as _, PgConnection};

use crate::client::{Cancel, Outcome, Trace};
use crate::faults::Kill;

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Request {
    /// The run's tag (its user message).
    pub tag: String,
    /// The worker that sent it.
    pub worker: String,
    pub at: Instant,
}

/// The database's view at the end.
#[derive(Debug, Default)]
pub struct Database {
    /// (status, error code or "", runs).
    pub by_status: Vec<(String, String, i64)>,
    /// (attempt, runs).
    pub attempts: Vec<(i32, i64)>,
    /// Every stored event by run id: (seq, kind, data), in seq order.
    pub events: HashMap<String, Vec<(i64, String, Value)>>,
}

impl Database {
    pub async fn read(database_url: &str) -> anyhow::Result<Self> {
        let mut conn = PgConnection::connect(database_url)
            .await
            .context("connecting to PostgreSQL for the final counts")?;
        let by_status = sqlx::query_as(
            "select status::text, coalesce(error_code, ''), count(*)
               from runs group by 1, 2 order by 1, 2",
        )
        .fetch_all(&mut conn)
        .await
        .context("counting runs by status")?;
        let attempts = sqlx::query_as("select attempt, count(*) from runs group by 1 order by 1")
            .fetch_all(&mut conn)
            .await
            .context("counting runs by attempt")?;
        let rows: Vec<(String, i64, String, Value)> = sqlx::query_as(
            "select run_id::text, seq, kind, data from run_events order by run_id, seq",
        )
        .fetch_all(&mut conn)
        .await
        .context("reading the stored events")?;
        conn.close().await?;
        let mut events: HashMap<String, Vec<(i64, String, Value)>> = HashMap::new();
        for (run_id, seq, kind, data) in rows {
            events.entry(run_id).or_default().push((seq, kind, data));
        }
        Ok(Self {
            by_status,
            attempts,
            events,
        })
    }

    /// Runs still `queued` or `in_progress`.
    pub fn active(&self) -> i64 {
        self.by_status
            .iter()
            .filter(|(status, _, _)| status == "queued" || status == "in_progress")
            .map(|(_, _, n)| n)
            .sum()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Completed => f.write_str("completed"),
            Self::Failed { code } => write!(f, "failed ({code})"),
            Self::Cancelled => f.write_str("cancelled"),
        }
    }
}

/// A held run's next attempt.
#[derive(Debug, Clone, Copy)]
pub struct Restart {
    /// Seconds from the kill to the attempt's `run.started`.
    pub after: f64,
    /// The attempt announced is not the one right after the held one: the
    /// worker that took the run back died too before announcing its
    /// attempt, and the run waited for a second lease expiry.
    pub twice: bool,
}

/// What became of the runs a killed worker held.
pub struct KillOutcome {
    /// Runs on the worker when it was killed: the trace's index, and when
    /// the run started again (if it did).
    pub held: Vec<(usize, Option<Instant>)>,
    pub restarted: Vec<Restart>,
    /// Runs that ended with no new `run.started`, by how they ended (e.g.
    /// they had just finished, or were out of attempts).
    pub ended: BTreeMap<String, usize>,
    pub never_terminal: usize,
}

/// The clients' events against the stored ones (`run_events`), which a
/// client reading the run from the start would get.
#[derive(Debug, Default)]
pub struct AgainstStore {
    /// Received events that differ from the stored event with their id:
    /// an id given to two events.
    pub differ: usize,
    /// Received events with an id that was never stored.
    pub unstored: usize,
    /// Stored events after the last one a client received.
    pub unreceived: usize,
    /// The first difference, for the report.
    pub example: Option<String>,
}

impl AgainstStore {
    pub fn check(traces: &[Trace], stored: &HashMap<String, Vec<(i64, String, Value)>>) -> Self {
        let mut out = Self::default();
        for trace in traces {
            let Some(run_id) = &trace.run_id else {
                continue;
            };
            let events = stored.get(run_id).map_or(&[][..], Vec::as_slice);
            let by_id: HashMap<i64, (&String, &Value)> = events
                .iter()
                .map(|(seq, kind, data)| (*seq, (kind, data)))
                .collect();
            for got in &trace.received {
                match by_id.get(&got.id) {
                    None => out.unstored += 1,
                    Some((kind, data)) if **kind != got.kind || **data != got.data => {
                        out.differ += 1;
                        out.example.get_or_insert_with(|| {
                            format!(
                                "{} (run {run_id}): event {} received as {}, stored as {kind}",
                                trace.tag, got.id, got.kind
                            )
                        });
                    }
                    Some(_) => {}
                }
            }
            out.unreceived += events
                .iter()
                .filter(|(seq, _, _)| *seq > trace.last_id)
                .count();
        }
        out
    }

    pub fn clean(&self) -> bool {
        self.differ + self.unstored + self.unreceived == 0
    }
}

/// What became of the run of one accepted cancel (202).
pub struct CancelOutcome {
    pub tag: String,
    /// How the run ended; `None`: never, for its client.
    pub end: Option<Outcome>,
    /// Milliseconds from the POST to the run's end.
    pub after_ms: Option<f64>,
    /// The run's worker was killed before the run could stop: the run
    /// stops once another worker has taken it back.
    pub orphaned: bool,
}

/// What became of each killed worker's runs, and how many restarts no
/// kill explains.
pub fn attribute_kills(
    traces: &[Trace],
    kills: &[Kill],
    requests: &[Request],
) -> (Vec<KillOutcome>, usize) {
    let mut by_tag: HashMap<&str, Vec<(Instant, &str)>> = HashMap::new();
    for request in requests {
        by_tag
            .entry(&request.tag)
            .or_default()
            .push((request.at, &request.worker));
    }
    for list in by_tag.values_mut() {
        list.sort_by_key(|(at, _)| *at);
    }
    // (trace, start) pairs that are a kill's restart.
    let mut explained: HashSet<(usize, usize)> = HashSet::new();
    let mut kill_outcomes = Vec::with_capacity(kills.len());
    for kill in kills {
        let at = kill.killed.at;
        let mut outcome = KillOutcome {
            held: Vec::new(),
            restarted: Vec::new(),
            ended: BTreeMap::new(),
            never_terminal: 0,
        };
        for (t, trace) in traces.iter().enumerate() {
            // The run's requests up to the kill; the last one must be
            // the killed worker's. The attempt it belongs to is at least
            // their number (attempts whose worker died before calling
            // the LLM made none).
            let requests = by_tag.get(trace.tag.as_str()).and_then(|list| {
                let sent = list.iter().take_while(|(sent, _)| *sent <= at).count();
                let (_, worker) = list.get(sent.checked_sub(1)?)?;
                (*worker == kill.killed.name).then_some(sent)
            });
            let Some(requests) = requests else {
                continue;
            };
            if trace.end.as_ref().is_some_and(|end| end.at <= at) {
                continue;
            }
            // A later attempt's `run.started`. Not just any received
            // after the kill: when the event path lags, the held
            // attempt's own may arrive after the kill.
            let restart = trace
                .starts
                .iter()
                .enumerate()
                .find(|(_, (attempt, started))| {
                    *started > at && usize::try_from(*attempt).is_ok_and(|a| a > requests)
                });
            outcome
                .held
                .push((t, restart.map(|(_, (_, started))| *started)));
            if let Some((s, (attempt, started))) = restart {
                // The held attempt, as far as the client can tell.
                let held = trace
                    .starts
                    .iter()
                    .filter(|(_, started)| *started <= at)
                    .map(|(attempt, _)| *attempt)
                    .chain(i64::try_from(requests))
                    .max()
                    .unwrap_or(0);
                outcome.restarted.push(Restart {
                    after: started.duration_since(at).as_secs_f64(),
                    twice: *attempt > held + 1,
                });
                explained.insert((t, s));
            } else if let Some(end) = &trace.end {
                *outcome.ended.entry(end.outcome.to_string()).or_default() += 1;
            } else {
                outcome.never_terminal += 1;
            }
        }
        kill_outcomes.push(outcome);
    }
    let unexplained = traces
        .iter()
        .enumerate()
        .flat_map(|(t, trace)| (1..trace.starts.len()).map(move |s| (t, s)))
        .filter(|pair| !explained.contains(pair))
        .count();
    (kill_outcomes, unexplained)
}

/// What became of the runs of the accepted cancels.
pub fn follow_cancels(
    traces: &[Trace],
    cancels: &[Cancel],
    kill_outcomes: &[KillOutcome],
) -> Vec<CancelOutcome> {
    let by_run: HashMap<&str, usize> = traces
        .iter()
        .enumerate()
        .filter_map(|(t, trace)| Some((trace.run_id.as_deref()?, t)))
        .collect();
    cancels
        .iter()
        .filter(|c| c.status == Ok(202))
        .filter_map(|cancel| {
            let t = *by_run.get(cancel.run_id.as_str())?;
            let end = traces[t].end.as_ref();
            // Held by a killed worker (before the cancel, or after it but
            // before the run stopped) and not started again by the time of
            // the cancel; or started again after the cancel, so that its
            // worker was lost meanwhile, whether or not a kill explains it.
            let held = kill_outcomes.iter().any(|outcome| {
                outcome.held.iter().any(|(held, restart)| {
                    *held == t && restart.is_none_or(|at| at > cancel.sent_at)
                })
            });
            let restarted = traces[t]
                .starts
                .iter()
                .any(|(_, started)| *started > cancel.sent_at);
            Some(CancelOutcome {
                tag: traces[t].tag.clone(),
                end: end.map(|e| e.outcome.clone()),
                after_ms: end.map(|e| e.at.duration_since(cancel.sent_at).as_secs_f64() * 1e3),
                orphaned: held || restarted,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    use serde_json::json;
    use switchyard_bench::stack::Killed;

    use super::{AgainstStore, Request, attribute_kills};
    use crate::client::{End, Outcome, Received, Trace};
    use crate::faults::Kill;

    fn at(t0: Instant, secs: f64) -> Instant {
        t0 + Duration::from_secs_f64(secs)
    }

    fn trace(tag: &str, starts: &[(i64, Instant)], end: Option<Instant>) -> Trace {
        let mut trace = Trace::new(tag.to_owned());
        trace.accepted = true;
        trace.starts = starts.to_vec();
        trace.end = end.map(|at| End {
            at,
            outcome: Outcome::Completed,
        });
        trace
    }

    fn request(tag: &str, worker: &str, at: Instant) -> Request {
        Request {
            tag: tag.to_owned(),
            worker: worker.to_owned(),
            at,
        }
    }

    #[test]
    fn runs_are_attributed_to_the_kill_of_their_last_worker() {
        let t0 = Instant::now();
        let traces = vec![
            // Held, taken back 6 s after the kill.
            trace(
                "a",
                &[(1, at(t0, 1.0)), (2, at(t0, 16.0))],
                Some(at(t0, 20.0)),
            ),
            // Held; its own run.started arrives late, after the kill: the
            // restart is attempt 2's.
            trace(
                "b",
                &[(1, at(t0, 10.5)), (2, at(t0, 17.0))],
                Some(at(t0, 21.0)),
            ),
            // On another worker.
            trace("c", &[(1, at(t0, 2.0))], Some(at(t0, 12.0))),
            // Ended before the kill.
            trace("d", &[(1, at(t0, 1.0))], Some(at(t0, 9.0))),
            // Taken by the killed worker, which died before calling the
            // LLM: its restart is not attributed.
            trace(
                "e",
                &[(1, at(t0, 9.9)), (2, at(t0, 16.0))],
                Some(at(t0, 19.0)),
            ),
            // Held; taken back by a worker that died before announcing
            // attempt 2.
            trace(
                "f",
                &[(1, at(t0, 8.0)), (3, at(t0, 22.0))],
                Some(at(t0, 25.0)),
            ),
        ];
        let requests = vec![
            request("a", "worker-1", at(t0, 1.1)),
            request("a", "worker-2", at(t0, 16.1)),
            request("b", "worker-1", at(t0, 9.0)),
            request("b", "worker-2", at(t0, 17.1)),
            request("c", "worker-2", at(t0, 2.1)),
            request("d", "worker-1", at(t0, 1.1)),
            request("e", "worker-2", at(t0, 16.1)),
            request("f", "worker-1", at(t0, 8.1)),
            request("f", "worker-2", at(t0, 22.1)),
        ];
        let kills = vec![Kill {
            slot: 0,
            killed: Killed {
                name: "worker-1".to_owned(),
                pid: 1,
                at: at(t0, 10.0),
            },
            replacement: "worker-3".to_owned(),
        }];
        let (outcomes, unexplained) = attribute_kills(&traces, &kills, &requests);
        let held: Vec<usize> = outcomes[0].held.iter().map(|(t, _)| *t).collect();
        assert_eq!(held, [0, 1, 5]);
        let restarted: Vec<i64> = outcomes[0]
            .restarted
            .iter()
            .map(|r| (r.after * 10.0).round() as i64)
            .collect();
        assert_eq!(restarted, [60, 70, 120]);
        let twice: Vec<bool> = outcomes[0].restarted.iter().map(|r| r.twice).collect();
        assert_eq!(twice, [false, false, true]);
        assert_eq!(unexplained, 1);
    }

    #[test]
    fn an_id_given_to_two_events_is_found() {
        let mut trace = trace("a", &[], None);
        trace.run_id = Some("r".to_owned());
        trace.last_id = 2;
        let delta = json!({"delta": "x", "message_id": "m"});
        trace.received = vec![
            Received {
                id: 1,
                kind: "run.queued".to_owned(),
                data: json!({}),
            },
            Received {
                id: 2,
                kind: "message.delta".to_owned(),
                data: delta.clone(),
            },
        ];
        let stored = |second: (&str, serde_json::Value)| {
            HashMap::from([(
                "r".to_owned(),
                vec![
                    (1, "run.queued".to_owned(), json!({})),
                    (2, second.0.to_owned(), second.1),
                ],
            )])
        };
        let same = AgainstStore::check(
            std::slice::from_ref(&trace),
            &stored(("message.delta", delta)),
        );
        assert!(same.clean(), "{same:?}");
        let reused = AgainstStore::check(
            std::slice::from_ref(&trace),
            &stored(("run.cancelled", json!({"reason": "cancelled"}))),
        );
        assert_eq!(
            (reused.differ, reused.unstored, reused.unreceived),
            (1, 0, 0)
        );
    }
}
