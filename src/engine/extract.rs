//! From SCIM documents to the records matching works on, and back to the few
//! requests the engine builds (confirmation filters, new users). Pure.

use serde_json::{Value, json};

use crate::api::Direction;
use crate::api::{AttributeMapping, MatchRule};
use crate::engine::mapping as docs;
use crate::engine::records::Record;
use crate::engine::records::{AppAccount, DomainUser};
use crate::scim::AttrPath;
use crate::scim::model::USER_SCHEMA;
use crate::scim::path::quote;

/// The matching rules with their attribute paths parsed.
#[derive(Clone, Debug)]
pub struct Rules {
    pub app: Vec<AttrPath>,
    pub domain: Vec<AttrPath>,
    pub case_sensitive: Vec<bool>,
    /// App account → new user mappings a CreateUser applies; empty unless the policy
    /// creates users, so that no other attribute is read or kept.
    pub import: Vec<AttributeMapping>,
    import_app: Vec<AttrPath>,
}

impl Rules {
    /// Parses every rule's paths; the error names the bad path.
    pub fn parse(rules: &[MatchRule]) -> Result<Self, String> {
        let mut out = Rules {
            app: Vec::new(),
            domain: Vec::new(),
            case_sensitive: Vec::new(),
            import: Vec::new(),
            import_app: Vec::new(),
        };
        for r in rules {
            out.app
                .push(r.app_attribute.parse().map_err(|e| format!("{e}"))?);
            out.domain
                .push(r.domain_attribute.parse().map_err(|e| format!("{e}"))?);
            out.case_sensitive.push(r.case_sensitive);
        }
        if out.app.is_empty() {
            return Err("the policy has no matching rule".into());
        }
        Ok(out)
    }

    /// `attributes=` of the domain user listing: only what matching needs.
    pub fn domain_attributes(&self) -> Vec<String> {
        let mut a = vec!["userName".to_string(), "active".to_string()];
        a.extend(self.domain.iter().map(AttrPath::request_attribute));
        dedup(a)
    }

    /// The mappings a CreateUser applies (the catalog entry's import mappings).
    pub fn with_import_mappings(mut self, import: Vec<AttributeMapping>) -> Result<Self, String> {
        docs::check(&import, "import attribute mappings")?;
        self.import_app = import
            .iter()
            .map(|m| m.app_attribute.parse().map_err(|e| format!("{e}")))
            .collect::<Result<_, _>>()?;
        self.import = import;
        Ok(self)
    }

