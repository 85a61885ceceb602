//! SyncPolicy: a missing or invalid policy, and what its settings do to runs (history
//! limits, change limits, `concurrencyPolicy: Replace`).

use std::time::Duration;

use catalogsync::api::{Direction, RunPhase, SyncPolicy, SyncRun};
use catalogsync::cluster::conditions::find;
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::{Env, app_cond, app_message, eventually, phase, requested_echo, tf};

#[tokio::test]
async fn missing_policy_is_reported_until_it_exists() {
    let (env, _ctl) = Env::with_controller("ctl-policy").await;
    env.app(true).await;
    let a = env
        .wait_app("PolicyNotFound", |a| {
            app_cond(a, "SynchronizationEnabled") == tf("False", "PolicyNotFound")
        })
        .await;
    assert_eq!(app_cond(&a, "Ready"), tf("False", "PolicyNotFound"));
    env.policy("schedule: \"0 3 * * *\"").await;
    let a = env
        .wait_app("recovered", |a| {
            app_cond(a, "SynchronizationEnabled") == tf("True", "Enabled")
        })
        .await;
    assert_eq!(app_cond(&a, "Ready"), tf("True", "Ready"));
    assert!(a.status.unwrap().next_sync_time.is_some());

    // An invalid schedule stalls.
    env.policy("schedule: \"every tuesday\"").await;
    let a = env
        .wait_app("Stalled", |a| {
            app_cond(a, "Stalled") == tf("True", "InvalidSchedule")
        })
        .await;
    assert_eq!(app_cond(&a, "Ready"), tf("False", "InvalidSchedule"));
    // The policy says so itself.
    let p = eventually(30, "policy Ready False InvalidSchedule", || async {
        let p = env.api::<SyncPolicy>().get("default").await.ok()?;
        let c = find(&p.status.as_ref()?.conditions, "Ready")?.clone();
        (c.reason == "InvalidSchedule" && c.status == "False").then_some(p)
    })
    .await;
    assert_eq!(p.status.unwrap().observed_generation, p.metadata.generation);
}

#[tokio::test]
async fn run_history_is_pruned_to_the_limits() {
    let (env, _ctl) = Env::with_controller("ctl-prune").await;
    env.policy("successfulRunsHistoryLimit: 1, failedRunsHistoryLimit: 1")
        .await;
    env.app(true).await;
    env.wait_ready().await;
    for (i, outcome) in ["Succeeded", "Failed", "Succeeded", "Failed", "Succeeded"]
        .iter()
        .enumerate()
    {
        env.request_run(&format!("req-{i}")).await;
        let run = eventually(30, "the requested run", || async {
            let a = env.get_app().await;
            let want = format!("req-{i}");
            if requested_echo(&a) != Some(want.as_str()) {
                return None;
            }
            env.runs()
                .await
                .into_iter()
                .find(|r| !phase(r).is_some_and(RunPhase::is_finished))
        })
        .await;
        env.job_writes(
            &run.name_any(),
            json!({"phase": outcome, "completionTime": format!("2026-01-01T00:00:0{i}Z")}),
        )
        .await;
        // Let the app see it ended before the next request (Forbid would hold it).
        let want = (run.name_any(), outcome.to_string());
        env.wait_app("run ended", |a| {
            let st = a.status.clone().unwrap_or_default();
            st.active_run.is_none()
                && st
                    .last_run
                    .map(|r| (r.name, r.phase.map(|p| format!("{p:?}"))))
                    == Some((want.0.clone(), Some(want.1.clone())))
        })
        .await;
    }
    let runs = eventually(30, "pruned to 1 + 1", || async {
        let runs = env.runs().await;
        (runs.len() == 2).then_some(runs)
    })
    .await;
    let mut phases: Vec<_> = runs.iter().filter_map(phase).collect();
    phases.sort_by_key(|p| format!("{p:?}"));
    assert_eq!(phases, [RunPhase::Failed, RunPhase::Succeeded]);
    let a = env.get_app().await;
    assert_eq!(
        a.status.unwrap().last_run.unwrap().phase,
        Some(RunPhase::Succeeded)
    );
}

#[tokio::test]
async fn a_run_stopped_on_a_limit_sets_limit_exceeded_with_planned_and_allowed() {
    let (env, _ctl) = Env::with_controller("ctl-limit").await;
    env.policy("limits: {maxCreates: 100}").await;
    env.app(true).await;
    env.wait_ready().await;
    env.request_run("limit").await;
    let run = env.first_run_with_job(30).await;
    env.job_writes(
        &run.name_any(),
        json!({"phase": "LimitExceeded", "completionTime": "2026-01-01T00:00:00Z",
               "planned": {"creates": 150, "deletes": 2},
               "limits": {"maxCreates": 100}}),
    )
    .await;
    let a = env
        .wait_app("LimitExceeded True", |a| {
            app_cond(a, "LimitExceeded") == tf("True", "LimitExceeded")
        })
        .await;
    let msg = app_message(&a, "LimitExceeded");
    assert!(msg.contains("150") && msg.contains("100"), "{msg}");
    assert_eq!(app_cond(&a, "Ready"), tf("True", "Ready"));
    eventually(10, "LimitExceeded event", || async {
        env.event_reasons()
            .await
            .contains("LimitExceeded")
            .then_some(())
    })
    .await;
}

