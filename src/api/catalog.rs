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
}

const SOURCES: &[&str] = &[include_str!("../../catalog/GenericSCIM.yaml")];

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
        assert!(get("GenericSCIM").is_some());
        assert!(get("NoSuchApp").is_none());
    }
}
