//! Provision (identity domain → app): the direction's steps of the
//! [`pipeline`](super::pipeline). Lists the app's groups, the domain users and the app
//! accounts; matches them with the same rules as Import and plans in full from the state
//! table ([`crate::engine::plan::provision`]); creates, adopts, updates, deactivates and
//! deletes accounts with bounded parallelism, each create and delete within its allowance
//! of `spec.provisioning.limits`; then records what it created or adopted and removes the
//! records of deleted accounts. Provision writes the record group, never the grant group.

use std::sync::{Mutex, OnceLock};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::api::{Counts, InFlightWrite, Operation, PlannedCounts, Stage};
use crate::engine::approval::Change;
use crate::engine::limits::{Allowances, Kind, LimitCheck};
use crate::engine::matching::{self, Index, Situation};
use crate::engine::plan::provision::{
    self as provision_plan, Create, ProvisionAccount, ProvisionInputs, ProvisionPlan,
    ProvisionUser, Removal,
};
use crate::engine::progress::Bucket;
use crate::engine::records::{AppAccount, Records};
use crate::engine::state::Members;
use crate::scim::ScimError;
use crate::scim::model::{PatchOp, USERS};
use crate::scim::path::quote;

use super::error::RunError;
use super::extract::Rules;
use super::import::MEMBERS_PER_CALL;
use super::journal;
use super::list::{self, Collect, Groups};
use super::mapping::Mappings;
use super::pacing::RecordPacer;
use super::pipeline::{Context, PlanReport, Stages};
use super::writes::{Writes, certainly_not_applied, settle_removal};

/// The journal's action of a create: a recorded user's account is recreated.
fn create_action(c: &Create) -> &'static str {
    if c.recorded {
        "RecreateAccount"
    } else {
        "CreateAccount"
    }
}

/// The journal's (and the failures') action of a removal.
fn removal_action(delete: bool) -> &'static str {
    if delete {
        "DeleteAccount"
    } else {
        "DeactivateAccount"
    }
}

/// Creates per Bulk request: small enough that a stopping run's last requests end well
/// inside the halt deadline, large enough to save most round trips.
const BULK_CREATES: usize = 50;

/// Everything a Provision run needs.
pub struct ProvisionRun {
    pub context: Context,
    pub rules: Rules,
    pub mappings: Mappings,
    pub operations: Vec<Operation>,
    /// The app has no inactive state (its catalog entry): deactivating deletes.
    pub deactivate_deletes: bool,
    /// Synchronization is on: the app is authoritative for deletions.
    pub synchronization: bool,
}

/// One side's listing: what matching keeps and what the mappings read.
struct Side<R, M> {
    matching: Vec<R>,
    mapped: Vec<M>,
}

/// What the listing stage gathered.
pub struct Listed {
    groups: Groups,
    users: Records,
    accounts: Records,
    user_values: Vec<ProvisionUser>,
    account_values: Vec<ProvisionAccount>,
}

