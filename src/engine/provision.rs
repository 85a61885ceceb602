//! Provision (identity domain → app): the direction's steps of the
//! [`pipeline`](super::pipeline). Lists the grant group's members, the domain users and the
//! app accounts; plans in full ([`crate::engine::plan::provision`]); creates, updates,
//! deactivates and deletes accounts with bounded parallelism, each create and delete
//! within its allowance of `spec.provisioning.limits`.

use std::collections::HashSet;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::api::{Counts, Operation, PlannedCounts, Stage};
use crate::engine::limits::{Allowances, Kind, LimitCheck};
use crate::engine::plan::provision::{
    self as provision_plan, ProvisionAccount, ProvisionPlan, ProvisionUser,
};
use crate::engine::records::Ids;
use crate::scim::ScimError;
use crate::scim::model::{PatchOp, USERS};
use crate::scim::path::quote;

use super::approval;
use super::error::RunError;
use super::list::{self, Collect};
use super::mapping::Mappings;
use super::pipeline::{Context, PlanReport, Stages};
use super::writes::{Writes, certainly_not_applied};

/// Everything a Provision run needs.
pub struct ProvisionRun {
    pub context: Context,
    pub mappings: Mappings,
    pub operations: Vec<Operation>,
    /// The app has no inactive state (its catalog entry): deactivating deletes.
    pub deactivate_deletes: bool,
}

/// What the listing stage gathered.
pub struct Listed {
    group_members: Ids,
    users: Vec<ProvisionUser>,
    accounts: Vec<ProvisionAccount>,
}

/// The plan, with the members and accounts it points into.
pub struct Planned {
    members: Vec<ProvisionUser>,
    accounts: Vec<ProvisionAccount>,
    plan: ProvisionPlan,
}

impl Stages for ProvisionRun {
    type Listed = Listed;
    type Planned = Planned;

    fn context(&self) -> &Context {
        &self.context
    }

    async fn list(&self) -> Result<Listed, RunError> {
        let context = &self.context;
        let (_, group_members) = list::grant_group(&context.domain, &context.grant_group).await?;
        let (mut users, mut accounts) = (Vec::new(), Vec::new());
        list::both_sides(
            context,
            &self.mappings.domain_attributes(),
            Collect(&mut users, |v: &Value| self.mappings.user(v)),
            &self.mappings.app_attributes(),
            Collect(&mut accounts, |v: &Value| self.mappings.account(v)),
        )
        .await?;
        Ok(Listed {
            group_members,
            users,
            accounts,
        })
    }

    async fn plan(&self, listed: Listed) -> Result<Option<Planned>, RunError> {
        let Listed {
            group_members,
            users,
            accounts,
        } = listed;
        let member_set: HashSet<&str> = group_members.iter().collect();
        // Every domain user's id, to tell a revoked user's account from one never provisioned.
        let domain_ids: HashSet<String> = users.iter().map(|u| u.id.clone()).collect();
        let members: Vec<ProvisionUser> = users
            .into_iter()
            .filter(|u| member_set.contains(u.id.as_str()))
            .collect();
        self.context.tracker.stage(Stage::Planning, 0);
        let plan = provision_plan::provision(&members, &domain_ids, &accounts, &self.operations);
        Ok(Some(Planned {
            members,
            accounts,
            plan,
        }))
    }

    fn report(&self, p: &Planned) -> PlanReport {
        PlanReport {
            counts: p.plan.counts.clone(),
            planned: p.plan.planned(),
            items: p.plan.items(&p.members, &p.accounts),
            digest: approval::digest(p.plan.changes(&p.members, &p.accounts)),
        }
    }

    fn log_plan(&self, counts: &Counts, planned: &PlannedCounts, check: &LimitCheck) {
        tracing::info!(
            creates = planned.creates,
            updates = planned.updates,
            deletes = planned.deletes,
            not_allowed = counts.not_allowed,
            limit = ?check,
            "provisioning plan computed"
        );
    }

    async fn apply(&self, p: &Planned, allowed: &Allowances, writes: &Writes) {
        let applier = Applier {
            run: self,
            members: &p.members,
            accounts: &p.accounts,
            allowed,
            writes,
        };
        applier.apply(&p.plan).await;
    }
}

struct Applier<'a> {
    run: &'a ProvisionRun,
    members: &'a [ProvisionUser],
    accounts: &'a [ProvisionAccount],
    allowed: &'a Allowances,
    writes: &'a Writes,
}

