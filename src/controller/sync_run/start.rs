//! Whether a run's Job can start its pod, as a pure function over what the cluster shows:
//! the Job, its pods and the Job's events. A pod that can never be created (a missing
//! ServiceAccount, a quota) or never pulls its image would otherwise keep the run
//! Pending until the Job's deadline, an hour later.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod};
use k8s_openapi::jiff::Timestamp;

/// How long a Job may go without a running pod before its pods and events are read:
/// pulling an image and scheduling take a few seconds, a backoff tens of seconds.
pub const START_GRACE: Duration = Duration::from_secs(30);

/// How often a Pending run's Job is looked at again after the grace.
pub const START_RECHECK: Duration = Duration::from_secs(15);

/// The label the Job controller puts on a Job's pods: the Job's uid.
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";

/// Why a Job's pod cannot start: the run's reason and the cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartFailure {
    pub reason: &'static str,
    pub message: String,
}

/// What to do about a Job whose run has not started running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartCheck {
    /// The Job is young: look again after this long.
    After(Duration),
    /// Read its pods and events now.
    Now,
}

/// When to look at the pods of `job`, created at `created`.
pub fn start_check(created: Option<Timestamp>, now: Timestamp) -> StartCheck {
    let Some(created) = created else {
        return StartCheck::Now;
    };
    let age = now.duration_since(created);
    let grace = START_GRACE.as_secs() as i64;
    if age.as_secs() >= grace {
        StartCheck::Now
    } else {
        let left = (grace - age.as_secs()).max(1) as u64;
        StartCheck::After(Duration::from_secs(left))
    }
}

/// Why the pod of `job` cannot start, if the cluster says so: a pod that cannot pull its
/// image or build its container, or, with no pod at all, a `FailedCreate` event of the
/// Job. None while any pod runs, or when nothing says it cannot (e.g. still scheduling).
pub fn start_failure(job: &Job, pods: &[Pod], events: &[Event]) -> Option<StartFailure> {
    let job_name = job.metadata.name.clone().unwrap_or_default();
    if pods.iter().any(|p| pod_phase(p) == Some("Running")) {
        return None;
    }
    if let Some(f) = pods.iter().find_map(pod_failure) {
        return Some(f);
    }
    if !pods.is_empty() {
        return None;
    }
    let failed_create = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("FailedCreate") && concerns(e, job))
        .max_by_key(|e| event_time(e))?;
    Some(StartFailure {
        reason: "PodCreateFailed",
        message: format!(
            "Job {job_name} cannot create its pod: {}",
            failed_create.message.as_deref().unwrap_or("FailedCreate")
        ),
    })
}

fn pod_phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

/// A container of the pod waiting for a reason that does not pass by itself.
fn pod_failure(pod: &Pod) -> Option<StartFailure> {
    let status = pod.status.as_ref()?;
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    containers
        .into_iter()
        .find_map(|c| container_failure(pod_name, c))
}

fn container_failure(pod: &str, container: &ContainerStatus) -> Option<StartFailure> {
    let waiting = container.state.as_ref()?.waiting.as_ref()?;
    let why = waiting.reason.as_deref()?;
    let reason = match why {
        "ImagePullBackOff" | "ErrImagePull" | "InvalidImageName" | "ErrImageNeverPull" => {
            "ImagePullFailed"
        }
        "CreateContainerConfigError" | "CreateContainerError" => "ContainerCreateFailed",
        _ => return None,
    };
    let detail = waiting.message.as_deref().unwrap_or_default();
    Some(StartFailure {
        reason,
        message: format!("pod {pod}, container {}: {why}: {detail}", container.name)
            .trim_end_matches([' ', ':'])
            .to_string(),
    })
}

/// Whether the event is about the Job: by uid when both have one, else by kind and name.
fn concerns(event: &Event, job: &Job) -> bool {
    let about = &event.involved_object;
    match (about.uid.as_deref(), job.metadata.uid.as_deref()) {
        (Some(e), Some(j)) => e == j,
        _ => about.kind.as_deref() == Some("Job") && about.name == job.metadata.name,
    }
}

