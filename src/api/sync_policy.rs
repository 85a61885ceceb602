//! SyncPolicy: how and when to synchronize — schedule, matching rules, actions, limits.

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
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Max creates","type":"integer","jsonPath":".spec.limits.maxCreates"}"#,
    printcolumn = r#"{"name":"Max deletes","type":"integer","jsonPath":".spec.limits.maxDeletes"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SyncPolicySpec {
    /// Cron expression (five fields, UTC) for scheduled runs. Absent = on demand only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
}

fn default_matching() -> Vec<MatchRule> {
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

/// One matching rule: an attribute of the app account compared with an attribute of the user.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MatchRule {
    /// SCIM attribute path in the app, e.g. `userName` or `emails[primary eq true].value`.
    #[schemars(length(min = 1))]
    pub app_attribute: String,
    /// SCIM attribute path in the identity domain, e.g. `userName` or `emails.value`.
    #[schemars(length(min = 1))]
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
