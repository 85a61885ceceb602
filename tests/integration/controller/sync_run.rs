//! SyncRun: runs requested, scheduled (imports and provisioning) or made by hand, their
//! restricted Jobs, cancellation, failure, one run at a time, the Job's writes standing,
//! and a run executed for real through the dev job runner.

use std::time::Duration;

use catalogsync::api::{
    CatalogApp, Direction, IdentityDomain, RunPhase, SyncPolicy, SyncRun, Trigger,
};
use catalogsync::cluster::conditions::find;
use catalogsync::controller::sync_run::job::{APP_LABEL, JobConfig, RUN_LABEL};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

use super::{Env, JOB_IMAGE, RunningController, app_cond, eventually, phase, requested_echo, tf};

/// The phase of the app's `lastRun`.
fn last_run_phase(a: &CatalogApp) -> Option<RunPhase> {
    a.status.as_ref()?.last_run.as_ref()?.phase
}

/// Day one with synchronization on: a request (Both) creates the Provision run first; the
/// Import run only once that run has ended, and only then is the request echoed. A
/// controller restart in between still creates the Import. `requested-direction: Import`
/// creates an Import run only.
#[tokio::test]
async fn a_requested_run_provisions_before_it_imports() {
    let (env, ctl) = Env::with_controller("ctl-order").await;
    env.policy("").await;
    env.app(true).await;
    env.wait_ready().await;

    env.request("day-one", None).await;
    let provision = eventually(30, "the Provision run", || async {
        env.runs().await.into_iter().next()
    })
    .await;
    assert_eq!(provision.spec.direction, Direction::Provision);
    assert_eq!(provision.spec.trigger, Trigger::Requested);
    let a = env
        .wait_app("the pending Import shown", |a| {
            a.status
                .as_ref()
                .and_then(|s| s.requested_import_after.as_deref())
                == Some(provision.name_any().as_str())
        })
        .await;
    assert_eq!(requested_echo(&a), None, "not handled before the Import");
    assert_eq!(
        app_cond(&a, "Synchronizing").map(|c| c.0),
        Some("True".into())
    );
    env.job_writes(&provision.name_any(), json!({"phase": "Running"}))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.runs().await.len(), 1, "no Import while Provision runs");

    // A restart before the Provision run ends: the new controller continues the request.
    ctl.shutdown().await;
    let _ctl =
        RunningController::start(env.client.clone(), &env.ns, Duration::from_secs(300), None);
    env.job_writes(
        &provision.name_any(),
        json!({"phase": "Succeeded", "completionTime": "2026-01-01T10:00:00Z"}),
    )
    .await;
    let a = env
        .wait_app("request handled", |a| requested_echo(a) == Some("day-one"))
        .await;
    assert_eq!(a.status.as_ref().unwrap().requested_import_after, None);
    let runs = env.runs().await;
    assert_eq!(
        runs.len(),
        2,
        "{:?}",
        runs.iter().map(|r| r.name_any()).collect::<Vec<_>>()
    );
    let import = runs
        .iter()
        .find(|r| r.name_any() != provision.name_any())
        .unwrap();
    assert_eq!(import.spec.direction, Direction::Import);
    assert_eq!(import.spec.trigger, Trigger::Requested);
    assert!(
        import.metadata.creation_timestamp >= provision.metadata.creation_timestamp,
        "the Import run is created after the Provision run"
    );

    // One direction only.
    env.job_writes(
        &import.name_any(),
        json!({"phase": "Succeeded", "completionTime": "2026-01-01T10:00:00Z"}),
    )
    .await;
    env.request("import-only", Some("Import")).await;
    env.wait_app("import-only handled", |a| {
        requested_echo(a) == Some("import-only")
    })
    .await;
    let runs = env.runs().await;
    assert_eq!(runs.len(), 3);
    let new: Vec<&SyncRun> = runs
        .iter()
        .filter(|r| r.name_any() != provision.name_any() && r.name_any() != import.name_any())
        .collect();
    assert_eq!(new[0].spec.direction, Direction::Import);
}

