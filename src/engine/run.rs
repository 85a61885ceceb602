//! Executing one SyncRun: read it (a finished run is not run again), write `Running`,
//! load and run its direction through the [`pipeline`](super::pipeline) while the
//! reporter writes progress, then write the final phase, message and conditions and
//! return the exit code.

use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Api, Client, ResourceExt};
use tracing::Instrument;

use crate::api::{CANCEL_ANNOTATION, Direction, RunPhase, Stage, SyncRun, SyncRunStatus};

use super::error::{INTERRUPTED, RunError};
use super::journal;
use super::load;
use super::outcome::{self, Observed, Outcome};
use super::pipeline;
use super::progress::{self, RunState, Tracker};
use super::stop::{Stop, StopReason};

/// Executes the SyncRun `namespace/name` and returns the process exit code.
pub async fn execute(client: Client, namespace: &str, name: &str, stop: Stop) -> u8 {
    let runs: Api<SyncRun> = Api::namespaced(client.clone(), namespace);
    let run = match runs.get(name).await {
        Ok(r) => r,
        Err(e) => {
            let e = RunError::reading(&format!("SyncRun {namespace}/{name}"), e);
            tracing::error!(run = %format!("{namespace}/{name}"), error = %e, "cannot start");
            return e.exit_code();
        }
    };
    let previous = run.status.clone().unwrap_or_default();
    if let Some(phase) = previous.phase.filter(|p| p.is_finished()) {
        // A Job retried after the run finished must not run it again.
        tracing::info!(run = name, ?phase, "run already finished");
        return outcome::exit_code_of(phase);
    }
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let tracker = Tracker::new(RunState {
        phase: Some(RunPhase::Running),
        stage: Some(Stage::Listing),
        start_time: Some(previous.start_time.clone().unwrap_or(now)),
        ..Default::default()
    });
    if interrupted(&previous) {
        // What the interrupted attempt reported stays the run's account of it.
        tracker.update(|s| {
            s.counts = previous.counts.clone().unwrap_or_default();
            s.planned = previous.planned.clone();
            s.limits = previous.limits.clone();
            s.plan_digest = previous.plan_digest.clone();
            s.plan_items = previous.plan_items.clone();
            s.failures = previous.failures.clone();
            s.in_flight = previous
                .in_flight
                .iter()
                .map(|e| ((e.action.clone(), e.id.clone()), e.clone()))
                .collect();
        });
    }
    let span = tracing::info_span!("sync", run = %format!("{namespace}/{name}"), app = %run.spec.app_ref.name, direction = ?run.spec.direction, mode = ?run.spec.mode);
    execute_run(client, runs, run, previous, tracker, stop)
        .instrument(span)
        .await
}

async fn execute_run(
    client: Client,
    runs: Api<SyncRun>,
    run: SyncRun,
    previous: SyncRunStatus,
    tracker: Tracker,
    stop: Stop,
) -> u8 {
    let name = run.metadata.name.clone().unwrap_or_default();
    let name = name.as_str();
    let namespace = run.metadata.namespace.clone().unwrap_or_default();
    let generation = run.metadata.generation;
    if let Err(e) = progress::write(&runs, name, &tracker, &previous.conditions, generation).await {
        tracing::warn!(error = %e, "writing the Running status failed");
    }

    let (stop_reporter, reporter) = progress::spawn_reporter(
        runs.clone(),
        name.to_string(),
        tracker.clone(),
        previous.conditions.clone(),
        generation,
    );
    let (mut outcome, mut code) = run_stages(&client, &namespace, &run, &tracker, &stop).await;
    let _ = stop_reporter.send(true);
    let _ = reporter.await;
    // Stopped by a signal: the controller's cancel, or an interruption (the default).
    if stop.reason() == Some(StopReason::Signal)
        && outcome.reason == INTERRUPTED
        && let Some(why) = cancelled(&runs, name).await
    {
        outcome = Outcome::cancelled(&why, &tracker.snapshot().counts);
        code = outcome.exit_code();
    }

    tracker.update(|s| {
        s.phase = Some(outcome.phase);
        s.stage = Some(Stage::Done);
        s.completion_time = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        s.message = Some(outcome.message.clone());
        s.conditions = outcome.conditions.clone();
    });
    log_finished(&outcome, &tracker.snapshot());
    // The final status is the run's result: retry it a few times.
    for attempt in 1..=5u32 {
        match progress::write(&runs, name, &tracker, &previous.conditions, generation).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(attempt, error = %e, "writing the final status failed");
                tokio::time::sleep(Duration::from_millis(500 * attempt as u64)).await;
            }
        }
    }
    code
}

