//! Run progress: the state workers update in memory, and the reporter task that writes it
//! to the SyncRun's status every ~1.5 s (never per account), under the Job's field manager.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Api;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{
    AppliedLimits, Counts, InFlightWrite, PlannedCounts, Progress, RunItem, RunPhase, Stage,
    SyncRun,
};
use crate::cluster::conditions::{self, DesiredCondition};
use crate::cluster::status;

/// How many failures a status lists.
pub const MAX_FAILURES_LISTED: usize = 10;
/// How often the reporter writes while a run is active.
pub const REPORT_INTERVAL: Duration = Duration::from_millis(1500);

/// Everything the Job reports about its run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunState {
    pub phase: Option<RunPhase>,
    pub stage: Option<Stage>,
    pub start_time: Option<Time>,
    pub completion_time: Option<Time>,
    pub processed: u64,
    pub total: u64,
    pub counts: Counts,
    pub planned: Option<PlannedCounts>,
    pub plan_digest: Option<String>,
    pub limits: Option<AppliedLimits>,
    pub plan_items: Vec<RunItem>,
    pub failures: Vec<RunItem>,
    /// The write-ahead journal: writes started and not yet counted, by action and id.
    pub in_flight: BTreeMap<(String, String), InFlightWrite>,
    /// Journal entries whose write failed with its outcome unknown: they stay in the
    /// journal when the apply ends.
    pub unknown: BTreeSet<(String, String)>,
    pub conditions: Vec<DesiredCondition>,
    pub message: Option<String>,
}

impl RunState {
    /// The status object the Job applies. Every field the Job owns is always present, since
    /// a server-side apply removes owned fields it omits.
    pub fn to_status(&self, previous: &[Condition], generation: Option<i64>, now: &Time) -> Value {
        let mut s = serde_json::Map::new();
        let mut put = |k: &str, v: Value| {
            if !v.is_null() {
                s.insert(k.into(), v);
            }
        };
        put("phase", json!(self.phase));
        put("stage", json!(self.stage));
        put("startTime", json!(self.start_time));
        put("completionTime", json!(self.completion_time));
        if self.stage.is_some() {
            put("progress", json!(Progress::new(self.processed, self.total)));
        }
        put("counts", json!(self.counts));
        put("planned", json!(self.planned));
        put("planDigest", json!(self.plan_digest));
        put("limits", json!(self.limits));
        put("planItems", json!(self.plan_items));
        put("failures", json!(self.failures));
        put(
            "inFlight",
            json!(self.in_flight.values().collect::<Vec<_>>()),
        );
        put("message", json!(self.message));
        // Explicit: the kstatus conditions are shared with the controller (see
        // `run_conditions`), and the run's own are always True or False anyway.
        put(
            "conditions",
            json!(conditions::merge_explicit(
                previous,
                &self.desired_conditions(),
                generation,
                now
            )),
        );
        Value::Object(s)
    }

    /// The outcome's conditions once it is known (they include kstatus's); while the run
    /// works, `Reconciling` with the stage as reason and the activity as message.
    fn desired_conditions(&self) -> Vec<DesiredCondition> {
        let mut c = self.conditions.clone();
        if let Some(phase) = self.phase.filter(|p| !p.is_finished()) {
            let reason = match self.stage {
                Some(stage) => format!("{stage:?}"),
                None => format!("{phase:?}"),
            };
            let message = self.message.as_deref().unwrap_or_default();
            c.extend(conditions::run_conditions(phase, &reason, message));
        }
        c
    }

    /// Moves `n` accounts from `skipped` to `to`.
    pub fn settle(&mut self, n: u64, to: Bucket) {
        let c = &mut self.counts;
        c.skipped -= n as i64;
        *match to {
            Bucket::AlreadyLinked => &mut c.already_linked,
            Bucket::Linked => &mut c.linked,
            Bucket::Created => &mut c.created,
            Bucket::Revoked => &mut c.revoked,
            Bucket::Disputed => &mut c.disputed,
            Bucket::Failed => &mut c.failed,
        } += n as i64;
    }

