//! SyncRun: creates the run's Job and ends the run when its Job ends without
//! the run having reported an outcome (OOMKilled, deadline, image errors, a pod
//! that never wrote). The Job writes Running, progress and the final phase.
//!
//! - `decide`: pure — the Job's state, which applying run goes first, and the
//!   [`Step`] for a run;
//! - `job`: the Job builder, pure;
//! - `start`: pure — whether a Job that has not started its pod ever will (its pods'
//!   image and container errors, its `FailedCreate` events);
//! - here: `reconcile` (observe → decide → apply) and the status writes the
//!   controller owns (`finish`, the Job's name).

mod decide;
pub mod job;
pub mod start;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::{Context, Error, ObjectEvent, Result, now_time};
use crate::api::{CatalogApp, Direction, IdentityDomain, Mode, RunPhase, SyncRun};
use crate::cluster::conditions::{self, DesiredCondition};
use crate::cluster::credentials::{self, CredentialsError};
use crate::cluster::status;
use crate::controller::connectivity::SECRET_NOT_ALLOWED;

pub use decide::{JobEnd, JobState, Step, blocking_run, decide, job_end};

pub use crate::api::CANCEL_ANNOTATION;

/// True once the run's phase is final.
pub fn is_finished(run: &SyncRun) -> bool {
    run.status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(RunPhase::is_finished)
}

pub async fn reconcile(run: Arc<SyncRun>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile("SyncRun");
    let ns = run
        .namespace()
        .ok_or_else(|| Error::NoNamespace(run.name_any()))?;
    // Settled: nothing to read.
    if is_finished(&run) || run.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let runs: Api<SyncRun> = Api::namespaced(ctx.client.clone(), &ns);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let name = run.name_any();

    // Observe: the Job, a fresh run where it may have reported, the run to wait for.
    let found = jobs.get_opt(&name).await?;
    let job = JobState::of(found.as_ref(), &run);
    let run = if job.calls_for_fresh_run(&run) {
        runs.get(&name).await?
    } else {
        (*run).clone()
    };
    let waits_for = if job.awaits_creation(&run) {
        blocking(&runs, &run).await?
    } else {
        None
    };

    match decide(&run, &job, waits_for.as_deref()) {
        Step::Wait => {
            if let Some(found) = found.as_ref().filter(|_| awaits_pod(&run, &job)) {
                return watch_start(&ctx, &run, found, &ns).await;
            }
        }
        Step::Queue { message } => {
            if let Some(message) = message {
                let pending = json!({
                    "phase": RunPhase::Pending,
                    "message": message,
                    "conditions": run_conditions(&run, RunPhase::Pending, "Pending", &message, &[]),
                });
                status::apply(&runs, &name, status::CONTROLLER_MANAGER, pending).await?;
            }
            return Ok(Action::requeue(Duration::from_secs(10)));
        }
        // Looked at again once the Job is old enough for its pod to have started.
        Step::CreateJob => {
            create_job(&ctx, &run, &ns).await?;
            return Ok(Action::requeue(start::START_GRACE));
        }
        Step::RecordJob => {
            record_job(&runs, &run).await?;
            return Ok(Action::requeue(start::START_GRACE));
        }
        Step::Finish {
            phase,
            reason,
            message,
            job_name,
        } => finish(&ctx, &run, phase, &reason, &message, job_name.as_deref()).await?,
    }
    Ok(Action::await_change())
}

/// Whether the run waits for its Job's pod: the Job is ours, active and recorded, and the
/// engine has not written Running yet.
fn awaits_pod(run: &SyncRun, job: &JobState) -> bool {
    let status = run.status.as_ref();
    *job == JobState::Active
        && status.is_some_and(|s| s.job_name.is_some())
        && status
            .and_then(|s| s.phase)
            .is_none_or(|p| p == RunPhase::Pending)
}