enum Work<'p> {
    Create(u32),
    Update(&'p provision_plan::Update),
    Deactivate(u32),
    Delete(u32),
}

impl Applier<'_> {
    async fn apply(&self, plan: &ProvisionPlan) {
        let work = plan
            .creates
            .iter()
            .map(|&m| Work::Create(m))
            .chain(plan.updates.iter().map(Work::Update))
            .chain(plan.deactivations.iter().map(|&a| Work::Deactivate(a)))
            .chain(plan.deletions.iter().map(|&a| Work::Delete(a)));
        futures::stream::iter(work)
            .for_each_concurrent(self.run.context.parallelism.max(1), |work| async move {
                if self.writes.stopping() {
                    return;
                }
                match work {
                    Work::Create(m) => self.create(m).await,
                    Work::Update(u) => self.update(u).await,
                    Work::Deactivate(a) => self.remove(a, self.run.deactivate_deletes).await,
                    Work::Delete(a) => self.remove(a, true).await,
                }
            })
            .await;
    }

    async fn create(&self, m: u32) {
        if !self.allowed.try_reserve(Kind::Create, 1) {
            return;
        }
        let user = &self.members[m as usize];
        let body = self.run.mappings.new_account(user);
        match self.run.context.app.create(USERS, &body).await {
            Ok(_) => {
                self.writes.tracker.update(|s| s.counts.created += 1);
                self.writes.succeeded(1);
            }
            Err(e) if e.is_uniqueness() => self.create_conflict(user, &body, e).await,
            Err(e) => {
                if certainly_not_applied(&e) {
                    self.allowed.release(Kind::Create, 1);
                }
                self.writes.failed(1, "CreateAccount", &user.user_name, &e);
            }
        }
        self.writes.tracker.advance(1);
    }

    /// A 409: an account with this userName exists. Ours (externalId = the user) means a
    /// create whose first answer was lost; anyone else's is adopted by the next run.
    async fn create_conflict(&self, user: &ProvisionUser, body: &Value, e: ScimError) {
        let name = body["userName"].as_str().unwrap_or_default();
        let filter = format!("userName eq {}", quote(name));
        let found = self
            .run
            .context
            .app
            .list(USERS, &["userName", "externalId"], Some(&filter))
            .await
            .map(|(v, _)| v)
            .unwrap_or_default();
        let ours = found
            .iter()
            .any(|a| a.get("externalId").and_then(Value::as_str) == Some(user.id.as_str()));
        if ours {
            self.writes.tracker.update(|s| s.counts.created += 1);
            self.writes.succeeded(1);
        } else {
            if !found.is_empty() {
                self.allowed.release(Kind::Create, 1);
            }
            self.writes.failed(1, "CreateAccount", &user.user_name, &e);
        }
    }

    async fn update(&self, u: &provision_plan::Update) {
        let user = &self.members[u.user as usize];
        let account = &self.accounts[u.account as usize];
        let patch = self
            .run
            .mappings
            .update(user, &u.mappings, u.active, u.set_external_id);
        match self
            .run
            .context
            .app
            .patch(USERS, &account.id, &patch, None)
            .await
        {
            Ok(_) => {
                self.writes.tracker.update(|s| s.counts.updated += 1);
                self.writes.succeeded(1);
            }
            Err(e) => self
                .writes
                .failed(1, "UpdateAccount", &account.user_name, &e),
        }
        self.writes.tracker.advance(1);
    }

    async fn remove(&self, a: u32, delete: bool) {
        if !self.allowed.try_reserve(Kind::Delete, 1) {
            return;
        }
        let account = &self.accounts[a as usize];
        let (action, result) = if delete {
            (
                "DeleteAccount",
                self.run
                    .context
                    .app
                    .delete(USERS, &account.id, None)
                    .await
                    .map(|_| ()),
            )
        } else {
            let op = PatchOp::new(vec![PatchOp::replace("active", json!(false))]);
            (
                "DeactivateAccount",
                self.run
                    .context
                    .app
                    .patch(USERS, &account.id, &op, None)
                    .await
                    .map(|_| ()),
            )
        };
        match result {
            Ok(()) => {
                self.writes.tracker.update(|s| s.counts.deleted += 1);
                self.writes.succeeded(1);
            }
            Err(e) => {
                if certainly_not_applied(&e) {
                    self.allowed.release(Kind::Delete, 1);
                }
                self.writes.failed(1, action, &account.user_name, &e);
            }
        }
        self.writes.tracker.advance(1);
    }
}
