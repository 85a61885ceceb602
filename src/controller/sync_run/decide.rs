//! What to do about a SyncRun, as pure functions: the state of its Job, which
//! applying run of an app goes first, and [`decide`], from the run and its Job
//! to one [`Step`]. `reconcile` only reads what these look at and carries out
//! the step.

use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;

use super::{CANCEL_ANNOTATION, is_finished, job};
use crate::api::{Mode, RunPhase, SyncRun};

/// How a Job ended, as the Job controller reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobEnd {
    Complete,
    Failed { reason: String, message: String },
}

/// The end of a Job, from its `Complete`/`Failed` conditions.
pub fn job_end(job: &Job) -> Option<JobEnd> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    let is = |t: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == t && c.status == "True")
    };
    if let Some(c) = is("Failed") {
        return Some(JobEnd::Failed {
            reason: c.reason.clone().unwrap_or_else(|| "JobFailed".into()),
            message: c.message.clone().unwrap_or_default(),
        });
    }
    is("Complete").map(|_| JobEnd::Complete)
}

/// The Job named like the run, as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    Absent,
    /// A Job of that name that does not belong to the run.
    Foreign,
    /// Not ended yet (its pod may not even exist).
    Active,
    /// Ended; its deadline (`activeDeadlineSeconds`) shows as Failed with
    /// reason DeadlineExceeded.
    Ended(JobEnd),
}

impl JobState {
    pub fn of(job: Option<&Job>, run: &SyncRun) -> Self {
        let Some(job) = job else {
            return JobState::Absent;
        };
        let owned = job
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == run.uid().as_ref());
        if job::run_of(job).as_deref() != Some(run.name_any().as_str()) || !owned {
            return JobState::Foreign;
        }
        job_end(job).map_or(JobState::Active, JobState::Ended)
    }

    /// Whether the run may have written its outcome after the cached copy was
    /// read: its Job has ended, or is gone after having been created. The run's
    /// final write happens before its process exits, so a fresh read tells.
    pub fn calls_for_fresh_run(&self, run: &SyncRun) -> bool {
        match self {
            JobState::Ended(_) => true,
            JobState::Absent => job_recorded(run),
            JobState::Foreign | JobState::Active => false,
        }
    }

    /// Whether the run is yet to get its Job (none found, none created): only
    /// then does another applying run of the app matter.
    pub fn awaits_creation(&self, run: &SyncRun) -> bool {
        *self == JobState::Absent && !job_recorded(run)
    }
}

fn job_recorded(run: &SyncRun) -> bool {
    run.status.as_ref().is_some_and(|s| s.job_name.is_some())
}

/// The active applying run of the same app that `run` must wait for: one
/// created earlier (name breaks ties), so of two runs exactly one proceeds.
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

/// What a reconcile of a SyncRun does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing until the run or its Job changes.
    Wait,
    /// Another applying run of the app goes first: stay Pending, look again
    /// soon. The message to write, unless the run shows it already.
    Queue { message: Option<String> },
    /// Read the app, its domain and policy, create the Job and record it (or
    /// end the run if it cannot have one).
    CreateJob,
    /// The Job exists but the run does not name it (created before a restart).
    RecordJob,
    /// Write a final phase.
    Finish {
        phase: RunPhase,
        reason: String,
        message: String,
        job_name: Option<String>,
    },
}

impl Step {
    fn failed(reason: &str, message: String, job_name: Option<String>) -> Self {
        Step::Finish {
            phase: RunPhase::Failed,
            reason: reason.into(),
            message,
            job_name,
        }
    }
}

