//! The writes of an Import: links of exact matches in large membership PATCHes (the grant
//! first, then the record), then creates and deletions `parallelism` at a time (each within
//! its allowance), then the groups' updates for what the parallel stage created or deleted.
//!
//! Order keeps every interruption safe: a user is granted before it is recorded (granted
//! without a record is *pending provisioning*, never a deletion), and its grant is removed
//! before its record (recorded without a grant is *revoked*, never re-linked).

use std::sync::Mutex;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::api::OnAccountDeleted;
use crate::engine::extract::{self, Rules};
use crate::engine::journal;
use crate::engine::limits::{Allowances, Kind};
use crate::engine::list::Groups;
use crate::engine::matching::{self, Index, Situation};
use crate::engine::pacing::RecordPacer;
use crate::engine::pipeline::Context;
use crate::engine::plan::{Deletion, ImportPlan, Link};
use crate::engine::progress::Bucket;
use crate::engine::records::{Record, Records};
use crate::engine::writes::{self, Writes};
use crate::scim::ScimError;
use crate::scim::model::{PatchOp, USERS};
use crate::scim::path::quote;

use super::removals::PendingRemoval;
use super::{ImportRun, Listed};

/// Membership values per group PATCH call of the engine: what one `add_members` request
/// carries (one operation of 10,000 values), since a PATCH costs the same for 1 or 10,000
/// members (on a 100,000-member group each PATCH costs seconds), yet bounded so that
/// progress moves on huge runs.
pub(crate) const MEMBERS_PER_CALL: usize = 10_000;

/// The journal's action of an Import's create.
const CREATE: &str = "CreateUser";

/// The journal's action of a deletion's write to the user, if it makes one (`RemoveRecord`
/// only changes the groups: journaled with the removals).
fn user_write(on: OnAccountDeleted) -> Option<&'static str> {
    (on != OnAccountDeleted::RemoveRecord).then(|| crate::engine::plan::deletion_action(on))
}

/// A user to grant and record after the parallel stage; its account already landed.
struct PendingRecord {
    user_id: String,
    subject: String,
    grant: bool,
}

pub(super) struct Applier<'a> {
    context: &'a Context,
    rules: &'a Rules,
    groups: &'a Groups,
    accounts: &'a Records,
    users: &'a Records,
    allowed: &'a Allowances,
    writes: &'a Writes,
    pending_records: Mutex<Vec<PendingRecord>>,
    pacer: RecordPacer,
    pending_removals: Mutex<Vec<PendingRemoval>>,
}

impl<'a> Applier<'a> {
    pub(super) fn new(
        run: &'a ImportRun,
        listed: &'a Listed,
        allowed: &'a Allowances,
        writes: &'a Writes,
    ) -> Self {
        Applier {
            context: &run.context,
            rules: &run.rules,
            groups: &listed.groups,
            accounts: &listed.accounts,
            users: &listed.users,
            allowed,
            writes,
            pending_records: Mutex::new(Vec::new()),
            pacer: RecordPacer::new(),
            pending_removals: Mutex::new(Vec::new()),
        }
    }

    fn account_subject(&self, a: u32) -> String {
        self.accounts.get(a).subject().to_string()
    }

    fn deletion_subject(&self, d: &Deletion) -> String {
        d.user
            .map(|u| self.users.get(u).user_name())
            .filter(|n| !n.is_empty())
            .unwrap_or(&d.user_id)
            .to_string()
    }

    pub(super) async fn apply(&self, plan: &ImportPlan) {
        // 1. Links of exact matches: a few large membership PATCHes.
        for chunk in plan.links.chunks(MEMBERS_PER_CALL) {
            if self.writes.stopping() {
                break;
            }
            self.link(chunk).await;
        }

        // 2. Creates and deletions, `parallelism` at a time, each within its allowance.
        enum Work<'p> {
            Create(u32),
            Delete(&'p Deletion),
        }
        let work = plan
            .creates
            .iter()
            .map(|&a| Work::Create(a))
            .chain(plan.deletions.iter().map(Work::Delete));
        // On record before they start (the journal): a retried pod settles what a killed
        // one had in flight.
        let entries = |w: &Work| match w {
            Work::Create(a) => vec![journal::entry(CREATE, self.accounts.get(*a).id(), None)],
            Work::Delete(d) => user_write(plan.on_deleted_for(d))
                .map(|action| journal::entry(action, &d.user_id, None))
                .into_iter()
                .collect(),
        };
        journal::ahead(self.context, work, &entries)
            .for_each_concurrent(self.context.parallelism.max(1), |work| async move {
                match work {
                    Work::Create(a) => self.create(a).await,
                    Work::Delete(d) => self.delete(d, plan.on_deleted_for(d)).await,
                }
                // Records follow the creates in paced batches, not after the whole stage:
                // a run killed mid-apply leaves few created users unrecorded.
                let pending = self.pending_records.lock().expect("records lock").len();
                self.pacer
                    .flush_if_due(pending, || self.flush_records())
                    .await;
            })
            .await;

        // 3. The groups' updates for what the parallel stage created. These complete
        // writes already made, so they run even when the run is stopping. The removals
        // follow once the listing is freed ([`Removals`]).
        self.flush_records().await;
    }

