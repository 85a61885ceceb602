use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use serde_json::json;

use super::decide::FinishedRun;
use super::runs::{CREATED_BY_CONTROLLER, CREATED_BY_LABEL};
use super::texts::{limit_text, progress_text};
use super::*;
use crate::api::*;
use crate::cluster::conditions::{self, READY, RECONCILING, STALLED, is_true};
use crate::controller::connectivity::Failure;
use crate::controller::sync_run::CANCEL_ANNOTATION;
use crate::controller::sync_run::job::APP_LABEL;

const APP_CREATED: &str = "2026-01-01T00:00:00Z";

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn app(sync: bool, extra: serde_json::Value) -> CatalogApp {
    let mut v = json!({
        "metadata": {"name": "slack", "namespace": "team-a", "uid": "u-app", "generation": 3,
                     "creationTimestamp": APP_CREATED,
                     "labels": {"argocd.argoproj.io/instance": "team-a"}},
        "spec": {
            "identityDomainRef": {"name": "corp"},
            "connection": {"url": "https://slack.example/scim",
                           "auth": {"bearerToken": {"secretRef": {"name": "s", "key": "token"}}}},
            "provisioning": {"enabled": true},
            "synchronization": {"enabled": sync, "policyRef": {"name": "default"}}
        }
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn policy(spec: serde_json::Value) -> SyncPolicy {
    serde_json::from_value(
        json!({"metadata": {"name": "default", "namespace": "team-a"}, "spec": spec}),
    )
    .unwrap()
}

/// A run the controller created (it carries our mark).
fn run(name: &str, dir: Direction, phase: Option<RunPhase>, created: &str) -> SyncRun {
    let mut r = user_run(name, dir, phase, created);
    r.metadata.labels = Some([(CREATED_BY_LABEL.into(), CREATED_BY_CONTROLLER.into())].into());
    r
}

/// A run a person created (kubectl, GitOps): no mark, trigger Manual.
fn user_run(name: &str, dir: Direction, phase: Option<RunPhase>, created: &str) -> SyncRun {
    let mut r: SyncRun = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "team-a", "creationTimestamp": created},
        "spec": {"appRef": {"name": "slack"}, "direction": dir}
    }))
    .unwrap();
    r.status = phase.map(|p| SyncRunStatus {
        phase: Some(p),
        completion_time: p.is_finished().then(|| Time(created.parse().unwrap())),
        ..Default::default()
    });
    r
}

fn ready() -> ProvisioningState {
    ProvisioningState::Ready {
        grant_group_id: "g-1".into(),
        record_group_id: "r-1".into(),
    }
}

fn decide_at(
    app: &CatalogApp,
    now: &str,
    provisioning: &ProvisioningState,
    policy: Option<&SyncPolicy>,
    runs: &[SyncRun],
) -> Plan {
    decide_with_jobs(app, now, provisioning, policy, runs, &[])
}

/// `decide_at`, with the runs whose Job has not ended yet.
fn decide_with_jobs(
    app: &CatalogApp,
    now: &str,
    provisioning: &ProvisioningState,
    policy: Option<&SyncPolicy>,
    runs: &[SyncRun],
    live_jobs: &[&str],
) -> Plan {
    let live_jobs: Vec<String> = live_jobs.iter().map(|j| j.to_string()).collect();
    decide(&Inputs {
        app,
        now: t(now),
        provisioning,
        policy: match policy {
            Some(p) => PolicyState::Found(p),
            None => PolicyState::NotFound("default"),
        },
        runs,
        live_jobs: &live_jobs,
    })
}

fn cond<'a>(
    plan: &'a Plan,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    conditions::find(&plan.status.conditions, type_).unwrap_or_else(|| panic!("{type_} missing"))
}

fn with_status(mut a: CatalogApp, plan: &Plan) -> CatalogApp {
    a.status = Some(plan.status.clone());
    a
}

#[test]
fn everything_disabled_is_ready_and_idle() {
    let a = app(false, json!({"spec": {"provisioning": {"enabled": false}}}));
    let p = decide_at(
        &a,
        "2026-01-01T10:00:00Z",
        &ProvisioningState::Disabled,
        None,
        &[],
    );
    assert!(p.create.is_empty() && p.cancel.is_empty());
    assert_eq!(p.status.observed_generation, Some(3));
    assert!(is_true(&p.status.conditions, READY));
    assert_eq!(cond(&p, PROVISIONING_ENABLED).reason, "Disabled");
    assert_eq!(cond(&p, SYNCHRONIZATION_ENABLED).reason, "Disabled");
    assert_eq!(cond(&p, SYNCHRONIZING).status, "False");
    assert!(conditions::find(&p.status.conditions, STALLED).is_none());
    assert!(conditions::find(&p.status.conditions, "Reconciling").is_none());
}

#[test]
fn provisioning_failure_is_reported_with_its_reason_and_blocks_sync() {
    let a = app(true, json!({}));
    let pol = policy(json!({"schedule": "0 * * * *"}));
    let failed = ProvisioningState::Failed(Failure::new("Unauthorized", "app: HTTP 401"));
    let p = decide_at(&a, "2026-01-01T10:00:30Z", &failed, Some(&pol), &[]);
    assert_eq!(cond(&p, PROVISIONING_ENABLED).reason, "Unauthorized");
    assert_eq!(cond(&p, READY).reason, "Unauthorized");
    assert_eq!(cond(&p, READY).status, "False");
    assert_eq!(
        cond(&p, SYNCHRONIZATION_ENABLED).reason,
        "ProvisioningNotEnabled"
    );
    assert!(p.create.is_empty(), "no runs while provisioning fails");
}

#[test]
fn both_groups_ready_go_into_the_status() {
    let a = app(
        false,
        json!({"spec": {"provisioning": {"grantGroup": "slack-users"}}}),
    );
    let p = decide_at(&a, "2026-01-01T10:00:00Z", &ready(), None, &[]);
    assert_eq!(p.status.grant_group_id.as_deref(), Some("g-1"));
    assert_eq!(p.status.record_group_id.as_deref(), Some("r-1"));
    let c = cond(&p, PROVISIONING_ENABLED);
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "Enabled"));
    assert!(
        c.message.contains("\"slack-users\"") && c.message.contains("\"slack-users-accounts\""),
        "{}",
        c.message
    );
    // A later failure keeps the ids the app had.
    let a = with_status(a, &p);
    let failed = ProvisioningState::Failed(Failure::new("ConnectivityFailed", "refused"));
    let p = decide_at(&a, "2026-01-01T10:01:00Z", &failed, None, &[]);
    assert_eq!(p.status.record_group_id.as_deref(), Some("r-1"));
}