    /// Takes a journal entry off the record: call it in the same update that counts what
    /// the write did, so that no status shows a write both counted and in flight.
    pub fn retire(&mut self, action: &str, id: &str) {
        self.in_flight.remove(&(action.to_string(), id.to_string()));
    }

    /// Leaves a journaled write in the journal past the apply: it may have happened (its
    /// answer was lost or unreadable, and the lookup that would settle it failed), so the
    /// status lists it in flight rather than guess.
    pub fn keep_unknown(&mut self, action: &str, id: &str) {
        self.unknown.insert((action.to_string(), id.to_string()));
    }

    /// A one-line description of the current activity.
    pub fn activity(&self) -> String {
        let p = Progress::new(self.processed, self.total);
        match self.stage {
            Some(Stage::Listing) => format!("listing: {} objects read", p.processed),
            Some(Stage::Planning) => format!("planning: {}/{} checked", p.processed, p.total),
            Some(Stage::Applying) => format!(
                "applying: {}/{} ({}%), {} linked, {} created, {} deleted, {} failed",
                p.processed,
                p.total,
                p.percent,
                self.counts.linked,
                self.counts.created,
                self.counts.deleted,
                self.counts.failed + self.counts.failed_records
            ),
            _ => String::new(),
        }
    }
}

/// Where an account with a planned write lands once the write was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    AlreadyLinked,
    Linked,
    Created,
    Revoked,
    /// A create met an object that the rules do not give to the account.
    Disputed,
    Failed,
}

/// The shared, lock-protected run state. Workers hold the lock for a few instructions.
/// Status writes take turns (`writing`): a later write always carries a later state, so the
/// journal on record never goes back.
#[derive(Clone, Default)]
pub struct Tracker {
    inner: Arc<Mutex<RunState>>,
    writing: Arc<tokio::sync::Mutex<()>>,
}

impl Tracker {
    pub fn new(state: RunState) -> Self {
        Tracker {
            inner: Arc::new(Mutex::new(state)),
            writing: Arc::default(),
        }
    }

    /// Runs `f` on the state.
    pub fn update<R>(&self, f: impl FnOnce(&mut RunState) -> R) -> R {
        f(&mut self.inner.lock().expect("run state lock"))
    }

    pub fn snapshot(&self) -> RunState {
        self.update(|s| s.clone())
    }

    /// Enters a stage with `total` items to go.
    pub fn stage(&self, stage: Stage, total: u64) {
        self.update(|s| {
            s.stage = Some(stage);
            s.processed = 0;
            s.total = total;
        });
    }

    /// Publishes a computed plan: its counts, planned writes and first items.
    pub fn publish_plan(&self, counts: &Counts, planned: &PlannedCounts, items: Vec<RunItem>) {
        self.update(|s| {
            s.counts = counts.clone();
            s.planned = Some(planned.clone());
            s.plan_items = items;
        });
    }

    pub fn advance(&self, n: u64) {
        self.update(|s| s.processed += n);
    }

    /// Moves `n` accounts whose planned write was made (or failed) from `skipped` to
    /// where they landed.
    pub fn settle(&self, n: u64, to: Bucket) {
        self.update(|s| s.settle(n, to));
    }

    /// Settles one account whose journaled write (`action` on `id`) was made, and takes
    /// the write off the journal in the same update.
    pub fn settle_journaled(&self, to: Bucket, action: &str, id: &str) {
        self.update(|s| {
            s.settle(1, to);
            s.retire(action, id);
        });
    }

    /// Lists a failed item (the first few, with their reason); the caller counts it.
    pub fn fail(&self, action: &str, subject: &str, reason: String) {
        self.update(|s| {
            if s.failures.len() < MAX_FAILURES_LISTED {
                s.failures.push(RunItem {
                    action: action.into(),
                    subject: subject.into(),
                    reason: Some(reason),
                });
            }
        });
    }
}

/// Writes the status of `name` from the tracker.
pub async fn write(
    api: &Api<SyncRun>,
    name: &str,
    tracker: &Tracker,
    previous: &[Condition],
    generation: Option<i64>,
) -> kube::Result<()> {
    let _turn = tracker.writing.lock().await;
    let mut snap = tracker.snapshot();
    if snap.message.is_none() || snap.phase == Some(RunPhase::Running) {
        snap.message = Some(snap.activity()).filter(|m| !m.is_empty());
    }
    let now = Time(jiff::Timestamp::now());
    let body = snap.to_status(previous, generation, &now);
    status::apply(api, name, status::JOB_MANAGER, body).await?;
    Ok(())
}

