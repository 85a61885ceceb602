//! Plans: what a run will change, computed in full before any write so that limits are
//! checked against the whole plan. Pure functions over the matching results.

use crate::api::{Counts, OnAccountDeleted, OnExactMatch, OnNoMatch, PlannedCounts, RunItem};
use crate::engine::approval::Change;
use crate::engine::matching::{Classification, DisputeReason, Situation};
use crate::engine::records::Records;
use crate::engine::state::{self, AccountState, Members, Standing, UserState};

/// How many items of each kind a status lists.
pub const ITEMS_PER_KIND: usize = 10;

/// The policy reactions an Import plan follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportPolicy {
    pub on_exact_match: OnExactMatch,
    pub on_no_match: OnNoMatch,
    pub on_account_deleted: OnAccountDeleted,
}

/// A recorded user whose account no longer appears in the app listing. A candidate only:
/// the engine confirms the account is really gone before acting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deletion {
    /// SCIM id of the user in the identity domain.
    pub user_id: String,
    /// Index into the domain users, when the user is still a listed user.
    pub user: Option<u32>,
    /// Still granted: a *deleted recorded object* (`onAccountDeleted` applies). Otherwise
    /// a revoked user's record: only the record is removed.
    pub granted: bool,
}

/// An exact match to link: the record, and the grant too when the user was not granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub account: u32,
    pub user: u32,
    pub grant: bool,
}

/// The Import plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportPlan {
    pub links: Vec<Link>,
    /// Accounts to create users for (then grant and record).
    pub creates: Vec<u32>,
    /// Recorded users whose account vanished.
    pub deletions: Vec<Deletion>,
    /// What a deletion of a granted user does.
    pub on_deleted: OnAccountDeleted,
    /// Disputed accounts, for the report.
    pub disputed: Vec<(u32, Situation)>,
    /// Accounts with no match that are left alone.
    pub unmatched: Vec<u32>,
    /// Accounts of revoked users: never re-linked.
    pub revoked: Vec<u32>,
    /// Inactive accounts: never linked.
    pub inactive: Vec<u32>,
    /// Granted users with neither record nor account: never deletions.
    pub pending: Vec<u32>,
    /// Counts known at planning time: every account with a planned write is `skipped`
    /// until the apply settles it.
    pub counts: Counts,
}

/// Computes the Import plan from the table's states.
pub fn import(
    accounts: &Records,
    users: &Records,
    members: &Members,
    classification: &Classification,
    policy: ImportPolicy,
) -> ImportPlan {
    let mut plan = ImportPlan {
        on_deleted: policy.on_account_deleted,
        ..Default::default()
    };
    plan.counts.app_accounts = accounts.len() as i64;
    plan.counts.domain_users = classification.referenced.len() as i64;
    for (s, a) in classification.situations.iter().zip(accounts.iter()) {
        let standing = match s {
            Situation::Owned { user } => members.of(*user),
            _ => Standing::default(),
        };
        plan.add_account(
            a.index(),
            s,
            state::of_account(s, a.active(), standing),
            policy,
        );
    }
    for (u, state) in members.without_account(&classification.referenced) {
        match state {
            UserState::PendingProvisioning => plan.pending.push(u),
            UserState::AccountGone | UserState::RecordOnly => plan.deletions.push(Deletion {
                user_id: users.get(u).id().to_string(),
                user: Some(u),
                granted: state == UserState::AccountGone,
            }),
        }
    }
    plan.counts.pending_provisioning = plan.pending.len() as i64;
    plan.counts.unresolved_members = members.unlisted_grants as i64;
    plan.deletions.extend(
        members
            .unlisted_records
            .iter()
            .map(|(id, granted)| Deletion {
                user_id: id.clone(),
                user: None,
                granted: *granted,
            }),
    );
    plan
}

impl ImportPlan {
    /// One account's row of the table.
    fn add_account(&mut self, a: u32, s: &Situation, state: AccountState, policy: ImportPolicy) {
        let link = policy.on_exact_match == OnExactMatch::Link;
        let c = &mut self.counts;
        match state {
            AccountState::Linked { .. } => c.already_linked += 1,
            AccountState::Unclaimed { user } | AccountState::Granted { user } if link => {
                let grant = matches!(state, AccountState::Unclaimed { .. });
                self.links.push(Link {
                    account: a,
                    user,
                    grant,
                });
                c.skipped += 1;
            }
            AccountState::Unclaimed { .. } | AccountState::Granted { .. } => c.ignored += 1,
            AccountState::Revoked { .. } => {
                c.revoked += 1;
                self.revoked.push(a);
            }
            AccountState::Inactive { .. } => {
                c.inactive += 1;
                self.inactive.push(a);
            }
            AccountState::Disputed => {
                c.disputed += 1;
                self.disputed.push((a, s.clone()));
            }
            AccountState::NoMatch => match policy.on_no_match {
                OnNoMatch::CreateUser => {
                    self.creates.push(a);
                    c.skipped += 1;
                }
                OnNoMatch::Ignore => {
                    c.unmatched += 1;
                    self.unmatched.push(a);
                }
            },
        }
    }

