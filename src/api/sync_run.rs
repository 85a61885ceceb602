//! SyncRun: one synchronization or provisioning run, executed by a Kubernetes Job.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Counts, LocalRef, PlannedCounts, Progress, conditions_schema};

/// Set by the controller on a run it cancels (app suspended, direction turned off,
/// replaced), with the reason: the run's pod, stopped next, then ends `Cancelled`, not
/// `Interrupted`.
pub const CANCEL_ANNOTATION: &str = "catalogsync.io/cancelled";

/// One run against one catalog app. Its spec is immutable; its status is written by the
/// Job that executes it and, for outcomes the Job cannot report, by the controller.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "catalogsync.io",
    version = "v1alpha1",
    kind = "SyncRun",
    doc = "One synchronization (Import) or provisioning (Provision) run of a catalog app, executed by a Kubernetes Job.",
    namespaced,
    status = "SyncRunStatus",
    shortname = "sr",
    category = "catalogsync",
    printcolumn = r#"{"name":"App","type":"string","jsonPath":".spec.appRef.name"}"#,
    printcolumn = r#"{"name":"Direction","type":"string","jsonPath":".spec.direction"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Progress","type":"integer","jsonPath":".status.progress.percent","description":"Percent of the current stage"}"#,
    printcolumn = r#"{"name":"Linked","type":"integer","jsonPath":".status.counts.linked"}"#,
    printcolumn = r#"{"name":"Created","type":"integer","jsonPath":".status.counts.created"}"#,
    printcolumn = r#"{"name":"Deleted","type":"integer","jsonPath":".status.counts.deleted"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self == oldSelf",
    "message": "SyncRun spec is immutable once created"
}, {
    "rule": "!has(self.approvedPlan) || !has(self.mode) || self.mode == 'Apply'",
    "message": "approvedPlan applies a plan: mode must be Apply"
}]))]
pub struct SyncRunSpec {
    /// The CatalogApp (same namespace) to run against.
    pub app_ref: LocalRef,
    /// Import (synchronization, app → identity domain) or Provision (identity domain → app).
    #[serde(default)]
    pub direction: Direction,
    /// Apply changes, or Plan: compute and report them, change nothing.
    #[serde(default)]
    pub mode: Mode,
    /// What started the run.
    #[serde(default)]
    pub trigger: Trigger,
    /// The plan a person approved (the `status.planDigest` of a Plan run): the run applies
    /// exactly that plan, its limits lifted to the plan's size, if it still computes the
    /// same plan; otherwise it ends Failed with reason PlanChanged and changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_plan: Option<ApprovedPlan>,
}

/// An approved plan, by its digest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovedPlan {
    /// The approved plan's digest, `sha256:` and 64 hex digits, as a Plan run reported it
    /// in `status.planDigest`.
    #[schemars(pattern(r"^sha256:[0-9a-f]{64}$"))]
    pub digest: String,
}

/// Which way a run goes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Direction {
    /// Synchronization: import the app's accounts into the identity domain.
    #[default]
    Import,
    /// Provisioning: make the app's accounts follow the grant group.
    Provision,
}

/// Whether a run changes anything.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Mode {
    /// Compute the plan, check the limits, apply.
    #[default]
    Apply,
    /// Dry run: compute and report the plan; change nothing.
    Plan,
}

/// What started a run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Trigger {
    /// The schedule.
    Schedule,
    /// The `catalogsync.io/requested-at` annotation.
    Requested,
    /// Created by hand.
    #[default]
    Manual,
}

/// Lifecycle phase of a run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum RunPhase {
    /// Created; its Job has not started yet.
    #[default]
    Pending,
    /// The Job is working.
    Running,
    /// Finished; every planned change was applied (or, for a plan, computed).
    Succeeded,
    /// Stopped by an error.
    Failed,
    /// Stopped on a limit: with Abort nothing was applied; with ApplyUpToLimit exactly the limit.
    LimitExceeded,
    /// Stopped because synchronization was turned off, the app suspended or the run replaced.
    Cancelled,
}

impl RunPhase {
    /// True once the run can no longer change.
    pub fn is_finished(self) -> bool {
        !matches!(self, RunPhase::Pending | RunPhase::Running)
    }
}

/// The stage of an active run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Stage {
    /// Listing both sides.
    Listing,
    /// Matching and computing the plan.
    Planning,
    /// Applying the plan.
    Applying,
    /// Done.
    Done,
}

/// One item of a plan or one failure, for status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunItem {
    /// The action: Link, CreateUser, RemoveRecord, DeactivateUser, DeleteUser, CreateAccount, …
    pub action: String,
    /// The account or user, by its userName (or id when it has none).
    pub subject: String,
    /// Why, for failures and disputes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A write the run's pod was about to make, or made without counting it yet: the run's
/// write-ahead journal. A pod writes an entry before the write starts and removes it in the
/// same status write that counts the write, so after a kill a retried pod looks each entry
/// up on the servers and counts what happened (exact counts across attempts).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InFlightWrite {
    /// CreateUser (by the account's id), DeactivateUser, DeleteUser, RemoveRecord (by the
    /// user's id), CreateAccount, RecreateAccount (by the user's id), DeactivateAccount,
    /// DeleteAccount (by the account's id).
    pub action: String,
    /// The id the action is looked up by.
    pub id: String,
    /// A new account's userName: how a create is looked up in the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
}

/// The limits a run was held to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedLimits {
    /// Maximum creates; absent = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_creates: Option<i64>,
    /// Maximum deletes; absent = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deletes: Option<i64>,
    /// Maximum creates and deletes together; absent = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_changes: Option<i64>,
}

/// Observed state of a SyncRun.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncRunStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RunPhase>,
    /// Stage of an active run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// Name of the Job executing the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// When the run started working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Progress of the current stage, updated every second or two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// Counts so far (final once the run ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
    /// The creates and deletes the plan contains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned: Option<PlannedCounts>,
    /// The limits the run was held to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<AppliedLimits>,
    /// The digest of the whole plan (`sha256:…`): what `spec.approvedPlan.digest` of a later
    /// run approves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_digest: Option<String>,
    /// The first items of each kind in the plan (for Plan runs and limit reports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plan_items: Vec<RunItem>,
    /// The first failed items, with their reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<RunItem>,
    /// Writes started and not yet counted (the write-ahead journal, see [`InFlightWrite`]);
    /// once the run ended, only writes whose outcome stayed unknown (answer lost, lookup
    /// failed): they may have happened and are not in the counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_flight: Vec<InFlightWrite>,
    /// Conditions: Complete, Failed, LimitExceeded, Cancelled, Warning (True when the run
    /// found something it could not act on, e.g. unresolved grant-group members), and
    /// kstatus's Ready (True once Succeeded), Reconciling (True while Pending or Running) and
    /// Stalled (True once Failed, LimitExceeded or Cancelled), always present.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// One-line outcome or current activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
