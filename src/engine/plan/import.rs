//! Plans: what a run will change, computed in full before any write so that limits are
//! checked against the whole plan. Pure functions over the matching results.

use std::collections::HashSet;

use crate::api::{Counts, OnAccountDeleted, OnExactMatch, OnNoMatch, PlannedCounts, RunItem};
use crate::engine::approval::Change;
use crate::engine::matching::{Classification, DisputeReason, Situation};
use crate::engine::records::Records;

/// How many items of each kind a status lists.
pub const ITEMS_PER_KIND: usize = 10;

/// The policy reactions an Import plan follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportPolicy {
    pub on_exact_match: OnExactMatch,
    pub on_no_match: OnNoMatch,
    pub on_account_deleted: OnAccountDeleted,
}

/// A grant-group member whose account no longer appears in the app listing. A candidate
/// only: the engine confirms the account is really gone before acting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deletion {
    /// SCIM id of the member in the identity domain.
    pub user_id: String,
    /// Index into the domain users, when the member is still a listed user.
    pub user: Option<u32>,
}

/// The Import plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportPlan {
    /// (account, user): add the user to the grant group.
    pub links: Vec<(u32, u32)>,
    /// Accounts to create users for (and then record).
    pub creates: Vec<u32>,
    /// Members whose account vanished.
    pub deletions: Vec<Deletion>,
    /// What a deletion does.
    pub on_deleted: OnAccountDeleted,
    /// Disputed accounts, for the report.
    pub disputed: Vec<(u32, Situation)>,
    /// Accounts with no match that are left alone.
    pub unmatched: Vec<u32>,
    /// Counts known at planning time (linked/created/deleted/failed are filled by the apply).
    pub counts: Counts,
}

/// Computes the Import plan. `members` are the grant group's member ids, each with the
/// listed domain user it is (looked up once, also for the classification's `is_member`).
pub fn import<'m>(
    accounts: &Records,
    members: impl IntoIterator<Item = (&'m str, Option<u32>)>,
    classification: &Classification,
    policy: ImportPolicy,
) -> ImportPlan {
    let users_len = classification.referenced.len();
    let mut plan = ImportPlan {
        on_deleted: policy.on_account_deleted,
        ..Default::default()
    };
    plan.counts.app_accounts = accounts.len() as i64;
    plan.counts.domain_users = users_len as i64;
    for (i, s) in classification.situations.iter().enumerate() {
        let i = i as u32;
        match s {
            Situation::AlreadyLinked { .. } => plan.counts.already_linked += 1,
            Situation::ExactMatch { user } => {
                if policy.on_exact_match == OnExactMatch::Link {
                    plan.links.push((i, *user));
                }
            }
            Situation::Disputed { .. } => {
                plan.counts.disputed += 1;
                plan.disputed.push((i, s.clone()));
            }
            Situation::NoMatch => match policy.on_no_match {
                OnNoMatch::CreateUser => plan.creates.push(i),
                OnNoMatch::Ignore => {
                    plan.counts.unmatched += 1;
                    plan.unmatched.push(i);
                }
            },
        }
    }
    // Duplicates in a member list are one deletion. Members are nearly all listed
    // users, so a flag per user dedups them; only the others need a set.
    let mut seen_user = vec![false; users_len];
    let mut seen_other = HashSet::new();
    for (m, user) in members {
        let first = match user {
            Some(u) => !std::mem::replace(&mut seen_user[u as usize], true),
            None => seen_other.insert(m),
        };
        if !first {
            continue;
        }
        let referenced = user.is_some_and(|u| classification.referenced[u as usize]);
        if !referenced {
            plan.deletions.push(Deletion {
                user_id: m.to_string(),
                user,
            });
        }
    }
    plan
}

impl ImportPlan {
    /// The creates and deletes counted against the limits.
    pub fn planned(&self) -> PlannedCounts {
        PlannedCounts {
            creates: self.creates.len() as i64,
            deletes: self.deletions.len() as i64,
            links: self.links.len() as i64,
            updates: 0,
        }
    }

    /// The action name of a deletion under this plan's policy.
    pub fn deletion_action(&self) -> &'static str {
        deletion_action(self.on_deleted)
    }

    /// Every write of the plan by SCIM ids and values, what its digest is computed over.
    pub fn changes(&self, accounts: &Records, users: &Records) -> Vec<Change> {
        let links = self.links.iter().map(|&(a, u)| {
            let member = format!("member={}", users.get(u).id());
            Change::new("Link", accounts.get(a).id(), vec![member])
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
            .map(|d| Change::new(self.deletion_action(), d.user_id.as_str(), Vec::new()));
        links.chain(creates).chain(deletions).collect()
    }

    /// The first items of each kind, for `status.planItems`.
    pub fn items(&self, accounts: &Records, users: &Records) -> Vec<RunItem> {
        let acct = |i: u32| accounts.get(i).subject().to_string();
        let user = |i: u32| users.get(i).subject().to_string();
        let mut out = Vec::new();
        out.extend(
            self.links
                .iter()
                .take(ITEMS_PER_KIND)
                .map(|&(a, u)| RunItem {
                    action: "Link".into(),
                    subject: acct(a),
                    reason: Some(format!("matches user {}", user(u))),
                }),
        );
        out.extend(self.creates.iter().take(ITEMS_PER_KIND).map(|&a| RunItem {
            action: "CreateUser".into(),
            subject: acct(a),
            reason: Some("no matching user".into()),
        }));
        out.extend(self.deletions.iter().take(ITEMS_PER_KIND).map(|d| RunItem {
            action: self.deletion_action().into(),
            subject: d.user.map(user).unwrap_or_else(|| d.user_id.clone()),
            reason: Some("account no longer in the app".into()),
        }));
        out.extend(
            self.disputed
                .iter()
                .take(ITEMS_PER_KIND)
                .map(|(a, s)| RunItem {
                    action: "Disputed".into(),
                    subject: acct(*a),
                    reason: Some(dispute_reason(s, users)),
                }),
        );
        out.extend(
            self.unmatched
                .iter()
                .take(ITEMS_PER_KIND)
                .map(|&a| RunItem {
                    action: "NoMatch".into(),
                    subject: acct(a),
                    reason: Some("no matching user; onNoMatch is Ignore".into()),
                }),
        );
        out
    }
}

/// The action name of a deletion.
pub fn deletion_action(on: OnAccountDeleted) -> &'static str {
    match on {
        OnAccountDeleted::RemoveRecord => "RemoveRecord",
        OnAccountDeleted::DeactivateUser => "DeactivateUser",
        OnAccountDeleted::DeleteUser => "DeleteUser",
    }
}