#[tokio::test]
async fn requested_run_creates_exactly_one_run_and_a_restricted_job() {
    let (env, _ctl) = Env::with_controller("ctl-request").await;
    env.policy("timeout: 30m").await;
    env.app(true).await;
    env.wait_ready().await;

    env.request_run("1700000000").await;
    let a = env
        .wait_app("request echoed", |a| {
            requested_echo(a) == Some("1700000000")
        })
        .await;
    assert_eq!(
        app_cond(&a, "Synchronizing").map(|c| c.0),
        Some("True".into())
    );
    let run = eventually(30, "run Pending with jobName", || async {
        let runs = env.runs().await;
        assert!(
            runs.len() <= 1,
            "exactly one run: {:?}",
            runs.iter().map(|r| r.name_any()).collect::<Vec<_>>()
        );
        runs.into_iter().find(|r| {
            phase(r) == Some(RunPhase::Pending)
                && r.status
                    .as_ref()
                    .and_then(|s| s.job_name.as_ref())
                    .is_some()
        })
    })
    .await;
    assert_eq!(run.spec.trigger, Trigger::Requested);
    assert_eq!(run.spec.direction, Direction::Import);
    assert_eq!(
        run.labels().get(APP_LABEL).map(String::as_str),
        Some("slack")
    );
    assert!(!run.labels().contains_key("argocd.argoproj.io/instance"));
    assert!(run.annotations().is_empty());
    let owner = &run.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("CatalogApp", "slack")
    );

    // The Job: owned by the run, our labels only, restricted pod, secrets by reference.
    let job = env.api::<Job>().get(&run.name_any()).await.expect("job");
    let owner = &job.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("SyncRun", run.uid().unwrap().as_str(), Some(true))
    );
    assert_eq!(job.labels().get(RUN_LABEL), Some(&run.name_any()));
    assert!(!job.labels().contains_key("argocd.argoproj.io/instance"));
    // With it, the Job's own access: a Role and RoleBinding by name, owned by the run.
    let access = format!("catalogsync-run-{}", run.name_any());
    let role = env
        .api::<Role>()
        .get(&access)
        .await
        .expect("the run's Role");
    assert_eq!(role.owner_references()[0].uid, run.uid().unwrap());
    let rules = role.rules.unwrap();
    assert!(
        rules
            .iter()
            .all(|r| r.resource_names.as_ref().is_some_and(|n| n.len() == 1)),
        "{rules:?}"
    );
    let binding = env
        .api::<RoleBinding>()
        .get(&access)
        .await
        .expect("the run's RoleBinding");
    assert_eq!(binding.role_ref.name, access);
    assert_eq!(binding.owner_references()[0].uid, run.uid().unwrap());
    let spec = job.spec.unwrap();
    assert_eq!(spec.backoff_limit, Some(2));
    assert_eq!(
        spec.active_deadline_seconds,
        Some(1800 + 60),
        "timeout + margin"
    );
    assert!(spec.ttl_seconds_after_finished.is_some());
    assert!(spec.pod_failure_policy.is_some());
    let pod = spec.template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("catalogsync-sync-job")
    );
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some(JOB_IMAGE));
    let args = c.args.clone().unwrap();
    assert_eq!(
        args,
        ["sync", "--run", &format!("{}/{}", env.ns, run.name_any())]
    );
    let env_vars = c.env.clone().unwrap();
    let token = env_vars
        .iter()
        .find(|e| e.name == "CATALOGSYNC_APP_TOKEN")
        .unwrap();
    assert!(token.value.is_none());
    assert_eq!(
        token
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap()
            .name,
        "app-token"
    );

    // The API server's own Pod Security admission agrees the pod is restricted.
    let check_ns = env.cp.new_namespace("ctl-pss").await;
    env.cp
        .kubectl([
            "label",
            "ns",
            &check_ns,
            "pod-security.kubernetes.io/enforce=restricted",
        ])
        .await;
    let pod_obj = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "pss-check"},
        "spec": serde_json::to_value(&pod).unwrap(),
    });
    let created = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(env.client.clone(), &check_ns)
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &serde_json::from_value(pod_obj).unwrap(),
        )
        .await;
    assert!(
        created.is_ok(),
        "restricted namespace rejects the Job pod: {created:?}"
    );

    // Quiet afterwards: still exactly one run.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.runs().await.len(), 1);
}

