//! The "Grants and records" table of the API contract: where each app account and each
//! granted or recorded user stands, from the user matching finds for the account and the
//! app's two groups. Import and Provision both plan from these states, so the same account
//! is owned by the same user in both directions. Pure.

use std::collections::HashSet;

use crate::engine::matching::{Index, Situation};
use crate::engine::records::Ids;

/// A listed user's place in the app's two groups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Standing {
    /// In the grant group: should have an account.
    pub granted: bool,
    /// In the account record: its account is linked.
    pub recorded: bool,
}

/// Where one app account stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountState {
    /// No user matches it.
    NoMatch,
    /// Ambiguous (matching's reason): reported, never acted on.
    Disputed,
    /// Inactive and not recorded: never linked.
    Inactive { user: u32 },
    /// Matches a user who is neither granted nor recorded.
    Unclaimed { user: u32 },
    /// Matches a granted user whose account is not recorded yet.
    Granted { user: u32 },
    /// Its user is granted and recorded: linked.
    Linked { user: u32 },
    /// Its user is recorded but no longer granted.
    Revoked { user: u32 },
}

/// Where an account stands: the table's rows with an account.
pub fn of_account(situation: &Situation, active: bool, standing: Standing) -> AccountState {
    let user = match situation {
        Situation::NoMatch => return AccountState::NoMatch,
        Situation::Disputed { .. } => return AccountState::Disputed,
        Situation::Owned { user } => *user,
    };
    match (standing.granted, standing.recorded) {
        (true, true) => AccountState::Linked { user },
        (false, true) => AccountState::Revoked { user },
        _ if !active => AccountState::Inactive { user },
        (true, false) => AccountState::Granted { user },
        (false, false) => AccountState::Unclaimed { user },
    }
}

/// Where a granted or recorded user that no account refers to stands: the table's rows
/// without an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserState {
    /// Granted, not recorded: waits for Provision; never a deletion.
    PendingProvisioning,
    /// Granted and recorded, the account gone: a *deleted recorded object*.
    AccountGone,
    /// Recorded, no longer granted, the account gone: only the record is left.
    RecordOnly,
}

/// The state of a user without an account; None for a user in neither group.
pub fn of_user(standing: Standing) -> Option<UserState> {
    match (standing.granted, standing.recorded) {
        (true, false) => Some(UserState::PendingProvisioning),
        (true, true) => Some(UserState::AccountGone),
        (false, true) => Some(UserState::RecordOnly),
        (false, false) => None,
    }
}

/// The two groups' members, per listed user, and the members that are no listed user (a
/// user the listing missed or that was deleted, or a nested group).
#[derive(Clone, Debug, Default)]
pub struct Members {
    standing: Vec<Standing>,
    /// Record members that are no listed user, each with whether it is granted too.
    pub unlisted_records: Vec<(String, bool)>,
    /// Grant members that are no listed user and not recorded.
    pub unlisted_grants: usize,
}

impl Members {
    /// Looks every member up once. Duplicates in a member list count once.
    pub fn new(grants: &Ids, records: &Ids, index: &Index) -> Self {
        let mut standing = vec![Standing::default(); index.users().len()];
        let mut unlisted_grants = HashSet::new();
        for id in grants.iter() {
            match index.user_by_id(id) {
                Some(u) => standing[u as usize].granted = true,
                None => {
                    unlisted_grants.insert(id);
                }
            }
        }
        let mut unlisted_records = Vec::new();
        let mut seen = HashSet::new();
        for id in records.iter() {
            match index.user_by_id(id) {
                Some(u) => standing[u as usize].recorded = true,
                None if seen.insert(id) => {
                    unlisted_records.push((id.to_string(), unlisted_grants.remove(id)))
                }
                None => {}
            }
        }
        Members {
            standing,
            unlisted_records,
            unlisted_grants: unlisted_grants.len(),
        }
    }

