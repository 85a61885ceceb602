//! The Provision pipeline (identity domain → app): list the domain users and the app
//! accounts once, plan in full, check `spec.provisioning.limits`, then apply with bounded
//! parallelism, each create and delete under its budget.

use std::collections::HashSet;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::api::{Operation, Stage};
use crate::engine::limits::{self, Budget};
use crate::engine::plan::provision::{
    self as provision_plan, ProvAccount, ProvUser, ProvisionPlan,
};
use crate::scim::ScimError;
use crate::scim::model::{PatchOp, USERS};
use crate::scim::path::quote;

use super::import::{Collect, Common, ImportError, grant_group, list_side};
use super::mapping::Mappings;
use super::outcome::Observed;
use super::writes::{Writes, certainly_not_applied};

/// Everything a Provision run needs.
pub struct ProvisionRun {
    pub c: Common,
    pub mappings: Mappings,
    pub operations: Vec<Operation>,
    /// The app has no inactive state (its catalog entry): deactivating deletes.
    pub deactivate_deletes: bool,
}

/// Runs a Provision; the tracker's counts are final when it returns.
pub async fn run(r: &ProvisionRun) -> Result<Observed, ImportError> {
    let mut observed = Observed::new(&r.c.timeout, r.c.max_failure_percent);
    r.c.tracker.stage(Stage::Listing, 0);
    let listed = tokio::select! {
        l = list(r) => l?,
        _ = r.c.stop.stopped() => return Err(ImportError::Stopped),
    };
    let (group_members, users, accounts) = listed;
    let member_set: HashSet<&str> = group_members.iter().collect();
    let domain_ids: HashSet<String> = users.iter().map(|u| u.id.clone()).collect();
    let members: Vec<ProvUser> = users
        .into_iter()
        .filter(|u| member_set.contains(u.id.as_str()))
        .collect();
    r.c.tracker.stage(Stage::Planning, 0);
    let plan = provision_plan::provision(&members, &domain_ids, &accounts, &r.operations);
    drop(domain_ids);
    let planned = plan.planned();
    let items = plan.items(&members, &accounts);
    let check =
        r.c.tracker
            .publish_plan(&plan.counts, &planned, items, r.c.limits.as_ref());
    tracing::info!(
        creates = planned.creates,
        updates = planned.updates,
        deletes = planned.deletes,
        not_allowed = plan.counts.not_allowed,
        limit = ?check,
        "provisioning plan computed"
    );
    if !observed.proceed(r.c.mode, check) {
        return Ok(observed);
    }
    let (max_creates, max_deletes) = limits::limits_of(r.c.limits.as_ref());
    let cap = |n: usize, m: Option<u64>| m.map_or(n, |m| n.min(m as usize));
    let total = cap(plan.creates.len(), max_creates)
        + plan.updates.len()
        + cap(plan.deactivations.len() + plan.deletions.len(), max_deletes);
    r.c.tracker.stage(Stage::Applying, total as u64);
    let a = Applier {
        r,
        members: &members,
        accounts: &accounts,
        creates: Budget::new(max_creates),
        deletes: Budget::new(max_deletes),
        w: Writes::new(
            r.c.tracker.clone(),
            r.c.stop.clone(),
            r.c.max_failure_percent,
        ),
    };
    a.apply(&plan).await;
    observed.budget_refused = a.creates.was_refused() || a.deletes.was_refused();
    observed.stopped = r.c.stop.reason();
    Ok(observed)
}

type Listed = (crate::engine::records::Ids, Vec<ProvUser>, Vec<ProvAccount>);

async fn list(r: &ProvisionRun) -> Result<Listed, ImportError> {
    let (_, members) = grant_group(&r.c.domain, &r.c.grant_group).await?;
    let totals = std::sync::Mutex::new((0, 0));
    let domain_attrs = r.mappings.domain_attributes();
    let app_attrs = r.mappings.app_attributes();
    let (mut users, mut accounts) = (Vec::new(), Vec::new());
    let (u, a) = tokio::join!(
        list_side(
            &r.c.tracker,
            &r.c.domain,
            &domain_attrs,
            &totals,
            0,
            Collect(&mut users, |v: &Value| r.mappings.user(v)),
        ),
        list_side(
            &r.c.tracker,
            &r.c.app,
            &app_attrs,
            &totals,
            1,
            Collect(&mut accounts, |v: &Value| r.mappings.account(v)),
        ),
    );
    u.map_err(ImportError::Domain)?;
    a.map_err(ImportError::App)?;
    Ok((members, users, accounts))
}