#[test]
fn a_group_that_is_not_the_apps_is_group_not_owned_and_says_how_to_adopt() {
    use crate::cluster::groups::GroupError;
    use crate::scim::{ErrorKind, ScimError};
    let not_owned = GroupError::NotOwned {
        role: "grant",
        name: "admins".into(),
        mark: "catalogsync:team-a/slack/grant".into(),
    };
    let f = probes::group_failure(&not_owned);
    assert_eq!((f.reason, f.transient), (GROUP_NOT_OWNED, false));
    let other = GroupError::OwnedByOther {
        role: "record",
        name: "admins-accounts".into(),
        found: "catalogsync:team-b/jira/record".into(),
        mark: "catalogsync:team-a/slack/record".into(),
    };
    assert_eq!(probes::group_failure(&other).reason, GROUP_NOT_OWNED);
    let ambiguous = GroupError::Ambiguous {
        count: 2,
        name: "admins".into(),
    };
    assert_eq!(probes::group_failure(&ambiguous).reason, GROUP_NOT_OWNED);
    // A busy domain is the domain's, and may pass.
    let busy = GroupError::Scim(ScimError::Status {
        method: "GET".into(),
        path: "/Groups".into(),
        status: 503,
        kind: ErrorKind::from_status(503),
        scim_type: None,
        detail: String::new(),
    });
    let f = probes::group_failure(&busy);
    assert_eq!((f.reason, f.transient), (IDENTITY_DOMAIN_NOT_READY, true));

    let a = app(
        false,
        json!({"spec": {"provisioning": {"grantGroup": "admins"}}}),
    );
    let failed = ProvisioningState::Failed(probes::group_failure(&not_owned));
    let p = decide_at(&a, "2026-01-01T10:00:00Z", &failed, None, &[]);
    for type_ in [PROVISIONING_ENABLED, READY] {
        let c = cond(&p, type_);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", GROUP_NOT_OWNED)
        );
        assert!(
            c.message.contains("\"admins\"") && c.message.contains("adoptExistingGroups"),
            "{type_}: {}",
            c.message
        );
    }
    assert_eq!(p.status.grant_group_id, None);
    assert!(
        !p.events.iter().any(|e| e.reason == "ConnectivityLost"),
        "not a connectivity loss"
    );
}

#[test]
fn missing_policy_then_found() {
    let a = app(true, json!({}));
    let p = decide_at(&a, "2026-01-01T10:00:00Z", &ready(), None, &[]);
    assert_eq!(cond(&p, SYNCHRONIZATION_ENABLED).reason, "PolicyNotFound");
    assert_eq!(cond(&p, READY).reason, "PolicyNotFound");
    let pol = policy(json!({}));
    let a = with_status(a, &p);
    let p = decide_at(&a, "2026-01-01T10:00:10Z", &ready(), Some(&pol), &[]);
    assert!(is_true(&p.status.conditions, SYNCHRONIZATION_ENABLED));
    assert!(is_true(&p.status.conditions, READY));
}

#[test]
fn invalid_schedule_stalls() {
    let a = app(true, json!({}));
    let pol = policy(json!({"schedule": "every day"}));
    let p = decide_at(&a, "2026-01-01T10:00:00Z", &ready(), Some(&pol), &[]);
    assert_eq!(cond(&p, STALLED).reason, "InvalidSchedule");
    assert_eq!(cond(&p, SYNCHRONIZATION_ENABLED).reason, "InvalidSchedule");
    assert_eq!(cond(&p, READY).status, "False");
    assert!(p.create.is_empty());
}

#[test]
fn scheduled_slot_creates_one_deterministic_run() {
    let a = app(true, json!({}));
    let pol = policy(json!({"schedule": "0 * * * *"}));
    let p = decide_at(&a, "2026-01-01T10:00:30Z", &ready(), Some(&pol), &[]);
    assert_eq!(
        p.create,
        [NewRun {
            name: "slack-29454360".into(),
            direction: Direction::Import,
            trigger: Trigger::Schedule
        }]
    );
    assert_eq!(
        p.status.last_schedule_time,
        Some(Time("2026-01-01T10:00:00Z".parse().unwrap()))
    );
    assert_eq!(
        p.status.next_sync_time,
        Some(Time("2026-01-01T11:00:00Z".parse().unwrap()))
    );
    assert!(is_true(&p.status.conditions, SYNCHRONIZING));
    assert_eq!(p.status.active_run.as_ref().unwrap().name, "slack-29454360");
    // Same moment after a restart, the run exists: nothing new.
    let existing = run(
        "slack-29454360",
        Direction::Import,
        None,
        "2026-01-01T10:00:31Z",
    );
    let p2 = decide_at(
        &a,
        "2026-01-01T10:00:40Z",
        &ready(),
        Some(&pol),
        std::slice::from_ref(&existing),
    );
    assert!(p2.create.is_empty());
    // And with the slot recorded as handled, nothing either.
    let a = with_status(a, &p);
    let p3 = decide_at(
        &a,
        "2026-01-01T10:02:00Z",
        &ready(),
        Some(&pol),
        &[existing],
    );
    assert!(p3.create.is_empty());
}

#[test]
fn no_catch_up_burst_after_downtime() {
    let mut a = app(true, json!({}));
    a.status = Some(CatalogAppStatus {
        last_schedule_time: Some(Time("2026-01-01T05:00:00Z".parse().unwrap())),
        ..Default::default()
    });
    let pol = policy(json!({"schedule": "0 * * * *"}));
    let p = decide_at(&a, "2026-01-01T10:30:00Z", &ready(), Some(&pol), &[]);
    assert!(p.create.is_empty(), "{:?}", p.create);
    assert_eq!(
        p.status.next_sync_time,
        Some(Time("2026-01-01T11:00:00Z".parse().unwrap()))
    );
    assert!(p.requeue <= Duration::from_secs(30 * 60 + 1));
}

