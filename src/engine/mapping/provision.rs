//! Attribute mappings of provisioning (identity-domain user → app account): reading the
//! mapped values on both sides, and writing them into a new account (with
//! [`super::build`]) or a PATCH. Pure.

use serde_json::{Map, Value, json};

use crate::api::AttributeMapping;
use crate::api::Direction;
use crate::api::catalog::{RequiredAttribute, ScimConventions};
use crate::engine::plan::provision::{ProvisionAccount, ProvisionUser};
use crate::scim::AttrPath;
use crate::scim::model::{PatchOp, PatchOperation, USER_SCHEMA};
use crate::scim::schema;

/// The provisioning mappings of a catalog entry (GenericSCIM's for an unknown entry).
pub fn default_mappings(catalog_item: &str) -> Vec<AttributeMapping> {
    crate::api::catalog::get(catalog_item)
        .or_else(|| crate::api::catalog::get("GenericSCIM"))
        .map(|e| e.provisioning_mappings.clone())
        .unwrap_or_default()
}

/// The import mappings (app account → new user) of a catalog entry (GenericSCIM's for an
/// unknown entry).
pub fn default_import_mappings(catalog_item: &str) -> Vec<AttributeMapping> {
    crate::api::catalog::get(catalog_item)
        .or_else(|| crate::api::catalog::get("GenericSCIM"))
        .map(|e| e.import_mappings.clone())
        .unwrap_or_default()
}

/// Parsed mappings, with what the app's catalog entry says a new account needs.
#[derive(Clone, Debug)]
pub struct Mappings {
    pub raw: Vec<AttributeMapping>,
    pub domain: Vec<AttrPath>,
    pub app: Vec<AttrPath>,
    /// The app stores `externalId`: new accounts carry the user's id in it.
    pub external_id_writable: bool,
    /// Attributes a new account must have, with where to take them from.
    pub required: Vec<RequiredAttribute>,
    /// Mappings (indexes) whose app attribute the app cannot change after create.
    pub create_only: Vec<usize>,
}

impl Mappings {
    pub fn parse(mappings: &[AttributeMapping]) -> Result<Self, String> {
        super::check(mappings, "provisioning attribute mappings")?;
        let mut m = Mappings {
            raw: mappings.to_vec(),
            domain: Vec::new(),
            app: Vec::new(),
            external_id_writable: true,
            required: Vec::new(),
            create_only: Vec::new(),
        };
        for a in mappings {
            m.domain
                .push(a.domain_attribute.parse().map_err(|e| format!("{e}"))?);
            m.app
                .push(a.app_attribute.parse().map_err(|e| format!("{e}"))?);
        }
        Ok(m)
    }

    /// The app's conventions (its catalog entry): whether `externalId` can be written, and
    /// the attributes required on create.
    pub fn with_conventions(mut self, c: &ScimConventions) -> Result<Self, String> {
        for r in &c.required_attributes {
            for path in std::iter::once(&r.attribute).chain(&r.from) {
                schema::check_user_path(path)
                    .map_err(|e| format!("required attribute: impossible path {e}"))?;
            }
        }
        self.external_id_writable = c.external_id_writable;
        self.create_only = self
            .raw
            .iter()
            .enumerate()
            .filter(|(_, m)| {
                c.create_only_attributes
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(&m.app_attribute))
            })
            .map(|(i, _)| i)
            .collect();
        self.required = c.required_attributes.clone();
        Ok(self)
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

    pub fn user(&self, v: &Value) -> Option<ProvisionUser> {
        Some(ProvisionUser {
            id: v.get("id")?.as_str()?.to_string(),
            user_name: text(v, "userName"),
            active: v.get("active").and_then(Value::as_bool).unwrap_or(true),
            values: self.domain.iter().map(|p| p.values(v)).collect(),
        })
    }

    pub fn account(&self, v: &Value) -> Option<ProvisionAccount> {
        Some(ProvisionAccount {
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
    pub fn new_account(&self, u: &ProvisionUser) -> Value {
        let mut doc = super::build(&self.raw, Direction::Provision, |src| {
            self.first_value(u, src)
        });
        doc["schemas"] = json!([USER_SCHEMA]);
        if self.external_id_writable {
            doc["externalId"] = json!(u.id);
        }
        doc["active"] = json!(u.active);
        if doc.get("userName").is_none() {
            doc["userName"] = json!(u.user_name);
        }
        for r in &self.required {
            let present = |p: &str| {
                p.parse::<AttrPath>()
                    .ok()
                    .and_then(|p| p.values(&doc).into_iter().find(|v| !v.trim().is_empty()))
            };
            if present(&r.attribute).is_none()
                && let Some(v) = r.from.iter().find_map(|f| present(f))
                && let Value::Object(m) = &mut doc
            {
                super::set(m, &r.attribute, json!(v));
            }
        }
        doc
    }

    fn first_value(&self, u: &ProvisionUser, domain_path: &str) -> Option<String> {
        let i = self
            .raw
            .iter()
            .position(|m| m.domain_attribute == domain_path)?;
        u.values.get(i)?.first().cloned()
    }

    /// The PATCH bringing an account in line: the differing mappings, `active`, and the
    /// `externalId` of an adopted account.
    pub fn update(
        &self,
        u: &ProvisionUser,
        mappings: &[usize],
        active: Option<bool>,
        set_external_id: bool,
    ) -> PatchOp {
        let mut ops: Vec<PatchOperation> = Vec::new();
        for &i in mappings {
            let path = &self.app[i];
            let value = u.values[i].first().cloned().unwrap_or_default();
            if path.filter.is_some() || schema::is_multi_valued(path) {
                // Replace the whole multi-valued attribute: the element is rebuilt (a PATCH
                // path such as `emails.value` would touch every element, RFC 7644 §3.5.2.3).
                let mut doc = Map::new();
                super::set(&mut doc, &self.raw[i].app_attribute, json!(value));
                if let Some((key, v)) = doc.into_iter().next() {
                    ops.push(PatchOp::replace(key, v));
                }
            } else {
                ops.push(PatchOp::replace(path.to_string(), json!(value)));
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
    fn a_new_account_follows_the_apps_conventions() {
        let entry = crate::api::catalog::get("Canaille").unwrap();
        let m = Mappings::parse(&entry.provisioning_mappings)
            .unwrap()
            .with_conventions(&entry.scim)
            .unwrap();
        let u = m
            .user(
                &json!({"id": "u1", "userName": "alice", "displayName": "Alice S",
                "emails": [{"value": "a@x", "primary": true, "type": "work"}]}),
            )
            .unwrap();
        let doc = m.new_account(&u);
        assert_eq!(doc.get("externalId"), None, "read-only in Canaille");
        assert_eq!(doc["emails"], json!([{"value": "a@x"}]), "value only");
        assert_eq!(
            doc["name"],
            json!({"formatted": "Alice S", "familyName": "alice"}),
            "required, from displayName and userName"
        );
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
}