    /// The creates and deletes counted against the limits.
    pub fn planned(&self) -> PlannedCounts {
        PlannedCounts {
            creates: self.creates.len() as i64,
            deletes: self.deletions.len() as i64,
            links: self.links.len() as i64,
            updates: 0,
        }
    }

    /// The action of a deletion under this plan's policy.
    pub fn deletion_action(&self, d: &Deletion) -> &'static str {
        deletion_action(self.on_deleted_for(d))
    }

    /// What becomes of a deletion's user: the policy's `onAccountDeleted` for a granted
    /// user; a revoked user's record is only removed.
    pub fn on_deleted_for(&self, d: &Deletion) -> OnAccountDeleted {
        if d.granted {
            self.on_deleted
        } else {
            OnAccountDeleted::RemoveRecord
        }
    }

    /// Every write of the plan by SCIM ids and values, what its digest is computed over.
    pub fn changes<'a>(
        &'a self,
        accounts: &'a Records,
        users: &'a Records,
    ) -> impl Iterator<Item = Change> + 'a {
        let links = self.links.iter().map(|l| {
            let mut writes = vec![format!("record={}", users.get(l.user).id())];
            if l.grant {
                writes.push(format!("grant={}", users.get(l.user).id()));
            }
            Change::new("Link", accounts.get(l.account).id(), writes)
        });
        let creates = self.creates.iter().map(|&a| {
            let a = accounts.get(a);
            let mut writes = vec![
                format!("userName={}", a.user_name()),
                format!("active={}", a.active()),
            ];
            writes.extend(
                a.attrs()
                    .enumerate()
                    .map(|(k, v)| format!("import[{k}]={v}")),
            );
            Change::new("CreateUser", a.id(), writes)
        });
        let deletions = self
            .deletions
            .iter()
            .map(|d| Change::new(self.deletion_action(d), d.user_id.as_str(), Vec::new()));
        links.chain(creates).chain(deletions)
    }

    /// The first items of each kind, for `status.planItems`.
    pub fn items(&self, accounts: &Records, users: &Records) -> Vec<RunItem> {
        let acct = |i: u32| accounts.get(i).subject().to_string();
        let user = |i: u32| users.get(i).subject().to_string();
        let item = |action: &str, subject: String, reason: String| RunItem {
            action: action.into(),
            subject,
            reason: Some(reason),
        };
        let first = |v: &[u32], action: &str, reason: &str| -> Vec<RunItem> {
            v.iter()
                .take(ITEMS_PER_KIND)
                .map(|&a| item(action, acct(a), reason.into()))
                .collect()
        };
        let mut out = Vec::new();
        out.extend(self.links.iter().take(ITEMS_PER_KIND).map(|l| {
            let what = if l.grant {
                "grant and record"
            } else {
                "record"
            };
            item(
                "Link",
                acct(l.account),
                format!("matches user {} ({what})", user(l.user)),
            )
        }));
        out.extend(first(&self.creates, "CreateUser", "no matching user"));
        out.extend(self.deletions.iter().take(ITEMS_PER_KIND).map(|d| {
            let subject = d.user.map(user).unwrap_or_else(|| d.user_id.clone());
            let reason = if d.granted {
                "recorded account no longer in the app"
            } else {
                "revoked user's account no longer in the app"
            };
            item(self.deletion_action(d), subject, reason.into())
        }));
        out.extend(
            self.disputed
                .iter()
                .take(ITEMS_PER_KIND)
                .map(|(a, s)| item("Disputed", acct(*a), dispute_reason(s, users))),
        );
        out.extend(first(
            &self.unmatched,
            "NoMatch",
            "no matching user; onNoMatch is Ignore",
        ));
        out.extend(first(
            &self.revoked,
            "Revoked",
            "its user is recorded but no longer granted: never re-linked",
        ));
        out.extend(first(
            &self.inactive,
            "Inactive",
            "inactive accounts are never linked",
        ));
        out.extend(self.pending.iter().take(ITEMS_PER_KIND).map(|&u| {
            item(
                "PendingProvisioning",
                user(u),
                "granted, no account yet: Provision creates it".into(),
            )
        }));
        out
    }
}