/// A Job that has not started its pod after [`start::START_GRACE`]: its pods and events
/// tell whether it ever will. If not, the run ends Failed with the cause and the Job goes
/// (the pod would only retry); else the Job is looked at again soon.
async fn watch_start(ctx: &Context, run: &SyncRun, job: &Job, ns: &str) -> Result<Action> {
    let created = job.metadata.creation_timestamp.as_ref().map(|t| t.0);
    if let start::StartCheck::After(wait) = start::start_check(created, Timestamp::now()) {
        return Ok(Action::requeue(wait));
    }
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default().labels(&format!("{}={uid}", start::CONTROLLER_UID_LABEL)))
        .await?
        .items;
    let events = Api::<CoreEvent>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default().fields(&format!("involvedObject.uid={uid}")))
        .await?
        .items;
    let Some(failure) = start::start_failure(job, &pods, &events) else {
        return Ok(Action::requeue(start::START_RECHECK));
    };
    let name = run.name_any();
    let phase = RunPhase::Failed;
    finish(
        ctx,
        run,
        phase,
        failure.reason,
        &failure.message,
        Some(&name),
    )
    .await?;
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    match jobs.delete(&name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

/// The name of the active applying run `run` must wait for, if it applies.
async fn blocking(runs: &Api<SyncRun>, run: &SyncRun) -> Result<Option<String>> {
    if run.spec.mode != Mode::Apply {
        return Ok(None);
    }
    let all = runs.list(&ListParams::default()).await?.items;
    Ok(blocking_run(run, &all).map(|r| r.name_any()))
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
    let ended = if phase == RunPhase::Cancelled {
        "Cancelled"
    } else {
        "Failed"
    };
    let ended = DesiredCondition::truthy(ended, reason, message);
    let mut body = json!({
        "phase": phase,
        "completionTime": now_time(),
        "message": message,
        "conditions": run_conditions(run, phase, reason, message, &[ended]),
    });
    if let Some(j) = job_name {
        body["jobName"] = json!(j);
    }
    let api: Api<SyncRun> = Api::namespaced(ctx.client.clone(), &ns);
    status::apply(&api, &run.name_any(), status::CONTROLLER_MANAGER, body).await?;
    let event = match phase {
        RunPhase::Cancelled => ObjectEvent::normal("RunCancelled", message),
        _ => ObjectEvent::warning("RunFailed", message),
    };
    ctx.publish(&run.object_ref(&()), &event).await;
    Ok(())
}

/// The run's conditions as the controller writes them: `extra`, then kstatus's for
/// `phase` (see [`conditions::run_conditions`]), merged into the run's current ones.
fn run_conditions(
    run: &SyncRun,
    phase: RunPhase,
    reason: &str,
    message: &str,
    extra: &[DesiredCondition],
) -> serde_json::Value {
    let mut desired = extra.to_vec();
    desired.extend(conditions::run_conditions(phase, reason, message));
    let previous = run.status.as_ref().map(|s| s.conditions.as_slice());
    let merged = conditions::merge_explicit(
        previous.unwrap_or_default(),
        &desired,
        run.metadata.generation,
        &now_time(),
    );
    json!(merged)
}

/// Records the Job's name and phase Pending (and `Reconciling`, so kstatus waits) —
/// unless the Job already moved the run on (a fast Job can write before we do): then
/// only the Job's name, so a late Pending never overwrites Running or an outcome.
async fn record_job(runs: &Api<SyncRun>, run: &SyncRun) -> Result<()> {
    let name = &run.name_any();
    let waiting = format!("waiting for Job {name} to start");
    let pending = json!({
        "phase": RunPhase::Pending,
        "jobName": name,
        "conditions": run_conditions(run, RunPhase::Pending, "Pending", &waiting, &[]),
    });
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

/// Creates the run's Job (one created before counts) and records it; or ends
/// the run when it cannot have one.
async fn create_job(ctx: &Context, run: &SyncRun, ns: &str) -> Result<()> {
    let Children {
        job,
        service_account,
        role,
        binding,
    } = match build_job(ctx, run, ns).await? {
        Ok(children) => children,
        Err(end) => return finish(ctx, run, end.phase, end.reason, &end.message, None).await,
    };
    // The Job's identity and access first, so that its pod starts with them.
    create_once(
        &Api::<ServiceAccount>::namespaced(ctx.client.clone(), ns),
        &service_account,
    )
    .await?;
    create_once(&Api::<Role>::namespaced(ctx.client.clone(), ns), &role).await?;
    create_once(
        &Api::<RoleBinding>::namespaced(ctx.client.clone(), ns),
        &binding,
    )
    .await?;
    create_once(&Api::<Job>::namespaced(ctx.client.clone(), ns), &job).await?;
    let name = run.name_any();
    record_job(&Api::namespaced(ctx.client.clone(), ns), run).await?;
    let created = ObjectEvent::normal("JobCreated", format!("created Job {name}"));
    ctx.publish(&run.object_ref(&()), &created).await;
    Ok(())
}
/// Creates `object`; one created before counts.
async fn create_once<K>(api: &Api<K>, object: &K) -> Result<()>
where
    K: Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// What the controller creates for a run: its Job, the Jobs' ServiceAccount of the
/// namespace (once) and the Job's own API access.
struct Children {
    job: Job,
    service_account: ServiceAccount,
    role: Role,
    binding: RoleBinding,
}

/// The reason a run may not start now (the app switched it off), if any.
fn switched_off(app: &CatalogApp, direction: Direction) -> Option<&'static str> {
    let provisioning = app.spec.provisioning.as_ref().is_some_and(|p| p.enabled);
    let synchronization = app.spec.synchronization.as_ref().is_some_and(|s| s.enabled);
    if app.spec.suspend {
        Some("cancelled: the app is suspended")
    } else if !provisioning {
        Some("cancelled: provisioning is disabled")
    } else if direction == Direction::Import && !synchronization {
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
) -> Result<std::result::Result<Children, Ending>> {
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
    // Admission refuses these; a policy stored before the rule existed still must not pass.
    let settings = policy.as_ref().and_then(|p| p.spec.job.as_ref());
    if let Some(why) = settings.and_then(|s| s.refusal()) {
        let msg = format!("SyncPolicy spec.job: {why}");
        return Ok(Err(Ending::failed("InvalidJobSettings", msg)));
    }
    let job = job::build(run, &app, &domain, policy.as_ref(), &ctx.config.job);
    let children = Children {
        service_account: job::service_account(run, &ctx.config.job),
        role: job::access_role(run, &app, policy_name.as_deref()),
        binding: job::access_binding(run, &ctx.config.job),
        job,
    };
    // The Job would carry these Secrets' values: only those their owners allowed.
    let secrets = job::secret_names(&children.job);
    match credentials::check_allowed(&ctx.client, ns, &secrets).await {
        Ok(()) | Err(CredentialsError::SecretNotFound(_) | CredentialsError::KeyMissing { .. }) => {
            Ok(Ok(children))
        }
        Err(CredentialsError::Api { source, .. }) => Err(source.into()),
        Err(e) => Ok(Err(Ending::failed(SECRET_NOT_ALLOWED, e.to_string()))),
    }
}
