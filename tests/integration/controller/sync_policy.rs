//! SyncPolicy: a missing or invalid policy, and what its settings do to runs (history
//! limits, change limits, `concurrencyPolicy: Replace`).

use catalogsync::api::{RunPhase, SyncPolicy, SyncRun};
use catalogsync::cluster::conditions::find;
use kube::ResourceExt;
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

#[tokio::test]
async fn replace_cancels_the_active_run_for_a_new_one() {
    let (env, _ctl) = Env::with_controller("ctl-replace").await;
    env.policy("concurrencyPolicy: Replace").await;
    env.app(true).await;
    env.wait_ready().await;
    env.request_run("first").await;
    let first = env.first_run_with_job(30).await;
    env.job_writes(&first.name_any(), json!({"phase": "Running"}))
        .await;
    env.request_run("second").await;
    let replaced = eventually(30, "first run Cancelled", || async {
        let r = env.api::<SyncRun>().get(&first.name_any()).await.ok()?;
        (phase(&r) == Some(RunPhase::Cancelled)).then_some(r)
    })
    .await;
    assert!(
        replaced
            .status
            .unwrap()
            .message
            .unwrap()
            .contains("replaced")
    );
    let a = env
        .wait_app("second run active", |a| {
            a.status
                .as_ref()
                .and_then(|s| s.active_run.as_ref())
                .map(|r| &r.name)
                .is_some_and(|n| *n != first.name_any())
        })
        .await;
    assert_eq!(requested_echo(&a), Some("second"));
    assert_eq!(env.runs().await.len(), 2);
}
