//! The app's SyncRuns: what the policy reads of them (active, last finished,
//! beyond the history limits), their names, the object for a new run, and the
//! API calls that create, cancel and prune them.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{
    Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, PropagationPolicy,
};
use kube::{Resource, ResourceExt};

use super::decide::{NewRun, Plan};
use crate::api::{
    CatalogApp, Direction, LocalRef, Mode, RunPhase, RunSummary, SyncPolicy, SyncRun, SyncRunSpec,
    Trigger,
};
use crate::controller::sync_run::job::APP_LABEL;
use crate::controller::sync_run::{self, CANCEL_ANNOTATION};
use crate::controller::{Context, Result};

const MAX_NAME: usize = 63;

/// The label that marks a SyncRun the controller created: only such runs are pruned by
/// the history limits. A run without it (e.g. committed to Git) is its author's.
pub const CREATED_BY_LABEL: &str = "catalogsync.io/created-by";
pub const CREATED_BY_CONTROLLER: &str = "catalogsync-controller";

/// A deterministic run name: `<app>-<suffix>`, the app part shortened so the
/// name stays a valid Job name (a label value, at most 63 characters).
pub fn run_name(app: &str, suffix: &str) -> String {
    let keep = MAX_NAME.saturating_sub(suffix.len() + 1);
    let prefix: String = app.chars().take(keep).collect();
    let prefix = prefix.trim_end_matches(['-', '.']);
    format!("{prefix}-{suffix}")
}

/// FNV-1a: stable across Rust versions, unlike `DefaultHasher`.
pub fn short_hash(parts: &[&str]) -> String {
    let mut hash: u64 = 0xcbf29ce484222325;
    for part in parts {
        for byte in part.bytes().chain([0u8]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x100000001b3);
        }
    }
    format!("{:08x}", (hash >> 32) as u32)
}

pub fn phase(run: &SyncRun) -> Option<RunPhase> {
    run.status.as_ref().and_then(|s| s.phase)
}

pub fn is_active(run: &SyncRun) -> bool {
    !sync_run::is_finished(run)
}

fn created(run: &SyncRun) -> Option<jiff::Timestamp> {
    run.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// When a run ended (its completion time, else its creation).
fn ended(run: &SyncRun) -> Option<jiff::Timestamp> {
    run.status
        .as_ref()
        .and_then(|s| s.completion_time.as_ref().map(|t| t.0))
        .or_else(|| created(run))
}

/// The run as the app's status shows it.
pub fn summary(run: &SyncRun) -> RunSummary {
    let status = run.status.clone().unwrap_or_default();
    RunSummary {
        name: run.name_any(),
        phase: status.phase,
        start_time: status.start_time,
        completion_time: status.completion_time,
        counts: status.counts,
        reason: outcome_reason(&status.conditions),
        message: status.message,
    }
}

/// The reason of a finished run's outcome: that of its first true outcome condition (the
/// engine writes Complete/Failed/LimitExceeded, the controller Failed or Cancelled).
pub fn outcome_reason(conditions: &[Condition]) -> Option<String> {
    ["Failed", "Cancelled", "LimitExceeded", "Complete"]
        .iter()
        .find_map(|t| {
            conditions
                .iter()
                .find(|c| c.type_ == *t && c.status == "True")
        })
        .map(|c| c.reason.clone())
}

/// The active runs: the one executing (has a Job) first, then the newest.
pub fn active(runs: &[SyncRun]) -> Vec<&SyncRun> {
    let mut active: Vec<&SyncRun> = runs.iter().filter(|r| is_active(r)).collect();
    active.sort_by_key(|r| {
        let has_job = r.status.as_ref().is_some_and(|s| s.job_name.is_some());
        std::cmp::Reverse((has_job, created(r)))
    });
    active
}

/// Whether the plan cancels the run already.
pub fn is_cancelled(run: &SyncRun, plan: &Plan) -> bool {
    plan.cancel.iter().any(|(name, _)| *name == run.name_any())
}

/// The run of `direction` that ended last; with `apply_only`, of the runs in mode Apply.
pub fn last_finished(runs: &[SyncRun], direction: Direction, apply_only: bool) -> Option<&SyncRun> {
    runs.iter()
        .filter(|r| r.spec.direction == direction && !is_active(r))
        .filter(|r| !apply_only || r.spec.mode == Mode::Apply)
        .max_by_key(|r| (ended(r), created(r)))
}

/// The summary the status should show: the one from the runs, unless the status already
/// shows a run that ended later (the runs may have lost it: pruned, or deleted by hand).
pub fn later(from_runs: Option<RunSummary>, shown: &Option<RunSummary>) -> Option<RunSummary> {
    let ended = |s: &RunSummary| s.completion_time.as_ref().map(|t| t.0);
    match (from_runs, shown) {
        (Some(new), Some(old))
            if new.name != old.name && ended(&new).is_some() && ended(old) > ended(&new) =>
        {
            Some(old.clone())
        }
        (Some(new), _) => Some(new),
        (None, old) => old.clone(),
    }
}

/// Whether the controller created the run, so the history limits apply to it: it carries
/// our label. A run created before the label existed is recognised by what the controller
/// always gave its runs: the app as controlling owner and a Schedule or Requested trigger
/// (a person's run is `Manual` unless they say otherwise, and has no owner).
pub fn created_by_controller(run: &SyncRun, app_uid: Option<&str>) -> bool {
    if run.labels().get(CREATED_BY_LABEL).map(String::as_str) == Some(CREATED_BY_CONTROLLER) {
        return true;
    }
    let owned = run
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == app_uid);
    owned && matches!(run.spec.trigger, Trigger::Schedule | Trigger::Requested)
}

