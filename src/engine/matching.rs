//! Matching rules: which identity-domain user owns each app account. Pure and in memory:
//! the inputs are the two sides' [`Records`], whose values were already extracted from
//! the SCIM documents (one list of values per rule), and the index over the users holds
//! no strings of its own: 8 bytes per value and per id.

use std::hash::BuildHasher;

use crate::engine::records::{Record, Records};

/// Normalizes a value for comparison into `out`: surrounding whitespace never matters,
/// case only when the rule says so (folded character by character). Into a buffer the
/// caller reuses, since the index normalizes every value it builds from and looks up.
pub fn normalize(value: &str, case_sensitive: bool, out: &mut String) {
    out.clear();
    let v = value.trim();
    if case_sensitive {
        out.push_str(v);
    } else if v.is_ascii() {
        out.extend(v.chars().map(|c| c.to_ascii_lowercase()));
    } else {
        out.extend(v.chars().flat_map(char::to_lowercase));
    }
}

/// (hash of a normalized value, user) pairs sorted by hash: a multimap in 8 bytes per
/// value. A lookup binary-searches the hash and compares the users' own values, so a
/// hash collision costs a comparison, never a wrong match. Owned keys and a `Vec` per
/// key cost ~120 bytes per value at 100,000 users.
#[derive(Debug, Default)]
struct HashIndex(Vec<(u32, u32)>);

impl HashIndex {
    fn build(mut entries: Vec<(u32, u32)>) -> Self {
        entries.sort_unstable();
        // A user listing the same value twice (two equal emails) is one candidate.
        entries.dedup();
        entries.shrink_to_fit();
        HashIndex(entries)
    }

    fn users_with(&self, hash: u32) -> impl Iterator<Item = u32> + '_ {
        let from = self.0.partition_point(|&(h, _)| h < hash);
        self.0[from..]
            .iter()
            .take_while(move |&&(h, _)| h == hash)
            .map(|&(_, u)| u)
    }
}

/// An in-memory index of the domain users: for each rule, normalized value → users, and
/// id → user.
pub struct Index<'a> {
    users: &'a Records,
    case_sensitive: Vec<bool>,
    /// Keyed per run: values come from the app, and a predictable hash would let them
    /// pile onto one slot.
    hasher: std::collections::hash_map::RandomState,
    by_rule: Vec<HashIndex>,
    by_id: HashIndex,
}

impl<'a> Index<'a> {
    /// Builds the index; `case_sensitive[i]` is rule i's setting.
    pub fn build(users: &'a Records, case_sensitive: &[bool]) -> Self {
        let mut index = Index {
            users,
            case_sensitive: case_sensitive.to_vec(),
            hasher: Default::default(),
            by_rule: Vec::new(),
            by_id: HashIndex::default(),
        };
        let mut scratch = String::new();
        for (rule, &cs) in case_sensitive.iter().enumerate() {
            let mut entries = Vec::new();
            for u in users.iter() {
                for v in u.keys(rule) {
                    normalize(v, cs, &mut scratch);
                    if !scratch.is_empty() {
                        entries.push((index.hash(&scratch), u.index()));
                    }
                }
            }
            index.by_rule.push(HashIndex::build(entries));
        }
        index.by_id = HashIndex::build(
            users
                .iter()
                .map(|u| (index.hash(u.id()), u.index()))
                .collect(),
        );
        index
    }

    fn hash(&self, normalized: &str) -> u32 {
        // The high half: SipHash's bits are uniform, any 32 of them do.
        (self.hasher.hash_one(normalized) >> 32) as u32
    }

