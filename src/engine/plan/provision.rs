//! The Provision plan (identity domain → app): the grant group's members should hold an
//! account, with the mapped attributes; accounts this operator provisioned for users no
//! longer granted are deactivated or deleted. Pure.
//!
//! Ownership: an account belongs to the domain user whose id is its `externalId` (set at
//! creation); an account without one is adopted by the member with the same userName
//! (case-insensitive). Accounts whose `externalId` is no domain user are left alone: the
//! operator did not provision them.

use std::collections::{HashMap, HashSet};

use crate::api::{Counts, Operation, PlannedCounts, RunItem};
use crate::engine::approval::Change;

use super::ITEMS_PER_KIND;

/// A domain user as provisioning needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProvisionUser {
    pub id: String,
    pub user_name: String,
    pub active: bool,
    /// Values of each mapping's `domainAttribute`.
    pub values: Vec<Vec<String>>,
}

/// An app account as provisioning needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProvisionAccount {
    pub id: String,
    pub user_name: String,
    pub external_id: Option<String>,
    pub active: bool,
    /// Values of each mapping's `appAttribute`.
    pub values: Vec<Vec<String>>,
}

/// An update: the account's mapped attributes that differ, and whether `active` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    pub user: u32,
    pub account: u32,
    /// Indexes of the mappings whose values differ.
    pub mappings: Vec<usize>,
    /// `Some(true)`: the account is inactive and the user active again. (Deactivating is
    /// not an update: see [`ProvisionPlan::deactivations`].)
    pub active: Option<bool>,
    /// An adopted account gets the user's id as `externalId`.
    pub set_external_id: bool,
}

/// The Provision plan. Indexes point into the members and accounts given to [`provision`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProvisionPlan {
    /// Members without an account.
    pub creates: Vec<u32>,
    pub updates: Vec<Update>,
    /// Accounts of users no longer granted, and active accounts of inactive members, to
    /// deactivate.
    pub deactivations: Vec<u32>,
    /// Accounts of users no longer granted, to delete.
    pub deletions: Vec<u32>,
    pub counts: Counts,
}

/// The user's values of `mappings`, one `mapping[i]=value` each, as a change writes them.
fn mapped(user: &ProvisionUser, mappings: &[usize]) -> Vec<String> {
    mappings
        .iter()
        .flat_map(|&i| {
            user.values[i]
                .iter()
                .map(move |v| format!("mapping[{i}]={v}"))
        })
        .collect()
}

fn same_values(a: &[String], b: &[String]) -> bool {
    let norm = |v: &[String]| {
        let mut v: Vec<String> = v
            .iter()
            .map(|s| s.trim().to_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    norm(a) == norm(b)
}

/// Computes the Provision plan. `members` are the grant group's users; `domain_ids` every
/// domain user id (to tell a revoked user's account from an account we never provisioned).
pub fn provision(
    members: &[ProvisionUser],
    domain_ids: &HashSet<String>,
    accounts: &[ProvisionAccount],
    operations: &[Operation],
) -> ProvisionPlan {
    let allowed = |o: Operation| operations.contains(&o);
    let mut plan = ProvisionPlan::default();
    plan.counts.app_accounts = accounts.len() as i64;
    plan.counts.domain_users = members.len() as i64;
    let owned = Ownership::of(members, domain_ids, accounts, &mut plan.counts);

    for (m, user) in members.iter().enumerate() {
        let m = m as u32;
        match owned.account_of[m as usize] {
            None if user.active => {
                if allowed(Operation::Create) {
                    plan.creates.push(m);
                } else {
                    plan.counts.not_allowed += 1;
                }
            }
            // An inactive member gets no new account.
            None => {}
            Some(a) => {
                let account = &accounts[a as usize];
                plan.bring_in_line(m, user, a, account, owned.adopted[m as usize], allowed);
            }
        }
    }
    for a in owned.revoked {
        if allowed(Operation::Delete) {
            plan.deletions.push(a);
        } else if !accounts[a as usize].active {
            // Already deactivated: nothing left to do.
        } else if allowed(Operation::Deactivate) {
            plan.deactivations.push(a);
        } else {
            plan.counts.not_allowed += 1;
        }
    }
    plan
}

/// Which account each member holds, and the accounts of users no longer granted.
struct Ownership {
    /// Per member, its account.
    account_of: Vec<Option<u32>>,
    /// Per member, whether its account was adopted by userName.
    adopted: Vec<bool>,
    /// Accounts of domain users that are no longer members.
    revoked: Vec<u32>,
}

impl Ownership {
    /// Each member's account: by externalId first, then adoption by userName. Accounts
    /// left to a human (disputed) or not ours (unmatched) are counted in `counts`.
    fn of(
        members: &[ProvisionUser],
        domain_ids: &HashSet<String>,
        accounts: &[ProvisionAccount],
        counts: &mut Counts,
    ) -> Self {
        let member_by_id: HashMap<&str, u32> = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.as_str(), i as u32))
            .collect();
        let mut member_by_name: HashMap<String, Vec<u32>> = HashMap::new();
        for (i, m) in members.iter().enumerate() {
            member_by_name
                .entry(m.user_name.to_lowercase())
                .or_default()
                .push(i as u32);
        }
        let mut owned = Ownership {
            account_of: vec![None; members.len()],
            adopted: vec![false; members.len()],
            revoked: Vec::new(),
        };
        let mut adoptable = Vec::new();
        for (a, account) in accounts.iter().enumerate() {
            let a = a as u32;
            match account.external_id.as_deref() {
                Some(ext) => match member_by_id.get(ext) {
                    Some(&m) if owned.account_of[m as usize].is_none() => {
                        owned.account_of[m as usize] = Some(a)
                    }
                    // A second account for the same member: leave it for a human.
                    Some(_) => counts.disputed += 1,
                    None if domain_ids.contains(ext) => owned.revoked.push(a),
                    None => counts.unmatched += 1,
                },
                None => adoptable.push(a),
            }
        }
        for a in adoptable {
            let name = accounts[a as usize].user_name.to_lowercase();
            match member_by_name.get(&name).map(Vec::as_slice) {
                Some([m]) if owned.account_of[*m as usize].is_none() => {
                    owned.account_of[*m as usize] = Some(a);
                    owned.adopted[*m as usize] = true;
                }
                Some([_]) | Some([_, _, ..]) => counts.disputed += 1,
                _ => counts.unmatched += 1,
            }
        }
        owned
    }
}

