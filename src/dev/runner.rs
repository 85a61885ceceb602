//! DEVELOPMENT TOOLING, NOT FOR PRODUCTION: a stand-in for the kubelet and the
//! Job controller on a local control plane that has neither.
//!
//! `catalogsync dev-job-runner` watches the Jobs labelled `catalogsync.io/run`,
//! runs their container's command as a process on this machine (the image's
//! `catalogsync` is mapped to a local binary), with the container's
//! environment (Secret and ConfigMap references resolved through the API) plus `KUBECONFIG`
//! so the process talks to the same API server, and writes the Job's status as
//! the Job controller would: startTime, active, succeeded/failed, and the
//! Complete/Failed conditions with the reasons `PodFailurePolicy`,
//! `BackoffLimitExceeded` or `DeadlineExceeded`. Deleting a Job sends SIGTERM to
//! its process. There is no isolation whatsoever: the process runs as the user
//! who started the runner.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::{oneshot, watch};

use crate::controller::sync_run::job::RUN_LABEL;

/// Settings of the runner.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// The binary that stands for the image's `catalogsync` command.
    pub binary: PathBuf,
    /// Passed to the processes as `KUBECONFIG`.
    pub kubeconfig: Option<PathBuf>,
    /// Only Jobs of this namespace (all when unset).
    pub namespace: Option<String>,
    /// Grace period between SIGTERM and SIGKILL.
    pub grace: Duration,
}

/// How one attempt (one "pod") ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    Exited(i32),
    DeadlineExceeded,
    Deleted,
}

/// What the Job controller does after an attempt. Pure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    Complete,
    Retry,
    Fail {
        reason: &'static str,
        message: String,
    },
    Stop,
}

/// Applies the Job's podFailurePolicy and backoffLimit to an attempt's end. Pure.
pub fn next_step(job: &Job, attempt: Attempt, failed_so_far: i32) -> Next {
    let spec = job.spec.clone().unwrap_or_default();
    match attempt {
        Attempt::Deleted => Next::Stop,
        Attempt::DeadlineExceeded => Next::Fail {
            reason: "DeadlineExceeded",
            message: "Job was active longer than specified deadline".into(),
        },
        Attempt::Exited(0) => Next::Complete,
        Attempt::Exited(code) => {
            let rules = spec.pod_failure_policy.map(|p| p.rules).unwrap_or_default();
            for (i, rule) in rules.iter().enumerate() {
                let Some(on) = &rule.on_exit_codes else {
                    continue;
                };
                let listed = on.values.contains(&code);
                let matches = if on.operator == "In" { listed } else { !listed };
                if matches {
                    match rule.action.as_str() {
                        "FailJob" => {
                            return Next::Fail {
                                reason: "PodFailurePolicy",
                                message: format!(
                                    "Container {} for pod {} failed with exit code {code} matching FailJob rule at index {i}",
                                    on.container_name.as_deref().unwrap_or("sync"),
                                    job.name_any()
                                ),
                            };
                        }
                        "Ignore" => return Next::Retry,
                        _ => break,
                    }
                }
            }
            if failed_so_far + 1 > spec.backoff_limit.unwrap_or(6) {
                Next::Fail {
                    reason: "BackoffLimitExceeded",
                    message: "Job has reached the specified backoff limit".into(),
                }
            } else {
                Next::Retry
            }
        }
    }
}

type Running = Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>;

