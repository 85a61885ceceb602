//! CatalogApp: a SaaS application from the app catalog integrated into an identity domain.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Connection, Counts, Limits, LocalRef, Progress, conditions_schema};
use super::sync_run::{Direction, RunPhase};

/// The annotation whose new value requests an on-demand run (an opaque token, e.g. a timestamp).
pub const REQUESTED_AT_ANNOTATION: &str = "catalogsync.io/requested-at";

/// The direction(s) a `requested-at` request runs: `Provision`, `Import`, or `Both` (the
/// default): with synchronization on, Both runs Provision first, then Import once it ended.
pub const REQUESTED_DIRECTION_ANNOTATION: &str = "catalogsync.io/requested-direction";

/// A SaaS application integrated into an identity domain and reached over SCIM 2.0.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "catalogsync.io",
    version = "v1alpha1",
    kind = "CatalogApp",
    doc = "A SaaS application from the app catalog, integrated into an identity domain: provisioning and synchronization settings.",
    namespaced,
    status = "CatalogAppStatus",
    shortname = "capp",
    category = "catalogsync",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Provisioning","type":"string","jsonPath":".status.conditions[?(@.type==\"ProvisioningEnabled\")].status"}"#,
    printcolumn = r#"{"name":"Synchronization","type":"string","jsonPath":".status.conditions[?(@.type==\"SynchronizationEnabled\")].status"}"#,
    printcolumn = r#"{"name":"Last provision","type":"string","jsonPath":".status.lastProvision.phase","description":"Phase of the last Apply provisioning run"}"#,
    printcolumn = r#"{"name":"Last import","type":"string","jsonPath":".status.lastImport.phase","description":"Phase of the last Apply synchronization run"}"#,
    printcolumn = r#"{"name":"Next sync","type":"date","jsonPath":".status.nextSyncTime","priority":1}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.synchronization) || !self.synchronization.enabled || (has(self.provisioning) && self.provisioning.enabled)",
    "message": "synchronization can only be enabled after provisioning is enabled",
    "fieldPath": ".synchronization.enabled"
}]))]
pub struct CatalogAppSpec {
    /// The IdentityDomain (same namespace) this app is integrated into.
    pub identity_domain_ref: LocalRef,
    /// Entry of the built-in app catalog that describes this app's SCIM conventions.
    #[serde(default = "default_catalog_item")]
    #[schemars(schema_with = "crate::api::catalog::catalog_item_schema")]
    pub catalog_item: String,
    /// The app's SCIM 2.0 endpoint.
    pub connection: Connection,
    /// Pauses everything for this app: no scheduling, and an active run is cancelled.
    #[serde(default)]
    pub suspend: bool,
    /// Provisioning: accounts in the app for the users granted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<Provisioning>,
    /// Synchronization: import the app's accounts into the identity domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synchronization: Option<Synchronization>,
}

fn default_catalog_item() -> String {
    "GenericSCIM".into()
}

/// An operation provisioning may perform in the app.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Operation {
    /// Create an account for a granted user.
    Create,
    /// Update an account whose mapped attributes differ.
    Update,
    /// Deactivate the account of a user no longer granted, or inactive.
    Deactivate,
    /// Delete the account of a user no longer granted.
    Delete,
}

/// One attribute mapping between an identity domain user and an app account: from the user
/// to the account for provisioning, from the account to a new user for synchronization.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttributeMapping {
    /// SCIM attribute path of the user in the identity domain, e.g. `name.givenName`:
    /// a path of the core or enterprise User schema, or under another extension's URN.
    #[schemars(
        length(min = 1, max = 256),
        extend("x-kubernetes-validations" = super::attribute_path::rules())
    )]
    pub domain_attribute: String,
    /// SCIM attribute path of the account in the app, e.g. `name.givenName`: a path of the
    /// core or enterprise User schema, or under another extension's URN.
    #[schemars(
        length(min = 1, max = 256),
        extend("x-kubernetes-validations" = super::attribute_path::rules())
    )]
    pub app_attribute: String,
}

/// Provisioning settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Provisioning {
    /// Turns provisioning on.
    #[serde(default)]
    pub enabled: bool,
    /// Display name of the grant group in the identity domain; its members hold an
    /// account in the app. Default: `catalogsync-<namespace>-<app name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub grant_group: Option<String>,
    /// Display name of the account record group: the users whose account in the app is
    /// linked. Written only by catalogsync. Default: `<grantGroup>-accounts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub record_group: Option<String>,
    /// Adopt a grant or record group that exists without catalogsync's ownership mark
    /// (`externalId: catalogsync:<namespace>/<app>/grant|record`). Off by default, so that
    /// pointing an app at an existing group (an administrators group) changes nothing.
    #[serde(default)]
    pub adopt_existing_groups: bool,
    /// Operations provisioning may perform.
    #[serde(default = "default_operations")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub operations: Vec<Operation>,
    /// Cron expression (five fields, UTC) for provisioning runs. Absent = on demand only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub schedule: Option<String>,
    /// Maximum creates and deletes per provisioning run. Absent = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Attribute mappings replacing the catalog entry's defaults (at most 64: the bound
    /// lets the API server afford checking each path at admission).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub attribute_mappings: Vec<AttributeMapping>,
}

fn default_operations() -> Vec<Operation> {
    vec![Operation::Create, Operation::Update, Operation::Deactivate]
}

