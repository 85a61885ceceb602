//! The Import pipeline: list both sides once, match in memory, plan in full, confirm
//! deletion candidates, check the limits, then apply with bounded parallelism.

use std::sync::Mutex;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::api::{Limits, Mode, OnAccountDeleted, Stage};
use crate::engine::limits::{self, Budget};
use crate::engine::matching;
use crate::engine::plan::{self, Deletion, ImportPlan, ImportPolicy};
use crate::engine::records::{Ids, Record, Records};
use crate::scim::model::{GROUPS, PatchOp, USERS};
use crate::scim::path::quote;
use crate::scim::{ScimClient, ScimError};

use super::extract::{self, Rules};
use super::outcome::Observed;
use super::progress::Tracker;
use super::stop::Stop;
use super::writes::{self, Writes};

/// Membership values per group PATCH call of the engine: what one `add_members` request
/// carries (one operation of 10,000 values), since a PATCH costs the same for 1 or 10,000
/// members (on a 100,000-member group each PATCH costs seconds), yet bounded so that
/// progress moves on huge runs.
const MEMBERS_PER_CALL: usize = 10_000;

/// What both directions' runs share.
pub struct Common {
    pub domain: ScimClient,
    pub app: ScimClient,
    pub limits: Option<Limits>,
    pub parallelism: usize,
    pub mode: Mode,
    pub grant_group: String,
    pub max_failure_percent: u32,
    pub timeout: String,
    pub tracker: Tracker,
    pub stop: Stop,
}

/// Everything an Import run needs.
pub struct ImportRun {
    pub c: Common,
    pub rules: Rules,
    pub policy: ImportPolicy,
}

