//! Import (app → identity domain, "synchronization"): the direction's steps of the
//! [`pipeline`](super::pipeline). Lists the app's grant and record groups, the domain users
//! and the app accounts; matches in memory and plans in full from the state table
//! ([`crate::engine::plan::import`]); confirms each deletion candidate against the app; the
//! writes are in [`apply`].

mod apply;
mod removals;

pub(crate) use apply::MEMBERS_PER_CALL;

use std::collections::HashSet;

use serde_json::Value;

use crate::api::{Counts, PlannedCounts, Stage};
use crate::engine::approval::Change;
use crate::engine::limits::{Allowances, LimitCheck};
use crate::engine::matching;
use crate::engine::plan::{self, Deletion, ImportPlan, ImportPolicy};
use crate::engine::records::Records;
use crate::engine::state::Members;

use super::confirm::confirm_deletions;
use super::error::RunError;
use super::extract::Rules;
use super::list::{self, Append, Groups};
use super::pipeline::{Context, PlanReport, Stages};
use super::writes::Writes;

/// Everything an Import run needs.
pub struct ImportRun {
    pub context: Context,
    pub rules: Rules,
    pub policy: ImportPolicy,
}

/// What the listing stage gathered.
pub struct Listed {
    groups: Groups,
    users: Records,
    accounts: Records,
}

/// The confirmed plan, with the listing it points into.
pub struct Planned {
    listed: Listed,
    plan: ImportPlan,
}

impl Stages for ImportRun {
    type Listed = Listed;
    type Planned = Planned;

    fn context(&self) -> &Context {
        &self.context
    }

    /// Lists the app's groups, the domain users and the app accounts, both sides at once.
    async fn list(&self) -> Result<Listed, RunError> {
        let context = &self.context;
        let groups = list::groups(&context.domain, &context.catalog_app).await?;
        let rules = self.rules.app.len();
        let mut users = Records::new(rules, 0);
        let mut accounts = Records::new(rules, self.rules.import.len());
        list::both_sides(
            context,
            &self.rules.domain_attributes(),
            Append(&mut users, |v: &Value, out: &mut Records| {
                self.rules.domain_user(v).map(|u| out.push_user(&u))
            }),
            &self.rules.app_attributes(),
            Append(&mut accounts, |v: &Value, out: &mut Records| {
                self.rules.app_account(v).map(|a| out.push_account(&a))
            }),
        )
        .await?;
        tracing::info!(
            accounts = accounts.len(),
            users = users.len(),
            granted = groups.grants.len(),
            recorded = groups.records.len(),
            "listed both sides"
        );
        Ok(Listed {
            groups,
            users,
            accounts,
        })
    }

    /// Pure matching and planning, then reads only for the deletion candidates.
    async fn plan(&self, listed: Listed) -> Result<Option<Planned>, RunError> {
        let context = &self.context;
        let mut plan = self.match_and_plan(&listed);
        context
            .tracker
            .stage(Stage::Planning, plan.deletions.len() as u64);
        let candidates = std::mem::take(&mut plan.deletions);
        let confirm = confirm_deletions(
            &context.domain,
            &context.app,
            &self.rules,
            candidates.clone(),
            &listed.users,
            context.parallelism,
            || context.tracker.advance(1),
        );
        let Some((confirmed, _)) = context.until_stopped(confirm).await? else {
            return Ok(None);
        };
        count_still_there(&mut plan.counts, &candidates, &confirmed);
        plan.deletions = confirmed;
        Ok(Some(Planned { listed, plan }))
    }

    fn report(&self, p: &Planned) -> PlanReport {
        PlanReport {
            counts: p.plan.counts.clone(),
            planned: p.plan.planned(),
            items: p.plan.items(&p.listed.accounts, &p.listed.users),
        }
    }

    fn changes<'a>(&'a self, p: &'a Planned) -> impl Iterator<Item = Change> + 'a {
        p.plan.changes(&p.listed.accounts, &p.listed.users)
    }

    fn log_plan(&self, counts: &Counts, planned: &PlannedCounts, check: &LimitCheck) {
        tracing::info!(
            links = planned.links,
            creates = planned.creates,
            deletes = planned.deletes,
            already_linked = counts.already_linked,
            unmatched = counts.unmatched,
            disputed = counts.disputed,
            revoked = counts.revoked,
            inactive = counts.inactive,
            pending_provisioning = counts.pending_provisioning,
            limit = ?check,
            "plan computed"
        );
    }

    async fn apply(&self, p: Planned, allowed: &Allowances, writes: &Writes) {
        let Planned { listed, plan } = p;
        let applier = apply::Applier::new(self, &listed, allowed, writes);
        applier.apply(&plan).await;
        let removals = removals::Removals {
            context: &self.context,
            grant_id: listed.groups.grant_id.clone(),
            record_id: listed.groups.record_id.clone(),
            allowed,
            writes,
            pending: applier.into_removals(),
        };
        // The listing and plan are tens of megabytes at 100,000 accounts; the removals
        // read and rewrite whole groups: not both at once.
        drop((plan, listed));
        removals.flush().await;
    }
}

impl ImportRun {
    /// The plan before confirmation: each account matched against the users, each member
    /// of both groups looked up once.
    fn match_and_plan(&self, listed: &Listed) -> ImportPlan {
        let index = matching::Index::build(&listed.users, &self.rules.case_sensitive);
        let members = Members::new(&listed.groups.grants, &listed.groups.records, &index);
        let classification = matching::classify(&listed.accounts, &index);
        plan::import(
            &listed.accounts,
            &listed.users,
            &members,
            &classification,
            self.policy,
        )
    }
}

/// Deletion candidates whose account the confirmation found after all (the listing missed
/// it) are app accounts too: linked when granted, revoked when not.
fn count_still_there(counts: &mut Counts, candidates: &[Deletion], confirmed: &[Deletion]) {
    let gone: HashSet<&str> = confirmed.iter().map(|d| d.user_id.as_str()).collect();
    for d in candidates
        .iter()
        .filter(|d| !gone.contains(d.user_id.as_str()))
    {
        counts.app_accounts += 1;
        if d.granted {
            counts.already_linked += 1;
        } else {
            counts.revoked += 1;
        }
    }
}
