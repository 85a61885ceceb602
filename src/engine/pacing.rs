//! When the parallel stage records what it created: in batches while the creates go on, so
//! that a run killed mid-apply leaves few created users or accounts unrecorded until the
//! next run, yet with the batches' group PATCHes held to a small share of the apply's time.
//! A PATCH of a 100,000-member group costs a server seconds whatever it adds: recording
//! 1,000 creates 50 at a time took longer than the creates themselves, and batches started
//! side by side before the first one's cost was known still sent three times the PATCHes
//! the run needs (docs/benchmarks.md). A user left unrecorded is no risk: it carries its
//! account's id, and the next run links it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Created users (or accounts) pending before a batch is worth a PATCH.
pub(crate) const RECORD_BATCH: usize = 50;

/// The batches may take one part in `SHARE` of the time since the apply began.
const SHARE: u32 = 20;

/// What a batch is taken to cost before one is measured: the first comes after 20 s of
/// apply at the earliest, so that a short apply records everything in its final batch.
const UNMEASURED: Duration = Duration::from_secs(1);

/// The batches of one apply so far.
#[derive(Debug, Default)]
struct Batches {
    /// Time the finished batches took; none finished yet: `None`.
    spent: Option<Duration>,
    /// A batch is being written: the next waits for its cost.
    writing: bool,
}

/// Whether `pending` records are due after `elapsed` of apply: a full batch, no batch being
/// written, and the batches so far within their share of the time. Pure.
fn due(b: &Batches, pending: usize, elapsed: Duration) -> bool {
    let spent = b.spent.unwrap_or(UNMEASURED);
    !b.writing && pending >= RECORD_BATCH && spent * SHARE <= elapsed
}

/// Paces the record batches of one apply.
pub(crate) struct RecordPacer {
    started: Instant,
    batches: Mutex<Batches>,
}

impl RecordPacer {
    pub(crate) fn new() -> Self {
        RecordPacer {
            started: Instant::now(),
            batches: Mutex::new(Batches::default()),
        }
    }

    /// Takes the turn to write a batch of `pending` records, if one is [due].
    fn take_turn(&self, pending: usize) -> bool {
        let mut b = self.batches.lock().expect("pacer lock");
        let turn = due(&b, pending, self.started.elapsed());
        b.writing |= turn;
        turn
    }

    /// Ends the turn of a batch that took `took`.
    fn written(&self, took: Duration) {
        let mut b = self.batches.lock().expect("pacer lock");
        b.spent = Some(b.spent.unwrap_or_default() + took);
        b.writing = false;
    }

    /// Runs `flush` when `pending` records are due, counting its time.
    pub(crate) async fn flush_if_due<F: Future<Output = ()>>(
        &self,
        pending: usize,
        flush: impl FnOnce() -> F,
    ) {
        if self.take_turn(pending) {
            let started = Instant::now();
            flush().await;
            self.written(started.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batches(spent: Option<u64>, writing: bool) -> Batches {
        Batches {
            spent: spent.map(Duration::from_secs),
            writing,
        }
    }

    #[test]
    fn the_first_batch_waits_for_20_s_of_apply() {
        let s = Duration::from_secs;
        let none = batches(None, false);
        assert!(
            !due(&none, RECORD_BATCH, s(19)),
            "a short apply: one batch at its end"
        );
        assert!(due(&none, RECORD_BATCH, s(20)));
        assert!(!due(&none, RECORD_BATCH - 1, s(60)), "not a full batch");
    }

    #[test]
    fn batches_keep_to_their_share_of_the_time() {
        let s = Duration::from_secs;
        assert!(
            due(&batches(Some(0), false), RECORD_BATCH, s(0)),
            "cheap PATCHes: at once"
        );
        assert!(due(&batches(Some(1), false), RECORD_BATCH, s(20)));
        assert!(!due(&batches(Some(1), false), RECORD_BATCH, s(19)));
        // A slow group: 8 s per batch allows one per 160 s.
        assert!(!due(&batches(Some(8), false), RECORD_BATCH, s(100)));
        assert!(due(&batches(Some(8), false), RECORD_BATCH, s(160)));
    }

    #[test]
    fn one_batch_at_a_time() {
        let b = batches(Some(0), true);
        assert!(!due(&b, 10 * RECORD_BATCH, Duration::from_secs(3600)));
    }

    #[test]
    fn a_turn_is_taken_once_and_its_time_holds_back_the_next() {
        let p = RecordPacer {
            started: Instant::now() - Duration::from_secs(60),
            batches: Mutex::new(Batches::default()),
        };
        assert!(p.take_turn(RECORD_BATCH));
        assert!(!p.take_turn(RECORD_BATCH), "the first is being written");
        p.written(Duration::from_secs(2));
        assert!(p.take_turn(RECORD_BATCH), "2 s of batches in 60 s of apply");
        p.written(Duration::from_secs(2));
        assert!(
            !p.take_turn(RECORD_BATCH),
            "4 s of batches need 80 s of apply"
        );
    }

    #[tokio::test]
    async fn a_due_flush_runs() {
        let p = RecordPacer {
            started: Instant::now() - Duration::from_secs(60),
            batches: Mutex::new(Batches::default()),
        };
        let ran = Mutex::new(0);
        let flush = || async { *ran.lock().unwrap() += 1 };
        p.flush_if_due(RECORD_BATCH - 1, flush).await;
        assert_eq!(*ran.lock().unwrap(), 0, "not a full batch");
        p.flush_if_due(RECORD_BATCH, flush).await;
        assert_eq!(*ran.lock().unwrap(), 1);
        assert!(!p.batches.lock().unwrap().writing, "the turn ended");
    }
}
