//! The Provision plan (identity domain → app): granted users should hold an account, with
//! the mapped attributes; accounts of recorded users no longer granted are deactivated or
//! deleted. Which user owns an account is matching's answer, the same as Import's, and what
//! happens to it is the state table's ([`crate::engine::state`]). Pure.

use crate::api::{Counts, Operation, PlannedCounts, RunItem};
use crate::engine::approval::Change;
use crate::engine::matching::{Classification, Situation};
use crate::engine::state::{self, AccountState, Members, Standing, UserState};

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
    /// An adopted account without an `externalId` gets the user's id.
    pub set_external_id: bool,
    /// The account is adopted: the user is recorded after the update (if any).
    pub adopt: bool,
}

impl Update {
    /// Whether the account itself is written (an adoption may only record).
    pub fn writes_account(&self) -> bool {
        !self.mappings.is_empty() || self.active.is_some() || self.set_external_id
    }
}

/// An account for a granted user with none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Create {
    pub user: u32,
    /// The user is already recorded (synchronization off, the account gone): no record
    /// write after the create.
    pub recorded: bool,
}

/// An account to deactivate or delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Removal {
    pub account: u32,
    /// The account's owner.
    pub user: u32,
    /// Its user is no longer granted (else: an inactive granted user).
    pub revoked: bool,
}

/// The Provision plan. Indexes point into the users and accounts given to [`provision`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProvisionPlan {
    pub creates: Vec<Create>,
    /// Updates and adoptions.
    pub updates: Vec<Update>,
    /// Accounts of revoked users, and active accounts of inactive granted users, to
    /// deactivate (the record stays).
    pub deactivations: Vec<Removal>,
    /// Accounts of revoked users to delete (then their record).
    pub deletions: Vec<Removal>,
    /// Disputed accounts, for the report.
    pub disputed: Vec<(u32, Situation)>,
    /// Granted and recorded users whose account is gone while synchronization is on:
    /// Import reflects the deletion; Provision does not recreate it.
    pub gone: Vec<u32>,
    /// Granted users without an account that get none now (inactive, or Create not
    /// allowed).
    pub pending: Vec<u32>,
    pub counts: Counts,
}

/// What a Provision plan is computed from.
pub struct ProvisionInputs<'a> {
    pub users: &'a [ProvisionUser],
    pub accounts: &'a [ProvisionAccount],
    pub members: &'a Members,
    pub classification: &'a Classification,
    pub operations: &'a [Operation],
    /// With synchronization on, the app is authoritative for deletions.
    pub synchronization: bool,
    /// The app stores `externalId`: an adopted account gets the user's id in it.
    pub external_id_writable: bool,
    /// Mappings (indexes) the app takes on create but cannot change: never updated.
    pub create_only: &'a [usize],
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

/// Computes the Provision plan from the table's states.
pub fn provision(inputs: &ProvisionInputs<'_>) -> ProvisionPlan {
    let mut plan = ProvisionPlan::default();
    plan.counts.app_accounts = inputs.accounts.len() as i64;
    plan.counts.domain_users = inputs.users.len() as i64;
    let situations = &inputs.classification.situations;
    for (a, (s, account)) in situations.iter().zip(inputs.accounts).enumerate() {
        let standing = match s {
            Situation::Owned { user } => inputs.members.of(*user),
            _ => Standing::default(),
        };
        let state = state::of_account(s, account.active, standing);
        plan.add_account(inputs, a as u32, s, state);
    }
    for (u, state) in inputs
        .members
        .without_account(&inputs.classification.referenced)
    {
        plan.add_user(inputs, u, state);
    }
    plan.counts.unresolved_members = inputs.members.unlisted_grants as i64;
    plan
}

