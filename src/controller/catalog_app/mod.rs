//! CatalogApp: provisioning checks, the grant group, scheduling of runs, the
//! status that mirrors them. `decide` is pure (the whole policy lives there);
//! `reconcile` gathers its inputs and carries out its plan.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{
    Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, PropagationPolicy,
};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::connectivity::{self, Endpoint, Failure};
use super::{Context, Error, ObjectEvent, Result, time_of, to_time};
use crate::api::*;
use crate::cluster::conditions::{self, DesiredCondition, READY, STALLED};
use crate::cluster::status;
use crate::controller::schedule::{self, STARTING_DEADLINE};
use crate::controller::sync_run::job::APP_LABEL;

pub const PROVISIONING_ENABLED: &str = "ProvisioningEnabled";
pub const SYNCHRONIZATION_ENABLED: &str = "SynchronizationEnabled";
pub const SYNCHRONIZING: &str = "Synchronizing";
pub const LIMIT_EXCEEDED: &str = "LimitExceeded";

pub const IDENTITY_DOMAIN_NOT_FOUND: &str = "IdentityDomainNotFound";
pub const IDENTITY_DOMAIN_NOT_READY: &str = "IdentityDomainNotReady";

/// Outcome of the provisioning checks (connectivity and the grant group).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProvisioningState {
    Disabled,
    Ready { grant_group_id: String },
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
}

/// A SyncRun to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRun {
    pub name: String,
    pub direction: Direction,
    pub trigger: Trigger,
}

/// What a reconcile must do.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub status: CatalogAppStatus,
    pub create: Vec<NewRun>,
    /// Active runs to cancel, with the reason given in their status.
    pub cancel: Vec<(String, String)>,
    /// Finished runs beyond the history limits.
    pub prune: Vec<String>,
    pub requeue: Duration,
    pub events: Vec<ObjectEvent>,
    /// Runs seen finishing in this reconcile, for the runs metric.
    pub finished: Vec<(Direction, RunPhase)>,
}

const MAX_NAME: usize = 63;

/// A deterministic run name: `<app>-<suffix>`, the app part shortened so the
/// name stays a valid Job name (a label value, at most 63 characters).
pub fn run_name(app: &str, suffix: &str) -> String {
    let keep = MAX_NAME.saturating_sub(suffix.len() + 1);
    let prefix: String = app.chars().take(keep).collect();
    let prefix = prefix.trim_end_matches(['-', '.']);
    format!("{prefix}-{suffix}")
}

/// FNV-1a: stable across Rust versions, unlike `DefaultHasher`.
fn short_hash(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for b in p.bytes().chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    format!("{:08x}", (h >> 32) as u32)
}

fn phase(run: &SyncRun) -> Option<RunPhase> {
    run.status.as_ref().and_then(|s| s.phase)
}

