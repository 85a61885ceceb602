//! Bookkeeping shared by the apply stages: success and failure counts, the failure
//! threshold, and whether a failed write certainly did not happen (so its allowance returns).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::scim::{ScimClient, ScimError};

use super::limits::{Allowances, Kind};
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

    /// A journaled write (`action` on `id`) failed: its allowance returns when it certainly
    /// did not happen; otherwise it stays taken and the write stays in the journal.
    pub fn unsettled(
        &self,
        allowed: &Allowances,
        kind: Kind,
        e: &ScimError,
        action: &str,
        id: &str,
    ) {
        if certainly_not_applied(e) {
            allowed.release(kind, 1);
        } else {
            self.tracker.update(|s| s.keep_unknown(action, id));
        }
    }

    /// A removal failed (see [`settle_removal`]): its allowance returns when it certainly
    /// did not happen, it stays in the journal when its outcome is unknown.
    pub fn removal_failed(&self, allowed: &Allowances, f: &Failure, action: &str, id: &str) {
        if f.unknown {
            self.tracker.update(|s| s.keep_unknown(action, id));
        } else if certainly_not_applied(&f.error) {
            allowed.release(Kind::Delete, 1);
        }
    }

    /// `n` changes succeeded (the caller counts them).
    pub fn succeeded(&self, n: u64) {
        self.guard.record(n, 0);
    }
}

/// A failed write: its error, and whether its outcome stays unknown (it may have happened).
pub struct Failure {
    pub error: ScimError,
    pub unknown: bool,
}

/// Settles a deactivation or deletion of `id`. A failure that may have been applied (its
/// answer lost or unreadable, its retries spent, or cut short by a stop) is read back, not
/// guessed: gone, or (`deactivation`) inactive, is success; an object that cannot be read
/// leaves the outcome unknown.
pub async fn settle_removal(
    client: &ScimClient,
    resource: &str,
    id: &str,
    deactivation: bool,
    result: Result<(), ScimError>,
) -> Result<(), Failure> {
    let Err(error) = result else {
        return Ok(());
    };
    if certainly_not_applied(&error) {
        return Err(Failure {
            error,
            unknown: false,
        });
    }
    match removal_outcome(client, resource, id, deactivation).await {
        Some(true) => Ok(()),
        outcome => Err(Failure {
            error,
            unknown: outcome.is_none(),
        }),
    }
}

/// Whether a removal happened, as the object reads now; `None` when it cannot be read.
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