/// Errors that end a run before its plan could be applied.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(
        "grant group {0:?} not found in the identity domain (the controller creates it when provisioning is enabled)"
    )]
    GrantGroupMissing(String),
    #[error("{0} groups in the identity domain have the display name {1:?}")]
    GrantGroupAmbiguous(usize, String),
    #[error("identity domain: {0}")]
    Domain(#[source] ScimError),
    #[error("app: {0}")]
    App(#[source] ScimError),
    #[error("stopped")]
    Stopped,
}

/// What the listing stage gathered.
struct Listed {
    group_id: String,
    members: Ids,
    users: Records,
    accounts: Records,
}

/// Runs an Import and returns what the outcome decision needs. The tracker's counts
/// are final when it returns.
pub async fn run(r: &ImportRun) -> Result<Observed, ImportError> {
    let mut observed = Observed::new(&r.c.timeout, r.c.max_failure_percent);
    r.c.tracker.stage(Stage::Listing, 0);
    let listed = tokio::select! {
        l = list(r) => l?,
        _ = r.c.stop.stopped() => return Err(ImportError::Stopped),
    };
    tracing::info!(
        accounts = listed.accounts.len(),
        users = listed.users.len(),
        members = listed.members.len(),
        "listed both sides"
    );

    // Planning: pure matching, then reads only for the deletion candidates.
    let index = matching::Index::build(&listed.users, &r.rules.case_sensitive);
    let member_users: Vec<Option<u32>> =
        listed.members.iter().map(|m| index.user_by_id(m)).collect();
    let mut is_member = vec![false; listed.users.len()];
    for &u in member_users.iter().flatten() {
        is_member[u as usize] = true;
    }
    let classification = matching::classify(&listed.accounts, &index, &is_member);
    let mut plan = plan::import(
        &listed.accounts,
        listed.members.iter().zip(member_users.iter().copied()),
        &classification,
        r.policy,
    );
    drop((classification, is_member, member_users, index));
    r.c.tracker
        .stage(Stage::Planning, plan.deletions.len() as u64);
    let candidates = std::mem::take(&mut plan.deletions);
    let confirm = confirm_deletions(
        &r.c.domain,
        &r.c.app,
        &r.rules,
        candidates,
        &listed.users,
        r.c.parallelism,
        || r.c.tracker.advance(1),
    );
    let (confirmed, still_there) = tokio::select! {
        c = confirm => c?,
        _ = r.c.stop.stopped() => return Err(ImportError::Stopped),
    };
    plan.deletions = confirmed;
    plan.counts.already_linked += still_there as i64;

    let planned = plan.planned();
    let items = plan.items(&listed.accounts, &listed.users);
    let check =
        r.c.tracker
            .publish_plan(&plan.counts, &planned, items, r.c.limits.as_ref());
    tracing::info!(
        links = planned.links,
        creates = planned.creates,
        deletes = planned.deletes,
        already_linked = plan.counts.already_linked,
        unmatched = plan.counts.unmatched,
        disputed = plan.counts.disputed,
        limit = ?check,
        "plan computed"
    );
    if !observed.proceed(r.c.mode, check) {
        return Ok(observed);
    }

    let (max_creates, max_deletes) = limits::limits_of(r.c.limits.as_ref());
    let creates = Budget::new(max_creates);
    let deletes = Budget::new(max_deletes);
    let total = plan.links.len()
        + match max_creates {
            Some(m) => plan.creates.len().min(m as usize),
            None => plan.creates.len(),
        }
        + match max_deletes {
            Some(m) => plan.deletions.len().min(m as usize),
            None => plan.deletions.len(),
        };
    r.c.tracker.stage(Stage::Applying, total as u64);
    let applier = Applier {
        r,
        group_id: &listed.group_id,
        accounts: &listed.accounts,
        users: &listed.users,
        creates,
        deletes,
        w: Writes::new(
            r.c.tracker.clone(),
            r.c.stop.clone(),
            r.c.max_failure_percent,
        ),
        pending_links: Mutex::new(Vec::new()),
        pending_removals: Mutex::new(Vec::new()),
    };
    applier.apply(&plan).await;
    observed.budget_refused = applier.creates.was_refused() || applier.deletes.was_refused();
    observed.stopped = r.c.stop.reason();
    Ok(observed)
}

/// Lists the grant group, the domain users and the app accounts, both sides at once.
async fn list(r: &ImportRun) -> Result<Listed, ImportError> {
    let (group_id, members) = grant_group(&r.c.domain, &r.c.grant_group).await?;
    let domain_attrs = r.rules.domain_attributes();
    let app_attrs = r.rules.app_attributes();
    let totals = Mutex::new((0u64, 0u64));
    let rules = r.rules.app.len();
    let mut users = Records::new(rules, 0);
    let mut accounts = Records::new(rules, r.rules.import.len());
    let domain_side = list_side(
        &r.c.tracker,
        &r.c.domain,
        &domain_attrs,
        &totals,
        0,
        Append(&mut users, |v: &Value, out: &mut Records| {
            r.rules.domain_user(v).map(|u| out.push_user(&u))
        }),
    );
    let app_side = list_side(
        &r.c.tracker,
        &r.c.app,
        &app_attrs,
        &totals,
        1,
        Append(&mut accounts, |v: &Value, out: &mut Records| {
            r.rules.app_account(v).map(|a| out.push_account(&a))
        }),
    );
    let (u, a) = tokio::join!(domain_side, app_side);
    u.map_err(ImportError::Domain)?;
    a.map_err(ImportError::App)?;
    Ok(Listed {
        group_id,
        members,
        users,
        accounts,
    })
}

/// Where a side's listing goes, one document at a time.
pub(super) trait Sink {
    /// The server announced this many documents.
    fn reserve(&mut self, n: usize);
    /// One listed document.
    fn take(&mut self, v: &Value) -> Result<(), ScimError>;
}

/// Collects converted documents into a `Vec` (documents that do not convert are skipped).
pub(super) struct Collect<'o, T, F>(pub &'o mut Vec<T>, pub F);

impl<T, F: Fn(&Value) -> Option<T>> Sink for Collect<'_, T, F> {
    fn reserve(&mut self, n: usize) {
        self.0.reserve_exact(n);
    }
    fn take(&mut self, v: &Value) -> Result<(), ScimError> {
        self.0.extend((self.1)(v));
        Ok(())
    }
}

/// Appends documents to [`Records`]; `F` returns `None` for a document it skips.
pub(super) struct Append<'o, F>(pub &'o mut Records, pub F);

impl<F> Sink for Append<'_, F>
where
    F: Fn(&Value, &mut Records) -> Option<Result<(), crate::engine::records::TooLarge>>,
{
    fn reserve(&mut self, n: usize) {
        self.0.reserve(n);
    }
    fn take(&mut self, v: &Value) -> Result<(), ScimError> {
        match (self.1)(v, self.0) {
            Some(Err(e)) => Err(ScimError::Protocol(e.to_string())),
            _ => Ok(()),
        }
    }
}