impl ProvisionPlan {
    /// Plans what brings member `m`'s account `a` in line with the user: an update of the
    /// mapped values that differ (and reactivation, and the externalId of an adopted
    /// account), or deactivation.
    fn bring_in_line(
        &mut self,
        m: u32,
        user: &ProvisionUser,
        a: u32,
        account: &ProvisionAccount,
        adopted: bool,
        allowed: impl Fn(Operation) -> bool,
    ) {
        let mappings: Vec<usize> = (0..user.values.len())
            .filter(|&i| {
                !same_values(
                    &user.values[i],
                    account.values.get(i).map(Vec::as_slice).unwrap_or_default(),
                )
            })
            .collect();
        // Deactivating is the Deactivate operation, held to maxDeletes like a
        // revoked member's; the rest (reactivation too) is an Update.
        let deactivate = account.active && !user.active;
        let reactivate = !account.active && user.active;
        let set_external_id = adopted;
        let update = !mappings.is_empty() || reactivate || set_external_id;
        if !deactivate && !update {
            self.counts.already_linked += 1;
            return;
        }
        if deactivate {
            if allowed(Operation::Deactivate) {
                self.deactivations.push(a);
            } else {
                self.counts.not_allowed += 1;
            }
        }
        if update {
            if allowed(Operation::Update) {
                self.updates.push(Update {
                    user: m,
                    account: a,
                    mappings,
                    active: reactivate.then_some(true),
                    set_external_id,
                });
            } else {
                self.counts.not_allowed += 1;
            }
        }
    }

    /// Creates and deletes (deactivations count as deletes) against the limits.
    pub fn planned(&self) -> PlannedCounts {
        PlannedCounts {
            creates: self.creates.len() as i64,
            deletes: (self.deactivations.len() + self.deletions.len()) as i64,
            links: 0,
            updates: self.updates.len() as i64,
        }
    }

    /// Every write of the plan by SCIM ids and values, what its digest is computed over.
    pub fn changes(&self, members: &[ProvisionUser], accounts: &[ProvisionAccount]) -> Vec<Change> {
        let account_id = |a: u32| accounts[a as usize].id.as_str();
        let creates = self.creates.iter().map(|&m| {
            let user = &members[m as usize];
            let all: Vec<usize> = (0..user.values.len()).collect();
            Change::new("CreateAccount", user.id.as_str(), mapped(user, &all))
        });
        let updates = self.updates.iter().map(|u| {
            let user = &members[u.user as usize];
            let mut writes = mapped(user, &u.mappings);
            writes.extend(u.active.map(|a| format!("active={a}")));
            if u.set_external_id {
                writes.push(format!("externalId={}", user.id));
            }
            Change::new("UpdateAccount", account_id(u.account), writes)
        });
        let remove = |action| move |&a: &u32| Change::new(action, account_id(a), Vec::new());
        creates
            .chain(updates)
            .chain(self.deactivations.iter().map(remove("DeactivateAccount")))
            .chain(self.deletions.iter().map(remove("DeleteAccount")))
            .collect()
    }

