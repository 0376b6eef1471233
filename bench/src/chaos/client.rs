//! The chaos program's clients. Each slot keeps one run in flight, over and
//! over: a new thread, a streamed run on it, its events read to the
//! terminal one. A stream that breaks is opened again with `Last-Event-ID`
//! set to the last event received, for as long as it takes; every Nth run's
//! stream is also broken on purpose once, mid-run, so that resuming is
//! exercised while workers die.
//!
//! Everything a client sees goes into its run's [`Trace`], checked
//! afterwards by the report: event ids, attempts, the text of the last
//! attempt's message, the terminal event.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;
use rand::Rng as _;
use serde_json::{Value, json};
use switchyard_bench::load;
use tokio::sync::watch;

/// How a run ended, as its terminal event said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Failed { code: String },
    Cancelled,
}

/// The terminal event and when it arrived.
#[derive(Debug, Clone)]
pub struct End {
    pub at: Instant,
    pub outcome: Outcome,
}

/// What one client saw of one run.
#[derive(Debug)]
pub struct Trace {
    /// The run's user message: unique, the key of the fake's records.
    pub tag: String,
    /// The POST of the run answered 200 (its event stream).
    pub accepted: bool,
    /// From `run.queued`.
    pub run_id: Option<String>,
    /// Every `run.started`: its attempt and when it arrived.
    pub starts: Vec<(i64, Instant)>,
    pub end: Option<End>,
    /// Events whose id skipped ahead of the last one plus one: missed events.
    pub gaps: usize,
    /// Events whose id was not above the last one: delivered twice.
    pub duplicates: usize,
    /// Events without a numeric id.
    pub malformed: usize,
    /// For a completed run: what was wrong with the text of its last
    /// attempt's message, if anything.
    pub text_error: Option<String>,
    /// Message ids that carried deltas.
    pub messages: usize,
    /// Streams opened again with `Last-Event-ID`.
    pub resumes: usize,
    /// Why each stream broke (other than on purpose), and why each failed
    /// attempt to open it again failed.
    pub breaks: Vec<String>,
    /// The id of the last event received.
    pub last_id: i64,
    /// Every event received, without duplicates: to compare with the
    /// stored events at the end.
    pub received: Vec<Received>,
    /// Whether one of those breaks was on purpose.
    pub dropped_on_purpose: bool,
    /// Why the client stopped without a terminal event.
    pub error: Option<String>,
}

impl Trace {
    pub fn new(tag: String) -> Self {
        Self {
            tag,
            accepted: false,
            run_id: None,
            starts: Vec::new(),
            end: None,
            gaps: 0,
            duplicates: 0,
            malformed: 0,
            text_error: None,
            messages: 0,
            resumes: 0,
            breaks: Vec::new(),
            last_id: 0,
            received: Vec::new(),
            dropped_on_purpose: false,
            error: None,
        }
    }
}

/// One event as a client received it.
#[derive(Debug)]
pub struct Received {
    pub id: i64,
    pub kind: String,
    pub data: Value,
}

/// A `POST /v1/runs/{id}/cancel` and its answer.
#[derive(Debug, Clone)]
pub struct Cancel {
    pub run_id: String,
    pub sent_at: Instant,
    /// The HTTP status, or why there was none.
    pub status: Result<u16, String>,
}

/// Longest wait for the response head of a POST.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause before opening a broken stream again, doubled per failure up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Everything the clients share.
pub struct Clients {
    http: reqwest::Client,
    base_url: String,
    /// The fake's text for one run.
    expected: String,
    /// Tags are `{label}-{n}`.
    label: String,
    /// Every this many runs, a client breaks its stream once on purpose; 0: never.
    drop_every: usize,
    next: AtomicUsize,
    /// Runs under way, by run id: whether `run.started` has arrived.
    live: Mutex<HashMap<String, bool>>,
    /// Cleared to stop starting runs.
    accepting: AtomicBool,
    /// Set to give up on every run still under way.
    give_up: watch::Sender<bool>,
    traces: Mutex<Vec<Trace>>,
}

