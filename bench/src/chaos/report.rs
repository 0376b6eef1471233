//! What the chaos run showed: every run's end, the event ids and texts the
//! clients received, how long the runs of each killed worker took to start
//! again elsewhere, how long cancels took, and the database's view.
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
use sqlx::{Connection as _, PgConnection};
use switchyard_bench::stats::{self, Summary};

use crate::client::{Cancel, Outcome, Trace};
use crate::faults::Kill;

/// Run recovery after a kill: p99 of kill → `run.started` again, seconds.
const TARGET_RECOVERY_P99_S: f64 = 10.0;
/// Cancel latency: p99 of the POST → `run.cancelled` received, milliseconds.
const TARGET_CANCEL_P99_MS: f64 = 1000.0;

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
        conn.close().await?;
        Ok(Self {
            by_status,
            attempts,
        })
    }

    /// Runs still `queued` or `in_progress`.
    fn active(&self) -> i64 {
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

/// What became of the runs a killed worker held.
struct KillOutcome {
    /// Runs on the worker when it was killed.
    held: usize,
    /// Seconds from the kill to their next `run.started`.
    restarted: Vec<f64>,
    /// Runs that ended with no new `run.started`, by how they ended (e.g.
    /// they had just finished, or were out of attempts).
    ended: BTreeMap<String, usize>,
    never_terminal: usize,
}

/// Everything the run produced, and its analysis.
pub struct Report {
    traces: Vec<Trace>,
    kills: Vec<Kill>,
    cancels: Vec<Cancel>,
    db: Database,
    origin: Instant,
    kill_outcomes: Vec<KillOutcome>,
    /// Restarts (a `run.started` after the first) that no kill explains.
    unexplained_restarts: usize,
}

impl Report {
    pub fn new(
        traces: Vec<Trace>,
        kills: Vec<Kill>,
        cancels: Vec<Cancel>,
        requests: Vec<Request>,
        db: Database,
        origin: Instant,
    ) -> Self {
        let mut by_tag: HashMap<&str, Vec<(Instant, &str)>> = HashMap::new();
        for request in &requests {
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
        for kill in &kills {
            let at = kill.killed.at;
            let mut outcome = KillOutcome {
                held: 0,
                restarted: Vec::new(),
                ended: BTreeMap::new(),
                never_terminal: 0,
            };
            for (t, trace) in traces.iter().enumerate() {
                let on_killed = by_tag.get(trace.tag.as_str()).is_some_and(|list| {
                    list.iter()
                        .rev()
                        .find(|(sent, _)| *sent <= at)
                        .is_some_and(|(_, worker)| *worker == kill.killed.name)
                });
                if !on_killed || trace.end.as_ref().is_some_and(|end| end.at <= at) {
                    continue;
                }
                outcome.held += 1;
                if let Some((s, (_, started))) = trace
                    .starts
                    .iter()
                    .enumerate()
                    .find(|(_, (_, started))| *started > at)
                {
                    outcome
                        .restarted
                        .push(started.duration_since(at).as_secs_f64());
                    explained.insert((t, s));
                } else if let Some(end) = &trace.end {
                    *outcome.ended.entry(end.outcome.to_string()).or_default() += 1;
                } else {
                    outcome.never_terminal += 1;
                }
            }
            kill_outcomes.push(outcome);
        }
        let unexplained_restarts = traces
            .iter()
            .enumerate()
            .flat_map(|(t, trace)| (1..trace.starts.len()).map(move |s| (t, s)))
            .filter(|pair| !explained.contains(pair))
            .count();
        Self {
            traces,
            kills,
            cancels,
            db,
            origin,
            kill_outcomes,
            unexplained_restarts,
        }
    }

    fn accepted(&self) -> impl Iterator<Item = &Trace> {
        self.traces.iter().filter(|t| t.accepted)
    }

    /// Accepted runs whose client never received a terminal event.
    fn never_terminal(&self) -> usize {
        self.accepted().filter(|t| t.end.is_none()).count()
    }

    fn id_violations(&self) -> (usize, usize, usize) {
        self.accepted().fold((0, 0, 0), |(g, d, m), t| {
            (g + t.gaps, d + t.duplicates, m + t.malformed)
        })
    }

    fn text_mismatches(&self) -> usize {
        self.accepted().filter(|t| t.text_error.is_some()).count()
    }

    fn recovery(&self) -> Vec<f64> {
        self.kill_outcomes
            .iter()
            .flat_map(|k| k.restarted.iter().copied())
            .collect()
    }

    /// Milliseconds from each accepted cancel to its `run.cancelled`.
    fn cancel_latency(&self) -> Vec<f64> {
        let ends: HashMap<&str, &Trace> = self
            .accepted()
            .filter_map(|t| Some((t.run_id.as_deref()?, t)))
            .collect();
        self.cancels
            .iter()
            .filter(|c| c.status == Ok(202))
            .filter_map(|c| {
                let end = ends.get(c.run_id.as_str())?.end.as_ref()?;
                (end.outcome == Outcome::Cancelled)
                    .then(|| end.at.duration_since(c.sent_at).as_secs_f64() * 1e3)
            })
            .collect()
    }

    /// A run lost (never terminal, or still active in the database) or an
    /// event missed or delivered twice: the guarantees under test.
    pub fn broken(&self) -> bool {
        let (gaps, duplicates, malformed) = self.id_violations();
        self.never_terminal() > 0 || self.db.active() > 0 || gaps + duplicates + malformed > 0
    }

    /// Each target: its line and whether it was met.
    pub fn verdicts(&self) -> Vec<(String, bool)> {
        let never = self.never_terminal();
        let active = self.db.active();
        let (gaps, duplicates, malformed) = self.id_violations();
        let mismatches = self.text_mismatches();
        let mut out = vec![
            (
                format!(
                    "{never} runs never terminal for their clients, {active} queued or in progress in PostgreSQL (target 0)"
                ),
                never == 0 && active == 0,
            ),
            (
                format!(
                    "event ids: {gaps} gaps, {duplicates} duplicates, {malformed} malformed (target 0)"
                ),
                gaps + duplicates + malformed == 0,
            ),
            (
                format!("{mismatches} text mismatches among completed runs (target 0)"),
                mismatches == 0,
            ),
        ];
        if !self.kills.is_empty() {
            let s = Summary::of(&self.recovery());
            out.push((
                match s {
                    Some(s) => format!(
                        "recovery (kill -> run.started again) p99 {:.2} s (target <= {TARGET_RECOVERY_P99_S} s)",
                        s.p99
                    ),
                    None => "recovery: no run started again after a kill".to_owned(),
                },
                s.is_some_and(|s| s.p99 <= TARGET_RECOVERY_P99_S),
            ));
        }
        if !self.cancels.is_empty() {
            let s = Summary::of(&self.cancel_latency());
            out.push((
                match s {
                    Some(s) => format!(
                        "cancel latency (POST -> run.cancelled) p99 {:.1} ms (target <= {TARGET_CANCEL_P99_MS} ms)",
                        s.p99
                    ),
                    None => "cancel latency: no cancel ended in run.cancelled".to_owned(),
                },
                s.is_some_and(|s| s.p99 <= TARGET_CANCEL_P99_MS),
            ));
        }
        out
    }

    pub fn print(&self) {
        self.print_runs();
        self.print_events();
        self.print_kills();
        self.print_cancels();
        println!("  targets:");
        for (text, ok) in self.verdicts() {
            println!("    {} {text}", if ok { "ok  " } else { "MISS" });
        }
    }

    fn print_runs(&self) {
        let posted = self.traces.len();
        let accepted = self.accepted().count();
        let mut by_outcome: BTreeMap<String, usize> = BTreeMap::new();
        for trace in self.accepted() {
            let key = trace
                .end
                .as_ref()
                .map_or_else(|| "never terminal".to_owned(), |e| e.outcome.to_string());
            *by_outcome.entry(key).or_default() += 1;
        }
        let outcomes: Vec<String> = by_outcome.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!(
            "  runs: {accepted} accepted of {posted} started; {}",
            outcomes.join(", ")
        );
        if let Some(refused) = self.traces.iter().find(|t| !t.accepted) {
            println!(
                "    {} not accepted, e.g. {}: {}",
                posted - accepted,
                refused.tag,
                refused.error.as_deref().unwrap_or("?")
            );
        }
        for lost in self.accepted().filter(|t| t.end.is_none()).take(5) {
            println!(
                "    never terminal: {} (run {}, attempts seen {:?}): {}",
                lost.tag,
                lost.run_id.as_deref().unwrap_or("?"),
                lost.starts.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
                lost.error.as_deref().unwrap_or("?")
            );
        }
        let statuses: Vec<String> = self
            .db
            .by_status
            .iter()
            .map(|(status, code, n)| match code.as_str() {
                "" => format!("{status} {n}"),
                code => format!("{status} ({code}) {n}"),
            })
            .collect();
        let attempts: Vec<String> = self
            .db
            .attempts
            .iter()
            .map(|(attempt, n)| format!("{attempt}: {n}"))
            .collect();
        println!(
            "  PostgreSQL: {}; runs by attempt {}",
            statuses.join(", "),
            attempts.join(", ")
        );
    }

    fn print_events(&self) {
        let (gaps, duplicates, malformed) = self.id_violations();
        let resumes: usize = self.accepted().map(|t| t.resumes).sum();
        let on_purpose = self.accepted().filter(|t| t.dropped_on_purpose).count();
        println!(
            "  event ids: {gaps} gaps, {duplicates} duplicates, {malformed} malformed; {resumes} streams resumed with Last-Event-ID ({on_purpose} broken on purpose)"
        );
        let completed: Vec<&Trace> = self
            .accepted()
            .filter(|t| {
                t.end
                    .as_ref()
                    .is_some_and(|e| e.outcome == Outcome::Completed)
            })
            .collect();
        let retried: Vec<&&Trace> = completed.iter().filter(|t| t.starts.len() > 1).collect();
        let new_message = retried.iter().filter(|t| t.messages > 1).count();
        println!(
            "  text: {} mismatches among {} completed runs; {} completed after a restart, {new_message} of them with deltas under a new message id",
            self.text_mismatches(),
            completed.len(),
            retried.len()
        );
        if let Some(bad) = self.accepted().find(|t| t.text_error.is_some()) {
            println!(
                "    e.g. {}: {}",
                bad.tag,
                bad.text_error.as_deref().unwrap_or_default()
            );
        }
        let out_of_order = self
            .accepted()
            .filter(|t| t.starts.windows(2).any(|w| w[1].0 != w[0].0 + 1))
            .count();
        let restarts: usize = self
            .accepted()
            .map(|t| t.starts.len().saturating_sub(1))
            .sum();
        println!(
            "  restarts: {restarts} run.started after a run's first, {} of them not on a killed worker's run; {out_of_order} runs whose attempts did not go up by one",
            self.unexplained_restarts
        );
    }

    fn print_kills(&self) {
        if self.kills.is_empty() {
            return;
        }
        println!("  kills (runs held = latest LLM request from the killed worker, no end yet):");
        for (n, (kill, outcome)) in self.kills.iter().zip(&self.kill_outcomes).enumerate() {
            let restarted = Summary::of(&outcome.restarted).map_or_else(String::new, |s| {
                format!(" (p50 {:.2} s, max {:.2} s)", s.p50, s.max)
            });
            let ended: Vec<String> = outcome
                .ended
                .iter()
                .map(|(how, k)| format!("{how} {k}"))
                .collect();
            println!(
                "    {:>2} at {:>6.1} s, {} (slot {}, replaced by {}): {} runs held, {} started again{restarted}, ended without a restart: {}, never terminal {}",
                n + 1,
                kill.killed.at.duration_since(self.origin).as_secs_f64(),
                kill.killed.name,
                kill.slot,
                kill.replacement,
                outcome.held,
                outcome.restarted.len(),
                if ended.is_empty() {
                    "0".to_owned()
                } else {
                    ended.join(", ")
                },
                outcome.never_terminal,
            );
        }
        println!(
            "  recovery, s (kill -> run.started again):  {}",
            stats::line(&self.recovery())
        );
    }

    fn print_cancels(&self) {
        if self.cancels.is_empty() {
            return;
        }
        let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
        for cancel in &self.cancels {
            let key = match &cancel.status {
                Ok(code) => code.to_string(),
                Err(error) => format!("error ({error})"),
            };
            *statuses.entry(key).or_default() += 1;
        }
        let statuses: Vec<String> = statuses.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        let ends: HashMap<&str, &Trace> = self
            .accepted()
            .filter_map(|t| Some((t.run_id.as_deref()?, t)))
            .collect();
        let mut otherwise: BTreeMap<String, usize> = BTreeMap::new();
        for cancel in self.cancels.iter().filter(|c| c.status == Ok(202)) {
            let how = ends
                .get(cancel.run_id.as_str())
                .and_then(|t| t.end.as_ref())
                .map_or_else(|| "never terminal".to_owned(), |e| e.outcome.to_string());
            if how != "cancelled" {
                *otherwise.entry(how).or_default() += 1;
            }
        }
        let otherwise: Vec<String> = otherwise.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!(
            "  cancels: {} sent (status {}); accepted but not ended cancelled: {}",
            self.cancels.len(),
            statuses.join(", "),
            if otherwise.is_empty() {
                "0".to_owned()
            } else {
                otherwise.join(", ")
            }
        );
        println!(
            "  cancel latency, ms (POST -> run.cancelled): {}",
            stats::line(&self.cancel_latency())
        );
    }
}
