//! Loading a run: its app, identity domain and policy from the cluster, both SCIM clients
//! with their credentials (the Job's env, else the Secrets through the API, for runs by
//! hand), and from them each direction's run: matching rules and policy reactions for
//! Import, mappings and operations for Provision.

use kube::{Api, Client};

use crate::api::{
    Auth, CatalogApp, Direction, IdentityDomain, Limits, OnNoMatch, SyncPolicy, SyncPolicySpec,
    SyncRun, Tls, catalog, default_matching,
};
use crate::cluster::credentials::{self, Side};
use crate::scim::{ClientOptions, ScimClient};

use super::error::RunError;
use super::extract::Rules;
use super::import::ImportRun;
use super::journal::Lookups;
use super::mapping::{self, Mappings};
use super::pipeline::Context;
use super::plan::ImportPolicy;
use super::progress::{Checkpoint, Tracker};
use super::provision::ProvisionRun;
use super::stop::{Stop, StopReason};

/// What every run needs from the cluster: its app, both SCIM clients, and the policy
/// (required for Import; for Provision it only lends parallelism, timeout and failure
/// threshold when the app has one).
pub struct Loaded {
    /// The cluster client and namespace the run's status is written with.
    runs_client: Client,
    namespace: String,
    pub app: CatalogApp,
    pub policy: Option<SyncPolicySpec>,
    pub domain_client: ScimClient,
    pub app_client: ScimClient,
    pub parallelism: usize,
    pub timeout: String,
    pub max_failure_percent: u32,
}

/// Loads what `run` needs, and arms its timeout on `stop`.
pub async fn load(
    client: &Client,
    namespace: &str,
    run: &SyncRun,
    stop: &Stop,
) -> Result<Loaded, RunError> {
    let app = app_of(client, namespace, run).await?;
    let domains: Api<IdentityDomain> = Api::namespaced(client.clone(), namespace);
    let domain_name = &app.spec.identity_domain_ref.name;
    let domain = domains
        .get(domain_name)
        .await
        .map_err(|e| RunError::reading(&format!("IdentityDomain {domain_name}"), e))?;
    let policy = policy_of(client, namespace, run, &app).await?;
    let (parallelism, timeout, max_failure_percent) = match &policy {
        Some(p) => (p.parallelism, p.timeout.clone(), p.max_failure_percent),
        None => (8, "1h".to_string(), 40),
    };
    let parallelism = parallelism.clamp(1, 256) as usize;
    let timeout_after = crate::api::parse_duration(&timeout)
        .ok_or_else(|| RunError::Invalid(format!("timeout {timeout:?} is not a duration")))?;
    let domain_client = client_for(
        client,
        namespace,
        Side::Domain,
        Target {
            url: &domain.spec.url,
            auth: &domain.spec.auth,
            tls: domain.spec.tls.as_ref(),
            insecure: domain.spec.insecure,
            conventions: &Default::default(),
        },
        parallelism,
    )
    .await?;
    let connection = &app.spec.connection;
    let app_client = client_for(
        client,
        namespace,
        Side::App,
        Target {
            url: &connection.url,
            auth: &connection.auth,
            tls: connection.tls.as_ref(),
            insecure: connection.insecure,
            conventions: &catalog::get(&app.spec.catalog_item)
                .map(|e| e.scim.clone())
                .unwrap_or_default(),
        },
        parallelism,
    )
    .await?;
    // The timeout counts from the run's start, also for a retried pod.
    let elapsed = run
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| {
            let since = k8s_openapi::jiff::Timestamp::now().duration_since(t.0);
            std::time::Duration::try_from(since).unwrap_or_default()
        })
        .unwrap_or_default();
    stop.after(timeout_after.saturating_sub(elapsed), StopReason::Timeout);
    // Stopping: no SCIM retries, every request bounded, inside the pod's grace period.
    let (d, a, s) = (domain_client.clone(), app_client.clone(), stop.clone());
    tokio::spawn(async move {
        s.stopped().await;
        d.halt();
        a.halt();
    });
    Ok(Loaded {
        runs_client: client.clone(),
        namespace: namespace.to_string(),
        app,
        policy,
        domain_client,
        app_client,
        parallelism,
        timeout,
        max_failure_percent: max_failure_percent.clamp(0, 100) as u32,
    })
}

