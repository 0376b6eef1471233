//! `switchyard-local-bench`: speed of the `local` provider.
//!
//! Loads the local model through the provider the worker uses (this
//! process plays the worker), then asks for a 200-token answer, alone and
//! as 2 concurrent streams, and prints time to first token, decode tokens
//! per second (tokens after the first over the time after the first) and
//! the process's peak RSS. Set `CANDLE_NUM_THREADS` to choose the CPU
//! threads of one generation.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "measurement tooling: a panic ends the measurement, and its tasks end with the program"
)]

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use futures::StreamExt;
use switchyard_common::config::{LocalSettings, Requantize, default_model_path};
use switchyard_worker::providers::local::Local;
use switchyard_worker::providers::{ChatMessage, ChatRequest, Provider, ProviderEvent};

/// The decode speed of llama.cpp on this model on a 2-core machine, as
/// quoted when the local provider was planned (not measured here).
const QUOTED_LLAMA_CPP_TOKENS_PER_SECOND: f64 = 75.0;

#[derive(Parser)]
#[command(about = "Time to first token and decode speed of the local model")]
struct Args {
    /// The GGUF file (default: the cached default model).
    #[arg(long)]
    model: Option<std::path::PathBuf>,
    /// Tokens per answer.
    #[arg(long, default_value_t = 200)]
    tokens: usize,
    /// Answers per scenario (figures are their medians).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// `q8_0` or `none`.
    #[arg(long, default_value = "q8_0")]
    requantize: String,
    /// The sampler's repetition penalty (`1`: none; default: the
    /// provider's default).
    #[arg(long)]
    repeat_penalty: Option<f32>,
}

struct Timing {
    ttft: Duration,
    tokens: i64,
    decode: Duration,
}

impl Timing {
    fn decode_rate(&self) -> f64 {
        (self.tokens - 1) as f64 / self.decode.as_secs_f64()
    }
}

async fn one(provider: &Local, tokens: usize) -> anyhow::Result<Timing> {
    let request = ChatRequest {
        model: "smollm2".into(),
        messages: vec![ChatMessage::User {
            content: "Write a long, detailed essay about the history of the city of Rome, \
                      from its founding to the present day."
                .into(),
        }],
        tools: Vec::new(),
    };
    let started = Instant::now();
    let mut first = None;
    let mut usage = None;
    let mut stream = provider.stream(request);
    while let Some(event) = stream.next().await {
        match event? {
            ProviderEvent::TextDelta(_) => {
                first.get_or_insert_with(Instant::now);
            }
            ProviderEvent::Usage(u) => usage = Some(u),
            ProviderEvent::ToolCall(_) => {}
        }
    }
    let ended = Instant::now();
    let first = first.context("no text")?;
    let usage = usage.context("no usage")?;
    if (usage.output_tokens as usize) < tokens {
        eprintln!(
            "note: the answer ended after {} tokens",
            usage.output_tokens
        );
    }
    Ok(Timing {
        ttft: first - started,
        tokens: usage.output_tokens,
        decode: ended - first,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let requantize = match args.requantize.as_str() {
        "q8_0" => Requantize::Q8_0,
        "none" => Requantize::None,
        other => anyhow::bail!("--requantize: q8_0 or none, not {other:?}"),
    };
    let path = args
        .model
        .unwrap_or_else(|| default_model_path(|n| std::env::var(n).ok()));
    let settings = LocalSettings {
        model_path: Some(path.clone()),
        temperature: 0.0,
        max_tokens: args.tokens,
        max_concurrent: 2,
        requantize,
        repeat_penalty: args
            .repeat_penalty
            .unwrap_or(LocalSettings::default().repeat_penalty),
        ..LocalSettings::default()
    };
    let settings_penalty = settings.repeat_penalty;
    let provider = Local::new(settings)?;
    let load = Instant::now();
    let blocking = tokio::task::block_in_place(|| provider.model_blocking());
    blocking.map_err(|e| anyhow::anyhow!(e))?;
    println!(
        "model {} (requantize {}, repeat_penalty {}), CANDLE_NUM_THREADS={}, loaded in {:.2} s",
        path.display(),
        args.requantize,
        settings_penalty,
        std::env::var("CANDLE_NUM_THREADS").unwrap_or_else(|_| "unset".into()),
        load.elapsed().as_secs_f64()
    );
    // Warm-up (first-use allocations, page faults).
    one(&provider, 8).await.ok();

    let mut single = Vec::new();
    for _ in 0..args.repeat {
        single.push(one(&provider, args.tokens).await?);
    }
    let ttft = median(single.iter().map(|t| t.ttft.as_secs_f64() * 1e3).collect());
    let rate = median(single.iter().map(Timing::decode_rate).collect());
    println!(
        "single stream: {} tokens, TTFT {ttft:.0} ms, decode {rate:.1} tok/s ({:.2}x the quoted llama.cpp figure of {QUOTED_LLAMA_CPP_TOKENS_PER_SECOND} tok/s)",
        single[0].tokens,
        rate / QUOTED_LLAMA_CPP_TOKENS_PER_SECOND
    );

    let mut per_stream = Vec::new();
    let mut ttfts = Vec::new();
    let mut aggregate = Vec::new();
    for _ in 0..args.repeat {
        let started = Instant::now();
        let (a, b) = tokio::join!(one(&provider, args.tokens), one(&provider, args.tokens));
        let (a, b) = (a?, b?);
        let wall = started.elapsed().as_secs_f64();
        aggregate.push((a.tokens + b.tokens) as f64 / wall);
        for t in [a, b] {
            ttfts.push(t.ttft.as_secs_f64() * 1e3);
            per_stream.push(t.decode_rate());
        }
    }
    println!(
        "2 concurrent streams: TTFT median {:.0} ms, decode {:.1} tok/s per stream, {:.1} tok/s together (tokens over wall time)",
        median(ttfts),
        median(per_stream),
        median(aggregate)
    );
    match peak_rss_mib() {
        Some(rss) => println!("peak RSS of this process (model loaded, 2 streams): {rss:.0} MiB"),
        None => println!("peak RSS: unavailable"),
    }
    Ok(())
}