/// Replace stops the active run by deleting its Job in the foreground, and creates the
/// new run only once that Job is gone. envtest has no garbage collector: the Job keeps
/// its `foregroundDeletion` finalizer until the test removes it, as the GC would once
/// the pod is gone.
#[tokio::test]
async fn replace_waits_for_the_old_job_to_be_gone() {
    let (env, _ctl) = Env::with_controller("ctl-replace").await;
    env.policy("concurrencyPolicy: Replace").await;
    env.app(true).await;
    env.wait_ready().await;
    env.request_run("first").await;
    let first = env.first_run_with_job(30).await;
    env.job_writes(&first.name_any(), json!({"phase": "Running"}))
        .await;
    env.request_run("second").await;

    let jobs = env.api::<Job>();
    let job = eventually(30, "old Job deleted in the foreground", || async {
        let j = jobs.get_opt(&first.name_any()).await.ok()??;
        j.metadata.deletion_timestamp.as_ref()?;
        j.finalizers()
            .contains(&"foregroundDeletion".to_string())
            .then_some(j)
    })
    .await;
    let replaced = env.api::<SyncRun>().get(&first.name_any()).await.unwrap();
    assert_eq!(phase(&replaced), Some(RunPhase::Cancelled));
    assert!(
        replaced
            .status
            .unwrap()
            .message
            .unwrap()
            .contains("replaced")
    );
    let a = env
        .wait_app("Reconciling: waiting for the old run", |a| {
            app_cond(a, "Reconciling") == tf("True", "WaitingForRunToStop")
        })
        .await;
    let waiting = app_message(&a, "Reconciling");
    assert!(waiting.contains(&first.name_any()), "{waiting}");
    // The old pod may still write: no new run meanwhile.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        env.runs().await.len(),
        1,
        "no new run while the old Job is there"
    );
    assert_eq!(requested_echo(&env.get_app().await), Some("first"));

    // The pod is gone: the garbage collector drops the finalizer, the Job goes.
    let gone_at = jiff::Timestamp::now();
    let unfinalize = json!({"metadata": {"finalizers": null}});
    jobs.patch(
        &job.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&unfinalize),
    )
    .await
    .unwrap();
    let second = eventually(30, "the new run", || async {
        env.runs()
            .await
            .into_iter()
            .find(|r| r.name_any() != first.name_any())
    })
    .await;
    assert!(jobs.get_opt(&first.name_any()).await.unwrap().is_none());
    let created = second.metadata.creation_timestamp.unwrap().0;
    // creationTimestamp has whole seconds.
    assert!(
        created.as_second() >= gone_at.as_second(),
        "the new run ({created}) is created after the old Job is gone ({gone_at})"
    );
    let a = env
        .wait_app("second handled", |a| requested_echo(a) == Some("second"))
        .await;
    assert!(app_cond(&a, "Reconciling").is_none());
}

/// Replace never cancels a Plan run nor a run of the other direction: the request waits
/// for it, as under Forbid.
#[tokio::test]
async fn replace_spares_a_plan_run_and_the_other_direction() {
    let (env, _ctl) = Env::with_controller("ctl-replace-spare").await;
    env.policy("concurrencyPolicy: Replace").await;
    env.app(true).await;
    env.wait_ready().await;

    // A Provision run is active; an Import request waits for it.
    env.request("provision", Some("Provision")).await;
    let provision = env.first_run_with_job(30).await;
    env.job_writes(&provision.name_any(), json!({"phase": "Running"}))
        .await;
    env.request("import", Some("Import")).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let p = env
        .api::<SyncRun>()
        .get(&provision.name_any())
        .await
        .unwrap();
    assert_eq!(phase(&p), Some(RunPhase::Running), "not replaced");
    let job = env.api::<Job>().get(&provision.name_any()).await.unwrap();
    assert!(job.metadata.deletion_timestamp.is_none());
    assert_eq!(env.runs().await.len(), 1);
    env.job_writes(&provision.name_any(), json!({"phase": "Succeeded"}))
        .await;
    env.wait_app("import handled", |a| requested_echo(a) == Some("import"))
        .await;
    let import = eventually(30, "the Import run", || async {
        env.runs()
            .await
            .into_iter()
            .find(|r| r.spec.direction == Direction::Import)
    })
    .await;
    env.job_writes(&import.name_any(), json!({"phase": "Succeeded"}))
        .await;

    // A Plan run (made by hand) is active; a request waits for it too.
    env.apply(&format!(
        "apiVersion: catalogsync.io/v1alpha1\nkind: SyncRun\nmetadata: {{name: plan, namespace: {}}}\n\
         spec: {{appRef: {{name: slack}}, direction: Import, mode: Plan, trigger: Manual}}\n",
        env.ns
    ))
    .await;
    eventually(30, "the Plan run's Job", || async {
        env.api::<Job>().get_opt("plan").await.ok()?.map(|_| ())
    })
    .await;
    env.job_writes("plan", json!({"phase": "Running"})).await;
    env.request("again", Some("Import")).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let plan = env.api::<SyncRun>().get("plan").await.unwrap();
    assert_eq!(
        phase(&plan),
        Some(RunPhase::Running),
        "a Plan run is not replaced"
    );
    assert_eq!(requested_echo(&env.get_app().await), Some("import"));
    env.job_writes("plan", json!({"phase": "Succeeded"})).await;
    env.wait_app("again handled", |a| requested_echo(a) == Some("again"))
        .await;
}