#[test]
fn requested_at_creates_exactly_one_run_and_is_echoed() {
    let a = app(
        true,
        json!({"metadata": {"annotations": {
            REQUESTED_AT_ANNOTATION: "1700000000",
            REQUESTED_DIRECTION_ANNOTATION: "Import"}}}),
    );
    let pol = policy(json!({}));
    let p = decide_at(&a, "2026-01-01T10:00:00Z", &ready(), Some(&pol), &[]);
    assert_eq!(p.create.len(), 1);
    assert_eq!(p.create[0].trigger, Trigger::Requested);
    assert!(p.create[0].name.starts_with("slack-r"));
    assert_eq!(
        p.status.last_handled_requested_at.as_deref(),
        Some("1700000000")
    );
    assert_eq!(p.status.requested_import_after, None);
    let r = run(
        &p.create[0].name,
        Direction::Import,
        Some(RunPhase::Succeeded),
        "2026-01-01T10:00:01Z",
    );
    let a2 = with_status(a.clone(), &p);
    let p2 = decide_at(&a2, "2026-01-01T10:05:00Z", &ready(), Some(&pol), &[r]);
    assert!(p2.create.is_empty(), "handled once");
    // A new token is a new request with a new name.
    let mut a3 = a2.clone();
    a3.annotations_mut()
        .insert(REQUESTED_AT_ANNOTATION.into(), "1700000999".into());
    let p3 = decide_at(&a3, "2026-01-01T10:06:00Z", &ready(), Some(&pol), &[]);
    assert_eq!(p3.create.len(), 1);
    assert_ne!(p3.create[0].name, p.create[0].name);
}

/// With synchronization on, a request (Both by default) runs Provision first and its
/// Import only once the Provision run has ended; the echo waits for the Import run, and
/// the state is in the runs and the status, so a fresh decide (a restart) continues it.
#[test]
fn a_requested_run_provisions_before_it_imports() {
    let a = app(
        true,
        json!({"metadata": {"annotations": {REQUESTED_AT_ANNOTATION: "day-one"}}}),
    );
    let pol = policy(json!({}));
    let p1 = decide_at(&a, "2026-01-01T10:00:00Z", &ready(), Some(&pol), &[]);
    assert_eq!(p1.create.len(), 1);
    assert_eq!(p1.create[0].direction, Direction::Provision);
    assert!(p1.create[0].name.starts_with("slack-pr"));
    let provision = p1.create[0].name.clone();
    assert_eq!(p1.status.last_handled_requested_at, None, "not handled yet");
    assert_eq!(p1.status.requested_import_after.as_ref(), Some(&provision));
    assert_eq!(cond(&p1, SYNCHRONIZING).status, "True");

    // The Provision run is running: no Import yet, whatever the concurrency policy.
    let a2 = with_status(a.clone(), &p1);
    let replace = policy(json!({"concurrencyPolicy": "Replace"}));
    for (phase, pol) in [(RunPhase::Pending, &pol), (RunPhase::Running, &replace)] {
        let running = run(
            &provision,
            Direction::Provision,
            Some(phase),
            "2026-01-01T10:00:01Z",
        );
        let p2 = decide_at(&a2, "2026-01-01T10:01:00Z", &ready(), Some(pol), &[running]);
        assert!(p2.create.is_empty(), "{phase:?}: {:?}", p2.create);
        assert!(p2.cancel.is_empty());
        assert_eq!(p2.status.last_handled_requested_at, None);
        assert_eq!(p2.status.requested_import_after.as_ref(), Some(&provision));
        assert_eq!(cond(&p2, SYNCHRONIZING).status, "True", "Reconciling");
    }

    // It ended (even Failed: the accounts it did create are there): the Import starts,
    // and the request is handled. A restart is the same decide from the stored status.
    for phase in [
        RunPhase::Succeeded,
        RunPhase::Failed,
        RunPhase::LimitExceeded,
    ] {
        let ended = run(
            &provision,
            Direction::Provision,
            Some(phase),
            "2026-01-01T10:00:01Z",
        );
        let p3 = decide_at(
            &a2,
            "2026-01-01T10:02:00Z",
            &ready(),
            Some(&pol),
            std::slice::from_ref(&ended),
        );
        assert_eq!(p3.create.len(), 1, "{phase:?}");
        assert_eq!(p3.create[0].direction, Direction::Import);
        assert_eq!(p3.create[0].trigger, Trigger::Requested);
        assert!(p3.create[0].name.starts_with("slack-r"));
        assert_eq!(
            p3.status.last_handled_requested_at.as_deref(),
            Some("day-one")
        );
        assert_eq!(p3.status.requested_import_after, None);
        // Handled: the next reconcile starts nothing more.
        let a3 = with_status(a2.clone(), &p3);
        let p4 = decide_at(&a3, "2026-01-01T10:03:00Z", &ready(), Some(&pol), &[ended]);
        assert!(p4.create.is_empty());
    }
}

#[test]
fn a_cancelled_requested_provision_does_not_chain_its_import() {
    let a = app(
        true,
        json!({"metadata": {"annotations": {REQUESTED_AT_ANNOTATION: "x"}}}),
    );
    let pol = policy(json!({}));
    let p1 = decide_at(&a, "2026-01-01T10:00:00Z", &ready(), Some(&pol), &[]);
    let cancelled = run(
        &p1.create[0].name,
        Direction::Provision,
        Some(RunPhase::Cancelled),
        "2026-01-01T10:00:01Z",
    );
    let a2 = with_status(a, &p1);
    let p2 = decide_at(
        &a2,
        "2026-01-01T10:01:00Z",
        &ready(),
        Some(&pol),
        &[cancelled],
    );
    assert!(p2.create.is_empty());
    assert_eq!(p2.status.last_handled_requested_at.as_deref(), Some("x"));
    assert_eq!(p2.status.requested_import_after, None);
    assert!(p2.events.iter().any(|e| e.reason == "RequestIgnored"));
}

#[test]
fn requested_direction_picks_one_lane() {
    let pol = policy(json!({}));
    let at = "2026-01-01T10:00:00Z";
    let request = |sync: bool, direction: &str| {
        app(
            sync,
            json!({"metadata": {"annotations": {
                REQUESTED_AT_ANNOTATION: "t", REQUESTED_DIRECTION_ANNOTATION: direction}}}),
        )
    };
    let p = decide_at(&request(true, "Provision"), at, &ready(), Some(&pol), &[]);
    assert_eq!(p.create.len(), 1);
    assert_eq!(p.create[0].direction, Direction::Provision);
    assert_eq!(p.status.last_handled_requested_at.as_deref(), Some("t"));
    assert_eq!(p.status.requested_import_after, None);
    // Synchronization off: Both is Provision only; Import is not possible.
    let p = decide_at(&request(false, "Both"), at, &ready(), Some(&pol), &[]);
    assert_eq!(p.create.len(), 1);
    assert_eq!(p.create[0].direction, Direction::Provision);
    assert_eq!(p.status.last_handled_requested_at.as_deref(), Some("t"));
    let p = decide_at(&request(false, "Import"), at, &ready(), Some(&pol), &[]);
    assert!(p.create.is_empty());
    assert_eq!(p.status.last_handled_requested_at.as_deref(), Some("t"));
    assert!(p.events.iter().any(|e| e.reason == "RequestIgnored"));
    // An unknown direction is not guessed.
    let p = decide_at(&request(true, "Sideways"), at, &ready(), Some(&pol), &[]);
    assert!(p.create.is_empty());
    assert!(
        p.events
            .iter()
            .any(|e| e.reason == "RequestIgnored" && e.note.contains("Sideways"))
    );
}

