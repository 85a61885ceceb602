//! The two lanes of runs, Import (synchronization) and Provision, scheduled by
//! the same code: whether a lane may run, its cron schedule, the on-demand
//! request, and the concurrency policy deciding whether a wanted run starts.
//! Pure, like the rest of `decide`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::decide::{Inputs, NewRun, Plan, PolicyState};
use super::runs::{is_cancelled, run_name, short_hash};
use crate::api::{
    CatalogAppStatus, ConcurrencyPolicy, Direction, REQUESTED_AT_ANNOTATION, SyncRun, Trigger,
};
use crate::cluster::conditions::DesiredCondition;
use crate::controller::schedule::{self, STARTING_DEADLINE};
use crate::controller::{ObjectEvent, time_of, to_time};

/// One direction of runs, scheduled the same way for Import and Provision.
pub struct Lane<'a> {
    pub direction: Direction,
    /// Ok when runs may start; else the reason and message.
    pub runnable: std::result::Result<(), (&'static str, String)>,
    /// Turned off by the user (or suspended): active runs are cancelled.
    pub switched_off: Option<String>,
    pub schedule: Option<&'a str>,
    /// The last schedule slot handled.
    pub handled: Option<&'a Time>,
    name_prefix: &'static str,
    /// The on-demand request goes to Import when synchronization is on, else to Provision.
    takes_requests: bool,
}

/// The Import lane: needs synchronization on, provisioning ready and the policy found.
pub fn import_lane<'a>(
    inputs: &Inputs<'a>,
    old: &'a CatalogAppStatus,
    provisioning: &DesiredCondition,
) -> Lane<'a> {
    let spec = &inputs.app.spec;
    let runnable = if !inputs.synchronization_enabled() {
        Err(("Disabled", "synchronization is disabled".to_string()))
    } else if spec.suspend {
        Err(("Suspended", "the app is suspended".to_string()))
    } else if !inputs.provisioning_ready() {
        Err((
            "ProvisioningNotEnabled",
            format!(
                "synchronization needs provisioning: {}",
                provisioning.message.trim_end_matches('.')
            ),
        ))
    } else if let PolicyState::NotFound(p) = inputs.policy {
        Err(("PolicyNotFound", format!("SyncPolicy {p:?} not found")))
    } else {
        Ok(())
    };
    let switched_off = if !inputs.synchronization_enabled() {
        Some("synchronization was disabled".into())
    } else if spec.suspend {
        Some("the app was suspended".into())
    } else if !inputs.provisioning_enabled() {
        Some("provisioning was disabled".into())
    } else {
        None
    };
    Lane {
        direction: Direction::Import,
        runnable,
        switched_off,
        schedule: inputs
            .found_policy()
            .and_then(|p| p.spec.schedule.as_deref()),
        handled: old.last_schedule_time.as_ref(),
        name_prefix: "",
        takes_requests: inputs.synchronization_enabled(),
    }
}

/// The Provision lane: needs provisioning on and ready; its schedule is the app's own.
pub fn provision_lane<'a>(
    inputs: &Inputs<'a>,
    old: &'a CatalogAppStatus,
    provisioning: &DesiredCondition,
) -> Lane<'a> {
    let spec = &inputs.app.spec;
    let runnable = if !inputs.provisioning_enabled() {
        Err(("Disabled", "provisioning is disabled".into()))
    } else if spec.suspend {
        Err(("Suspended", "the app is suspended".into()))
    } else if !inputs.provisioning_ready() {
        Err(("ProvisioningNotReady", provisioning.message.clone()))
    } else {
        Ok(())
    };
    let switched_off = if !inputs.provisioning_enabled() {
        Some("provisioning was disabled".into())
    } else if spec.suspend {
        Some("the app was suspended".into())
    } else {
        None
    };
    Lane {
        direction: Direction::Provision,
        runnable,
        switched_off,
        schedule: spec
            .provisioning
            .as_ref()
            .and_then(|p| p.schedule.as_deref()),
        handled: old.last_provisioning_schedule_time.as_ref(),
        name_prefix: "p",
        takes_requests: !inputs.synchronization_enabled(),
    }
}

/// Cancels the active runs of lanes the user switched off.
pub fn cancel_switched_off(lanes: [&Lane; 2], active: &[&SyncRun], plan: &mut Plan) {
    for lane in lanes {
        if let Some(why) = &lane.switched_off {
            for run in active.iter().filter(|r| r.spec.direction == lane.direction) {
                plan.cancel
                    .push((run.name_any(), format!("cancelled: {why}")));
            }
        }
    }
}

/// Invalid schedules found: the last of any lane, and the Import lane's.
#[derive(Default)]
pub struct InvalidSchedules {
    pub any: Option<String>,
    pub import: Option<String>,
}

