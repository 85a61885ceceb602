//! The whole CatalogApp policy as one pure function: from the app, the
//! provisioning checks, its policy and its runs to a [`Plan`] (the status, the
//! runs to create, cancel and prune, the events). `decide` composes one step
//! per concern: the provisioning condition, the lanes (in `lanes`), the active
//! and last runs, readiness, pruning, events.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::ResourceExt;

use super::lanes::{self, InvalidSchedules, Lane};
use super::runs::{self, is_cancelled};
use super::texts::{limit_text, progress_text, run_event};
use super::{LIMIT_EXCEEDED, PROVISIONING_ENABLED, SYNCHRONIZATION_ENABLED, SYNCHRONIZING};
use crate::api::{
    ActiveRun, CatalogApp, CatalogAppStatus, Direction, RunPhase, SyncPolicy, SyncRun, Trigger,
};
use crate::cluster::conditions::{self, DesiredCondition, READY, RECONCILING, STALLED};
use crate::controller::connectivity::{self, Failure};
use crate::controller::{ObjectEvent, to_time};

/// Outcome of the provisioning checks (connectivity and the app's two groups).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProvisioningState {
    Disabled,
    Ready {
        grant_group_id: String,
        record_group_id: String,
    },
    Failed(Failure),
}

/// The SyncPolicy the app references, as found.
#[derive(Clone, Copy, Debug)]
pub enum PolicyState<'a> {
    NotReferenced,
    NotFound(&'a str),
    Found(&'a SyncPolicy),
}

/// Everything `decide` looks at.
pub struct Inputs<'a> {
    pub app: &'a CatalogApp,
    pub now: DateTime<Utc>,
    pub provisioning: &'a ProvisioningState,
    pub policy: PolicyState<'a>,
    /// Every SyncRun whose `spec.appRef` is this app.
    pub runs: &'a [SyncRun],
    /// The runs (by name) whose Job exists and has not ended: their pod may still run.
    pub live_jobs: &'a [String],
}

impl<'a> Inputs<'a> {
    pub fn provisioning_enabled(&self) -> bool {
        let provisioning = self.app.spec.provisioning.as_ref();
        provisioning.is_some_and(|p| p.enabled)
    }

    pub fn synchronization_enabled(&self) -> bool {
        let synchronization = self.app.spec.synchronization.as_ref();
        synchronization.is_some_and(|s| s.enabled)
    }

    pub fn provisioning_ready(&self) -> bool {
        matches!(self.provisioning, ProvisioningState::Ready { .. })
    }

    pub fn found_policy(&self) -> Option<&'a SyncPolicy> {
        match self.policy {
            PolicyState::Found(p) => Some(p),
            _ => None,
        }
    }
}

/// A SyncRun to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRun {
    pub name: String,
    pub direction: Direction,
    pub trigger: Trigger,
}

/// A run that finished since the last status, for the runs metric.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinishedRun {
    pub direction: Direction,
    pub phase: RunPhase,
    pub reason: String,
}

/// What a reconcile must do.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub status: CatalogAppStatus,
    pub create: Vec<NewRun>,
    /// Active runs to cancel, with the reason given in their status.
    pub cancel: Vec<(String, String)>,
    /// Of `cancel`, the runs replaced (Replace): their Job is deleted in the foreground,
    /// so it is gone only once its pod is, and the new run waits for that.
    pub replaced: Vec<String>,
    /// What a wanted run waits for (a replaced run to stop), for `Reconciling`.
    pub waiting: Option<String>,
    /// Finished runs beyond the history limits.
    pub prune: Vec<String>,
    pub requeue: Duration,
    pub events: Vec<ObjectEvent>,
    /// Runs seen finishing in this reconcile, for the runs metric.
    pub finished: Vec<FinishedRun>,
}

