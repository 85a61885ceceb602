//! The built-in app catalog: one YAML file per kind of app under `catalog/`, compiled into
//! the binary. An entry names the operations the app supports and its default attribute
//! mappings; a CatalogApp picks one with `spec.catalogItem`.

use std::sync::LazyLock;

use serde::Deserialize;

use crate::api::{AttributeMapping, Operation};

/// How an app deactivates an account.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deactivation {
    /// Set `active` to false (RFC 7643 section 4.1.1).
    ActiveFalse,
    /// The app has no inactive state: deactivation deletes the account.
    Delete,
}

/// One entry of the catalog.
#[derive(Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct CatalogEntry {
    pub name: String,
    pub description: String,
    /// Where the entry's behaviour is documented.
    pub references: Vec<String>,
    pub operations: Vec<Operation>,
    pub deactivation: Deactivation,
    /// Identity domain user → app account, for provisioning.
    pub provisioning_mappings: Vec<AttributeMapping>,
    /// App account → identity domain user, for CreateUser during synchronization.
    pub import_mappings: Vec<AttributeMapping>,
    /// How the app's SCIM server departs from what RFC 7643/7644 let a client assume.
    #[serde(default)]
    pub scim: ScimConventions,
}

/// A SCIM feature a client may be told to avoid although the server advertises it.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// Filtered queries: the client lists and filters on its side.
    Filter,
    /// Bulk requests.
    Bulk,
}

/// How group members are referenced in `members[].value`.
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MemberReference {
    /// The member's `id` (RFC 7643 §4.2).
    #[default]
    Id,
    /// The member's `userName`.
    UserName,
}

/// An attribute the app requires on create, filled from the first of `from` (attribute
/// paths of the new account) that has a value when no mapping gave it one.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RequiredAttribute {
    pub attribute: String,
    pub from: Vec<String>,
}

/// An app's SCIM conventions; the defaults are RFC 7643/7644's. Each fact that departs
/// from a default names its source in `sources` (checked by a unit test).
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct ScimConventions {
    /// Send `count` with list requests (RFC 7644 §3.4.2.4). False for a server that fails
    /// on it: its pages are then whatever it serves.
    pub send_count: bool,
    /// Features not to use although advertised.
    pub avoid: Vec<Feature>,
    /// Whether the app stores `externalId` (RFC 7643 §3.1 makes it the client's to set).
    pub external_id_writable: bool,
    /// The app attribute that proves an account is the user's when `externalId` cannot be
    /// written: it must be one of the matching rules' app attributes.
    pub ownership_attribute: String,
    /// How the app's group members are referenced.
    pub member_reference: MemberReference,
    /// Attributes the app requires on create beyond `userName`.
    pub required_attributes: Vec<RequiredAttribute>,
    /// Attributes the app takes on create but fails to change: never updated.
    pub create_only_attributes: Vec<String>,
    /// Where each fact above comes from, by field name.
    pub sources: std::collections::BTreeMap<String, String>,
}

impl Default for ScimConventions {
    fn default() -> Self {
        ScimConventions {
            send_count: true,
            avoid: Vec::new(),
            external_id_writable: true,
            ownership_attribute: "externalId".into(),
            member_reference: MemberReference::Id,
            required_attributes: Vec::new(),
            create_only_attributes: Vec::new(),
            sources: Default::default(),
        }
    }
}

#[cfg(test)]
impl ScimConventions {
    /// The fields that depart from the defaults: each needs a source.
    fn departures(&self) -> Vec<&'static str> {
        let d = ScimConventions::default();
        [
            ("sendCount", self.send_count != d.send_count),
            ("avoid", self.avoid != d.avoid),
            (
                "externalIdWritable",
                self.external_id_writable != d.external_id_writable,
            ),
            (
                "ownershipAttribute",
                self.ownership_attribute != d.ownership_attribute,
            ),
            (
                "memberReference",
                self.member_reference != d.member_reference,
            ),
            (
                "requiredAttributes",
                self.required_attributes != d.required_attributes,
            ),
            (
                "createOnlyAttributes",
                self.create_only_attributes != d.create_only_attributes,
            ),
        ]
        .into_iter()
        .filter_map(|(name, departs)| departs.then_some(name))
        .collect()
    }
}

const SOURCES: &[&str] = &[
    include_str!("../../catalog/GenericSCIM.yaml"),
    include_str!("../../catalog/Canaille.yaml"),
];

static CATALOG: LazyLock<Vec<CatalogEntry>> = LazyLock::new(|| {
    SOURCES
        .iter()
        .map(|s| {
            serde_yaml_ng::from_str(s).expect("catalog entries are valid (checked by a unit test)")
        })
        .collect()
});

/// Every entry, in file order.
pub fn entries() -> &'static [CatalogEntry] {
    &CATALOG
}

/// The entry with this name.
pub fn get(name: &str) -> Option<&'static CatalogEntry> {
    CATALOG.iter().find(|e| e.name == name)
}

/// Schema of `spec.catalogItem`: an enum of the catalog's names, so an unknown entry is
/// rejected at admission with the list of valid ones.
pub fn catalog_item_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<&str> = entries().iter().map(|e| e.name.as_str()).collect();
    schemars::json_schema!({
        "type": "string",
        "default": "GenericSCIM",
        "enum": names,
        "description": "Entry of the built-in app catalog that describes this app's SCIM conventions."
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_parses_and_is_documented() {
        assert!(!entries().is_empty());
        for e in entries() {
            assert!(
                !e.references.is_empty(),
                "{} cites no documentation",
                e.name
            );
            assert!(
                !e.provisioning_mappings.is_empty(),
                "{} has no mappings",
                e.name
            );
            assert!(
                e.provisioning_mappings
                    .iter()
                    .any(|m| m.app_attribute == "userName"),
                "{} must map userName",
                e.name
            );
        }
        for e in entries() {
            for field in e.scim.departures() {
                assert!(
                    e.scim
                        .sources
                        .get(field)
                        .is_some_and(|s| !s.trim().is_empty()),
                    "{}: scim.{field} departs from the RFC default but names no source",
                    e.name
                );
            }
        }
        assert!(get("GenericSCIM").is_some());
        let canaille = get("Canaille").unwrap();
        assert!(!canaille.scim.send_count);
        assert!(!canaille.scim.external_id_writable);
        assert_eq!(canaille.scim.member_reference, MemberReference::UserName);
        assert!(get("NoSuchApp").is_none());
    }
}