fn event_time(event: &Event) -> Option<Timestamp> {
    let last = event.last_timestamp.as_ref().map(|t| t.0);
    last.or_else(|| event.event_time.as_ref().map(|t| t.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job() -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "slack-1", "uid": "u-job",
                         "creationTimestamp": "2026-01-01T00:00:00Z"}
        }))
        .unwrap()
    }

    fn pod(phase: &str, waiting: Option<(&str, &str)>) -> Pod {
        let state = match waiting {
            Some((reason, message)) => json!({"waiting": {"reason": reason, "message": message}}),
            None => json!({"running": {}}),
        };
        serde_json::from_value(json!({
            "metadata": {"name": "slack-1-abcde"},
            "status": {"phase": phase, "containerStatuses": [{
                "name": "sync", "image": "x", "imageID": "", "ready": false,
                "restartCount": 0, "state": state}]}
        }))
        .unwrap()
    }

    fn event(reason: &str, uid: &str, message: &str, at: &str) -> Event {
        serde_json::from_value(json!({
            "metadata": {"name": format!("slack-1.{at}")},
            "involvedObject": {"kind": "Job", "name": "slack-1", "uid": uid},
            "reason": reason, "message": message, "lastTimestamp": at
        }))
        .unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_young_job_is_looked_at_once_the_grace_has_passed() {
        let created = Some(ts("2026-01-01T00:00:00Z"));
        assert_eq!(
            start_check(created, ts("2026-01-01T00:00:10Z")),
            StartCheck::After(Duration::from_secs(20))
        );
        assert_eq!(
            start_check(created, ts("2026-01-01T00:00:30Z")),
            StartCheck::Now
        );
        assert_eq!(
            start_check(None, ts("2026-01-01T00:00:30Z")),
            StartCheck::Now
        );
    }

    #[test]
    fn a_failed_create_event_fails_a_job_without_pods() {
        let sa = "Error creating: pods \"slack-1-\" is forbidden: error looking up service \
                  account team-a/catalogsync-sync-job: serviceaccount \"catalogsync-sync-job\" not found";
        let events = [
            event(
                "FailedCreate",
                "u-job",
                "exceeded quota: old",
                "2026-01-01T00:00:01Z",
            ),
            event("FailedCreate", "u-job", sa, "2026-01-01T00:00:20Z"),
            event(
                "FailedCreate",
                "u-other",
                "another Job's",
                "2026-01-01T00:00:25Z",
            ),
            event(
                "SuccessfulCreate",
                "u-job",
                "Created pod",
                "2026-01-01T00:00:26Z",
            ),
        ];
        let f = start_failure(&job(), &[], &events).unwrap();
        assert_eq!(f.reason, "PodCreateFailed");
        assert_eq!(
            f.message,
            format!("Job slack-1 cannot create its pod: {sa}")
        );
        // Only another Job's failure, or none: nothing to say yet.
        assert_eq!(start_failure(&job(), &[], &events[2..]), None);
        assert_eq!(start_failure(&job(), &[], &[]), None);
        // A pod was created since (the quota was raised): the events are history.
        let pending = pod("Pending", Some(("ContainerCreating", "")));
        assert_eq!(start_failure(&job(), &[pending], &events), None);
    }

    #[test]
    fn a_pod_that_cannot_pull_its_image_or_build_its_container_fails() {
        let pull = pod(
            "Pending",
            Some((
                "ImagePullBackOff",
                "Back-off pulling image \"ghcr.io/x:nope\"",
            )),
        );
        let f = start_failure(&job(), &[pull], &[]).unwrap();
        assert_eq!(f.reason, "ImagePullFailed");
        assert_eq!(
            f.message,
            "pod slack-1-abcde, container sync: ImagePullBackOff: Back-off pulling image \"ghcr.io/x:nope\""
        );
        let err = pod("Pending", Some(("ErrImagePull", "not found")));
        assert_eq!(
            start_failure(&job(), &[err], &[]).unwrap().reason,
            "ImagePullFailed"
        );
        let config = pod(
            "Pending",
            Some((
                "CreateContainerConfigError",
                "secret \"slack-scim\" not found",
            )),
        );
        let f = start_failure(&job(), &[config], &[]).unwrap();
        assert_eq!(f.reason, "ContainerCreateFailed");
        assert!(
            f.message.contains("secret \"slack-scim\" not found"),
            "{}",
            f.message
        );
    }

    #[test]
    fn a_running_or_merely_waiting_pod_is_left_alone() {
        let running = pod("Running", None);
        let broken = pod("Pending", Some(("ImagePullBackOff", "")));
        // A retried pod runs: the Job is working.
        assert_eq!(start_failure(&job(), &[broken, running], &[]), None);
        for reason in ["ContainerCreating", "PodInitializing"] {
            let waiting = pod("Pending", Some((reason, "")));
            assert_eq!(start_failure(&job(), &[waiting], &[]), None, "{reason}");
        }
    }
}