/// The action name of a deletion of a granted user.
pub fn deletion_action(on: OnAccountDeleted) -> &'static str {
    match on {
        OnAccountDeleted::RemoveRecord => "RemoveRecord",
        OnAccountDeleted::DeactivateUser => "DeactivateUser",
        OnAccountDeleted::DeleteUser => "DeleteUser",
    }
}

/// Why an account is disputed, naming its candidates.
pub fn dispute_reason(s: &Situation, users: &Records) -> String {
    let names = |c: &[u32]| {
        let mut v: Vec<String> = c
            .iter()
            .take(5)
            .map(|&u| users.get(u).subject().to_string())
            .collect();
        if c.len() > 5 {
            v.push(format!("and {} more", c.len() - 5));
        }
        v.join(", ")
    };
    let Situation::Disputed { candidates, reason } = s else {
        return String::new();
    };
    match reason {
        DisputeReason::SeveralUsers => {
            format!("matches {} users: {}", candidates.len(), names(candidates))
        }
        DisputeReason::UserClaimedByOthers => {
            format!("user {} is claimed by several accounts", names(candidates))
        }
        DisputeReason::ExternalIdNamesAnother => format!(
            "its externalId names user {}, the matching rules find {}",
            names(&candidates[..1]),
            names(&candidates[1..])
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::matching::{Index, classify};
    use crate::engine::records::Ids;
    use crate::engine::records::{AppAccount, DomainUser};

    fn user(id: &str, name: &str) -> DomainUser {
        DomainUser {
            id: id.into(),
            user_name: name.into(),
            active: true,
            keys: vec![vec![name.into()]],
        }
    }
    fn account(id: &str, name: &str) -> AppAccount {
        AppAccount {
            id: id.into(),
            user_name: name.into(),
            external_id: None,
            active: true,
            keys: vec![vec![name.into()]],
            attrs: Vec::new(),
        }
    }

    /// One user or account per row of the state table:
    /// - alice: granted, recorded, account → already linked
    /// - bob: neither, account → Link (grant + record)
    /// - carol: granted, recorded, account gone → deleted recorded object
    /// - dave / Dave: the account DAVE matches both → disputed
    /// - erin: an account with no user → unmatched (or CreateUser)
    /// - frank: granted, no record, no account → pending provisioning, never a deletion
    /// - gina: recorded, no longer granted, account gone → record removed
    /// - hank: recorded, no longer granted, account → revoked, never re-linked
    /// - ivy: granted, no record, account → Link (record only)
    /// - jo: no group, inactive account → inactive, never linked
    /// - ghost: granted and recorded, no longer a user → a deletion candidate
    fn fixture(policy: ImportPolicy) -> (Records, Records, ImportPlan) {
        let names = [
            "alice", "bob", "carol", "dave", "Dave", "frank", "gina", "hank", "ivy", "jo",
        ];
        let users: Vec<DomainUser> = names.iter().map(|n| user(&format!("u-{n}"), n)).collect();
        let mut accounts: Vec<AppAccount> = ["alice", "Bob", "DAVE", "erin", "hank", "ivy", "jo"]
            .iter()
            .enumerate()
            .map(|(i, n)| account(&format!("a{}", i + 1), n))
            .collect();
        accounts[6].active = false;
        let grants: Ids = [
            "u-alice", "u-carol", "u-carol", "u-frank", "u-ivy", "u-ghost",
        ]
        .into_iter()
        .collect();
        let records: Ids = ["u-alice", "u-carol", "u-gina", "u-hank", "u-ghost"]
            .into_iter()
            .collect();
        let users = Records::of_users(1, &users);
        let accounts = Records::of_accounts(1, 0, &accounts);
        let index = Index::build(&users, &[false]);
        let members = Members::new(&grants, &records, &index);
        let c = classify(&accounts, &index);
        let plan = import(&accounts, &users, &members, &c, policy);
        drop(index);
        (accounts, users, plan)
    }

    fn deletion(id: &str, user: Option<u32>, granted: bool) -> Deletion {
        Deletion {
            user_id: id.into(),
            user,
            granted,
        }
    }

    #[test]
    fn every_row_of_the_table() {
        let (accounts, users, plan) = fixture(ImportPolicy {
            on_account_deleted: OnAccountDeleted::DeleteUser,
            ..Default::default()
        });
        assert_eq!(
            plan.links,
            [
                Link {
                    account: 1,
                    user: 1,
                    grant: true
                },
                Link {
                    account: 5,
                    user: 8,
                    grant: false
                }
            ]
        );
        assert!(plan.creates.is_empty());
        // frank (granted, never provisioned) is no deletion, whatever onAccountDeleted says.
        assert_eq!(
            plan.deletions,
            [
                deletion("u-carol", Some(2), true),
                deletion("u-gina", Some(6), false),
                deletion("u-ghost", None, true),
            ]
        );
        assert_eq!(plan.pending, [5]);
        assert_eq!(plan.revoked, [4]);
        assert_eq!(plan.inactive, [6]);
        let c = &plan.counts;
        assert_eq!((c.app_accounts, c.domain_users), (7, 10));
        assert_eq!(
            (
                c.already_linked,
                c.skipped,
                c.disputed,
                c.unmatched,
                c.revoked,
                c.inactive
            ),
            (1, 2, 1, 1, 1, 1)
        );
        assert_eq!(c.pending_provisioning, 1);
        assert_eq!(
            plan.planned(),
            PlannedCounts {
                creates: 0,
                deletes: 3,
                links: 2,
                updates: 0
            }
        );
        let actions: Vec<&str> = plan
            .deletions
            .iter()
            .map(|d| plan.deletion_action(d))
            .collect();
        assert_eq!(actions, ["DeleteUser", "RemoveRecord", "DeleteUser"]);
        let items = plan.items(&accounts, &users);
        let kinds: Vec<&str> = items.iter().map(|i| i.action.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "Link",
                "Link",
                "DeleteUser",
                "RemoveRecord",
                "DeleteUser",
                "Disputed",
                "NoMatch",
                "Revoked",
                "Inactive",
                "PendingProvisioning"
            ]
        );
        assert_eq!(items[0].subject, "Bob");
        assert!(
            items[5]
                .reason
                .as_deref()
                .unwrap()
                .contains("matches 2 users")
        );
    }

    /// Every app account lands in exactly one account count.
    #[test]
    fn account_counts_add_up_to_the_accounts() {
        for on_exact_match in [OnExactMatch::Link, OnExactMatch::Ignore] {
            for on_no_match in [OnNoMatch::Ignore, OnNoMatch::CreateUser] {
                let (_, _, plan) = fixture(ImportPolicy {
                    on_exact_match,
                    on_no_match,
                    on_account_deleted: OnAccountDeleted::RemoveRecord,
                });
                let c = &plan.counts;
                assert_eq!(
                    c.accounted(crate::api::Direction::Import),
                    c.app_accounts,
                    "{on_exact_match:?} {on_no_match:?}"
                );
            }
        }
    }

    /// Changes name SCIM ids (accounts in the app, users in the domain) and what they write.
    #[test]
    fn changes_name_ids_and_what_they_write() {
        let policy = ImportPolicy {
            on_no_match: OnNoMatch::CreateUser,
            ..Default::default()
        };
        let (accounts, users, plan) = fixture(policy);
        let mut changes: Vec<Change> = plan.changes(&accounts, &users).collect();
        changes.sort();
        assert_eq!(
            changes,
            [
                Change::new(
                    "CreateUser",
                    "a4",
                    vec!["userName=erin".into(), "active=true".into()]
                ),
                Change::new(
                    "Link",
                    "a2",
                    vec!["record=u-bob".into(), "grant=u-bob".into()]
                ),
                Change::new("Link", "a6", vec!["record=u-ivy".into()]),
                Change::new("RemoveRecord", "u-carol", vec![]),
                Change::new("RemoveRecord", "u-ghost", vec![]),
                Change::new("RemoveRecord", "u-gina", vec![]),
            ]
        );
    }

    #[test]
    fn authoritative_sync_creates_and_ignore_does_not_link() {
        let (_, _, plan) = fixture(ImportPolicy {
            on_exact_match: OnExactMatch::Ignore,
            on_no_match: OnNoMatch::CreateUser,
            on_account_deleted: OnAccountDeleted::DeleteUser,
        });
        assert!(plan.links.is_empty());
        assert_eq!(plan.creates, [3]);
        assert_eq!((plan.counts.unmatched, plan.counts.ignored), (0, 2));
        assert_eq!(plan.planned().creates, 1);
    }

    #[test]
    fn items_are_capped_per_kind() {
        let users: Vec<DomainUser> = (0..30)
            .map(|i| user(&format!("u{i}"), &format!("n{i}")))
            .collect();
        let accounts: Vec<AppAccount> = (0..30)
            .map(|i| account(&format!("a{i}"), &format!("n{i}")))
            .collect();
        let users = Records::of_users(1, &users);
        let accounts = Records::of_accounts(1, 0, &accounts);
        let index = Index::build(&users, &[false]);
        let members = Members::new(&Ids::default(), &Ids::default(), &index);
        let c = classify(&accounts, &index);
        let plan = import(&accounts, &users, &members, &c, ImportPolicy::default());
        assert_eq!(plan.links.len(), 30);
        assert_eq!(plan.items(&accounts, &users).len(), ITEMS_PER_KIND);
    }
}
