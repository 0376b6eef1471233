//! `switchyard-chaos`: Switchyard under worker crashes. The api and several
//! workers run as separate processes on a fresh database and key prefix;
//! clients keep a few hundred slow streamed runs in flight while workers
//! are killed with SIGKILL at random moments (each replaced at once) and
//! random runs are cancelled. At the end it prints what became of every
//! run, whether every client's event ids ran from 1 without gap or
//! duplicate (across reconnections with `Last-Event-ID`), whether every
//! completed run's last message has the right text, how long the runs of
//! a killed worker took to start again elsewhere, and cancel latency.
//!
//! ```text
//! cargo build --release -p switchyard -p switchyard-bench
//! target/release/switchyard-chaos
//! ```
//!
//! Exits with 1 when a run was lost or an event missed or duplicated, and
//! with 2 under `--strict` when a latency target was missed. See
//! `bench/README.md`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "measurement tooling: a panic ends the measurement, and its tasks end with the program"
)]

mod analysis;
mod client;
mod faults;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use clap::Parser;
use switchyard_bench::stack::{self, Stack, StackConfig, WORKER_HEADER, is_loopback};
use switchyard_bench::sys::CpuSnapshot;
use switchyard_fake_llm::{FakeLlm, Reply};

use crate::analysis::{Database, Request};
use crate::client::{Clients, Outcome};
use crate::report::Report;

#[derive(Parser, Debug)]
#[command(
    name = "switchyard-chaos",
    about = "Kill Switchyard workers (SIGKILL) and cancel runs under streaming load; check that no run or event is lost",
    after_help = "Environment variables SWITCHYARD_* not set by the program (e.g. SWITCHYARD_DB_POOL)\n\
        and RUST_LOG are passed on to the api and worker processes."
)]
struct Args {
    /// Worker processes.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Runs kept in flight: one client per run, each starting its next run
    /// when one ends.
    #[arg(long, default_value_t = 500)]
    in_flight: usize,
    /// Tokens the fake streams per run.
    #[arg(long, default_value_t = 60)]
    tokens: usize,
    /// Milliseconds between two tokens.
    #[arg(long, default_value_t = 50)]
    token_interval_ms: u64,
    /// Workers killed, one at a time.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Shortest pause before each kill, milliseconds.
    #[arg(long, default_value_t = 1000)]
    kill_gap_min_ms: u64,
    /// Longest pause before each kill, milliseconds.
    #[arg(long, default_value_t = 4000)]
    kill_gap_max_ms: u64,
    /// Streaming runs cancelled at random, spread over the kills.
    #[arg(long, default_value_t = 50)]
    cancels: usize,
    /// Every Nth run's client breaks its stream once, after a few events,
    /// and resumes it with Last-Event-ID; 0 never does.
    #[arg(long, default_value_t = 10)]
    drop_every: usize,
    /// Longest wait, after the last kill, for every run to end.
    #[arg(long, default_value_t = 120)]
    drain_timeout_secs: u64,
    /// SWITCHYARD_WORKER_CONCURRENCY of each worker; 0 leaves the server's
    /// default [default: --in-flight, so that any one worker can hold every run].
    #[arg(long)]
    worker_concurrency: Option<usize>,
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
    /// Longest wait for migrations and for /ready.
    #[arg(long, default_value_t = 60)]
    startup_timeout_secs: u64,
    /// Keep the database, Redis keys and logs for inspection.
    #[arg(long)]
    keep: bool,
    /// Exit with status 2 when a latency target is missed.
    #[arg(long)]
    strict: bool,
}

impl Args {
    fn check(&self) -> anyhow::Result<()> {
        for (name, url) in [("--postgres", &self.postgres), ("--redis", &self.redis)] {
            if !is_loopback(url) {
                bail!("{name} {url:?} is not a loopback address");
            }
        }
        if self.workers < 2 {
            bail!("--workers must be at least 2: a killed worker's runs need another worker");
        }
        if self.in_flight == 0 || self.tokens == 0 {
            bail!("--in-flight and --tokens must be at least 1");
        }
        if self.kill_gap_min_ms > self.kill_gap_max_ms {
            bail!("--kill-gap-min-ms is above --kill-gap-max-ms");
        }
        Ok(())
    }