/// Lists one side's users, converting each document at once so that only the compact
/// form stays in memory.
pub(super) async fn list_side(
    tracker: &Tracker,
    client: &ScimClient,
    attrs: &[String],
    totals: &Mutex<(u64, u64)>,
    side: usize,
    mut out: impl Sink,
) -> Result<(), ScimError> {
    let attrs: Vec<&str> = attrs.iter().map(String::as_str).collect();
    let mut pager = client.pager(USERS, &attrs, None).await?;
    let mut first = true;
    while let Some(page) = pager.next_page().await? {
        for v in &page {
            out.take(v)?;
        }
        if std::mem::take(&mut first)
            && let Some(total) = pager.stats().total_results
        {
            // Sized once, after a page shows what a record takes: doubling columns of
            // 100,000 records wastes up to half of them and copies them all at each step.
            // totalResults is the server's word: capped so a wrong one cannot exhaust memory.
            let rest = (total as usize).saturating_sub(page.len());
            out.reserve(rest.min(1_000_000));
        }
        report_listing(
            tracker,
            totals,
            side,
            page.len() as u64,
            pager.stats().total_results,
        );
    }
    if !pager.stats().consistent {
        tracing::warn!(
            side,
            stats = ?pager.stats(),
            "the listing changed while it was read; deletion candidates are confirmed one by one"
        );
    }
    Ok(())
}

/// Listing progress: objects read over both sides' totalResults.
fn report_listing(
    tracker: &Tracker,
    totals: &Mutex<(u64, u64)>,
    side: usize,
    n: u64,
    total: Option<u64>,
) {
    let sum = {
        let mut t = totals.lock().expect("totals lock");
        if let Some(total) = total {
            if side == 0 {
                t.0 = total;
            } else {
                t.1 = total;
            }
        }
        t.0 + t.1
    };
    tracker.update(|s| {
        s.processed += n;
        s.total = sum.max(s.processed);
    });
}

/// Finds the grant group by display name and reads its members.
pub(super) async fn grant_group(
    domain: &ScimClient,
    name: &str,
) -> Result<(String, Ids), ImportError> {
    let filter = format!("displayName eq {}", quote(name));
    let (groups, _) = domain
        .list("Groups", &["displayName"], Some(&filter))
        .await
        .map_err(ImportError::Domain)?;
    let ids: Vec<String> = groups
        .iter()
        .filter(|g| {
            g.get("displayName")
                .and_then(Value::as_str)
                .is_some_and(|d| d.eq_ignore_ascii_case(name))
        })
        .filter_map(|g| g.get("id").and_then(Value::as_str).map(str::to_string))
        .collect();
    let id = match ids.as_slice() {
        [] => return Err(ImportError::GrantGroupMissing(name.into())),
        [one] => one.clone(),
        many => return Err(ImportError::GrantGroupAmbiguous(many.len(), name.into())),
    };
    let (members, _) = domain
        .group_members(&id)
        .await
        .map_err(ImportError::Domain)?
        .ok_or_else(|| ImportError::GrantGroupMissing(name.into()))?;
    // Kept for the whole run: compact.
    Ok((id, members.iter().collect()))
}