/// Writes the status now, awaited: what must be on record before the run goes on (the
/// start of the apply, which a retried pod reads).
#[derive(Clone)]
pub struct Checkpoint {
    pub api: Api<SyncRun>,
    pub name: String,
    pub previous: Vec<Condition>,
    pub generation: Option<i64>,
}

impl Checkpoint {
    pub async fn save(&self, tracker: &Tracker) -> kube::Result<()> {
        write(
            &self.api,
            &self.name,
            tracker,
            &self.previous,
            self.generation,
        )
        .await
    }
}

/// A task writing the status every [`REPORT_INTERVAL`] while it changes. Stop it with the
/// returned sender (send `true`) and await the handle before the final write, so no late
/// progress write lands after the outcome.
pub fn spawn_reporter(
    api: Api<SyncRun>,
    name: String,
    tracker: Tracker,
    previous: Vec<Condition>,
    generation: Option<i64>,
) -> (watch::Sender<bool>, JoinHandle<()>) {
    let (tx, mut rx) = watch::channel(false);
    let handle = tokio::spawn(async move {
        let mut last: Option<RunState> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(REPORT_INTERVAL) => {}
                _ = rx.changed() => return,
            }
            if *rx.borrow() {
                return;
            }
            let snap = tracker.snapshot();
            if last.as_ref() == Some(&snap) {
                continue;
            }
            match write(&api, &name, &tracker, &previous, generation).await {
                Ok(()) => last = Some(snap),
                // Progress is best effort: the next tick retries.
                Err(e) => tracing::warn!(run = %name, error = %e, "writing progress failed"),
            }
        }
    });
    (tx, handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn status_has_progress_counts_and_conditions() {
        let state = RunState {
            phase: Some(RunPhase::Running),
            stage: Some(Stage::Applying),
            start_time: Some(t("2026-01-01T00:00:00Z")),
            processed: 42,
            total: 100,
            counts: Counts {
                linked: 40,
                ..Default::default()
            },
            conditions: vec![DesiredCondition::truthy(
                "LimitExceeded",
                "Abort",
                "planned 2 creates, allowed 1",
            )],
            ..Default::default()
        };
        let s = state.to_status(&[], Some(1), &t("2026-01-01T00:01:00Z"));
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["stage"], "Applying");
        assert_eq!(
            s["progress"],
            json!({"processed": 42, "total": 100, "percent": 42})
        );
        assert_eq!(s["counts"]["linked"], 40);
        assert_eq!(s["conditions"][0]["type"], "LimitExceeded");
        assert_eq!(s["conditions"][0]["status"], "True");
        let reconciling = &s["conditions"][2];
        assert_eq!(reconciling["type"], "Reconciling");
        assert_eq!(
            (&reconciling["status"], &reconciling["reason"]),
            (&json!("True"), &json!("Applying"))
        );
        assert!(s.get("completionTime").is_none());
        assert!(s.get("planItems").is_none() || s["planItems"] == json!([]));
        assert!(state.activity().starts_with("applying: 42/100 (42%)"));
    }

    #[test]
    fn failures_are_listed_only_up_to_the_cap() {
        let tr = Tracker::default();
        for i in 0..25 {
            tr.fail("CreateUser", &format!("user{i}"), "HTTP 400".into());
        }
        assert_eq!(tr.snapshot().failures.len(), MAX_FAILURES_LISTED);
    }

    #[test]
    fn settling_moves_accounts_out_of_skipped() {
        let tr = Tracker::default();
        tr.update(|s| s.counts.skipped = 10);
        tr.settle(4, Bucket::Linked);
        tr.settle(1, Bucket::Failed);
        tr.settle(2, Bucket::Created);
        let c = tr.snapshot().counts;
        assert_eq!((c.skipped, c.linked, c.failed, c.created), (3, 4, 1, 2));
    }
}
