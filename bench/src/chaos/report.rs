//! What the chaos run showed: every run's end, the event ids and texts the
//! clients received, how long the runs of each killed worker took to start
//! again elsewhere, how long cancels took, and the database's view; each
//! target with `ok` or `MISS`. The analysis is in [`crate::analysis`].

use std::collections::BTreeMap;
use std::time::Instant;

use switchyard_bench::stats::{self, Summary};

use crate::analysis::{
    AgainstStore, CancelOutcome, Database, KillOutcome, Request, Restart, attribute_kills,
    follow_cancels,
};
use crate::client::{Cancel, Outcome, Trace};
use crate::faults::Kill;

/// Run recovery after a kill: p99 of kill → `run.started` again, seconds.
const TARGET_RECOVERY_P99_S: f64 = 10.0;
/// Cancel latency: p99 of the POST → `run.cancelled` received, milliseconds.
const TARGET_CANCEL_P99_MS: f64 = 1000.0;

/// Everything the run produced, and its analysis.
pub struct Report {
    traces: Vec<Trace>,
    kills: Vec<Kill>,
    cancels: Vec<Cancel>,
    db: Database,
    origin: Instant,
    kill_outcomes: Vec<KillOutcome>,
    cancel_outcomes: Vec<CancelOutcome>,
    against_store: AgainstStore,
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
        let (kill_outcomes, unexplained_restarts) = attribute_kills(&traces, &kills, &requests);
        let cancel_outcomes = follow_cancels(&traces, &cancels, &kill_outcomes);
        let against_store = AgainstStore::check(&traces, &db.events);
        Self {
            traces,
            kills,
            cancels,
            db,
            origin,
            kill_outcomes,
            cancel_outcomes,
            against_store,
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

    /// Seconds from each kill to its runs' next attempts, of the restarts
    /// that `pick` picks.
    fn recovery(&self, pick: impl Fn(&Restart) -> bool) -> Vec<f64> {
        self.kill_outcomes
            .iter()
            .flat_map(|k| &k.restarted)
            .filter(|r| pick(r))
            .map(|r| r.after)
            .collect()
    }

    /// Milliseconds from each accepted cancel to its `run.cancelled`: of
    /// runs on a live worker, and of runs whose worker was killed before
    /// they could stop (they stop once recovered).
    fn cancel_latency(&self) -> (Vec<f64>, Vec<f64>) {
        let mut live = Vec::new();
        let mut orphaned = Vec::new();
        for cancel in &self.cancel_outcomes {
            if let (Some(Outcome::Cancelled), Some(ms)) = (&cancel.end, cancel.after_ms) {
                if cancel.orphaned {
                    orphaned.push(ms);
                } else {
                    live.push(ms);
                }
            }
        }
        (live, orphaned)
    }

    /// A run lost (never terminal, or still active in the database), an
    /// event missed or delivered twice, or an event id that means
    /// different events to different readers: the guarantees under test.
    pub fn broken(&self) -> bool {
        let (gaps, duplicates, malformed) = self.id_violations();
        self.never_terminal() > 0
            || self.db.active() > 0
            || gaps + duplicates + malformed > 0
            || !self.against_store.clean()
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
                format!(
                    "events against PostgreSQL: {} differ from the stored event with their id, {} never stored, {} stored but never received (target 0)",
                    self.against_store.differ,
                    self.against_store.unstored,
                    self.against_store.unreceived
                ),
                self.against_store.clean(),
            ),
            (
                format!("{mismatches} text mismatches among completed runs (target 0)"),
                mismatches == 0,
            ),
        ];
        if !self.kills.is_empty() {
            let s = Summary::of(&self.recovery(|_| true));
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
            let s = Summary::of(&self.cancel_latency().0);
            out.push((
                match s {
                    Some(s) => format!(
                        "cancel latency (POST -> run.cancelled, run on a live worker) p99 {:.1} ms (target <= {TARGET_CANCEL_P99_MS} ms)",
                        s.p99
                    ),
                    None => "cancel latency: no cancel of a run on a live worker ended in run.cancelled".to_owned(),
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
                "    never terminal: {} (run {}, attempts seen {:?}, last event id {}, {} resumes, the last break: {}): {}",
                lost.tag,
                lost.run_id.as_deref().unwrap_or("?"),
                lost.starts.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
                lost.last_id,
                lost.resumes,
                lost.breaks.last().map_or("none", String::as_str),
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
        let mut breaks: BTreeMap<&str, usize> = BTreeMap::new();
        for why in self.accepted().flat_map(|t| &t.breaks) {
            *breaks.entry(why.as_str()).or_default() += 1;
        }
        if !breaks.is_empty() {
            let breaks: Vec<String> = breaks
                .iter()
                .map(|(why, n)| format!("{n} x {why}"))
                .collect();
            println!(
                "    streams that broke by themselves, and failed reopenings: {}",
                breaks.join("; ")
            );
        }
        let store = &self.against_store;
        let stored: usize = self.db.events.values().map(Vec::len).sum();
        println!(
            "  against PostgreSQL's {stored} stored events: {} received events differ from the stored event with their id, {} received were never stored, {} stored were never received",
            store.differ, store.unstored, store.unreceived
        );
        if let Some(example) = &store.example {
            println!("    e.g. {example}");
        }
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
            "  restarts: {restarts} run.started after a run's first, {} of them not attributed to a kill (the worker died before calling the LLM, or a lease expired on a live worker); {out_of_order} runs whose attempts did not go up by one (a worker died between taking the run and announcing it)",
            self.unexplained_restarts
        );
    }

    fn print_kills(&self) {
        if self.kills.is_empty() {
            return;
        }
        println!("  kills (runs held = latest LLM request from the killed worker, no end yet):");
        for (n, (kill, outcome)) in self.kills.iter().zip(&self.kill_outcomes).enumerate() {
            let after: Vec<f64> = outcome.restarted.iter().map(|r| r.after).collect();
            let restarted = Summary::of(&after).map_or_else(String::new, |s| {
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
                outcome.held.len(),
                outcome.restarted.len(),
                if ended.is_empty() {
                    "0".to_owned()
                } else {
                    ended.join(", ")
                },
                outcome.never_terminal,
            );
        }
        println!("  recovery, s (kill -> the next attempt's run.started):");
        for (name, samples) in [
            ("all", self.recovery(|_| true)),
            ("taken back at the first try", self.recovery(|r| !r.twice)),
            (
                "taken back by a worker that died too",
                self.recovery(|r| r.twice),
            ),
        ] {
            println!("    {name:<48} {}", stats::line(&samples));
        }
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
        let not_cancelled: Vec<&CancelOutcome> = self
            .cancel_outcomes
            .iter()
            .filter(|c| c.end != Some(Outcome::Cancelled))
            .collect();
        let mut otherwise: BTreeMap<String, usize> = BTreeMap::new();
        for cancel in &not_cancelled {
            let how = cancel
                .end
                .as_ref()
                .map_or_else(|| "never terminal".to_owned(), Outcome::to_string);
            *otherwise.entry(how).or_default() += 1;
        }
        let otherwise: Vec<String> = otherwise.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!(
            "  cancels: {} sent (status {}); accepted (202) but not ended cancelled: {}",
            self.cancels.len(),
            statuses.join(", "),
            if otherwise.is_empty() {
                "0".to_owned()
            } else {
                otherwise.join(", ")
            }
        );
        for cancel in not_cancelled.iter().take(3) {
            println!(
                "    {}: {} {} after the POST, {}",
                cancel.tag,
                cancel
                    .end
                    .as_ref()
                    .map_or_else(|| "never terminal".to_owned(), Outcome::to_string),
                cancel
                    .after_ms
                    .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0} ms")),
                if cancel.orphaned {
                    "its worker was killed"
                } else {
                    "on a live worker"
                }
            );
        }
        let (live, orphaned) = self.cancel_latency();
        println!("  cancel latency, ms (POST -> run.cancelled):");
        for (name, samples) in [
            ("run on a live worker", live),
            ("its worker killed first (stops when taken back)", orphaned),
        ] {
            println!("    {name:<48} {}", stats::line(&samples));
        }
    }
}