    fn worker_concurrency(&self) -> Option<usize> {
        match self.worker_concurrency {
            Some(0) => None,
            Some(n) => Some(n),
            None => Some(self.in_flight),
        }
    }

    /// The expected length of the kill phase.
    fn kill_phase(&self) -> Duration {
        let mean_gap = (self.kill_gap_min_ms + self.kill_gap_max_ms) / 2;
        Duration::from_millis(mean_gap.saturating_mul(self.kills as u64))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(error) = args.check() {
        eprintln!("error: {error:#}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(args));
    // Anything left (a stuck client) must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(2));
    code
}

async fn run(args: Args) -> ExitCode {
    let worker_concurrency = args
        .worker_concurrency()
        .map_or_else(|| "server default".to_owned(), |n| n.to_string());
    let drops = match args.drop_every {
        0 => "no stream".to_owned(),
        n => format!("every {n}th stream"),
    };
    println!(
        "switchyard-chaos: api + {} workers (concurrency {worker_concurrency} each), {} runs in flight of {} tokens {} ms apart (~{:.1} s each), {} kills {}-{} ms apart, {} cancels, {drops} broken on purpose, drain timeout {} s; binary {}, {} CPU(s)",
        args.workers,
        args.in_flight,
        args.tokens,
        args.token_interval_ms,
        (args.tokens as u64 * args.token_interval_ms) as f64 / 1e3,
        args.kills,
        args.kill_gap_min_ms,
        args.kill_gap_max_ms,
        args.cancels,
        args.drain_timeout_secs,
        args.bin.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let fake = match FakeLlm::try_start().await {
        Ok(fake) => fake,
        Err(e) => {
            eprintln!("error: starting the fake LLM: {e}");
            return ExitCode::FAILURE;
        }
    };
    fake.set_default(Reply::Stream {
        tokens: args.tokens,
        interval: Duration::from_millis(args.token_interval_ms),
    });
    let mut stack = Stack::new(StackConfig {
        bin: args.bin.clone(),
        postgres: args.postgres.clone(),
        redis: args.redis.clone(),
        workers: args.workers,
        worker_concurrency: args.worker_concurrency(),
        pg_url_options: None,
        pg_settings: Vec::new(),
        startup_timeout: Duration::from_secs(args.startup_timeout_secs),
        keep: args.keep,
        // A few hundred streams in flight, all one user's: the default
        // per-user stream limit is raised above that.
        catalog_extra: format!("\n[limits]\nopen_streams = {}\n", args.in_flight * 2 + 100),
    });
    let result = tokio::select! {
        result = chaos(&mut stack, &fake, &args) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    let code = match &result {
        Ok(report) => {
            report.print();
            if report.broken() {
                println!(
                    "FAILED: a run was lost, or an event missed, duplicated or numbered like another"
                );
                ExitCode::FAILURE
            } else if args.strict && report.verdicts().iter().any(|(_, ok)| !ok) {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => {
            for proc in stack.procs() {
                eprintln!(
                    "--- last lines of `switchyard {}` ({})\n{}",
                    proc.name,
                    proc.log.display(),
                    stack::tail(&proc.log, 15)
                );
            }
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    };
    println!(
        "  tearing down (database {}, prefix {})",
        stack.db_name, stack.redis_prefix
    );
    // Keep the servers' logs when something went wrong, to look into it.
    stack.down(code != ExitCode::SUCCESS).await;
    code
}

/// Start-up, a smoke run, the load with kills and cancels, the drain, and
/// the final counts.
async fn chaos(stack: &mut Stack, fake: &FakeLlm, args: &Args) -> anyhow::Result<Report> {
    let started = Instant::now();
    stack.up(&fake.base_url()).await?;
    let pids: Vec<String> = stack
        .procs()
        .map(|p| format!("{} {}", p.name, p.pid()))
        .collect();
    println!(
        "  stack up in {:.1} s ({}), {}",
        started.elapsed().as_secs_f64(),
        pids.join(", "),
        stack.base_url
    );
    let clients = Arc::new(Clients::new(
        &stack.base_url,
        &format!("chaos-{}", stack.id),
        args.tokens,
        args.in_flight,
        args.drop_every,
    )?);

    let run_time = Duration::from_millis(args.tokens as u64 * args.token_interval_ms);
    let smoke = tokio::time::timeout(run_time + Duration::from_secs(30), clients.next_run())
        .await
        .context("the smoke run did not end in time")?;
    match smoke.end.map(|e| e.outcome) {
        Some(Outcome::Completed) if smoke.text_error.is_none() => {}
        end => bail!(
            "the smoke run did not complete cleanly: {end:?}, {}",
            smoke
                .text_error
                .or(smoke.error)
                .unwrap_or_else(|| "no error recorded".to_owned())
        ),
    }
    fake.clear_requests();

    let origin = Instant::now();
    let (api_pid, worker_pid) = stack.pids().context("processes not started")?;
    let cpu_before = CpuSnapshot::take(api_pid, worker_pid);
    let mut slots = tokio::task::JoinSet::new();
    for _ in 0..args.in_flight {
        slots.spawn(Arc::clone(&clients).slot());
    }
    // Kill only once the runs are streaming.
    let ramp_deadline = origin + run_time + Duration::from_secs(30);
    while clients.started() < args.in_flight * 9 / 10 && Instant::now() < ramp_deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "  {} runs started after {:.1} s",
        clients.started(),
        origin.elapsed().as_secs_f64()
    );

    let canceller = tokio::spawn(faults::cancel_runs(
        Arc::clone(&clients),
        args.cancels,
        args.kill_phase(),
    ));
    let kills = faults::kill_workers(
        stack,
        &clients,
        args.kills,
        args.kill_gap_min_ms..=args.kill_gap_max_ms,
        origin,
    )
    .await;
    let kills = match kills {
        Ok(kills) => kills,
        Err(error) => {
            canceller.abort();
            clients.stop_accepting();
            clients.give_up();
            return Err(error);
        }
    };
    let cancels = canceller.await.context("the cancelling task failed")?;
    clients.stop_accepting();
    let last_fault = Instant::now();
    println!(
        "  faults done at {:.1} s ({} cancels sent); no new runs; waiting up to {} s for the {} runs under way",
        origin.elapsed().as_secs_f64(),
        cancels.len(),
        args.drain_timeout_secs,
        slots.len()
    );

    let deadline = tokio::time::Instant::from_std(
        kills.last().map_or(last_fault, |k| k.killed.at)
            + Duration::from_secs(args.drain_timeout_secs),
    );
    while let Ok(Some(_)) = tokio::time::timeout_at(deadline, slots.join_next()).await {}
    if !slots.is_empty() {
        println!(
            "  {} runs still under way after the drain timeout; giving up on them",
            slots.len()
        );
        clients.give_up();
        let grace = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Ok(Some(_)) = tokio::time::timeout_at(grace, slots.join_next()).await {}
        slots.abort_all();
    }
    let cpu_after = CpuSnapshot::take(api_pid, worker_pid);
    let (busy, _) = cpu_before.machine_busy_since(&cpu_after);
    let (_, wall) = cpu_before.since(&cpu_after);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!(
        "  load ended at {:.1} s; the machine's CPUs were {:.0}% busy meanwhile",
        origin.elapsed().as_secs_f64(),
        100.0 * busy / (wall.as_secs_f64() * cores).max(1e-9)
    );
    stack.check_alive()?;

    let requests = fake
        .requests()
        .into_iter()
        .filter_map(|r| {
            Some(Request {
                worker: r.header(WORKER_HEADER).unwrap_or("?").to_owned(),
                tag: r.last_user_message()?,
                at: r.received_at,
            })
        })
        .collect();
    let db = Database::read(&stack.database_url).await?;
    Ok(Report::new(
        clients.take_traces(),
        kills,
        cancels,
        requests,
        db,
        origin,
    ))
}
