//! The CRDs of `crds/` install on a real apiserver and match the API contract.

use std::collections::BTreeSet;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};

use crate::harness::{self, control_plane, repo_path};

const KINDS: [&str; 4] = ["CatalogApp", "IdentityDomain", "SyncPolicy", "SyncRun"];

#[tokio::test]
async fn crds_are_established_and_follow_the_contract() {
    let cp = control_plane().await;
    let installed: Vec<CustomResourceDefinition> =
        Api::<CustomResourceDefinition>::all(cp.admin_client())
            .list(&ListParams::default())
            .await
            .expect("list CRDs")
            .items
            .into_iter()
            .filter(|crd| crd.spec.group == "catalogsync.io")
            .collect();

    let kinds: BTreeSet<&str> = installed
        .iter()
        .map(|c| c.spec.names.kind.as_str())
        .collect();
    assert_eq!(kinds, BTreeSet::from(KINDS));
    let from_files = harness::read_crds(&repo_path("crds")).expect("read crds/");
    assert_eq!(
        installed.len(),
        from_files.len(),
        "every CRD of crds/ is installed"
    );

    for crd in &installed {
        let name = crd.metadata.name.as_deref().unwrap_or_default();
        assert_eq!(crd.spec.scope, "Namespaced", "{name}");
        assert!(
            crd.spec
                .names
                .categories
                .iter()
                .flatten()
                .any(|c| c == "catalogsync"),
            "{name} is in category catalogsync"
        );
        let conditions = crd.status.as_ref().and_then(|s| s.conditions.as_ref());
        assert!(
            conditions
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Established" && c.status == "True"),
            "{name} is Established"
        );
        let v1alpha1 = crd
            .spec
            .versions
            .iter()
            .find(|v| v.name == "v1alpha1")
            .unwrap_or_else(|| panic!("{name} serves v1alpha1"));
        assert!(
            v1alpha1.served && v1alpha1.storage,
            "{name} v1alpha1 served and stored"
        );
        assert!(
            v1alpha1
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some()),
            "{name} has the status subresource"
        );
    }
}

#[tokio::test]
async fn catalogapp_synchronization_requires_provisioning() {
    let cp = control_plane().await;
    let ns = cp.new_namespace("crd-validation").await;
    let app = r#"
apiVersion: catalogsync.io/v1alpha1
kind: CatalogApp
metadata: {name: sync-without-provisioning}
spec:
  identityDomainRef: {name: corp}
  catalogItem: GenericSCIM
  connection: {url: "https://scim.example.com/v2", auth: {bearerToken: {secretRef: {name: s, key: token}}}}
  provisioning: {enabled: false}
  synchronization: {enabled: true}
"#;
    let message = cp.apply_yaml_expect_rejection(&ns, app).await;
    assert!(
        message.contains("synchronization can only be enabled when provisioning is enabled"),
        "{message}"
    );
}