    /// `attributes=` of the app account listing: matching, plus what a CreateUser copies
    /// when the policy creates users.
    pub fn app_attributes(&self) -> Vec<String> {
        let mut a: Vec<String> = ["userName", "externalId", "active"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(self.app.iter().map(AttrPath::request_attribute));
        a.extend(self.import_app.iter().map(AttrPath::request_attribute));
        dedup(a)
    }

    /// A domain user document → what its side's [`crate::engine::records::Records`] keep of it.
    pub fn domain_user(&self, v: &Value) -> Option<DomainUser> {
        Some(DomainUser {
            id: str_of(v, "id")?,
            user_name: str_of(v, "userName").unwrap_or_default(),
            active: v.get("active").and_then(Value::as_bool).unwrap_or(true),
            keys: self.domain.iter().map(|p| p.values(v)).collect(),
        })
    }

    /// An app account document → what its side's [`crate::engine::records::Records`] keep of it.
    pub fn app_account(&self, v: &Value) -> Option<AppAccount> {
        Some(AppAccount {
            id: str_of(v, "id")?,
            user_name: str_of(v, "userName").unwrap_or_default(),
            external_id: str_of(v, "externalId").filter(|s| !s.is_empty()),
            active: v.get("active").and_then(Value::as_bool).unwrap_or(true),
            keys: self.app.iter().map(|p| p.values(v)).collect(),
            attrs: self
                .import_app
                .iter()
                .map(|p| p.values(v).into_iter().next().unwrap_or_default())
                .collect(),
        })
    }

    /// The single-clause filters (`attr eq value`) that find, in the app, any account that
    /// could belong to a domain user: its id as externalId, then each of its values for
    /// each rule. Value filters in the app paths are dropped (`emails[primary eq
    /// true].value` → `emails.value`), which finds more accounts, never fewer: a deletion
    /// is only confirmed when none of them finds anything.
    pub fn confirmation_clauses(&self, user_id: &str, user: Option<Record<'_>>) -> Vec<String> {
        let mut terms = vec![format!("externalId eq {}", quote(user_id))];
        if let Some(u) = user {
            for (rule, path) in self.app.iter().enumerate() {
                let attr = unfiltered(path);
                for v in u.keys(rule) {
                    if !v.trim().is_empty() {
                        terms.push(format!("{attr} eq {}", quote(v.trim())));
                    }
                }
            }
        }
        dedup(terms)
    }

    /// The clauses of [`Self::confirmation_clauses`] as one `or` filter: one query per
    /// candidate where the app supports `or`.
    pub fn confirmation_filter(&self, user_id: &str, user: Option<Record<'_>>) -> String {
        self.confirmation_clauses(user_id, user).join(" or ")
    }
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    v.retain(|s| seen.insert(s.to_lowercase()));
    v
}

fn str_of(v: &Value, key: &str) -> Option<String> {
    crate::scim::path::get_ci(v, key)
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn unfiltered(p: &AttrPath) -> String {
    let mut s = String::new();
    if let Some(urn) = &p.urn {
        s.push_str(urn);
        s.push(':');
    }
    s.push_str(&p.attr);
    if let Some(sub) = &p.sub_attr {
        s.push('.');
        s.push_str(sub);
    }
    s
}

/// The new identity-domain user an Import creates for an unmatched account (`onNoMatch:
/// CreateUser`): the import mappings applied to it. Its externalId is the account's id in the app, so a create
/// retried after a lost answer is recognised as our own (see the engine's 409 handling).
pub fn new_user(rules: &Rules, a: Record<'_>) -> Value {
    let mut u = docs::build(&rules.import, Direction::Import, |src| {
        let i = rules.import.iter().position(|m| m.app_attribute == src)?;
        Some(a.attr(i).to_string())
    });
    u["schemas"] = json!([USER_SCHEMA]);
    u["externalId"] = json!(a.id());
    u["active"] = json!(a.active());
    if u.get("userName").is_none() {
        u["userName"] = json!(a.user_name());
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::parse(&[
            MatchRule {
                app_attribute: "userName".into(),
                domain_attribute: "userName".into(),
                case_sensitive: false,
            },
            MatchRule {
                app_attribute: "emails[primary eq true].value".into(),
                domain_attribute: "emails.value".into(),
                case_sensitive: false,
            },
        ])
        .unwrap()
    }

    fn creating(r: Rules) -> Rules {
        let import = crate::api::catalog::get("GenericSCIM")
            .unwrap()
            .import_mappings
            .clone();
        r.with_import_mappings(import).unwrap()
    }

    #[test]
    fn bad_paths_are_reported() {
        let err = Rules::parse(&[MatchRule {
            app_attribute: "emails[primary eq".into(),
            domain_attribute: "userName".into(),
            case_sensitive: false,
        }])
        .unwrap_err();
        assert!(err.contains("emails[primary eq"), "{err}");
        assert!(Rules::parse(&[]).is_err());
    }

    #[test]
    fn attributes_ask_only_for_what_is_needed() {
        let r = rules();
        assert_eq!(
            r.domain_attributes(),
            ["userName", "active", "emails.value"]
        );
        // Without CreateUser only matching's attributes are read and kept.
        assert_eq!(
            r.app_attributes(),
            ["userName", "externalId", "active", "emails"]
        );
        let acct = r
            .app_account(&json!({"id": "a", "userName": "x", "displayName": "X"}))
            .unwrap();
        assert!(acct.attrs.is_empty());
        // With it, the import mappings' attributes too.
        let full = creating(r);
        assert_eq!(
            full.app_attributes(),
            [
                "userName",
                "externalId",
                "active",
                "emails",
                "displayName",
                "name.givenName",
                "name.familyName"
            ]
        );
    }

    #[test]
    fn documents_become_compact_structs() {
        let r = creating(rules());
        let acct = r
            .app_account(&json!({
                "id": "a1", "userName": "Alice", "externalId": "", "active": false,
                "name": {"givenName": "Alice", "familyName": "Smith"},
                "emails": [{"value": "old@x.example"}, {"value": "alice@x.example", "primary": true}]
            }))
            .unwrap();
        assert_eq!(acct.external_id, None);
        assert!(!acct.active);
        assert_eq!(acct.keys, [vec!["Alice"], vec!["alice@x.example"]]);
        assert_eq!(
            acct.attrs,
            ["Alice", "", "Alice", "Smith", "alice@x.example"],
            "import mappings: userName, displayName, givenName, familyName, primary email"
        );
        let user = r
            .domain_user(&json!({"id": "u1", "userName": "alice",
                "emails": [{"value": "a@x.example"}, {"value": "b@x.example"}]}))
            .unwrap();
        assert!(user.active);
        assert_eq!(user.keys[1], ["a@x.example", "b@x.example"]);
        assert!(r.domain_user(&json!({"userName": "no id"})).is_none());
    }

    #[test]
    fn confirmation_clauses_are_single_filters_without_duplicates() {
        let r = rules();
        let user = DomainUser {
            id: "u1".into(),
            user_name: "Alice".into(),
            active: true,
            // The same email twice (case aside) and a blank one: one clause for it.
            keys: vec![
                vec!["Alice".into()],
                vec!["a@x.example".into(), " A@X.example ".into(), " ".into()],
            ],
        };
        let users = crate::engine::records::Records::of_users(2, &[user]);
        let clauses = r.confirmation_clauses("u1", Some(users.get(0)));
        assert_eq!(
            clauses,
            [
                r#"externalId eq "u1""#,
                r#"userName eq "Alice""#,
                r#"emails.value eq "a@x.example""#,
            ]
        );
        assert!(clauses.iter().all(|c| !c.contains(" or ")));
        assert_eq!(
            r.confirmation_filter("u1", Some(users.get(0))),
            clauses.join(" or ")
        );
        assert_eq!(
            r.confirmation_clauses("u2", None),
            [r#"externalId eq "u2""#]
        );
    }

    #[test]
    fn confirmation_filter_covers_external_id_and_every_rule_value() {
        let r = rules();
        let user = DomainUser {
            id: "u1".into(),
            user_name: "alice".into(),
            active: true,
            keys: vec![vec!["alice".into()], vec!["a@x.example".into(), "".into()]],
        };
        let users = crate::engine::records::Records::of_users(2, &[user]);
        assert_eq!(
            r.confirmation_filter("u1", Some(users.get(0))),
            r#"externalId eq "u1" or userName eq "alice" or emails.value eq "a@x.example""#
        );
        assert_eq!(
            r.confirmation_filter("u\"2", None),
            r#"externalId eq "u\"2""#
        );
    }

    #[test]
    fn new_user_copies_mapped_attributes() {
        let r = creating(rules());
        let acct = r
            .app_account(
                &json!({"id": "a1", "userName": "bob", "displayName": "Bob B",
                "name": {"givenName": "Bob"}, "emails": [{"value": "bob@x.example", "primary": true}]}),
            )
            .unwrap();
        let accounts = crate::engine::records::Records::of_accounts(2, r.import.len(), &[acct]);
        let u = new_user(&r, accounts.get(0));
        assert_eq!(u["userName"], "bob");
        assert_eq!(u["externalId"], "a1");
        assert_eq!(u["name"], json!({"givenName": "Bob"}));
        assert_eq!(u["displayName"], "Bob B");
        assert_eq!(
            u["emails"],
            json!([{"primary": true, "value": "bob@x.example"}])
        );
        assert_eq!(u["active"], true);
    }
}