#[tokio::test]
async fn scheduled_run_then_disabling_cancels_it_and_enabling_resumes() {
    let (env, _ctl) = Env::with_controller("ctl-sched").await;
    // Every 5 seconds (seconds field) so the test does not wait for a minute.
    env.policy("schedule: \"*/5 * * * * *\"").await;
    env.app(true).await;
    let run = eventually(60, "a scheduled run with its Job", || async {
        let r = env.runs().await.into_iter().next()?;
        (r.status.as_ref()?.job_name.is_some()).then_some(r)
    })
    .await;
    assert_eq!(run.spec.trigger, Trigger::Schedule);
    let a = env.get_app().await;
    assert!(a.status.as_ref().unwrap().next_sync_time.is_some());
    // Forbid: the active run blocks the following slots.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        env.runs().await.len(),
        1,
        "Forbid: no second run while one is active"
    );

    // The Job reports progress; the app mirrors it.
    env.job_writes(
        &run.name_any(),
        json!({"phase": "Running", "progress": {"processed": 42, "total": 100, "percent": 42}}),
    )
    .await;
    let a = env
        .wait_app("progress mirrored", |a| {
            a.status
                .as_ref()
                .and_then(|s| s.active_run.as_ref())
                .and_then(|r| r.progress.as_ref())
                .map(|p| p.percent)
                == Some(42)
        })
        .await;
    assert!(
        find(&a.status.unwrap().conditions, "Synchronizing")
            .unwrap()
            .message
            .contains("42%")
    );

    // Turning synchronization off cancels the run and deletes its Job.
    env.patch_app_spec(json!({"synchronization": {"enabled": false}}))
        .await;
    let cancelled = eventually(30, "run Cancelled", || async {
        let r = env.api::<SyncRun>().get(&run.name_any()).await.ok()?;
        (phase(&r) == Some(RunPhase::Cancelled)).then_some(r)
    })
    .await;
    assert!(
        cancelled
            .status
            .unwrap()
            .message
            .unwrap()
            .contains("disabled")
    );
    eventually(30, "Job deleted", || async {
        env.api::<Job>()
            .get_opt(&run.name_any())
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    // A late progress write of the dying Job cannot turn the cancellation into a failure.
    env.job_writes(&run.name_any(), json!({"phase": "Running"}))
        .await;
    let r = eventually(30, "run Cancelled again", || async {
        let r = env.api::<SyncRun>().get(&run.name_any()).await.ok()?;
        (phase(&r) == Some(RunPhase::Cancelled)).then_some(r)
    })
    .await;
    assert!(r.status.unwrap().message.unwrap().contains("disabled"));
    let a = env
        .wait_app("SynchronizationEnabled False Disabled", |a| {
            app_cond(a, "SynchronizationEnabled") == tf("False", "Disabled")
                && last_run_phase(a) == Some(RunPhase::Cancelled)
        })
        .await;
    assert_eq!(app_cond(&a, "Synchronizing").unwrap().0, "False");
    let events = env.event_reasons().await;
    assert!(events.contains("RunCancelled"), "{events}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(env.runs().await.len(), 1, "no scheduling while disabled");

    // On again: the schedule resumes.
    env.patch_app_spec(json!({"synchronization": {"enabled": true}}))
        .await;
    eventually(30, "a new scheduled run", || async {
        (env.runs().await.len() >= 2).then_some(())
    })
    .await;
}

/// A requested run whose Job exists (envtest runs no Job controller and no kubelet: no
/// pod, no event appear by themselves).
async fn run_with_its_job(env: &Env) -> (SyncRun, Job) {
    env.policy("").await;
    env.app(true).await;
    env.wait_ready().await;
    env.request_run("x").await;
    let run = env.first_run_with_job(30).await;
    let job = env.api::<Job>().get(&run.name_any()).await.unwrap();
    (run, job)
}

/// Waits (up to a minute after the Job was created) for the run to end Failed with `reason`.
async fn fails_within_a_minute(env: &Env, run: &SyncRun, job: &Job, reason: &str) -> String {
    let failed = eventually(70, "run Failed", || async {
        let r = env.api::<SyncRun>().get(&run.name_any()).await.ok()?;
        (phase(&r) == Some(RunPhase::Failed)).then_some(r)
    })
    .await;
    let status = failed.status.unwrap();
    let failed_condition = find(&status.conditions, "Failed").unwrap();
    assert_eq!(failed_condition.reason, reason);
    let created = job.metadata.creation_timestamp.as_ref().unwrap().0;
    let ended = status.completion_time.unwrap().0;
    let took = ended.duration_since(created).as_secs();
    assert!(
        (30..=60).contains(&took),
        "ended {took} s after the Job was created"
    );
    // The Job goes: its pod would only retry.
    eventually(30, "Job deleted", || async {
        let j = env.api::<Job>().get_opt(&run.name_any()).await.unwrap();
        j.is_none().then_some(())
    })
    .await;
    status.message.unwrap()
}

#[tokio::test]
async fn a_job_that_cannot_create_its_pod_fails_its_run_within_a_minute() {
    let (env, _ctl) = Env::with_controller("ctl-podcreate").await;
    let (run, job) = run_with_its_job(&env).await;
    // What the Job controller writes when the ServiceAccount is missing.
    let cause = format!(
        "Error creating: pods \"{}-\" is forbidden: error looking up service account \
         {}/catalogsync-sync-job: serviceaccount \"catalogsync-sync-job\" not found",
        job.name_any(),
        env.ns
    );
    let now = jiff::Timestamp::now().to_string();
    let event: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": format!("{}.failedcreate", job.name_any())},
        "involvedObject": {"apiVersion": "batch/v1", "kind": "Job", "namespace": env.ns,
                           "name": job.name_any(), "uid": job.uid()},
        "reason": "FailedCreate", "message": cause, "type": "Warning",
        "source": {"component": "job-controller"},
        "firstTimestamp": now, "lastTimestamp": now, "count": 3
    }))
    .unwrap();
    env.api::<CoreEvent>()
        .create(&PostParams::default(), &event)
        .await
        .expect("event");
    let message = fails_within_a_minute(&env, &run, &job, "PodCreateFailed").await;
    assert!(
        message.contains("serviceaccount \"catalogsync-sync-job\" not found"),
        "{message}"
    );
    env.wait_app("lastRun Failed", |a| {
        last_run_phase(a) == Some(RunPhase::Failed)
    })
    .await;
}