impl ProvisionPlan {
    /// One account's row of the table.
    fn add_account(
        &mut self,
        inputs: &ProvisionInputs<'_>,
        a: u32,
        s: &Situation,
        state: AccountState,
    ) {
        let allowed = |o: Operation| inputs.operations.contains(&o);
        let account = &inputs.accounts[a as usize];
        let c = &mut self.counts;
        match state {
            AccountState::NoMatch => c.unmatched += 1,
            AccountState::Disputed => {
                c.disputed += 1;
                self.disputed.push((a, s.clone()));
            }
            AccountState::Inactive { .. } => c.inactive += 1,
            // Someone's account, but not one this app grants or recorded: not ours.
            AccountState::Unclaimed { .. } => c.ignored += 1,
            AccountState::Granted { user } => {
                let user_doc = &inputs.users[user as usize];
                let mut update = self.differences(inputs, user, user_doc, a, account);
                update.adopt = true;
                update.set_external_id =
                    account.external_id.is_none() && inputs.external_id_writable;
                self.updates.push(update);
                self.counts.skipped += 1;
            }
            AccountState::Linked { user } => {
                let user_doc = &inputs.users[user as usize];
                let deactivate = account.active && !user_doc.active;
                if deactivate && allowed(Operation::Deactivate) {
                    self.deactivations.push(Removal {
                        account: a,
                        user,
                        revoked: false,
                    });
                    c.skipped += 1;
                    return;
                }
                // Deactivating is never part of an Update.
                c.not_allowed += i64::from(deactivate);
                let update = self.differences(inputs, user, user_doc, a, account);
                if !update.writes_account() {
                    self.counts.already_linked += 1;
                } else if allowed(Operation::Update) {
                    self.updates.push(update);
                    self.counts.skipped += 1;
                } else {
                    self.counts.already_linked += 1;
                    self.counts.not_allowed += 1;
                }
            }
            AccountState::Revoked { user } => {
                let removal = Removal {
                    account: a,
                    user,
                    revoked: true,
                };
                if allowed(Operation::Delete) {
                    self.deletions.push(removal);
                    c.skipped += 1;
                } else if account.active && allowed(Operation::Deactivate) {
                    self.deactivations.push(removal);
                    c.skipped += 1;
                } else {
                    // Already deactivated, or nothing allowed: it stays revoked.
                    c.revoked += 1;
                    c.not_allowed += i64::from(account.active);
                }
            }
        }
    }

    /// One granted or recorded user without an account.
    fn add_user(&mut self, inputs: &ProvisionInputs<'_>, u: u32, state: UserState) {
        let active = inputs.users[u as usize].active;
        let may_create = inputs.operations.contains(&Operation::Create);
        match state {
            UserState::PendingProvisioning => {
                self.counts.pending_provisioning += 1;
                if active && may_create {
                    self.creates.push(Create {
                        user: u,
                        recorded: false,
                    });
                } else {
                    self.counts.not_allowed += i64::from(active);
                    self.pending.push(u);
                }
            }
            // The app decides deletions while synchronization is on: Import reflects it.
            UserState::AccountGone if inputs.synchronization => self.gone.push(u),
            UserState::AccountGone if active && may_create => self.creates.push(Create {
                user: u,
                recorded: true,
            }),
            UserState::AccountGone => self.pending.push(u),
            UserState::RecordOnly => {}
        }
    }

    /// What differs between user `m` and its account `a` (not yet whether it is adopted).
    fn differences(
        &self,
        inputs: &ProvisionInputs<'_>,
        m: u32,
        user: &ProvisionUser,
        a: u32,
        account: &ProvisionAccount,
    ) -> Update {
        let mappings: Vec<usize> = (0..user.values.len())
            .filter(|i| !inputs.create_only.contains(i))
            .filter(|&i| {
                !same_values(
                    &user.values[i],
                    account.values.get(i).map(Vec::as_slice).unwrap_or_default(),
                )
            })
            .collect();
        Update {
            user: m,
            account: a,
            mappings,
            active: (!account.active && user.active).then_some(true),
            set_external_id: false,
            adopt: false,
        }
    }