/// The plan, with the listing it points into.
pub struct Planned {
    listed: Listed,
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
        let groups = list::groups(&context.domain, &context.catalog_app).await?;
        let (mut users, mut accounts) = (Vec::new(), Vec::new());
        let both = |a: Vec<String>, b: Vec<String>| a.into_iter().chain(b).collect::<Vec<_>>();
        list::both_sides(
            context,
            &both(
                self.rules.domain_attributes(),
                self.mappings.domain_attributes(),
            ),
            Collect(&mut users, |v: &Value| {
                Some((self.rules.domain_user(v)?, self.mappings.user(v)?))
            }),
            &both(self.rules.app_attributes(), self.mappings.app_attributes()),
            Collect(&mut accounts, |v: &Value| {
                Some((self.rules.app_account(v)?, self.mappings.account(v)?))
            }),
        )
        .await?;
        let users = split(users);
        let accounts = split(accounts);
        let rules = self.rules.app.len();
        Ok(Listed {
            groups,
            users: Records::of_users(rules, &users.matching),
            accounts: Records::of_accounts(rules, 0, &accounts.matching),
            user_values: users.mapped,
            account_values: accounts.mapped,
        })
    }

    async fn plan(&self, listed: Listed) -> Result<Option<Planned>, RunError> {
        self.context.tracker.stage(Stage::Planning, 0);
        let index = Index::build(&listed.users, &self.rules.case_sensitive);
        let members = Members::new(&listed.groups.grants, &listed.groups.records, &index);
        let classification = matching::classify(&listed.accounts, &index);
        let plan = provision_plan::provision(&ProvisionInputs {
            users: &listed.user_values,
            accounts: &listed.account_values,
            members: &members,
            classification: &classification,
            operations: &self.operations,
            synchronization: self.synchronization,
            external_id_writable: self.mappings.external_id_writable,
            create_only: &self.mappings.create_only,
        });
        drop(index);
        Ok(Some(Planned { listed, plan }))
    }

    fn report(&self, p: &Planned) -> PlanReport {
        let (users, accounts) = (&p.listed.user_values, &p.listed.account_values);
        PlanReport {
            counts: p.plan.counts.clone(),
            planned: p.plan.planned(),
            items: p.plan.items(users, accounts),
        }
    }

    fn changes<'a>(&'a self, p: &'a Planned) -> impl Iterator<Item = Change> + 'a {
        let (users, accounts) = (&p.listed.user_values, &p.listed.account_values);
        p.plan.changes(users, accounts)
    }

    fn log_plan(&self, counts: &Counts, planned: &PlannedCounts, check: &LimitCheck) {
        tracing::info!(
            creates = planned.creates,
            adoptions = planned.links,
            updates = planned.updates,
            deletes = planned.deletes,
            pending_provisioning = counts.pending_provisioning,
            revoked = counts.revoked,
            disputed = counts.disputed,
            not_allowed = counts.not_allowed,
            limit = ?check,
            "provisioning plan computed"
        );
    }

    async fn apply(&self, p: Planned, allowed: &Allowances, writes: &Writes) {
        let applier = Applier {
            run: self,
            listed: &p.listed,
            allowed,
            writes,
            index: OnceLock::new(),
            records: Mutex::new(Vec::new()),
            removals: Mutex::new(Vec::new()),
        };
        applier.apply(&p.plan).await;
    }
}

/// Pairs from one listing into two columns.
fn split<R, M>(pairs: Vec<(R, M)>) -> Side<R, M> {
    let (matching, mapped) = pairs.into_iter().unzip();
    Side { matching, mapped }
}

/// A user to record after the parallel stage, and how its account came to be.
struct PendingRecord {
    user_id: String,
    subject: String,
    lands: Lands,
}

/// Where a recorded user's account is counted once its record is written.
#[derive(Clone, Copy)]
enum Lands {
    /// A listed account adopted: `linked` (and `updated` if it was written).
    Adopted { updated: bool },
    /// An account this run created for a user pending provisioning (counted when created).
    Created,
    /// An account the listing missed, found by a create's 409 and the rules.
    Found,
}

struct Applier<'a> {
    run: &'a ProvisionRun,
    listed: &'a Listed,
    allowed: &'a Allowances,
    writes: &'a Writes,
    /// The users' index, built at the first create conflict (most runs meet none).
    index: OnceLock<Index<'a>>,
    records: Mutex<Vec<PendingRecord>>,
    removals: Mutex<Vec<(String, String)>>,
}

/// A create with its new account's body, built once: the userName goes into the journal,
/// the body to the app.
struct NewAccount<'p> {
    create: &'p Create,
    body: Value,
}