#[tokio::test]
async fn a_pod_that_cannot_pull_its_image_fails_its_run_within_a_minute() {
    let (env, _ctl) = Env::with_controller("ctl-imagepull").await;
    let (run, job) = run_with_its_job(&env).await;
    // The Job's pod, as the Job controller makes it, then as the kubelet reports it.
    let template = job.spec.clone().unwrap().template;
    let mut labels = template
        .metadata
        .clone()
        .unwrap_or_default()
        .labels
        .unwrap_or_default();
    labels.insert(
        "batch.kubernetes.io/controller-uid".into(),
        job.uid().unwrap(),
    );
    labels.insert("batch.kubernetes.io/job-name".into(), job.name_any());
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(format!("{}-abcde", job.name_any())),
            labels: Some(labels),
            ..Default::default()
        },
        spec: template.spec,
        ..Default::default()
    };
    let pods = env.api::<Pod>();
    let pod = pods
        .create(&PostParams::default(), &pod)
        .await
        .expect("pod");
    let container = pod.spec.as_ref().unwrap().containers[0].name.clone();
    let back_off = "Back-off pulling image \"registry.example/catalogsync:gone\"";
    pods.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(
            json!({"status": {"phase": "Pending", "containerStatuses": [{
            "name": container, "image": "registry.example/catalogsync:gone", "imageID": "",
            "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": back_off}}}]}}),
        ),
    )
    .await
    .expect("pod status");
    let message = fails_within_a_minute(&env, &run, &job, "ImagePullFailed").await;
    assert!(message.contains(back_off), "{message}");
}