/// Keeps only the deletion candidates whose account is really gone: index pagination is
/// not a snapshot, so the listing can miss an account. One filtered query in the app per
/// candidate (never per account): its user id as externalId, or any of its rule values.
/// Returns the confirmed deletions and how many candidates still had an account.
pub async fn confirm_deletions(
    domain: &ScimClient,
    app: &ScimClient,
    rules: &Rules,
    candidates: Vec<Deletion>,
    users: &Records,
    parallelism: usize,
    on_checked: impl Fn(),
) -> Result<(Vec<Deletion>, usize), ImportError> {
    let on_checked = &on_checked;
    let checks = futures::stream::iter(candidates.iter().map(|d| async move {
        let fetched;
        let user = match d.user {
            Some(u) => Some(users.get(u)),
            None => {
                // A member the user listing missed (or a deleted user): read it for its values.
                fetched = domain
                    .get(USERS, &d.user_id, &[])
                    .await
                    .map_err(ImportError::Domain)?
                    .and_then(|v| rules.domain_user(&v))
                    .map(|u| Records::of_users(rules.app.len(), &[u]));
                if fetched.is_none()
                    && domain
                        .get(GROUPS, &d.user_id, &["id"])
                        .await
                        .map_err(ImportError::Domain)?
                        .is_some()
                {
                    // A nested group is no record of an account: never removed.
                    on_checked();
                    return Ok(Check::NotAUser);
                }
                fetched.as_ref().map(|f| f.get(0))
            }
        };
        let filter = rules.confirmation_filter(&d.user_id, user);
        let (found, _) = app
            .list(USERS, &["id"], Some(&filter))
            .await
            .map_err(ImportError::App)?;
        on_checked();
        Ok::<Check, ImportError>(if found.is_empty() {
            Check::Gone
        } else {
            Check::Present
        })
    }))
    .buffered(parallelism.max(1))
    .collect::<Vec<_>>()
    .await;
    let mut confirmed = Vec::with_capacity(candidates.len());
    let mut still_there = 0;
    for (d, check) in candidates.into_iter().zip(checks) {
        match check? {
            Check::Gone => confirmed.push(d),
            Check::Present => still_there += 1,
            Check::NotAUser => {}
        }
    }
    if still_there > 0 {
        tracing::info!(
            still_there,
            "deletion candidates whose account still exists"
        );
    }
    Ok((confirmed, still_there))
}

/// What the confirmation of one deletion candidate found.
enum Check {
    Gone,
    Present,
    NotAUser,
}

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

struct Applier<'a> {
    r: &'a ImportRun,
    group_id: &'a str,
    accounts: &'a Records,
    users: &'a Records,
    creates: Budget,
    deletes: Budget,
    w: Writes,
    pending_links: Mutex<Vec<PendingLink>>,
    pending_removals: Mutex<Vec<PendingRemoval>>,
}