fn is_active(run: &SyncRun) -> bool {
    !super::sync_run::is_finished(run)
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

fn summary(run: &SyncRun) -> RunSummary {
    let s = run.status.clone().unwrap_or_default();
    RunSummary {
        name: run.name_any(),
        phase: s.phase,
        start_time: s.start_time,
        completion_time: s.completion_time,
        counts: s.counts,
        message: s.message,
    }
}

fn progress_text(run: &SyncRun) -> String {
    let s = run.status.clone().unwrap_or_default();
    let phase = s
        .phase
        .map(|p| format!("{p:?}"))
        .unwrap_or("Pending".into());
    let mut text = format!("run {} ({:?}, {phase})", run.name_any(), run.spec.direction);
    let stage = s
        .stage
        .filter(|_| s.phase == Some(RunPhase::Running))
        .map(|st| format!(" {}", format!("{st:?}").to_lowercase()));
    match s.progress {
        // The numbers are per stage: without its name, 100% of listing reads as done.
        Some(p) if p.total > 0 => text.push_str(&format!(
            ":{} {}/{} ({}%)",
            stage.unwrap_or_default(),
            p.processed,
            p.total,
            p.percent
        )),
        // Nothing counted yet (listing has not learnt its totals): only the stage.
        _ => {
            if let Some(stage) = stage {
                text.push_str(&format!(":{stage}"));
            }
        }
    }
    text
}

fn limit_text(run: &SyncRun, policy: Option<&str>) -> String {
    let s = run.status.clone().unwrap_or_default();
    let planned = s.planned.unwrap_or_default();
    let limits = s.limits.unwrap_or_default();
    let allowed = |v: Option<i64>| v.map_or("unlimited".to_string(), |v| v.to_string());
    // Say what to change: which field of which object, and to what.
    let over: Vec<String> = [
        ("maxCreates", planned.creates, limits.max_creates),
        ("maxDeletes", planned.deletes, limits.max_deletes),
    ]
    .into_iter()
    .filter(|(_, p, max)| max.is_some_and(|m| *p > m))
    .map(|(field, p, _)| format!("{field} to at least {p}"))
    .collect();
    let place = match (run.spec.direction, policy) {
        (Direction::Import, Some(p)) => format!("spec.limits of SyncPolicy {p:?}"),
        (Direction::Import, None) => "spec.limits of the SyncPolicy".to_string(),
        (Direction::Provision, _) => "spec.provisioning.limits of this CatalogApp".to_string(),
    };
    let hint = if over.is_empty() {
        String::new()
    } else {
        format!(
            ". If these changes are expected, raise {} in {place} (or set whenExceeded: ApplyUpToLimit) and request a run",
            over.join(" and ")
        )
    };
    format!(
        "run {} stopped on a limit: planned {} creates and {} deletes; allowed {} creates and {} deletes{hint}",
        run.name_any(),
        planned.creates,
        planned.deletes,
        allowed(limits.max_creates),
        allowed(limits.max_deletes),
    )
}

/// One direction of runs, scheduled the same way for Import and Provision.
struct Lane<'a> {
    direction: Direction,
    /// Ok when runs may start; else the reason and message.
    runnable: std::result::Result<(), (&'static str, String)>,
    /// Turned off by the user (or suspended): active runs are cancelled.
    switched_off: Option<String>,
    schedule: Option<&'a str>,
    handled: Option<&'a Time>,
    name_prefix: &'static str,
}

struct LaneOutcome {
    due: Option<DateTime<Utc>>,
    next: Option<DateTime<Utc>>,
    invalid: Option<String>,
}

fn schedule_lane(lane: &Lane, app_created: DateTime<Utc>, now: DateTime<Utc>) -> LaneOutcome {
    let mut out = LaneOutcome {
        due: None,
        next: None,
        invalid: None,
    };
    let Some(expr) = lane.schedule else {
        return out;
    };
    match schedule::parse(expr) {
        Err(e) => out.invalid = Some(e.to_string()),
        Ok(s) if lane.runnable.is_ok() => {
            let handled = lane
                .handled
                .and_then(time_of)
                .map_or(app_created, |h| h.max(app_created));
            let d = schedule::decide(&s, handled, now, STARTING_DEADLINE);
            out.due = d.due;
            out.next = d.next;
        }
        Ok(_) => {}
    }
    out
}

/// The whole CatalogApp policy: status, runs to create, cancel and prune.
pub fn decide(inp: &Inputs) -> Plan {
    let app = inp.app;
    let name = app.name_any();
    let old = app.status.clone().unwrap_or_default();
    let spec = &app.spec;
    let now_t = to_time(inp.now);
    let app_created = app
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(time_of)
        .unwrap_or(inp.now);
    let mut plan = Plan {
        requeue: Duration::from_secs(300),
        ..Default::default()
    };
    let mut st = CatalogAppStatus {
        observed_generation: app.metadata.generation,
        grant_group_id: old.grant_group_id.clone(),
        last_handled_requested_at: old.last_handled_requested_at.clone(),
        last_schedule_time: old.last_schedule_time.clone(),
        last_provisioning_schedule_time: old.last_provisioning_schedule_time.clone(),
        ..Default::default()
    };

    // Provisioning.
    let prov_enabled = spec.provisioning.as_ref().is_some_and(|p| p.enabled);
    let prov_cond = match inp.provisioning {
        ProvisioningState::Disabled => {
            DesiredCondition::falsy(PROVISIONING_ENABLED, "Disabled", "provisioning is disabled")
        }
        ProvisioningState::Ready { grant_group_id } => {
            st.grant_group_id = Some(grant_group_id.clone());
            DesiredCondition::truthy(
                PROVISIONING_ENABLED,
                "Enabled",
                format!(
                    "connected to the app; grant group {:?} exists",
                    app.grant_group_name()
                ),
            )
        }
        ProvisioningState::Failed(f) => {
            DesiredCondition::falsy(PROVISIONING_ENABLED, f.reason, &f.message)
        }
    };
    let prov_ok = matches!(inp.provisioning, ProvisioningState::Ready { .. });

    // Synchronization.
    let sync_enabled = spec.synchronization.as_ref().is_some_and(|s| s.enabled);
    let policy = match inp.policy {
        PolicyState::Found(p) => Some(p),
        _ => None,
    };
    let import_runnable = if !sync_enabled {
        Err(("Disabled", "synchronization is disabled".to_string()))
    } else if spec.suspend {
        Err(("Suspended", "the app is suspended".to_string()))
    } else if !prov_ok {
        Err((
            "ProvisioningNotEnabled",
            format!(
                "synchronization needs provisioning: {}",
                prov_cond.message.trim_end_matches('.')
            ),
        ))
    } else if let PolicyState::NotFound(p) = inp.policy {
        Err(("PolicyNotFound", format!("SyncPolicy {p:?} not found")))
    } else {
        Ok(())
    };
    let import = Lane {
        direction: Direction::Import,
        runnable: import_runnable,
        switched_off: if !sync_enabled {
            Some("synchronization was disabled".into())
        } else if spec.suspend {
            Some("the app was suspended".into())
        } else if !prov_enabled {
            Some("provisioning was disabled".into())
        } else {
            None
        },
        schedule: policy.and_then(|p| p.spec.schedule.as_deref()),
        handled: old.last_schedule_time.as_ref(),
        name_prefix: "",
    };
    let provision = Lane {
        direction: Direction::Provision,
        runnable: if !prov_enabled {
            Err(("Disabled", "provisioning is disabled".into()))
        } else if spec.suspend {
            Err(("Suspended", "the app is suspended".into()))
        } else if !prov_ok {
            Err(("ProvisioningNotReady", prov_cond.message.clone()))
        } else {
            Ok(())
        },
        switched_off: if !prov_enabled {
            Some("provisioning was disabled".into())
        } else if spec.suspend {
            Some("the app was suspended".into())
        } else {
            None
        },
        schedule: spec
            .provisioning
            .as_ref()
            .and_then(|p| p.schedule.as_deref()),
        handled: old.last_provisioning_schedule_time.as_ref(),
        name_prefix: "p",
    };

    let concurrency = policy
        .map(|p| p.spec.concurrency_policy)
        .unwrap_or_default();
    let mut active: Vec<&SyncRun> = inp.runs.iter().filter(|r| is_active(r)).collect();
    // The run that is executing (has a Job) first, then the newest.
    active.sort_by_key(|r| {
        let has_job = r.status.as_ref().is_some_and(|s| s.job_name.is_some());
        std::cmp::Reverse((has_job, created(r)))
    });

    // Cancel the active runs of lanes the user switched off.
    for lane in [&import, &provision] {
        if let Some(why) = &lane.switched_off {
            for r in active.iter().filter(|r| r.spec.direction == lane.direction) {
                plan.cancel
                    .push((r.name_any(), format!("cancelled: {why}")));
            }
        }
    }
    let cancelled = |r: &SyncRun, plan: &Plan| plan.cancel.iter().any(|(n, _)| *n == r.name_any());
    let mut busy = active.iter().any(|r| !cancelled(r, &plan));

    let mut stalled: Option<String> = None;
    let mut import_invalid: Option<String> = None;
    // The on-demand request goes to Import when synchronization is on, else to Provision.
    let request = app
        .annotations()
        .get(REQUESTED_AT_ANNOTATION)
        .filter(|v| old.last_handled_requested_at.as_ref() != Some(*v))
        .cloned();
    let request_lane = if sync_enabled { &import } else { &provision };

    for lane in [&import, &provision] {
        let out = schedule_lane(lane, app_created, inp.now);
        if let Some(e) = &out.invalid {
            stalled = Some(e.clone());
            if lane.direction == Direction::Import {
                import_invalid = Some(e.clone());
            }
        }
        let next = out.next.map(to_time);
        match lane.direction {
            Direction::Import => st.next_sync_time = next,
            Direction::Provision => st.next_provisioning_time = next,
        }
        if let Some(next) = out.next {
            let wait = (next - inp.now).to_std().unwrap_or_default() + Duration::from_secs(1);
            plan.requeue = plan.requeue.min(wait);
        }
        let mut wanted: Option<(String, Trigger)> = None;
        if let Some(slot) = out.due {
            let handled = Some(to_time(slot));
            match lane.direction {
                Direction::Import => st.last_schedule_time = handled,
                Direction::Provision => st.last_provisioning_schedule_time = handled,
            }
            let token = schedule::slot_token(slot);
            wanted = Some((
                run_name(&name, &format!("{}{token}", lane.name_prefix)),
                Trigger::Schedule,
            ));
        }
        if std::ptr::eq(lane, request_lane)
            && let Some(value) = &request
        {
            match &lane.runnable {
                Ok(()) => {
                    let prev = old.last_handled_requested_at.as_deref().unwrap_or("");
                    let suffix = format!("{}r{}", lane.name_prefix, short_hash(&[prev, value]));
                    // A request wins over a slot due at the same moment: one run serves both.
                    if busy && concurrency == ConcurrencyPolicy::Forbid {
                        // Wait for the active run; the request stays pending.
                        plan.requeue = plan.requeue.min(Duration::from_secs(30));
                        continue;
                    }
                    st.last_handled_requested_at = Some(value.clone());
                    wanted = Some((run_name(&name, &suffix), Trigger::Requested));
                }
                // Suspended: the request waits, like Flux.
                Err(("Suspended", _)) => {}
                Err((_, msg)) => {
                    st.last_handled_requested_at = Some(value.clone());
                    plan.events.push(ObjectEvent::warning(
                        "RequestIgnored",
                        format!("on-demand run requested but not possible: {msg}"),
                    ));
                }
            }
        }
        let Some((run, trigger)) = wanted else {
            continue;
        };
        if inp.runs.iter().any(|r| r.name_any() == run) {
            continue; // already created (e.g. before a restart)
        }
        if busy {
            match concurrency {
                ConcurrencyPolicy::Forbid => {
                    plan.events.push(ObjectEvent::normal(
                        "RunSkipped",
                        format!("{:?} run {run} skipped: a run is still active (concurrencyPolicy Forbid)", lane.direction),
                    ));
                    continue;
                }
                ConcurrencyPolicy::Replace => {
                    for r in active.iter() {
                        if !cancelled(r, &plan) {
                            plan.cancel
                                .push((r.name_any(), format!("cancelled: replaced by run {run}")));
                        }
                    }
                }
            }
        }
        busy = true;
        plan.create.push(NewRun {
            name: run,
            direction: lane.direction,
            trigger,
        });
    }

    // Synchronization condition.
    let sync_cond = match (&import.runnable, &import_invalid) {
        (Err((reason, msg)), _) => {
            DesiredCondition::falsy(SYNCHRONIZATION_ENABLED, reason, msg.clone())
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
    };

    // Runs: the active one and the last finished one of each direction.
    let remaining_active: Vec<&SyncRun> = active
        .iter()
        .copied()
        .filter(|r| !cancelled(r, &plan))
        .collect();
    let synchronizing = match remaining_active.first() {
        Some(r) => {
            st.active_run = Some(ActiveRun {
                name: r.name_any(),
                direction: Some(r.spec.direction),
                progress: r.status.as_ref().and_then(|s| s.progress.clone()),
            });
            DesiredCondition::truthy(SYNCHRONIZING, "RunActive", progress_text(r))
        }
        None if !plan.create.is_empty() => {
            let r = &plan.create[0];
            st.active_run = Some(ActiveRun {
                name: r.name.clone(),
                direction: Some(r.direction),
                progress: None,
            });
            DesiredCondition::truthy(
                SYNCHRONIZING,
                "RunActive",
                format!("run {} created", r.name),
            )
        }
        None => DesiredCondition::falsy(SYNCHRONIZING, "Idle", "no run is active"),
    };
    let last_finished = |dir: Direction| {
        inp.runs
            .iter()
            .filter(|r| r.spec.direction == dir && !is_active(r))
            .max_by_key(|r| (ended(r), created(r)))
    };
    let last_import = last_finished(Direction::Import);
    let last_prov = last_finished(Direction::Provision);
    st.last_run = last_import.map(summary).or(old.last_run.clone());
    st.last_provisioning_run = last_prov.map(summary).or(old.last_provisioning_run.clone());

    let newest = [last_import, last_prov]
        .into_iter()
        .flatten()
        .max_by_key(|r| (ended(r), created(r)));
    let limit_cond = match newest {
        Some(r) if phase(r) == Some(RunPhase::LimitExceeded) => DesiredCondition::truthy(
            LIMIT_EXCEEDED,
            "LimitExceeded",
            limit_text(r, policy.map(|p| p.name_any()).as_deref()),
        ),
        Some(r) => DesiredCondition::falsy(
            LIMIT_EXCEEDED,
            "WithinLimits",
            format!("the last run {} stayed within its limits", r.name_any()),
        ),
        None => match conditions::find(&old.conditions, LIMIT_EXCEEDED) {
            // Its run was pruned: keep what we said about it.
            Some(c) => DesiredCondition::new(
                LIMIT_EXCEEDED,
                c.status == "True",
                &c.reason,
                c.message.clone(),
            ),
            None => DesiredCondition::falsy(LIMIT_EXCEEDED, "NoRuns", "no run has finished yet"),
        },
    };

    // Ready: everything the user turned on works.
    let ready = if let Some(e) = &stalled {
        DesiredCondition::falsy(READY, "InvalidSchedule", e.clone())
    } else if prov_enabled && !prov_ok {
        DesiredCondition::falsy(READY, &prov_cond.reason, prov_cond.message.clone())
    } else if sync_enabled
        && let Err((reason, msg)) = &import.runnable
        && *reason != "Suspended"
    {
        DesiredCondition::falsy(READY, reason, msg.clone())
    } else if spec.suspend {
        DesiredCondition::truthy(READY, "Suspended", "the app is suspended")
    } else {
        DesiredCondition::truthy(READY, "Ready", "the app is reconciled")
    };
    let stalled_cond = match &stalled {
        Some(e) => DesiredCondition::truthy(STALLED, "InvalidSchedule", e.clone()),
        None => DesiredCondition::falsy(STALLED, "InvalidSchedule", ""),
    };
    st.conditions = conditions::merge(
        &old.conditions,
        &[
            ready,
            prov_cond.clone(),
            sync_cond,
            synchronizing,
            limit_cond,
            stalled_cond,
        ],
        app.metadata.generation,
        &now_t,
    );

    // Pruning: newest first; keep the configured number of each outcome.
    let (keep_ok, keep_failed) = policy.map_or((3, 3), |p| {
        (
            p.spec.successful_runs_history_limit.max(0) as usize,
            p.spec.failed_runs_history_limit.max(0) as usize,
        )
    });
    let mut finished: Vec<&SyncRun> = inp.runs.iter().filter(|r| !is_active(r)).collect();
    finished.sort_by_key(|r| std::cmp::Reverse((created(r), r.name_any())));
    let (mut ok, mut failed) = (0, 0);
    for r in finished {
        let (count, keep) = if phase(r) == Some(RunPhase::Succeeded) {
            (&mut ok, keep_ok)
        } else {
            (&mut failed, keep_failed)
        };
        *count += 1;
        if *count > keep {
            plan.prune.push(r.name_any());
        }
    }

    // Events for outcomes and connectivity changes (compared with the old status).
    for (direction, old_run, new_run) in [
        (Direction::Import, &old.last_run, &st.last_run),
        (
            Direction::Provision,
            &old.last_provisioning_run,
            &st.last_provisioning_run,
        ),
    ] {
        if let Some(n) = new_run
            && old_run.as_ref().map(|o| (&o.name, o.phase)) != Some((&n.name, n.phase))
            && let Some(p) = n.phase
        {
            plan.events.push(run_event(n, p));
            plan.finished.push((direction, p));
        }
    }
    let old_prov = conditions::find(&old.conditions, PROVISIONING_ENABLED);
    let failed_reason = |r: &str| {
        [
            connectivity::CONNECTIVITY_FAILED,
            connectivity::UNAUTHORIZED,
            connectivity::SECRET_NOT_FOUND,
        ]
        .contains(&r)
    };
    match (old_prov, prov_ok) {
        (Some(o), false) if o.status == "True" && failed_reason(&prov_cond.reason) => {
            plan.events.push(ObjectEvent::warning(
                "ConnectivityLost",
                prov_cond.message.clone(),
            ))
        }
        (Some(o), true) if o.status == "False" && failed_reason(&o.reason) => plan.events.push(
            ObjectEvent::normal("ConnectivityRestored", prov_cond.message.clone()),
        ),
        _ => {}
    }
    for c in &plan.create {
        plan.events.push(ObjectEvent::normal(
            "RunStarted",
            format!(
                "created SyncRun {} ({:?}, trigger {:?})",
                c.name, c.direction, c.trigger
            ),
        ));
    }
    for (run, why) in &plan.cancel {
        plan.events.push(ObjectEvent::normal(
            "RunCancelled",
            format!("SyncRun {run} {why}"),
        ));
    }
    if !remaining_active.is_empty() || !plan.create.is_empty() {
        // Progress is mirrored from run events; this only bounds staleness.
        plan.requeue = plan.requeue.min(Duration::from_secs(60));
    }
    plan.status = st;
    plan
}

fn run_event(run: &RunSummary, phase: RunPhase) -> ObjectEvent {
    let msg = format!(
        "SyncRun {} ended {phase:?}{}",
        run.name,
        run.message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default()
    );
    match phase {
        RunPhase::Succeeded => ObjectEvent::normal("RunSucceeded", msg),
        RunPhase::Failed => ObjectEvent::warning("RunFailed", msg),
        RunPhase::LimitExceeded => ObjectEvent::warning("LimitExceeded", msg),
        RunPhase::Cancelled => ObjectEvent::normal("RunCancelled", msg),
        RunPhase::Pending | RunPhase::Running => ObjectEvent::normal("RunStarted", msg),
    }
}

/// The SyncRun object for a planned run: our labels and owner reference only.
pub fn new_run(app: &CatalogApp, r: &NewRun) -> SyncRun {
    let mut owner = app.controller_owner_ref(&());
    if let Some(o) = owner.as_mut() {
        // blockOwnerDeletion needs rights on the owner's finalizers; GC works without it.
        o.block_owner_deletion = None;
    }
    SyncRun {
        metadata: ObjectMeta {
            name: Some(r.name.clone()),
            namespace: app.namespace(),
            labels: Some([(APP_LABEL.to_string(), app.name_any())].into()),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        spec: SyncRunSpec {
            app_ref: LocalRef {
                name: app.name_any(),
            },
            direction: r.direction,
            mode: Mode::Apply,
            trigger: r.trigger,
        },
        status: None,
    }
}

/// Checks provisioning: the domain, the app's endpoint and the grant group.
/// Also says whether a Ready state stands in for a transient failure.
async fn check_provisioning(
    ctx: &Context,
    app: &CatalogApp,
    ns: &str,
) -> Result<(ProvisioningState, bool)> {
    if !app.spec.provisioning.as_ref().is_some_and(|p| p.enabled) {
        return Ok((ProvisioningState::Disabled, false));
    }
    let domain_name = &app.spec.identity_domain_ref.name;
    let domains: Api<IdentityDomain> = Api::namespaced(ctx.client.clone(), ns);
    let Some(domain) = domains.get_opt(domain_name).await? else {
        return Ok((
            ProvisioningState::Failed(Failure::new(
                IDENTITY_DOMAIN_NOT_FOUND,
                format!("IdentityDomain {domain_name:?} not found"),
            )),
            false,
        ));
    };
    let domain_ready = domain
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, READY))
        .cloned();
    let key = format!("{ns}/{}", app.name_any());
    // Not the app's status: its own grantGroupId write would make the next
    // reconcile check again (the cached state holds the id).
    let fingerprint = format!(
        "{:?}/{:?}/{:?}",
        app.metadata.generation,
        domain.metadata.generation,
        domain_ready.as_ref().map(|c| (&c.status, &c.reason)),
    );
    if let Some(cached) = ctx.app_probes.get(&key, &fingerprint) {
        return Ok((cached, false));
    }
    let state = match domain_ready {
        Some(c) if c.status == "True" => probe_app_and_group(ctx, app, ns, &domain).await?,
        other => ProvisioningState::Failed(Failure::new(
            IDENTITY_DOMAIN_NOT_READY,
            format!(
                "IdentityDomain {domain_name:?} is not ready{}",
                other
                    .map(|c| format!(": {}", c.message))
                    .unwrap_or_default()
            ),
        )),
    };
    // Failures are not cached: the next reconcile (at most FAILURE_RECHECK away) retries.
    let failure = match &state {
        ProvisioningState::Failed(f) => Some(f.clone()),
        _ => None,
    };
    let (state, tolerated) = ctx
        .app_probes
        .settle(&key, &fingerprint, state, failure.as_ref());
    if tolerated && let Some(f) = failure {
        tracing::info!(app = %key, reason = f.reason, "provisioning check failed, the provider may be busy; still Ready, rechecking soon");
    }
    Ok((state, tolerated))
}

async fn probe_app_and_group(
    ctx: &Context,
    app: &CatalogApp,
    ns: &str,
    domain: &IdentityDomain,
) -> Result<ProvisioningState> {
    let conn = &app.spec.connection;
    // Shared by the apps of this endpoint and credentials.
    let checked = ctx
        .endpoints
        .probe(
            &ctx.client,
            Endpoint {
                ns,
                url: &conn.url,
                auth: &conn.auth,
                tls: conn.tls.as_ref(),
            },
        )
        .await?;
    if let Err(f) = checked {
        return Ok(ProvisioningState::Failed(
            f.restated(f.reason, format!("app {}: {}", conn.url, f.message)),
        ));
    }
    let dom = &domain.spec;
    let domain_client = match ctx
        .endpoints
        .client(
            &ctx.client,
            Endpoint {
                ns,
                url: &dom.url,
                auth: &dom.auth,
                tls: dom.tls.as_ref(),
            },
        )
        .await?
    {
        Ok(c) => c,
        Err(f) => {
            return Ok(ProvisioningState::Failed(f.restated(
                IDENTITY_DOMAIN_NOT_READY,
                format!("identity domain: {}", f.message),
            )));
        }
    };
    let group = app.grant_group_name();
    let known = app
        .status
        .as_ref()
        .and_then(|s| s.grant_group_id.as_deref());
    match connectivity::ensure_group(&domain_client, &group, known).await {
        Ok(id) => Ok(ProvisioningState::Ready { grant_group_id: id }),
        Err(e) => Ok(ProvisioningState::Failed(
            connectivity::scim_failure(&e).restated(
                IDENTITY_DOMAIN_NOT_READY,
                format!("grant group {group:?} in the identity domain: {e}"),
            ),
        )),
    }
}

/// Cancels an active run: the controller records Cancelled (the Job may not
/// get the chance), then deletes the Job so its pod gets SIGTERM.
pub async fn cancel_run(ctx: &Context, ns: &str, run: &str, message: &str) -> Result<()> {
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
            "metadata": {"annotations": {super::sync_run::CANCEL_ANNOTATION: message}}
        })),
    )
    .await?;
    let recorded = current.status.as_ref().and_then(|s| s.job_name.clone());
    super::sync_run::finish(
        ctx,
        &current,
        RunPhase::Cancelled,
        "Cancelled",
        message,
        recorded.as_deref(),
    )
    .await?;
    // The Job is named like the run, even if its name was never recorded.
    let job_name = recorded.unwrap_or_else(|| run.to_string());
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(ctx.client.clone(), ns);
    // Background: the Job goes now, its pod is stopped (SIGTERM) by the garbage collector.
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    match jobs.delete(&job_name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub async fn reconcile(app: Arc<CatalogApp>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile("CatalogApp");
    let ns = app
        .namespace()
        .ok_or_else(|| Error::NoNamespace(app.name_any()))?;
    let name = app.name_any();
    if app.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }

    // Dereference.
    let (provisioning, tolerated) = check_provisioning(&ctx, &app, &ns).await?;
    let (policy_name, policy) = super::policy_of(&ctx, &app, &ns).await?;
    let policy_state = match (&policy_name, &policy) {
        (None, _) => PolicyState::NotReferenced,
        (Some(_), Some(p)) => PolicyState::Found(p),
        (Some(n), None) => PolicyState::NotFound(n),
    };
    let runs_api: Api<SyncRun> = Api::namespaced(ctx.client.clone(), &ns);
    let runs: Vec<SyncRun> = runs_api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|r| r.spec.app_ref.name == name)
        .collect();

    // Decide.
    let plan = decide(&Inputs {
        app: &app,
        now: Utc::now(),
        provisioning: &provisioning,
        policy: policy_state,
        runs: &runs,
    });

    // Apply: cancel, create, prune.
    for (run, why) in &plan.cancel {
        cancel_run(&ctx, &ns, run, why).await?;
    }
    for r in &plan.create {
        match runs_api
            .create(&PostParams::default(), &new_run(&app, r))
            .await
        {
            Ok(_) => {}
            // Created before (e.g. by a previous leader): done already.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    for run in &plan.prune {
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match runs_api.delete(run, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }

    // Update status, only when it changed (no churn).
    if app.status.as_ref() != Some(&plan.status) {
        let api: Api<CatalogApp> = Api::namespaced(ctx.client.clone(), &ns);
        status::apply(
            &api,
            &name,
            status::CONTROLLER_MANAGER,
            serde_json::to_value(&plan.status).expect("status serializes"),
        )
        .await?;
    }
    ctx.metrics.set_app_conditions(
        &ns,
        &name,
        &plan
            .status
            .conditions
            .iter()
            .map(|c| (c.type_.clone(), c.status == "True"))
            .collect::<Vec<_>>(),
    );
    let reference = app.object_ref(&());
    for ev in &plan.events {
        ctx.publish(&reference, ev).await;
    }
    for (direction, phase) in &plan.finished {
        ctx.metrics
            .run_finished(&format!("{direction:?}"), &format!("{phase:?}"));
    }
    let mut requeue = plan.requeue.min(ctx.config.recheck);
    if tolerated || matches!(provisioning, ProvisioningState::Failed(_)) {
        requeue = requeue.min(super::FAILURE_RECHECK);
    }
    Ok(Action::requeue(requeue.max(Duration::from_secs(1))))
}

#[cfg(test)]
mod tests;
