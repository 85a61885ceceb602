//! Bookkeeping shared by the apply stages: success and failure counts, the failure
//! threshold, and whether a failed write certainly did not happen (so its allowance returns).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::scim::{ScimClient, ScimError};

use super::progress::{Bucket, Tracker};
use super::stop::{Stop, StopReason};

/// Records the outcome of each write and stops the run past `maxFailurePercent`.
pub struct Writes {
    pub tracker: Tracker,
    pub stop: Stop,
    guard: FailureGuard,
}

impl Writes {
    pub fn new(tracker: Tracker, stop: Stop, max_failure_percent: u32) -> Self {
        Writes {
            tracker,
            stop,
            guard: FailureGuard::new(max_failure_percent),
        }
    }

    /// True once no new write may start.
    pub fn stopping(&self) -> bool {
        self.stop.is_stopped()
    }

    /// The planned writes of `n` accounts failed: they land in `failed`.
    pub fn failed(&self, n: u64, action: &str, subject: &str, e: &dyn std::fmt::Display) {
        self.tracker.settle(n, Bucket::Failed);
        self.list_failure(n, action, subject, e);
    }

    /// `n` writes failed that are no account's planned write: an Import's deletion, a
    /// Provision's create, a record written after a create.
    pub fn record_failed(&self, n: u64, action: &str, subject: &str, e: &dyn std::fmt::Display) {
        self.tracker.update(|s| s.counts.failed_records += n as i64);
        self.list_failure(n, action, subject, e);
    }

    /// Lists a failure that the caller counts itself, and stops after too many.
    pub fn list_failure(&self, n: u64, action: &str, subject: &str, e: &dyn std::fmt::Display) {
        tracing::warn!(action, subject, error = %e, "change failed");
        self.tracker.fail(action, subject, e.to_string());
        if self.guard.record(n, n) {
            self.stop.stop(StopReason::TooManyFailures);
        }
    }

    /// The planned writes of `n` accounts succeeded: they land in `to`.
    pub fn settled(&self, n: u64, to: Bucket) {
        self.tracker.settle(n, to);
        self.guard.record(n, 0);
    }

    /// `n` changes succeeded (the caller counts them).
    pub fn succeeded(&self, n: u64) {
        self.guard.record(n, 0);
    }
}

/// Whether a deactivation or deletion whose outcome is unknown (its answer lost, its retries
/// spent, or cut short by a stop) happened after all: the object is read back, not guessed.
/// True when it is gone, or (`deactivation`) inactive; false when it is not, or when it
/// cannot be read either.
pub async fn removal_happened(
    client: &ScimClient,
    resource: &str,
    id: &str,
    deactivation: bool,
) -> bool {
    removal_outcome(client, resource, id, deactivation)
        .await
        .unwrap_or(false)
}

/// As [`removal_happened`], `None` when the object cannot be read.
pub async fn removal_outcome(
    client: &ScimClient,
    resource: &str,
    id: &str,
    deactivation: bool,
) -> Option<bool> {
    match client.get(resource, id, &["active"]).await {
        Ok(None) => Some(true),
        Ok(Some(v)) => {
            Some(deactivation && v.get("active") == Some(&serde_json::Value::Bool(false)))
        }
        Err(_) => None,
    }
}

/// A 4xx other than 429 answered on the first try: the write certainly did not happen.
/// Anything else (5xx, timeouts, exhausted retries) may have been applied.
pub fn certainly_not_applied(e: &ScimError) -> bool {
    matches!(e, ScimError::Status { status, .. } if (400..500).contains(status) && *status != 429)
}

/// Counts attempted and failed changes; trips once failures exceed the percentage and at
/// least [`Self::MIN_ATTEMPTS`] changes were attempted.
#[derive(Debug)]
pub struct FailureGuard {
    percent: u64,
    attempted: AtomicU64,
    failed: AtomicU64,
}

impl FailureGuard {
    pub const MIN_ATTEMPTS: u64 = 10;

    pub fn new(percent: u32) -> Self {
        FailureGuard {
            percent: percent as u64,
            attempted: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Records `n` attempted changes of which `failed` failed; true when the run must stop.
    pub fn record(&self, n: u64, failed: u64) -> bool {
        let a = self.attempted.fetch_add(n, Ordering::AcqRel) + n;
        let f = self.failed.fetch_add(failed, Ordering::AcqRel) + failed;
        a >= Self::MIN_ATTEMPTS && f * 100 > self.percent * a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_guard_waits_for_ten_attempts() {
        let g = FailureGuard::new(40);
        for _ in 0..9 {
            assert!(!g.record(1, 1), "fewer than 10 attempted never trips");
        }
        assert!(g.record(1, 1));
        let g = FailureGuard::new(40);
        assert!(!g.record(10, 4), "exactly 40% is not above 40%");
        assert!(g.record(1, 1));
    }
}
