//! The two lanes of runs, Import (synchronization) and Provision, scheduled by
//! the same code: whether a lane may run, its cron schedule, the on-demand
//! request, and the concurrency policy deciding whether a wanted run starts.
//! Pure, like the rest of `decide`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::decide::{Inputs, NewRun, Plan, PolicyState};
use super::runs::{is_active, is_cancelled, phase, run_name, short_hash};
use crate::api::{
    CatalogAppStatus, ConcurrencyPolicy, Direction, Mode, REQUESTED_AT_ANNOTATION,
    REQUESTED_DIRECTION_ANNOTATION, RunPhase, SyncRun, Trigger,
};
use crate::cluster::conditions::DesiredCondition;
use crate::controller::schedule::{self, STARTING_DEADLINE};
use crate::controller::sync_run::CANCEL_ANNOTATION;
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
    let step = pending_request(inputs, old).map(|(value, wanted)| {
        let names = RequestNames::of(&app.name_any(), old, &value);
        let provision_run = inputs.runs.iter().find(|r| r.name_any() == names.provision);
        let step = request_step(
            inputs.synchronization_enabled(),
            wanted,
            provision_run.map(|r| (phase(r), is_cancelled(r, plan))),
        );
        (value, names, step)
    });
    if let Some((value, names, step)) = &step {
        settle_request(value, names, step, status, plan);
    }
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
        let request = match &step {
            Some((value, names, RequestStep::Run { direction, last }))
                if *direction == lane.direction =>
            {
                Some(LaneRequest {
                    value,
                    names,
                    last: *last,
                })
            }
            _ => None,
        };
        plan_lane(inputs, lane, outcome.due, request, status, plan);
    }
    invalid
}

/// An unhandled on-demand request served by one lane.
struct LaneRequest<'a> {
    value: &'a str,
    names: &'a RequestNames,
    last: bool,
}

/// One lane's wanted run (its due slot, or the request): started, refused (Forbid), or
/// waited for while the runs it replaces stop (Replace).
fn plan_lane(
    inputs: &Inputs,
    lane: &Lane,
    slot: Option<DateTime<Utc>>,
    request: Option<LaneRequest>,
    status: &mut CatalogAppStatus,
    plan: &mut Plan,
) {
    let app = inputs.app.name_any();
    let concurrency = inputs
        .found_policy()
        .map(|p| p.spec.concurrency_policy)
        .unwrap_or_default();
    let target = match (&request, slot) {
        (Some(r), _) if lane.runnable.is_ok() => {
            Some(r.names.of_direction(lane.direction).to_string())
        }
        (_, Some(slot)) => Some(slot_run_name(lane, slot, &app)),
        _ => None,
    };
    // A wanted run that exists already (created before a restart) needs no admission.
    let admission = match target {
        Some(name) if !inputs.runs.iter().any(|r| r.name_any() == name) => {
            let holders = holding(inputs.runs, inputs.live_jobs, plan);
            let admission = admission(lane.direction, &holders, concurrency, plan);
            if let Some(waiting) = replacing(&admission, &name, plan) {
                // The slot stays due and the request pending until the old pods are gone.
                plan.waiting = Some(waiting);
                plan.requeue = plan.requeue.min(STOP_RECHECK);
                return;
            }
            admission
        }
        _ => Admission::Start,
    };
    let blocked = matches!(admission, Admission::Blocked(_));
    let mut wanted = slot.map(|slot| scheduled_run(lane, slot, &app, status));
    if let Some(r) = request {
        match requested_run(lane, r.value, r.names, r.last, blocked, status, plan) {
            // The lane waits for its active run, its slot with it.
            Request::Waits => return,
            Request::Run(run) => wanted = Some(run),
            Request::Handled => {}
        }
    }
    let Some((name, trigger)) = wanted else {
        return;
    };
    if inputs.runs.iter().any(|r| r.name_any() == name) {
        return;
    }
    if let Admission::Blocked(why) = admission {
        let message = format!("{:?} run {name} skipped: {why}", lane.direction);
        plan.events.push(ObjectEvent::normal("RunSkipped", message));
        return;
    }
    plan.create.push(NewRun {
        name,
        direction: lane.direction,
        trigger,
    });
}

/// How often the app looks again while it waits for a replaced run's pod to stop (the
/// Job's disappearance triggers a reconcile too).
const STOP_RECHECK: Duration = Duration::from_secs(5);

