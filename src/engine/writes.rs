//! Bookkeeping shared by the apply stages: success and failure counts, the failure
//! threshold, and whether a failed write certainly did not happen (so its allowance returns).

use crate::scim::ScimError;

use super::outcome::FailureGuard;
use super::progress::Tracker;
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

    /// `n` changes failed.
    pub fn failed(&self, n: u64, action: &str, subject: &str, e: &dyn std::fmt::Display) {
        tracing::warn!(action, subject, error = %e, "change failed");
        self.tracker.fail(n, action, subject, e.to_string());
        if self.guard.record(n, n) {
            self.stop.stop(StopReason::TooManyFailures);
        }
    }

    /// `n` changes succeeded.
    pub fn succeeded(&self, n: u64) {
        self.guard.record(n, 0);
    }
}

/// A 4xx other than 429 answered on the first try: the write certainly did not happen.
/// Anything else (5xx, timeouts, exhausted retries) may have been applied.
pub fn certainly_not_applied(e: &ScimError) -> bool {
    matches!(e, ScimError::Status { status, .. } if (400..500).contains(status) && *status != 429)
}