#[tokio::test]
async fn job_failing_without_an_outcome_fails_the_run_with_the_jobs_reason() {
    let (env, _ctl) = Env::with_controller("ctl-jobfail").await;
    env.policy("").await;
    env.app(true).await;
    env.wait_ready().await;
    env.request_run("x").await;
    let run = env.first_run_with_job(30).await;
    env.job_writes(&run.name_any(), json!({"phase": "Running"}))
        .await;
    // The Job controller gives up (deadline); the pod never wrote an outcome.
    let t = "2026-01-01T00:00:00Z";
    env.api::<Job>()
        .patch_status(
            &run.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "startTime": t, "failed": 1,
                "conditions": [
                    {"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline", "lastTransitionTime": t},
                    {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline", "lastTransitionTime": t}
                ]}})),
        )
        .await
        .expect("job status");
    let failed = eventually(30, "run Failed", || async {
        let r = env.api::<SyncRun>().get(&run.name_any()).await.ok()?;
        (phase(&r) == Some(RunPhase::Failed)).then_some(r)
    })
    .await;
    let msg = failed.status.unwrap().message.unwrap();
    assert!(
        msg.contains("DeadlineExceeded") && msg.contains("deadline"),
        "{msg}"
    );
    let a = env
        .wait_app("lastRun Failed", |a| {
            last_run_phase(a) == Some(RunPhase::Failed)
        })
        .await;
    assert_eq!(app_cond(&a, "Synchronizing").unwrap().0, "False");
    let events = env.event_reasons().await;
    assert!(events.contains("RunFailed"), "{events}");
}

#[tokio::test]
async fn end_to_end_a_requested_run_executes_through_the_dev_job_runner() {
    let env = Env::new("ctl-e2e").await;
    // The same 20 people exist in the app and the identity domain: the import links them.
    env.scim.seed_users("app", "user", 20).await;
    env.scim.seed_users("iam", "user", 20).await;
    let _ctl =
        RunningController::start(env.client.clone(), &env.ns, Duration::from_secs(300), None);
    let (stop, runner) = env.start_runner();
    env.policy("").await;
    env.app(true).await;
    env.wait_ready().await;
    env.request_run("e2e").await;
    let a = env
        .wait_app("lastRun Succeeded", |a| {
            last_run_phase(a) == Some(RunPhase::Succeeded)
        })
        .await;
    let st = a.status.unwrap();
    let last = st.last_run.unwrap();
    let counts = last.counts.expect("counts mirrored");
    assert_eq!(counts.app_accounts, 20, "{counts:?}");
    assert_eq!(counts.linked + counts.already_linked, 20, "{counts:?}");
    assert!(last.start_time.is_some() && last.completion_time.is_some());
    assert!(st.active_run.is_none());
    assert_eq!(
        find(&st.conditions, "Synchronizing").unwrap().status,
        "False"
    );
    assert_eq!(
        find(&st.conditions, "LimitExceeded").unwrap().status,
        "False"
    );
    let job = env.api::<Job>().get(&last.name).await.unwrap();
    let complete = job.status.unwrap().conditions.unwrap();
    assert!(
        complete
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True")
    );
    let _ = stop.send(true);
    runner.await.unwrap().unwrap();
}

#[tokio::test]
async fn provisioning_runs_follow_the_provisioning_schedule() {
    let (env, _ctl) = Env::with_controller("ctl-provsched").await;
    env.app(false).await;
    env.patch_app_spec(json!({"provisioning": {"schedule": "*/5 * * * * *"}}))
        .await;
    let run = env.first_run_with_job(60).await;
    assert_eq!(run.spec.direction, Direction::Provision);
    assert_eq!(run.spec.trigger, Trigger::Schedule);
    assert!(run.name_any().starts_with("slack-p"), "{}", run.name_any());
    let job = env.api::<Job>().get(&run.name_any()).await.unwrap();
    assert_eq!(
        job.spec.unwrap().active_deadline_seconds,
        Some(3600 + 60),
        "no policy: the default timeout, and the margin"
    );
    env.job_writes(
        &run.name_any(),
        json!({"phase": "Succeeded", "completionTime": "2026-01-01T00:00:00Z",
               "counts": {"created": 3}}),
    )
    .await;
    let a = env
        .wait_app("lastProvisioningRun", |a| {
            a.status
                .as_ref()
                .and_then(|s| s.last_provisioning_run.as_ref())
                .and_then(|r| r.phase)
                == Some(RunPhase::Succeeded)
        })
        .await;
    let st = a.status.unwrap();
    assert!(st.next_provisioning_time.is_some());
    assert!(st.last_run.is_none(), "imports are reported apart");
    assert_eq!(st.last_provisioning_run.unwrap().counts.unwrap().created, 3);
}

