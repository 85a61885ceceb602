//! CatalogApp: provisioning checks, the grant and record groups, scheduling of runs, the
//! status that mirrors them.
//!
//! - `decide`: the whole policy, pure — inputs to a [`Plan`] (status, runs to
//!   create, cancel and prune, events), one step per concern;
//! - `lanes`: the Import and Provision lanes — schedules, on-demand requests,
//!   concurrency — used by `decide`;
//! - `runs`: the app's SyncRuns — which are active or last, which to prune,
//!   their names and objects, the API calls that create, cancel and delete them;
//! - `probes`: the provisioning checks (domain, endpoint, the app's two groups);
//! - `texts`: messages about runs for conditions and events;
//! - here: `reconcile`, which gathers the inputs, decides, applies the plan and
//!   writes the status.

mod decide;
mod lanes;
mod probes;
mod runs;
mod texts;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::{Context, Error, Result};
use crate::api::{CatalogApp, CatalogAppStatus, Direction, Mode, RunPhase, RunSummary, SyncRun};
use crate::cluster::status;

pub use decide::{Inputs, NewRun, Plan, PolicyState, ProvisioningState, decide};
pub use runs::{new_run, run_name};

pub const PROVISIONING_ENABLED: &str = "ProvisioningEnabled";
pub const SYNCHRONIZATION_ENABLED: &str = "SynchronizationEnabled";
pub const SYNCHRONIZING: &str = "Synchronizing";
pub const LIMIT_EXCEEDED: &str = "LimitExceeded";

pub const IDENTITY_DOMAIN_NOT_FOUND: &str = "IdentityDomainNotFound";
pub const IDENTITY_DOMAIN_NOT_READY: &str = "IdentityDomainNotReady";
/// A group named as the app's grant or record group is not the app's: no ownership mark
/// (and `adoptExistingGroups` is off), another app's mark, or several of that name.
pub const GROUP_NOT_OWNED: &str = "GroupNotOwned";
/// An attribute mapping names a path the User schema does not have.
pub const INVALID_MAPPING: &str = "InvalidMapping";

pub async fn reconcile(app: Arc<CatalogApp>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile("CatalogApp");
    let ns = app
        .namespace()
        .ok_or_else(|| Error::NoNamespace(app.name_any()))?;
    if app.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }

    // Dereference.
    let (provisioning, tolerated) = probes::check_provisioning(&ctx, &app, &ns).await?;
    let (policy_name, policy) = super::policy_of(&ctx, &app, &ns).await?;
    let policy = match (&policy_name, &policy) {
        (None, _) => PolicyState::NotReferenced,
        (Some(_), Some(p)) => PolicyState::Found(p),
        (Some(name), None) => PolicyState::NotFound(name),
    };
    let runs_api: Api<SyncRun> = Api::namespaced(ctx.client.clone(), &ns);
    let runs: Vec<SyncRun> = runs_api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|r| r.spec.app_ref.name == app.name_any())
        .collect();

    let live_jobs = runs::live_jobs(&ctx, &ns, &app.name_any(), &runs).await?;

    let plan = decide(&Inputs {
        app: &app,
        now: Utc::now(),
        provisioning: &provisioning,
        policy,
        runs: &runs,
        live_jobs: &live_jobs,
    });

    // Apply: cancel, create, prune.
    for (run, why) in &plan.cancel {
        let replaced = plan.replaced.contains(run);
        runs::cancel(&ctx, &ns, run, why, replaced).await?;
    }
    runs::create(&runs_api, &app, &plan.create).await?;
    runs::delete(&runs_api, &plan.prune).await?;

    report(&ctx, &app, &ns, &plan).await?;
    report_last_successes(&ctx, &ns, &app.name_any(), &runs);
    let mut requeue = plan.requeue.min(ctx.config.recheck);
    if tolerated || matches!(provisioning, ProvisioningState::Failed(_)) {
        requeue = requeue.min(super::FAILURE_RECHECK);
    }
    Ok(Action::requeue(requeue.max(Duration::from_secs(1))))
}

/// Writes the status (only when it changed: no churn), the app's condition
/// metrics, the plan's events and the runs seen finishing.
async fn report(ctx: &Context, app: &CatalogApp, ns: &str, plan: &Plan) -> Result<()> {
    let name = app.name_any();
    if app.status.as_ref() != Some(&plan.status) {
        let api: Api<CatalogApp> = Api::namespaced(ctx.client.clone(), ns);
        status::apply(
            &api,
            &name,
            status::CONTROLLER_MANAGER,
            serde_json::to_value(&plan.status).expect("status serializes"),
        )
        .await?;
    }
    let conditions: Vec<_> = plan
        .status
        .conditions
        .iter()
        .map(|c| (c.type_.clone(), c.status == "True"))
        .collect();
    ctx.metrics.set_app_conditions(ns, &name, &conditions);
    let reference = app.object_ref(&());
    for event in &plan.events {
        ctx.publish(&reference, event).await;
    }
    for run in &plan.finished {
        let (direction, phase) = (format!("{:?}", run.direction), format!("{:?}", run.phase));
        let seconds = finished_summary(&plan.status, run.direction).and_then(run_seconds);
        ctx.metrics
            .run_finished(&direction, &phase, &run.reason, seconds);
    }
    Ok(())
}

/// The last-success gauges of the app, from its runs (the gauge keeps the newest,
/// so a success pruned from the history is not forgotten while the process runs).
fn report_last_successes(ctx: &Context, ns: &str, name: &str, runs: &[SyncRun]) {
    for (direction, unix) in last_successes(runs) {
        ctx.metrics
            .set_last_success(ns, name, &format!("{direction:?}"), unix);
    }
}

/// The summary of the last finished run in `direction`: the run `plan.finished` reports.
fn finished_summary(status: &CatalogAppStatus, direction: Direction) -> Option<&RunSummary> {
    match direction {
        Direction::Import => status.last_run.as_ref(),
        Direction::Provision => status.last_provisioning_run.as_ref(),
    }
}

/// completionTime - startTime, when the run has both (a run cancelled before its Job
/// started has no start).
fn run_seconds(run: &RunSummary) -> Option<f64> {
    let (start, end) = (run.start_time.as_ref()?, run.completion_time.as_ref()?);
    let seconds = end.0.duration_since(start.0).as_secs_f64();
    (seconds >= 0.0).then_some(seconds)
}

/// Per direction, the completion time (unix seconds) of the newest succeeded run. A
/// dry-run plan changes nothing, so it is no successful synchronization.
fn last_successes(runs: &[SyncRun]) -> Vec<(Direction, f64)> {
    let succeeded = runs
        .iter()
        .filter(|r| r.spec.mode != Mode::Plan)
        .filter_map(|r| {
            let status = r.status.as_ref()?;
            let done = status.completion_time.as_ref()?.0;
            (status.phase == Some(RunPhase::Succeeded))
                .then(|| (r.spec.direction, done.as_millisecond() as f64 / 1000.0))
        });
    let mut last: Vec<(Direction, f64)> = Vec::new();
    for (direction, unix) in succeeded {
        match last.iter_mut().find(|(d, _)| *d == direction) {
            Some((_, t)) => *t = t.max(unix),
            None => last.push((direction, unix)),
        }
    }
    last
}

#[cfg(test)]
mod tests;