/// The run's app, if the run may still act on it.
async fn app_of(client: &Client, namespace: &str, run: &SyncRun) -> Result<CatalogApp, RunError> {
    let apps: Api<CatalogApp> = Api::namespaced(client.clone(), namespace);
    let app_name = &run.spec.app_ref.name;
    let app = apps
        .get(app_name)
        .await
        .map_err(|e| RunError::reading(&format!("CatalogApp {app_name}"), e))?;
    // The controller cancels runs of suspended apps; a Job starting meanwhile must not act.
    if app.spec.suspend {
        return Err(RunError::Cancelled(format!(
            "CatalogApp {app_name} is suspended"
        )));
    }
    let (enabled, what) = match run.spec.direction {
        Direction::Import => (
            app.spec.synchronization.as_ref().is_some_and(|s| s.enabled),
            "synchronization",
        ),
        Direction::Provision => (
            app.spec.provisioning.as_ref().is_some_and(|p| p.enabled),
            "provisioning",
        ),
    };
    if !enabled {
        return Err(RunError::Cancelled(format!(
            "{what} is not enabled for CatalogApp {app_name}"
        )));
    }
    Ok(app)
}

/// The app's SyncPolicy: required for Import, optional for Provision.
async fn policy_of(
    client: &Client,
    namespace: &str,
    run: &SyncRun,
    app: &CatalogApp,
) -> Result<Option<SyncPolicySpec>, RunError> {
    let direction = run.spec.direction;
    let policy_name = app
        .spec
        .synchronization
        .as_ref()
        .map(|s| &s.policy_ref.name);
    let Some(name) = policy_name else {
        return match direction {
            Direction::Import => Err(RunError::Invalid(format!(
                "CatalogApp {} has no synchronization.policyRef",
                run.spec.app_ref.name
            ))),
            Direction::Provision => Ok(None),
        };
    };
    let policies: Api<SyncPolicy> = Api::namespaced(client.clone(), namespace);
    match policies.get_opt(name).await {
        Ok(Some(p)) => Ok(Some(p.spec)),
        Ok(None) if direction == Direction::Provision => Ok(None),
        Ok(None) => Err(RunError::Invalid(format!("SyncPolicy {name} not found"))),
        Err(e) => Err(RunError::reading(&format!("SyncPolicy {name}"), e)),
    }
}

/// A SCIM endpoint as an object names it.
struct Target<'a> {
    url: &'a str,
    auth: &'a Auth,
    tls: Option<&'a Tls>,
    /// Plain http allowed (the object's `insecure` opt-in).
    insecure: bool,
    /// The server's conventions (the app's catalog entry; the RFC's for the domain).
    conventions: &'a catalog::ScimConventions,
}

/// A SCIM client for one side, with its credentials.
async fn client_for(
    client: &Client,
    namespace: &str,
    side: Side,
    Target {
        url,
        auth,
        tls,
        insecure,
        conventions,
    }: Target<'_>,
    parallelism: usize,
) -> Result<ScimClient, RunError> {
    // Admission refuses these; an object stored before the rules still must not pass.
    if let Some(why) = crate::api::url_refusal(url, auth, insecure) {
        return Err(RunError::Invalid(format!("{side:?}: {why}")));
    }
    let resolved = if credentials::env_present(side, auth, tls) {
        credentials::from_env(side, auth, tls)
    } else {
        credentials::from_secrets(client, namespace, auth, tls).await
    }
    .map_err(|e| RunError::Invalid(format!("{side:?} credentials: {e}")))?;
    let mut opts = ClientOptions::new(url, resolved.credentials);
    opts.ca_pem = resolved.ca_pem.map(String::into_bytes);
    opts.parallelism = parallelism;
    opts.send_count = conventions.send_count;
    opts.avoid_filter = conventions.avoid.contains(&catalog::Feature::Filter);
    opts.avoid_bulk = conventions.avoid.contains(&catalog::Feature::Bulk);
    ScimClient::with_options(opts).map_err(|e| RunError::Invalid(format!("{side:?} client: {e}")))
}

