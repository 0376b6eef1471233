//! Where the time and the bytes went: CPU time and memory of processes
//! (from `/proc`), PostgreSQL write transactions and WAL, Redis commands.
//! All counters are read before and after the measured phase.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::{Connection as _, PgConnection};

/// A field of `/proc/<pid>/status` in KiB, e.g. `VmHWM` (peak RSS).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// User plus system CPU time of a process (and its dead, waited-for
/// children), in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state(0) ppid(1) … utime(11) stime(12).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Nanoseconds the threads of a process spent runnable but waiting for a
/// CPU (`/proc/<pid>/task/*/schedstat`, second field): CPU contention.
fn runqueue_wait_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|task| {
            let text = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            text.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

/// Processes whose command name (`/proc/<pid>/comm`) is `name`.
fn pids_named(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim_end() == name).then_some(pid)
    })
    .collect()
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Busy, total and stolen CPU ticks of the whole machine (`/proc/stat`).
fn machine_ticks() -> Option<(u64, u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is in user).
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).unwrap_or(&0);
    let steal = fields.get(7).copied().unwrap_or(0);
    Some((total - idle - steal, total, steal))
}

/// CPU time of the parts of the system under test.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    at: Instant,
    ticks: [u64; 5],
    /// Run-queue waits, nanoseconds, same parts.
    waits: [u64; 5],
    machine: (u64, u64, u64),
}

/// Names of the [`CpuSnapshot`] parts, in order.
pub const CPU_PARTS: [&str; 5] = [
    "api",
    "worker",
    "bench (clients + fake LLM)",
    "postgres (all processes)",
    "redis-server",
];

impl CpuSnapshot {
    pub fn take(api: u32, worker: u32) -> Self {
        let sum = |pids: &[u32]| pids.iter().copied().filter_map(cpu_ticks).sum();
        let waits = |pids: &[u32]| pids.iter().copied().map(runqueue_wait_ns).sum();
        let postgres = pids_named("postgres");
        let redis = pids_named("redis-server");
        let me = std::process::id();
        Self {
            waits: [
                runqueue_wait_ns(api),
                runqueue_wait_ns(worker),
                runqueue_wait_ns(me),
                waits(&postgres),
                waits(&redis),
            ],
            at: Instant::now(),
            ticks: [
                cpu_ticks(api).unwrap_or(0),
                cpu_ticks(worker).unwrap_or(0),
                cpu_ticks(me).unwrap_or(0),
                sum(&postgres),
                sum(&redis),
            ],
            machine: machine_ticks().unwrap_or((0, 0, 0)),
        }
    }

    /// Seconds each part's threads waited for a CPU between `self` and `later`.
    pub fn waits_since(&self, later: &Self) -> Vec<f64> {
        self.waits
            .iter()
            .zip(later.waits.iter())
            .map(|(a, b)| b.saturating_sub(*a) as f64 / 1e9)
            .collect()
    }

    /// CPU seconds the whole machine was busy between `self` and `later`,
    /// and CPU seconds the hypervisor took away (steal).
    pub fn machine_busy_since(&self, later: &Self) -> (f64, f64) {
        let hz = clock_ticks_per_second();
        (
            later.machine.0.saturating_sub(self.machine.0) as f64 / hz,
            later.machine.2.saturating_sub(self.machine.2) as f64 / hz,
        )
    }

    /// CPU seconds per part between `self` and `later`, and the wall time.
    pub fn since(&self, later: &Self) -> (Vec<f64>, Duration) {
        let hz = clock_ticks_per_second();
        let parts = self
            .ticks
            .iter()
            .zip(later.ticks.iter())
            // Exited postgres backends take their ticks with them.
            .map(|(a, b)| b.saturating_sub(*a) as f64 / hz)
            .collect();
        (parts, later.at.duration_since(self.at))
    }
}

/// PostgreSQL counters that are exact at once (unlike the statistics
/// views, which backends flush lazily). Both are server-wide.
#[derive(Debug, Clone, Copy)]
pub struct PgSnapshot {
    /// Next transaction id: its growth counts transactions that wrote.
    pub next_xid: i64,
    /// Current WAL position, in bytes.
    pub wal_bytes: i64,
}

impl PgSnapshot {
    pub async fn take(database_url: &str) -> anyhow::Result<Self> {
        let mut conn = PgConnection::connect(database_url)
            .await
            .context("connecting to PostgreSQL for statistics")?;
        // Neither function assigns a transaction id itself.
        let (next_xid, wal_bytes): (i64, i64) = sqlx::query_as(
            "select pg_snapshot_xmax(pg_current_snapshot())::text::int8,
                    pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::int8",
        )
        .fetch_one(&mut conn)
        .await?;
        conn.close().await?;
        Ok(Self {
            next_xid,
            wal_bytes,
        })
    }
}

/// Rows per table of the benchmark's database.
pub async fn row_counts(database_url: &str) -> anyhow::Result<Vec<(&'static str, i64)>> {
    let mut conn = PgConnection::connect(database_url).await?;
    let mut out = Vec::new();
    for (table, query) in [
        ("threads", "select count(*) from threads"),
        ("runs", "select count(*) from runs"),
        ("messages", "select count(*) from messages"),
        ("steps", "select count(*) from steps"),
        ("run_events", "select count(*) from run_events"),
    ] {
        let n: i64 = sqlx::query_scalar(query).fetch_one(&mut conn).await?;
        out.push((table, n));
    }
    conn.close().await?;
    Ok(out)
}

/// `INFO commandstats`: calls and microseconds per command (server-wide).
pub async fn redis_commandstats(
    conn: &mut redis::aio::MultiplexedConnection,
) -> anyhow::Result<HashMap<String, (u64, u64)>> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await?;
    Ok(parse_commandstats(&info))
}

fn parse_commandstats(info: &str) -> HashMap<String, (u64, u64)> {
    let mut out = HashMap::new();
    for line in info.lines() {
        let Some(rest) = line.strip_prefix("cmdstat_") else {
            continue;
        };
        let Some((name, fields)) = rest.split_once(':') else {
            continue;
        };
        let field = |key: &str| -> u64 {
            fields
                .split(',')
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
                .unwrap_or(0)
        };
        out.insert(name.to_owned(), (field("calls"), field("usec")));
    }
    out
}

/// Commands whose call count grew, most called first: `(name, calls, usec)`.
pub fn commandstats_delta(
    before: &HashMap<String, (u64, u64)>,
    after: &HashMap<String, (u64, u64)>,
) -> Vec<(String, u64, u64)> {
    let mut out: Vec<(String, u64, u64)> = after
        .iter()
        .filter_map(|(name, (calls, usec))| {
            let (c0, u0) = before.get(name).copied().unwrap_or((0, 0));
            let calls = calls.saturating_sub(c0);
            (calls > 0).then(|| (name.clone(), calls, usec.saturating_sub(u0)))
        })
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commandstats_are_parsed() {
        let info = "# Commandstats\r\ncmdstat_xadd:calls=10,usec=55,usec_per_call=5.5,rejected_calls=0,failed_calls=0\r\ncmdstat_get:calls=3,usec=1,usec_per_call=0.33\r\n";
        let stats = parse_commandstats(info);
        assert_eq!(stats["xadd"], (10, 55));
        assert_eq!(stats["get"], (3, 1));
    }

    #[test]
    fn own_process_is_readable() {
        assert!(status_kib(std::process::id(), "VmHWM").is_some_and(|k| k > 0));
        assert!(cpu_ticks(std::process::id()).is_some());
    }
}