/// Under Replace: cancels the runs to stop (their Jobs deleted in the foreground) and
/// says what the new run waits for; None when the run may start or is refused.
fn replacing(admission: &Admission, name: &str, plan: &mut Plan) -> Option<String> {
    let runs = match admission {
        Admission::Replace(stop) => {
            for run in stop {
                let why = format!("cancelled: replaced by run {name}");
                plan.cancel.push((run.clone(), why));
                plan.replaced.push(run.clone());
            }
            stop
        }
        Admission::AwaitStop(stopping) => stopping,
        Admission::Start | Admission::Blocked(_) => return None,
    };
    Some(format!(
        "waiting for run {} to stop before starting run {name} (concurrencyPolicy Replace)",
        runs.join(", ")
    ))
}

/// Whether a run is being cancelled: by this plan, or before (our mark on it).
fn is_stopping(run: &SyncRun, plan: &Plan) -> bool {
    is_cancelled(run, plan) || run.annotations().contains_key(CANCEL_ANNOTATION)
}

/// The runs a new run of the app must not overlap, the same for Forbid and Replace: the
/// active ones, and the cancelled ones whose Job has not ended (`live_jobs`: a cancelled
/// run is marked Cancelled at once, but its pod may still write until it stops). A run
/// that ended by itself wrote its outcome after its last write: its Job does not count.
pub fn holding<'r>(runs: &'r [SyncRun], live_jobs: &[String], plan: &Plan) -> Vec<&'r SyncRun> {
    runs.iter()
        .filter(|r| {
            if is_stopping(r, plan) {
                live_jobs.contains(&r.name_any())
            } else {
                is_active(r)
            }
        })
        .collect()
}

/// Whether a wanted run may start now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Nothing holds the app.
    Start,
    /// Another run holds the app and this policy does not stop it: a slot is skipped,
    /// a request waits. With the reason.
    Blocked(String),
    /// Replace: these runs are stopped; the new run starts once their pods are gone.
    Replace(Vec<String>),
    /// Replace: the runs stopped for it are still stopping.
    AwaitStop(Vec<String>),
}

/// The admission of a run of `direction`, given the runs [`holding`] the app. Replace
/// stops only active Apply runs of the same direction: a Plan run, or a run of the
/// other direction (an Import never replaces a Provision run, nor the reverse), is
/// waited for as under Forbid. A run this plan creates (the other lane's) holds too.
pub fn admission(
    direction: Direction,
    holding: &[&SyncRun],
    concurrency: ConcurrencyPolicy,
    plan: &Plan,
) -> Admission {
    if let Some(other) = plan.create.first() {
        return Admission::Blocked(format!("run {} starts now", other.name));
    }
    let Some(first) = holding.first() else {
        return Admission::Start;
    };
    let still_active = |r: &SyncRun| format!("run {} is still active", r.name_any());
    if concurrency == ConcurrencyPolicy::Forbid {
        return Admission::Blocked(format!(
            "{} (concurrencyPolicy Forbid)",
            still_active(first)
        ));
    }
    let (stopping, running): (Vec<&SyncRun>, Vec<&SyncRun>) =
        holding.iter().partition(|r| is_stopping(r, plan));
    if let Some(kept) = running
        .iter()
        .find(|r| r.spec.direction != direction || r.spec.mode == Mode::Plan)
    {
        let what = if kept.spec.mode == Mode::Plan {
            "a Plan run".to_string()
        } else {
            format!("a {:?} run", kept.spec.direction)
        };
        return Admission::Blocked(format!(
            "{} (concurrencyPolicy Replace does not stop {what})",
            still_active(kept)
        ));
    }
    let names = |runs: &[&SyncRun]| runs.iter().map(|r| r.name_any()).collect::<Vec<_>>();
    if running.is_empty() {
        Admission::AwaitStop(names(&stopping))
    } else {
        Admission::Replace(names(&running))
    }
}

/// Which directions an on-demand request asks for (`requested-direction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wanted {
    Provision,
    Import,
    /// Provision, then Import (with synchronization on); the default.
    Both,
}

impl Wanted {
    /// The annotation's value; absent is Both, an unknown value is an error.
    pub fn parse(value: Option<&str>) -> Result<Wanted, String> {
        match value.map(str::trim) {
            None | Some("") => Ok(Wanted::Both),
            Some(v) if v.eq_ignore_ascii_case("both") => Ok(Wanted::Both),
            Some(v) if v.eq_ignore_ascii_case("provision") => Ok(Wanted::Provision),
            Some(v) if v.eq_ignore_ascii_case("import") => Ok(Wanted::Import),
            Some(v) => Err(format!(
                "{REQUESTED_DIRECTION_ANNOTATION} {v:?} is none of Provision, Import, Both"
            )),
        }
    }
}