enum Work<'p> {
    Create(NewAccount<'p>),
    /// Creates sent in Bulk requests.
    Creates(Vec<NewAccount<'p>>),
    Update(&'p provision_plan::Update),
    Deactivate(&'p Removal),
    Delete(&'p Removal),
}

impl Applier<'_> {
    async fn apply(&self, plan: &ProvisionPlan) {
        // Bulk where the app advertises it (and its catalog entry does not avoid it): 50
        // creates a request instead of one, which rate-limited apps count; 300 creates take
        // 25% less time on scim2-server, the same on scimmy (docs/interop.md).
        let bulk =
            plan.creates.len() > 1 && self.run.context.app.uses_bulk().await.unwrap_or(false);
        let (single, batched): (&[Create], &[Create]) = if bulk {
            (&[], &plan.creates)
        } else {
            (&plan.creates, &[])
        };
        // Bodies are built as the journal takes its chunks: a few hundred at a time.
        let new = |create| NewAccount {
            create,
            body: self.run.mappings.new_account(self.user(create.user)),
        };
        let work = batched
            .chunks(BULK_CREATES)
            .map(move |cs| Work::Creates(cs.iter().map(new).collect()))
            .chain(single.iter().map(move |c| Work::Create(new(c))))
            .chain(plan.updates.iter().map(Work::Update))
            .chain(plan.deactivations.iter().map(Work::Deactivate))
            .chain(plan.deletions.iter().map(Work::Delete));
        // On record before they start (the journal): a retried pod settles what a killed
        // one had in flight.
        let entries = |w: &Work| match w {
            Work::Create(n) => vec![self.entry(n)],
            Work::Creates(ns) => ns.iter().map(|n| self.entry(n)).collect(),
            Work::Update(_) => Vec::new(),
            Work::Deactivate(r) => vec![self.removal_entry(r, self.run.deactivate_deletes)],
            Work::Delete(r) => vec![self.removal_entry(r, true)],
        };
        let pacer = &RecordPacer::new();
        journal::ahead(&self.run.context, work, &entries)
            .for_each_concurrent(self.run.context.parallelism.max(1), |work| async move {
                if self.writes.stopping() {
                    return;
                }
                match work {
                    Work::Create(n) => self.create(&n).await,
                    Work::Creates(ns) => self.create_batch(&ns).await,
                    Work::Update(u) => self.update(u).await,
                    Work::Deactivate(r) => self.remove(r, self.run.deactivate_deletes).await,
                    Work::Delete(r) => self.remove(r, true).await,
                }
                // Records follow the writes in paced batches (see the Import's).
                let pending = self.records.lock().expect("records lock").len();
                pacer.flush_if_due(pending, || self.flush_records()).await;
            })
            .await;
        // Completing writes already made: also when stopping.
        self.flush_records().await;
        self.flush_removals().await;
    }

    fn user(&self, u: u32) -> &ProvisionUser {
        &self.listed.user_values[u as usize]
    }

    fn account(&self, a: u32) -> &ProvisionAccount {
        &self.listed.account_values[a as usize]
    }

    /// A create's journal entry: looked up by the new account's userName.
    fn entry(&self, n: &NewAccount) -> InFlightWrite {
        let name = n.body["userName"].as_str();
        journal::entry(create_action(n.create), &self.user(n.create.user).id, name)
    }

    /// A deactivation's or deletion's journal entry, by the account's id.
    fn removal_entry(&self, r: &Removal, delete: bool) -> InFlightWrite {
        journal::entry(removal_action(delete), &self.account(r.account).id, None)
    }

    fn push_record(&self, user: &ProvisionUser, lands: Lands) {
        self.records
            .lock()
            .expect("records lock")
            .push(PendingRecord {
                user_id: user.id.clone(),
                subject: user.user_name.clone(),
                lands,
            });
    }

    async fn create(&self, n: &NewAccount<'_>) {
        if !self.allowed.try_reserve(Kind::Create, 1) {
            return;
        }
        let result = self.run.context.app.create(USERS, &n.body).await.map(drop);
        self.settle_create(n.create, &n.body, result).await;
    }

    /// Creates in Bulk requests: each create within its allowance, as one by one; each
    /// outcome settled as a single create's. A whole request that failed may have been
    /// applied in part: its creates are looked up, as a create whose answer was lost.
    async fn create_batch(&self, ns: &[NewAccount<'_>]) {
        let mut sent = Vec::with_capacity(ns.len());
        for n in ns {
            if self.writes.stopping() || !self.allowed.try_reserve(Kind::Create, 1) {
                break;
            }
            sent.push(n);
        }
        if sent.is_empty() {
            return;
        }
        let bodies = sent.iter().map(|n| n.body.clone()).collect();
        match self.run.context.app.create_many(USERS, bodies).await {
            Ok(results) => {
                for (n, r) in sent.iter().zip(results) {
                    self.settle_create(n.create, &n.body, r.map(drop)).await;
                }
            }
            Err(e) => {
                let lost = ScimError::Protocol(format!("a Bulk request failed: {e}"));
                let whole = certainly_not_applied(&e);
                for n in &sent {
                    if whole {
                        self.allowed.release(Kind::Create, 1);
                        let user = &self.user(n.create.user).user_name;
                        self.writes.record_failed(1, "CreateAccount", user, &e);
                        self.writes.tracker.advance(1);
                    } else {
                        self.create_conflict(n.create, &n.body, &lost).await;
                        self.writes.tracker.advance(1);
                    }
                }
            }
        }
    }

    /// One create's outcome.
    async fn settle_create(&self, c: &Create, body: &Value, result: Result<(), ScimError>) {
        let user = self.user(c.user);
        match result {
            Ok(()) => self.created(c, user),
            // Taken, or sent with its answer lost: what is there decides.
            Err(e) if e.is_uniqueness() || e.is_outcome_unknown() => {
                self.create_conflict(c, body, &e).await
            }
            Err(e) => {
                self.writes
                    .unsettled(self.allowed, Kind::Create, &e, create_action(c), &user.id);
                self.writes
                    .record_failed(1, "CreateAccount", &user.user_name, &e);
            }
        }
        self.writes.tracker.advance(1);
    }

    /// An account exists for `c`'s user now: counted at once (a killed pod's last report
    /// misses only its last moments), then recorded (a recreated one already is).
    fn created(&self, c: &Create, user: &ProvisionUser) {
        self.writes.succeeded(1);
        self.writes.tracker.update(|s| {
            s.counts.created += 1;
            s.counts.pending_provisioning -= i64::from(!c.recorded);
            s.retire(create_action(c), &user.id);
        });
        if !c.recorded {
            self.push_record(user, Lands::Created);
        }
    }

    /// A 409 (an account with this userName exists) or a create whose answer was lost:
    /// looked up, not guessed. Ours (externalId = the user) means our create happened. Anyone else's is adopted only if the rules give
    /// it to this user; otherwise it is disputed and left alone.
    async fn create_conflict(&self, c: &Create, body: &Value, e: &ScimError) {
        let user = self.user(c.user);
        let name = body["userName"].as_str().unwrap_or_default();
        let filter = format!("userName eq {}", quote(name));
        let attrs = self.run.rules.app_attributes();
        let attrs: Vec<&str> = attrs.iter().map(String::as_str).collect();
        let found = match self
            .run
            .context
            .app
            .list(USERS, &attrs, Some(&filter))
            .await
        {
            Ok((v, _)) => v,
            Err(_) => {
                // Cannot tell whether our create happened: the allowance stays taken, the
                // create in the journal.
                let action = create_action(c);
                self.writes
                    .tracker
                    .update(|s| s.keep_unknown(action, &user.id));
                return self
                    .writes
                    .record_failed(1, "CreateAccount", &user.user_name, e);
            }
        };
        let ours = |a: &AppAccount| a.external_id.as_deref() == Some(user.id.as_str());
        let accounts: Vec<AppAccount> = found
            .iter()
            .filter_map(|v| self.run.rules.app_account(v))
            .collect();
        if accounts.iter().any(ours) {
            return self.created(c, user);
        }
        self.allowed.release(Kind::Create, 1);
        if self.rules_give(&accounts, c.user) && !c.recorded {
            self.writes.succeeded(1);
            return self.push_record(user, Lands::Found);
        }
        let why = "the userName is taken by an account the matching rules do not give to this user (disputed)";
        self.writes
            .record_failed(1, "CreateAccount", &user.user_name, &why);
    }

    /// Whether the rules give one of `accounts` to user `u`.
    fn rules_give(&self, accounts: &[AppAccount], u: u32) -> bool {
        let records = Records::of_accounts(self.run.rules.app.len(), 0, accounts);
        let index = self
            .index
            .get_or_init(|| Index::build(&self.listed.users, &self.run.rules.case_sensitive));
        records
            .iter()
            .any(|a| matching::situation_of(&a, index) == Situation::Owned { user: u })
    }

    async fn update(&self, u: &provision_plan::Update) {
        let user = self.user(u.user);
        let account = self.account(u.account);
        if u.writes_account() {
            let patch = self
                .run
                .mappings
                .update(user, &u.mappings, u.active, u.set_external_id);
            let result = self
                .run
                .context
                .app
                .patch(USERS, &account.id, &patch, None)
                .await;
            if let Err(e) = result {
                let action = if u.adopt {
                    "AdoptAccount"
                } else {
                    "UpdateAccount"
                };
                self.writes.failed(1, action, &account.user_name, &e);
                return self.writes.tracker.advance(1);
            }
        }
        if u.adopt {
            self.push_record(
                user,
                Lands::Adopted {
                    updated: u.writes_account(),
                },
            );
        } else {
            self.writes.tracker.update(|s| s.counts.updated += 1);
            self.writes.settled(1, Bucket::AlreadyLinked);
        }
        self.writes.tracker.advance(1);
    }

    /// Deactivates (or deletes) an account; a deleted account's record goes too.
    async fn remove(&self, r: &Removal, delete: bool) {
        if !self.allowed.try_reserve(Kind::Delete, 1) {
            return;
        }
        let account = self.account(r.account);
        let app = &self.run.context.app;
        let action = removal_action(delete);
        let result = if delete {
            let r = app.delete(USERS, &account.id, None).await.map(|_| ());
            // Gone already (an earlier answer lost): what we wanted.
            r.or_else(|e| if e.is_not_found() { Ok(()) } else { Err(e) })
        } else {
            let op = PatchOp::new(vec![PatchOp::replace("active", json!(false))]);
            app.patch(USERS, &account.id, &op, None).await.map(|_| ())
        };
        let result = settle_removal(app, USERS, &account.id, !delete, result).await;
        match result {
            Ok(()) => {
                self.writes.tracker.update(|s| {
                    s.counts.deleted += 1;
                    s.retire(action, &account.id);
                });
                let lands = if r.revoked {
                    Bucket::Revoked
                } else {
                    Bucket::AlreadyLinked
                };
                self.writes.settled(1, lands);
                // A deleted account's record goes too, so that no Import takes the user
                // for a deleted recorded object (an app without an inactive state
                // deletes an inactive user's account).
                if delete {
                    let user = self.user(r.user);
                    self.removals
                        .lock()
                        .expect("removals lock")
                        .push((user.id.clone(), user.user_name.clone()));
                }
            }
            Err(f) => {
                self.writes
                    .removal_failed(self.allowed, &f, action, &account.id);
                self.writes.failed(1, action, &account.user_name, &f.error);
            }
        }
        self.writes.tracker.advance(1);
    }

    /// Records the users whose account was created or adopted.
    async fn flush_records(&self) {
        let pending = std::mem::take(&mut *self.records.lock().expect("records lock"));
        let record_id = &self.listed.groups.record_id;
        for chunk in pending.chunks(MEMBERS_PER_CALL) {
            let ids: Vec<String> = chunk.iter().map(|p| p.user_id.clone()).collect();
            let result = self.run.context.domain.add_members(record_id, &ids).await;
            for p in chunk {
                self.land(p.lands, result.is_ok());
                match (&result, p.lands) {
                    (Ok(_), _) => {}
                    // The account itself lands in `failed`: one failure, counted once.
                    (Err(e), Lands::Adopted { .. } | Lands::Found) => {
                        self.writes.list_failure(1, "Record", &p.subject, e)
                    }
                    (Err(e), Lands::Created) => {
                        self.writes.record_failed(1, "Record", &p.subject, e)
                    }
                }
            }
        }
    }

    /// Counts one recorded (or, `recorded` false, unrecorded) user's account.
    fn land(&self, lands: Lands, recorded: bool) {
        match lands {
            Lands::Adopted { updated } if recorded => {
                self.writes
                    .tracker
                    .update(|s| s.counts.updated += i64::from(updated));
                self.writes.settled(1, Bucket::Linked);
            }
            // Not recorded: the next run adopts it again.
            Lands::Adopted { .. } => self.writes.tracker.settle(1, Bucket::Failed),
            // Counted when created; a failed record is a failure of its own.
            Lands::Created => {}
            Lands::Found => self.writes.tracker.update(|s| {
                s.counts.app_accounts += 1;
                s.counts.pending_provisioning -= 1;
                s.counts.linked += i64::from(recorded);
                s.counts.failed += i64::from(!recorded);
            }),
        }
    }

    /// Removes the records of deleted revoked accounts.
    async fn flush_removals(&self) {
        let pending = std::mem::take(&mut *self.removals.lock().expect("removals lock"));
        let record_id = &self.listed.groups.record_id;
        for chunk in pending.chunks(MEMBERS_PER_CALL) {
            let ids: Vec<String> = chunk.iter().map(|(id, _)| id.clone()).collect();
            if let Err(e) = self
                .run
                .context
                .domain
                .remove_members(record_id, &ids)
                .await
            {
                // The accounts are gone; the stale records go with the next Import.
                self.writes
                    .record_failed(chunk.len() as u64, "RemoveRecord", &chunk[0].1, &e);
            }
        }
    }
}