    /// The users this index was built over.
    pub fn users(&self) -> &'a Records {
        self.users
    }

    /// The user with this SCIM id.
    pub fn user_by_id(&self, id: &str) -> Option<u32> {
        self.by_id
            .users_with(self.hash(id))
            .find(|&u| self.users.get(u).id() == id)
    }

    /// The users rule `rule` finds for these account values (sorted, deduplicated).
    pub fn candidates<'v>(&self, rule: usize, values: impl Iterator<Item = &'v str>) -> Vec<u32> {
        let mut out = Vec::new();
        let Some(map) = self.by_rule.get(rule) else {
            return out;
        };
        let cs = self.case_sensitive[rule];
        let (mut wanted, mut theirs) = (String::new(), String::new());
        for v in values {
            normalize(v, cs, &mut wanted);
            if wanted.is_empty() {
                continue;
            }
            // Same hash is not same value: compare with the user's own values.
            out.extend(map.users_with(self.hash(&wanted)).filter(|&u| {
                self.users.get(u).keys(rule).any(|k| {
                    normalize(k, cs, &mut theirs);
                    theirs == wanted
                })
            }));
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Number of rules.
    pub fn rules(&self) -> usize {
        self.by_rule.len()
    }
}

/// Why an account is disputed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisputeReason {
    /// No rule found exactly one user, and some rule found several.
    SeveralUsers,
    /// The user it matches is claimed by another account too.
    UserClaimedByOthers,
    /// Its `externalId` names one user (`candidates[0]`), the rules find another
    /// (`candidates[1]`).
    ExternalIdNamesAnother,
}

/// Which user owns one app account, before grants and records are looked at (the same for
/// both directions; [`super::state`] adds them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Situation {
    /// Exactly one user owns it: the one its `externalId` names, else the first rule that
    /// finds exactly one user.
    Owned { user: u32 },
    /// Ambiguous: reported, never acted on.
    Disputed {
        candidates: Vec<u32>,
        reason: DisputeReason,
    },
    /// No user matched.
    NoMatch,
}

/// How an owner was found: the app's own externalId beats a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Claim {
    ExternalId,
    Rule,
}

/// The outcome of matching every account.
#[derive(Debug)]
pub struct Classification {
    /// One situation per account, in input order.
    pub situations: Vec<Situation>,
    /// Per domain user: some account refers to it (owner or candidate). Only a user nobody
    /// refers to can be taken for an account gone.
    pub referenced: Vec<bool>,
}

/// What the rules alone find for one account: the first rule with exactly one user, or
/// the candidates of the first rule with several. Marks every candidate referenced.
fn by_rules(a: &Record<'_>, index: &Index, referenced: &mut [bool]) -> Result<u32, Vec<u32>> {
    let mut several: Option<Vec<u32>> = None;
    for rule in 0..index.rules() {
        let c = index.candidates(rule, a.keys(rule));
        for &u in &c {
            referenced[u as usize] = true;
        }
        match c.len() {
            0 => {}
            1 => return Ok(c[0]),
            _ => {
                several.get_or_insert(c);
            }
        }
    }
    Err(several.unwrap_or_default())
}

/// One account's owner and how it was found, or why it has none. An `externalId` naming a
/// listed user wins unless the rules find exactly one *other* user: then it is disputed.
fn owner(
    a: &Record<'_>,
    index: &Index,
    referenced: &mut [bool],
) -> Result<(u32, Claim), Situation> {
    let by_ext = a.external_id().and_then(|e| index.user_by_id(e));
    if let Some(u) = by_ext {
        referenced[u as usize] = true;
    }
    match (by_ext, by_rules(a, index, referenced)) {
        (Some(e), Ok(r)) if e != r => Err(Situation::Disputed {
            candidates: vec![e, r],
            reason: DisputeReason::ExternalIdNamesAnother,
        }),
        (Some(e), _) => Ok((e, Claim::ExternalId)),
        (None, Ok(r)) => Ok((r, Claim::Rule)),
        (None, Err(c)) if c.is_empty() => Err(Situation::NoMatch),
        (None, Err(candidates)) => Err(Situation::Disputed {
            candidates,
            reason: DisputeReason::SeveralUsers,
        }),
    }
}

/// One account's situation on its own, no other account claiming: what a create's 409 is
/// settled with (the object holding the name, against the same rules).
pub fn situation_of(a: &Record<'_>, index: &Index) -> Situation {
    let mut referenced = vec![false; index.users().len()];
    match owner(a, index, &mut referenced) {
        Ok((user, _)) => Situation::Owned { user },
        Err(s) => s,
    }
}