/// Loads the run, runs its direction and decides the outcome and exit code.
async fn run_stages(
    client: &Client,
    namespace: &str,
    run: &SyncRun,
    tracker: &Tracker,
    stop: &Stop,
) -> (Outcome, u8) {
    match load_and_run(client, namespace, run, tracker, stop).await {
        Ok(observed) => {
            let o = outcome::decide(run.spec.mode, &tracker.snapshot().counts, &observed);
            let code = o.exit_code();
            (o, code)
        }
        Err(e) => (Outcome::of_error(&e), e.exit_code()),
    }
}

/// A previous attempt of the run (its Job's earlier pod) reached the apply stage.
fn interrupted(previous: &SyncRunStatus) -> bool {
    previous.phase == Some(RunPhase::Running) && previous.stage == Some(Stage::Applying)
}

async fn load_and_run(
    client: &Client,
    namespace: &str,
    run: &SyncRun,
    tracker: &Tracker,
    stop: &Stop,
) -> Result<Observed, RunError> {
    if interrupted(&run.status.clone().unwrap_or_default()) {
        // Not applied again (one run, one budget); what the killed attempt had in flight
        // is looked up and counted. If the servers cannot be reached, it stays in flight.
        match load::load(client, namespace, run, stop).await {
            Ok(loaded) => journal::settle(&loaded.lookups(), tracker).await,
            Err(e) => tracing::warn!(error = %e, "cannot settle the interrupted attempt's writes"),
        }
        return Err(RunError::Interrupted);
    }
    let loaded = load::load(client, namespace, run, stop).await?;
    let (domain, app) = (loaded.domain_client.clone(), loaded.app_client.clone());
    let started = Instant::now();
    let observed = match run.spec.direction {
        Direction::Import => pipeline::run(&loaded.import(run, tracker, stop)?).await,
        Direction::Provision => pipeline::run(&loaded.provision(run, tracker, stop)?).await,
    };
    // Cost of the run, for capacity planning: requests per side, retries, wall time.
    tracing::info!(
        domain_requests = domain.requests(),
        domain_retries = domain.retries(),
        app_requests = app.requests(),
        app_retries = app.retries(),
        seconds = started.elapsed().as_secs_f64(),
        "SCIM traffic"
    );
    observed
}

/// Why the controller cancelled the run, if it did: it marks the run (annotation) before
/// deleting its Job, and a run deleted by a person takes its Job with it. Else the pod
/// was stopped on its own (deleted, evicted, drained): `None`.
async fn cancelled(runs: &Api<SyncRun>, name: &str) -> Option<String> {
    match runs.get_opt(name).await {
        Ok(Some(run)) => cancel_reason(&run),
        Ok(None) => Some(DELETED.to_string()),
        Err(e) => {
            tracing::warn!(error = %e, "reading the run to tell a cancel from an interruption");
            None
        }
    }
}

const DELETED: &str = "cancelled: the SyncRun was deleted";

/// The controller's cancel reason on `run`, or that the run is being deleted.
fn cancel_reason(run: &SyncRun) -> Option<String> {
    if let Some(why) = run.annotations().get(CANCEL_ANNOTATION) {
        return Some(why.clone());
    }
    run.metadata
        .deletion_timestamp
        .is_some()
        .then(|| DELETED.to_string())
}

fn log_finished(outcome: &Outcome, fin: &RunState) {
    tracing::info!(
        phase = ?outcome.phase,
        app_accounts = fin.counts.app_accounts,
        domain_users = fin.counts.domain_users,
        already_linked = fin.counts.already_linked,
        linked = fin.counts.linked,
        created = fin.counts.created,
        updated = fin.counts.updated,
        deleted = fin.counts.deleted,
        unmatched = fin.counts.unmatched,
        disputed = fin.counts.disputed,
        failed = fin.counts.failed,
        // Not `message`: that is the event's own key in JSON logs.
        summary = %outcome.message,
        peak_rss_kib = crate::telemetry::peak_rss_kib(),
        "run finished"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(metadata: serde_json::Value) -> SyncRun {
        serde_json::from_value(serde_json::json!({
            "metadata": metadata, "spec": {"appRef": {"name": "slack"}}
        }))
        .unwrap()
    }

    #[test]
    fn only_the_controllers_mark_or_a_deletion_is_a_cancel() {
        let marked = run(serde_json::json!({"name": "r", "annotations": {
            CANCEL_ANNOTATION: "cancelled: synchronization was disabled"}}));
        assert_eq!(
            cancel_reason(&marked).as_deref(),
            Some("cancelled: synchronization was disabled")
        );
        let deleting = run(serde_json::json!({"name": "r",
            "deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["foregroundDeletion"]}));
        assert_eq!(cancel_reason(&deleting).as_deref(), Some(DELETED));
        // A pod deleted by a person, evicted or drained leaves the run unmarked.
        let plain = run(serde_json::json!({"name": "r", "annotations": {"team": "a"}}));
        assert_eq!(cancel_reason(&plain), None);
    }
}
