//! Argo CD health: the scripts of `deploy/argocd/resource_customizations/` run by
//! `hack/argocd-health.py` on Lua 5.1 in Argo CD's sandbox, against their own
//! `health_test.yaml` (as Argo CD's test does), and against objects the real controller
//! and engine wrote. `CATALOGSYNC_ARGOCD_TESTDATA=1` writes those objects, scrubbed of
//! what changes from run to run, into each kind's `testdata/`, which the
//! `health_test.yaml` files check.

use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::controller::{Env, RunningController, eventually};
use crate::harness::{control_plane, repo_path};
use crate::scim_server::python;

const SCRIPTS: &str = "deploy/argocd/resource_customizations/catalogsync.io";
const KINDS: [&str; 4] = ["IdentityDomain", "CatalogApp", "SyncPolicy", "SyncRun"];

/// Argo CD's health of `obj` by its kind's health.lua: (status, message).
async fn health(obj: &Value) -> (String, String) {
    let kind = obj["kind"].as_str().expect("kind");
    let mut child = tokio::process::Command::new(python())
        .arg(repo_path("hack/argocd-health.py"))
        .arg("eval")
        .arg(repo_path(SCRIPTS).join(kind).join("health.lua"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hack/argocd-health.py");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(obj.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "health.lua of {kind} failed: {stderr}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON from argocd-health.py");
    (
        v["status"].as_str().unwrap().into(),
        v["message"].as_str().unwrap().into(),
    )
}

#[test]
fn health_scripts_pass_their_health_tests() {
    for kind in KINDS {
        let tests = repo_path(SCRIPTS).join(kind).join("health_test.yaml");
        let text = std::fs::read_to_string(&tests).expect("each kind has a health_test.yaml");
        let cases: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert!(
            cases["tests"].as_array().unwrap().len() >= 3,
            "{kind}: cases"
        );
    }
    let out = std::process::Command::new(python())
        .arg(repo_path("hack/argocd-health.py"))
        .arg("test")
        .arg(repo_path(SCRIPTS))
        .output()
        .expect("run hack/argocd-health.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

#[tokio::test]
async fn argocd_cm_snippet_is_generated_and_patches_a_real_configmap() {
    let check = tokio::process::Command::new("bash")
        .arg(repo_path("hack/argocd-cm.sh"))
        .arg("--check")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{stderr}");

    // The documented command, on a ConfigMap the real apiserver validates.
    let cp = control_plane().await;
    let ns = cp.new_namespace("argocd-cm").await;
    let create = cp
        .kubectl(["-n", &ns, "create", "configmap", "argocd-cm"])
        .await;
    assert!(create.status.success(), "{create:?}");
    let snippet = repo_path("deploy/argocd/argocd-cm.yaml");
    let snippet = snippet.to_str().unwrap();
    let patch = cp
        .kubectl([
            "-n",
            &ns,
            "patch",
            "configmap",
            "argocd-cm",
            "--patch-file",
            snippet,
        ])
        .await;
    assert!(patch.status.success(), "{patch:?}");
    let out = cp
        .kubectl(["-n", &ns, "get", "configmap", "argocd-cm", "-o", "json"])
        .await;
    let cm: Value = serde_json::from_slice(&out.stdout).unwrap();
    let data = cm["data"].as_object().expect("data");
    assert_eq!(data.len(), KINDS.len(), "{:?}", data.keys());
    for kind in KINDS {
        let key = format!("resource.customizations.health.catalogsync.io_{kind}");
        let script = std::fs::read_to_string(repo_path(SCRIPTS).join(kind).join("health.lua"));
        assert_eq!(data[&key].as_str(), Some(script.unwrap().as_str()), "{key}");
    }
}

/// The controller tests' [`Env`] (a namespace, SCIM servers, the objects' helpers) with
/// the controller and, optionally, the dev job runner (each Job a real `catalogsync sync`
/// process).
struct World {
    env: Env,
    _controller: RunningController,
    runner_stop: Option<watch::Sender<bool>>,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(stop) = &self.runner_stop {
            let _ = stop.send(true);
        }
    }
}

impl std::ops::Deref for World {
    type Target = Env;
    fn deref(&self) -> &Env {
        &self.env
    }
}

impl World {
    async fn start(prefix: &str, with_runner: bool) -> World {
        let (env, controller) = Env::with_controller(prefix).await;
        let runner_stop = with_runner.then(|| env.start_runner().0);
        World {
            env,
            _controller: controller,
            runner_stop,
        }
    }

    /// The Secrets, the IdentityDomain `corp`, the policy and the app `slack`.
    async fn objects(&self, policy: &str) {
        self.policy(policy).await;
        self.app(true).await;
    }

    /// The object as the API serves it to Argo CD.
    async fn get(&self, resource: &str, name: &str) -> Option<Value> {
        let out = self
            .cp
            .kubectl(["-n", &self.ns, "get", resource, name, "-o", "json"]);
        let out = out.await;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// Waits until the object's Argo CD health is `status` with a message containing
    /// `words`; returns the object. On timeout, says what the health was instead.
    async fn wait_health(&self, resource: &str, name: &str, status: &str, words: &str) -> Value {
        let mut last = None;
        let what = format!("{resource}/{name} {status} ({words:?})");
        let found = tokio::time::timeout(Duration::from_secs(90), async {
            loop {
                if let Some(obj) = self.get(resource, name).await {
                    let h = health(&obj).await;
                    if h.0 == status && h.1.contains(words) {
                        return obj;
                    }
                    last = Some((h, obj));
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("timed out waiting for {what}; last: {last:#?}"))
    }

    /// The app's last run, once `lastRun.phase` is `phase`.
    async fn last_run(&self, phase: &str) -> String {
        let app = eventually(120, &format!("lastRun {phase}"), || async {
            let app = self.get("catalogapp", "slack").await?;
            (app["status"]["lastRun"]["phase"] == phase).then_some(app)
        })
        .await;
        app["status"]["lastRun"]["name"].as_str().unwrap().into()
    }

    /// With CATALOGSYNC_ARGOCD_TESTDATA set, keeps `obj` as testdata/`case`.yaml of its kind.
    fn dump(&self, obj: &Value, case: &str) {
        if std::env::var_os("CATALOGSYNC_ARGOCD_TESTDATA").is_none() {
            return;
        }
        let kind = obj["kind"].as_str().unwrap();
        let path = repo_path(SCRIPTS)
            .join(kind)
            .join("testdata")
            .join(format!("{case}.yaml"));
        let text = serde_yaml_ng::to_string(&scrub(obj, &self.ns, &self.scim.root())).unwrap();
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

/// `obj` without what differs between runs: server-set metadata, the test's namespace
/// and SCIM address, timestamps.
fn scrub(obj: &Value, ns: &str, scim_root: &str) -> Value {
    let text = obj
        .to_string()
        .replace(scim_root, "https://scim.example.com");
    let mut v: Value = serde_json::from_str(&text.replace(ns, "identity")).unwrap();
    let meta = v["metadata"].as_object_mut().unwrap();
    for volatile in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
    ] {
        meta.remove(volatile);
    }
    for owner in meta
        .get_mut("ownerReferences")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        owner["uid"] = json!("00000000-0000-0000-0000-000000000000");
    }
    fix_times(&mut v);
    v
}

/// Every `…Time` and `…Timestamp` field set to one instant.
fn fix_times(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, field) in map.iter_mut() {
                if (k.ends_with("Time") || k.ends_with("Timestamp")) && field.is_string() {
                    *field = json!("2026-01-01T00:00:00Z");
                }
                fix_times(field);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(fix_times),
        _ => {}
    }
}

#[tokio::test]
async fn argocd_health_of_what_the_controller_and_engine_write() {
    let w = World::start("argocd-engine", true).await;
    // The same 5 people in the app and the domain, and 3 accounts nobody matches.
    w.scim.seed_users("app", "user", 5).await;
    w.scim.seed_users("iam", "user", 5).await;
    w.objects("").await;
    for (resource, name) in [
        ("identitydomain", "corp"),
        ("syncpolicy", "default"),
        ("catalogapp", "slack"),
    ] {
        let obj = w.wait_health(resource, name, "Healthy", "").await;
        w.dump(&obj, "healthy");
    }

    w.request_run("one").await;
    let run = w.last_run("Succeeded").await;
    w.dump(
        &w.wait_health("syncrun", &run, "Healthy", "").await,
        "succeeded",
    );

    // Creating users for unmatched accounts, at most one: 3 planned, nothing applied.
    w.scim.seed_users("app", "guest", 3).await;
    w.policy("onNoMatch: CreateUser, limits: {maxCreates: 1}")
        .await;
    w.request_run("two").await;
    let run = w.last_run("LimitExceeded").await;
    let obj = w
        .wait_health("syncrun", &run, "Degraded", "LimitExceeded: ")
        .await;
    w.dump(&obj, "limit-exceeded");
    let obj = w
        .wait_health(
            "catalogapp",
            "slack",
            "Degraded",
            "raise maxCreates to at least 3",
        )
        .await;
    w.dump(&obj, "limit-exceeded");

    let suspend = json!({"spec": {"suspend": true}});
    let apps = w.api::<catalogsync::api::CatalogApp>();
    apps.patch("slack", &PatchParams::default(), &Patch::Merge(suspend))
        .await
        .unwrap();
    w.dump(
        &w.wait_health("catalogapp", "slack", "Suspended", "").await,
        "suspended",
    );

    w.secret("iam-token", "wrong").await;
    let obj = w
        .wait_health("identitydomain", "corp", "Degraded", "")
        .await;
    w.dump(&obj, "unauthorized");
}

#[tokio::test]
async fn argocd_health_of_cancelled_failed_and_stalled() {
    // No job runner: the runs wait until the test plays the Job's part.
    let w = World::start("argocd-runs", false).await;
    w.objects("concurrencyPolicy: Replace").await;
    w.wait_health("catalogapp", "slack", "Healthy", "").await;
    w.request_run("first").await;
    let first = w.wait_run_with_job(None).await;
    w.dump(
        &w.wait_health("syncrun", &first, "Progressing", "Pending")
            .await,
        "pending",
    );
    w.job_writes(
        &first,
        json!({"phase": "Running", "message": "listing accounts"}),
    )
    .await;
    w.dump(
        &w.wait_health("syncrun", &first, "Progressing", "Running")
            .await,
        "running",
    );

    // A newer request replaces it: it ends without doing what it was for.
    w.request_run("second").await;
    let obj = w
        .wait_health("syncrun", &first, "Degraded", "cancelled")
        .await;
    w.dump(&obj, "cancelled");
    // The new run waits for the replaced run's Job, deleted in the foreground, to be gone:
    // envtest has no garbage collector, so the test drops its finalizer, as the GC would
    // once the pod is gone.
    let jobs = w.api::<Job>();
    eventually(30, "the replaced run's Job being deleted", || async {
        let job = jobs.get_opt(&first).await.ok()??;
        job.metadata.deletion_timestamp.map(|_| ())
    })
    .await;
    let unfinalize = json!({"metadata": {"finalizers": null}});
    jobs.patch(&first, &PatchParams::default(), &Patch::Merge(&unfinalize))
        .await
        .expect("drop the finalizer");

    let second = w.wait_run_with_job(Some(&first)).await;
    fail_job(&w, &second).await;
    let obj = w
        .wait_health("syncrun", &second, "Degraded", "Failed: ")
        .await;
    w.dump(&obj, "failed");
    let message = format!("The last run {second} failed");
    w.dump(
        &w.wait_health("catalogapp", "slack", "Degraded", &message)
            .await,
        "last-run-failed",
    );

    w.policy("schedule: \"every tuesday\"").await;
    let obj = w
        .wait_health("syncpolicy", "default", "Degraded", "InvalidSchedule")
        .await;
    w.dump(&obj, "invalid-schedule");
    let obj = w
        .wait_health("catalogapp", "slack", "Degraded", "InvalidSchedule")
        .await;
    w.dump(&obj, "stalled");
}

impl World {
    /// The run other than `other` once the controller has created its Job.
    async fn wait_run_with_job(&self, other: Option<&str>) -> String {
        eventually(30, "a run with its Job", || async {
            let list = self.runs().await;
            let run = list
                .into_iter()
                .find(|r| Some(r.name_any().as_str()) != other)?;
            run.status.as_ref()?.job_name.as_ref()?;
            Some(run.name_any())
        })
        .await
    }
}

/// The Job controller gives up on the run's Job (deadline) before the pod wrote an outcome.
async fn fail_job(w: &World, run: &str) {
    let t = "2026-01-01T00:00:00Z";
    let reason = "DeadlineExceeded";
    let message = "Job was active longer than specified deadline";
    let status = json!({"status": {"startTime": t, "failed": 1, "conditions": [
        {"type": "FailureTarget", "status": "True", "reason": reason, "message": message, "lastTransitionTime": t},
        {"type": "Failed", "status": "True", "reason": reason, "message": message, "lastTransitionTime": t}
    ]}});
    let jobs = w.api::<Job>();
    jobs.patch_status(run, &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("job status");
}
