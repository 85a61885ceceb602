//! The writes of an Import: links of exact matches in large membership PATCHes, then
//! creates and deletions `parallelism` at a time (each within its allowance), then the
//! grant-group records of what the parallel stage created, linked or deleted.

use std::sync::Mutex;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::api::OnAccountDeleted;
use crate::engine::extract::{self, Rules};
use crate::engine::limits::{Allowances, Kind};
use crate::engine::pipeline::Context;
use crate::engine::plan::{self, Deletion, ImportPlan};
use crate::engine::records::{Record, Records};
use crate::engine::writes::{self, Writes};
use crate::scim::model::{PatchOp, USERS};
use crate::scim::path::quote;
use crate::scim::{ErrorKind, ScimError};

use super::{ImportRun, Listed};

/// Membership values per group PATCH call of the engine: what one `add_members` request
/// carries (one operation of 10,000 values), since a PATCH costs the same for 1 or 10,000
/// members (on a 100,000-member group each PATCH costs seconds), yet bounded so that
/// progress moves on huge runs.
const MEMBERS_PER_CALL: usize = 10_000;

/// A member to add after the parallel stage, and whether it counts as a link (a 409 met an
/// existing user) or only records a user this run created.
struct PendingLink {
    user_id: String,
    subject: String,
    counts_as_link: bool,
}

/// A record to remove after the parallel stage.
struct PendingRemoval {
    user_id: String,
    subject: String,
    /// The user-level write (deactivate/delete) already happened and was counted.
    counted: bool,
}

