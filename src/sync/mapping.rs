//! Attribute mappings of provisioning (identity-domain user → app account): reading the
//! mapped values on both sides, and writing them into a new account or a PATCH. Pure.

use serde_json::{Map, Value, json};

use crate::api::AttributeMapping;
use crate::plan::provision::{ProvAccount, ProvUser};
use crate::scim::AttrPath;
use crate::scim::model::{PatchOp, PatchOperation, USER_SCHEMA};
use crate::scim::path::{CompareOp, Literal, ValueFilter};

/// Multi-valued core User attributes (RFC 7643 §4.1.2): `emails.value` means every email.
const MULTI_VALUED: [&str; 8] = [
    "emails",
    "phoneNumbers",
    "ims",
    "photos",
    "addresses",
    "entitlements",
    "roles",
    "x509Certificates",
];

/// The mappings of the built-in catalog entry (GenericSCIM and unknown entries).
pub fn default_mappings(_catalog_item: &str) -> Vec<AttributeMapping> {
    [
        ("userName", "userName"),
        ("displayName", "displayName"),
        ("name.givenName", "name.givenName"),
        ("name.familyName", "name.familyName"),
        (
            "emails[primary eq true].value",
            "emails[primary eq true].value",
        ),
    ]
    .iter()
    .map(|(d, a)| AttributeMapping {
        domain_attribute: d.to_string(),
        app_attribute: a.to_string(),
    })
    .collect()
}

/// Parsed mappings.
#[derive(Clone, Debug)]
pub struct Mappings {
    pub domain: Vec<AttrPath>,
    pub app: Vec<AttrPath>,
}

impl Mappings {
    pub fn parse(mappings: &[AttributeMapping]) -> Result<Self, String> {
        let mut m = Mappings {
            domain: Vec::new(),
            app: Vec::new(),
        };
        for a in mappings {
            m.domain
                .push(a.domain_attribute.parse().map_err(|e| format!("{e}"))?);
            m.app
                .push(a.app_attribute.parse().map_err(|e| format!("{e}"))?);
        }
        Ok(m)
    }

    pub fn domain_attributes(&self) -> Vec<String> {
        let mut a = vec!["userName".to_string(), "active".to_string()];
        a.extend(self.domain.iter().map(AttrPath::request_attribute));
        a
    }

    pub fn app_attributes(&self) -> Vec<String> {
        let mut a = vec![
            "userName".to_string(),
            "externalId".to_string(),
            "active".to_string(),
        ];
        a.extend(self.app.iter().map(AttrPath::request_attribute));
        a
    }

    pub fn user(&self, v: &Value) -> Option<ProvUser> {
        Some(ProvUser {
            id: v.get("id")?.as_str()?.to_string(),
            user_name: text(v, "userName"),
            active: v.get("active").and_then(Value::as_bool).unwrap_or(true),
            values: self.domain.iter().map(|p| p.values(v)).collect(),
        })
    }

    pub fn account(&self, v: &Value) -> Option<ProvAccount> {
        Some(ProvAccount {
            id: v.get("id")?.as_str()?.to_string(),
            user_name: text(v, "userName"),
            external_id: v
                .get("externalId")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            active: v.get("active").and_then(Value::as_bool).unwrap_or(true),
            values: self.app.iter().map(|p| p.values(v)).collect(),
        })
    }

    /// The new account for a user: the mapped attributes, `externalId` = the user's id.
    pub fn new_account(&self, u: &ProvUser) -> Value {
        let mut doc = json!({"schemas": [USER_SCHEMA], "externalId": u.id, "active": u.active});
        for (path, values) in self.app.iter().zip(&u.values) {
            put(&mut doc, path, values);
        }
        if doc.get("userName").is_none() {
            doc["userName"] = json!(u.user_name);
        }
        doc
    }

