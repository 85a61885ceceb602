//! The development Job runner against the real control plane: it runs Jobs as
//! local processes and writes their status as the Job controller would.

use std::path::PathBuf;
use std::time::Duration;

use catalogsync::dev::runner::{self, RunnerConfig};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use tokio::sync::watch;

use crate::controller::eventually;
use crate::harness::control_plane;

fn job(name: &str, script: &str, backoff: i32, deadline: Option<i64>) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"catalogsync.io/run": name}},
        "spec": {
            "backoffLimit": backoff,
            "activeDeadlineSeconds": deadline,
            "podFailurePolicy": {"rules": [
                {"action": "FailJob", "onExitCodes": {"containerName": "sync", "operator": "In", "values": [2, 3]}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
            ]},
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "sync", "image": "catalogsync",
                    "command": ["sh", "-c", script],
                    "env": [
                        {"name": "PLAIN", "value": "plain-value"},
                        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token", "optional": false}}},
                        {"name": "NO_PROXY", "valueFrom": {"configMapKeyRef": {"name": "proxy", "key": "no-proxy"}}},
                        {"name": "UNSET", "valueFrom": {"configMapKeyRef": {"name": "proxy", "key": "absent", "optional": true}}}
                    ]
                }]
            }}
        }
    }))
    .unwrap()
}

fn condition(job: &Job, type_: &str) -> Option<String> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| c.reason.clone().unwrap_or_default())
}

#[tokio::test]
async fn runs_jobs_as_processes_and_reports_like_the_job_controller() {
    let cp = control_plane().await;
    let ns = cp.new_namespace("devrunner").await;
    let client = cp.admin_client();
    cp.apply_yaml(
        &ns,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: creds}\nstringData: {token: s3cret}\n",
    )
    .await
    .unwrap();
    cp.apply_yaml(
        &ns,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: proxy}\ndata: {no-proxy: .corp}\n",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (stop, rx) = watch::channel(false);
    let runner = tokio::spawn(runner::run(
        client.clone(),
        RunnerConfig {
            binary: PathBuf::from(env!("CARGO_BIN_EXE_catalogsync")),
            kubeconfig: Some(cp.kubeconfig_path().to_path_buf()),
            namespace: Some(ns.clone()),
            grace: Duration::from_secs(5),
        },
        rx,
    ));
    let jobs: Api<Job> = Api::namespaced(client, &ns);
    let marker = dir.path().join("terminated");
    let cases = [
        // Env from values, Secrets and ConfigMaps (an optional missing key: unset), and
        // KUBECONFIG, reach the process.
        job(
            "ok",
            r#"test "$PLAIN" = plain-value && test "$TOKEN" = s3cret && test "$NO_PROXY" = .corp && test -z "${UNSET+set}" && test -f "$KUBECONFIG""#,
            2,
            None,
        ),
        job("limit", "exit 3", 2, None),
        job("flaky", "exit 1", 1, None),
        job("slow", "sleep 30", 2, Some(2)),
        job(
            "cancel",
            &format!(
                "trap 'echo TERM > {}; exit 143' TERM; sleep 30 & wait",
                marker.display()
            ),
            2,
            None,
        ),
    ];
    for j in &cases {
        jobs.create(&PostParams::default(), j)
            .await
            .expect("create job");
    }

    let ended = |name: &'static str, type_: &'static str| {
        let jobs = jobs.clone();
        move || {
            let jobs = jobs.clone();
            async move {
                let j = jobs.get(name).await.ok()?;
                condition(&j, type_).map(|reason| (j, reason))
            }
        }
    };
    let (ok, reason) = eventually(30, "ok Complete", ended("ok", "Complete")).await;
    let st = ok.status.unwrap();
    assert_eq!(reason, "CompletionsReached");
    assert_eq!(st.succeeded, Some(1));
    assert_eq!(
        st.active.unwrap_or(0),
        0,
        "zero is omitted by the API server"
    );
    assert!(st.start_time.is_some() && st.completion_time.is_some());

    let (limit, reason) = eventually(30, "limit Failed", ended("limit", "Failed")).await;
    assert_eq!(reason, "PodFailurePolicy");
    assert_eq!(limit.status.unwrap().failed, Some(1), "FailJob: no retry");

    let (flaky, reason) = eventually(30, "flaky Failed", ended("flaky", "Failed")).await;
    assert_eq!(reason, "BackoffLimitExceeded");
    assert_eq!(
        flaky.status.unwrap().failed,
        Some(2),
        "one retry, then the limit"
    );

    let (_, reason) = eventually(30, "slow Failed", ended("slow", "Failed")).await;
    assert_eq!(reason, "DeadlineExceeded");

    // Deleting a running Job sends SIGTERM to its process.
    eventually(30, "cancel started", || async {
        let j = jobs.get("cancel").await.ok()?;
        j.status?.start_time.map(|_| ())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    jobs.delete("cancel", &DeleteParams::background())
        .await
        .unwrap();
    eventually(15, "SIGTERM delivered", || async {
        std::fs::read_to_string(&marker)
            .ok()
            .filter(|s| s.contains("TERM"))
    })
    .await;

    let _ = stop.send(true);
    runner.await.unwrap().unwrap();
}
