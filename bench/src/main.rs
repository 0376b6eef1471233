//! `switchyard-bench`: Switchyard end to end, as deployed: `switchyard api`
//! and `switchyard worker` as separate processes on a fresh PostgreSQL
//! database and Redis key prefix, an OpenAI-compatible fake LLM in this
//! process, and concurrent clients that each create a thread, start a
//! streamed run (`"stream": true`) and read its events to the end.
//!
//! ```text
//! cargo build --release -p switchyard -p switchyard-bench
//! target/release/switchyard-bench --scenario all
//! ```
//!
//! Measured per run: added time to first token (the client's first
//! `message.delta` minus the instant the fake wrote its first token, both
//! clocks of this process), queue pickup (`run.started` received minus
//! the POST), throughput, relayed tokens, whether the concatenated deltas
//! equal the fake's text; per phase: peak RSS of both processes, CPU time
//! of every part, PostgreSQL write transactions and WAL, Redis commands.
//!
//! Each scenario gets its own fake, database, key prefix and processes, so
//! that scenarios do not see each other's data and peak RSS is per
//! scenario. See `bench/README.md`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "measurement tooling: a panic ends the measurement, and its tasks end with the program"
)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use clap::{Parser, ValueEnum};
use switchyard_fake_llm::{FakeLlm, Reply};

use switchyard_bench::load::{self, Load, Observer, PhaseResult, RunRecord};
use switchyard_bench::stack::{self, Stack, StackConfig, is_loopback};
use switchyard_bench::stats;
use switchyard_bench::sys::{self, CPU_PARTS, CpuSnapshot, PgSnapshot};

/// Set on Ctrl-C: the current scenario is torn down and no other starts.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Targets, checked by the presets.
const TARGET_TTFT_P50_MS: f64 = 5.0;
const TARGET_TTFT_P99_MS: f64 = 25.0;
const TARGET_RUNS_PER_SEC: f64 = 200.0;
const TARGET_TOKENS_PER_SEC: f64 = 50_000.0;