#[test]
fn request_steps_by_provision_run() {
    use super::lanes::{RequestStep, Wanted, request_step};
    let import = RequestStep::Run {
        direction: Direction::Import,
        last: true,
    };
    assert_eq!(Wanted::parse(None), Ok(Wanted::Both));
    assert_eq!(Wanted::parse(Some("import")), Ok(Wanted::Import));
    assert!(Wanted::parse(Some("up")).is_err());
    assert_eq!(
        request_step(true, Ok(Wanted::Both), None),
        RequestStep::Run {
            direction: Direction::Provision,
            last: false
        }
    );
    assert_eq!(
        request_step(true, Ok(Wanted::Both), Some((None, false))),
        RequestStep::AwaitProvision,
        "no status yet: not ended"
    );
    assert_eq!(
        request_step(
            true,
            Ok(Wanted::Both),
            Some((Some(RunPhase::Running), false))
        ),
        RequestStep::AwaitProvision
    );
    assert_eq!(
        request_step(
            true,
            Ok(Wanted::Both),
            Some((Some(RunPhase::Succeeded), false))
        ),
        import
    );
    assert!(matches!(
        request_step(
            true,
            Ok(Wanted::Both),
            Some((Some(RunPhase::Cancelled), false))
        ),
        RequestStep::Drop(_)
    ));
    assert_eq!(request_step(true, Ok(Wanted::Import), None), import);
}

#[test]
fn forbid_skips_a_slot_and_defers_a_request_while_a_run_is_active() {
    let a = app(
        true,
        json!({"metadata": {"annotations": {REQUESTED_AT_ANNOTATION: "x"}}}),
    );
    let pol = policy(json!({"schedule": "0 * * * *"}));
    let active = run(
        "slack-old",
        Direction::Import,
        Some(RunPhase::Running),
        "2026-01-01T09:59:00Z",
    );
    let p = decide_at(&a, "2026-01-01T10:00:30Z", &ready(), Some(&pol), &[active]);
    assert!(p.create.is_empty());
    assert!(p.cancel.is_empty());
    assert_eq!(
        p.status.last_handled_requested_at, None,
        "the request waits"
    );
    assert!(p.requeue <= Duration::from_secs(30));
    assert_eq!(cond(&p, SYNCHRONIZING).status, "True");
}

/// The run as the controller leaves it once it cancelled it: Cancelled, with our mark.
fn cancelled(mut r: SyncRun, why: &str) -> SyncRun {
    r.annotations_mut()
        .insert(CANCEL_ANNOTATION.into(), why.into());
    r.status = Some(SyncRunStatus {
        phase: Some(RunPhase::Cancelled),
        completion_time: Some(Time("2026-01-01T10:00:31Z".parse().unwrap())),
        ..Default::default()
    });
    r
}

/// Replace stops the active run (its Job deleted in the foreground) and starts the new
/// one only once that Job is gone; meanwhile the app is Reconciling and the slot stays due.
#[test]
fn replace_waits_for_the_replaced_run_to_stop() {
    let a = app(true, json!({}));
    let pol = policy(json!({"schedule": "0 * * * *", "concurrencyPolicy": "Replace"}));
    let active = run(
        "slack-old",
        Direction::Import,
        Some(RunPhase::Running),
        "2026-01-01T09:00:00Z",
    );
    let now = "2026-01-01T10:00:30Z";
    let p = decide_with_jobs(
        &a,
        now,
        &ready(),
        Some(&pol),
        std::slice::from_ref(&active),
        &["slack-old"],
    );
    assert_eq!(p.cancel.len(), 1);
    assert_eq!(p.cancel[0].0, "slack-old");
    assert!(
        p.cancel[0].1.contains("replaced by run slack-"),
        "{:?}",
        p.cancel
    );
    assert_eq!(p.replaced, ["slack-old"], "its Job goes in the foreground");
    assert!(p.create.is_empty(), "not before the old pod is gone");
    let reconciling = cond(&p, RECONCILING);
    assert_eq!(
        (reconciling.status.as_str(), reconciling.reason.as_str()),
        ("True", "WaitingForRunToStop")
    );
    assert!(
        reconciling
            .message
            .contains("waiting for run slack-old to stop"),
        "{}",
        reconciling.message
    );
    assert_eq!(p.status.last_schedule_time, None, "the slot stays due");
    assert!(p.requeue <= Duration::from_secs(5));

    // Cancelled, but its Job is still there (foreground deletion): still waiting, nothing
    // cancelled twice.
    let a2 = with_status(a.clone(), &p);
    let stopping = cancelled(active, "cancelled: replaced by run x");
    let later = "2026-01-01T10:00:40Z";
    let p2 = decide_with_jobs(
        &a2,
        later,
        &ready(),
        Some(&pol),
        std::slice::from_ref(&stopping),
        &["slack-old"],
    );
    assert!(p2.create.is_empty() && p2.cancel.is_empty());
    assert!(cond(&p2, RECONCILING).message.contains("slack-old"));

    // The Job is gone: the slot's run starts, Reconciling goes.
    let p3 = decide_with_jobs(&a2, later, &ready(), Some(&pol), &[stopping], &[]);
    assert_eq!(p3.create.len(), 1);
    assert_eq!(p3.create[0].trigger, Trigger::Schedule);
    assert!(p3.status.last_schedule_time.is_some());
    assert!(conditions::find(&p3.status.conditions, RECONCILING).is_none());
}

