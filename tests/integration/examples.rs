//! Every manifest in `examples/` is accepted by the CRDs, through `kubectl`
//! and through the kube client, and loses no field on the way (the apiserver
//! silently prunes fields a schema does not declare).

use std::{collections::BTreeSet, fs, path::PathBuf};

use crate::harness::{control_plane, parse_yaml, repo_path};

fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(repo_path("examples"))
        .expect("examples/")
        .map(|e| e.expect("examples/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn examples_apply_with_kubectl_and_list_as_catalogsync() {
    let cp = control_plane().await;
    let ns = cp.new_namespace("examples-kubectl").await;
    let examples = repo_path("examples").display().to_string();
    let out = cp
        .kubectl(["apply", "--server-side", "-n", &ns, "-f", &examples])
        .await;
    assert!(
        out.status.success(),
        "kubectl apply --server-side -f examples/: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = cp
        .kubectl(["get", "catalogsync", "-n", &ns, "-o", "name"])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let expected: BTreeSet<String> = [
        "catalogapp.catalogsync.io/slack",
        "identitydomain.catalogsync.io/corp",
        "syncpolicy.catalogsync.io/default",
        "syncrun.catalogsync.io/slack-plan",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(listed, expected);

    // The human-readable table works too (printer columns are evaluated).
    let out = cp.kubectl(["get", "catalogsync", "-n", &ns]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("slack-plan"));
}

#[tokio::test]
async fn examples_apply_with_the_kube_client_without_losing_fields() {
    let cp = control_plane().await;
    let ns = cp.new_namespace("examples-client").await;
    let mut kinds = BTreeSet::new();
    for file in example_files() {
        let yaml = fs::read_to_string(&file).expect("read example");
        let applied = cp
            .apply_yaml(&ns, &yaml)
            .await
            .unwrap_or_else(|e| panic!("{} rejected: {e}", file.display()));
        let wanted = parse_yaml(&yaml).expect("parse example");
        assert_eq!(applied.len(), wanted.len(), "{}", file.display());
        for (got, want) in applied.iter().zip(&wanted) {
            let kind = want
                .types
                .as_ref()
                .map(|t| t.kind.clone())
                .unwrap_or_default();
            assert!(got.metadata.uid.is_some(), "{kind} was stored");
            assert_eq!(got.metadata.namespace.as_deref(), Some(ns.as_str()));
            // Secrets come back with stringData folded into data; compare the
            // declared spec of everything else.
            if let Some(spec) = want.data.get("spec") {
                assert_eq!(
                    got.data.get("spec"),
                    Some(spec),
                    "{kind} {} kept every spec field",
                    file.display()
                );
            }
            kinds.insert(kind);
        }
    }
    for kind in [
        "IdentityDomain",
        "CatalogApp",
        "SyncPolicy",
        "SyncRun",
        "Secret",
    ] {
        assert!(kinds.contains(kind), "examples/ has a {kind}");
    }
}