    /// The first items of each kind, for `status.planItems`.
    pub fn items(&self, members: &[ProvisionUser], accounts: &[ProvisionAccount]) -> Vec<RunItem> {
        let user = |m: u32| members[m as usize].user_name.clone();
        let acct = |a: u32| accounts[a as usize].user_name.clone();
        let item = |action: &str, subject: String, reason: &str| RunItem {
            action: action.into(),
            subject,
            reason: Some(reason.into()),
        };
        let mut out = Vec::new();
        out.extend(
            self.creates
                .iter()
                .take(ITEMS_PER_KIND)
                .map(|&m| item("CreateAccount", user(m), "granted, no account")),
        );
        out.extend(self.updates.iter().take(ITEMS_PER_KIND).map(|u| {
            item(
                "UpdateAccount",
                user(u.user),
                "mapped attributes or active differ",
            )
        }));
        out.extend(self.deactivations.iter().take(ITEMS_PER_KIND).map(|&a| {
            item(
                "DeactivateAccount",
                acct(a),
                "no longer granted or inactive",
            )
        }));
        out.extend(
            self.deletions
                .iter()
                .take(ITEMS_PER_KIND)
                .map(|&a| item("DeleteAccount", acct(a), "no longer granted")),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, name: &str, active: bool, email: &str) -> ProvisionUser {
        ProvisionUser {
            id: id.into(),
            user_name: name.into(),
            active,
            values: vec![vec![name.into()], vec![email.into()]],
        }
    }
    fn account(
        id: &str,
        name: &str,
        ext: Option<&str>,
        active: bool,
        email: &str,
    ) -> ProvisionAccount {
        ProvisionAccount {
            id: id.into(),
            user_name: name.into(),
            external_id: ext.map(Into::into),
            active,
            values: vec![vec![name.into()], vec![email.into()]],
        }
    }
    const ALL: [Operation; 4] = [
        Operation::Create,
        Operation::Update,
        Operation::Deactivate,
        Operation::Delete,
    ];

    /// members: alice (in sync), bob (email changed), carol (no account), dave (inactive,
    /// active account), erin (account adopted by userName); non-member frank has an account
    /// we provisioned; grace's account was never ours.
    fn fixture(ops: &[Operation]) -> ProvisionPlan {
        let members = vec![
            user("u-alice", "alice", true, "alice@x"),
            user("u-bob", "bob", true, "bob@new"),
            user("u-carol", "carol", true, "carol@x"),
            user("u-dave", "dave", false, "dave@x"),
            user("u-erin", "erin", true, "erin@x"),
        ];
        let domain_ids: HashSet<String> =
            ["u-alice", "u-bob", "u-carol", "u-dave", "u-erin", "u-frank"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let accounts = vec![
            account("a1", "ALICE", Some("u-alice"), true, "Alice@X"),
            account("a2", "bob", Some("u-bob"), true, "bob@old"),
            account("a4", "dave", Some("u-dave"), true, "dave@x"),
            account("a5", "Erin", None, true, "erin@x"),
            account("a6", "frank", Some("u-frank"), true, "frank@x"),
            account("a7", "grace", Some("someone-else"), true, "grace@x"),
        ];
        provision(&members, &domain_ids, &accounts, ops)
    }

    #[test]
    fn full_operations() {
        let p = fixture(&ALL);
        assert_eq!(p.creates, [2]);
        assert_eq!(
            p.updates,
            [
                Update {
                    user: 1,
                    account: 1,
                    mappings: vec![1],
                    active: None,
                    set_external_id: false
                },
                Update {
                    user: 4,
                    account: 3,
                    mappings: vec![],
                    active: None,
                    set_external_id: true
                }
            ]
        );
        assert_eq!(p.deactivations, [2], "dave is inactive");
        assert_eq!(p.deletions, [4]);
        assert_eq!(
            p.counts.already_linked, 1,
            "alice (values compare case-insensitively)"
        );
        assert_eq!(p.counts.unmatched, 1, "grace is not ours");
        assert_eq!(
            p.planned(),
            PlannedCounts {
                creates: 1,
                deletes: 2,
                links: 0,
                updates: 2
            }
        );
    }

    #[test]
    fn default_operations_deactivate_instead_of_delete() {
        let p = fixture(&[Operation::Create, Operation::Update, Operation::Deactivate]);
        assert!(p.deletions.is_empty());
        assert_eq!(p.deactivations, [2, 4]);
    }

    /// Deactivating an inactive member's account is Deactivate, never part of an Update.
    #[test]
    fn without_deactivate_an_inactive_members_account_stays_active() {
        let p = fixture(&[Operation::Create, Operation::Update]);
        assert!(p.deactivations.is_empty() && p.deletions.is_empty());
        assert!(p.updates.iter().all(|u| u.active.is_none()));
        assert_eq!(p.updates.len(), 2, "bob's drift and erin's adoption");
        assert_eq!(p.counts.not_allowed, 2, "dave's deactivation and frank's");
    }

    /// A deactivated account of an active member is reactivated by an Update.
    #[test]
    fn an_active_members_inactive_account_is_reactivated() {
        let members = vec![user("u1", "alice", true, "a@x")];
        let ids: HashSet<String> = ["u1".to_string()].into();
        let accounts = vec![account("a1", "alice", Some("u1"), false, "a@x")];
        let p = provision(&members, &ids, &accounts, &ALL);
        assert_eq!(p.updates.len(), 1);
        assert_eq!(p.updates[0].active, Some(true));
        assert!(p.deactivations.is_empty());
    }

    #[test]
    fn without_update_an_inactive_member_is_deactivated_and_drift_is_reported() {
        let p = fixture(&[Operation::Deactivate]);
        assert!(p.creates.is_empty() && p.updates.is_empty());
        assert_eq!(p.deactivations, [2, 4]);
        assert_eq!(
            p.counts.not_allowed, 3,
            "carol's create, bob's and erin's updates"
        );
    }

    #[test]
    fn two_accounts_for_one_member_are_disputed() {
        let members = vec![user("u1", "alice", true, "a@x")];
        let ids: HashSet<String> = ["u1".to_string()].into();
        let accounts = vec![
            account("a1", "alice", Some("u1"), true, "a@x"),
            account("a2", "alice2", Some("u1"), true, "a@x"),
        ];
        let p = provision(&members, &ids, &accounts, &ALL);
        assert_eq!(p.counts.disputed, 1);
        assert_eq!(p.counts.already_linked, 1);
        assert!(p.creates.is_empty() && p.deletions.is_empty());
    }

    /// A domain with a third user, u3, no longer granted.
    fn domain_ids(members: &[ProvisionUser]) -> HashSet<String> {
        let mut ids: HashSet<String> = members.iter().map(|m| m.id.clone()).collect();
        ids.insert("u3".into());
        ids
    }

    fn digest_of(members: &[ProvisionUser], accounts: &[ProvisionAccount]) -> String {
        let ids = domain_ids(members);
        let p = provision(members, &ids, accounts, &ALL);
        crate::engine::approval::digest(p.changes(members, accounts))
    }

    /// The plan's changes name SCIM ids and values, never listing positions: the same
    /// servers listed in another order give the same digest; one changed value another.
    #[test]
    fn changes_are_ids_and_values_and_their_digest_ignores_listing_order() {
        let mut members = vec![
            user("u1", "alice", true, "alice@x"),
            user("u2", "bob", true, "bob@new"),
        ];
        let mut accounts = vec![
            account("a2", "bob", Some("u2"), true, "bob@old"),
            account("a3", "alice", Some("u1"), false, "alice@x"),
            account("a4", "carol", Some("u3"), true, "carol@x"),
        ];
        let ids = domain_ids(&members);
        let p = provision(&members, &ids, &accounts, &ALL);
        let changes = p.changes(&members, &accounts);
        assert!(changes.contains(&Change::new(
            "UpdateAccount",
            "a2",
            vec!["mapping[1]=bob@new".into()]
        )));
        assert!(changes.contains(&Change::new(
            "UpdateAccount",
            "a3",
            vec!["active=true".into()]
        )));
        assert!(changes.contains(&Change::new("DeleteAccount", "a4", vec![])));
        let d = digest_of(&members, &accounts);
        members.reverse();
        accounts.reverse();
        assert_eq!(digest_of(&members, &accounts), d);
        members[0].values[1] = vec!["bob@newer".into()];
        assert_ne!(digest_of(&members, &accounts), d);
    }
}