/// Replace never stops a Plan run nor a run of the other direction: the request waits
/// and a slot is skipped, as under Forbid.
#[test]
fn replace_does_not_stop_a_plan_run_nor_the_other_direction() {
    let request = json!({"metadata": {"annotations": {
        REQUESTED_AT_ANNOTATION: "now", REQUESTED_DIRECTION_ANNOTATION: "Import"}}});
    let a = app(true, request);
    let pol = policy(json!({"concurrencyPolicy": "Replace"}));
    let mut plan_run = run(
        "slack-plan",
        Direction::Import,
        Some(RunPhase::Running),
        "2026-01-01T09:00:00Z",
    );
    plan_run.spec.mode = Mode::Plan;
    let provision = run(
        "slack-prov",
        Direction::Provision,
        Some(RunPhase::Running),
        "2026-01-01T09:00:00Z",
    );
    for holder in [plan_run, provision] {
        let name = holder.name_any();
        let p = decide_with_jobs(
            &a,
            "2026-01-01T10:00:30Z",
            &ready(),
            Some(&pol),
            &[holder],
            &[name.as_str()],
        );
        assert!(p.cancel.is_empty(), "{name}: {:?}", p.cancel);
        assert!(p.create.is_empty(), "{name}");
        assert_eq!(p.status.last_handled_requested_at, None, "{name}: waits");
    }

    // A slot due meanwhile is skipped, saying why.
    let a = app(true, json!({}));
    let pol = policy(json!({"schedule": "0 * * * *", "concurrencyPolicy": "Replace"}));
    let provision = run(
        "slack-prov",
        Direction::Provision,
        Some(RunPhase::Running),
        "2026-01-01T09:00:00Z",
    );
    let p = decide_at(
        &a,
        "2026-01-01T10:00:30Z",
        &ready(),
        Some(&pol),
        &[provision],
    );
    assert!(p.cancel.is_empty() && p.create.is_empty());
    let skipped = p.events.iter().find(|e| e.reason == "RunSkipped").unwrap();
    assert!(
        skipped.note.contains("does not stop a Provision run"),
        "{}",
        skipped.note
    );
}

/// Forbid and Replace count the same runs: the active ones and the cancelled ones whose
/// Job has not ended; a run that ended by itself holds nothing.
#[test]
fn forbid_and_replace_count_the_same_runs() {
    let active = run(
        "slack-a",
        Direction::Import,
        Some(RunPhase::Running),
        "2026-01-01T09:00:00Z",
    );
    let stopping = cancelled(
        run("slack-s", Direction::Import, None, "2026-01-01T09:00:00Z"),
        "cancelled: the app was suspended",
    );
    let stopped = cancelled(
        run("slack-t", Direction::Import, None, "2026-01-01T09:00:00Z"),
        "cancelled",
    );
    let ended = run(
        "slack-e",
        Direction::Import,
        Some(RunPhase::Succeeded),
        "2026-01-01T09:00:00Z",
    );
    let runs = [active, stopping, stopped, ended];
    let live = ["slack-s".to_string(), "slack-e".to_string()];
    let names: Vec<String> = lanes::holding(&runs, &live, &Plan::default())
        .iter()
        .map(|r| r.name_any())
        .collect();
    assert_eq!(names, ["slack-a", "slack-s"]);

    // The same runs make Forbid refuse and Replace stop or wait.
    let a = app(true, json!({}));
    for (concurrency, runs) in [
        ("Forbid", &runs[..1]),
        ("Forbid", &runs[1..2]),
        ("Replace", &runs[1..2]),
    ] {
        let pol = policy(json!({"schedule": "0 * * * *", "concurrencyPolicy": concurrency}));
        let p = decide_with_jobs(
            &a,
            "2026-01-01T10:00:30Z",
            &ready(),
            Some(&pol),
            runs,
            &["slack-s"],
        );
        assert!(
            p.create.is_empty(),
            "{concurrency} {:?}",
            runs[0].name_any()
        );
    }
    let pol = policy(json!({"schedule": "0 * * * *"}));
    let p = decide_with_jobs(
        &a,
        "2026-01-01T10:00:30Z",
        &ready(),
        Some(&pol),
        &runs[2..],
        &["slack-e"],
    );
    assert_eq!(
        p.create.len(),
        1,
        "a stopped run and an ended one hold nothing"
    );
}

#[test]
fn disabling_or_suspending_cancels_the_active_run() {
    let pol = policy(json!({"schedule": "0 * * * *"}));
    let active = run(
        "slack-1",
        Direction::Import,
        Some(RunPhase::Running),
        "2026-01-01T09:00:00Z",
    );
    let a = app(false, json!({}));
    let p = decide_at(
        &a,
        "2026-01-01T10:00:30Z",
        &ready(),
        Some(&pol),
        std::slice::from_ref(&active),
    );
    assert_eq!(
        p.cancel,
        [(
            "slack-1".to_string(),
            "cancelled: synchronization was disabled".to_string()
        )]
    );
    assert!(p.create.is_empty());
    assert_eq!(cond(&p, SYNCHRONIZATION_ENABLED).reason, "Disabled");
    assert_eq!(cond(&p, SYNCHRONIZING).status, "False");
    assert_eq!(p.status.next_sync_time, None, "no schedule while disabled");

    let a = app(true, json!({"spec": {"suspend": true}}));
    let p = decide_at(&a, "2026-01-01T10:00:30Z", &ready(), Some(&pol), &[active]);
    assert_eq!(p.cancel.len(), 1);
    assert_eq!(cond(&p, SYNCHRONIZATION_ENABLED).reason, "Suspended");
    assert!(p.create.is_empty());
}

#[test]
fn history_limits_prune_the_oldest_finished_runs() {
    let a = app(true, json!({}));
    let pol = policy(json!({"successfulRunsHistoryLimit": 2, "failedRunsHistoryLimit": 1}));
    let mut runs = Vec::new();
    for i in 0..4 {
        runs.push(run(
            &format!("ok-{i}"),
            Direction::Import,
            Some(RunPhase::Succeeded),
            &format!("2026-01-01T0{i}:00:00Z"),
        ));
    }
    runs.push(run(
        "bad-0",
        Direction::Import,
        Some(RunPhase::Failed),
        "2026-01-01T00:30:00Z",
    ));
    runs.push(run(
        "bad-1",
        Direction::Import,
        Some(RunPhase::LimitExceeded),
        "2026-01-01T01:30:00Z",
    ));
    runs.push(run(
        "active",
        Direction::Import,
        Some(RunPhase::Running),
        "2026-01-01T00:10:00Z",
    ));
    let p = decide_at(&a, "2026-01-01T10:00:00Z", &ready(), Some(&pol), &runs);
    let mut pruned = p.prune.clone();
    pruned.sort();
    assert_eq!(pruned, ["bad-0", "ok-0", "ok-1"]);
}

