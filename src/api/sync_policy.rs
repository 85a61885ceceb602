//! SyncPolicy: how and when to synchronize — schedule, matching rules, actions, limits.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, ResourceRequirements, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Limits, conditions_schema};

/// How and when catalog apps that reference this policy are synchronized.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "catalogsync.io",
    version = "v1alpha1",
    kind = "SyncPolicy",
    doc = "How and when to synchronize: schedule, matching rules, actions and limits.",
    namespaced,
    status = "SyncPolicyStatus",
    shortname = "sp",
    category = "catalogsync",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Max creates","type":"integer","jsonPath":".spec.limits.maxCreates"}"#,
    printcolumn = r#"{"name":"Max deletes","type":"integer","jsonPath":".spec.limits.maxDeletes"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SyncPolicySpec {
    /// Cron expression (five fields, UTC) for scheduled runs. Absent = on demand only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub schedule: Option<String>,
    /// Ordered matching rules: the first rule that finds exactly one user wins.
    #[serde(default = "default_matching")]
    #[schemars(length(min = 1, max = 16))]
    pub matching: Vec<MatchRule>,
    /// What to do with an account that matches exactly one user.
    #[serde(default)]
    pub on_exact_match: OnExactMatch,
    /// What to do with an account that matches no user.
    #[serde(default)]
    pub on_no_match: OnNoMatch,
    /// What to do when a recorded account no longer exists in the app.
    #[serde(default)]
    pub on_account_deleted: OnAccountDeleted,
    /// Maximum creates and deletes per run. Absent = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Concurrent write requests per SCIM service provider.
    #[serde(default = "default_parallelism")]
    #[schemars(range(min = 1, max = 256))]
    pub parallelism: i32,
    /// Maximum duration of a run (Go duration, e.g. `90m`, `1h`).
    #[serde(default = "default_timeout")]
    #[schemars(length(max = 64))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^([0-9]+(ms|s|m|h))+$')",
        "message": "timeout must be a duration such as 30m, 1h or 1h30m"
    }]))]
    pub timeout: String,
    /// Whether a new run may start while one is active: Forbid skips it, Replace cancels the active one.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// Succeeded runs to keep.
    #[serde(default = "default_history")]
    #[schemars(range(min = 0, max = 100))]
    pub successful_runs_history_limit: i32,
    /// Failed, cancelled and limit-exceeded runs to keep.
    #[serde(default = "default_history")]
    #[schemars(range(min = 0, max = 100))]
    pub failed_runs_history_limit: i32,
    /// A run whose failed changes exceed this percentage of its attempted changes
    /// (once at least 10 were attempted) stops and ends `Failed`.
    #[serde(default = "default_max_failure_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub max_failure_percent: i32,
    /// Settings of the pods of this policy's sync Jobs (resources, placement, extra
    /// environment). Each field set here wins over the controller's `--job-defaults`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobSettings>,
}

/// The matching rules of a policy that names none; also Provision's rules for an app without
/// a policy.
pub fn default_matching() -> Vec<MatchRule> {
    vec![MatchRule {
        app_attribute: "userName".into(),
        domain_attribute: "userName".into(),
        case_sensitive: false,
    }]
}
fn default_parallelism() -> i32 {
    8
}
fn default_timeout() -> String {
    "1h".into()
}
fn default_history() -> i32 {
    3
}
fn default_max_failure_percent() -> i32 {
    40
}

/// Prefix of the environment variables catalogsync sets in the sync Job itself.
pub const RESERVED_ENV_PREFIX: &str = "CATALOGSYNC_";

/// Settings of a sync Job's pod, as in a Pod spec. Used by `SyncPolicy.spec.job` and by
/// the controller's `--job-defaults` file. None of them can weaken the pod's
/// security: the restricted Pod Security level holds whatever is set here.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobSettings {
    /// CPU and memory of the `sync` container (as in a Pod). Size memory by the peak a run
    /// reports (`peak_rss_kib`). Merged per resource name: a resource named here takes its
    /// request and limit from here only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "!has(self.claims)",
        "message": "resources.claims is not supported: set requests and limits only"
    }]))]
    #[schemars(schema_with = "kubernetes_schema::<Option<ResourceRequirements>>")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels the pod must run on (as in a Pod). Merged per key with the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Taints the pod tolerates (as in a Pod). Replaces the defaults' list; `[]` clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[schemars(schema_with = "kubernetes_schema::<Option<Vec<Toleration>>>")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Node and pod affinity (as in a Pod). Replaces the defaults' affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "kubernetes_schema::<Option<Affinity>>")]
    pub affinity: Option<Affinity>,
    /// PriorityClass of the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub priority_class_name: Option<String>,
    /// Secrets to pull the Job's image with. Replaces the defaults' list; `[]` clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    #[schemars(schema_with = "kubernetes_schema::<Option<Vec<LocalObjectReference>>>")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    /// Extra environment variables of the `sync` container, e.g. `HTTPS_PROXY` and
    /// `NO_PROXY`. Merged by name with the defaults. Only `value` or
    /// `valueFrom.configMapKeyRef`; names starting with `CATALOGSYNC_` are catalogsync's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "env_schema")]
    pub env: Option<Vec<EnvVar>>,
}

