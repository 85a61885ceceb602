//! SyncRun: creates the run's Job and ends the run when its Job ends without
//! the run having reported an outcome (OOMKilled, deadline, image errors, a pod
//! that never wrote). The Job writes Running, progress and the final phase.
pub mod job;

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use std::time::Duration;

use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::{Context, Error, ObjectEvent, Result, now_time};
use crate::api::{CatalogApp, Direction, IdentityDomain, Mode, RunPhase, SyncRun};

use crate::cluster::status;

/// Set by the controller on a run it cancels, with the reason.
pub const CANCEL_ANNOTATION: &str = "catalogsync.io/cancelled";

/// How a Job ended, as the Job controller reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobEnd {
    Complete,
    Failed { reason: String, message: String },
}

/// The end of a Job, from its `Complete`/`Failed` conditions. Pure.
pub fn job_end(job: &Job) -> Option<JobEnd> {
    let conds = job.status.as_ref()?.conditions.as_ref()?;
    let is = |t: &str| conds.iter().find(|c| c.type_ == t && c.status == "True");
    if let Some(c) = is("Failed") {
        return Some(JobEnd::Failed {
            reason: c.reason.clone().unwrap_or_else(|| "JobFailed".into()),
            message: c.message.clone().unwrap_or_default(),
        });
    }
    is("Complete").map(|_| JobEnd::Complete)
}

/// Writes a final phase (the fields the controller owns at the end of a run).
pub async fn finish(
    ctx: &Context,
    run: &SyncRun,
    phase: RunPhase,
    reason: &str,
    message: &str,
    job_name: Option<&str>,
) -> Result<()> {
    let ns = run
        .namespace()
        .ok_or_else(|| Error::NoNamespace(run.name_any()))?;
    let mut body = json!({
        "phase": phase,
        "completionTime": now_time(),
        "message": message,
        "conditions": [{
            "type": if phase == RunPhase::Cancelled { "Cancelled" } else { "Failed" },
            "status": "True",
            "reason": reason,
            "message": message,
            "lastTransitionTime": now_time(),
        }],
    });
    if let Some(j) = job_name {
        body["jobName"] = json!(j);
    }
    let api: Api<SyncRun> = Api::namespaced(ctx.client.clone(), &ns);
    status::apply(&api, &run.name_any(), status::CONTROLLER_MANAGER, body).await?;
    let ev = match phase {
        RunPhase::Cancelled => ObjectEvent::normal("RunCancelled", message),
        _ => ObjectEvent::warning("RunFailed", message),
    };
    ctx.publish(&run.object_ref(&()), &ev).await;
    Ok(())
}

/// The active applying run of the same app that `run` must wait for: one
/// created earlier (name breaks ties), so of two runs exactly one proceeds. Pure.
pub fn blocking_run<'a>(run: &SyncRun, all: &'a [SyncRun]) -> Option<&'a SyncRun> {
    let key = |r: &SyncRun| {
        (
            r.metadata.creation_timestamp.clone().map(|t| t.0),
            r.name_any(),
        )
    };
    all.iter().find(|other| {
        other.name_any() != run.name_any()
            && other.spec.app_ref.name == run.spec.app_ref.name
            && other.spec.mode == Mode::Apply
            && !is_finished(other)
            && key(other) < key(run)
    })
}

/// Records the Job's name and phase Pending — unless the Job already moved the
/// run on (a fast Job can write before we do): then only the Job's name, so a
/// late Pending never overwrites Running or an outcome.
async fn record_job(runs: &Api<SyncRun>, name: &str) -> Result<()> {
    let pending = json!({"phase": RunPhase::Pending, "jobName": name});
    match status::apply_unless_owned(runs, name, status::CONTROLLER_MANAGER, pending).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let job = json!({"jobName": name});
            status::apply(runs, name, status::CONTROLLER_MANAGER, job).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// True once the run's phase is final.
pub fn is_finished(run: &SyncRun) -> bool {
    run.status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(RunPhase::is_finished)
}

/// The reason a run may not start now (the app switched it off), if any.
fn switched_off(app: &CatalogApp, direction: Direction) -> Option<&'static str> {
    let prov = app.spec.provisioning.as_ref().is_some_and(|p| p.enabled);
    let sync = app.spec.synchronization.as_ref().is_some_and(|s| s.enabled);
    if app.spec.suspend {
        Some("cancelled: the app is suspended")
    } else if !prov {
        Some("cancelled: provisioning is disabled")
    } else if direction == Direction::Import && !sync {
        Some("cancelled: synchronization is disabled")
    } else {
        None
    }
}