#[test]
fn steady_state_makes_no_changes() {
    let pol = policy(json!({"schedule": "0 * * * *"}));
    let done = run(
        "slack-29451600",
        Direction::Import,
        Some(RunPhase::Succeeded),
        "2026-01-01T09:00:00Z",
    );
    let a = app(true, json!({}));
    let p1 = decide_at(
        &a,
        "2026-01-01T09:30:00Z",
        &ready(),
        Some(&pol),
        std::slice::from_ref(&done),
    );
    let a = with_status(a, &p1);
    let p2 = decide_at(&a, "2026-01-01T09:40:00Z", &ready(), Some(&pol), &[done]);
    assert_eq!(p1.status, p2.status, "identical status: no write");
    assert!(p2.events.is_empty(), "{:?}", p2.events);
    assert!(p2.create.is_empty() && p2.cancel.is_empty() && p2.prune.is_empty());
}

#[test]
fn last_run_and_limit_exceeded_mirror_the_runs() {
    let a = app(true, json!({}));
    let pol = policy(json!({}));
    let mut r = run(
        "slack-9",
        Direction::Import,
        Some(RunPhase::LimitExceeded),
        "2026-01-01T09:00:00Z",
    );
    let status = r.status.as_mut().unwrap();
    // As the engine ends a run on a limit: Complete false, LimitExceeded true.
    status.conditions = serde_json::from_value(json!([
        {"type": "Complete", "status": "False", "reason": "LimitExceeded", "message": "",
         "lastTransitionTime": "2026-01-01T09:00:00Z"},
        {"type": "LimitExceeded", "status": "True", "reason": "LimitExceeded", "message": "",
         "lastTransitionTime": "2026-01-01T09:00:00Z"},
    ]))
    .unwrap();
    status.planned = Some(PlannedCounts {
        creates: 150,
        deletes: 3,
        ..Default::default()
    });
    status.limits = Some(AppliedLimits {
        max_creates: Some(100),
        max_deletes: None,
        max_changes: None,
    });
    let p = decide_at(&a, "2026-01-01T10:00:00Z", &ready(), Some(&pol), &[r]);
    let c = cond(&p, LIMIT_EXCEEDED);
    assert_eq!(c.status, "True");
    assert!(
        c.message.contains("150") && c.message.contains("100"),
        "{}",
        c.message
    );
    assert_eq!(
        p.status.last_run.as_ref().unwrap().phase,
        Some(RunPhase::LimitExceeded)
    );
    assert!(p.events.iter().any(|e| e.reason == "LimitExceeded"));
    assert_eq!(
        p.finished,
        [FinishedRun {
            direction: Direction::Import,
            phase: RunPhase::LimitExceeded,
            reason: "LimitExceeded".into(),
        }]
    );
    assert!(
        is_true(&p.status.conditions, READY),
        "a limit is an outcome, not a misconfiguration"
    );
}

#[test]
fn active_run_progress_is_mirrored() {
    let a = app(true, json!({}));
    let pol = policy(json!({}));
    let mut r = run(
        "slack-5",
        Direction::Import,
        Some(RunPhase::Running),
        "2026-01-01T09:00:00Z",
    );
    r.status.as_mut().unwrap().progress = Some(Progress::new(4200, 10000));
    let p = decide_at(&a, "2026-01-01T10:00:00Z", &ready(), Some(&pol), &[r]);
    let active = p.status.active_run.as_ref().unwrap();
    assert_eq!(active.name, "slack-5");
    assert_eq!(active.progress.as_ref().unwrap().percent, 42);
    assert!(cond(&p, SYNCHRONIZING).message.contains("4200/10000 (42%)"));
}

#[test]
fn provisioning_schedule_shares_the_lane_code() {
    let a = app(
        false,
        json!({"spec": {"provisioning": {"enabled": true, "schedule": "*/15 * * * *"}}}),
    );
    let p = decide_at(&a, "2026-01-01T10:15:10Z", &ready(), None, &[]);
    assert_eq!(p.create.len(), 1);
    assert_eq!(p.create[0].direction, Direction::Provision);
    assert!(p.create[0].name.starts_with("slack-p"));
    assert!(p.status.next_provisioning_time.is_some());
}

#[test]
fn new_runs_carry_only_our_label_and_the_owner() {
    let a = app(true, json!({}));
    let r = new_run(
        &a,
        &NewRun {
            name: "slack-1".into(),
            direction: Direction::Import,
            trigger: Trigger::Schedule,
        },
    );
    assert_eq!(
        r.metadata.labels,
        Some(
            [
                (APP_LABEL.to_string(), "slack".to_string()),
                (
                    CREATED_BY_LABEL.to_string(),
                    CREATED_BY_CONTROLLER.to_string()
                ),
            ]
            .into()
        )
    );
    assert!(r.metadata.annotations.is_none());
    let o = &r.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (o.kind.as_str(), o.uid.as_str(), o.controller),
        ("CatalogApp", "u-app", Some(true))
    );
}

#[test]
fn run_names_fit_a_job_name() {
    let long = "a".repeat(80);
    let n = run_name(&long, "29454360");
    assert!(n.len() <= 63, "{}", n.len());
    assert!(n.ends_with("-29454360"));
    assert_eq!(run_name("slack", "r1234abcd"), "slack-r1234abcd");
}

#[test]
fn progress_names_the_stage_and_limit_messages_say_what_to_raise() {
    let mut r = run(
        "slack-r1",
        Direction::Import,
        Some(RunPhase::Running),
        APP_CREATED,
    );
    let status = r.status.as_mut().unwrap();
    status.stage = Some(Stage::Listing);
    assert_eq!(progress_text(&r), "run slack-r1 (Import, Running): listing");
    r.status.as_mut().unwrap().progress = Some(
        serde_json::from_value(json!({"processed": 1000, "total": 4000, "percent": 25})).unwrap(),
    );
    assert_eq!(
        progress_text(&r),
        "run slack-r1 (Import, Running): listing 1000/4000 (25%)"
    );

    let mut r = run(
        "slack-r2",
        Direction::Import,
        Some(RunPhase::LimitExceeded),
        APP_CREATED,
    );
    let status = r.status.as_mut().unwrap();
    status.planned = Some(serde_json::from_value(json!({"creates": 150, "deletes": 35})).unwrap());
    status.limits =
        Some(serde_json::from_value(json!({"maxCreates": 100, "maxDeletes": 20})).unwrap());
    let msg = limit_text(&r, Some("default"));
    assert!(
        msg.contains("planned 150 creates and 35 deletes; allowed 100 creates and 20 deletes")
            && msg.contains(
                "raise maxCreates to at least 150 and maxDeletes to at least 35 in spec.limits of SyncPolicy \"default\""
            ),
        "{msg}"
    );
    let mut p = r.clone();
    p.spec.direction = Direction::Provision;
    assert!(
        limit_text(&p, Some("default")).contains("spec.provisioning.limits of this CatalogApp")
    );
    // Within maxCreates and maxDeletes, over maxChanges: that is what to raise.
    let status = r.status.as_mut().unwrap();
    status.planned = Some(serde_json::from_value(json!({"creates": 80, "deletes": 15})).unwrap());
    status.limits = Some(
        serde_json::from_value(json!({"maxCreates": 100, "maxDeletes": 20, "maxChanges": 90}))
            .unwrap(),
    );
    let msg = limit_text(&r, Some("default"));
    assert!(
        msg.contains("allowed 100 creates and 20 deletes and 90 changes in all")
            && msg.contains("raise maxChanges to at least 95 in"),
        "{msg}"
    );
}

