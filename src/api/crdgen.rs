//! The CustomResourceDefinitions of every kind, as served to the API server.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::api::{CatalogApp, IdentityDomain, SyncPolicy, SyncRun};

/// Every CRD, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        IdentityDomain::crd(),
        CatalogApp::crd(),
        SyncPolicy::crd(),
        SyncRun::crd(),
    ]
}

/// Every CRD as one multi-document YAML stream, as checked in under `crds/`.
pub fn to_yaml() -> String {
    let mut out = String::new();
    for crd in all() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd).expect("a CRD serializes to YAML"));
    }
    out
}

/// The file name under `crds/` for a CRD.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("crd"))
}

/// Writes one YAML file per CRD into `dir` (the layout of `crds/`).
pub fn write_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for crd in all() {
        let yaml = serde_yaml_ng::to_string(&crd).expect("a CRD serializes to YAML");
        std::fs::write(dir.join(file_name(&crd)), format!("---\n{yaml}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `crds/` is generated; this fails when it is stale. Regenerate with
    /// `make crds`.
    #[test]
    fn checked_in_crds_are_current() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        for crd in all() {
            let path = dir.join(file_name(&crd));
            let want = format!("---\n{}", serde_yaml_ng::to_string(&crd).unwrap());
            let have = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; run `make crds`", path.display()));
            assert!(have == want, "{} is stale; run `make crds`", path.display());
        }
        let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/crds.yaml");
        let have = std::fs::read_to_string(&deploy).unwrap_or_default();
        assert!(
            have == to_yaml(),
            "deploy/crds.yaml is stale; run `make crds`"
        );
    }
}