impl Loaded {
    /// What settling an interrupted attempt's journal reads.
    pub fn lookups(&self) -> Lookups<'_> {
        Lookups {
            domain: &self.domain_client,
            app: &self.app_client,
            catalog_app: &self.app,
        }
    }

    /// The shared part of a run, held to `limits` (shown in the status from the start).
    fn context(
        self,
        limits: Option<Limits>,
        run: &SyncRun,
        tracker: &Tracker,
        stop: &Stop,
    ) -> Context {
        tracker.update(|s| s.limits = Some(super::limits::applied(limits.as_ref())));
        Context {
            catalog_app: self.app,
            domain: self.domain_client,
            app: self.app_client,
            limits,
            approved_plan: run.spec.approved_plan.as_ref().map(|a| a.digest.clone()),
            parallelism: self.parallelism,
            mode: run.spec.mode,
            max_failure_percent: self.max_failure_percent,
            timeout: self.timeout,
            tracker: tracker.clone(),
            checkpoint: Checkpoint {
                api: Api::namespaced(self.runs_client.clone(), &self.namespace),
                name: run.metadata.name.clone().unwrap_or_default(),
                previous: run.status.clone().unwrap_or_default().conditions,
                generation: run.metadata.generation,
            },
            stop: stop.clone(),
        }
    }

    /// The Import run: matching rules (with the catalog's import mappings when unmatched
    /// accounts become users), policy reactions and limits from the SyncPolicy.
    pub fn import(
        self,
        run: &SyncRun,
        tracker: &Tracker,
        stop: &Stop,
    ) -> Result<ImportRun, RunError> {
        let p = self
            .policy
            .clone()
            .expect("load requires a policy for Import");
        let mut rules = Rules::parse(&p.matching).map_err(RunError::Invalid)?;
        if p.on_no_match == OnNoMatch::CreateUser {
            let configured = self
                .app
                .spec
                .synchronization
                .as_ref()
                .map(|s| s.attribute_mappings.clone())
                .filter(|m| !m.is_empty());
            let import = configured
                .unwrap_or_else(|| mapping::default_import_mappings(&self.app.spec.catalog_item));
            rules = rules
                .with_import_mappings(import)
                .map_err(RunError::Invalid)?;
        }
        Ok(ImportRun {
            rules,
            policy: ImportPolicy {
                on_exact_match: p.on_exact_match,
                on_no_match: p.on_no_match,
                on_account_deleted: p.on_account_deleted,
            },
            context: self.context(p.limits.clone(), run, tracker, stop),
        })
    }

    /// The Provision run: mappings, operations and limits from `spec.provisioning`.
    pub fn provision(
        self,
        run: &SyncRun,
        tracker: &Tracker,
        stop: &Stop,
    ) -> Result<ProvisionRun, RunError> {
        let provisioning = self
            .app
            .spec
            .provisioning
            .clone()
            .filter(|p| p.enabled)
            .ok_or_else(|| RunError::Invalid("provisioning is not enabled for this app".into()))?;
        let mappings = if provisioning.attribute_mappings.is_empty() {
            mapping::default_mappings(&self.app.spec.catalog_item)
        } else {
            provisioning.attribute_mappings.clone()
        };
        let entry = catalog::get(&self.app.spec.catalog_item);
        let conventions = entry.map(|e| e.scim.clone()).unwrap_or_default();
        let mappings = Mappings::parse(&mappings)
            .and_then(|m| m.with_conventions(&conventions))
            .map_err(RunError::Invalid)?;
        // Only what both the app (its catalog entry) and the user allow.
        let operations: Vec<_> = provisioning
            .operations
            .iter()
            .copied()
            .filter(|o| entry.is_none_or(|e| e.operations.contains(o)))
            .collect();
        let deactivate_deletes =
            entry.is_some_and(|e| e.deactivation == catalog::Deactivation::Delete);
        // The same matching rules as Import decide which user owns an account.
        let matching = self
            .policy
            .as_ref()
            .map(|p| p.matching.clone())
            .unwrap_or_else(default_matching);
        let rules = Rules::parse(&matching).map_err(RunError::Invalid)?;
        ownership_provable(&rules, &conventions, &self.app.spec.catalog_item)?;
        let synchronization = self
            .app
            .spec
            .synchronization
            .as_ref()
            .is_some_and(|s| s.enabled);
        Ok(ProvisionRun {
            rules,
            mappings,
            operations,
            deactivate_deletes,
            synchronization,
            context: self.context(provisioning.limits.clone(), run, tracker, stop),
        })
    }
}

/// When the app cannot store `externalId`, an account is known to be the user's only by
/// the catalog entry's ownership attribute: the matching rules must use it.
fn ownership_provable(
    rules: &Rules,
    c: &catalog::ScimConventions,
    catalog_item: &str,
) -> Result<(), RunError> {
    if c.external_id_writable
        || rules
            .app
            .iter()
            .any(|p| p.to_string().eq_ignore_ascii_case(&c.ownership_attribute))
    {
        return Ok(());
    }
    Err(RunError::Invalid(format!(
        "{catalog_item} cannot store externalId, so an account is the user's by its {} only: \
         the SyncPolicy's matching rules must include appAttribute {}",
        c.ownership_attribute, c.ownership_attribute
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MatchRule;

    fn rules(app: &[&str]) -> Rules {
        let r: Vec<MatchRule> = app
            .iter()
            .map(|a| MatchRule {
                app_attribute: a.to_string(),
                domain_attribute: "userName".into(),
                case_sensitive: false,
            })
            .collect();
        Rules::parse(&r).unwrap()
    }

    #[test]
    fn without_a_writable_external_id_the_rules_must_use_the_ownership_attribute() {
        let canaille = &catalog::get("Canaille").unwrap().scim;
        assert!(
            ownership_provable(&rules(&["userName", "emails.value"]), canaille, "Canaille").is_ok()
        );
        let e = ownership_provable(&rules(&["emails.value"]), canaille, "Canaille").unwrap_err();
        assert!(
            e.to_string().contains("must include appAttribute userName"),
            "{e}"
        );
        let generic = &catalog::ScimConventions::default();
        assert!(ownership_provable(&rules(&["emails.value"]), generic, "GenericSCIM").is_ok());
    }
}