/// The lock, even if a client panicked while holding it: the data is
/// append-only records, still meaningful.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Clients {
    pub fn new(
        base_url: &str,
        label: &str,
        tokens: usize,
        slots: usize,
        drop_every: usize,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(slots * 2 + 8)
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base_url: base_url.to_owned(),
            expected: load::expected_text(tokens),
            label: label.to_owned(),
            drop_every,
            next: AtomicUsize::new(0),
            live: Mutex::new(HashMap::new()),
            accepting: AtomicBool::new(true),
            give_up: watch::Sender::new(false),
            traces: Mutex::new(Vec::new()),
        })
    }

    /// One client: runs one after another until [`Clients::stop_accepting`].
    pub async fn slot(self: Arc<Self>) {
        while self.accepting.load(Ordering::Relaxed) {
            let trace = self.next_run().await;
            lock(&self.traces).push(trace);
        }
    }

    /// Start no more runs.
    pub fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::Relaxed);
    }

    /// Stop waiting for the runs under way: their traces end unfinished.
    pub fn give_up(&self) {
        self.give_up.send_replace(true);
    }

    /// The traces of the runs finished (or given up) so far.
    pub fn take_traces(&self) -> Vec<Trace> {
        std::mem::take(&mut *lock(&self.traces))
    }

    /// Runs that have started and not ended.
    pub fn started(&self) -> usize {
        lock(&self.live)
            .values()
            .filter(|started| **started)
            .count()
    }

    /// The next run, to its end or until [`Clients::give_up`].
    pub async fn next_run(&self) -> Trace {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut trace = Trace::new(format!("{}-{n}", self.label));
        let drop_after = (self.drop_every > 0 && n.is_multiple_of(self.drop_every))
            // After a few events (run.queued, run.started, some deltas).
            .then(|| rand::rng().random_range(3..=20));
        let mut give_up = self.give_up.subscribe();
        let gave_up = tokio::select! {
            () = self.run(&mut trace, drop_after) => false,
            _ = give_up.wait_for(|given_up| *given_up) => true,
        };
        if gave_up && trace.end.is_none() {
            trace.error = Some("no terminal event by the deadline".to_owned());
        }
        if let Some(run_id) = &trace.run_id {
            lock(&self.live).remove(run_id);
        }
        trace
    }

    async fn run(&self, trace: &mut Trace, drop_after: Option<usize>) {
        let response = match self.start(&trace.tag).await {
            Ok(response) => response,
            Err(error) => {
                trace.error = Some(format!("{error:#}"));
                return;
            }
        };
        trace.accepted = true;
        let mut follow = Follow {
            clients: self,
            trace,
            deltas: HashMap::new(),
            attempt_message: None,
            completed: None,
        };
        follow.run(response, drop_after).await;
    }

    /// A thread and a streamed run on it: the response is the event stream.
    async fn start(&self, tag: &str) -> anyhow::Result<reqwest::Response> {
        let thread_id = tokio::time::timeout(
            REQUEST_TIMEOUT,
            load::create_thread(&self.http, &self.base_url),
        )
        .await
        .context("POST /v1/threads timed out")??;
        let response = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.http
                .post(format!("{}/v1/threads/{thread_id}/runs", self.base_url))
                .json(&json!({"input": {"content": tag}, "stream": true}))
                .send(),
        )
        .await
        .context("POST /v1/threads/{id}/runs timed out")?
        .context("POST /v1/threads/{id}/runs")?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("POST /v1/threads/{{id}}/runs: {status}: {body}");
        }
        Ok(response)
    }

    /// `GET /v1/runs/{id}/events` after `last_id`.
    async fn resume(&self, run_id: &str, last_id: i64) -> anyhow::Result<reqwest::Response> {
        let response = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.http
                .get(format!("{}/v1/runs/{run_id}/events", self.base_url))
                .header("last-event-id", last_id.to_string())
                .send(),
        )
        .await
        .context("GET /v1/runs/{id}/events timed out")?
        .context("GET /v1/runs/{id}/events")?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("GET /v1/runs/{{id}}/events: {status}: {body}");
        }
        Ok(response)
    }

    /// Cancel a random run that has started and not ended; `None` if
    /// there is none.
    pub async fn cancel_random(&self) -> Option<Cancel> {
        let run_id = {
            let live = lock(&self.live);
            let started: Vec<&String> = live
                .iter()
                .filter_map(|(id, started)| started.then_some(id))
                .collect();
            if started.is_empty() {
                return None;
            }
            started[rand::rng().random_range(0..started.len())].clone()
        };
        let sent_at = Instant::now();
        let status = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.http
                .post(format!("{}/v1/runs/{run_id}/cancel", self.base_url))
                .send(),
        )
        .await
        .map_err(|_| "timed out".to_owned())
        .and_then(|sent| sent.map_err(|e| e.to_string()))
        .map(|response| response.status().as_u16());
        Some(Cancel {
            run_id,
            sent_at,
            status,
        })
    }
}

/// Why a stream stopped.
enum Read {
    /// The terminal event arrived.
    Ended,
    /// Closed or failed before the terminal event; open it again.
    Broken(String),
    /// Broken on purpose after the chosen number of events.
    Dropped,
}

/// One run's stream, across reconnections.
struct Follow<'a> {
    clients: &'a Clients,
    trace: &'a mut Trace,
    /// Delta text by message id, in arrival order.
    deltas: HashMap<String, String>,
    /// The message id of the latest attempt's first delta.
    attempt_message: Option<String>,
    /// The last `message.completed`: message id, content.
    completed: Option<(String, String)>,
}