/// The whole CatalogApp policy: status, runs to create, cancel and prune.
pub fn decide(inputs: &Inputs) -> Plan {
    let app = inputs.app;
    let old = app.status.clone().unwrap_or_default();
    let mut plan = Plan {
        requeue: Duration::from_secs(300),
        ..Default::default()
    };
    let mut status = CatalogAppStatus {
        observed_generation: app.metadata.generation,
        grant_group_id: old.grant_group_id.clone(),
        record_group_id: old.record_group_id.clone(),
        last_handled_requested_at: old.last_handled_requested_at.clone(),
        last_schedule_time: old.last_schedule_time.clone(),
        last_provisioning_schedule_time: old.last_provisioning_schedule_time.clone(),
        ..Default::default()
    };

    let provisioning = provisioning_condition(inputs, &mut status);
    let import = lanes::import_lane(inputs, &old, &provisioning);
    let provision = lanes::provision_lane(inputs, &old, &provisioning);
    let active = runs::active(inputs.runs);
    lanes::cancel_switched_off([&import, &provision], &active, &mut plan);
    let invalid = lanes::plan_runs(inputs, [&import, &provision], &old, &mut status, &mut plan);

    let still_active: Vec<&SyncRun> = active
        .iter()
        .copied()
        .filter(|r| !is_cancelled(r, &plan))
        .collect();
    let desired = [
        ready_condition(inputs, &invalid, &provisioning, &import),
        provisioning.clone(),
        synchronization_condition(&import, &invalid),
        synchronizing_condition(&still_active, &plan, &mut status),
        {
            last_runs(inputs, &old, &mut status);
            limit_condition(inputs, &old, &status)
        },
        match &invalid.any {
            Some(e) => DesiredCondition::truthy(STALLED, "InvalidSchedule", e.clone()),
            None => DesiredCondition::falsy(STALLED, "InvalidSchedule", ""),
        },
        match &plan.waiting {
            Some(w) => DesiredCondition::truthy(RECONCILING, "WaitingForRunToStop", w.clone()),
            None => DesiredCondition::falsy(RECONCILING, "WaitingForRunToStop", ""),
        },
    ];
    status.conditions = conditions::merge(
        &old.conditions,
        &desired,
        app.metadata.generation,
        &to_time(inputs.now),
    );
    let app_uid = app.metadata.uid.as_deref();
    plan.prune = runs::beyond_history(inputs.runs, inputs.found_policy(), app_uid);

    outcome_events(&old, &status, &mut plan);
    connectivity_events(&old, &provisioning, inputs.provisioning_ready(), &mut plan);
    if !plan.events.iter().any(|e| e.reason == "ConnectivityLost") {
        // Not Ready for another reason, or from the start: said once, too.
        let not_ready = ObjectEvent::not_ready(&old.conditions, &status.conditions);
        plan.events.extend(not_ready);
    }
    change_events(&mut plan);
    if !still_active.is_empty() || !plan.create.is_empty() {
        // Progress is mirrored from run events; this only bounds staleness.
        plan.requeue = plan.requeue.min(Duration::from_secs(60));
    }
    plan.status = status;
    plan
}

/// `ProvisioningEnabled` from the checks; the ready groups' ids go into the status.
fn provisioning_condition(inputs: &Inputs, status: &mut CatalogAppStatus) -> DesiredCondition {
    match inputs.provisioning {
        ProvisioningState::Disabled => {
            DesiredCondition::falsy(PROVISIONING_ENABLED, "Disabled", "provisioning is disabled")
        }
        ProvisioningState::Ready {
            grant_group_id,
            record_group_id,
        } => {
            status.grant_group_id = Some(grant_group_id.clone());
            status.record_group_id = Some(record_group_id.clone());
            DesiredCondition::truthy(
                PROVISIONING_ENABLED,
                "Enabled",
                format!(
                    "connected to the app; grant group {:?} and record group {:?} exist",
                    inputs.app.grant_group_name(),
                    inputs.app.record_group_name()
                ),
            )
        }
        ProvisioningState::Failed(f) => {
            DesiredCondition::falsy(PROVISIONING_ENABLED, f.reason, &f.message)
        }
    }
}