/// Synchronization settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Synchronization {
    /// Turns synchronization on. Requires provisioning to be enabled.
    #[serde(default)]
    pub enabled: bool,
    /// The SyncPolicy (same namespace) that says how and when to synchronize.
    pub policy_ref: LocalRef,
    /// App account → identity-domain user mappings a `CreateUser` applies (the policy's
    /// `onNoMatch`), replacing the catalog entry's import mappings. `appAttribute` is read
    /// from the account, `domainAttribute` written into the new user. At most 64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub attribute_mappings: Vec<AttributeMapping>,
}

/// A run in progress.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActiveRun {
    /// Name of the SyncRun.
    pub name: String,
    /// Import or Provision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Progress of the run's current stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

/// Summary of a finished run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// Name of the SyncRun.
    pub name: String,
    /// Final phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RunPhase>,
    /// When the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// The run's counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
    /// The run's one-line outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The reason of the run's outcome, as its condition gives it (e.g. `Succeeded`,
    /// `LimitExceeded`, `JobFailed`, `Cancelled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Observed state of a CatalogApp.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CatalogAppStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions: Ready, ProvisioningEnabled, SynchronizationEnabled, Synchronizing,
    /// LimitExceeded, Stalled while true (an invalid schedule), and Reconciling while true
    /// (a new run waits for the run it replaces to stop).
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The run in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_run: Option<ActiveRun>,
    /// The last finished synchronization (Import) run of either mode, a Plan run included.
    /// Prefer `lastImport`, which only a run that could change something (Apply) updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunSummary>,
    /// The last finished provisioning run of either mode, a Plan run included. Prefer
    /// `lastProvision`, which only a run that could change something (Apply) updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_provisioning_run: Option<RunSummary>,
    /// The last finished Apply synchronization (Import) run: what `LimitExceeded` follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_import: Option<RunSummary>,
    /// The last finished Apply provisioning run: what `LimitExceeded` follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_provision: Option<RunSummary>,
    /// When the next scheduled synchronization run starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_sync_time: Option<Time>,
    /// When the next scheduled provisioning run starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_provisioning_time: Option<Time>,
    /// The latest synchronization schedule slot handled (run, or skipped under Forbid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// The latest provisioning schedule slot handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_provisioning_schedule_time: Option<Time>,
    /// Echo of the last handled `catalogsync.io/requested-at` annotation value: set once
    /// the whole request is handled (with `Both`, once its Import run was created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_requested_at: Option<String>,
    /// The Provision run of the pending request whose Import run starts once it has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_import_after: Option<String>,
    /// SCIM id of the grant group in the identity domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_group_id: Option<String>,
    /// SCIM id of the account record group in the identity domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_group_id: Option<String>,
}

impl CatalogApp {
    /// Display name of the app's grant group in the identity domain:
    /// `spec.provisioning.grantGroup`, else `catalogsync-<namespace>-<app name>`.
    pub fn grant_group_name(&self) -> String {
        if let Some(g) = self
            .spec
            .provisioning
            .as_ref()
            .and_then(|p| p.grant_group.as_deref())
            .filter(|g| !g.trim().is_empty())
        {
            return g.to_string();
        }
        let ns = self.metadata.namespace.as_deref().unwrap_or("default");
        let name = self.metadata.name.as_deref().unwrap_or_default();
        format!("catalogsync-{ns}-{name}")
    }

    /// Display name of the app's account record group: `spec.provisioning.recordGroup`,
    /// else `<grant group>-accounts`.
    pub fn record_group_name(&self) -> String {
        self.spec
            .provisioning
            .as_ref()
            .and_then(|p| p.record_group.as_deref())
            .filter(|g| !g.trim().is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}-accounts", self.grant_group_name()))
    }

    /// The ownership mark catalogsync writes as `externalId` on the app's group of `role`
    /// (`grant` or `record`).
    pub fn group_mark(&self, role: GroupRole) -> String {
        let ns = self.metadata.namespace.as_deref().unwrap_or("default");
        let name = self.metadata.name.as_deref().unwrap_or_default();
        format!("catalogsync:{ns}/{name}/{}", role.as_str())
    }

    /// Whether groups without the ownership mark may be adopted.
    pub fn adopts_existing_groups(&self) -> bool {
        self.spec
            .provisioning
            .as_ref()
            .is_some_and(|p| p.adopt_existing_groups)
    }
}

/// The two groups an app owns in the identity domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupRole {
    /// Who should have an account in the app.
    Grant,
    /// Whose account in the app is linked.
    Record,
}

impl GroupRole {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupRole::Grant => "grant",
            GroupRole::Record => "record",
        }
    }
}

/// A test app `team-a/slack` with `provisioning` as its `spec.provisioning`.
#[cfg(test)]
pub(crate) fn test_app(provisioning: serde_json::Value) -> CatalogApp {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "catalogsync.io/v1alpha1",
        "kind": "CatalogApp",
        "metadata": {"name": "slack", "namespace": "team-a"},
        "spec": {
            "identityDomainRef": {"name": "corp"},
            "connection": {"url": "https://x", "auth": {"bearerToken": {"secretRef": {"name": "s", "key": "t"}}}},
            "provisioning": provisioning
        }
    }))
    .expect("a valid CatalogApp")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(grant_group: Option<&str>) -> CatalogApp {
        match grant_group {
            Some(g) => test_app(serde_json::json!({"enabled": true, "grantGroup": g})),
            None => test_app(serde_json::json!({"enabled": true})),
        }
    }

    #[test]
    fn grant_group_defaults_to_namespace_and_name() {
        assert_eq!(app(None).grant_group_name(), "catalogsync-team-a-slack");
        assert_eq!(
            app(Some("  ")).grant_group_name(),
            "catalogsync-team-a-slack"
        );
        assert_eq!(app(Some("slack-users")).grant_group_name(), "slack-users");
    }
}