    /// Creates and deletes (deactivations count as deletes) against the limits.
    pub fn planned(&self) -> PlannedCounts {
        PlannedCounts {
            creates: self.creates.len() as i64,
            deletes: (self.deactivations.len() + self.deletions.len()) as i64,
            links: self.updates.iter().filter(|u| u.adopt).count() as i64,
            updates: self.updates.iter().filter(|u| !u.adopt).count() as i64,
        }
    }

    /// Every write of the plan by SCIM ids and values, what its digest is computed over.
    pub fn changes<'a>(
        &'a self,
        users: &'a [ProvisionUser],
        accounts: &'a [ProvisionAccount],
    ) -> impl Iterator<Item = Change> + 'a {
        let account_id = move |a: u32| accounts[a as usize].id.as_str();
        let creates = self.creates.iter().map(|c| {
            let user = &users[c.user as usize];
            let all: Vec<usize> = (0..user.values.len()).collect();
            Change::new("CreateAccount", user.id.as_str(), mapped(user, &all))
        });
        let updates = self.updates.iter().map(move |u| {
            let user = &users[u.user as usize];
            let mut writes = mapped(user, &u.mappings);
            writes.extend(u.active.map(|a| format!("active={a}")));
            if u.set_external_id {
                writes.push(format!("externalId={}", user.id));
            }
            if u.adopt {
                writes.push(format!("record={}", user.id));
            }
            let action = if u.adopt {
                "AdoptAccount"
            } else {
                "UpdateAccount"
            };
            Change::new(action, account_id(u.account), writes)
        });
        let remove =
            |action| move |r: &Removal| Change::new(action, account_id(r.account), Vec::new());
        creates
            .chain(updates)
            .chain(self.deactivations.iter().map(remove("DeactivateAccount")))
            .chain(self.deletions.iter().map(remove("DeleteAccount")))
    }

    /// The first items of each kind, for `status.planItems`.
    pub fn items(&self, users: &[ProvisionUser], accounts: &[ProvisionAccount]) -> Vec<RunItem> {
        let user = |m: u32| users[m as usize].user_name.clone();
        let acct = |a: u32| accounts[a as usize].user_name.clone();
        let item = |action: &str, subject: String, reason: &str| RunItem {
            action: action.into(),
            subject,
            reason: Some(reason.into()),
        };
        let mut out = Vec::new();
        out.extend(self.creates.iter().take(ITEMS_PER_KIND).map(|c| {
            let why = if c.recorded {
                "granted, its account is gone and synchronization is off: recreated"
            } else {
                "granted, no account"
            };
            item("CreateAccount", user(c.user), why)
        }));
        out.extend(self.updates.iter().take(ITEMS_PER_KIND).map(|u| {
            if u.adopt {
                item("AdoptAccount", acct(u.account), "granted, matches the user")
            } else {
                item(
                    "UpdateAccount",
                    user(u.user),
                    "mapped attributes or active differ",
                )
            }
        }));
        out.extend(self.deactivations.iter().take(ITEMS_PER_KIND).map(|r| {
            let why = if r.revoked {
                "no longer granted"
            } else {
                "the user is inactive"
            };
            item("DeactivateAccount", acct(r.account), why)
        }));
        out.extend(
            self.deletions
                .iter()
                .take(ITEMS_PER_KIND)
                .map(|r| item("DeleteAccount", acct(r.account), "no longer granted")),
        );
        out.extend(self.disputed.iter().take(ITEMS_PER_KIND).map(|(a, _)| {
            item(
                "Disputed",
                acct(*a),
                "its owner is ambiguous: never acted on",
            )
        }));
        out.extend(self.gone.iter().take(ITEMS_PER_KIND).map(|&u| {
            item(
                "AccountGone",
                user(u),
                "the recorded account is gone and synchronization is on: Import reflects it",
            )
        }));
        out.extend(self.pending.iter().take(ITEMS_PER_KIND).map(|&u| {
            item(
                "PendingProvisioning",
                user(u),
                "granted, no account: the user is inactive or Create is not allowed",
            )
        }));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::matching::{Index, classify};
    use crate::engine::records::{AppAccount, DomainUser, Ids, Records};

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

    /// Plans with the userName rule (case-insensitive), as Import would match.
    fn plan_of(
        users: &[ProvisionUser],
        grants: &[&str],
        records: &[&str],
        accounts: &[ProvisionAccount],
        operations: &[Operation],
        synchronization: bool,
    ) -> ProvisionPlan {
        plan_with(
            users,
            (grants, records),
            accounts,
            operations,
            synchronization,
            &[],
        )
    }

    fn plan_with(
        users: &[ProvisionUser],
        (grants, records): (&[&str], &[&str]),
        accounts: &[ProvisionAccount],
        operations: &[Operation],
        synchronization: bool,
        create_only: &[usize],
    ) -> ProvisionPlan {
        let domain: Vec<DomainUser> = users
            .iter()
            .map(|u| DomainUser {
                id: u.id.clone(),
                user_name: u.user_name.clone(),
                active: u.active,
                keys: vec![vec![u.user_name.clone()]],
            })
            .collect();
        let app: Vec<AppAccount> = accounts
            .iter()
            .map(|a| AppAccount {
                id: a.id.clone(),
                user_name: a.user_name.clone(),
                external_id: a.external_id.clone(),
                active: a.active,
                keys: vec![vec![a.user_name.clone()]],
                attrs: Vec::new(),
            })
            .collect();
        let domain = Records::of_users(1, &domain);
        let app = Records::of_accounts(1, 0, &app);
        let index = Index::build(&domain, &[false]);
        let grants: Ids = grants.iter().collect();
        let records: Ids = records.iter().collect();
        let members = Members::new(&grants, &records, &index);
        let classification = classify(&app, &index);
        provision(&ProvisionInputs {
            users,
            accounts,
            members: &members,
            classification: &classification,
            operations,
            synchronization,
            external_id_writable: true,
            create_only,
        })
    }

    /// granted + recorded: alice (in sync), bob (email changed), dave (inactive, active
    /// account), kim (account gone); granted only: carol (no account), erin (an account
    /// matched by userName: adopted); recorded only: frank (account: revoked), gus (account
    /// already deactivated); nobody: grace (an account of a user this app does not grant),
    /// and an account with no user at all.
    fn users() -> Vec<ProvisionUser> {
        vec![
            user("u-alice", "alice", true, "alice@x"),
            user("u-bob", "bob", true, "bob@new"),
            user("u-carol", "carol", true, "carol@x"),
            user("u-dave", "dave", false, "dave@x"),
            user("u-erin", "erin", true, "erin@x"),
            user("u-frank", "frank", true, "frank@x"),
            user("u-grace", "grace", true, "grace@x"),
            user("u-gus", "gus", true, "gus@x"),
            user("u-kim", "kim", true, "kim@x"),
        ]
    }
    fn accounts() -> Vec<ProvisionAccount> {
        vec![
            account("a1", "ALICE", Some("u-alice"), true, "Alice@X"),
            account("a2", "bob", Some("u-bob"), true, "bob@old"),
            account("a4", "dave", Some("u-dave"), true, "dave@x"),
            account("a5", "Erin", None, true, "erin@x"),
            account("a6", "frank", Some("u-frank"), true, "frank@x"),
            account("a7", "grace", None, true, "grace@x"),
            account("a8", "gus", Some("u-gus"), false, "gus@x"),
            account("a9", "nobody", Some("elsewhere"), true, "n@x"),
        ]
    }
    const GRANTS: [&str; 6] = ["u-alice", "u-bob", "u-carol", "u-dave", "u-erin", "u-kim"];
    const RECORDS: [&str; 6] = ["u-alice", "u-bob", "u-dave", "u-frank", "u-gus", "u-kim"];

    fn fixture(ops: &[Operation], synchronization: bool) -> ProvisionPlan {
        plan_of(
            &users(),
            &GRANTS,
            &RECORDS,
            &accounts(),
            ops,
            synchronization,
        )
    }

    fn removal(account: u32, user: u32, revoked: bool) -> Removal {
        Removal {
            account,
            user,
            revoked,
        }
    }

    #[test]
    fn every_row_of_the_table() {
        let p = fixture(&ALL, true);
        assert_eq!(
            p.creates,
            [Create {
                user: 2,
                recorded: false
            }]
        );
        assert_eq!(
            p.updates,
            [
                Update {
                    user: 1,
                    account: 1,
                    mappings: vec![1],
                    active: None,
                    set_external_id: false,
                    adopt: false
                },
                Update {
                    user: 4,
                    account: 3,
                    mappings: vec![],
                    active: None,
                    set_external_id: true,
                    adopt: true
                }
            ]
        );
        assert_eq!(p.deactivations, [removal(2, 3, false)], "dave is inactive");
        assert_eq!(p.deletions, [removal(4, 5, true), removal(6, 7, true)]);
        // Synchronization on: kim's account is gone, Import reflects it; no recreate.
        assert_eq!(p.gone, [8]);
        let c = &p.counts;
        assert_eq!(
            c.already_linked, 1,
            "alice (values compare case-insensitively)"
        );
        assert_eq!((c.ignored, c.unmatched), (1, 1), "grace's and nobody's");
        assert_eq!(c.pending_provisioning, 1, "carol");
        assert_eq!(c.skipped, 5);
        assert_eq!(
            c.accounted(crate::api::Direction::Provision),
            c.app_accounts,
            "every account counted once"
        );
        assert_eq!(
            p.planned(),
            PlannedCounts {
                creates: 1,
                deletes: 3,
                links: 1,
                updates: 1
            }
        );
    }

    /// Synchronization off: the grant group alone decides; a recorded account that is
    /// gone is recreated.
    #[test]
    fn without_synchronization_a_gone_account_is_recreated() {
        let p = fixture(&ALL, false);
        assert!(p.gone.is_empty());
        assert_eq!(
            p.creates,
            [
                Create {
                    user: 2,
                    recorded: false
                },
                Create {
                    user: 8,
                    recorded: true
                }
            ]
        );
    }

    #[test]
    fn default_operations_deactivate_instead_of_delete() {
        let p = fixture(
            &[Operation::Create, Operation::Update, Operation::Deactivate],
            true,
        );
        assert!(p.deletions.is_empty());
        assert_eq!(p.deactivations, [removal(2, 3, false), removal(4, 5, true)]);
        assert_eq!(p.counts.revoked, 1, "gus's account is already inactive");
    }

    /// An inactive account is never adopted, and a granted user whose only match is one
    /// gets no second account either.
    #[test]
    fn inactive_accounts_are_never_adopted() {
        let users = [user("u1", "alice", true, "a@x")];
        let accounts = [account("a1", "alice", None, false, "a@x")];
        let p = plan_of(&users, &["u1"], &[], &accounts, &ALL, true);
        assert!(p.updates.is_empty() && p.creates.is_empty());
        assert_eq!(p.counts.inactive, 1);
    }

    /// A deactivated account of an active member is reactivated by an Update.
    #[test]
    fn an_active_members_inactive_account_is_reactivated() {
        let users = [user("u1", "alice", true, "a@x")];
        let accounts = [account("a1", "alice", Some("u1"), false, "a@x")];
        let p = plan_of(&users, &["u1"], &["u1"], &accounts, &ALL, true);
        assert_eq!(p.updates.len(), 1);
        assert_eq!(p.updates[0].active, Some(true));
        assert!(p.deactivations.is_empty());
    }

    #[test]
    fn without_update_drift_is_reported_and_nothing_created() {
        let p = fixture(&[Operation::Deactivate], true);
        assert!(p.creates.is_empty());
        assert_eq!(
            p.updates.len(),
            1,
            "an adoption records, whatever the operations"
        );
        assert_eq!(p.deactivations.len(), 2);
        assert_eq!(p.counts.not_allowed, 2, "carol's create, bob's update");
        assert_eq!(p.pending, [2]);
    }

    /// Matching decides ownership as Import does: an account whose externalId names one
    /// user while its userName finds another is disputed, never adopted or updated.
    #[test]
    fn an_account_claimed_two_ways_is_disputed() {
        let users = [
            user("u1", "alice", true, "a@x"),
            user("u2", "bob", true, "b@x"),
        ];
        let accounts = [account("a1", "alice", Some("u2"), true, "a@x")];
        let p = plan_of(&users, &["u1", "u2"], &[], &accounts, &ALL, true);
        assert_eq!(p.counts.disputed, 1);
        assert!(p.updates.is_empty());
        assert!(
            p.creates.is_empty(),
            "both users are referenced by the disputed account"
        );
    }

    fn digest_of(users: &[ProvisionUser], accounts: &[ProvisionAccount]) -> String {
        let p = plan_of(
            users,
            &["u1", "u2"],
            &["u1", "u2", "u3"],
            accounts,
            &ALL,
            true,
        );
        crate::engine::approval::digest(p.changes(users, accounts))
    }

    /// The plan's changes name SCIM ids and values, never listing positions: the same
    /// servers listed in another order give the same digest; one changed value another.
    #[test]
    fn members_that_are_no_listed_user_are_counted_unresolved() {
        // Canaille puts the userName in members[].value: no listed user has that id.
        let grants = ["alice", "bob", "u-carol"];
        let p = plan_of(&users(), &grants, &[], &[], &ALL, false);
        assert_eq!(p.creates.len(), 1, "carol only");
        assert_eq!(p.counts.unresolved_members, 2);
        assert_eq!(
            p.counts.pending_provisioning, 1,
            "carol only: {:?}",
            p.counts
        );
    }

    #[test]
    fn create_only_attributes_are_never_updated() {
        // bob's e-mail differs; with that mapping create-only (Canaille's userName) his
        // account is left as it is, and so is the count.
        let p = plan_with(&users(), (&GRANTS, &RECORDS), &accounts(), &ALL, true, &[1]);
        assert!(p.updates.iter().all(|u| u.user != 1), "{:?}", p.updates);
        let q = fixture(&ALL, true);
        assert!(q.updates.iter().any(|u| u.user == 1 && u.mappings == [1]));
    }

    #[test]
    fn changes_are_ids_and_values_and_their_digest_ignores_listing_order() {
        let mut users = vec![
            user("u1", "alice", true, "alice@x"),
            user("u2", "bob", true, "bob@new"),
            user("u3", "carol", true, "carol@x"),
        ];
        let mut accounts = vec![
            account("a2", "bob", Some("u2"), true, "bob@old"),
            account("a3", "alice", Some("u1"), false, "alice@x"),
            account("a4", "carol", Some("u3"), true, "carol@x"),
        ];
        let p = plan_of(
            &users,
            &["u1", "u2"],
            &["u1", "u2", "u3"],
            &accounts,
            &ALL,
            true,
        );
        let changes: Vec<Change> = p.changes(&users, &accounts).collect();
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
        let d = digest_of(&users, &accounts);
        users.reverse();
        accounts.reverse();
        assert_eq!(digest_of(&users, &accounts), d);
        users[1].values[1] = vec!["bob@newer".into()];
        assert_ne!(digest_of(&users, &accounts), d);
    }
}