/// Classifies every account.
pub fn classify(accounts: &Records, index: &Index) -> Classification {
    let users_len = index.users().len();
    let mut referenced = vec![false; users_len];
    let owners: Vec<Result<(u32, Claim), Situation>> = accounts
        .iter()
        .map(|a| owner(&a, index, &mut referenced))
        .collect();
    // A user claimed by several accounts goes to the single externalId claimant if there
    // is one; every other claimant is disputed.
    let mut claims: Vec<(u32, u32)> = vec![(0, 0); users_len]; // user → (by externalId, by rule)
    for (u, how) in owners.iter().flatten() {
        let e = &mut claims[*u as usize];
        match how {
            Claim::ExternalId => e.0 += 1,
            Claim::Rule => e.1 += 1,
        }
    }
    let situations = owners
        .into_iter()
        .map(|o| match o {
            Err(s) => s,
            Ok((u, how)) => {
                let (ext, rule) = claims[u as usize];
                let sole = match how {
                    Claim::ExternalId => ext == 1,
                    Claim::Rule => ext == 0 && rule == 1,
                };
                if sole {
                    Situation::Owned { user: u }
                } else {
                    Situation::Disputed {
                        candidates: vec![u],
                        reason: DisputeReason::UserClaimedByOthers,
                    }
                }
            }
        })
        .collect();
    Classification {
        situations,
        referenced,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::records::{AppAccount, DomainUser};

    fn user(id: &str, user_name: &str, emails: &[&str]) -> DomainUser {
        DomainUser {
            id: id.into(),
            user_name: user_name.into(),
            active: true,
            keys: vec![
                vec![user_name.into()],
                emails.iter().map(|e| e.to_string()).collect(),
            ],
        }
    }

    fn account(id: &str, user_name: &str, email: Option<&str>, ext: Option<&str>) -> AppAccount {
        AppAccount {
            id: id.into(),
            user_name: user_name.into(),
            external_id: ext.map(Into::into),
            active: true,
            keys: vec![
                vec![user_name.into()],
                email.into_iter().map(Into::into).collect(),
            ],
            attrs: Vec::new(),
        }
    }

    fn run(accounts: &[AppAccount], users: &[DomainUser]) -> Classification {
        run_cs(accounts, users, &[false, false])
    }

    fn run_cs(accounts: &[AppAccount], users: &[DomainUser], cs: &[bool]) -> Classification {
        let users = Records::of_users(cs.len(), users);
        let accounts = Records::of_accounts(cs.len(), 0, accounts);
        let index = Index::build(&users, cs);
        classify(&accounts, &index)
    }

    #[test]
    fn normalization_trims_and_folds_case_unless_sensitive() {
        let mut out = String::from("left over");
        normalize("  Alice@Example.COM ", false, &mut out);
        assert_eq!(out, "alice@example.com");
        normalize(" Alice ", true, &mut out);
        assert_eq!(out, "Alice");
        normalize(" ZOË ", false, &mut out);
        assert_eq!(out, "zoë");
    }

    #[test]
    fn exact_match_is_case_insensitive_by_default() {
        let users = [user("u1", "alice", &[])];
        let c = run(&[account("a1", "ALICE", None, None)], &users);
        assert_eq!(c.situations, [Situation::Owned { user: 0 }]);
        assert!(c.referenced[0]);
    }

    #[test]
    fn non_ascii_values_fold_case_and_ids_are_exact() {
        let users = [user("u1", "Ärger", &[" ZOË@corp.example "])];
        let c = run(&[account("a1", "äRGER", None, None)], &users);
        assert_eq!(c.situations, [Situation::Owned { user: 0 }]);
        let c = run(
            &[account("a1", "x", Some("zoë@CORP.example"), None)],
            &users,
        );
        assert_eq!(c.situations, [Situation::Owned { user: 0 }]);
        let c = run(&[account("a1", "Arger", None, None)], &users);
        assert_eq!(
            c.situations,
            [Situation::NoMatch],
            "folding is not accent removal"
        );
        // Ids are compared exactly: another case is another user.
        let c = run(&[account("a1", "x", None, Some("U1"))], &users);
        assert_eq!(c.situations, [Situation::NoMatch]);
        let records = Records::of_users(2, &users);
        let index = Index::build(&records, &[false, false]);
        assert_eq!(index.user_by_id("u1"), Some(0));
        assert_eq!(index.user_by_id("u2"), None);
    }

    #[test]
    fn many_users_sharing_and_not_sharing_values() {
        // 2,000 users, each with its own email and one of 7 department mailboxes: every
        // own value finds exactly its user, a shared one all users that list it.
        let users: Vec<DomainUser> = (0..2000)
            .map(|i| {
                let own = format!("u{i}@corp.example");
                let shared = format!("dept{}@corp.example", i % 7);
                user(&format!("id{i}"), &format!("n{i}"), &[&own, &shared])
            })
            .collect();
        let records = Records::of_users(2, &users);
        let index = Index::build(&records, &[false, false]);
        for i in [0usize, 1, 999, 1999] {
            let own = format!("U{i}@CORP.example");
            assert_eq!(index.candidates(1, [own.as_str()].into_iter()), [i as u32]);
            assert_eq!(index.user_by_id(&format!("id{i}")), Some(i as u32));
        }
        let dept3 = index.candidates(1, ["dept3@corp.example"].into_iter());
        assert_eq!(dept3.len(), (0..2000).filter(|i| i % 7 == 3).count());
        assert!(dept3.iter().all(|&u| u % 7 == 3));
        assert!(
            index
                .candidates(1, ["nobody@corp.example"].into_iter())
                .is_empty()
        );
    }

    #[test]
    fn case_sensitive_rule_does_not_fold() {
        let users = [user("u1", "alice", &[])];
        let c = run_cs(&[account("a1", "ALICE", None, None)], &users, &[true, true]);
        assert_eq!(c.situations, [Situation::NoMatch]);
        assert!(!c.referenced[0]);
    }

    #[test]
    fn owner_found_by_the_first_rule() {
        let users = [user("u1", "alice", &[])];
        let c = run(&[account("a1", "alice", None, None)], &users);
        assert_eq!(c.situations, [Situation::Owned { user: 0 }]);
    }

    #[test]
    fn external_id_names_the_owner_when_the_rules_find_no_other() {
        let users = [user("u1", "alice", &[]), user("u2", "bob", &[])];
        // Renamed in the app: the userName finds nobody, the externalId names bob.
        let c = run(&[account("a1", "robert", None, Some("u2"))], &users);
        assert_eq!(c.situations, [Situation::Owned { user: 1 }]);
        assert!(!c.referenced[0]);
    }

    #[test]
    fn external_id_naming_another_user_than_the_rules_is_disputed() {
        let users = [user("u1", "alice", &[]), user("u2", "bob", &[])];
        // The userName says alice, the externalId bob: never linked to either.
        let c = run(&[account("a1", "alice", None, Some("u2"))], &users);
        assert_eq!(
            c.situations,
            [Situation::Disputed {
                candidates: vec![1, 0],
                reason: DisputeReason::ExternalIdNamesAnother
            }]
        );
        assert_eq!(c.referenced, [true, true]);
    }

    #[test]
    fn unknown_external_id_falls_back_to_the_rules() {
        let users = [user("u1", "alice", &[])];
        let c = run(&[account("a1", "alice", None, Some("gone"))], &users);
        assert_eq!(c.situations, [Situation::Owned { user: 0 }]);
    }

    #[test]
    fn second_rule_wins_when_first_finds_none() {
        let users = [user(
            "u1",
            "alice",
            &["alice@corp.example", "a@other.example"],
        )];
        let c = run(
            &[account("a1", "asmith", Some("A@Other.Example"), None)],
            &users,
        );
        assert_eq!(c.situations, [Situation::Owned { user: 0 }]);
    }

    #[test]
    fn several_users_on_first_rule_then_one_on_second_is_exact() {
        // Case-sensitive userName rule with two users differing only in case would not
        // collide; use a shared email on rule 0 instead by swapping the rule order.
        let users = [
            user("u1", "alice", &["shared@corp.example"]),
            user(
                "u2",
                "alice2",
                &["shared@corp.example", "alice@corp.example"],
            ),
        ];
        let mut a = account("a1", "nobody", None, None);
        // rule 0: email values (two users), rule 1: userName (one user)
        a.keys = vec![vec!["shared@corp.example".into()], vec!["alice2".into()]];
        let swapped: Vec<DomainUser> = users
            .iter()
            .map(|u| DomainUser {
                keys: vec![u.keys[1].clone(), u.keys[0].clone()],
                ..u.clone()
            })
            .collect();
        let c = run(&[a], &swapped);
        assert_eq!(c.situations, [Situation::Owned { user: 1 }]);
        // Both were seen as candidates: neither is a deletion candidate.
        assert_eq!(c.referenced, [true, true]);
    }

    #[test]
    fn several_users_and_no_exact_rule_is_disputed() {
        let users = [
            user("u1", "alice", &["shared@corp.example"]),
            user("u2", "bob", &["SHARED@corp.example"]),
        ];
        let c = run(
            &[account("a1", "carol", Some("shared@corp.example"), None)],
            &users,
        );
        assert_eq!(
            c.situations,
            [Situation::Disputed {
                candidates: vec![0, 1],
                reason: DisputeReason::SeveralUsers
            }]
        );
    }

    #[test]
    fn a_user_listing_one_value_twice_is_one_candidate() {
        let users = [user("u1", "alice", &["a@corp.example", "A@corp.example"])];
        let c = run(&[account("a1", "x", Some("a@corp.example"), None)], &users);
        assert_eq!(c.situations, [Situation::Owned { user: 0 }]);
    }

    #[test]
    fn multi_valued_account_values_union_their_candidates() {
        let users = [
            user("u1", "alice", &["a@corp.example"]),
            user("u2", "bob", &["b@corp.example"]),
        ];
        let mut a = account("a1", "x", None, None);
        a.keys[1] = vec!["a@corp.example".into(), "b@corp.example".into()];
        let c = run(&[a], &users);
        assert!(matches!(
            c.situations[0],
            Situation::Disputed {
                reason: DisputeReason::SeveralUsers,
                ..
            }
        ));
    }

    #[test]
    fn two_accounts_claiming_one_user_are_both_disputed() {
        let users = [user("u1", "alice", &["alice@corp.example"])];
        let c = run(
            &[
                account("a1", "alice", None, None),
                account("a2", "other", Some("alice@corp.example"), None),
            ],
            &users,
        );
        for s in &c.situations {
            assert_eq!(
                *s,
                Situation::Disputed {
                    candidates: vec![0],
                    reason: DisputeReason::UserClaimedByOthers
                }
            );
        }
        assert!(
            c.referenced[0],
            "a disputed member is not a deletion candidate"
        );
    }

    #[test]
    fn the_external_id_claimant_keeps_the_user_against_rule_claimants() {
        let users = [user("u1", "alice", &[])];
        let c = run(
            &[
                account("a1", "alice", None, None),
                account("a2", "alice.old", None, Some("u1")),
            ],
            &users,
        );
        assert_eq!(
            c.situations,
            [
                Situation::Disputed {
                    candidates: vec![0],
                    reason: DisputeReason::UserClaimedByOthers
                },
                Situation::Owned { user: 0 }
            ]
        );
    }

    #[test]
    fn no_match_and_empty_values_never_match() {
        let users = [user("u1", "", &[""])];
        let c = run(&[account("a1", "", Some(""), None)], &users);
        assert_eq!(c.situations, [Situation::NoMatch]);
        assert!(!c.referenced[0]);
    }
}
