//! Deterministic, realistic SCIM data for the demo and the end-to-end tests: an
//! identity domain of a few thousand people and apps whose accounts cover every
//! situation a synchronization meets, with the counts it must report.
//!
//! Per app, taken from a window of the domain's people:
//! - accounts with the person's `userName` (every 7th in another letter case, which
//!   the example policy's case-insensitive rule still matches);
//! - accounts with an app-specific handle but the person's work e-mail (matched by
//!   the second rule only);
//! - *disputed* accounts: a handle and an e-mail that two domain users share (a
//!   person and their admin identity), so no single owner can be chosen;
//! - *unmatched* accounts of outside contractors, unknown to the domain;
//! - *recorded* people: members of the app's grant group, most of whom still have
//!   their account (already linked) and some whose account was deleted in the app.
//!
//! Same input, same data: the names come from fixed lists, no randomness.

use serde_json::{Value, json};

use crate::api::Counts;

const GIVEN: [&str; 50] = [
    "amelia",
    "noah",
    "olivia",
    "liam",
    "emma",
    "oliver",
    "ava",
    "elijah",
    "sophia",
    "james",
    "isabella",
    "william",
    "mia",
    "benjamin",
    "charlotte",
    "lucas",
    "harper",
    "henry",
    "evelyn",
    "theodore",
    "abigail",
    "jack",
    "emily",
    "levi",
    "ella",
    "alexander",
    "elizabeth",
    "jackson",
    "camila",
    "mateo",
    "luna",
    "daniel",
    "sofia",
    "michael",
    "avery",
    "mason",
    "mila",
    "sebastian",
    "aria",
    "ethan",
    "scarlett",
    "logan",
    "penelope",
    "owen",
    "layla",
    "samuel",
    "chloe",
    "jacob",
    "victoria",
    "asher",
];
const FAMILY: [&str; 50] = [
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "hernandez",
    "lopez",
    "gonzalez",
    "wilson",
    "anderson",
    "thomas",
    "taylor",
    "moore",
    "jackson",
    "martin",
    "lee",
    "perez",
    "thompson",
    "white",
    "harris",
    "sanchez",
    "clark",
    "ramirez",
    "lewis",
    "robinson",
    "walker",
    "young",
    "allen",
    "king",
    "wright",
    "scott",
    "torres",
    "nguyen",
    "hill",
    "flores",
    "green",
    "adams",
    "nelson",
    "baker",
    "hall",
    "rivera",
    "campbell",
    "mitchell",
    "carter",
    "roberts",
];

/// People of the domain who also have an admin identity with the same e-mail.
const TWINS: usize = 8;

/// The e-mail domain of the identity domain's people.
pub const CORP_DOMAIN: &str = "corp.example";

/// How one app's accounts relate to the domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppShape {
    /// The app's name (also its SCIM tenant in the demo).
    pub name: String,
    /// Display name of its grant group in the identity domain.
    pub grant_group: String,
    /// First person (index into the domain's people) of the app's window.
    pub offset: usize,
    pub by_user_name: usize,
    pub by_email: usize,
    pub disputed: usize,
    pub unmatched: usize,
    /// Grant-group members with an account (the first `recorded` of `by_user_name`).
    pub recorded: usize,
    /// Grant-group members whose account was deleted in the app.
    pub deleted: usize,
    /// Granted people with neither record nor account yet: pending provisioning, which
    /// an Import never takes for deleted.
    pub pending: usize,
}

impl AppShape {
    /// The app's accounts, as SCIM User resources.
    pub fn accounts(&self) -> Vec<Value> {
        let mut out = Vec::with_capacity(self.account_count());
        let mut p = self.offset;
        for i in 0..self.by_user_name {
            let user_name = person_user_name(p);
            // Apps often store what the user typed: the case differs, the person does not.
            let shown = if i % 7 == 3 {
                capitalize(&user_name)
            } else {
                user_name.clone()
            };
            out.push(account(&shown, p, &email(&user_name)));
            p += 1;
        }
        for _ in 0..self.by_email {
            let handle = format!("{}{}{p}", &GIVEN[p % 50][..1], FAMILY[(p / 50) % 50]);
            out.push(account(&handle, p, &email(&person_user_name(p))));
            p += 1;
        }
        for k in 0..self.disputed {
            let twin = k % TWINS;
            let handle = format!(
                "{}-{}-{k}",
                self.name,
                person_user_name(twin).replace('.', "")
            );
            out.push(account(&handle, twin, &email(&person_user_name(twin))));
        }
        for k in 0..self.unmatched {
            let name = format!("contractor{k:03}.{}", self.name);
            out.push(json!({
                "userName": name,
                "name": {"givenName": "Contractor", "familyName": format!("No{k}")},
                "emails": [{"value": format!("{name}@partner.example"), "type": "work", "primary": true}],
                "active": true,
            }));
        }
        out
    }

    fn account_count(&self) -> usize {
        self.by_user_name + self.by_email + self.disputed + self.unmatched
    }

    /// Indexes (into the domain's people) of the account record's members: those with
    /// an account, and those whose account was deleted.
    pub fn members(&self) -> Vec<usize> {
        let present = self.offset..self.offset + self.recorded;
        let gone_from = self.offset + self.by_user_name + self.by_email;
        present.chain(gone_from..gone_from + self.deleted).collect()
    }

    /// Indexes of the grant group's members: the recorded ones and those pending.
    pub fn granted(&self) -> Vec<usize> {
        let pending_from = self.end() - self.pending;
        let mut m = self.members();
        m.extend(pending_from..pending_from + self.pending);
        m
    }

