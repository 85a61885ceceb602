//! SyncPolicy: validates what admission cannot (the cron schedule, the matching
//! attribute paths) and reports it in `Ready`, so a bad policy is visible on
//! the policy itself, not only on the apps that use it.

use std::sync::Arc;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::{Context, Error, ObjectEvent, Result, now_time};
use crate::api::{SyncPolicy, SyncPolicyStatus};
use crate::cluster::conditions::{self, DesiredCondition, READY, STALLED};
use crate::cluster::status;
use crate::controller::schedule;
use crate::scim::AttrPath;

/// The policy's status, and a `NotReady` event when it turns invalid. Pure.
pub fn decide(
    policy: &SyncPolicy,
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> (SyncPolicyStatus, Option<ObjectEvent>) {
    let spec = &policy.spec;
    let bad_path = spec.matching.iter().enumerate().find_map(|(i, rule)| {
        [&rule.app_attribute, &rule.domain_attribute]
            .into_iter()
            .find_map(|p| p.parse::<AttrPath>().err())
            .map(|e| format!("matching rule {i}: {e}"))
    });
    let problem = match spec.schedule.as_deref().map(schedule::parse) {
        Some(Err(e)) => Some(("InvalidSchedule", e.to_string())),
        _ => bad_path.map(|m| ("InvalidMatching", m)),
    };
    let desired = match &problem {
        Some((reason, msg)) => vec![
            DesiredCondition::falsy(READY, reason, msg.clone()),
            DesiredCondition::truthy(STALLED, reason, msg.clone()),
        ],
        None => vec![
            DesiredCondition::truthy(READY, "Valid", "the policy is valid"),
            DesiredCondition::falsy(STALLED, "Valid", ""),
        ],
    };
    let old = policy.status.clone().unwrap_or_default();
    let status = SyncPolicyStatus {
        observed_generation: policy.metadata.generation,
        conditions: conditions::merge(&old.conditions, &desired, policy.metadata.generation, now),
    };
    let event = ObjectEvent::not_ready(&old.conditions, &status.conditions);
    (status, event)
}

pub async fn reconcile(policy: Arc<SyncPolicy>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile("SyncPolicy");
    let ns = policy
        .namespace()
        .ok_or_else(|| Error::NoNamespace(policy.name_any()))?;
    let (status, event) = decide(&policy, &now_time());
    if policy.status.as_ref() != Some(&status) {
        let api: Api<SyncPolicy> = Api::namespaced(ctx.client.clone(), &ns);
        status::apply(
            &api,
            &policy.name_any(),
            status::CONTROLLER_MANAGER,
            serde_json::to_value(&status).expect("status serializes"),
        )
        .await?;
    }
    if let Some(event) = &event {
        ctx.publish(&policy.object_ref(&()), event).await;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::conditions::{find, is_true};
    use kube::runtime::events::EventType;

    fn policy(spec: serde_json::Value) -> SyncPolicy {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "generation": 4}, "spec": spec
        }))
        .unwrap()
    }

    fn t() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-01-01T00:00:00Z".parse().unwrap(),
        )
    }

    #[test]
    fn valid_policy_is_ready() {
        let (status, event) = decide(
            &policy(serde_json::json!({"schedule": "0 */4 * * *"})),
            &t(),
        );
        assert_eq!(event, None, "a valid policy is no news");
        assert!(is_true(&status.conditions, READY));
        assert!(find(&status.conditions, STALLED).is_none());
        assert_eq!(status.observed_generation, Some(4));
    }

    #[test]
    fn invalid_schedule_and_matching_are_reported() {
        let (status, event) = decide(&policy(serde_json::json!({"schedule": "whenever"})), &t());
        let ready = find(&status.conditions, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "InvalidSchedule")
        );
        assert!(ready.message.contains("whenever"));
        assert!(is_true(&status.conditions, STALLED));
        // Invalid from the start: a Warning the first time, none while it stays so.
        let event = event.expect("a NotReady event for a new invalid policy");
        assert_eq!(
            (event.type_, event.reason.as_str()),
            (EventType::Warning, "NotReady")
        );
        assert!(event.note.contains("whenever"), "{}", event.note);
        let mut again = policy(serde_json::json!({"schedule": "whenever"}));
        again.status = Some(status);
        assert_eq!(decide(&again, &t()).1, None);

        let (status, _) = decide(
            &policy(serde_json::json!({"matching": [
                {"appAttribute": "emails[primary eq", "domainAttribute": "userName"}
            ]})),
            &t(),
        );
        assert_eq!(
            find(&status.conditions, READY).unwrap().reason,
            "InvalidMatching"
        );
    }
}