/// Finished runs the controller created beyond the history limits: newest first, the
/// configured number of each outcome kept (three of each without a policy). The runs
/// people create are theirs: never pruned, and they take no place in the history.
pub fn beyond_history(
    runs: &[SyncRun],
    policy: Option<&SyncPolicy>,
    app_uid: Option<&str>,
) -> Vec<String> {
    let (keep_succeeded, keep_failed) = policy.map_or((3, 3), |p| {
        (
            p.spec.successful_runs_history_limit.max(0) as usize,
            p.spec.failed_runs_history_limit.max(0) as usize,
        )
    });
    let mut finished: Vec<&SyncRun> = runs
        .iter()
        .filter(|r| !is_active(r) && created_by_controller(r, app_uid))
        .collect();
    finished.sort_by_key(|r| std::cmp::Reverse((created(r), r.name_any())));
    let (mut succeeded, mut failed) = (0, 0);
    let mut prune = Vec::new();
    for run in finished {
        let (count, keep) = if phase(run) == Some(RunPhase::Succeeded) {
            (&mut succeeded, keep_succeeded)
        } else {
            (&mut failed, keep_failed)
        };
        *count += 1;
        if *count > keep {
            prune.push(run.name_any());
        }
    }
    prune
}

/// The SyncRun object for a planned run: our labels (the app, our mark) and owner reference only.
pub fn new_run(app: &CatalogApp, run: &NewRun) -> SyncRun {
    let mut owner = app.controller_owner_ref(&());
    if let Some(o) = owner.as_mut() {
        // blockOwnerDeletion needs rights on the owner's finalizers; GC works without it.
        o.block_owner_deletion = None;
    }
    SyncRun {
        metadata: ObjectMeta {
            name: Some(run.name.clone()),
            namespace: app.namespace(),
            labels: Some(
                [
                    (APP_LABEL.to_string(), app.name_any()),
                    (
                        CREATED_BY_LABEL.to_string(),
                        CREATED_BY_CONTROLLER.to_string(),
                    ),
                ]
                .into(),
            ),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        spec: SyncRunSpec {
            app_ref: LocalRef {
                name: app.name_any(),
            },
            direction: run.direction,
            mode: Mode::Apply,
            trigger: run.trigger,
            approved_plan: None,
        },
        status: None,
    }
}

/// Creates the planned runs; one created before (e.g. by a previous leader) is done already.
pub async fn create(api: &Api<SyncRun>, app: &CatalogApp, runs: &[NewRun]) -> Result<()> {
    for run in runs {
        match api.create(&PostParams::default(), &new_run(app, run)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Deletes the named objects in the background; one gone already is fine.
pub async fn delete<K>(api: &Api<K>, names: &[String]) -> Result<()>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    delete_with(api, names, PropagationPolicy::Background).await
}

async fn delete_with<K>(
    api: &Api<K>,
    names: &[String],
    propagation: PropagationPolicy,
) -> Result<()>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = DeleteParams {
        propagation_policy: Some(propagation),
        ..Default::default()
    };
    for name in names {
        match api.delete(name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The app's runs (by name) whose Job exists and has not ended (Complete or Failed):
/// their pod may still run. A Job being deleted in the foreground is still there. Only
/// a cancelled run's Job matters (see `lanes::holding`): with no run active nor
/// cancelled, nothing is read.
pub async fn live_jobs(
    ctx: &Context,
    ns: &str,
    app: &str,
    runs: &[SyncRun],
) -> Result<Vec<String>> {
    let cancelled = |r: &SyncRun| r.annotations().contains_key(CANCEL_ANNOTATION);
    if !runs.iter().any(|r| is_active(r) || cancelled(r)) {
        return Ok(Vec::new());
    }
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let params = ListParams::default().labels(&format!("{APP_LABEL}={app}"));
    let listed = jobs.list(&params).await?.items;
    Ok(listed
        .iter()
        .filter(|j| sync_run::job_end(j).is_none())
        .filter_map(sync_run::job::run_of)
        .collect())
}

/// Cancels an active run: the controller records Cancelled (the Job may not
/// get the chance), then deletes the Job so its pod gets SIGTERM. A replaced run's Job
/// is deleted in the foreground: it stays (with a deletionTimestamp) until its pod is
/// gone, which the new run waits for.
pub async fn cancel(
    ctx: &Context,
    ns: &str,
    run: &str,
    message: &str,
    replaced: bool,
) -> Result<()> {
    let runs: Api<SyncRun> = Api::namespaced(ctx.client.clone(), ns);
    let Some(current) = runs.get_opt(run).await? else {
        return Ok(());
    };
    if !is_active(&current) {
        return Ok(());
    }
    // Recorded on the run too: should a late progress write of the dying Job
    // un-finish the status, the run still ends Cancelled, not Failed.
    runs.patch(
        run,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({
            "metadata": {"annotations": {CANCEL_ANNOTATION: message}}
        })),
    )
    .await?;
    let recorded = current.status.as_ref().and_then(|s| s.job_name.clone());
    sync_run::finish(
        ctx,
        &current,
        RunPhase::Cancelled,
        "Cancelled",
        message,
        recorded.as_deref(),
    )
    .await?;
    // The Job is named like the run, even if its name was never recorded. Background:
    // the Job goes now, its pod is stopped (SIGTERM) by the garbage collector; nothing of
    // its lane starts before the lane is turned on again.
    let job_name = recorded.unwrap_or_else(|| run.to_string());
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let propagation = if replaced {
        PropagationPolicy::Foreground
    } else {
        PropagationPolicy::Background
    };
    delete_with(&jobs, &[job_name], propagation).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(type_: &str, status: &str, reason: &str) -> Condition {
        serde_json::from_value(serde_json::json!({
            "type": type_, "status": status, "reason": reason, "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }))
        .unwrap()
    }

    #[test]
    fn the_outcome_reason_is_that_of_the_true_outcome_condition() {
        let limited = [
            condition("Complete", "False", "LimitExceeded"),
            condition("Failed", "False", "LimitExceeded"),
            condition("LimitExceeded", "True", "LimitExceeded"),
        ];
        assert_eq!(outcome_reason(&limited).as_deref(), Some("LimitExceeded"));
        let timed_out = [
            condition("Complete", "False", "Timeout"),
            condition("Failed", "True", "Timeout"),
            condition("LimitExceeded", "False", "WithinLimits"),
        ];
        assert_eq!(outcome_reason(&timed_out).as_deref(), Some("Timeout"));
        let succeeded = [
            condition("Complete", "True", "Succeeded"),
            condition("LimitExceeded", "False", "WithinLimits"),
        ];
        assert_eq!(outcome_reason(&succeeded).as_deref(), Some("Succeeded"));
        assert_eq!(outcome_reason(&[]), None);
    }
}