#[test]
fn connectivity_lost_and_restored_are_events_once() {
    let a = app(false, json!({}));
    let p1 = decide_at(&a, "2026-01-01T10:00:00Z", &ready(), None, &[]);
    assert!(p1.events.is_empty());
    let a = with_status(a, &p1);
    let lost = ProvisioningState::Failed(Failure::new("ConnectivityFailed", "connection refused"));
    let p2 = decide_at(&a, "2026-01-01T10:01:00Z", &lost, None, &[]);
    assert_eq!(p2.events.len(), 1);
    assert_eq!(p2.events[0].reason, "ConnectivityLost");
    assert!(p2.events[0].note.contains("connection refused"));
    let a = with_status(a, &p2);
    let p3 = decide_at(&a, "2026-01-01T10:02:00Z", &lost, None, &[]);
    assert!(p3.events.is_empty(), "still down: no new event");
    assert_eq!(p2.status, p3.status, "and no status write");
    let a = with_status(a, &p3);
    let p4 = decide_at(&a, "2026-01-01T10:03:00Z", &ready(), None, &[]);
    assert_eq!(p4.events[0].reason, "ConnectivityRestored");
    let c = cond(&p4, PROVISIONING_ENABLED);
    assert_eq!(c.last_transition_time.0.to_string(), "2026-01-01T10:03:00Z");
}

#[test]
fn history_limits_prune_only_the_runs_the_controller_created() {
    let a = app(true, json!({}));
    let pol = policy(json!({"successfulRunsHistoryLimit": 1, "failedRunsHistoryLimit": 1}));
    let ok = |name: &str, at: &str| run(name, Direction::Import, Some(RunPhase::Succeeded), at);
    let mine =
        |name: &str, at: &str| user_run(name, Direction::Import, Some(RunPhase::Succeeded), at);
    // Made before the mark existed: owned by the app, started by its schedule.
    let mut legacy = user_run(
        "legacy",
        Direction::Import,
        Some(RunPhase::Succeeded),
        "2026-01-01T00:30:00Z",
    );
    legacy.spec.trigger = Trigger::Schedule;
    legacy.metadata.owner_references = new_run(
        &a,
        &NewRun {
            name: "legacy".into(),
            direction: Direction::Import,
            trigger: Trigger::Schedule,
        },
    )
    .metadata
    .owner_references;
    // A person's run that names the app as owner is still theirs (trigger Manual).
    let mut owned_manual = mine("owned-manual", "2026-01-01T00:20:00Z");
    owned_manual.metadata.owner_references = legacy.metadata.owner_references.clone();
    let runs = [
        mine("git-old", "2026-01-01T00:00:00Z"),
        owned_manual,
        legacy,
        ok("ok-1", "2026-01-01T01:00:00Z"),
        ok("ok-2", "2026-01-01T02:00:00Z"),
        // The newest of all: a person's run takes no place in the history.
        mine("git-new", "2026-01-01T03:00:00Z"),
    ];
    let p = decide_at(&a, "2026-01-01T10:00:00Z", &ready(), Some(&pol), &runs);
    let mut pruned = p.prune.clone();
    pruned.sort();
    assert_eq!(pruned, ["legacy", "ok-1"]);
}

/// A finished run of `mode` that ended at `at`, LimitExceeded as the engine writes it.
fn ended(name: &str, dir: Direction, mode: Mode, phase: RunPhase, at: &str) -> SyncRun {
    let mut r = run(name, dir, Some(phase), at);
    r.spec.mode = mode;
    if phase == RunPhase::LimitExceeded {
        let status = r.status.as_mut().unwrap();
        status.planned = Some(PlannedCounts {
            creates: 150,
            ..Default::default()
        });
        status.limits = Some(AppliedLimits {
            max_creates: Some(100),
            max_deletes: None,
            max_changes: None,
        });
    }
    r
}

