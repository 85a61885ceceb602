//! The sequence both directions run: list both sides once → plan in full → check the plan
//! against the limits → publish it → apply it (not in Plan mode, not when a limit aborts),
//! each create and delete within its allowance. A direction ([`super::import`],
//! [`super::provision`]) supplies its steps as [`Stages`]; the pipeline owns the order, the
//! stops, the limits and what the outcome decision observes.

use std::future::Future;

use crate::api::{CatalogApp, Counts, Limits, Mode, PlannedCounts, RunItem, Stage};
use crate::scim::ScimClient;

use super::approval::{self, Change};
use super::error::RunError;
use super::limits::{self, Allowances, LimitCheck};
use super::outcome::Observed;
use super::progress::{Checkpoint, Tracker};
use super::stop::Stop;
use super::writes::Writes;

/// What both directions' runs share: the two SCIM clients, the limits and settings of the
/// policy, and where progress and stops go.
pub struct Context {
    pub domain: ScimClient,
    pub app: ScimClient,
    pub limits: Option<Limits>,
    /// The digest of the plan a person approved (`spec.approvedPlan.digest`).
    pub approved_plan: Option<String>,
    pub parallelism: usize,
    pub mode: Mode,
    /// The run's app: its groups in the identity domain.
    pub catalog_app: CatalogApp,
    pub max_failure_percent: u32,
    pub timeout: String,
    pub tracker: Tracker,
    /// Where the start of the apply is recorded before its first write.
    pub checkpoint: Checkpoint,
    pub stop: Stop,
}

impl Context {
    /// Runs `step` unless the run stops first; `None` when it stopped (nothing in flight is
    /// a write: steps raced against a stop only read).
    pub async fn until_stopped<T>(
        &self,
        step: impl Future<Output = Result<T, RunError>>,
    ) -> Result<Option<T>, RunError> {
        tokio::select! {
            r = step => r.map(Some),
            _ = self.stop.stopped() => Ok(None),
        }
    }
}

/// What a plan shows before any write: the status's counts, planned writes and items.
pub struct PlanReport {
    pub counts: Counts,
    pub planned: PlannedCounts,
    pub items: Vec<RunItem>,
}

/// The steps of one direction.
pub(crate) trait Stages {
    /// What listing gathered.
    type Listed;
    /// The plan, with what applying it needs of the listing.
    type Planned;

    fn context(&self) -> &Context;

    /// Lists both sides (raced against a stop by the pipeline).
    async fn list(&self) -> Result<Self::Listed, RunError>;

    /// Plans in full; `None` when the run stopped while planning.
    async fn plan(&self, listed: Self::Listed) -> Result<Option<Self::Planned>, RunError>;

    /// The plan as the status shows it.
    fn report(&self, planned: &Self::Planned) -> PlanReport;

    /// Every write of the plan by SCIM ids and values (for the digest, and the log of a
    /// Plan run), one at a time: all of them at once are megabytes.
    fn changes<'a>(&'a self, planned: &'a Self::Planned) -> impl Iterator<Item = Change> + 'a;

    /// Logs the computed plan and its limit check.
    fn log_plan(&self, counts: &Counts, planned: &PlannedCounts, check: &LimitCheck);

    /// Makes the plan's writes, each create and delete within `allowed`, recording each
    /// outcome in `writes`.
    async fn apply(&self, planned: Self::Planned, allowed: &Allowances, writes: &Writes);
}

/// Runs one direction and returns what the outcome decision needs. The tracker's counts
/// are final when it returns.
pub(crate) async fn run(direction: &impl Stages) -> Result<Observed, RunError> {
    let context = direction.context();
    let mut observed = Observed::new(&context.timeout, context.max_failure_percent);
    context.tracker.stage(Stage::Listing, 0);
    let Some(listed) = context.until_stopped(direction.list()).await? else {
        observed.stopped = context.stop.reason();
        return Ok(observed);
    };
    let Some(planned) = direction.plan(listed).await? else {
        observed.stopped = context.stop.reason();
        return Ok(observed);
    };

    // The limits are checked against the whole plan, before any write.
    let report = direction.report(&planned);
    let plan_run = context.mode == Mode::Plan;
    let digest = approval::digest(direction.changes(&planned).inspect(|c| {
        if plan_run {
            log_change(c);
        }
    }));
    let limits = publish(context, &report, digest)?;
    let check = limits::check(
        report.planned.creates as u64,
        report.planned.deletes as u64,
        limits.as_ref(),
    );
    direction.log_plan(&report.counts, &report.planned, &check);
    if !observed.proceed(context.mode, check) {
        return Ok(observed);
    }

    let allowed = Allowances::new(limits.as_ref());
    context
        .tracker
        .stage(Stage::Applying, allowed.writes_to_apply(&report.planned));
    // On record before the first write: a retried pod of this run must not apply again
    // with fresh allowances (one run, one budget).
    context
        .checkpoint
        .save(&context.tracker)
        .await
        .map_err(|e| RunError::Unavailable(format!("recording the start of the apply: {e}")))?;
    let writes = Writes::new(
        context.tracker.clone(),
        context.stop.clone(),
        context.max_failure_percent,
    );
    direction.apply(planned, &allowed, &writes).await;
    // Nothing is in flight any more: what the journal still holds never started, or
    // failed and was counted as failed.
    super::journal::close(&context.tracker);
    observed.limit_reached = allowed.limit_reached();
    observed.stopped = context.stop.reason();
    Ok(observed)
}

/// Publishes the plan and its digest, and returns the limits the apply is held to: the
/// policy's, or an approved plan's size. A plan that is no longer the approved one is
/// shown, then refused before any write.
fn publish(
    context: &Context,
    report: &PlanReport,
    digest: String,
) -> Result<Option<Limits>, RunError> {
    let approved = context.approved_plan.as_deref();
    let limits = approval::limits_for(approved, &digest, &report.planned, context.limits.as_ref());
    context
        .tracker
        .publish_plan(&report.counts, &report.planned, report.items.clone());
    context.tracker.update(|s| s.plan_digest = Some(digest));
    let limits = limits?;
    if approved.is_some() {
        tracing::info!(
            ?limits,
            "the approved plan is unchanged: limits lifted to its size"
        );
        context
            .tracker
            .update(|s| s.limits = Some(limits::applied(limits.as_ref())));
    }
    Ok(limits)
}

/// A Plan run's whole plan in its Job's log: one JSON line per planned change, in the
/// plan's order (the status keeps only the first items of each kind).
fn log_change(c: &Change) {
    tracing::info!(
        target: "catalogsync::plan",
        action = c.action,
        id = %c.target,
        writes = %serde_json::Value::from(c.writes.clone()),
        "planned change"
    );
}