/// The unhandled `requested-at` value, if any, with the directions it asks for.
fn pending_request(
    inputs: &Inputs,
    old: &CatalogAppStatus,
) -> Option<(String, Result<Wanted, String>)> {
    let annotations = inputs.app.annotations();
    let value = annotations
        .get(REQUESTED_AT_ANNOTATION)
        .filter(|v| old.last_handled_requested_at.as_ref() != Some(*v))?;
    let wanted = Wanted::parse(
        annotations
            .get(REQUESTED_DIRECTION_ANNOTATION)
            .map(String::as_str),
    );
    Some((value.clone(), wanted))
}

/// The runs serving one request, named after it (and the request before it), so a
/// restart finds them again: the state of a two-step request lives in its runs.
pub struct RequestNames {
    pub provision: String,
    pub import: String,
}

impl RequestNames {
    pub fn of(app: &str, old: &CatalogAppStatus, value: &str) -> Self {
        let previous = old.last_handled_requested_at.as_deref().unwrap_or("");
        let hash = short_hash(&[previous, value]);
        RequestNames {
            provision: run_name(app, &format!("pr{hash}")),
            import: run_name(app, &format!("r{hash}")),
        }
    }

    /// The name of the request's run of `direction`.
    pub fn of_direction(&self, direction: Direction) -> &str {
        match direction {
            Direction::Provision => &self.provision,
            Direction::Import => &self.import,
        }
    }
}

/// What an unhandled request does now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestStep {
    /// A run of this direction serves it; `last`: that run handles the whole request.
    Run { direction: Direction, last: bool },
    /// Its Provision run is still active: the Import follows once it has ended.
    AwaitProvision,
    /// Handled without (another) run, with this warning.
    Drop(String),
}

/// The step of a request. With synchronization on, Both is Provision then Import: the
/// Import only once the request's Provision run has ended, whatever its phase (the
/// accounts it created are there), except Cancelled (suspended, switched off, replaced:
/// the user or a newer run stopped it, so its Import is not started either). With
/// synchronization off, Both is Provision only. `provision_run`: the request's Provision
/// run, if it exists (its phase, and whether this plan cancels it).
pub fn request_step(
    synchronization: bool,
    wanted: Result<Wanted, String>,
    provision_run: Option<(Option<RunPhase>, bool)>,
) -> RequestStep {
    let only = |direction| RequestStep::Run {
        direction,
        last: true,
    };
    match wanted {
        Err(e) => RequestStep::Drop(format!("on-demand run requested but not possible: {e}")),
        Ok(Wanted::Provision) => only(Direction::Provision),
        Ok(Wanted::Import) => only(Direction::Import),
        Ok(Wanted::Both) if !synchronization => only(Direction::Provision),
        Ok(Wanted::Both) => match provision_run {
            None => RequestStep::Run {
                direction: Direction::Provision,
                last: false,
            },
            Some((Some(RunPhase::Cancelled), _)) => RequestStep::Drop(
                "the requested Provision run was cancelled: its Import does not start".into(),
            ),
            Some((Some(p), false)) if p.is_finished() => only(Direction::Import),
            Some(_) => RequestStep::AwaitProvision,
        },
    }
}

/// The status and events of a request step that starts no run here.
fn settle_request(
    value: &str,
    names: &RequestNames,
    step: &RequestStep,
    status: &mut CatalogAppStatus,
    plan: &mut Plan,
) {
    match step {
        RequestStep::AwaitProvision => {
            status.requested_import_after = Some(names.provision.clone());
            plan.requeue = plan.requeue.min(Duration::from_secs(30));
        }
        RequestStep::Drop(message) => {
            status.last_handled_requested_at = Some(value.to_string());
            plan.events
                .push(ObjectEvent::warning("RequestIgnored", message.clone()));
        }
        RequestStep::Run { .. } => {}
    }
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
    (slot_run_name(lane, slot, app), Trigger::Schedule)
}

/// The name of a slot's run.
fn slot_run_name(lane: &Lane, slot: DateTime<Utc>, app: &str) -> String {
    let token = schedule::slot_token(slot);
    run_name(app, &format!("{}{token}", lane.name_prefix))
}

enum Request {
    /// Another run holds the app: the request stays pending.
    Waits,
    /// The run that serves the request.
    Run((String, Trigger)),
    /// No run: ignored (with an event) or waiting out a suspension.
    Handled,
}

/// A lane's run for an unhandled on-demand request: echoed once `last` (the whole
/// request handled); a first step names itself as the one the Import waits for.
fn requested_run(
    lane: &Lane,
    value: &str,
    names: &RequestNames,
    last: bool,
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
            if last {
                status.last_handled_requested_at = Some(value.to_string());
            } else {
                status.requested_import_after = Some(names.provision.clone());
            }
            let name = names.of_direction(lane.direction).to_string();
            // A request wins over a slot due at the same moment: one run serves both.
            Request::Run((name, Trigger::Requested))
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
