//! Stopping a run: SIGTERM, the policy timeout, or the failure threshold. Workers check it
//! before every write; in-flight writes finish.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// Why a run stopped early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// SIGTERM or SIGINT: the Job is being deleted or the run replaced.
    Signal,
    /// The policy's `timeout` elapsed.
    Timeout,
    /// Failed changes exceeded `maxFailurePercent`.
    TooManyFailures,
    /// The journal of the next writes could not be written to the run's status: a write
    /// not on record could not be settled after a kill, so none starts.
    Unrecorded,
}

/// A cloneable stop flag; the first reason wins.
#[derive(Clone, Debug)]
pub struct Stop {
    tx: Arc<watch::Sender<Option<StopReason>>>,
}

impl Default for Stop {
    fn default() -> Self {
        Stop {
            tx: Arc::new(watch::channel(None).0),
        }
    }
}

impl Stop {
    pub fn stop(&self, reason: StopReason) {
        self.tx.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason);
                true
            } else {
                false
            }
        });
    }

    pub fn reason(&self) -> Option<StopReason> {
        *self.tx.borrow()
    }

    pub fn is_stopped(&self) -> bool {
        self.reason().is_some()
    }

    /// Resolves once stopped.
    pub async fn stopped(&self) -> StopReason {
        let mut rx = self.tx.subscribe();
        let r = rx.wait_for(Option::is_some).await.expect("sender alive");
        r.expect("checked by wait_for")
    }

    /// Stops with `reason` once `after` has passed.
    pub fn after(&self, after: Duration, reason: StopReason) {
        let stop = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            stop.stop(reason);
        });
    }

    /// Stops on the first SIGTERM or SIGINT.
    pub fn on_signals(&self) {
        let stop = self.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                tracing::warn!("cannot install signal handlers");
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("signal received: no new writes, finishing in-flight ones");
            stop.stop(StopReason::Signal);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_reason_wins_and_waiters_wake() {
        let s = Stop::default();
        let w = {
            let s = s.clone();
            tokio::spawn(async move { s.stopped().await })
        };
        tokio::task::yield_now().await;
        s.stop(StopReason::Signal);
        s.stop(StopReason::Timeout);
        assert_eq!(w.await.unwrap(), StopReason::Signal);
        assert_eq!(s.reason(), Some(StopReason::Signal));
        // A waiter arriving after the stop resolves at once.
        assert_eq!(s.stopped().await, StopReason::Signal);
    }
}