/// Watches Jobs and runs them until `shutdown` turns true.
pub async fn run(
    client: Client,
    config: RunnerConfig,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let api: Api<Job> = match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let running: Running = Arc::default();
    let mut events = watcher::watcher(api, watcher::Config::default().labels(RUN_LABEL)).boxed();
    tracing::warn!("dev-job-runner: development tooling; runs Jobs as local processes");
    loop {
        let event = tokio::select! {
            _ = crate::controller::stopped(&mut shutdown) => break,
            e = events.next() => e,
        };
        let Some(event) = event else { break };
        match event {
            Ok(Event::Apply(job) | Event::InitApply(job)) => {
                let uid = job.uid().unwrap_or_default();
                let finished = job.status.as_ref().is_some_and(|s| {
                    s.conditions.as_ref().is_some_and(|c| {
                        c.iter().any(|c| {
                            (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True"
                        })
                    })
                });
                if job.metadata.deletion_timestamp.is_some() {
                    // A running process is stopped; its task releases the Job once it
                    // ended. Nothing runs: the Job is released now.
                    if !stop(&running, &uid) {
                        tokio::spawn(release_foreground(client.clone(), job));
                    }
                    continue;
                }
                let started = job.status.as_ref().is_some_and(|s| s.start_time.is_some());
                let mut r = running.lock().unwrap_or_else(|e| e.into_inner());
                // A Job started by an earlier runner is left alone (its process is gone).
                if finished || started || r.contains_key(&uid) {
                    continue;
                }
                let (tx, rx) = oneshot::channel();
                r.insert(uid.clone(), tx);
                drop(r);
                let (client, config, running) = (client.clone(), config.clone(), running.clone());
                tokio::spawn(async move {
                    let name =
                        format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any());
                    if let Err(e) = execute(client.clone(), &config, job.clone(), rx).await {
                        tracing::warn!(job = %name, error = %e, "dev-job-runner: running the Job failed");
                    }
                    running
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&uid);
                    release_foreground(client, job).await;
                });
            }
            Ok(Event::Delete(job)) => {
                stop(&running, &job.uid().unwrap_or_default());
            }
            Ok(Event::Init | Event::InitDone) => {}
            Err(e) => {
                tracing::warn!(error = %e, "dev-job-runner: watch error");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    // Stop what still runs, as a node shutting down would.
    let senders: Vec<_> = running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain()
        .collect();
    for (_, tx) in senders {
        let _ = tx.send(());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// Stops the Job's process, if one runs; whether one did.
fn stop(running: &Running, uid: &str) -> bool {
    match running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(uid)
    {
        Some(tx) => {
            let _ = tx.send(());
            true
        }
        None => false,
    }
}

/// The garbage collector's part, which a control plane without a controller manager
/// lacks: a Job deleted in the foreground waits (`foregroundDeletion` finalizer) for its
/// pod; once its process is gone (it ended, or never ran here), the finalizer is dropped
/// and the Job goes. A Job not being deleted is left alone.
async fn release_foreground(client: Client, job: Job) {
    let api: Api<Job> = Api::namespaced(client, &job.namespace().unwrap_or_default());
    let Ok(Some(job)) = api.get_opt(&job.name_any()).await else {
        return;
    };
    let gc = "foregroundDeletion";
    if job.metadata.deletion_timestamp.is_none() || !job.finalizers().iter().any(|f| f == gc) {
        return;
    }
    let kept: Vec<&String> = job.finalizers().iter().filter(|f| *f != gc).collect();
    // Optimistic: a Job changed meanwhile is released on its next event.
    let patch = json!({"metadata": {"finalizers": kept,
                                    "resourceVersion": job.resource_version()}});
    if let Err(e) = api
        .patch(
            &job.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        tracing::warn!(job = %job.name_any(), error = %e, "dev-job-runner: releasing the deleted Job failed");
    }
}

async fn patch_status(api: &Api<Job>, name: &str, status: serde_json::Value) -> kube::Result<()> {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map(|_| ())
}

fn now() -> String {
    jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

/// Resolves the container's environment like the kubelet: values, and keys of Secrets
/// and ConfigMaps (`spec.job.env` may name ConfigMaps) read through the API.
async fn resolve_env(
    client: &Client,
    ns: &str,
    container: &Container,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for var in container.env.clone().unwrap_or_default() {
        let from = var.value_from.unwrap_or_default();
        let value = if let Some(v) = var.value {
            Some(v)
        } else if let Some(sel) = from.secret_key_ref {
            let secret = Api::<Secret>::namespaced(client.clone(), ns)
                .get_opt(&sel.name)
                .await?;
            let value = secret
                .and_then(|s| s.data)
                .and_then(|d| d.get(&sel.key).cloned())
                .map(|b| String::from_utf8_lossy(&b.0).into_owned());
            key_value(value, sel.optional, || {
                format!("Secret {ns}/{} has no key {}", sel.name, sel.key)
            })?
        } else if let Some(sel) = from.config_map_key_ref {
            let map = Api::<ConfigMap>::namespaced(client.clone(), ns)
                .get_opt(&sel.name)
                .await?;
            // Like the kubelet: `data` only, not `binaryData`.
            let value = map
                .and_then(|m| m.data)
                .and_then(|mut d| d.remove(&sel.key));
            key_value(value, sel.optional, || {
                format!("ConfigMap {ns}/{} has no key {}", sel.name, sel.key)
            })?
        } else {
            None
        };
        if let Some(v) = value {
            out.push((var.name, v));
        }
    }
    Ok(out)
}

/// A referenced key's value; a missing one leaves the variable out when the reference
/// is optional and stops the pod otherwise, as the kubelet does. Pure.
fn key_value(
    value: Option<String>,
    optional: Option<bool>,
    missing: impl FnOnce() -> String,
) -> anyhow::Result<Option<String>> {
    match value {
        Some(v) => Ok(Some(v)),
        None if optional == Some(true) => Ok(None),
        None => Err(anyhow::anyhow!(missing())),
    }
}

async fn execute(
    client: Client,
    config: &RunnerConfig,
    job: Job,
    mut deleted: oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let api: Api<Job> = Api::namespaced(client.clone(), &ns);
    let spec = job.spec.clone().unwrap_or_default();
    let (container, argv) = command_of(&job, config)?;
    let started = std::time::Instant::now();
    let deadline = spec
        .active_deadline_seconds
        .map(|s| Duration::from_secs(s.max(0) as u64));
    let status = json!({"startTime": now(), "active": 1, "ready": 0});
    patch_status(&api, &name, status).await?;

    let mut failed = 0;
    loop {
        let attempt = match resolve_env(&client, &ns, &container).await {
            Err(e) => {
                tracing::warn!(job = %name, error = %e, "dev-job-runner: environment");
                Attempt::Exited(1)
            }
            Ok(env) => {
                let remaining = deadline.map(|d| d.saturating_sub(started.elapsed()));
                run_attempt(config, &argv, env, remaining, &mut deleted).await?
            }
        };
        match next_step(&job, attempt, failed) {
            Next::Stop => return Ok(()),
            Next::Complete => return complete(&api, &name).await,
            Next::Retry => {
                if matches!(attempt, Attempt::Exited(c) if c != 0) {
                    failed += 1;
                }
                patch_status(&api, &name, json!({"failed": failed})).await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Next::Fail { reason, message } => {
                return fail(&api, &name, failed + 1, reason, &message).await;
            }
        }
    }
}

/// The Job's container and its command line, with the image's `catalogsync` replaced by
/// the binary standing for it.
fn command_of(job: &Job, config: &RunnerConfig) -> anyhow::Result<(Container, Vec<String>)> {
    let name = job.name_any();
    let container = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first().cloned())
        .ok_or_else(|| anyhow::anyhow!("Job {name} has no container"))?;
    let mut argv: Vec<String> = container.command.clone().unwrap_or_default();
    argv.extend(container.args.clone().unwrap_or_default());
    if argv.first().map(String::as_str) == Some("catalogsync") {
        argv[0] = config.binary.display().to_string();
    }
    anyhow::ensure!(!argv.is_empty(), "Job {name} has no command");
    Ok((container, argv))
}

/// One attempt of the pod: the process until it exits, the deadline passes or the Job
/// is deleted (then SIGTERM, and SIGKILL after the grace period, as the kubelet does).
async fn run_attempt(
    config: &RunnerConfig,
    argv: &[String],
    env: Vec<(String, String)>,
    remaining: Option<Duration>,
    deleted: &mut oneshot::Receiver<()>,
) -> anyhow::Result<Attempt> {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .envs(env)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(k) = &config.kubeconfig {
        cmd.env("KUBECONFIG", k);
    }
    let mut child = cmd.spawn()?;
    let timeout = async {
        match remaining {
            Some(r) => tokio::time::sleep(r).await,
            None => std::future::pending().await,
        }
    };
    Ok(tokio::select! {
        status = child.wait() => Attempt::Exited(exit_code(status?)),
        _ = timeout => {
            terminate(&mut child, config.grace).await;
            Attempt::DeadlineExceeded
        }
        _ = deleted => {
            terminate(&mut child, config.grace).await;
            Attempt::Deleted
        }
    })
}

/// The Job's status as the Job controller writes it on success.
async fn complete(api: &Api<Job>, name: &str) -> anyhow::Result<()> {
    let t = now();
    let done = "Reached expected number of succeeded pods";
    let status = json!({
        "active": 0, "ready": 0, "succeeded": 1, "completionTime": t,
        "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
             "message": done, "lastProbeTime": t, "lastTransitionTime": t},
            {"type": "Complete", "status": "True", "reason": "CompletionsReached",
             "message": done, "lastProbeTime": t, "lastTransitionTime": t},
        ]
    });
    patch_status(api, name, status).await.map_err(Into::into)
}

/// The Job's status as the Job controller writes it on failure.
async fn fail(
    api: &Api<Job>,
    name: &str,
    failed: i32,
    reason: &str,
    message: &str,
) -> anyhow::Result<()> {
    let t = now();
    let status = json!({
        "active": 0, "ready": 0, "failed": failed,
        "conditions": [
            {"type": "FailureTarget", "status": "True", "reason": reason,
             "message": message, "lastProbeTime": t, "lastTransitionTime": t},
            {"type": "Failed", "status": "True", "reason": reason,
             "message": message, "lastProbeTime": t, "lastTransitionTime": t},
        ]
    });
    patch_status(api, name, status).await.map_err(Into::into)
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    // Killed by a signal: the shell convention 128 + signal, as a container reports it.
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(9))
}

/// SIGTERM, then SIGKILL after the grace period — as the kubelet stops a pod.
async fn terminate(child: &mut tokio::process::Child, grace: Duration) {
    if let Some(pid) = child.id() {
        // SAFETY: a plain kill(2) on our own child, which is not reaped yet.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(backoff: i32) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "r1"},
            "spec": {
                "backoffLimit": backoff,
                "podFailurePolicy": {"rules": [
                    {"action": "FailJob", "onExitCodes": {"containerName": "sync", "operator": "In", "values": [2, 3]}},
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
                ]},
                "template": {"spec": {"containers": [{"name": "sync"}]}}
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_missing_key_is_left_out_only_when_optional() {
        let missing = || "ConfigMap ns/proxy has no key k".to_string();
        assert_eq!(
            key_value(Some("v".into()), None, missing).unwrap(),
            Some("v".into())
        );
        assert_eq!(key_value(None, Some(true), missing).unwrap(), None);
        for optional in [None, Some(false)] {
            let err = key_value(None, optional, missing).unwrap_err();
            assert!(err.to_string().contains("no key k"), "{err}");
        }
    }

    #[test]
    fn exit_codes_follow_the_pod_failure_policy_and_backoff() {
        let j = job(2);
        assert_eq!(next_step(&j, Attempt::Exited(0), 0), Next::Complete);
        assert!(matches!(
            next_step(&j, Attempt::Exited(3), 0),
            Next::Fail {
                reason: "PodFailurePolicy",
                ..
            }
        ));
        assert_eq!(next_step(&j, Attempt::Exited(1), 0), Next::Retry);
        assert_eq!(next_step(&j, Attempt::Exited(1), 1), Next::Retry);
        assert!(matches!(
            next_step(&j, Attempt::Exited(1), 2),
            Next::Fail {
                reason: "BackoffLimitExceeded",
                ..
            }
        ));
        assert!(matches!(
            next_step(&j, Attempt::DeadlineExceeded, 0),
            Next::Fail {
                reason: "DeadlineExceeded",
                ..
            }
        ));
        assert_eq!(next_step(&j, Attempt::Deleted, 0), Next::Stop);
    }
}
