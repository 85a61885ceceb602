//! When the parallel stage records what it created: in small batches, so that a run killed
//! mid-apply leaves few created users or accounts unrecorded until the next run, yet with
//! the batches' group PATCHes held to a small share of the apply's time. A PATCH of a
//! 100,000-member group costs a server seconds whatever it adds: recording 1,000 creates
//! 50 at a time took longer than the creates themselves (docs/benchmarks.md).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Created users (or accounts) recorded per PATCH at most while the creates go on.
pub(crate) const RECORD_BATCH: usize = 50;

/// The batches may take one part in `SHARE` of the time since the apply began.
const SHARE: u32 = 20;

/// Whether the batches so far (`spent`) leave room for another within the share of
/// `elapsed`. Pure.
fn within_share(spent: Duration, elapsed: Duration) -> bool {
    spent * SHARE <= elapsed
}

/// Paces the record batches of one apply.
pub(crate) struct RecordPacer {
    started: Instant,
    spent: Mutex<Duration>,
}

impl RecordPacer {
    pub(crate) fn new() -> Self {
        RecordPacer {
            started: Instant::now(),
            spent: Mutex::new(Duration::ZERO),
        }
    }

    /// Whether `pending` records are due now: a full batch, and the earlier batches within
    /// their share of the time.
    pub(crate) fn due(&self, pending: usize) -> bool {
        let spent = *self.spent.lock().expect("pacer lock");
        pending >= RECORD_BATCH && within_share(spent, self.started.elapsed())
    }

    /// Counts a batch that took `took`.
    fn spent(&self, took: Duration) {
        *self.spent.lock().expect("pacer lock") += took;
    }

    /// Runs `flush` when `pending` records are [due](Self::due), counting its time.
    pub(crate) async fn flush_if_due<F: Future<Output = ()>>(
        &self,
        pending: usize,
        flush: impl FnOnce() -> F,
    ) {
        if self.due(pending) {
            let started = Instant::now();
            flush().await;
            self.spent(started.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_keep_to_their_share_of_the_time() {
        let s = Duration::from_secs;
        assert!(within_share(s(0), s(0)), "the first batch is due at once");
        assert!(within_share(s(1), s(20)));
        assert!(
            !within_share(s(1), s(19)),
            "one second of PATCH needs 20 of apply"
        );
        // A slow group: 8 s per PATCH allows one batch per 160 s.
        assert!(!within_share(s(8), s(100)));
        assert!(within_share(s(8), s(160)));
    }

    #[test]
    fn a_batch_is_due_only_when_full_and_within_share() {
        let p = RecordPacer::new();
        assert!(!p.due(RECORD_BATCH - 1));
        assert!(p.due(RECORD_BATCH));
        p.spent(Duration::from_secs(3600));
        assert!(
            !p.due(10 * RECORD_BATCH),
            "an hour of PATCH, a moment of apply"
        );
    }

    #[tokio::test]
    async fn a_flush_runs_when_due_and_its_time_holds_back_the_next() {
        let p = RecordPacer::new();
        let ran = Mutex::new(0);
        let flush = || async {
            *ran.lock().unwrap() += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        p.flush_if_due(RECORD_BATCH - 1, flush).await;
        assert_eq!(*ran.lock().unwrap(), 0, "not a full batch");
        p.flush_if_due(RECORD_BATCH, flush).await;
        assert_eq!(*ran.lock().unwrap(), 1);
        // 100 ms of flush in ~100 ms of apply: the next waits until 2 s have passed.
        p.flush_if_due(RECORD_BATCH, flush).await;
        assert_eq!(*ran.lock().unwrap(), 1, "the share is spent");
    }
}
