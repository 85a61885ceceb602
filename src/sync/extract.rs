//! From SCIM documents to the compact structs matching works on, and back to the few
//! requests the engine builds (confirmation filters, new users). Pure.

use serde_json::{Value, json};

use crate::api::MatchRule;
use crate::matching::{AppAccount, DomainUser, UserAttrs};
use crate::scim::AttrPath;
use crate::scim::path::quote;

/// The matching rules with their attribute paths parsed.
#[derive(Clone, Debug)]
pub struct Rules {
    pub app: Vec<AttrPath>,
    pub domain: Vec<AttrPath>,
    pub case_sensitive: Vec<bool>,
}

impl Rules {
    /// Parses every rule's paths; the error names the bad path.
    pub fn parse(rules: &[MatchRule]) -> Result<Self, String> {
        let mut out = Rules {
            app: Vec::new(),
            domain: Vec::new(),
            case_sensitive: Vec::new(),
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

    /// `attributes=` of the app account listing: matching plus what a CreateUser copies.
    pub fn app_attributes(&self) -> Vec<String> {
        let mut a: Vec<String> = [
            "userName",
            "externalId",
            "active",
            "displayName",
            "name",
            "emails",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(self.app.iter().map(AttrPath::request_attribute));
        dedup(a)
    }

    /// A domain user document → the compact struct.
    pub fn domain_user(&self, v: &Value) -> Option<DomainUser> {
        Some(DomainUser {
            id: str_of(v, "id")?,
            user_name: str_of(v, "userName").unwrap_or_default(),
            active: v.get("active").and_then(Value::as_bool).unwrap_or(true),
            keys: self.domain.iter().map(|p| compact(p.values(v))).collect(),
        })
    }

    /// An app account document → the compact struct.
    pub fn app_account(&self, v: &Value) -> Option<AppAccount> {
        Some(AppAccount {
            id: str_of(v, "id")?,
            user_name: str_of(v, "userName").unwrap_or_default(),
            external_id: str_of(v, "externalId").filter(|s| !s.is_empty()),
            active: v.get("active").and_then(Value::as_bool).unwrap_or(true),
            keys: self.app.iter().map(|p| compact(p.values(v))).collect(),
            attrs: UserAttrs {
                display_name: str_of(v, "displayName"),
                given_name: v.get("name").and_then(|n| str_of(n, "givenName")),
                family_name: v.get("name").and_then(|n| str_of(n, "familyName")),
                email: primary_email(v),
            },
        })
    }

    /// The filter that finds, in the app, any account that could belong to a domain user:
    /// its id as externalId, or any of its values for any rule. Value filters in the app
    /// paths are dropped (`emails[primary eq true].value` → `emails.value`), which finds
    /// more accounts, never fewer: a deletion is only confirmed when this finds nothing.
    pub fn confirmation_filter(&self, user_id: &str, user: Option<&DomainUser>) -> String {
        let mut terms = vec![format!("externalId eq {}", quote(user_id))];
        if let Some(u) = user {
            for (rule, path) in self.app.iter().enumerate() {
                let attr = unfiltered(path);
                for v in u.keys.get(rule).into_iter().flatten() {
                    if !v.trim().is_empty() {
                        terms.push(format!("{attr} eq {}", quote(v.trim())));
                    }
                }
            }
        }
        dedup(terms).join(" or ")
    }
}

/// Values kept for the whole run: no spare capacity (a one-value Vec grows to 4 slots),
/// which is ~70 bytes per rule and account, megabytes at 100,000 accounts.
fn compact(mut v: Vec<String>) -> Vec<String> {
    v.shrink_to_fit();
    v
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

fn primary_email(v: &Value) -> Option<String> {
    let emails = v.get("emails")?.as_array()?;
    emails
        .iter()
        .find(|e| e.get("primary").and_then(Value::as_bool) == Some(true))
        .or_else(|| emails.first())
        .and_then(|e| str_of(e, "value"))
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

/// The new identity-domain user authoritative sync creates for an account. Its externalId
/// is the account's id in the app, so a create retried after a lost answer is recognised
/// as our own (see the engine's 409 handling).
pub fn new_user(a: &AppAccount) -> Value {
    let mut u = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": a.user_name,
        "externalId": a.id,
        "active": a.active,
    });
    if let Some(d) = &a.attrs.display_name {
        u["displayName"] = json!(d);
    }
    let mut name = serde_json::Map::new();
    if let Some(g) = &a.attrs.given_name {
        name.insert("givenName".into(), json!(g));
    }
    if let Some(f) = &a.attrs.family_name {
        name.insert("familyName".into(), json!(f));
    }
    if !name.is_empty() {
        u["name"] = Value::Object(name);
    }
    if let Some(e) = &a.attrs.email {
        u["emails"] = json!([{"value": e, "primary": true, "type": "work"}]);
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
        let app = r.app_attributes();
        assert!(app.contains(&"emails".to_string()));
        assert_eq!(app.iter().filter(|a| *a == "userName").count(), 1);
    }

    #[test]
    fn documents_become_compact_structs() {
        let r = rules();
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
        assert_eq!(acct.attrs.email.as_deref(), Some("alice@x.example"));
        let user = r
            .domain_user(&json!({"id": "u1", "userName": "alice",
                "emails": [{"value": "a@x.example"}, {"value": "b@x.example"}]}))
            .unwrap();
        assert!(user.active);
        assert_eq!(user.keys[1], ["a@x.example", "b@x.example"]);
        assert!(r.domain_user(&json!({"userName": "no id"})).is_none());
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
        assert_eq!(
            r.confirmation_filter("u1", Some(&user)),
            r#"externalId eq "u1" or userName eq "alice" or emails.value eq "a@x.example""#
        );
        assert_eq!(
            r.confirmation_filter("u\"2", None),
            r#"externalId eq "u\"2""#
        );
    }

    #[test]
    fn new_user_copies_mapped_attributes() {
        let r = rules();
        let acct = r
            .app_account(
                &json!({"id": "a1", "userName": "bob", "displayName": "Bob B",
                "name": {"givenName": "Bob"}, "emails": [{"value": "bob@x.example"}]}),
            )
            .unwrap();
        let u = new_user(&acct);
        assert_eq!(u["userName"], "bob");
        assert_eq!(u["externalId"], "a1");
        assert_eq!(u["name"], json!({"givenName": "Bob"}));
        assert_eq!(u["emails"][0]["value"], "bob@x.example");
        assert_eq!(u["active"], true);
    }
}