/// Why a run ends before its Job exists.
struct Ending {
    phase: RunPhase,
    reason: &'static str,
    message: String,
}

impl Ending {
    fn failed(reason: &'static str, message: String) -> Self {
        Ending {
            phase: RunPhase::Failed,
            reason,
            message,
        }
    }
}

/// Reads the app, its domain and policy, and builds the run's Job — or says
/// why the run cannot have one.
async fn build_job(
    ctx: &Context,
    run: &SyncRun,
    ns: &str,
) -> Result<std::result::Result<Job, Ending>> {
    let app_name = &run.spec.app_ref.name;
    let Some(app) = Api::<CatalogApp>::namespaced(ctx.client.clone(), ns)
        .get_opt(app_name)
        .await?
    else {
        let msg = format!("CatalogApp {app_name:?} not found");
        return Ok(Err(Ending::failed("AppNotFound", msg)));
    };
    if let Some(why) = switched_off(&app, run.spec.direction) {
        return Ok(Err(Ending {
            phase: RunPhase::Cancelled,
            reason: "Cancelled",
            message: why.into(),
        }));
    }
    let domain_name = &app.spec.identity_domain_ref.name;
    let Some(domain) = Api::<IdentityDomain>::namespaced(ctx.client.clone(), ns)
        .get_opt(domain_name)
        .await?
    else {
        let msg = format!("IdentityDomain {domain_name:?} not found");
        return Ok(Err(Ending::failed("IdentityDomainNotFound", msg)));
    };
    let (policy_name, policy) = super::policy_of(ctx, &app, ns).await?;
    // Provisioning runs work without a policy (default timeout); imports need it.
    if run.spec.direction == Direction::Import && policy.is_none() {
        let msg = format!("SyncPolicy {:?} not found", policy_name.unwrap_or_default());
        return Ok(Err(Ending::failed("PolicyNotFound", msg)));
    }
    Ok(Ok(job::build(
        run,
        &app,
        &domain,
        policy.as_ref(),
        &ctx.config.job,
    )))
}