pub(super) struct Applier<'a> {
    context: &'a Context,
    rules: &'a Rules,
    group_id: &'a str,
    accounts: &'a Records,
    users: &'a Records,
    allowed: &'a Allowances,
    writes: &'a Writes,
    pending_links: Mutex<Vec<PendingLink>>,
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
            group_id: &listed.group_id,
            accounts: &listed.accounts,
            users: &listed.users,
            allowed,
            writes,
            pending_links: Mutex::new(Vec::new()),
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
            let ids: Vec<String> = chunk
                .iter()
                .map(|&(_, u)| self.users.get(u).id().to_string())
                .collect();
            let n = chunk.len() as u64;
            match self.context.domain.add_members(self.group_id, &ids).await {
                Ok(_) => {
                    self.context.tracker.update(|s| s.counts.linked += n as i64);
                    self.writes.succeeded(n);
                }
                Err(e) => self
                    .writes
                    .failed(n, "Link", &self.account_subject(chunk[0].0), &e),
            }
            self.context.tracker.advance(n);
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
        futures::stream::iter(work)
            .for_each_concurrent(self.context.parallelism.max(1), |work| async move {
                match work {
                    Work::Create(a) => self.create(a).await,
                    Work::Delete(d) => self.delete(d, plan.on_deleted).await,
                }
            })
            .await;

        // 3. Record what the parallel stage created, linked or deleted. These complete
        // writes already made, so they run even when the run is stopping.
        self.flush_links().await;
        self.flush_removals().await;
    }

    async fn create(&self, a: u32) {
        if self.writes.stopping() {
            return;
        }
        if !self.allowed.try_reserve(Kind::Create, 1) {
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
                    self.context.tracker.update(|s| s.counts.created += 1);
                    self.writes.succeeded(1);
                    self.push_link(id.to_string(), subject, false);
                }
                None => {
                    self.writes
                        .failed(1, "CreateUser", &subject, &"the created user has no id")
                }
            },
            Err(e) if e.is_uniqueness() => self.create_conflict(account, subject, e).await,
            Err(e) => {
                if writes::certainly_not_applied(&e) {
                    self.allowed.release(Kind::Create, 1);
                }
                self.writes.failed(1, "CreateUser", &subject, &e);
            }
        }
        self.context.tracker.advance(1);
    }

    /// A 409 on create: the userName is taken. If the user carries this account's id as
    /// externalId, it is our own create whose first answer was lost (counted, allowance kept);
    /// otherwise it is someone else's user: link it and give the create back.
    async fn create_conflict(&self, account: Record<'_>, subject: String, e: ScimError) {
        let filter = format!("userName eq {}", quote(account.user_name()));
        let found = self
            .context
            .domain
            .list(USERS, &["userName", "externalId"], Some(&filter))
            .await;
        let existing = match &found {
            Ok((users, _)) => users.iter().find(|u| {
                u.get("userName")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.eq_ignore_ascii_case(account.user_name()))
            }),
            Err(_) => None,
        };
        let Some(user) = existing else {
            // Not found: we cannot tell whether our create happened, so keep the allowance.
            return self.writes.failed(1, "CreateUser", &subject, &e);
        };
        let Some(id) = user.get("id").and_then(Value::as_str) else {
            return self
                .writes
                .failed(1, "CreateUser", &subject, &"the existing user has no id");
        };
        let ours = user.get("externalId").and_then(Value::as_str) == Some(account.id());
        if ours {
            self.context.tracker.update(|s| s.counts.created += 1);
        } else {
            self.allowed.release(Kind::Create, 1);
        }
        self.writes.succeeded(1);
        self.push_link(id.to_string(), subject, !ours);
    }

    fn push_link(&self, user_id: String, subject: String, counts_as_link: bool) {
        self.pending_links
            .lock()
            .expect("links lock")
            .push(PendingLink {
                user_id,
                subject,
                counts_as_link,
            });
    }

    fn push_removal(&self, d: &Deletion, subject: String, counted: bool) {
        self.pending_removals
            .lock()
            .expect("removals lock")
            .push(PendingRemoval {
                user_id: d.user_id.clone(),
                subject,
                counted,
            });
    }

    async fn delete(&self, d: &Deletion, on: OnAccountDeleted) {
        if self.writes.stopping() {
            return;
        }
        if !self.allowed.try_reserve(Kind::Delete, 1) {
            return;
        }
        let subject = self.deletion_subject(d);
        let action = plan::deletion_action(on);
        let result = match on {
            OnAccountDeleted::RemoveRecord => {
                // Batched after the parallel stage; counted when the PATCH succeeds.
                return self.push_removal(d, subject, false);
            }
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
        match result {
            // A user already gone needs only its record removed; the record counts.
            Ok(())
            | Err(ScimError::Status {
                kind: ErrorKind::NotFound,
                ..
            }) => {
                self.context.tracker.update(|s| s.counts.deleted += 1);
                self.writes.succeeded(1);
                self.push_removal(d, subject, true);
            }
            Err(e) => {
                if writes::certainly_not_applied(&e) {
                    self.allowed.release(Kind::Delete, 1);
                }
                self.writes.failed(1, action, &subject, &e);
            }
        }
        self.context.tracker.advance(1);
    }

    async fn flush_links(&self) {
        let pending = std::mem::take(&mut *self.pending_links.lock().expect("links lock"));
        for chunk in pending.chunks(MEMBERS_PER_CALL) {
            let ids: Vec<String> = chunk.iter().map(|p| p.user_id.clone()).collect();
            let links = chunk.iter().filter(|p| p.counts_as_link).count() as i64;
            match self.context.domain.add_members(self.group_id, &ids).await {
                Ok(_) => self.context.tracker.update(|s| s.counts.linked += links),
                Err(e) => self
                    .writes
                    .failed(chunk.len() as u64, "Record", &chunk[0].subject, &e),
            }
        }
    }

    async fn flush_removals(&self) {
        let mut pending =
            std::mem::take(&mut *self.pending_removals.lock().expect("removals lock"));
        if self.writes.stopping() {
            // Record-only removals not yet sent are writes not yet issued: give them back.
            let before = pending.len();
            pending.retain(|p| p.counted);
            let dropped = (before - pending.len()) as u64;
            self.allowed.release(Kind::Delete, dropped);
            self.context.tracker.advance(dropped);
        }
        for chunk in pending.chunks(MEMBERS_PER_CALL) {
            let ids: Vec<String> = chunk.iter().map(|p| p.user_id.clone()).collect();
            let uncounted = chunk.iter().filter(|p| !p.counted).count() as u64;
            match self
                .context
                .domain
                .remove_members(self.group_id, &ids)
                .await
            {
                Ok(_) => {
                    self.context
                        .tracker
                        .update(|s| s.counts.deleted += uncounted as i64);
                    self.writes.succeeded(uncounted);
                }
                Err(e) => {
                    if uncounted > 0 {
                        if writes::certainly_not_applied(&e) {
                            self.allowed.release(Kind::Delete, uncounted);
                        }
                        self.writes
                            .failed(uncounted, "RemoveRecord", &chunk[0].subject, &e);
                    } else {
                        // The users were deactivated/deleted; a stale record is retried next run.
                        tracing::warn!(error = %e, "removing records of deleted users failed");
                    }
                }
            }
            self.context.tracker.advance(uncounted);
        }
    }
}