    /// The removals left after [`Self::apply`]: they need nothing of the listing.
    pub(super) fn into_removals(self) -> Vec<PendingRemoval> {
        self.pending_removals.into_inner().expect("removals lock")
    }

    /// Grants (where needed) and records one chunk of exact matches.
    async fn link(&self, chunk: &[Link]) {
        let id = |l: &Link| self.users.get(l.user).id().to_string();
        let grants: Vec<String> = chunk.iter().filter(|l| l.grant).map(id).collect();
        let records: Vec<String> = chunk.iter().map(id).collect();
        let n = chunk.len() as u64;
        match self.grant_and_record(&grants, &records).await {
            Ok(()) => self.writes.settled(n, Bucket::Linked),
            Err(e) => self
                .writes
                .failed(n, "Link", &self.account_subject(chunk[0].account), &e),
        }
        self.context.tracker.advance(n);
    }

    /// Adds `grants` to the grant group, then `records` to the record group.
    async fn grant_and_record(
        &self,
        grants: &[String],
        records: &[String],
    ) -> Result<(), ScimError> {
        let domain = &self.context.domain;
        domain.add_members(&self.groups.grant_id, grants).await?;
        domain.add_members(&self.groups.record_id, records).await?;
        Ok(())
    }

    async fn create(&self, a: u32) {
        if self.writes.stopping() || !self.allowed.try_reserve(Kind::Create, 1) {
            return;
        }
        let account = self.accounts.get(a);
        let subject = self.account_subject(a);
        match self
            .context
            .domain
            .create(USERS, &extract::new_user(self.rules, account))
            .await
        {
            Ok(v) => match v.get("id").and_then(Value::as_str) {
                Some(id) => {
                    self.push_record(account.id(), id.to_string(), subject, true, Bucket::Created)
                }
                None => {
                    self.writes
                        .failed(1, "CreateUser", &subject, &"the created user has no id")
                }
            },
            // Taken, or sent with its answer lost: what is there decides.
            Err(e) if e.is_uniqueness() || e.is_outcome_unknown() => {
                self.create_conflict(account, subject, e).await
            }
            Err(e) => {
                self.writes
                    .unsettled(self.allowed, Kind::Create, &e, CREATE, account.id());
                self.writes.failed(1, "CreateUser", &subject, &e);
            }
        }
        self.context.tracker.advance(1);
    }

    /// A 409 on create (the userName is taken), or a create whose answer was lost: looked
    /// up, not guessed. Our own create (the user carries this account's id as externalId)
    /// counts as created. Nothing found after a lost answer stays a failure that keeps its
    /// allowance: the create may still surface, and the next run links it. Anyone else's
    /// user is settled by the same rules as the plan: linked only if the rules give this
    /// account to it (the listing missed it), else the account is disputed — never linked
    /// because it holds the name.
    async fn create_conflict(&self, account: Record<'_>, subject: String, e: ScimError) {
        let filter = format!("userName eq {}", quote(account.user_name()));
        let mut attrs = self.rules.domain_attributes();
        attrs.push("externalId".into());
        let attrs: Vec<&str> = attrs.iter().map(String::as_str).collect();
        let found = match self.context.domain.list(USERS, &attrs, Some(&filter)).await {
            Ok((users, _)) if !users.is_empty() => users,
            // We cannot tell whether our create happened: the allowance stays taken, the
            // create in the journal.
            _ => {
                self.context
                    .tracker
                    .update(|s| s.keep_unknown(CREATE, account.id()));
                return self.writes.failed(1, "CreateUser", &subject, &e);
            }
        };
        if let Some(ours) = found
            .iter()
            .find(|u| u.get("externalId").and_then(Value::as_str) == Some(account.id()))
            .and_then(|u| u.get("id").and_then(Value::as_str))
        {
            let ours = ours.to_string();
            return self.push_record(account.id(), ours, subject, true, Bucket::Created);
        }
        // Not ours: no create happened.
        self.allowed.release(Kind::Create, 1);
        let users: Vec<_> = found
            .iter()
            .filter_map(|v| self.rules.domain_user(v))
            .collect();
        let users = Records::of_users(self.rules.app.len(), &users);
        let index = Index::build(&users, &self.rules.case_sensitive);
        let Situation::Owned { user } = matching::situation_of(&account, &index) else {
            tracing::warn!(account = %subject, "userName taken by a user the rules do not match: disputed");
            return self.writes.settled(1, Bucket::Disputed);
        };
        let id = users.get(user).id().to_string();
        let (granted, recorded) = (
            self.groups.grants.contains(&id),
            self.groups.records.contains(&id),
        );
        if recorded && !granted {
            // Revoked: never re-granted.
            return self.writes.settled(1, Bucket::Revoked);
        }
        self.push_record(account.id(), id, subject, !granted, Bucket::Linked);
    }