pub async fn reconcile(run: Arc<SyncRun>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile("SyncRun");
    let ns = run
        .namespace()
        .ok_or_else(|| Error::NoNamespace(run.name_any()))?;
    let name = run.name_any();
    let st = run.status.clone().unwrap_or_default();
    if st.phase.is_some_and(RunPhase::is_finished) || run.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let runs: Api<SyncRun> = Api::namespaced(ctx.client.clone(), &ns);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let job = jobs.get_opt(&name).await?;

    let Some(job) = job else {
        if st.job_name.is_some() {
            // Its Job was created and is gone: deleted by hand, or the run was
            // cancelled meanwhile. Re-read so a just-written outcome wins.
            let fresh = runs.get(&name).await?;
            if is_finished(&fresh) {
                return Ok(Action::await_change());
            }
            if let Some(why) = fresh.annotations().get(CANCEL_ANNOTATION) {
                finish(
                    &ctx,
                    &fresh,
                    RunPhase::Cancelled,
                    "Cancelled",
                    why,
                    Some(&name),
                )
                .await?;
                return Ok(Action::await_change());
            }
            finish(
                &ctx,
                &fresh,
                RunPhase::Failed,
                "JobDeleted",
                &format!("Job {name} was deleted before the run reported an outcome"),
                Some(&name),
            )
            .await?;
            return Ok(Action::await_change());
        }
        // One applying run per app at a time: a later one (e.g. created by hand)
        // waits rather than racing the other over the same accounts.
        if run.spec.mode == Mode::Apply {
            let all = runs.list(&ListParams::default()).await?.items;
            if let Some(other) = blocking_run(&run, &all) {
                let message = format!(
                    "waiting for run {} of the same app to finish",
                    other.name_any()
                );
                if st.message.as_deref() != Some(message.as_str()) {
                    status::apply(
                        &runs,
                        &name,
                        status::CONTROLLER_MANAGER,
                        json!({"phase": RunPhase::Pending, "message": message}),
                    )
                    .await?;
                }
                return Ok(Action::requeue(Duration::from_secs(10)));
            }
        }
        // Dereference, validate, build, apply.
        let job = match build_job(&ctx, &run, &ns).await? {
            Ok(job) => job,
            Err(end) => {
                finish(&ctx, &run, end.phase, end.reason, &end.message, None).await?;
                return Ok(Action::await_change());
            }
        };
        match jobs.create(&PostParams::default(), &job).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        record_job(&runs, &name).await?;
        ctx.publish(
            &run.object_ref(&()),
            &ObjectEvent::normal("JobCreated", format!("created Job {name}")),
        )
        .await;
        return Ok(Action::await_change());
    };

    if job::run_of(&job).as_deref() != Some(name.as_str())
        || job
            .owner_references()
            .iter()
            .all(|o| Some(&o.uid) != run.uid().as_ref())
    {
        finish(
            &ctx,
            &run,
            RunPhase::Failed,
            "JobConflict",
            &format!("a Job named {name} exists that does not belong to this run"),
            None,
        )
        .await?;
        return Ok(Action::await_change());
    }
    if st.job_name.is_none() {
        // Created before a restart, status not yet written: write it unless
        // the Job has moved the run on meanwhile.
        record_job(&runs, &name).await?;
    }
    let Some(end) = job_end(&job) else {
        return Ok(Action::await_change());
    };
    // The Job has ended; the run's own final write happens before its process
    // exits, so a fresh read tells whether it reported.
    let fresh = runs.get(&name).await?;
    if is_finished(&fresh) {
        return Ok(Action::await_change());
    }
    let (reason, message) = match end {
        JobEnd::Complete => (
            "NoOutcome".to_string(),
            format!("Job {name} completed but the run never reported an outcome"),
        ),
        JobEnd::Failed { reason, message } => {
            let msg = if message.is_empty() {
                format!("Job {name} failed: {reason}")
            } else {
                format!("Job {name} failed ({reason}): {message}")
            };
            (reason, msg)
        }
    };
    finish(
        &ctx,
        &fresh,
        RunPhase::Failed,
        &reason,
        &message,
        Some(&name),
    )
    .await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(conditions: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "j"},
            "status": {"conditions": conditions}
        }))
        .unwrap()
    }

    fn run(name: &str, created: &str, mode: &str, phase: Option<&str>) -> SyncRun {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
            "spec": {"appRef": {"name": "slack"}, "mode": mode},
            "status": phase.map(|p| json!({"phase": p}))
        }))
        .unwrap()
    }

    #[test]
    fn one_applying_run_per_app_at_a_time() {
        let a = run("a", "2026-01-01T00:00:00Z", "Apply", Some("Running"));
        let b = run("b", "2026-01-01T00:00:05Z", "Apply", None);
        let c = run("c", "2026-01-01T00:00:05Z", "Apply", None);
        let all = [a.clone(), b.clone(), c.clone()];
        assert!(blocking_run(&a, &all).is_none(), "the oldest proceeds");
        assert_eq!(blocking_run(&b, &all).unwrap().name_any(), "a");
        assert_eq!(blocking_run(&c, &all).unwrap().name_any(), "a");
        // Once a ends, b (same second, earlier name) goes first.
        let done = run("a", "2026-01-01T00:00:00Z", "Apply", Some("Succeeded"));
        let all = [done, b.clone(), c.clone()];
        assert!(blocking_run(&b, &all).is_none());
        assert_eq!(blocking_run(&c, &all).unwrap().name_any(), "b");
        // Plans never block.
        let plan = run("p", "2025-12-31T00:00:00Z", "Plan", None);
        assert!(blocking_run(&b, &[plan, b.clone()]).is_none());
    }

    #[test]
    fn job_end_from_conditions() {
        assert_eq!(job_end(&job(json!([]))), None);
        assert_eq!(
            job_end(&job(json!([{"type": "Complete", "status": "True"}]))),
            Some(JobEnd::Complete)
        );
        assert_eq!(
            job_end(&job(json!([
                {"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded"},
                {"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                 "message": "Job was active longer than specified deadline"}
            ]))),
            Some(JobEnd::Failed {
                reason: "DeadlineExceeded".into(),
                message: "Job was active longer than specified deadline".into()
            })
        );
        assert_eq!(
            job_end(&job(json!([{"type": "Failed", "status": "False"}]))),
            None
        );
    }
}
