//! The faults: workers killed with SIGKILL at random moments, each replaced
//! at once so that capacity stays the same; and runs cancelled at random
//! while they stream.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng as _;
use switchyard_bench::stack::{Killed, Stack};

use crate::client::{Cancel, Clients};

/// One worker killed.
#[derive(Debug, Clone)]
pub struct Kill {
    /// The worker slot, `0..workers`.
    pub slot: usize,
    pub killed: Killed,
    /// The name of the worker started in its place.
    pub replacement: String,
}

/// Kill `count` workers, a random one each time, after a random pause in
/// `gap_ms` each time; every killed worker is replaced at once. Fails if
/// a process of the stack exits by itself meanwhile.
pub async fn kill_workers(
    stack: &mut Stack,
    clients: &Clients,
    count: usize,
    gap_ms: RangeInclusive<u64>,
    origin: Instant,
) -> anyhow::Result<Vec<Kill>> {
    let mut kills = Vec::with_capacity(count);
    for n in 1..=count {
        let gap = rand::rng().random_range(gap_ms.clone());
        tokio::time::sleep(Duration::from_millis(gap)).await;
        stack.check_alive()?;
        let slot = rand::rng().random_range(0..stack.workers.len());
        let started = clients.started();
        let killed = stack.kill_worker(slot)?;
        let replacement = stack.restart_worker(slot)?;
        println!(
            "  kill {n:>2}/{count} at {:>6.1} s: {} (pid {}) with {started} runs started in all; {replacement} started in its place",
            killed.at.duration_since(origin).as_secs_f64(),
            killed.name,
            killed.pid,
        );
        kills.push(Kill {
            slot,
            killed,
            replacement,
        });
    }
    Ok(kills)
}

/// Cancel `count` random runs that are streaming, evenly spread over
/// `over`; gives up on the rest once `over` has passed by half again.
pub async fn cancel_runs(clients: Arc<Clients>, count: usize, over: Duration) -> Vec<Cancel> {
    let mut cancels = Vec::with_capacity(count);
    if count == 0 {
        return cancels;
    }
    let pause = over / u32::try_from(count).unwrap_or(u32::MAX);
    let deadline = Instant::now() + over + over / 2;
    while cancels.len() < count && Instant::now() < deadline {
        tokio::time::sleep(pause).await;
        if let Some(cancel) = clients.cancel_random().await {
            cancels.push(cancel);
        }
    }
    cancels
}