#[derive(Parser, Debug)]
#[command(
    name = "switchyard-bench",
    about = "Benchmark Switchyard end to end (api + worker processes, fake LLM, streaming clients)",
    after_help = "Presets (explicit flags override them, for every scenario of `all`):\n  \
        ttft        20 tokens, 5 ms apart, 100 clients, 2000 runs: added TTFT p50 <= 5 ms, p99 <= 25 ms\n  \
        throughput  20 tokens, no pacing, 100 clients, 3000 runs: >= 200 runs/s\n  \
        tokens      1000 tokens, no pacing, 50 clients, 500 runs: >= 50 000 relayed tokens/s\n  \
        all         the three above in turn, each on a fresh database and fresh processes\n  \
        custom      the flags alone (default)\n\n\
        Environment variables SWITCHYARD_* not set by the benchmark (e.g. SWITCHYARD_DB_POOL,\n\
        SWITCHYARD_DELTA_FLUSH_MS, RUST_LOG) are passed on to the api and worker processes."
)]
struct Args {
    /// Which preset to run.
    #[arg(long, value_enum, default_value_t = ScenarioArg::Custom)]
    scenario: ScenarioArg,
    /// Tokens the fake streams per run [default: 20].
    #[arg(long)]
    tokens: Option<usize>,
    /// Milliseconds between two tokens; 0 streams as fast as possible [default: 0].
    #[arg(long)]
    token_interval_ms: Option<u64>,
    /// Concurrent clients, each with one run at a time [default: 100].
    #[arg(long)]
    concurrency: Option<usize>,
    /// Measured runs in total [default: 2000].
    #[arg(long)]
    runs: Option<usize>,
    /// Unmeasured runs before the measured ones [default: 100].
    #[arg(long)]
    warmup: Option<usize>,
    /// SWITCHYARD_WORKER_CONCURRENCY of the worker; 0 leaves the server's
    /// default [default: the client concurrency, so that every client's run
    /// executes at once].
    #[arg(long)]
    worker_concurrency: Option<usize>,
    /// Watch every Kth run's Redis stream too, to split the added TTFT into
    /// the worker's and the API's parts; 0 disables.
    #[arg(long, default_value_t = 10)]
    observe_every: usize,
    /// Query string for the servers' DATABASE_URL, e.g. `sslmode=disable`
    /// (sqlx's default `prefer` uses TLS whenever the server offers it).
    #[arg(long)]
    pg_url_options: Option<String>,
    /// `name=value`: a PostgreSQL setting for the benchmark's database
    /// (`ALTER DATABASE … SET`), e.g. `synchronous_commit=off`; repeatable.
    #[arg(long = "pg-set", value_name = "NAME=VALUE")]
    pg_settings: Vec<String>,
    /// The `switchyard` binary (a release build).
    #[arg(long, default_value = "target/release/switchyard")]
    bin: PathBuf,
    /// PostgreSQL server URL without a database; a database
    /// `switchyard_bench_<id>` is created on it and dropped afterwards.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres: String,
    /// Redis URL; keys go under a fresh prefix `sybench-<id>:`, deleted afterwards.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Longest wait for one run's terminal event.
    #[arg(long, default_value_t = 60)]
    run_timeout_secs: u64,
    /// Longest a phase (warm-up or measured) may take before it is stopped.
    #[arg(long, default_value_t = 600)]
    phase_timeout_secs: u64,
    /// Longest wait for migrations and for /ready.
    #[arg(long, default_value_t = 60)]
    startup_timeout_secs: u64,
    /// Keep the database, Redis keys and logs for inspection.
    #[arg(long)]
    keep: bool,
    /// Exit with status 2 when a preset misses its target.
    #[arg(long)]
    strict: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ScenarioArg {
    Custom,
    Ttft,
    Throughput,
    Tokens,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    None,
    Ttft,
    Throughput,
    Tokens,
}

/// One scenario's parameters, presets and flags merged.
#[derive(Debug, Clone)]
struct Params {
    name: &'static str,
    target: Target,
    tokens: usize,
    interval: Duration,
    concurrency: usize,
    runs: usize,
    warmup: usize,
    worker_concurrency: Option<usize>,
}

impl Params {
    fn preset(which: ScenarioArg, args: &Args) -> Self {
        // (name, target, tokens, interval ms, concurrency, runs, warmup)
        let (name, target, tokens, interval, concurrency, runs, warmup) = match which {
            ScenarioArg::Ttft => ("ttft", Target::Ttft, 20, 5, 100, 2000, 200),
            ScenarioArg::Throughput => ("throughput", Target::Throughput, 20, 0, 100, 3000, 300),
            ScenarioArg::Tokens => ("tokens", Target::Tokens, 1000, 0, 50, 500, 50),
            ScenarioArg::Custom | ScenarioArg::All => {
                ("custom", Target::None, 20, 0, 100, 2000, 100)
            }
        };
        let concurrency = args.concurrency.unwrap_or(concurrency).max(1);
        Self {
            name,
            target,
            tokens: args.tokens.unwrap_or(tokens).max(1),
            interval: Duration::from_millis(args.token_interval_ms.unwrap_or(interval)),
            concurrency,
            runs: args.runs.unwrap_or(runs).max(1),
            warmup: args.warmup.unwrap_or(warmup),
            worker_concurrency: match args.worker_concurrency {
                Some(0) => None,
                Some(n) => Some(n),
                None => Some(concurrency),
            },
        }
    }