    /// The account lands now, where the write put it, whatever becomes of its record: the
    /// counts follow the servers as soon as the write is known, its create leaves the
    /// journal with them, and a failed record is a failure of its own.
    fn push_record(
        &self,
        account: &str,
        user_id: String,
        subject: String,
        grant: bool,
        lands: Bucket,
    ) {
        self.context
            .tracker
            .settle_journaled(lands, CREATE, account);
        self.pending_records
            .lock()
            .expect("records lock")
            .push(PendingRecord {
                user_id,
                subject,
                grant,
            });
    }

    fn push_removal(&self, d: &Deletion, subject: String, counted: bool) {
        self.pending_removals
            .lock()
            .expect("removals lock")
            .push(PendingRemoval {
                user_id: d.user_id.clone(),
                subject,
                granted: d.granted,
                counted,
            });
    }

    /// Deletes (per `on`, the deletion's own policy) one confirmed deletion.
    async fn delete(&self, d: &Deletion, on: OnAccountDeleted) {
        if self.writes.stopping() || !self.allowed.try_reserve(Kind::Delete, 1) {
            return;
        }
        let subject = self.deletion_subject(d);
        // RemoveRecord (also a revoked user's): only the groups change, batched after the
        // parallel stage and counted when the PATCH succeeds.
        let result = match on {
            OnAccountDeleted::RemoveRecord => return self.push_removal(d, subject, false),
            OnAccountDeleted::DeactivateUser => self
                .context
                .domain
                .patch(
                    USERS,
                    &d.user_id,
                    &PatchOp::new(vec![PatchOp::replace("active", json!(false))]),
                    None,
                )
                .await
                .map(|_| ()),
            OnAccountDeleted::DeleteUser => self
                .context
                .domain
                .delete(USERS, &d.user_id, None)
                .await
                .map(|_| ()),
        };
        // A user already gone (also: our earlier attempt's answer was lost) needs only its
        // record removed; the record counts.
        let result = result.or_else(|e| if e.is_not_found() { Ok(()) } else { Err(e) });
        let deactivation = on == OnAccountDeleted::DeactivateUser;
        let domain = &self.context.domain;
        let result = writes::settle_removal(domain, USERS, &d.user_id, deactivation, result).await;
        let action = crate::engine::plan::deletion_action(on);
        match result {
            Ok(()) => {
                self.context.tracker.update(|s| {
                    s.counts.deleted += 1;
                    s.retire(action, &d.user_id);
                });
                self.writes.succeeded(1);
                self.push_removal(d, subject, true);
            }
            Err(f) => {
                self.writes
                    .removal_failed(self.allowed, &f, action, &d.user_id);
                self.writes.record_failed(1, action, &subject, &f.error);
            }
        }
        self.context.tracker.advance(1);
    }

    /// Grants and records the users the parallel stage created or found.
    async fn flush_records(&self) {
        let pending = std::mem::take(&mut *self.pending_records.lock().expect("records lock"));
        for chunk in pending.chunks(MEMBERS_PER_CALL) {
            let grants: Vec<String> = chunk
                .iter()
                .filter(|p| p.grant)
                .map(|p| p.user_id.clone())
                .collect();
            let records: Vec<String> = chunk.iter().map(|p| p.user_id.clone()).collect();
            let result = self.grant_and_record(&grants, &records).await;
            for p in chunk {
                match &result {
                    Ok(()) => self.writes.succeeded(1),
                    // The user exists (created or found) but is not recorded: the record
                    // is the failure.
                    Err(e) => self.writes.record_failed(1, "Record", &p.subject, e),
                }
            }
        }
    }
}