#[tokio::test]
async fn hand_made_runs_wait_for_each_other() {
    let (env, _ctl) = Env::with_controller("ctl-manual").await;
    env.policy("").await;
    env.app(true).await;
    env.wait_ready().await;
    for name in ["manual-a", "manual-b"] {
        env.apply(&format!(
            "apiVersion: catalogsync.io/v1alpha1\nkind: SyncRun\nmetadata: {{name: {name}}}\nspec: {{appRef: {{name: slack}}}}\n"
        ))
        .await;
        tokio::time::sleep(Duration::from_millis(1100)).await; // distinct creation seconds
    }
    let has_job = |name: &'static str| {
        let jobs = env.api::<Job>();
        async move { jobs.get_opt(name).await.unwrap().is_some() }
    };
    eventually(30, "manual-a has its Job", || async {
        has_job("manual-a").await.then_some(())
    })
    .await;
    let b = eventually(30, "manual-b waits", || async {
        let r = env.api::<SyncRun>().get("manual-b").await.ok()?;
        r.status
            .as_ref()?
            .message
            .as_deref()?
            .contains("waiting for run manual-a")
            .then_some(r)
    })
    .await;
    assert_eq!(phase(&b), Some(RunPhase::Pending));
    assert!(
        !has_job("manual-b").await,
        "no second Job while the first runs"
    );
    env.wait_app("activeRun is the executing run", |a| {
        a.status
            .as_ref()
            .and_then(|s| s.active_run.as_ref())
            .map(|r| r.name.as_str())
            == Some("manual-a")
    })
    .await;

    env.job_writes(
        "manual-a",
        json!({"phase": "Succeeded", "completionTime": "2026-01-01T00:00:00Z"}),
    )
    .await;
    eventually(40, "manual-b gets its Job", || async {
        has_job("manual-b").await.then_some(())
    })
    .await;
    // The run's status names its Job in the write that follows the Job's creation.
    let st = eventually(10, "manual-b's status names its Job", || async {
        let st = env.api::<SyncRun>().get("manual-b").await.ok()?.status?;
        (st.job_name.as_deref() == Some("manual-b")).then_some(st)
    })
    .await;
    assert!(
        st.message.is_none(),
        "the waiting note is gone: {:?}",
        st.message
    );
}

#[tokio::test]
async fn a_late_pending_never_overwrites_what_the_job_wrote() {
    // The controller is down while a run's Job starts and reports (as after a crash
    // between creating the Job and recording it).
    let env = Env::new("ctl-late").await;
    env.policy("").await;
    env.app(true).await;
    env.apply("apiVersion: catalogsync.io/v1alpha1\nkind: SyncRun\nmetadata: {name: fast}\nspec: {appRef: {name: slack}}\n")
        .await;
    let run = env.api::<SyncRun>().get("fast").await.unwrap();
    let job = catalogsync::controller::sync_run::job::build(
        &run,
        &env.get_app().await,
        &env.api::<IdentityDomain>().get("corp").await.unwrap(),
        Some(&env.api::<SyncPolicy>().get("default").await.unwrap()),
        &JobConfig::new(JOB_IMAGE, "catalogsync-sync-job"),
    );
    env.api::<Job>()
        .create(&PostParams::default(), &job)
        .await
        .unwrap();
    env.job_writes(
        "fast",
        json!({"phase": "Running", "progress": {"processed": 5, "total": 10, "percent": 50}}),
    )
    .await;

    let _ctl =
        RunningController::start(env.client.clone(), &env.ns, Duration::from_secs(300), None);
    let r = eventually(30, "jobName recorded", || async {
        let r = env.api::<SyncRun>().get("fast").await.ok()?;
        r.status.as_ref()?.job_name.is_some().then_some(r)
    })
    .await;
    assert_eq!(phase(&r), Some(RunPhase::Running), "the Job's phase stands");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = env.api::<SyncRun>().get("fast").await.unwrap();
    assert_eq!(phase(&r), Some(RunPhase::Running));
    assert_eq!(r.status.unwrap().progress.unwrap().percent, 50);
}