struct Applier<'a> {
    r: &'a ProvisionRun,
    members: &'a [ProvUser],
    accounts: &'a [ProvAccount],
    creates: Budget,
    deletes: Budget,
    w: Writes,
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
            .for_each_concurrent(self.r.c.parallelism.max(1), |w| async move {
                if self.w.stopping() {
                    return;
                }
                match w {
                    Work::Create(m) => self.create(m).await,
                    Work::Update(u) => self.update(u).await,
                    Work::Deactivate(a) => self.remove(a, self.r.deactivate_deletes).await,
                    Work::Delete(a) => self.remove(a, true).await,
                }
            })
            .await;
    }

    async fn create(&self, m: u32) {
        if !self.creates.try_reserve(1) {
            return;
        }
        let user = &self.members[m as usize];
        let body = self.r.mappings.new_account(user);
        match self.r.c.app.create(USERS, &body).await {
            Ok(_) => {
                self.w.tracker.update(|s| s.counts.created += 1);
                self.w.succeeded(1);
            }
            Err(e) if e.is_uniqueness() => self.create_conflict(user, &body, e).await,
            Err(e) => {
                if certainly_not_applied(&e) {
                    self.creates.release(1);
                }
                self.w.failed(1, "CreateAccount", &user.user_name, &e);
            }
        }
        self.w.tracker.advance(1);
    }

    /// A 409: an account with this userName exists. Ours (externalId = the user) means a
    /// create whose first answer was lost; anyone else's is adopted by the next run.
    async fn create_conflict(&self, user: &ProvUser, body: &Value, e: ScimError) {
        let name = body["userName"].as_str().unwrap_or_default();
        let filter = format!("userName eq {}", quote(name));
        let found = self
            .r
            .c
            .app
            .list(USERS, &["userName", "externalId"], Some(&filter))
            .await
            .map(|(v, _)| v)
            .unwrap_or_default();
        let ours = found
            .iter()
            .any(|a| a.get("externalId").and_then(Value::as_str) == Some(user.id.as_str()));
        if ours {
            self.w.tracker.update(|s| s.counts.created += 1);
            self.w.succeeded(1);
        } else {
            if !found.is_empty() {
                self.creates.release(1);
            }
            self.w.failed(1, "CreateAccount", &user.user_name, &e);
        }
    }

    async fn update(&self, u: &provision_plan::Update) {
        let user = &self.members[u.user as usize];
        let account = &self.accounts[u.account as usize];
        let patch = self
            .r
            .mappings
            .update(user, &u.mappings, u.active, u.set_external_id);
        match self.r.c.app.patch(USERS, &account.id, &patch, None).await {
            Ok(_) => {
                self.w.tracker.update(|s| s.counts.updated += 1);
                self.w.succeeded(1);
            }
            Err(e) => self.w.failed(1, "UpdateAccount", &account.user_name, &e),
        }
        self.w.tracker.advance(1);
    }

    async fn remove(&self, a: u32, delete: bool) {
        if !self.deletes.try_reserve(1) {
            return;
        }
        let account = &self.accounts[a as usize];
        let (action, result) = if delete {
            (
                "DeleteAccount",
                self.r
                    .c
                    .app
                    .delete(USERS, &account.id, None)
                    .await
                    .map(|_| ()),
            )
        } else {
            let op = PatchOp::new(vec![PatchOp::replace("active", json!(false))]);
            (
                "DeactivateAccount",
                self.r
                    .c
                    .app
                    .patch(USERS, &account.id, &op, None)
                    .await
                    .map(|_| ()),
            )
        };
        match result {
            Ok(()) => {
                self.w.tracker.update(|s| s.counts.deleted += 1);
                self.w.succeeded(1);
            }
            Err(e) => {
                if certainly_not_applied(&e) {
                    self.deletes.release(1);
                }
                self.w.failed(1, action, &account.user_name, &e);
            }
        }
        self.w.tracker.advance(1);
    }
}
