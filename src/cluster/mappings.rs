//! Checking a CatalogApp's attribute mappings against the User schema: what the controller
//! reports (`ProvisioningEnabled` False, reason `InvalidMapping`) and the engine refuses to
//! run with. The API server refuses the same paths at admission (`api::attribute_path`);
//! this stays for objects stored before that rule.

use crate::api::{AttributeMapping, CatalogApp};
use crate::scim::schema;

/// Checks mapping paths against the User schema: each side's path must be possible
/// ([`schema::check_user_path`]). The message names the mapping.
pub fn check(mappings: &[AttributeMapping], field: &str) -> Result<(), String> {
    for (i, m) in mappings.iter().enumerate() {
        for (side, path) in [
            ("domainAttribute", &m.domain_attribute),
            ("appAttribute", &m.app_attribute),
        ] {
            schema::check_user_path(path)
                .map_err(|e| format!("{field}[{i}].{side}: impossible path {e}"))?;
        }
    }
    Ok(())
}

/// Every mapping an app configures: provisioning's and synchronization's (the catalog's
/// own are checked by a unit test).
pub fn check_app(app: &CatalogApp) -> Result<(), String> {
    if let Some(p) = &app.spec.provisioning {
        check(&p.attribute_mappings, "spec.provisioning.attributeMappings")?;
    }
    if let Some(s) = &app.spec.synchronization {
        check(
            &s.attribute_mappings,
            "spec.synchronization.attributeMappings",
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_impossible_mapping_is_named_with_its_field() {
        let app = crate::api::catalog_app::test_app(serde_json::json!({"enabled": true,
        "attributeMappings": [
            {"domainAttribute": "userName", "appAttribute": "userName"},
            {"domainAttribute": "displayName", "appAttribute": "name.value"}
        ]}));
        let e = check_app(&app).unwrap_err();
        assert!(
            e.starts_with("spec.provisioning.attributeMappings[1].appAttribute: impossible path \"name.value\": name has no sub-attribute"),
            "{e}"
        );
        let ok = crate::api::catalog_app::test_app(serde_json::json!({"enabled": true,
            "attributeMappings": [{"domainAttribute": "emails[primary eq true].value", "appAttribute": "emails.value"}]}));
        assert_eq!(check_app(&ok), Ok(()));
    }
}