    /// The app's grant and record groups as catalogsync creates them for the app
    /// `namespace/<name>` (with the ownership marks), with `ids` the SCIM ids of the
    /// domain's users in seed order.
    pub fn groups(&self, namespace: &str, ids: &[String]) -> [Value; 2] {
        let group = |name: String, role: &str, members: Vec<usize>| {
            let members: Vec<Value> = members
                .into_iter()
                .map(|i| json!({"value": ids[i], "type": "User"}))
                .collect();
            let mark = format!("catalogsync:{namespace}/{}/{role}", self.name);
            json!({"displayName": name, "externalId": mark, "members": members})
        };
        [
            group(self.grant_group.clone(), "grant", self.granted()),
            group(
                format!("{}-accounts", self.grant_group),
                "record",
                self.members(),
            ),
        ]
    }

    /// What a first synchronization (link by userName then e-mail, ignore no-match,
    /// remove the records of deleted accounts) reports when it applies.
    pub fn expected(&self, domain_users: usize) -> Counts {
        Counts {
            app_accounts: self.account_count() as i64,
            domain_users: domain_users as i64,
            already_linked: self.recorded as i64,
            linked: (self.by_user_name - self.recorded + self.by_email) as i64,
            deleted: self.deleted as i64,
            unmatched: self.unmatched as i64,
            disputed: self.disputed as i64,
            pending_provisioning: self.pending as i64,
            ..Default::default()
        }
    }

    /// The people this app's window uses, past its start.
    fn end(&self) -> usize {
        self.offset + self.by_user_name + self.by_email + self.deleted + self.pending
    }
}

/// The demo's data: the domain's people and two apps.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// People in the domain (their admin twins come on top).
    pub people: usize,
    pub apps: Vec<AppShape>,
}

impl Scenario {
    /// The demo: 2,400 people; `slack` synchronizes within the example policy's
    /// limits (12 deletes of 20 allowed); `jira` would remove 35 records and stops
    /// on the limit.
    pub fn demo() -> Self {
        Scenario {
            people: 2400,
            apps: vec![
                AppShape {
                    name: "slack".into(),
                    grant_group: "slack-users".into(),
                    offset: 0,
                    by_user_name: 2000,
                    by_email: 150,
                    disputed: 5,
                    unmatched: 40,
                    recorded: 300,
                    deleted: 12,
                    pending: 5,
                },
                AppShape {
                    name: "jira".into(),
                    grant_group: "jira-users".into(),
                    offset: 600,
                    by_user_name: 1100,
                    by_email: 80,
                    disputed: 3,
                    unmatched: 25,
                    recorded: 200,
                    deleted: 35,
                    pending: 4,
                },
            ],
        }
    }

    pub fn app(&self, name: &str) -> &AppShape {
        self.apps
            .iter()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("no app {name} in the scenario"))
    }

    /// The identity domain's users, people first (index = person), then the admin twins.
    pub fn domain_users(&self) -> Vec<Value> {
        let needed = self.apps.iter().map(AppShape::end).max().unwrap_or(0);
        assert!(
            needed <= self.people,
            "the apps need {needed} people, the domain has {}",
            self.people
        );
        let mut out: Vec<Value> = (0..self.people)
            .map(|p| {
                let u = person_user_name(p);
                account(&u, p, &email(&u))
            })
            .collect();
        for t in 0..TWINS {
            let u = person_user_name(t);
            out.push(account(&format!("{u}.admin"), t, &email(&u)));
        }
        out
    }

    /// How many users the domain holds.
    pub fn domain_user_count(&self) -> usize {
        self.people + TWINS
    }
}

fn person_user_name(p: usize) -> String {
    let base = format!("{}.{}", GIVEN[p % 50], FAMILY[(p / 50) % 50]);
    match p / 2500 {
        0 => base,
        n => format!("{base}{}", n + 1),
    }
}

fn email(user_name: &str) -> String {
    format!("{user_name}@{CORP_DOMAIN}")
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn account(user_name: &str, person: usize, email: &str) -> Value {
    json!({
        "userName": user_name,
        "name": {
            "givenName": capitalize(GIVEN[person % 50]),
            "familyName": capitalize(FAMILY[(person / 50) % 50]),
        },
        "emails": [{"value": email, "type": "work", "primary": true}],
        "active": true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn demo_data_is_deterministic_unique_and_covers_every_situation() {
        let s = Scenario::demo();
        let users = s.domain_users();
        assert_eq!(users, Scenario::demo().domain_users());
        assert_eq!(users.len(), s.domain_user_count());
        let names: HashSet<String> = users
            .iter()
            .map(|u| u["userName"].as_str().unwrap().to_lowercase())
            .collect();
        assert_eq!(names.len(), users.len(), "userNames are unique");
        for app in &s.apps {
            let accounts = app.accounts();
            let e = app.expected(users.len());
            assert_eq!(accounts.len() as i64, e.app_accounts);
            let handles: HashSet<String> = accounts
                .iter()
                .map(|a| a["userName"].as_str().unwrap().to_lowercase())
                .collect();
            assert_eq!(handles.len(), accounts.len(), "{}: unique", app.name);
            // Handles and contractors never collide with a domain userName.
            let by_name = accounts
                .iter()
                .filter(|a| names.contains(&a["userName"].as_str().unwrap().to_lowercase()))
                .count();
            assert_eq!(by_name, app.by_user_name, "{}", app.name);
            assert!(e.deleted > 0 && e.disputed > 0 && e.unmatched > 0 && e.linked > 0);
            assert_eq!(app.members().len(), app.recorded + app.deleted);
        }
        // slack fits the example policy's maxDeletes 20, jira does not.
        assert!(s.app("slack").deleted <= 20 && s.app("jira").deleted > 20);
    }
}
