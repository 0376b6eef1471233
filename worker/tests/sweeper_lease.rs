//! Choosing the worker that takes back lost runs, by a Kubernetes Lease:
//! electors against a local API server that keeps Leases as Kubernetes does
//! (`fake_kube`), so kube-lease-manager's requests, the client's settings
//! and the elector's handling of an unreachable API server all run for real.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "test code, helpers included (which allow-unwrap-in-tests misses in integration tests): a panic is the failure report, and spawned servers end with the test runtime"
)]

mod fake_kube;

use std::time::{Duration, Instant};

use switchyard_common::config::LeaseSettings;
use switchyard_worker::leader::{Elector, Leadership};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::fake_kube::FakeKube;

const NAMESPACE: &str = "switchyard";
const LEASE: &str = "sy-sweeper";
/// Short timings, so that a Lease lapses within seconds.
const DURATION_SECS: u64 = 3;
const GRACE_SECS: u64 = 1;
const DURATION: Duration = Duration::from_secs(DURATION_SECS);

/// One worker competing for the Lease.
struct Candidate {
    identity: &'static str,
    leadership: Leadership,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Candidate {
    fn start(fake: &FakeKube, identity: &'static str) -> Self {
        let lease = LeaseSettings {
            name: LEASE.into(),
            namespace: NAMESPACE.into(),
        };
        let shutdown = CancellationToken::new();
        let (leadership, elector) = Elector::new(fake.client(), lease, identity)
            .with_timing(DURATION_SECS, GRACE_SECS)
            .start(shutdown.clone());
        Self {
            identity,
            leadership,
            shutdown,
            task: tokio::spawn(elector),
        }
    }

    fn leads(&self) -> bool {
        self.leadership.is_leader()
    }
}

/// Wait until `condition` holds; fail if it does not within `within`.
async fn until(within: Duration, what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two candidates, once one of them leads: (leader, follower).
async fn elect(fake: &FakeKube) -> (Candidate, Candidate) {
    let a = Candidate::start(fake, "worker-a");
    let b = Candidate::start(fake, "worker-b");
    until(2 * DURATION, "a leader is elected", || {
        a.leads() || b.leads()
    })
    .await;
    if a.leads() { (a, b) } else { (b, a) }
}

#[tokio::test]
async fn two_workers_racing_for_a_free_lease_elect_exactly_one() {
    let fake = FakeKube::start().await;
    fake.create_lease(NAMESPACE, LEASE);
    // Both read the free Lease up to their attempt to take it (a read to
    // start, one to follow it, one before taking it), so both try.
    fake.gather_reads(2, 3);
    let (leader, follower) = elect(&fake).await;
    assert_eq!(fake.conflicts(), 1, "the loser's attempt was refused");

    // Through several renewals: one leader, the one the Lease names.
    let watch = Instant::now();
    while watch.elapsed() < 2 * DURATION {
        assert!(leader.leads() && !follower.leads(), "exactly one leader");
        assert_eq!(
            fake.holder(NAMESPACE, LEASE).as_deref(),
            Some(leader.identity)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_released_lease_passes_to_the_other_worker_within_its_duration() {
    let fake = FakeKube::start().await;
    let (mut leader, follower) = elect(&fake).await;

    leader.shutdown.cancel();
    tokio::time::timeout(DURATION, &mut leader.task)
        .await
        .expect("the elector stops at shutdown")
        .expect("the elector does not panic");
    assert!(!leader.leads());
    assert_ne!(
        fake.holder(NAMESPACE, LEASE).as_deref(),
        Some(leader.identity),
        "the Lease was released"
    );

    until(DURATION, "the other worker leads", || follower.leads()).await;
    assert_eq!(
        fake.holder(NAMESPACE, LEASE).as_deref(),
        Some(follower.identity)
    );
}

#[tokio::test]
async fn a_dead_leaders_lease_lapses_to_the_other_worker() {
    let fake = FakeKube::start().await;
    let (leader, follower) = elect(&fake).await;

    // Gone without releasing the Lease, as a killed process is.
    leader.task.abort();

    until(2 * DURATION, "the other worker leads", || follower.leads()).await;
    assert_eq!(
        fake.holder(NAMESPACE, LEASE).as_deref(),
        Some(follower.identity)
    );
}

#[tokio::test]
async fn a_worker_cut_off_from_the_api_server_stops_leading_until_it_answers() {
    let fake = FakeKube::start().await;
    let worker = Candidate::start(&fake, "worker-a");
    until(2 * DURATION, "the worker leads", || worker.leads()).await;

    // It must stop before its Lease could lapse and pass to another worker.
    fake.set_available(false);
    until(DURATION, "the worker stops leading", || !worker.leads()).await;

    // Several failed attempts later it still waits, and has not given up.
    tokio::time::sleep(DURATION).await;
    assert!(!worker.leads());
    assert!(!worker.task.is_finished());

    fake.set_available(true);
    until(Duration::from_secs(20), "the worker leads again", || {
        worker.leads()
    })
    .await;
    assert_eq!(
        fake.holder(NAMESPACE, LEASE).as_deref(),
        Some(worker.identity)
    );
}