    fn describe(&self) -> String {
        let pacing = if self.interval.is_zero() {
            "unpaced".to_owned()
        } else {
            format!("{} ms apart", self.interval.as_millis())
        };
        let worker = self
            .worker_concurrency
            .map_or_else(|| "server default".to_owned(), |n| n.to_string());
        format!(
            "{} tokens/run ({pacing}), {} clients, {} measured runs (+{} warm-up), worker concurrency {worker}",
            self.tokens, self.concurrency, self.runs, self.warmup
        )
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(args));
    // Anything left (a stuck client) must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(2));
    code
}

async fn run(args: Args) -> std::process::ExitCode {
    for (name, url) in [("--postgres", &args.postgres), ("--redis", &args.redis)] {
        if !is_loopback(url) {
            eprintln!("error: {name} {url:?} is not a loopback address");
            return std::process::ExitCode::FAILURE;
        }
    }
    let scenarios: Vec<ScenarioArg> = match args.scenario {
        ScenarioArg::All => vec![
            ScenarioArg::Ttft,
            ScenarioArg::Throughput,
            ScenarioArg::Tokens,
        ],
        one => vec![one],
    };
    println!(
        "switchyard-bench: {} scenario(s), binary {}, {} CPU(s)",
        scenarios.len(),
        args.bin.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let passed_env: Vec<String> = std::env::vars()
        .filter(|(k, _)| {
            (k.starts_with("SWITCHYARD_") || k == "RUST_LOG")
                && !matches!(
                    k.as_str(),
                    "SWITCHYARD_LISTEN"
                        | "SWITCHYARD_REDIS_PREFIX"
                        | "SWITCHYARD_CONFIG"
                        | "SWITCHYARD_WORKER_CONCURRENCY"
                )
        })
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if let Some(options) = &args.pg_url_options {
        println!("DATABASE_URL options: {options}");
    }
    if !args.pg_settings.is_empty() {
        println!("database settings: {}", args.pg_settings.join(" "));
    }
    if !passed_env.is_empty() {
        println!("passed to the server processes: {}", passed_env.join(" "));
    }

    let mut summaries = Vec::new();
    let mut failed = false;
    for which in scenarios {
        if INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let params = Params::preset(which, &args);
        println!("\n=== scenario {}: {}", params.name, params.describe());
        match run_scenario(&args, &params).await {
            Ok(report) => summaries.push((params.name, report.verdicts())),
            Err(error) => {
                eprintln!("scenario {} failed: {error:#}", params.name);
                failed = true;
                summaries.push((params.name, vec![("error".to_owned(), false)]));
            }
        }
    }

    println!("\n=== summary");
    let mut missed = false;
    for (name, verdicts) in &summaries {
        for (text, ok) in verdicts {
            missed |= !ok;
            println!("  {name:<10} {:<4} {text}", if *ok { "ok" } else { "MISS" });
        }
        if verdicts.is_empty() {
            println!("  {name:<10} (no target)");
        }
    }
    if failed {
        std::process::ExitCode::FAILURE
    } else if missed && args.strict {
        std::process::ExitCode::from(2)
    } else {
        std::process::ExitCode::SUCCESS
    }
}

async fn run_scenario(args: &Args, params: &Params) -> anyhow::Result<Report> {
    let fake = Arc::new(
        FakeLlm::try_start()
            .await
            .context("starting the fake LLM")?,
    );
    fake.set_default(Reply::Stream {
        tokens: params.tokens,
        interval: params.interval,
    });
    let mut stack = Stack::new(StackConfig {
        bin: args.bin.clone(),
        postgres: args.postgres.clone(),
        redis: args.redis.clone(),
        workers: 1,
        worker_concurrency: params.worker_concurrency,
        pg_settings: args.pg_settings.clone(),
        pg_url_options: args.pg_url_options.clone(),
        startup_timeout: Duration::from_secs(args.startup_timeout_secs),
        keep: args.keep,
        // Every client holds a stream; the default per-user stream limit
        // (one user runs them all) is raised above that.
        catalog_extra: format!(
            "\n[limits]\nopen_streams = {}\n",
            params.concurrency * 2 + 100
        ),
    });
    let result = tokio::select! {
        result = measure(&mut stack, &fake, args, params) => result,
        _ = tokio::signal::ctrl_c() => {
            INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
            Err(anyhow!("interrupted"))
        }
    };
    match &result {
        Ok(report) => report.print(),
        Err(error) => {
            // Show what the servers said before their logs go.
            for proc in stack.procs() {
                eprintln!(
                    "--- last lines of `switchyard {}` ({})\n{}",
                    proc.name,
                    proc.log.display(),
                    stack::tail(&proc.log, 15)
                );
            }
            eprintln!("scenario {}: {error:#}", params.name);
        }
    }
    println!(
        "  tearing down (database {}, prefix {})",
        stack.db_name, stack.redis_prefix
    );
    // Keep the servers' logs when something went wrong, to look into it.
    let keep_logs = result.as_ref().map_or(true, |r| r.errors() > 0);
    stack.down(keep_logs).await;
    result
}

async fn measure(
    stack: &mut Stack,
    fake: &Arc<FakeLlm>,
    args: &Args,
    params: &Params,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    stack.up(&fake.base_url()).await?;
    let (api_pid, worker_pid) = stack.pids().context("processes not started")?;
    println!(
        "  stack up in {:.1} s: api pid {api_pid}, worker pid {worker_pid}, {}",
        started.elapsed().as_secs_f64(),
        stack.base_url
    );
    let run_timeout = Duration::from_secs(args.run_timeout_secs);
    let phase_timeout = Duration::from_secs(args.phase_timeout_secs);
    let load = Arc::new(Load::new(
        &stack.base_url,
        Arc::clone(fake),
        params.tokens,
        params.concurrency,
        run_timeout,
        (args.observe_every > 0)
            .then(|| -> anyhow::Result<_> {
                // With TCP_NODELAY, as Switchyard's own Redis connections.
                let info = redis::IntoConnectionInfo::into_connection_info(args.redis.as_str())?
                    .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
                Ok(Observer {
                    client: redis::Client::open(info)?,
                    prefix: stack.redis_prefix.clone(),
                    every: args.observe_every,
                })
            })
            .transpose()?,
    )?);
    let tag = format!("{}-{}", params.name, stack.id);

    let smoke = load.phase(&format!("{tag}-smoke"), 1, 1, run_timeout).await;
    if smoke.records.is_empty() {
        bail!(
            "the first run did not complete: {}",
            smoke
                .errors
                .first()
                .map_or("(no error recorded)", String::as_str)
        );
    }
    if params.warmup > 0 {
        let warm = load
            .phase(
                &format!("{tag}-warmup"),
                params.warmup,
                params.concurrency,
                phase_timeout,
            )
            .await;
        println!(
            "  warm-up: {} runs in {:.1} s, {} errors",
            warm.records.len(),
            warm.wall.as_secs_f64(),
            warm.errors.len()
        );
        if let Some(first) = warm.errors.first() {
            println!("    first warm-up error: {first}");
        }
    }
    stack.check_alive()?;
    fake.clear_requests();

    let mut redis_conn = redis::Client::open(args.redis.as_str())?
        .get_multiplexed_async_connection()
        .await
        .context("connecting to Redis for statistics")?;
    let redis_before = sys::redis_commandstats(&mut redis_conn).await?;
    let pg_before = PgSnapshot::take(&stack.database_url).await?;
    let cpu_before = CpuSnapshot::take(api_pid, worker_pid);

    let phase = load
        .phase(
            &format!("{tag}-run"),
            params.runs,
            params.concurrency,
            phase_timeout,
        )
        .await;

    let cpu_after = CpuSnapshot::take(api_pid, worker_pid);
    let pg_after = PgSnapshot::take(&stack.database_url).await?;
    let redis_after = sys::redis_commandstats(&mut redis_conn).await?;
    stack.check_alive()?;
    let peak_rss_kib = (
        sys::status_kib(api_pid, "VmHWM").unwrap_or(0),
        sys::status_kib(worker_pid, "VmHWM").unwrap_or(0),
    );
    let rows = sys::row_counts(&stack.database_url)
        .await
        .unwrap_or_default();
    let received: HashMap<String, Instant> = fake
        .requests()
        .into_iter()
        .filter_map(|r| Some((r.last_user_message()?, r.received_at)))
        .collect();
    fake.clear_requests();

    let (cpu, cpu_wall) = cpu_before.since(&cpu_after);
    let (machine_busy, steal) = cpu_before.machine_busy_since(&cpu_after);
    let cpu_waits = cpu_before.waits_since(&cpu_after);
    Ok(Report {
        params: params.clone(),
        phase,
        received,
        peak_rss_kib,
        cpu,
        cpu_wall,
        machine_busy,
        steal,
        cpu_waits,
        write_xacts: pg_after.next_xid - pg_before.next_xid,
        wal_bytes: pg_after.wal_bytes - pg_before.wal_bytes,
        rows,
        redis: sys::commandstats_delta(&redis_before, &redis_after),
    })
}

/// Everything measured in one scenario.
struct Report {
    params: Params,
    phase: PhaseResult,
    /// When the fake received each run's request, by tag.
    received: HashMap<String, Instant>,
    peak_rss_kib: (u64, u64),
    cpu: Vec<f64>,
    cpu_wall: Duration,
    /// CPU seconds the whole machine was busy, other processes included.
    machine_busy: f64,
    /// CPU seconds the hypervisor gave to other guests.
    steal: f64,
    /// Seconds each part spent runnable but waiting for a CPU.
    cpu_waits: Vec<f64>,
    write_xacts: i64,
    wal_bytes: i64,
    rows: Vec<(&'static str, i64)>,
    redis: Vec<(String, u64, u64)>,
}

/// `later − earlier` in milliseconds, negative if `later` came first.
fn ms_between(earlier: Instant, later: Instant) -> f64 {
    match later.checked_duration_since(earlier) {
        Some(d) => d.as_secs_f64() * 1e3,
        None => -(earlier.duration_since(later).as_secs_f64() * 1e3),
    }
}

impl Report {
    fn completed(&self) -> usize {
        self.phase.records.len()
    }

    fn runs_per_sec(&self) -> f64 {
        self.completed() as f64 / self.phase.wall.as_secs_f64().max(1e-9)
    }

    /// The fake's streamed tokens of completed runs, per second.
    fn tokens_per_sec(&self) -> f64 {
        self.runs_per_sec() * self.params.tokens as f64
    }

    fn samples(&self, f: impl Fn(&RunRecord) -> Option<f64>) -> Vec<f64> {
        self.phase.records.iter().filter_map(f).collect()
    }

    fn added_ttft(&self) -> Vec<f64> {
        self.samples(|r| Some(ms_between(r.fake_first_token?, r.first_delta_at?)))
    }

    fn pickup(&self) -> Vec<f64> {
        self.samples(|r| Some(ms_between(r.post_sent, r.started_at?)))
    }

    fn errors(&self) -> usize {
        self.phase.errors.len()
    }

    fn mismatches(&self) -> usize {
        self.phase.records.iter().filter(|r| !r.text_ok).count()
    }

    fn verdicts(&self) -> Vec<(String, bool)> {
        let clean = self.errors() == 0 && self.mismatches() == 0 && self.phase.skipped == 0;
        let mut out = Vec::new();
        match self.params.target {
            Target::None => {}
            Target::Ttft => {
                let s = stats::Summary::of(&self.added_ttft()).unwrap_or_default();
                out.push((
                    format!(
                        "added TTFT p50 {:.2} ms (target <= {TARGET_TTFT_P50_MS} ms)",
                        s.p50
                    ),
                    s.count > 0 && s.p50 <= TARGET_TTFT_P50_MS,
                ));
                out.push((
                    format!(
                        "added TTFT p99 {:.2} ms (target <= {TARGET_TTFT_P99_MS} ms)",
                        s.p99
                    ),
                    s.count > 0 && s.p99 <= TARGET_TTFT_P99_MS,
                ));
            }
            Target::Throughput => out.push((
                format!(
                    "{:.1} runs/s of {}-token runs (target >= {TARGET_RUNS_PER_SEC})",
                    self.runs_per_sec(),
                    self.params.tokens
                ),
                self.runs_per_sec() >= TARGET_RUNS_PER_SEC,
            )),
            Target::Tokens => out.push((
                format!(
                    "{:.0} relayed tokens/s (target >= {TARGET_TOKENS_PER_SEC})",
                    self.tokens_per_sec()
                ),
                self.tokens_per_sec() >= TARGET_TOKENS_PER_SEC,
            )),
        }
        if self.params.target != Target::None {
            out.push((
                format!(
                    "{} errors, {} text mismatches, {} runs not started",
                    self.errors(),
                    self.mismatches(),
                    self.phase.skipped
                ),
                clean,
            ));
        }
        out
    }

    fn print(&self) {
        let p = &self.phase;
        let n = self.completed();
        let per_run = |x: f64| if n == 0 { 0.0 } else { x / n as f64 };
        println!(
            "  measured: {n} completed, {} errors, {} text mismatches, {} not started{}",
            self.errors(),
            self.mismatches(),
            p.skipped,
            p.stopped_early
                .as_ref()
                .map_or_else(String::new, |why| format!(" (stopped early: {why})"))
        );
        for error in p.errors.iter().take(5) {
            println!("    error: {error}");
        }
        if let Some(bad) = p.records.iter().find(|r| !r.text_ok) {
            println!(
                "    first mismatch: {} ({} deltas, {} bytes; expected {} bytes)",
                bad.tag,
                bad.deltas,
                bad.delta_bytes,
                load::expected_text(self.params.tokens).len()
            );
        }
        let deltas: usize = p.records.iter().map(|r| r.deltas).sum();
        let bytes: usize = p.records.iter().map(|r| r.delta_bytes).sum();
        let wall = p.wall.as_secs_f64().max(1e-9);
        println!(
            "  throughput: {:.1} runs/s, {:.0} tokens/s ({} per run), {:.0} delta events/s ({:.1} per run), {:.2} MB/s of text, over {:.2} s",
            self.runs_per_sec(),
            self.tokens_per_sec(),
            self.params.tokens,
            deltas as f64 / wall,
            per_run(deltas as f64),
            bytes as f64 / wall / 1e6,
            wall
        );

        println!("  latency, ms:");
        let rows: [(&str, Vec<f64>); 9] = [
            (
                "added TTFT (first delta - fake's first token)",
                self.added_ttft(),
            ),
            (
                " of which worker (in Redis - fake's token)",
                self.samples(|r| Some(ms_between(r.fake_first_token?, r.redis_first_delta?))),
            ),
            (
                " of which API (first delta - in Redis)",
                self.samples(|r| Some(ms_between(r.redis_first_delta?, r.first_delta_at?))),
            ),
            ("pickup (run.started received - POST sent)", self.pickup()),
            (
                "to provider (fake got the request - POST sent)",
                self.samples(|r| Some(ms_between(r.post_sent, *self.received.get(&r.tag)?))),
            ),
            (
                "fake's own TTFT (first token - request)",
                self.samples(|r| {
                    Some(ms_between(*self.received.get(&r.tag)?, r.fake_first_token?))
                }),
            ),
            (
                "client TTFT (first delta - POST sent)",
                self.samples(|r| Some(ms_between(r.post_sent, r.first_delta_at?))),
            ),
            (
                "finish (run.completed - last delta)",
                self.samples(|r| Some(ms_between(r.last_delta_at?, r.completed_at))),
            ),
            (
                "whole run (run.completed - POST sent)",
                self.samples(|r| Some(ms_between(r.post_sent, r.completed_at))),
            ),
        ];
        for (name, samples) in rows {
            println!("    {name:<48} {}", stats::line(&samples));
        }

        let mib = |kib: u64| kib as f64 / 1024.0;
        println!(
            "  peak RSS (VmHWM): api {:.1} MiB, worker {:.1} MiB",
            mib(self.peak_rss_kib.0),
            mib(self.peak_rss_kib.1)
        );
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let capacity = self.cpu_wall.as_secs_f64() * cores;
        let parts: Vec<String> = CPU_PARTS
            .iter()
            .zip(self.cpu.iter().zip(&self.cpu_waits))
            .map(|(name, (secs, wait))| {
                format!(
                    "{name:<27} {secs:>6.2} s = {:>3.0}% ({:.2} ms/run); waited for a CPU {wait:.2} s",
                    100.0 * secs / capacity.max(1e-9),
                    per_run(secs * 1e3)
                )
            })
            .collect();
        let busy: f64 = self.cpu.iter().sum();
        println!(
            "  CPU during the measured phase ({:.2} s x {cores} cores; {:.0}% used by these parts):",
            self.cpu_wall.as_secs_f64(),
            100.0 * busy / capacity.max(1e-9)
        );
        for part in parts {
            println!("    {part}");
        }
        let others = (self.machine_busy - busy).max(0.0);
        println!(
            "    other processes on the machine {others:.2} s = {:.0}%; stolen by the hypervisor {:.2} s = {:.0}%{}",
            100.0 * others / capacity.max(1e-9),
            self.steal,
            100.0 * self.steal / capacity.max(1e-9),
            if others + self.steal > 0.1 * capacity {
                "  <- the machine was not quiet: figures are pessimistic"
            } else {
                ""
            }
        );
        println!(
            "  PostgreSQL per run: {:.2} write transactions (server-wide xid growth), {:.1} KiB WAL",
            per_run(self.write_xacts as f64),
            per_run(self.wal_bytes as f64) / 1024.0
        );
        if let Some(&(_, runs)) = self.rows.iter().find(|(t, _)| *t == "runs")
            && runs > 0
        {
            let rows: Vec<String> = self
                .rows
                .iter()
                .map(|(t, c)| format!("{t} {:.1}", *c as f64 / runs as f64))
                .collect();
            println!("  rows per run (all {runs} runs): {}", rows.join(", "));
        }
        let top: Vec<String> = self
            .redis
            .iter()
            .take(10)
            .map(|(name, calls, usec)| {
                format!(
                    "{name} {:.1} ({:.0} us)",
                    per_run(*calls as f64),
                    per_run(*usec as f64)
                )
            })
            .collect();
        let mut by_time: Vec<&(String, u64, u64)> = self.redis.iter().collect();
        by_time.sort_by_key(|entry| std::cmp::Reverse(entry.2));
        let top_time: Vec<String> = by_time
            .iter()
            .take(6)
            .map(|(name, calls, usec)| {
                format!(
                    "{name} {:.0} us/run ({:.0} us/call)",
                    per_run(*usec as f64),
                    *usec as f64 / (*calls).max(1) as f64
                )
            })
            .collect();
        let redis_usec: u64 = self.redis.iter().map(|(_, _, u)| u).sum();
        println!(
            "  Redis commands per run (server-wide; {:.0} us of command time per run): {}",
            per_run(redis_usec as f64),
            top.join(", ")
        );
        println!("  Redis command time per run: {}", top_time.join(", "));
        for (text, ok) in self.verdicts() {
            println!("  {} {text}", if ok { "ok  " } else { "MISS" });
        }
    }
}