    /// Listed user `u`'s standing.
    pub fn of(&self, u: u32) -> Standing {
        self.standing[u as usize]
    }

    /// Listed users in either group that no account refers to, with their state.
    pub fn without_account<'a>(
        &'a self,
        referenced: &'a [bool],
    ) -> impl Iterator<Item = (u32, UserState)> + 'a {
        self.standing
            .iter()
            .enumerate()
            .filter(|(u, _)| !referenced[*u])
            .filter_map(|(u, s)| of_user(*s).map(|state| (u as u32, state)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::matching::DisputeReason;
    use crate::engine::records::{DomainUser, Records};

    const fn standing(granted: bool, recorded: bool) -> Standing {
        Standing { granted, recorded }
    }

    /// Every row of the table with an account, for an active and an inactive account.
    #[test]
    fn accounts_follow_the_table() {
        let owned = Situation::Owned { user: 7 };
        let rows = [
            // (granted, recorded, active) → state
            ((false, false, true), AccountState::Unclaimed { user: 7 }),
            ((true, false, true), AccountState::Granted { user: 7 }),
            ((true, true, true), AccountState::Linked { user: 7 }),
            ((false, true, true), AccountState::Revoked { user: 7 }),
            // Inactive accounts are never linked; recorded ones stay what they are.
            ((false, false, false), AccountState::Inactive { user: 7 }),
            ((true, false, false), AccountState::Inactive { user: 7 }),
            ((true, true, false), AccountState::Linked { user: 7 }),
            ((false, true, false), AccountState::Revoked { user: 7 }),
        ];
        for ((g, r, active), want) in rows {
            assert_eq!(
                of_account(&owned, active, standing(g, r)),
                want,
                "{g} {r} {active}"
            );
        }
        let disputed = Situation::Disputed {
            candidates: vec![1, 2],
            reason: DisputeReason::SeveralUsers,
        };
        for s in [standing(true, true), standing(false, false)] {
            assert_eq!(
                of_account(&Situation::NoMatch, true, s),
                AccountState::NoMatch
            );
            assert_eq!(of_account(&disputed, true, s), AccountState::Disputed);
        }
    }

    #[test]
    fn users_without_an_account_follow_the_table() {
        assert_eq!(
            of_user(standing(true, false)),
            Some(UserState::PendingProvisioning)
        );
        assert_eq!(of_user(standing(true, true)), Some(UserState::AccountGone));
        assert_eq!(of_user(standing(false, true)), Some(UserState::RecordOnly));
        assert_eq!(of_user(standing(false, false)), None);
    }

    #[test]
    fn members_are_looked_up_once_and_unlisted_ones_kept() {
        let users: Vec<DomainUser> = ["u1", "u2", "u3"]
            .iter()
            .map(|id| DomainUser {
                id: id.to_string(),
                user_name: id.to_string(),
                active: true,
                keys: vec![vec![id.to_string()]],
            })
            .collect();
        let users = Records::of_users(1, &users);
        let index = Index::build(&users, &[false]);
        let grants: Ids = ["u1", "u2", "gone-1", "gone-2", "u1"].into_iter().collect();
        let records: Ids = ["u2", "u3", "gone-1", "gone-3", "gone-3"]
            .into_iter()
            .collect();
        let m = Members::new(&grants, &records, &index);
        assert_eq!(m.of(0), standing(true, false));
        assert_eq!(m.of(1), standing(true, true));
        assert_eq!(m.of(2), standing(false, true));
        assert_eq!(
            m.unlisted_records,
            [("gone-1".to_string(), true), ("gone-3".to_string(), false)]
        );
        assert_eq!(m.unlisted_grants, 1, "gone-2");
        // u2 has an account: only u1 (pending) and u3 (record only) are without one.
        let without: Vec<_> = m.without_account(&[false, true, false]).collect();
        assert_eq!(
            without,
            [
                (0, UserState::PendingProvisioning),
                (2, UserState::RecordOnly)
            ]
        );
    }
}