/// The schema of Kubernetes' own type `T` without its descriptions (the field's doc
/// comment stays): Kubernetes documents them (`kubectl explain pod.spec`), and copied
/// here they would make the CRD several times larger.
fn kubernetes_schema<T: JsonSchema>(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.remove("description");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut schema = generator.subschema_for::<T>();
    if let Some(map) = schema.as_object_mut() {
        map.values_mut().for_each(strip);
    }
    schema
}

/// The env list's schema, with the admission rules on each variable (so a refusal
/// names the variable's index).
fn env_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = kubernetes_schema::<Option<Vec<EnvVar>>>(generator);
    schema.insert("maxItems".into(), 64.into());
    if let Some(items) = schema.get_mut("items").and_then(|i| i.as_object_mut()) {
        items.insert("x-kubernetes-validations".into(), serde_json::json!([
            {
                "rule": "!self.name.startsWith('CATALOGSYNC_')",
                "message": "env names starting with CATALOGSYNC_ are set by catalogsync itself (credentials, log format)"
            },
            {
                "rule": "!has(self.valueFrom) || (has(self.valueFrom.configMapKeyRef) && !has(self.valueFrom.secretKeyRef) && !has(self.valueFrom.fieldRef) && !has(self.valueFrom.resourceFieldRef))",
                "message": "env may use value or valueFrom.configMapKeyRef only: secretKeyRef would put other Secrets into the sync pod"
            }
        ]));
    }
    schema
}

impl JobSettings {
    /// Why these settings may not be used (the admission rules above, for settings that
    /// did not pass admission: the controller's defaults file, objects stored before).
    pub fn refusal(&self) -> Option<String> {
        if self.resources.as_ref().is_some_and(|r| r.claims.is_some()) {
            return Some("resources.claims is not supported: set requests and limits only".into());
        }
        self.env.iter().flatten().find_map(|e| {
            if e.name.starts_with(RESERVED_ENV_PREFIX) {
                return Some(format!(
                    "env {}: names starting with {RESERVED_ENV_PREFIX} are set by catalogsync itself",
                    e.name
                ));
            }
            let source = e.value_from.as_ref()?;
            let config_map_only = source.config_map_key_ref.is_some()
                && source.secret_key_ref.is_none()
                && source.field_ref.is_none()
                && source.resource_field_ref.is_none();
            (!config_map_only).then(|| {
                format!(
                    "env {}: only value or valueFrom.configMapKeyRef are allowed (secretKeyRef would put other Secrets into the sync pod)",
                    e.name
                )
            })
        })
    }
}

/// One matching rule: an attribute of the app account compared with an attribute of the user.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MatchRule {
    /// SCIM attribute path in the app, e.g. `userName` or `emails[primary eq true].value`.
    #[schemars(length(min = 1, max = 256))]
    pub app_attribute: String,
    /// SCIM attribute path in the identity domain, e.g. `userName` or `emails.value`.
    #[schemars(length(min = 1, max = 256))]
    pub domain_attribute: String,
    /// Compare values case-sensitively.
    #[serde(default)]
    pub case_sensitive: bool,
}

/// Reaction to an exact match.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OnExactMatch {
    /// Record the account against the matched user.
    #[default]
    Link,
    /// Leave it alone.
    Ignore,
}

/// Reaction to an account with no matching user.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OnNoMatch {
    /// Report it and leave it alone.
    #[default]
    Ignore,
    /// Create the user in the identity domain from the account's attributes (authoritative sync).
    CreateUser,
}

/// Reaction to a recorded account that was deleted in the app.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OnAccountDeleted {
    /// Remove the record (the grant-group membership).
    #[default]
    RemoveRecord,
    /// Remove the record and deactivate the user.
    DeactivateUser,
    /// Remove the record and delete the user.
    DeleteUser,
}

/// Whether runs may overlap.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Skip a new run while one is active.
    #[default]
    Forbid,
    /// Cancel the active run and start the new one.
    Replace,
}

/// Observed state of a SyncPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncPolicyStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions: `Ready` (reasons Valid, InvalidSchedule, InvalidMatching), and `Stalled`
    /// while invalid.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(yaml: &str) -> Option<String> {
        serde_yaml_ng::from_str::<JobSettings>(yaml)
            .unwrap()
            .refusal()
    }

    #[test]
    fn plain_values_and_config_map_keys_are_allowed() {
        assert_eq!(refusal("{}"), None);
        assert_eq!(
            refusal("env: [{name: HTTPS_PROXY, value: http://proxy:3128}]"),
            None
        );
        assert_eq!(
            refusal("env: [{name: NO_PROXY, valueFrom: {configMapKeyRef: {name: p, key: k}}}]"),
            None
        );
    }

    #[test]
    fn catalogsync_names_secret_refs_and_claims_are_refused() {
        let why = refusal("env: [{name: CATALOGSYNC_APP_TOKEN, value: x}]").unwrap();
        assert!(why.contains("CATALOGSYNC_APP_TOKEN"), "{why}");
        let why = refusal("env: [{name: X, valueFrom: {secretKeyRef: {name: other, key: k}}}]");
        assert!(
            why.unwrap()
                .contains("env X: only value or valueFrom.configMapKeyRef")
        );
        let why = refusal("env: [{name: X, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]");
        assert!(why.is_some());
        let why = refusal("resources: {claims: [{name: gpu}]}").unwrap();
        assert!(why.contains("claims"), "{why}");
    }
}