/// `SynchronizationEnabled`: whether imports may run, and on what schedule.
fn synchronization_condition(import: &Lane, invalid: &InvalidSchedules) -> DesiredCondition {
    match (&import.runnable, &invalid.import) {
        (Err((reason, message)), _) => {
            DesiredCondition::falsy(SYNCHRONIZATION_ENABLED, reason, message.clone())
        }
        (Ok(()), Some(e)) => {
            DesiredCondition::falsy(SYNCHRONIZATION_ENABLED, "InvalidSchedule", e.clone())
        }
        (Ok(()), None) => DesiredCondition::truthy(
            SYNCHRONIZATION_ENABLED,
            "Enabled",
            match import.schedule {
                Some(s) => format!("synchronizing on schedule {s:?}"),
                None => "synchronization is on demand (the policy has no schedule)".into(),
            },
        ),
    }
}

/// `Synchronizing` and the status's active run: the run still active after
/// this plan, else the first it creates.
fn synchronizing_condition(
    still_active: &[&SyncRun],
    plan: &Plan,
    status: &mut CatalogAppStatus,
) -> DesiredCondition {
    if let Some(run) = still_active.first() {
        status.active_run = Some(ActiveRun {
            name: run.name_any(),
            direction: Some(run.spec.direction),
            progress: run.status.as_ref().and_then(|s| s.progress.clone()),
        });
        return DesiredCondition::truthy(SYNCHRONIZING, "RunActive", progress_text(run));
    }
    if let Some(run) = plan.create.first() {
        status.active_run = Some(ActiveRun {
            name: run.name.clone(),
            direction: Some(run.direction),
            progress: None,
        });
        let message = format!("run {} created", run.name);
        return DesiredCondition::truthy(SYNCHRONIZING, "RunActive", message);
    }
    DesiredCondition::falsy(SYNCHRONIZING, "Idle", "no run is active")
}

/// The last finished runs of each direction into the status: of either mode
/// (`lastRun`, `lastProvisioningRun`) and of mode Apply (`lastImport`,
/// `lastProvision`); each kept when its run is gone (pruned, deleted).
fn last_runs(inputs: &Inputs, old: &CatalogAppStatus, status: &mut CatalogAppStatus) {
    let last = |direction, apply_only| {
        runs::last_finished(inputs.runs, direction, apply_only).map(runs::summary)
    };
    status.last_run = runs::later(last(Direction::Import, false), &old.last_run);
    status.last_provisioning_run = runs::later(
        last(Direction::Provision, false),
        &old.last_provisioning_run,
    );
    status.last_import = runs::later(last(Direction::Import, true), &old.last_import);
    status.last_provision = runs::later(last(Direction::Provision, true), &old.last_provision);
}

/// `LimitExceeded`: True while the last Apply run of either direction stopped on a
/// limit, the message naming each. Only an Apply run of the same direction clears it: a
/// Plan run changes nothing, and the other direction's run says nothing about this one.
fn limit_condition(
    inputs: &Inputs,
    old: &CatalogAppStatus,
    status: &CatalogAppStatus,
) -> DesiredCondition {
    let lasts = [
        (Direction::Import, &status.last_import),
        (Direction::Provision, &status.last_provision),
    ];
    let policy = inputs.found_policy().map(|p| p.name_any());
    let limited: Vec<String> = lasts
        .iter()
        .filter_map(|(direction, last)| last.as_ref().map(|l| (direction, l)))
        .filter(|(_, last)| last.phase == Some(RunPhase::LimitExceeded))
        .map(|(direction, last)| {
            let text = match inputs.runs.iter().find(|r| r.name_any() == last.name) {
                Some(run) => limit_text(run, policy.as_deref()),
                // Pruned or deleted: its outcome as the status kept it.
                None => format!("run {} stopped on a limit: {}", last.name, {
                    last.message.as_deref().unwrap_or("see its events")
                }),
            };
            format!("{direction:?} {text}")
        })
        .collect();
    let finished: Vec<String> = lasts
        .iter()
        .filter_map(|(direction, last)| Some(format!("{direction:?} run {}", last.as_ref()?.name)))
        .collect();
    if !limited.is_empty() {
        DesiredCondition::truthy(LIMIT_EXCEEDED, "LimitExceeded", limited.join("; "))
    } else if !finished.is_empty() {
        let message = format!(
            "the last {} stayed within its limits",
            finished.join(" and ")
        );
        DesiredCondition::falsy(LIMIT_EXCEEDED, "WithinLimits", message)
    } else if let Some(c) = conditions::find(&old.conditions, LIMIT_EXCEEDED) {
        // Said before lastImport and lastProvision existed, of a run since pruned: kept.
        DesiredCondition::new(
            LIMIT_EXCEEDED,
            c.status == "True",
            &c.reason,
            c.message.clone(),
        )
    } else {
        DesiredCondition::falsy(LIMIT_EXCEEDED, "NoRuns", "no Apply run has finished yet")
    }
}

