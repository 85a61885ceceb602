//! Leader election over a coordination.k8s.io Lease (kube-lease-manager), so
//! that of several replicas exactly one reconciles.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a shutdown waits for the lease to be released.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// Where the lease lives and who we are.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// Unique per replica (the pod name in a cluster).
    pub identity: String,
    /// A holder that stops renewing loses the lease after this long.
    pub duration: Duration,
    /// Renew this long before expiry.
    pub grace: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: &str, identity: &str) -> Self {
        LeaseConfig {
            name: "catalogsync-controller".into(),
            namespace: namespace.into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            grace: Duration::from_secs(5),
        }
    }
}

/// A running candidacy.
pub struct Leadership {
    state: Option<watch::Receiver<bool>>,
    task: Option<JoinHandle<kube_lease_manager::Result<LeaseManager>>>,
    /// 1 while we hold the lease (`catalogsync_leader`).
    gauge: Gauge,
}

impl Leadership {
    /// Starts competing for the lease in the background.
    pub async fn start(client: Client, config: &LeaseConfig) -> anyhow::Result<Self> {
        let manager = LeaseManagerBuilder::new(client, &config.name)
            .with_namespace(&config.namespace)
            .with_identity(&config.identity)
            .with_duration(config.duration.as_secs())
            .with_grace(config.grace.as_secs())
            .with_field_manager("catalogsync-leader-election")
            .build()
            .await?;
        let (state, task) = manager.watch().await;
        Ok(Leadership {
            state: Some(state),
            task: Some(task),
            gauge: Gauge::default(),
        })
    }

    /// Reports leadership on `gauge`: 1 from acquiring the lease until losing or
    /// releasing it.
    pub fn report_to(mut self, gauge: Gauge) -> Self {
        gauge.set(0);
        self.gauge = gauge;
        self
    }

    /// Resolves once we hold the lease.
    pub async fn acquired(&mut self) -> anyhow::Result<()> {
        let state = self.state.as_mut().expect("candidacy running");
        state
            .wait_for(|leader| *leader)
            .await
            .map_err(|_| anyhow::anyhow!("the lease manager stopped"))?;
        self.gauge.set(1);
        Ok(())
    }

    /// Resolves when we no longer hold the lease (or cannot tell).
    pub async fn lost(&mut self) {
        let Some(state) = self.state.as_mut() else {
            return;
        };
        let _ = state.wait_for(|leader| !*leader).await;
        self.gauge.set(0);
    }

    /// Gives the lease up, so a standby takes over at once rather than after expiry.
    pub async fn release(&mut self) {
        self.gauge.set(0);
        // Closing the channel makes the manager release the lease and return.
        drop(self.state.take());
        let Some(mut task) = self.task.take() else {
            return;
        };
        // The manager notices the closed channel on its next wake-up; a shutdown must fit
        // the pod's grace period, so past RELEASE_WAIT the Lease is left to expire instead.
        match tokio::time::timeout(RELEASE_WAIT, &mut task).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "releasing the lease failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the lease manager task failed"),
            Err(_) => {
                task.abort();
                tracing::warn!("the lease was not released in time; it expires by itself");
            }
        }
    }
}