/// The step for `run` (a fresh copy where [`JobState::calls_for_fresh_run`]),
/// given its Job and the applying run it waits for, if any.
pub fn decide(run: &SyncRun, job: &JobState, blocking: Option<&str>) -> Step {
    let name = run.name_any();
    if is_finished(run) {
        // The run reported; only a Job it never named still gets recorded.
        let owned = matches!(job, JobState::Active | JobState::Ended(_));
        return if owned && !job_recorded(run) {
            Step::RecordJob
        } else {
            Step::Wait
        };
    }
    match job {
        // Its Job was created and is gone: the run was cancelled meanwhile,
        // or the Job was deleted by hand.
        JobState::Absent if job_recorded(run) => match run.annotations().get(CANCEL_ANNOTATION) {
            Some(why) => Step::Finish {
                phase: RunPhase::Cancelled,
                reason: "Cancelled".into(),
                message: why.clone(),
                job_name: Some(name),
            },
            None => Step::failed(
                "JobDeleted",
                format!("Job {name} was deleted before the run reported an outcome"),
                Some(name),
            ),
        },
        // One applying run per app at a time: a later one (e.g. created by
        // hand) waits rather than racing the other over the same accounts.
        JobState::Absent => match blocking {
            Some(other) => {
                let message = format!("waiting for run {other} of the same app to finish");
                let shown = run.status.as_ref().and_then(|s| s.message.as_deref());
                Step::Queue {
                    message: (shown != Some(message.as_str())).then_some(message),
                }
            }
            None => Step::CreateJob,
        },
        JobState::Foreign => Step::failed(
            "JobConflict",
            format!("a Job named {name} exists that does not belong to this run"),
            None,
        ),
        JobState::Active if !job_recorded(run) => Step::RecordJob,
        JobState::Active => Step::Wait,
        // Ended without the run reporting (OOMKilled, deadline, a pod that never wrote).
        JobState::Ended(JobEnd::Complete) => Step::failed(
            "NoOutcome",
            format!("Job {name} completed but the run never reported an outcome"),
            Some(name),
        ),
        JobState::Ended(JobEnd::Failed { reason, message }) => {
            let message = if message.is_empty() {
                format!("Job {name} failed: {reason}")
            } else {
                format!("Job {name} failed ({reason}): {message}")
            };
            Step::failed(reason, message, Some(name))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    /// Run `slack-1` (uid u-run) with the given status.
    fn run_with(status: serde_json::Value, annotations: serde_json::Value) -> SyncRun {
        serde_json::from_value(json!({
            "metadata": {"name": "slack-1", "namespace": "ns", "uid": "u-run",
                         "annotations": annotations},
            "spec": {"appRef": {"name": "slack"}},
            "status": status
        }))
        .unwrap()
    }

    /// Job `slack-1` controlled by the run with `uid`.
    fn owned_job(uid: &str, conditions: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "slack-1", "ownerReferences": [{
                "apiVersion": "catalogsync.io/v1alpha1", "kind": "SyncRun",
                "name": "slack-1", "uid": uid, "controller": true}]},
            "status": {"conditions": conditions}
        }))
        .unwrap()
    }

    fn failed(reason: &str, message: &str, job_name: Option<&str>) -> Step {
        Step::Finish {
            phase: RunPhase::Failed,
            reason: reason.into(),
            message: message.into(),
            job_name: job_name.map(String::from),
        }
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

    #[test]
    fn job_state_tells_ours_from_a_foreign_job() {
        let r = run_with(json!(null), json!(null));
        assert_eq!(JobState::of(None, &r), JobState::Absent);
        let active = owned_job("u-run", json!([]));
        assert_eq!(JobState::of(Some(&active), &r), JobState::Active);
        let done = owned_job("u-run", json!([{"type": "Complete", "status": "True"}]));
        assert_eq!(
            JobState::of(Some(&done), &r),
            JobState::Ended(JobEnd::Complete)
        );
        // Same name, another owner (e.g. a run deleted and made again).
        let other = owned_job("u-old", json!([]));
        assert_eq!(JobState::of(Some(&other), &r), JobState::Foreign);
        let unowned = job(json!([]));
        assert_eq!(JobState::of(Some(&unowned), &r), JobState::Foreign);
    }

    #[test]
    fn a_fresh_run_is_read_only_when_the_run_may_have_reported() {
        let pending = run_with(json!(null), json!(null));
        let recorded = run_with(json!({"jobName": "slack-1"}), json!(null));
        assert!(!JobState::Absent.calls_for_fresh_run(&pending));
        assert!(JobState::Absent.calls_for_fresh_run(&recorded));
        assert!(!JobState::Active.calls_for_fresh_run(&recorded));
        assert!(!JobState::Foreign.calls_for_fresh_run(&recorded));
        assert!(JobState::Ended(JobEnd::Complete).calls_for_fresh_run(&pending));
    }

    #[test]
    fn no_job_yet_creates_one_unless_another_run_goes_first() {
        let r = run_with(json!({"phase": "Pending"}), json!(null));
        assert_eq!(decide(&r, &JobState::Absent, None), Step::CreateJob);
        let waiting = "waiting for run slack-0 of the same app to finish";
        assert_eq!(
            decide(&r, &JobState::Absent, Some("slack-0")),
            Step::Queue {
                message: Some(waiting.into())
            }
        );
        // Said already: no second write.
        let told = run_with(json!({"phase": "Pending", "message": waiting}), json!(null));
        assert_eq!(
            decide(&told, &JobState::Absent, Some("slack-0")),
            Step::Queue { message: None }
        );
    }

    #[test]
    fn a_recorded_job_that_is_gone_ends_the_run() {
        let r = run_with(
            json!({"phase": "Running", "jobName": "slack-1"}),
            json!(null),
        );
        assert_eq!(
            decide(&r, &JobState::Absent, None),
            failed(
                "JobDeleted",
                "Job slack-1 was deleted before the run reported an outcome",
                Some("slack-1")
            )
        );
        // Gone because the run was cancelled: Cancelled, with the reason given.
        let cancelled = run_with(
            json!({"phase": "Running", "jobName": "slack-1"}),
            json!({CANCEL_ANNOTATION: "cancelled: the app was suspended"}),
        );
        assert_eq!(
            decide(&cancelled, &JobState::Absent, None),
            Step::Finish {
                phase: RunPhase::Cancelled,
                reason: "Cancelled".into(),
                message: "cancelled: the app was suspended".into(),
                job_name: Some("slack-1".into()),
            }
        );
    }

    #[test]
    fn a_foreign_job_fails_the_run() {
        let r = run_with(json!({"phase": "Pending"}), json!(null));
        assert_eq!(
            decide(&r, &JobState::Foreign, None),
            failed(
                "JobConflict",
                "a Job named slack-1 exists that does not belong to this run",
                None
            )
        );
    }

    #[test]
    fn an_active_job_is_recorded_once_then_left_alone() {
        let unrecorded = run_with(json!({"phase": "Running"}), json!(null));
        assert_eq!(
            decide(&unrecorded, &JobState::Active, None),
            Step::RecordJob
        );
        let recorded = run_with(
            json!({"phase": "Running", "jobName": "slack-1"}),
            json!(null),
        );
        assert_eq!(decide(&recorded, &JobState::Active, None), Step::Wait);
    }

    #[test]
    fn a_job_that_ended_without_an_outcome_fails_the_run() {
        let r = run_with(
            json!({"phase": "Running", "jobName": "slack-1"}),
            json!(null),
        );
        assert_eq!(
            decide(&r, &JobState::Ended(JobEnd::Complete), None),
            failed(
                "NoOutcome",
                "Job slack-1 completed but the run never reported an outcome",
                Some("slack-1")
            )
        );
        let deadline = JobState::Ended(JobEnd::Failed {
            reason: "DeadlineExceeded".into(),
            message: "Job was active longer than specified deadline".into(),
        });
        assert_eq!(
            decide(&r, &deadline, None),
            failed(
                "DeadlineExceeded",
                "Job slack-1 failed (DeadlineExceeded): Job was active longer than specified deadline",
                Some("slack-1")
            )
        );
        let bare = JobState::Ended(JobEnd::Failed {
            reason: "BackoffLimitExceeded".into(),
            message: String::new(),
        });
        assert_eq!(
            decide(&r, &bare, None),
            failed(
                "BackoffLimitExceeded",
                "Job slack-1 failed: BackoffLimitExceeded",
                Some("slack-1")
            )
        );
    }

    #[test]
    fn a_run_that_reported_is_left_alone() {
        let done = run_with(
            json!({"phase": "Succeeded", "jobName": "slack-1"}),
            json!(null),
        );
        for job in [
            JobState::Absent,
            JobState::Active,
            JobState::Ended(JobEnd::Complete),
        ] {
            assert_eq!(decide(&done, &job, None), Step::Wait, "{job:?}");
        }
        // Its Job never named (created before a restart): recorded still.
        let unnamed = run_with(json!({"phase": "Succeeded"}), json!(null));
        assert_eq!(
            decide(&unnamed, &JobState::Ended(JobEnd::Complete), None),
            Step::RecordJob
        );
        assert_eq!(decide(&unnamed, &JobState::Absent, None), Step::Wait);
    }
}
