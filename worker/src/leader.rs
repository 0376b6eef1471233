//! Which worker takes back the runs of lost workers.
//!
//! In Kubernetes the workers compete for a Lease, kept by
//! kube-lease-manager: its holder sweeps, the others wait for it to lapse
//! or be released. Elsewhere every worker is a candidate and PostgreSQL's
//! advisory lock in `db::runs::requeue_expired` lets one act per sweep; the
//! lock stays on in Kubernetes too, against a holder that lost the Lease
//! without knowing it yet.
//!
//! A worker that cannot reach the API server is not sure to hold the Lease,
//! so it stops sweeping and keeps trying; its runs are unaffected.

use std::time::Duration;

use anyhow::Context as _;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use switchyard_common::config::LeaseSettings;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long the Lease holds after its last renewal: how long lost runs wait
/// when the sweeping worker dies without releasing it.
pub const LEASE_DURATION_SECS: u64 = 15;
/// How long before the Lease lapses its holder renews it.
pub const LEASE_GRACE_SECS: u64 = 7;
/// Longest wait on the API server to connect, send and answer: a renewal
/// that cannot get through fails well within the grace, so the holder stops
/// sweeping before another worker may take the Lease.
const API_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest the Lease's release may take when the worker stops.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);
/// Waits between attempts after an API error: doubling from the first to
/// the second.
const RETRY: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(16));

/// Whether this worker may take back lost runs now.
#[derive(Clone)]
pub enum Leadership {
    /// Every worker may: the advisory lock picks one per sweep.
    Everyone,
    /// Only while this worker holds the Lease.
    Elected(watch::Receiver<bool>),
}

impl Leadership {
    pub fn is_leader(&self) -> bool {
        match self {
            Self::Everyone => true,
            Self::Elected(held) => *held.borrow(),
        }
    }
}

/// A client for the API server of the cluster this worker runs in (or of
/// the kubeconfig's current context), set up as [`client`] says.
pub async fn cluster_client() -> anyhow::Result<kube::Client> {
    let config = kube::Config::infer()
        .await
        .context("loading the Kubernetes client configuration")?;
    client(config).context("building the Kubernetes client")
}

/// A client whose requests give up after [`API_TIMEOUT`] and are not
/// retried, so that an unreachable API server shows within the Lease's
/// grace period.
pub fn client(mut config: kube::Config) -> Result<kube::Client, kube::Error> {
    config.connect_timeout = Some(API_TIMEOUT);
    config.write_timeout = Some(API_TIMEOUT);
    config.read_timeout = Some(API_TIMEOUT);
    // Count the read timeout from the request, not from when a pooled
    // connection last went idle.
    config.reset_reader_on_write = true;
    config.default_retry = false;
    kube::Client::try_from(config)
}

/// Competes for the Lease on behalf of one worker.
pub struct Elector {
    client: kube::Client,
    lease: LeaseSettings,
    identity: String,
    duration_secs: u64,
    grace_secs: u64,
}

impl Elector {
    /// `identity` names this worker in the Lease's `holderIdentity`; it must
    /// differ from every other worker's.
    pub fn new(client: kube::Client, lease: LeaseSettings, identity: impl Into<String>) -> Self {
        Self {
            client,
            lease,
            identity: identity.into(),
            duration_secs: LEASE_DURATION_SECS,
            grace_secs: LEASE_GRACE_SECS,
        }
    }

    /// Other timings than [`LEASE_DURATION_SECS`] and [`LEASE_GRACE_SECS`];
    /// `0 < grace < duration`.
    pub fn with_timing(self, duration_secs: u64, grace_secs: u64) -> Self {
        Self {
            duration_secs,
            grace_secs,
            ..self
        }
    }

    /// The leadership to consult, and the task that keeps it: it competes
    /// for the Lease, renews it while held, and releases it when `shutdown`
    /// is cancelled.
    pub fn start(
        self,
        shutdown: CancellationToken,
    ) -> (Leadership, impl Future<Output = ()> + Send + 'static) {
        let (held, leadership) = watch::channel(false);
        (Leadership::Elected(leadership), self.run(held, shutdown))
    }

    async fn run(self, held: watch::Sender<bool>, shutdown: CancellationToken) {
        let mut retry = RETRY.0;
        loop {
            let manager = tokio::select! {
                manager = self.manager() => manager,
                _ = shutdown.cancelled() => return,
            };
            let error = match manager {
                Ok(manager) => match self.hold(&manager, &held, &mut retry, &shutdown).await {
                    Some(error) => error,
                    None => return,
                },
                Err(error) => error,
            };
            // The state of the Lease is unknown until the API server answers
            // again: a new manager starts from what it reads then.
            if held.send_replace(false) {
                tracing::warn!(error = %error, lease = %self.lease.name, "lost touch with the Kubernetes API server; not sweeping lost runs until it answers");
            } else {
                tracing::warn!(error = %error, lease = %self.lease.name, retry_secs = retry.as_secs(), "cannot reach the sweeper's Lease; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = shutdown.cancelled() => return,
            }
            retry = (retry * 2).min(RETRY.1);
        }
    }

    async fn manager(&self) -> Result<LeaseManager, LeaseManagerError> {
        LeaseManagerBuilder::new(self.client.clone(), &self.lease.name)
            .with_namespace(&self.lease.namespace)
            .with_identity(&self.identity)
            .with_duration(self.duration_secs)
            .with_grace(self.grace_secs)
            .build()
            .await
    }

    /// Follow the Lease, publishing whether this worker holds it, until an
    /// API error (returned) or `shutdown` (the Lease is then released).
    async fn hold(
        &self,
        manager: &LeaseManager,
        held: &watch::Sender<bool>,
        retry: &mut Duration,
        shutdown: &CancellationToken,
    ) -> Option<LeaseManagerError> {
        loop {
            tokio::select! {
                changed = manager.changed() => match changed {
                    Ok(holds) => {
                        *retry = RETRY.0;
                        held.send_replace(holds);
                        if holds {
                            tracing::info!(lease = %self.lease.name, "this worker now takes back lost runs");
                        } else {
                            tracing::info!(lease = %self.lease.name, "another worker takes back lost runs now");
                        }
                    }
                    Err(error) => return Some(error),
                },
                _ = shutdown.cancelled() => {
                    held.send_replace(false);
                    match tokio::time::timeout(RELEASE_TIMEOUT, manager.release()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => tracing::warn!(%error, "releasing the sweeper's Lease failed; it lapses by itself"),
                        Err(_) => tracing::warn!("releasing the sweeper's Lease timed out; it lapses by itself"),
                    }
                    return None;
                }
            }
        }
    }
}