impl Follow<'_> {
    async fn run(&mut self, first: reqwest::Response, mut drop_after: Option<usize>) {
        let mut response = first;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let before = self.trace.last_id;
            match self.read(response, drop_after.take()).await {
                Read::Ended => return,
                Read::Dropped => self.trace.dropped_on_purpose = true,
                Read::Broken(why) => {
                    self.trace.breaks.push(why);
                    // Back off, unless the connection made progress.
                    if self.trace.last_id == before {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    } else {
                        backoff = FIRST_BACKOFF;
                    }
                }
            }
            let Some(run_id) = self.trace.run_id.clone() else {
                self.trace.error =
                    Some("the stream broke before run.queued: no run id to resume".to_owned());
                return;
            };
            response = loop {
                match self.clients.resume(&run_id, self.trace.last_id).await {
                    Ok(response) => break response,
                    Err(error) => {
                        self.trace.breaks.push(format!("{error:#}"));
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            };
            self.trace.resumes += 1;
        }
    }

    /// Read one connection's events until the terminal one, a break, or
    /// `drop_after` events.
    async fn read(&mut self, response: reqwest::Response, drop_after: Option<usize>) -> Read {
        let mut events = response.bytes_stream().eventsource();
        let mut received = 0;
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(error) => return Read::Broken(format!("reading the event stream: {error}")),
            };
            let Ok(id) = event.id.trim().parse::<i64>() else {
                self.trace.malformed += 1;
                continue;
            };
            if id <= self.trace.last_id {
                self.trace.duplicates += 1;
                continue;
            }
            if id > self.trace.last_id + 1 {
                self.trace.gaps += 1;
            }
            self.trace.last_id = id;
            let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
            let ended = self.handle(&event.event, &data);
            self.trace.received.push(Received {
                id,
                kind: event.event,
                data,
            });
            if ended {
                return Read::Ended;
            }
            received += 1;
            if drop_after == Some(received) {
                return Read::Dropped;
            }
        }
        Read::Broken("the event stream ended before a terminal event".to_owned())
    }

    /// Take in one event; returns whether it was the terminal one.
    fn handle(&mut self, kind: &str, data: &Value) -> bool {
        let text = |field: &str| data[field].as_str().unwrap_or_default().to_owned();
        let now = Instant::now();
        match kind {
            "run.queued" => {
                let run_id = text("run_id");
                lock(&self.clients.live).insert(run_id.clone(), false);
                self.trace.run_id = Some(run_id);
            }
            "run.started" => {
                self.trace
                    .starts
                    .push((data["attempt"].as_i64().unwrap_or(0), now));
                self.attempt_message = None;
                if let Some(run_id) = &self.trace.run_id {
                    lock(&self.clients.live).insert(run_id.clone(), true);
                }
            }
            "message.delta" => {
                let message_id = text("message_id");
                self.attempt_message
                    .get_or_insert_with(|| message_id.clone());
                let delta = data["delta"].as_str().unwrap_or_default();
                self.deltas.entry(message_id).or_default().push_str(delta);
            }
            "message.completed" => self.completed = Some((text("message_id"), text("content"))),
            "run.completed" => {
                self.trace.text_error = self.text_error(&text("message_id"));
                self.end(now, Outcome::Completed);
                return true;
            }
            "run.failed" => {
                let code = data["error"]["code"].as_str().unwrap_or("?").to_owned();
                self.end(now, Outcome::Failed { code });
                return true;
            }
            "run.cancelled" => {
                self.end(now, Outcome::Cancelled);
                return true;
            }
            _ => {}
        }
        false
    }

    fn end(&mut self, at: Instant, outcome: Outcome) {
        self.trace.end = Some(End { at, outcome });
        self.trace.messages = self.deltas.len();
    }

    /// For a completed run: the last attempt's deltas, concatenated, must
    /// equal `message.completed`'s content, which must be the fake's text.
    fn text_error(&self, final_message: &str) -> Option<String> {
        let Some((completed_id, content)) = &self.completed else {
            return Some("no message.completed".to_owned());
        };
        if completed_id != final_message {
            return Some(format!(
                "message.completed is for {completed_id}, run.completed names {final_message}"
            ));
        }
        if self.attempt_message.as_deref() != Some(completed_id) {
            return Some(format!(
                "the last attempt's deltas are for {:?}, message.completed for {completed_id}",
                self.attempt_message
            ));
        }
        let streamed = self.deltas.get(completed_id).map_or("", String::as_str);
        if streamed != content {
            return Some(format!(
                "deltas of {completed_id}: {} bytes, message.completed: {} bytes",
                streamed.len(),
                content.len()
            ));
        }
        if *content != self.clients.expected {
            return Some(format!(
                "message.completed: {} bytes, the fake streamed {}",
                content.len(),
                self.clients.expected.len()
            ));
        }
        None
    }
}
