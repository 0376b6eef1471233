//! The clients: each repeatedly creates a thread, starts a streamed run on
//! it and reads the event stream to its end, timing what it sees.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;
use serde_json::{Value, json};
use switchyard_fake_llm::FakeLlm;

use crate::stack::AGENT_ID;

/// The text the fake streams for `tokens` tokens.
pub fn expected_text(tokens: usize) -> String {
    switchyard_fake_llm::stream_text(tokens)
}

/// A new thread with the benchmark's agent; returns its id.
pub async fn create_thread(http: &reqwest::Client, base_url: &str) -> anyhow::Result<String> {
    let response = http
        .post(format!("{base_url}/v1/threads"))
        .json(&json!({"agent_id": AGENT_ID}))
        .send()
        .await
        .context("POST /v1/threads")?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        bail!("POST /v1/threads: {status}: {body}");
    }
    let thread: Value = response.json().await.context("POST /v1/threads body")?;
    Ok(thread["id"]
        .as_str()
        .context("POST /v1/threads: no id")?
        .to_owned())
}

/// What one client saw of one completed run.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// The run's user message: unique, the key of the fake's records.
    pub tag: String,
    pub post_sent: Instant,
    pub started_at: Option<Instant>,
    pub first_delta_at: Option<Instant>,
    pub last_delta_at: Option<Instant>,
    pub completed_at: Instant,
    /// When the fake handed the run's first token to its connection.
    pub fake_first_token: Option<Instant>,
    /// When a sampled observer saw the first `message.delta` entry in the
    /// run's Redis stream (see [`Observer`]).
    pub redis_first_delta: Option<Instant>,
    /// `message.delta` events received.
    pub deltas: usize,
    /// Bytes of delta text received.
    pub delta_bytes: usize,
    /// The concatenated deltas equal the fake's text, and `message.completed`.
    pub text_ok: bool,
}

/// The outcome of one phase.
#[derive(Debug, Default)]
pub struct PhaseResult {
    pub records: Vec<RunRecord>,
    pub errors: Vec<String>,
    /// Runs not even started because the phase was stopped.
    pub skipped: usize,
    pub wall: Duration,
    pub stopped_early: Option<String>,
}

/// Watches a sample of runs' Redis streams, to split the added TTFT into
/// the worker's part (fake → Redis) and the API's part (Redis → client).
pub struct Observer {
    pub client: redis::Client,
    pub prefix: String,
    /// Observe runs whose index is a multiple of this.
    pub every: usize,
}

impl Observer {
    /// When the first `message.delta` entry appeared in the run's stream,
    /// as seen by a blocking read of our own. Bounded by `timeout`.
    async fn first_delta(
        client: redis::Client,
        key: String,
        timeout: Duration,
    ) -> anyhow::Result<Instant> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(None);
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let deadline = Instant::now() + timeout;
        let mut position = "0-0".to_owned();
        while Instant::now() < deadline {
            let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREAD")
                .arg("BLOCK")
                .arg(1000)
                .arg("STREAMS")
                .arg(&key)
                .arg(&position)
                .query_async(&mut conn)
                .await?;
            let now = Instant::now();
            for stream in reply.map(|r| r.keys).unwrap_or_default() {
                for entry in stream.ids {
                    if entry.get::<String>("k").as_deref() == Some("message.delta") {
                        return Ok(now);
                    }
                    position = entry.id;
                }
            }
        }
        bail!("no message.delta in {key}")
    }
}

