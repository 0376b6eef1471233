//! `switchyard-idle-bench`: what open but quiet event streams cost the API.
//!
//! The stack of `switchyard-bench` (API and worker processes on a fresh
//! database and key prefix); the worker is stopped so that one run stays
//! queued, and then clients open `GET /v1/runs/{id}/events` on it, in
//! steps (1,000, then 10,000 in all by default), each reading up to the
//! run's `run.queued` event and then holding the connection. Printed per
//! step: the API's resident memory (`VmRSS`) and its growth per added
//! stream; then, with every stream open and quiet, PostgreSQL transactions
//! of the benchmark's database (`pg_stat_database`) and Redis commands
//! (`INFO commandstats`) per second over a window.
//!
//! ```text
//! cargo build --release -p switchyard -p switchyard-bench
//! target/release/switchyard-idle-bench                     # 1,000 and 10,000
//! target/release/switchyard-idle-bench --steps 200,2000 --window-secs 30
//! ```
//!
//! Each stream is one TCP connection of this process: with 10,000 streams
//! both processes need more than 10,000 open files (`ulimit -n`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "measurement tooling: a panic ends the measurement, and its tasks end with the program"
)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use sqlx::{Connection as _, PgConnection};
use switchyard_bench::stack::{Stack, StackConfig, is_loopback};
use switchyard_bench::sys;
use switchyard_fake_llm::FakeLlm;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

#[derive(Parser, Debug)]
#[command(
    name = "switchyard-idle-bench",
    about = "What open, quiet event streams cost the Switchyard API"
)]
struct Args {
    /// Total streams open after each step, ascending.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    steps: Vec<usize>,
    /// Seconds over which transactions and commands are counted once every
    /// stream is open.
    #[arg(long, default_value_t = 30)]
    window_secs: u64,
    /// Seconds to let the streams settle before the window (idle checks
    /// back off, statistics are flushed).
    #[arg(long, default_value_t = 15)]
    settle_secs: u64,
    /// Streams opened at once.
    #[arg(long, default_value_t = 200)]
    parallel: usize,
    #[arg(long, default_value = "target/release/switchyard")]
    bin: PathBuf,
    #[arg(
        long,
        env = "BENCH_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    postgres: String,
    #[arg(long, env = "BENCH_REDIS", default_value = "redis://127.0.0.1:6379")]
    redis: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if !is_loopback(&args.postgres) || !is_loopback(&args.redis) {
        bail!("only loopback PostgreSQL and Redis are used");
    }
    if args.steps.is_empty() || args.steps.windows(2).any(|w| w[0] >= w[1]) {
        bail!("--steps: ascending totals, e.g. 1000,10000");
    }
    let most = *args.steps.last().unwrap_or(&0);
    let fake = FakeLlm::try_start()
        .await
        .context("starting the fake LLM")?;
    let mut stack = Stack::new(StackConfig {
        bin: args.bin.clone(),
        postgres: args.postgres.clone(),
        redis: args.redis.clone(),
        workers: 1,
        worker_concurrency: None,
        pg_url_options: None,
        pg_settings: Vec::new(),
        startup_timeout: Duration::from_secs(60),
        keep: false,
        // One user holds every stream: the per-user stream limit is raised
        // above the largest step.
        catalog_extra: format!("\n[limits]\nopen_streams = {}\n", most + 100),
    });
    let result = async {
        stack.up(&fake.base_url()).await?;
        measure(&mut stack, &args).await
    }
    .await;
    stack.down(result.is_err()).await;
    result
}

async fn measure(stack: &mut Stack, args: &Args) -> anyhow::Result<()> {
    // No worker: the run stays queued and its streams quiet.
    stack.kill_worker(0)?;
    let http = reqwest::Client::new();
    let thread = switchyard_bench::load::create_thread(&http, &stack.base_url).await?;
    let run: serde_json::Value = http
        .post(format!("{}/v1/threads/{thread}/runs", stack.base_url))
        .json(&serde_json::json!({"input": {"content": "wait"}}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let run_id = run["id"].as_str().context("a run id")?.to_owned();
    let api = stack.api.as_ref().context("the API process")?.pid();
    let address = stack.base_url.trim_start_matches("http://").to_owned();

    println!("idle event streams on one queued run (API pid {api})");
    let mut streams: Vec<TcpStream> = Vec::with_capacity(most_of(args));
    let mut before = rss_kib(api)?;
    println!("  {:>6} streams: API RSS {:>8.1} MiB", 0, mib(before));
    for &total in &args.steps {
        let opened_from = streams.len();
        while streams.len() < total {
            let batch = (total - streams.len()).min(args.parallel);
            let opening = (0..batch).map(|_| open(&address, &run_id));
            for stream in futures::future::try_join_all(opening).await? {
                streams.push(stream);
            }
        }
        // Let the relays reach their quiet state.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = rss_kib(api)?;
        let added = (total - opened_from) as f64;
        println!(
            "  {total:>6} streams: API RSS {:>8.1} MiB, {:>6.1} KiB per added stream",
            mib(after),
            (after as f64 - before as f64) / added
        );
        before = after;
    }

    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let mut redis = redis::Client::open(args.redis.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let commands_before = sys::redis_commandstats(&mut redis).await?;
    let transactions_before = transactions(&stack.database_url).await?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.window_secs)).await;
    let seconds = started.elapsed().as_secs_f64();
    let transactions_after = transactions(&stack.database_url).await?;
    let commands_after = sys::redis_commandstats(&mut redis).await?;
    rss_kib(api)?;
    let commands = sys::commandstats_delta(&commands_before, &commands_after);
    let total_commands: u64 = commands.iter().map(|(_, calls, _)| calls).sum();
    println!(
        "  with {} quiet streams, over {seconds:.0} s: PostgreSQL {:.1} transactions/s \
         (the benchmark's database), Redis {:.1} commands/s (server-wide: {})",
        streams.len(),
        (transactions_after - transactions_before) as f64 / seconds,
        total_commands as f64 / seconds,
        commands
            .iter()
            .take(4)
            .map(|(name, calls, _)| format!("{name} {:.1}/s", *calls as f64 / seconds))
            .collect::<Vec<_>>()
            .join(", ")
    );
    drop(streams);
    Ok(())
}

fn most_of(args: &Args) -> usize {
    args.steps.last().copied().unwrap_or(0)
}

/// Open the run's event stream and read up to its first event.
async fn open(address: &str, run_id: &str) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(address)
        .await
        .with_context(|| format!("connecting to {address} (is `ulimit -n` high enough?)"))?;
    stream
        .write_all(
            format!(
                "GET /v1/runs/{run_id}/events HTTP/1.1\r\nHost: {address}\r\n\
                 Accept: text/event-stream\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("event: run.queued") {
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buffer))
            .await
            .context("no first event within 30 s")??;
        if n == 0 {
            bail!(
                "the API closed a stream: {}",
                String::from_utf8_lossy(&seen)
            );
        }
        seen.extend_from_slice(&buffer[..n]);
    }
    Ok(stream)
}

/// Committed transactions of the database so far, as the statistics
/// collector last heard.
async fn transactions(database_url: &str) -> anyhow::Result<i64> {
    let mut conn = PgConnection::connect(database_url).await?;
    let committed: i64 = sqlx::query_scalar(
        "select (xact_commit + xact_rollback)::int8 from pg_stat_database \
         where datname = current_database()",
    )
    .fetch_one(&mut conn)
    .await?;
    conn.close().await?;
    Ok(committed)
}

/// The API's resident memory; an error once the process is gone.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    sys::status_kib(pid, "VmRSS").context("reading the API's VmRSS (has it exited?)")
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
