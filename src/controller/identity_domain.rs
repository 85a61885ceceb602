//! IdentityDomain: tests connectivity and credentials (GET ServiceProviderConfig)
//! and records the capabilities; rechecked periodically and on Secret changes.

use std::sync::Arc;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::connectivity::{Endpoint, Failure};
use super::{Context, Error, ObjectEvent, Result, now_time};
use crate::api::{Capabilities, IdentityDomain, IdentityDomainStatus};
use crate::cluster::conditions::{self, DesiredCondition, READY};
use crate::cluster::status;

/// The status for a check outcome, plus the events the change deserves. Pure.
pub fn decide(
    domain: &IdentityDomain,
    outcome: &std::result::Result<Capabilities, Failure>,
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> (IdentityDomainStatus, Vec<ObjectEvent>) {
    let old = domain.status.clone().unwrap_or_default();
    let (cond, capabilities) = match outcome {
        Ok(capabilities) => (
            DesiredCondition::truthy(
                READY,
                "Connected",
                format!("connected to {}; credentials accepted", domain.spec.url),
            ),
            Some(capabilities.clone()),
        ),
        // Capabilities stay as last seen: they describe the server, not this failure.
        Err(f) => (
            DesiredCondition::falsy(READY, f.reason, &f.message),
            old.capabilities.clone(),
        ),
    };
    let mut events = Vec::new();
    match (conditions::find(&old.conditions, READY), outcome) {
        (Some(prev), Err(f)) if prev.status == "True" => {
            events.push(ObjectEvent::warning("ConnectivityLost", &f.message))
        }
        (Some(prev), Ok(_)) if prev.status == "False" => {
            events.push(ObjectEvent::normal("ConnectivityRestored", &cond.message))
        }
        _ => {}
    }
    let status = IdentityDomainStatus {
        observed_generation: domain.metadata.generation,
        conditions: conditions::merge(&old.conditions, &[cond], domain.metadata.generation, now),
        capabilities,
    };
    if events.is_empty() {
        // A domain that never connected: ConnectivityLost does not fit, it had none.
        events.extend(ObjectEvent::not_ready(&old.conditions, &status.conditions));
    }
    (status, events)
}

pub async fn reconcile(domain: Arc<IdentityDomain>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile("IdentityDomain");
    let ns = domain
        .namespace()
        .ok_or_else(|| Error::NoNamespace(domain.name_any()))?;
    let name = domain.name_any();
    let key = format!("{ns}/{name}");
    let fingerprint = format!("{:?}", domain.metadata.generation);
    let (outcome, tolerated) = match ctx.domain_probes.get(&key, &fingerprint) {
        Some(o) => (o, false),
        None => {
            let o = ctx
                .endpoints
                .probe(
                    &ctx.client,
                    Endpoint {
                        ns: &ns,
                        url: &domain.spec.url,
                        auth: &domain.spec.auth,
                        tls: domain.spec.tls.as_ref(),
                        insecure: domain.spec.insecure,
                        send_count: true,
                    },
                )
                .await?;
            // Only successes are kept (settle), so a fixed endpoint is seen at the next recheck.
            let failure = o.as_ref().err().cloned();
            ctx.domain_probes
                .settle(&key, &fingerprint, o, failure.as_ref())
        }
    };
    if tolerated {
        tracing::info!(domain = %key, "connectivity check failed, the provider may be busy; still Ready, rechecking soon");
    }
    let (status, events) = decide(&domain, &outcome, &now_time());
    if domain.status.as_ref() != Some(&status) {
        let api: Api<IdentityDomain> = Api::namespaced(ctx.client.clone(), &ns);
        status::apply(
            &api,
            &name,
            status::CONTROLLER_MANAGER,
            serde_json::to_value(&status).expect("status serializes"),
        )
        .await?;
    }
    let reference = domain.object_ref(&());
    for event in &events {
        ctx.publish(&reference, event).await;
    }
    Ok(Action::requeue(match outcome {
        Ok(_) if !tolerated => ctx.config.recheck,
        _ => ctx.config.recheck.min(super::FAILURE_RECHECK),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(status: Option<IdentityDomainStatus>) -> IdentityDomain {
        let mut d: IdentityDomain = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "corp", "namespace": "ns", "generation": 2},
            "spec": {"url": "https://iam.example/scim",
                     "auth": {"bearerToken": {"secretRef": {"name": "s", "key": "token"}}}}
        }))
        .unwrap();
        d.status = status;
        d
    }

    fn t(s: &str) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(s.parse().unwrap())
    }

    #[test]
    fn failure_sets_reason_and_message_and_keeps_capabilities() {
        let capabilities = Capabilities {
            patch: true,
            max_results: 1000,
            ..Default::default()
        };
        let (ok, events) = decide(
            &domain(None),
            &Ok(capabilities.clone()),
            &t("2026-01-01T00:00:00Z"),
        );
        assert!(events.is_empty(), "no event for the first observation");
        assert_eq!(ok.observed_generation, Some(2));
        assert!(conditions::is_true(&ok.conditions, READY));
        let failure = Failure::new("Unauthorized", "GET /ServiceProviderConfig: HTTP 401");
        let (bad, events) = decide(
            &domain(Some(ok.clone())),
            &Err(failure),
            &t("2026-01-01T01:00:00Z"),
        );
        let ready = conditions::find(&bad.conditions, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Unauthorized")
        );
        assert!(ready.message.contains("401"));
        assert_eq!(bad.capabilities, Some(capabilities.clone()));
        assert_eq!(events[0].reason, "ConnectivityLost");
        let (again, ev) = decide(
            &domain(Some(bad.clone())),
            &Ok(capabilities),
            &t("2026-01-01T02:00:00Z"),
        );
        assert_eq!(ev[0].reason, "ConnectivityRestored");
        assert!(conditions::is_true(&again.conditions, READY));
    }

    #[test]
    fn a_domain_failing_from_the_start_gets_a_warning_once() {
        let failure = Failure::new("SecretNotFound", "Secret \"s\" not found");
        let (first, events) = decide(
            &domain(None),
            &Err(failure.clone()),
            &t("2026-01-01T00:00:00Z"),
        );
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(
            (events[0].type_, events[0].reason.as_str()),
            (kube::runtime::events::EventType::Warning, "NotReady")
        );
        assert!(
            events[0].note.contains("SecretNotFound"),
            "{}",
            events[0].note
        );
        let (_, again) = decide(
            &domain(Some(first)),
            &Err(failure),
            &t("2026-01-01T00:05:00Z"),
        );
        assert!(again.is_empty(), "still failing: no new event: {again:?}");
    }

    #[test]
    fn unchanged_outcome_gives_the_identical_status() {
        let (first, _) = decide(
            &domain(None),
            &Ok(Capabilities::default()),
            &t("2026-01-01T00:00:00Z"),
        );
        let (second, ev) = decide(
            &domain(Some(first.clone())),
            &Ok(Capabilities::default()),
            &t("2026-01-01T05:00:00Z"),
        );
        assert_eq!(first, second, "no status write when nothing changed");
        assert!(ev.is_empty());
    }
}