/// Stops an observer when its run ends early.
struct AbortOnDrop(Option<tokio::task::JoinHandle<anyhow::Result<Instant>>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// Everything the clients share.
pub struct Load {
    pub http: reqwest::Client,
    pub base_url: String,
    pub fake: Arc<FakeLlm>,
    pub expected: Arc<str>,
    pub run_timeout: Duration,
    pub observer: Option<Observer>,
}

impl Load {
    pub fn new(
        base_url: &str,
        fake: Arc<FakeLlm>,
        tokens: usize,
        concurrency: usize,
        run_timeout: Duration,
        observer: Option<Observer>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(concurrency * 2 + 8)
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base_url: base_url.to_owned(),
            fake,
            expected: expected_text(tokens).into(),
            run_timeout,
            observer,
        })
    }

    /// Run `count` runs over `concurrency` clients. Stops early once the
    /// phase deadline passes or errors pile up; never waits longer than
    /// `phase_timeout` plus one run timeout.
    pub async fn phase(
        self: &Arc<Self>,
        label: &str,
        count: usize,
        concurrency: usize,
        phase_timeout: Duration,
    ) -> PhaseResult {
        let next = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new(PhaseResult::default()));
        let error_budget = (count / 10).max(20);
        let started = Instant::now();
        let mut clients = tokio::task::JoinSet::new();
        for _ in 0..concurrency.min(count.max(1)) {
            let (load, next, stop, shared) = (
                Arc::clone(self),
                Arc::clone(&next),
                Arc::clone(&stop),
                Arc::clone(&shared),
            );
            let label = label.to_owned();
            clients.spawn(async move {
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let tag = format!("{label}-{i}");
                    let observe = load.observer.as_ref().is_some_and(|o| i % o.every == 0);
                    let outcome =
                        tokio::time::timeout(load.run_timeout, load.one_run(&tag, observe))
                            .await
                            .unwrap_or_else(|_| {
                                Err(anyhow!("no terminal event within {:?}", load.run_timeout))
                            });
                    let mut result = shared.lock().unwrap_or_else(|e| e.into_inner());
                    match outcome {
                        Ok(record) => result.records.push(record),
                        Err(error) => {
                            result.errors.push(format!("{tag}: {error:#}"));
                            if result.errors.len() > error_budget {
                                result.stopped_early.get_or_insert_with(|| {
                                    format!("more than {error_budget} errors")
                                });
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                }
            });
        }
        let mut deadline = tokio::time::Instant::now() + phase_timeout;
        let mut timed_out = false;
        loop {
            match tokio::time::timeout_at(deadline, clients.join_next()).await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) if !timed_out => {
                    // Let the runs in flight finish: each is bounded by the run timeout.
                    timed_out = true;
                    stop.store(true, Ordering::Relaxed);
                    shared
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .stopped_early
                        .get_or_insert_with(|| format!("phase timeout of {phase_timeout:?}"));
                    deadline =
                        tokio::time::Instant::now() + self.run_timeout + Duration::from_secs(1);
                }
                Err(_) => {
                    clients.abort_all();
                    break;
                }
            }
        }
        let wall = started.elapsed();
        let mut result = std::mem::take(&mut *shared.lock().unwrap_or_else(|e| e.into_inner()));
        let attempted = result.records.len() + result.errors.len();
        result.skipped = count.saturating_sub(attempted);
        result.wall = wall;
        result
    }

    /// One thread, one streamed run, read to its terminal event.
    async fn one_run(&self, tag: &str, observe: bool) -> anyhow::Result<RunRecord> {
        let thread_id = create_thread(&self.http, &self.base_url).await?;

        let post_sent = Instant::now();
        let response = self
            .http
            .post(format!("{}/v1/threads/{thread_id}/runs", self.base_url))
            .json(&json!({"input": {"content": tag}, "stream": true}))
            .send()
            .await
            .context("POST /v1/threads/{id}/runs")?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("POST /v1/threads/{{id}}/runs: {status}: {body}");
        }

        let mut events = response.bytes_stream().eventsource();
        let mut started_at = None;
        let mut first_delta_at = None;
        let mut last_delta_at = None;
        let mut deltas = 0;
        let mut text = String::with_capacity(self.expected.len());
        let mut completed_content: Option<String> = None;
        // For the error message of a stream that ends early.
        let mut seen: Vec<String> = Vec::new();
        let mut observed = AbortOnDrop(None);
        while let Some(event) = events.next().await {
            let event = event.context("reading the event stream")?;
            let now = Instant::now();
            seen.push(format!("{}:{}", event.id, event.event));
            match event.event.as_str() {
                "run.queued" => {
                    let data: Value =
                        serde_json::from_str(&event.data).context("run.queued data")?;
                    if let (true, Some(observer), Some(run_id)) =
                        (observe, &self.observer, data["run_id"].as_str())
                    {
                        // The key of common's `Keys::run_events`.
                        let key = format!("{}:run:{run_id}:events", observer.prefix);
                        observed.0 = Some(tokio::spawn(Observer::first_delta(
                            observer.client.clone(),
                            key,
                            self.run_timeout,
                        )));
                    }
                }
                "run.started" => {
                    started_at.get_or_insert(now);
                }
                "message.delta" => {
                    first_delta_at.get_or_insert(now);
                    last_delta_at = Some(now);
                    deltas += 1;
                    let data: Value =
                        serde_json::from_str(&event.data).context("message.delta data")?;
                    text.push_str(data["delta"].as_str().unwrap_or_default());
                }
                "message.completed" => {
                    let data: Value =
                        serde_json::from_str(&event.data).context("message.completed data")?;
                    completed_content = data["content"].as_str().map(str::to_owned);
                }
                "run.completed" => {
                    let text_ok = *text == *self.expected
                        && completed_content.as_deref() == Some(&*self.expected);
                    let redis_first_delta = match observed.0.take() {
                        Some(task) => tokio::time::timeout(Duration::from_secs(1), task)
                            .await
                            .ok()
                            .and_then(|joined| joined.ok())
                            .and_then(|found| found.ok()),
                        None => None,
                    };
                    return Ok(RunRecord {
                        tag: tag.to_owned(),
                        post_sent,
                        started_at,
                        first_delta_at,
                        last_delta_at,
                        completed_at: now,
                        fake_first_token: self.fake.first_token_at(tag),
                        redis_first_delta,
                        deltas,
                        delta_bytes: text.len(),
                        text_ok,
                    });
                }
                "run.failed" | "run.cancelled" => {
                    bail!("{}: {}", event.event, event.data);
                }
                _ => {}
            }
        }
        bail!(
            "the event stream ended before a terminal event (received {})",
            seen.join(" ")
        )
    }
}