fn dispute_reason(s: &Situation, users: &Records) -> String {
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
    match s {
        Situation::Disputed {
            candidates,
            reason: DisputeReason::SeveralUsers,
        } => format!("matches {} users: {}", candidates.len(), names(candidates)),
        Situation::Disputed {
            candidates,
            reason: DisputeReason::UserClaimedByOthers,
        } => format!("user {} is claimed by several accounts", names(candidates)),
        _ => String::new(),
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

    /// users: alice(member), bob, carol(member, account gone), dave, dave2 (two "dave"s by case),
    /// accounts: alice (linked), bob (exact), erin (no match), DAVE (disputed).
    fn fixture(policy: ImportPolicy) -> (Records, Records, ImportPlan) {
        let users = [
            user("u-alice", "alice"),
            user("u-bob", "bob"),
            user("u-carol", "carol"),
            user("u-dave", "dave"),
            user("u-Dave", "Dave"),
        ];
        let accounts = [
            account("a1", "alice"),
            account("a2", "Bob"),
            account("a3", "erin"),
            account("a4", "DAVE"),
        ];
        let members: Ids = [
            "u-alice", "u-carol", "u-carol", // duplicates in a member list are one deletion
            "u-ghost", // a member that is no longer a user
        ]
        .into_iter()
        .collect();
        let is_member: Vec<bool> = users
            .iter()
            .map(|u| members.iter().any(|m| m == u.id))
            .collect();
        let users = Records::of_users(1, &users);
        let accounts = Records::of_accounts(1, 0, &accounts);
        let index = Index::build(&users, &[false]);
        let c = classify(&accounts, &index, &is_member);
        let members = members.iter().map(|m| (m, index.user_by_id(m)));
        let plan = import(&accounts, members, &c, policy);
        drop(index);
        (accounts, users, plan)
    }

    #[test]
    fn default_policy_links_ignores_unmatched_and_removes_records() {
        let (accounts, users, plan) = fixture(ImportPolicy::default());
        assert_eq!(plan.links, [(1, 1)]);
        assert!(plan.creates.is_empty());
        assert_eq!(
            plan.deletions,
            [
                Deletion {
                    user_id: "u-carol".into(),
                    user: Some(2)
                },
                Deletion {
                    user_id: "u-ghost".into(),
                    user: None
                }
            ]
        );
        assert_eq!(plan.counts.app_accounts, 4);
        assert_eq!(plan.counts.domain_users, 5);
        assert_eq!(plan.counts.already_linked, 1);
        assert_eq!(plan.counts.unmatched, 1);
        assert_eq!(plan.counts.disputed, 1);
        assert_eq!(
            plan.planned(),
            PlannedCounts {
                creates: 0,
                deletes: 2,
                links: 1,
                updates: 0
            }
        );
        let items = plan.items(&accounts, &users);
        let kinds: Vec<&str> = items.iter().map(|i| i.action.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "Link",
                "RemoveRecord",
                "RemoveRecord",
                "Disputed",
                "NoMatch"
            ]
        );
        assert_eq!(items[0].subject, "Bob");
        assert_eq!(items[2].subject, "u-ghost");
        assert!(
            items[3]
                .reason
                .as_deref()
                .unwrap()
                .contains("matches 2 users")
        );
    }

    /// Changes name SCIM ids (accounts in the app, users in the domain) and what they write.
    #[test]
    fn changes_name_ids_and_what_they_write() {
        let policy = ImportPolicy {
            on_no_match: OnNoMatch::CreateUser,
            ..Default::default()
        };
        let (accounts, users, plan) = fixture(policy);
        let mut changes = plan.changes(&accounts, &users);
        changes.sort();
        assert_eq!(
            changes,
            [
                Change::new(
                    "CreateUser",
                    "a3",
                    vec!["userName=erin".into(), "active=true".into()]
                ),
                Change::new("Link", "a2", vec!["member=u-bob".into()]),
                Change::new("RemoveRecord", "u-carol", vec![]),
                Change::new("RemoveRecord", "u-ghost", vec![]),
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
        assert_eq!(plan.creates, [2]);
        assert_eq!(plan.counts.unmatched, 0);
        assert_eq!(plan.deletion_action(), "DeleteUser");
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
        let c = classify(&accounts, &index, &[false; 30]);
        let plan = import(&accounts, [], &c, ImportPolicy::default());
        assert_eq!(plan.links.len(), 30);
        assert_eq!(plan.items(&accounts, &users).len(), ITEMS_PER_KIND);
    }
}