/// Both lanes' schedules and the on-demand request: the runs to create (and
/// the runs they replace), the schedule fields of the status.
pub fn plan_runs(
    inputs: &Inputs,
    lanes: [&Lane; 2],
    active: &[&SyncRun],
    old: &CatalogAppStatus,
    status: &mut CatalogAppStatus,
    plan: &mut Plan,
) -> InvalidSchedules {
    let app = inputs.app;
    let app_created = app
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(time_of)
        .unwrap_or(inputs.now);
    let concurrency = inputs
        .found_policy()
        .map(|p| p.spec.concurrency_policy)
        .unwrap_or_default();
    let mut busy = active.iter().any(|r| !is_cancelled(r, plan));
    let request = app
        .annotations()
        .get(REQUESTED_AT_ANNOTATION)
        .filter(|v| old.last_handled_requested_at.as_ref() != Some(*v))
        .cloned();
    let mut invalid = InvalidSchedules::default();
    for lane in lanes {
        let outcome = schedule_lane(lane, app_created, inputs.now);
        if let Some(e) = &outcome.invalid {
            invalid.any = Some(e.clone());
            if lane.direction == Direction::Import {
                invalid.import = Some(e.clone());
            }
        }
        record_next(lane.direction, outcome.next, inputs.now, status, plan);
        let mut wanted = outcome
            .due
            .map(|slot| scheduled_run(lane, slot, &app.name_any(), status));
        if lane.takes_requests
            && let Some(value) = &request
        {
            let waiting = busy && concurrency == ConcurrencyPolicy::Forbid;
            match requested_run(lane, value, &app.name_any(), old, waiting, status, plan) {
                // The lane waits for its active run, its slot with it.
                Request::Waits => continue,
                Request::Run(run) => wanted = Some(run),
                Request::Handled => {}
            }
        }
        let Some((name, trigger)) = wanted else {
            continue;
        };
        if admit(lane, &name, inputs.runs, active, busy, concurrency, plan) {
            busy = true;
            plan.create.push(NewRun {
                name,
                direction: lane.direction,
                trigger,
            });
        }
    }
    invalid
}

/// What a lane's schedule says now.
struct ScheduleOutcome {
    due: Option<DateTime<Utc>>,
    next: Option<DateTime<Utc>>,
    invalid: Option<String>,
}

fn schedule_lane(lane: &Lane, app_created: DateTime<Utc>, now: DateTime<Utc>) -> ScheduleOutcome {
    let mut outcome = ScheduleOutcome {
        due: None,
        next: None,
        invalid: None,
    };
    let Some(expression) = lane.schedule else {
        return outcome;
    };
    match schedule::parse(expression) {
        Err(e) => outcome.invalid = Some(e.to_string()),
        Ok(parsed) if lane.runnable.is_ok() => {
            let handled = lane
                .handled
                .and_then(time_of)
                .map_or(app_created, |h| h.max(app_created));
            let decision = schedule::decide(&parsed, handled, now, STARTING_DEADLINE);
            outcome.due = decision.due;
            outcome.next = decision.next;
        }
        Ok(_) => {}
    }
    outcome
}

/// The lane's next slot goes into the status, and bounds the requeue.
fn record_next(
    direction: Direction,
    next: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    status: &mut CatalogAppStatus,
    plan: &mut Plan,
) {
    let next_time = next.map(to_time);
    match direction {
        Direction::Import => status.next_sync_time = next_time,
        Direction::Provision => status.next_provisioning_time = next_time,
    }
    if let Some(next) = next {
        let wait = (next - now).to_std().unwrap_or_default() + Duration::from_secs(1);
        plan.requeue = plan.requeue.min(wait);
    }
}

/// The run of a due slot, named after the slot; the slot counts as handled.
fn scheduled_run(
    lane: &Lane,
    slot: DateTime<Utc>,
    app: &str,
    status: &mut CatalogAppStatus,
) -> (String, Trigger) {
    let handled = Some(to_time(slot));
    match lane.direction {
        Direction::Import => status.last_schedule_time = handled,
        Direction::Provision => status.last_provisioning_schedule_time = handled,
    }
    let token = schedule::slot_token(slot);
    (
        run_name(app, &format!("{}{token}", lane.name_prefix)),
        Trigger::Schedule,
    )
}

enum Request {
    /// Forbid and a run is active: the request stays pending.
    Waits,
    /// The run that serves the request.
    Run((String, Trigger)),
    /// No run: ignored (with an event) or waiting out a suspension.
    Handled,
}

/// An unhandled on-demand request on the lane that takes them.
fn requested_run(
    lane: &Lane,
    value: &str,
    app: &str,
    old: &CatalogAppStatus,
    waiting: bool,
    status: &mut CatalogAppStatus,
    plan: &mut Plan,
) -> Request {
    match &lane.runnable {
        Ok(()) if waiting => {
            plan.requeue = plan.requeue.min(Duration::from_secs(30));
            Request::Waits
        }
        Ok(()) => {
            let previous = old.last_handled_requested_at.as_deref().unwrap_or("");
            let suffix = format!("{}r{}", lane.name_prefix, short_hash(&[previous, value]));
            status.last_handled_requested_at = Some(value.to_string());
            // A request wins over a slot due at the same moment: one run serves both.
            Request::Run((run_name(app, &suffix), Trigger::Requested))
        }
        // Suspended: the request waits, like Flux.
        Err(("Suspended", _)) => Request::Handled,
        Err((_, message)) => {
            status.last_handled_requested_at = Some(value.to_string());
            plan.events.push(ObjectEvent::warning(
                "RequestIgnored",
                format!("on-demand run requested but not possible: {message}"),
            ));
            Request::Handled
        }
    }
}

/// Whether a wanted run starts: not if it exists already (e.g. created before
/// a restart), nor while another is active under Forbid; under Replace the
/// active runs are cancelled for it.
fn admit(
    lane: &Lane,
    name: &str,
    runs: &[SyncRun],
    active: &[&SyncRun],
    busy: bool,
    concurrency: ConcurrencyPolicy,
    plan: &mut Plan,
) -> bool {
    if runs.iter().any(|r| r.name_any() == name) {
        return false;
    }
    if !busy {
        return true;
    }
    match concurrency {
        ConcurrencyPolicy::Forbid => {
            plan.events.push(ObjectEvent::normal(
                "RunSkipped",
                format!(
                    "{:?} run {name} skipped: a run is still active (concurrencyPolicy Forbid)",
                    lane.direction
                ),
            ));
            false
        }
        ConcurrencyPolicy::Replace => {
            for run in active {
                if !is_cancelled(run, plan) {
                    plan.cancel
                        .push((run.name_any(), format!("cancelled: replaced by run {name}")));
                }
            }
            true
        }
    }
}