#[test]
fn limit_exceeded_follows_the_last_apply_run_of_each_direction() {
    use Direction::{Import, Provision};
    use Mode::{Apply, Plan as DryRun};
    let a = app(true, json!({}));
    let pol = policy(json!({}));
    let limited = ended(
        "imp-1",
        Import,
        Apply,
        RunPhase::LimitExceeded,
        "2026-01-01T09:00:00Z",
    );
    let mut runs = vec![limited];
    let p = decide_at(&a, "2026-01-01T09:01:00Z", &ready(), Some(&pol), &runs);
    assert_eq!(cond(&p, LIMIT_EXCEEDED).status, "True");
    assert!(
        cond(&p, LIMIT_EXCEEDED)
            .message
            .starts_with("Import run imp-1 stopped")
    );

    // A later Plan run and a later Provision run: the import alert stands.
    runs.push(ended(
        "plan-1",
        Import,
        DryRun,
        RunPhase::Succeeded,
        "2026-01-01T09:10:00Z",
    ));
    runs.push(ended(
        "prov-1",
        Provision,
        Apply,
        RunPhase::Succeeded,
        "2026-01-01T09:20:00Z",
    ));
    let a = with_status(a, &p);
    let p = decide_at(&a, "2026-01-01T09:21:00Z", &ready(), Some(&pol), &runs);
    let st = &p.status;
    assert_eq!(
        cond(&p, LIMIT_EXCEEDED).status,
        "True",
        "a Plan run never clears it"
    );
    assert_eq!(
        st.last_run.as_ref().unwrap().name,
        "plan-1",
        "lastRun: either mode"
    );
    assert_eq!(
        st.last_import.as_ref().unwrap().name,
        "imp-1",
        "lastImport: Apply only"
    );
    assert_eq!(st.last_provision.as_ref().unwrap().name, "prov-1");

    // Both directions limited: the message names both.
    runs.push(ended(
        "prov-2",
        Provision,
        Apply,
        RunPhase::LimitExceeded,
        "2026-01-01T09:30:00Z",
    ));
    let a = with_status(a, &p);
    let p = decide_at(&a, "2026-01-01T09:31:00Z", &ready(), Some(&pol), &runs);
    let message = &cond(&p, LIMIT_EXCEEDED).message;
    assert!(message.contains("Import run imp-1") && message.contains("Provision run prov-2"));

    // An Apply import within limits clears the import side only.
    runs.push(ended(
        "imp-2",
        Import,
        Apply,
        RunPhase::Succeeded,
        "2026-01-01T09:40:00Z",
    ));
    let a = with_status(a, &p);
    let p = decide_at(&a, "2026-01-01T09:41:00Z", &ready(), Some(&pol), &runs);
    let message = &cond(&p, LIMIT_EXCEEDED).message;
    assert!(message.starts_with("Provision run prov-2") && !message.contains("imp-"));
    // And a provisioning run within limits clears it.
    runs.push(ended(
        "prov-3",
        Provision,
        Apply,
        RunPhase::Succeeded,
        "2026-01-01T09:50:00Z",
    ));
    let a = with_status(a, &p);
    let p = decide_at(&a, "2026-01-01T09:51:00Z", &ready(), Some(&pol), &runs);
    assert_eq!(cond(&p, LIMIT_EXCEEDED).reason, "WithinLimits");
}

#[test]
fn the_last_apply_run_is_kept_when_its_run_is_gone_or_an_older_one_remains() {
    let a = app(true, json!({}));
    let pol = policy(json!({}));
    let mut limited = ended(
        "imp-9",
        Direction::Import,
        Mode::Apply,
        RunPhase::LimitExceeded,
        "2026-01-01T09:00:00Z",
    );
    limited.status.as_mut().unwrap().message = Some("nothing applied: planned 150 creates".into());
    let p = decide_at(&a, "2026-01-01T09:01:00Z", &ready(), Some(&pol), &[limited]);
    // The run is pruned; a person's older Apply run remains.
    let older = user_run(
        "git-run",
        Direction::Import,
        Some(RunPhase::Succeeded),
        "2026-01-01T08:00:00Z",
    );
    let a = with_status(a, &p);
    let p = decide_at(&a, "2026-01-01T09:02:00Z", &ready(), Some(&pol), &[older]);
    assert_eq!(p.status.last_import.as_ref().unwrap().name, "imp-9");
    let c = cond(&p, LIMIT_EXCEEDED);
    assert_eq!(c.status, "True");
    assert!(c.message.contains("planned 150 creates"), "{}", c.message);
}

#[test]
fn an_app_not_ready_from_the_start_gets_a_warning_once() {
    let a = app(true, json!({}));
    let p1 = decide_at(&a, "2026-01-01T10:00:00Z", &ready(), None, &[]);
    assert_eq!(cond(&p1, READY).reason, "PolicyNotFound");
    let warnings: Vec<_> = p1
        .events
        .iter()
        .filter(|e| e.reason == "NotReady")
        .collect();
    assert_eq!(warnings.len(), 1, "{:?}", p1.events);
    assert!(warnings[0].note.contains("PolicyNotFound"));
    let a = with_status(a, &p1);
    let p2 = decide_at(&a, "2026-01-01T10:01:00Z", &ready(), None, &[]);
    assert!(p2.events.is_empty(), "still not Ready: {:?}", p2.events);
    // Ready, then not Ready again: another warning.
    let pol = policy(json!({}));
    let a = with_status(a, &p2);
    let p3 = decide_at(&a, "2026-01-01T10:02:00Z", &ready(), Some(&pol), &[]);
    assert!(is_true(&p3.status.conditions, READY));
    let a = with_status(a, &p3);
    let p4 = decide_at(&a, "2026-01-01T10:03:00Z", &ready(), None, &[]);
    assert!(p4.events.iter().any(|e| e.reason == "NotReady"));
}

#[test]
fn last_successes_take_the_newest_applied_success_per_direction() {
    let mut plan = run(
        "p",
        Direction::Import,
        Some(RunPhase::Succeeded),
        "2026-01-05T00:00:00Z",
    );
    plan.spec.mode = Mode::Plan;
    let runs = [
        run(
            "a",
            Direction::Import,
            Some(RunPhase::Succeeded),
            "2026-01-02T00:00:00Z",
        ),
        run(
            "b",
            Direction::Import,
            Some(RunPhase::Succeeded),
            "2026-01-03T00:00:00Z",
        ),
        run(
            "c",
            Direction::Import,
            Some(RunPhase::Failed),
            "2026-01-04T00:00:00Z",
        ),
        run(
            "d",
            Direction::Provision,
            Some(RunPhase::Succeeded),
            "2026-01-01T00:00:00Z",
        ),
        run(
            "e",
            Direction::Provision,
            Some(RunPhase::Running),
            "2026-01-06T00:00:00Z",
        ),
        plan,
    ];
    let unix = |s: &str| t(s).timestamp() as f64;
    let mut last = last_successes(&runs);
    last.sort_by_key(|(d, _)| format!("{d:?}"));
    assert_eq!(
        last,
        vec![
            (Direction::Import, unix("2026-01-03T00:00:00Z")),
            (Direction::Provision, unix("2026-01-01T00:00:00Z")),
        ]
    );
    assert!(last_successes(&[]).is_empty());
}

#[test]
fn a_finished_run_is_timed_from_its_summary() {
    let summary = |start: Option<&str>, end: &str| RunSummary {
        start_time: start.map(|s| Time(s.parse().unwrap())),
        completion_time: Some(Time(end.parse().unwrap())),
        ..Default::default()
    };
    let status = CatalogAppStatus {
        last_run: Some(summary(
            Some("2026-01-01T00:00:00Z"),
            "2026-01-01T00:01:30Z",
        )),
        last_provisioning_run: Some(summary(None, "2026-01-01T00:01:30Z")),
        ..Default::default()
    };
    let seconds = |d| finished_summary(&status, d).and_then(run_seconds);
    assert_eq!(seconds(Direction::Import), Some(90.0));
    // Cancelled before its Job started: no duration to observe.
    assert_eq!(seconds(Direction::Provision), None);
}