    /// The PATCH bringing an account in line: the differing mappings, `active`, and the
    /// `externalId` of an adopted account.
    pub fn update(
        &self,
        u: &ProvUser,
        mappings: &[usize],
        active: Option<bool>,
        set_external_id: bool,
    ) -> PatchOp {
        let mut ops: Vec<PatchOperation> = Vec::new();
        for &i in mappings {
            let path = &self.app[i];
            let values = &u.values[i];
            if path.filter.is_some() {
                // Replace the whole multi-valued attribute: the filtered element is rebuilt.
                let mut doc = json!({});
                put(&mut doc, path, values);
                let (key, value) = doc
                    .as_object()
                    .and_then(|o| o.iter().next())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .unwrap_or_default();
                ops.push(PatchOp::replace(key, value));
            } else {
                ops.push(PatchOp::replace(
                    path.to_string(),
                    single_or_many(path, values),
                ));
            }
        }
        if let Some(a) = active {
            ops.push(PatchOp::replace("active", json!(a)));
        }
        if set_external_id {
            ops.push(PatchOp::replace("externalId", json!(u.id)));
        }
        PatchOp::new(ops)
    }
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn is_multi(attr: &str) -> bool {
    MULTI_VALUED.iter().any(|m| m.eq_ignore_ascii_case(attr))
}

fn single_or_many(path: &AttrPath, values: &[String]) -> Value {
    if is_multi(&path.attr) && path.sub_attr.is_none() {
        json!(values)
    } else {
        values.first().map_or(Value::Null, |v| json!(v))
    }
}

/// The `eq` comparisons of a value filter, as the attributes of the element it selects.
fn filter_attrs(f: &ValueFilter, out: &mut Map<String, Value>) {
    match f {
        ValueFilter::And(a, b) => {
            filter_attrs(a, out);
            filter_attrs(b, out);
        }
        ValueFilter::Compare {
            attr,
            op: CompareOp::Eq,
            value,
        } => {
            let v = match value {
                Literal::Str(s) => json!(s),
                Literal::Bool(b) => json!(b),
                Literal::Num(n) => json!(n),
                Literal::Null => return,
            };
            out.insert(attr.clone(), v);
        }
        _ => {}
    }
}

/// Writes `values` at `path` into a document.
fn put(doc: &mut Value, path: &AttrPath, values: &[String]) {
    if values.is_empty() {
        return;
    }
    let root = match &path.urn {
        Some(urn) => {
            if doc.get(urn).is_none() {
                doc[urn.as_str()] = json!({});
            }
            &mut doc[urn.as_str()]
        }
        None => doc,
    };
    let attr = path.attr.as_str();
    match (&path.filter, &path.sub_attr) {
        (Some(f), sub) => {
            let mut element = Map::new();
            filter_attrs(f, &mut element);
            element.insert(
                sub.clone().unwrap_or_else(|| "value".into()),
                json!(values[0]),
            );
            root[attr] = json!([element]);
        }
        (None, Some(sub)) if is_multi(attr) => {
            root[attr] = Value::Array(values.iter().map(|v| json!({ sub: v })).collect());
        }
        (None, Some(sub)) => {
            if !root.get(attr).is_some_and(Value::is_object) {
                root[attr] = json!({});
            }
            root[attr][sub.as_str()] = json!(values[0]);
        }
        (None, None) => root[attr] = single_or_many(path, values),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Mappings {
        Mappings::parse(&default_mappings("GenericSCIM")).unwrap()
    }

    #[test]
    fn new_account_carries_mapped_values_and_the_user_id() {
        let m = defaults();
        let u = m
            .user(
                &json!({"id": "u1", "userName": "alice", "displayName": "Alice S",
                "name": {"givenName": "Alice", "familyName": "Smith"},
                "emails": [{"value": "a@x", "primary": true}, {"value": "b@x"}]}),
            )
            .unwrap();
        let doc = m.new_account(&u);
        assert_eq!(doc["externalId"], "u1");
        assert_eq!(doc["userName"], "alice");
        assert_eq!(
            doc["name"],
            json!({"givenName": "Alice", "familyName": "Smith"})
        );
        assert_eq!(doc["emails"], json!([{"primary": true, "value": "a@x"}]));
        assert_eq!(doc["active"], true);
        // And reading it back as an account gives the same values: no update next run.
        let acct = m
            .account(&json!({"id": "a1", "externalId": "u1", "userName": "alice",
            "displayName": "Alice S", "name": doc["name"], "emails": doc["emails"]}))
            .unwrap();
        assert_eq!(acct.values, u.values);
    }

    #[test]
    fn update_replaces_only_what_differs() {
        let m = defaults();
        let u = m
            .user(&json!({"id": "u1", "userName": "alice",
                "name": {"givenName": "Al"}, "emails": [{"value": "new@x", "primary": true}]}))
            .unwrap();
        let p = serde_json::to_value(m.update(&u, &[2, 4], Some(false), true)).unwrap();
        let ops = p["Operations"].as_array().unwrap();
        assert_eq!(
            ops[0],
            json!({"op": "replace", "path": "name.givenName", "value": "Al"})
        );
        assert_eq!(
            ops[1],
            json!({"op": "replace", "path": "emails", "value": [{"primary": true, "value": "new@x"}]})
        );
        assert_eq!(ops[2]["path"], "active");
        assert_eq!(
            ops[3],
            json!({"op": "replace", "path": "externalId", "value": "u1"})
        );
    }

    #[test]
    fn unfiltered_multi_valued_paths_write_every_value() {
        let m = Mappings::parse(&[AttributeMapping {
            domain_attribute: "emails.value".into(),
            app_attribute: "emails.value".into(),
        }])
        .unwrap();
        let u = m
            .user(&json!({"id": "u1", "userName": "x", "emails": [{"value": "a"}, {"value": "b"}]}))
            .unwrap();
        let doc = m.new_account(&u);
        assert_eq!(doc["emails"], json!([{"value": "a"}, {"value": "b"}]));
        assert_eq!(doc["userName"], "x", "userName defaults to the user's");
    }
}