impl Applier<'_> {
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

    async fn apply(&self, plan: &ImportPlan) {
        // 1. Links of exact matches: a few large membership PATCHes.
        for chunk in plan.links.chunks(MEMBERS_PER_CALL) {
            if self.w.stopping() {
                break;
            }
            let ids: Vec<String> = chunk
                .iter()
                .map(|&(_, u)| self.users.get(u).id().to_string())
                .collect();
            let n = chunk.len() as u64;
            match self.r.c.domain.add_members(self.group_id, &ids).await {
                Ok(_) => {
                    self.r.c.tracker.update(|s| s.counts.linked += n as i64);
                    self.w.succeeded(n);
                }
                Err(e) => self
                    .w
                    .failed(n, "Link", &self.account_subject(chunk[0].0), &e),
            }
            self.r.c.tracker.advance(n);
        }

        // 2. Creates and deletions, `parallelism` at a time, each under its budget.
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
            .for_each_concurrent(self.r.c.parallelism.max(1), |w| async move {
                match w {
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
        if self.w.stopping() {
            return;
        }
        if !self.creates.try_reserve(1) {
            return;
        }
        let account = self.accounts.get(a);
        let subject = self.account_subject(a);
        match self
            .r
            .c
            .domain
            .create(USERS, &extract::new_user(&self.r.rules, account))
            .await
        {
            Ok(v) => match v.get("id").and_then(Value::as_str) {
                Some(id) => {
                    self.r.c.tracker.update(|s| s.counts.created += 1);
                    self.w.succeeded(1);
                    self.push_link(id.to_string(), subject, false);
                }
                None => self
                    .w
                    .failed(1, "CreateUser", &subject, &"the created user has no id"),
            },
            Err(e) if e.is_uniqueness() => self.create_conflict(account, subject, e).await,
            Err(e) => {
                if writes::certainly_not_applied(&e) {
                    self.creates.release(1);
                }
                self.w.failed(1, "CreateUser", &subject, &e);
            }
        }
        self.r.c.tracker.advance(1);
    }

    /// A 409 on create: the userName is taken. If the user carries this account's id as
    /// externalId, it is our own create whose first answer was lost (counted, budget kept);
    /// otherwise it is someone else's user: link it and give the create back.
    async fn create_conflict(&self, account: Record<'_>, subject: String, e: ScimError) {
        let filter = format!("userName eq {}", quote(account.user_name()));
        let found = self
            .r
            .c
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
            // Not found: we cannot tell whether our create happened, so keep the budget.
            return self.w.failed(1, "CreateUser", &subject, &e);
        };
        let Some(id) = user.get("id").and_then(Value::as_str) else {
            return self
                .w
                .failed(1, "CreateUser", &subject, &"the existing user has no id");
        };
        let ours = user.get("externalId").and_then(Value::as_str) == Some(account.id());
        if ours {
            self.r.c.tracker.update(|s| s.counts.created += 1);
        } else {
            self.creates.release(1);
        }
        self.w.succeeded(1);
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

    async fn delete(&self, d: &Deletion, on: OnAccountDeleted) {
        if self.w.stopping() {
            return;
        }
        if !self.deletes.try_reserve(1) {
            return;
        }
        let subject = self.deletion_subject(d);
        let action = plan::deletion_action(on);
        let result = match on {
            OnAccountDeleted::RemoveRecord => {
                // Batched after the parallel stage; counted when the PATCH succeeds.
                self.pending_removals
                    .lock()
                    .expect("removals lock")
                    .push(PendingRemoval {
                        user_id: d.user_id.clone(),
                        subject,
                        counted: false,
                    });
                return;
            }
            OnAccountDeleted::DeactivateUser => self
                .r
                .c
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
                .r
                .c
                .domain
                .delete(USERS, &d.user_id, None)
                .await
                .map(|_| ()),
        };
        match result {
            // A user already gone needs only its record removed; the record counts.
            Ok(())
            | Err(crate::scim::ScimError::Status {
                kind: crate::scim::ErrorKind::NotFound,
                ..
            }) => {
                self.r.c.tracker.update(|s| s.counts.deleted += 1);
                self.w.succeeded(1);
                self.pending_removals
                    .lock()
                    .expect("removals lock")
                    .push(PendingRemoval {
                        user_id: d.user_id.clone(),
                        subject,
                        counted: true,
                    });
            }
            Err(e) => {
                if writes::certainly_not_applied(&e) {
                    self.deletes.release(1);
                }
                self.w.failed(1, action, &subject, &e);
            }
        }
        self.r.c.tracker.advance(1);
    }

    async fn flush_links(&self) {
        let pending = std::mem::take(&mut *self.pending_links.lock().expect("links lock"));
        for chunk in pending.chunks(MEMBERS_PER_CALL) {
            let ids: Vec<String> = chunk.iter().map(|p| p.user_id.clone()).collect();
            let links = chunk.iter().filter(|p| p.counts_as_link).count() as i64;
            match self.r.c.domain.add_members(self.group_id, &ids).await {
                Ok(_) => self.r.c.tracker.update(|s| s.counts.linked += links),
                Err(e) => self
                    .w
                    .failed(chunk.len() as u64, "Record", &chunk[0].subject, &e),
            }
        }
    }

    async fn flush_removals(&self) {
        let mut pending =
            std::mem::take(&mut *self.pending_removals.lock().expect("removals lock"));
        if self.w.stopping() {
            // Record-only removals not yet sent are writes not yet issued: give them back.
            let before = pending.len();
            pending.retain(|p| p.counted);
            let dropped = (before - pending.len()) as u64;
            self.deletes.release(dropped);
            self.r.c.tracker.advance(dropped);
        }
        for chunk in pending.chunks(MEMBERS_PER_CALL) {
            let ids: Vec<String> = chunk.iter().map(|p| p.user_id.clone()).collect();
            let uncounted = chunk.iter().filter(|p| !p.counted).count() as u64;
            match self.r.c.domain.remove_members(self.group_id, &ids).await {
                Ok(_) => {
                    self.r
                        .c
                        .tracker
                        .update(|s| s.counts.deleted += uncounted as i64);
                    self.w.succeeded(uncounted);
                }
                Err(e) => {
                    if uncounted > 0 {
                        if writes::certainly_not_applied(&e) {
                            self.deletes.release(uncounted);
                        }
                        self.w
                            .failed(uncounted, "RemoveRecord", &chunk[0].subject, &e);
                    } else {
                        // The users were deactivated/deleted; a stale record is retried next run.
                        tracing::warn!(error = %e, "removing records of deleted users failed");
                    }
                }
            }
            self.r.c.tracker.advance(uncounted);
        }
    }
}