/// Ready: everything the user turned on works.
fn ready_condition(
    inputs: &Inputs,
    invalid: &InvalidSchedules,
    provisioning: &DesiredCondition,
    import: &Lane,
) -> DesiredCondition {
    if let Some(e) = &invalid.any {
        DesiredCondition::falsy(READY, "InvalidSchedule", e.clone())
    } else if inputs.provisioning_enabled() && !inputs.provisioning_ready() {
        DesiredCondition::falsy(READY, &provisioning.reason, provisioning.message.clone())
    } else if inputs.synchronization_enabled()
        && let Err((reason, message)) = &import.runnable
        && *reason != "Suspended"
    {
        DesiredCondition::falsy(READY, reason, message.clone())
    } else if inputs.app.spec.suspend {
        DesiredCondition::truthy(READY, "Suspended", "the app is suspended")
    } else {
        DesiredCondition::truthy(READY, "Ready", "the app is reconciled")
    }
}

/// An event (and a metric) for each last run that changed since the old status.
fn outcome_events(old: &CatalogAppStatus, status: &CatalogAppStatus, plan: &mut Plan) {
    for (direction, old_run, new_run) in [
        (Direction::Import, &old.last_run, &status.last_run),
        (
            Direction::Provision,
            &old.last_provisioning_run,
            &status.last_provisioning_run,
        ),
    ] {
        if let Some(new) = new_run
            && old_run.as_ref().map(|o| (&o.name, o.phase)) != Some((&new.name, new.phase))
            && let Some(phase) = new.phase
        {
            plan.events.push(run_event(new, phase));
            plan.finished.push(FinishedRun {
                direction,
                phase,
                reason: new.reason.clone().unwrap_or_default(),
            });
        }
    }
}

/// ConnectivityLost and ConnectivityRestored, once each, on a change of
/// `ProvisioningEnabled` for a connectivity reason.
fn connectivity_events(
    old: &CatalogAppStatus,
    provisioning: &DesiredCondition,
    provisioning_ready: bool,
    plan: &mut Plan,
) {
    let connectivity_reason = |reason: &str| {
        [
            connectivity::CONNECTIVITY_FAILED,
            connectivity::UNAUTHORIZED,
            connectivity::SECRET_NOT_FOUND,
            connectivity::SECRET_NOT_ALLOWED,
            connectivity::INSECURE_URL,
        ]
        .contains(&reason)
    };
    let message = provisioning.message.clone();
    match (
        conditions::find(&old.conditions, PROVISIONING_ENABLED),
        provisioning_ready,
    ) {
        (Some(o), false) if o.status == "True" && connectivity_reason(&provisioning.reason) => plan
            .events
            .push(ObjectEvent::warning("ConnectivityLost", message)),
        (Some(o), true) if o.status == "False" && connectivity_reason(&o.reason) => plan
            .events
            .push(ObjectEvent::normal("ConnectivityRestored", message)),
        _ => {}
    }
}

/// An event for each run the plan creates or cancels.
fn change_events(plan: &mut Plan) {
    for run in &plan.create {
        plan.events.push(ObjectEvent::normal(
            "RunStarted",
            format!(
                "created SyncRun {} ({:?}, trigger {:?})",
                run.name, run.direction, run.trigger
            ),
        ));
    }
    for (run, why) in &plan.cancel {
        plan.events.push(ObjectEvent::normal(
            "RunCancelled",
            format!("SyncRun {run} {why}"),
        ));
    }
}
