//! Import (app → identity domain, "synchronization"): the direction's steps of the
//! [`pipeline`](super::pipeline). Lists the grant group, the domain users and the app
//! accounts; matches in memory and plans in full ([`crate::engine::plan::import`]); confirms
//! each deletion candidate against the app; the writes are in [`apply`].

mod apply;

use serde_json::Value;

use crate::api::{Counts, PlannedCounts, Stage};
use crate::engine::limits::{Allowances, LimitCheck};
use crate::engine::matching;
use crate::engine::plan::{self, ImportPlan, ImportPolicy};
use crate::engine::records::{Ids, Records};

use super::approval;
use super::confirm::confirm_deletions;
use super::error::RunError;
use super::extract::Rules;
use super::list::{self, Append};
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
    group_id: String,
    members: Ids,
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

    /// Lists the grant group, the domain users and the app accounts, both sides at once.
    async fn list(&self) -> Result<Listed, RunError> {
        let context = &self.context;
        let (group_id, members) = list::grant_group(&context.domain, &context.grant_group).await?;
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
            members = members.len(),
            "listed both sides"
        );
        Ok(Listed {
            group_id,
            members,
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
            candidates,
            &listed.users,
            context.parallelism,
            || context.tracker.advance(1),
        );
        let Some((confirmed, still_there)) = context.until_stopped(confirm).await? else {
            return Ok(None);
        };
        plan.deletions = confirmed;
        plan.counts.already_linked += still_there as i64;
        Ok(Some(Planned { listed, plan }))
    }

    fn report(&self, p: &Planned) -> PlanReport {
        PlanReport {
            counts: p.plan.counts.clone(),
            planned: p.plan.planned(),
            items: p.plan.items(&p.listed.accounts, &p.listed.users),
            digest: approval::digest(p.plan.changes(&p.listed.accounts, &p.listed.users)),
        }
    }

    fn log_plan(&self, counts: &Counts, planned: &PlannedCounts, check: &LimitCheck) {
        tracing::info!(
            links = planned.links,
            creates = planned.creates,
            deletes = planned.deletes,
            already_linked = counts.already_linked,
            unmatched = counts.unmatched,
            disputed = counts.disputed,
            limit = ?check,
            "plan computed"
        );
    }

    async fn apply(&self, p: &Planned, allowed: &Allowances, writes: &Writes) {
        apply::Applier::new(self, &p.listed, allowed, writes)
            .apply(&p.plan)
            .await;
    }
}

impl ImportRun {
    /// The plan before confirmation: each account matched against the users, each member
    /// of the grant group looked up once (for the classification and the plan alike).
    fn match_and_plan(&self, listed: &Listed) -> ImportPlan {
        let index = matching::Index::build(&listed.users, &self.rules.case_sensitive);
        let member_users: Vec<Option<u32>> =
            listed.members.iter().map(|m| index.user_by_id(m)).collect();
        let mut is_member = vec![false; listed.users.len()];
        for &u in member_users.iter().flatten() {
            is_member[u as usize] = true;
        }
        let classification = matching::classify(&listed.accounts, &index, &is_member);
        plan::import(
            &listed.accounts,
            listed.members.iter().zip(member_users.iter().copied()),
            &classification,
            self.policy,
        )
    }
}
