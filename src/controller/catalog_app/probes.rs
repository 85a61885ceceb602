//! The provisioning checks behind `ProvisioningEnabled`: the IdentityDomain is
//! Ready, the app's endpoint answers with its credentials, the app's grant and
//! record groups exist in the domain and are the app's (ownership mark). Results are cached per app (and endpoint) so that the
//! status writes and run events that trigger most reconciles cost no SCIM call.

use kube::ResourceExt;
use kube::api::Api;

use super::decide::ProvisioningState;
use super::{
    GROUP_NOT_OWNED, IDENTITY_DOMAIN_NOT_FOUND, IDENTITY_DOMAIN_NOT_READY, INVALID_MAPPING,
};
use crate::api::{CatalogApp, GroupRole, IdentityDomain};
use crate::cluster::conditions::{self, READY};
use crate::cluster::groups::{self, GroupError};
use crate::controller::connectivity::{self, Endpoint, Failure};
use crate::controller::{Context, Result};

/// Checks provisioning: the domain, the app's endpoint and the app's two groups.
/// Also says whether a Ready state stands in for a transient failure.
pub(super) async fn check_provisioning(
    ctx: &Context,
    app: &CatalogApp,
    ns: &str,
) -> Result<(ProvisioningState, bool)> {
    if !app.spec.provisioning.as_ref().is_some_and(|p| p.enabled) {
        return Ok((ProvisioningState::Disabled, false));
    }
    // Before any request: a run with an impossible mapping would only fail.
    if let Err(why) = crate::cluster::mappings::check_app(app) {
        return Ok((
            ProvisioningState::Failed(Failure::new(INVALID_MAPPING, why)),
            false,
        ));
    }
    let domain_name = &app.spec.identity_domain_ref.name;
    let domains: Api<IdentityDomain> = Api::namespaced(ctx.client.clone(), ns);
    let Some(domain) = domains.get_opt(domain_name).await? else {
        return Ok((
            ProvisioningState::Failed(Failure::new(
                IDENTITY_DOMAIN_NOT_FOUND,
                format!("IdentityDomain {domain_name:?} not found"),
            )),
            false,
        ));
    };
    let domain_ready = domain
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, READY))
        .cloned();
    let key = format!("{ns}/{}", app.name_any());
    // Not the app's status: its own grantGroupId/recordGroupId write would make the next
    // reconcile check again (the cached state holds the id).
    let fingerprint = format!(
        "{:?}/{:?}/{:?}",
        app.metadata.generation,
        domain.metadata.generation,
        domain_ready.as_ref().map(|c| (&c.status, &c.reason)),
    );
    if let Some(cached) = ctx.app_probes.get(&key, &fingerprint) {
        return Ok((cached, false));
    }
    let state = match domain_ready {
        Some(c) if c.status == "True" => probe_app_and_groups(ctx, app, ns, &domain).await?,
        other => ProvisioningState::Failed(Failure::new(
            IDENTITY_DOMAIN_NOT_READY,
            format!(
                "IdentityDomain {domain_name:?} is not ready{}",
                other
                    .map(|c| format!(": {}", c.message))
                    .unwrap_or_default()
            ),
        )),
    };
    // Failures are not cached: the next reconcile (at most FAILURE_RECHECK away) retries.
    let failure = match &state {
        ProvisioningState::Failed(f) => Some(f.clone()),
        _ => None,
    };
    let (state, tolerated) = ctx
        .app_probes
        .settle(&key, &fingerprint, state, failure.as_ref());
    if tolerated && let Some(f) = failure {
        tracing::info!(app = %key, reason = f.reason, "provisioning check failed, the provider may be busy; still Ready, rechecking soon");
    }
    Ok((state, tolerated))
}

async fn probe_app_and_groups(
    ctx: &Context,
    app: &CatalogApp,
    ns: &str,
    domain: &IdentityDomain,
) -> Result<ProvisioningState> {
    let connection = &app.spec.connection;
    // Shared by the apps of this endpoint and credentials.
    let checked = ctx
        .endpoints
        .probe(
            &ctx.client,
            Endpoint {
                ns,
                url: &connection.url,
                auth: &connection.auth,
                tls: connection.tls.as_ref(),
                insecure: connection.insecure,
                send_count: crate::api::catalog::get(&app.spec.catalog_item)
                    .is_none_or(|e| e.scim.send_count),
            },
        )
        .await?;
    if let Err(f) = checked {
        return Ok(ProvisioningState::Failed(f.restated(
            f.reason,
            format!("app {}: {}", connection.url, f.message),
        )));
    }
    let domain_spec = &domain.spec;
    let domain_client = match ctx
        .endpoints
        .client(
            &ctx.client,
            Endpoint {
                ns,
                url: &domain_spec.url,
                auth: &domain_spec.auth,
                tls: domain_spec.tls.as_ref(),
                insecure: domain_spec.insecure,
                send_count: true,
            },
        )
        .await?
    {
        Ok(c) => c,
        Err(f) => {
            return Ok(ProvisioningState::Failed(f.restated(
                IDENTITY_DOMAIN_NOT_READY,
                format!("identity domain: {}", f.message),
            )));
        }
    };
    // The grant group first: it is what the user named.
    let status = app.status.as_ref();
    let ensure = |role, known: Option<&str>| {
        let known = known.map(str::to_string);
        let client = &domain_client;
        async move {
            groups::ensure(client, app, role, known.as_deref())
                .await
                .map_err(|e| group_failure(&e))
        }
    };
    let ids = async {
        let grant = status.and_then(|s| s.grant_group_id.as_deref());
        let record = status.and_then(|s| s.record_group_id.as_deref());
        Ok::<_, Failure>((
            ensure(GroupRole::Grant, grant).await?,
            ensure(GroupRole::Record, record).await?,
        ))
    };
    Ok(match ids.await {
        Ok((grant_group_id, record_group_id)) => ProvisioningState::Ready {
            grant_group_id,
            record_group_id,
        },
        Err(f) => ProvisioningState::Failed(f),
    })
}

/// The failure a group error means for the app: a group that is not the app's is the
/// user's to settle (`GroupNotOwned`, the message says how); a SCIM error is the domain's.
pub(super) fn group_failure(e: &GroupError) -> Failure {
    match e {
        GroupError::Scim(scim) => connectivity::scim_failure(scim).restated(
            IDENTITY_DOMAIN_NOT_READY,
            format!("the app's groups in the identity domain: {e}"),
        ),
        GroupError::NotOwned { .. }
        | GroupError::OwnedByOther { .. }
        | GroupError::Ambiguous { .. }
        | GroupError::MarkDropped { .. } => Failure::new(GROUP_NOT_OWNED, e.to_string()),
        // `ensure` creates a missing group; should it say so anyway, it is the domain's.
        GroupError::Missing { .. } => Failure::new(IDENTITY_DOMAIN_NOT_READY, e.to_string()),
    }
}
