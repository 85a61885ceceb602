//! `deploy/` is a valid kustomization: it applies to a real apiserver, its
//! CRDs are those of `crds/`, and the controller Pod passes the restricted Pod
//! Security Standard.

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Pod, Service},
};
use kube::api::{Api, ObjectMeta, PostParams};

use crate::harness::{self, ControlPlane, control_plane, parse_yaml, repo_path};

const SYSTEM_NS: &str = "catalogsync-system";

/// The objects `kubectl kustomize deploy` renders, of kind `K`.
async fn rendered<K: serde::de::DeserializeOwned>(cp: &ControlPlane, kind: &str) -> Vec<K> {
    let deploy = repo_path("deploy").display().to_string();
    let out = cp.kubectl(["kustomize", &deploy]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_yaml(&String::from_utf8_lossy(&out.stdout))
        .expect("rendered YAML")
        .into_iter()
        .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == kind))
        .map(|o| serde_json::from_value(serde_json::to_value(o).unwrap()).expect(kind))
        .collect()
}

/// Creates the system namespace as `deploy/namespace.yaml` declares it.
async fn ensure_system_namespace(cp: &ControlPlane) {
    let yaml = std::fs::read_to_string(repo_path("deploy/namespace.yaml")).unwrap();
    cp.apply_yaml("", &yaml)
        .await
        .expect("apply deploy/namespace.yaml");
}

#[test]
fn deploy_crds_are_the_crds_of_the_crds_dir() {
    let mut generated = harness::read_crds(&repo_path("crds")).expect("crds/");
    let mut deployed =
        harness::read_crds(&repo_path("deploy/crds.yaml")).expect("deploy/crds.yaml");
    let key = |c: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition| {
        c.metadata.name.clone()
    };
    generated.sort_by_key(key);
    deployed.sort_by_key(key);
    assert!(
        generated == deployed,
        "deploy/crds.yaml differs from crds/: regenerate it (cat crds/*.yaml > deploy/crds.yaml)"
    );
}

#[tokio::test]
async fn deploy_applies_with_server_dry_run() {
    let cp = control_plane().await;
    // A server dry run creates nothing, so the namespaced objects need their
    // namespace to exist already.
    ensure_system_namespace(cp).await;
    let deploy = repo_path("deploy").display().to_string();
    let out = cp
        .kubectl(["apply", "-k", &deploy, "--dry-run=server"])
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubectl apply -k deploy --dry-run=server: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/catalogapps.catalogsync.io",
        "namespace/catalogsync-system",
        "serviceaccount/catalogsync-controller",
        "serviceaccount/catalogsync-sync-job",
        "clusterrole.rbac.authorization.k8s.io/catalogsync-controller",
        "clusterrole.rbac.authorization.k8s.io/catalogsync-sync-job",
        "clusterrolebinding.rbac.authorization.k8s.io/catalogsync-controller",
        "role.rbac.authorization.k8s.io/catalogsync-leader-election",
        "rolebinding.rbac.authorization.k8s.io/catalogsync-leader-election",
        "deployment.apps/catalogsync-controller",
        "service/catalogsync-controller-metrics",
    ] {
        assert!(
            stdout.contains(object),
            "{object} in the dry run:\n{stdout}"
        );
    }
}

#[tokio::test]
async fn controller_deployment_runs_two_leader_elected_hardened_replicas() {
    let cp = control_plane().await;
    let [deployment] = <[Deployment; 1]>::try_from(rendered::<Deployment>(cp, "Deployment").await)
        .expect("one Deployment");
    let spec = deployment.spec.expect("spec");
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.clone().expect("pod spec");
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("catalogsync-controller")
    );
    let [c] = <[_; 1]>::try_from(pod.containers.clone()).expect("one container");
    assert_eq!(
        c.args,
        Some(vec!["controller".into(), "--leader-elect".into()])
    );
    let port = c
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("http"));
    assert_eq!(port.map(|p| p.container_port), Some(8080));
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(probe_path(&c.liveness_probe).as_deref(), Some("/healthz"));
    assert_eq!(probe_path(&c.readiness_probe).as_deref(), Some("/readyz"));
    let resources = c.resources.clone().expect("resources");
    assert!(
        resources
            .requests
            .is_some_and(|r| r.contains_key("cpu") && r.contains_key("memory"))
    );
    assert!(resources.limits.is_some_and(|r| r.contains_key("memory")));
    let sc = c
        .security_context
        .clone()
        .expect("container securityContext");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(
        sc.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".into()])
    );

    // The namespace enforces the restricted Pod Security Standard; the
    // apiserver's admission decides whether this Pod may run there.
    ensure_system_namespace(cp).await;
    let pods: Api<Pod> = Api::namespaced(cp.admin_client(), SYSTEM_NS);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let meta = |name: &str| ObjectMeta {
        name: Some(name.into()),
        ..Default::default()
    };
    let controller = Pod {
        metadata: meta("controller"),
        spec: Some(pod.clone()),
        ..Default::default()
    };
    harness::assert_allowed(
        pods.create(&dry_run, &controller).await,
        "restricted Pod admission",
    );
    // Proves the check above can fail: the same Pod without hardening is refused.
    let mut weak = pod;
    weak.security_context = None;
    weak.containers[0].security_context = None;
    let weak = Pod {
        metadata: meta("weak"),
        spec: Some(weak),
        ..Default::default()
    };
    let err = pods
        .create(&dry_run, &weak)
        .await
        .expect_err("unhardened Pod refused");
    assert!(err.to_string().contains("restricted"), "{err}");

    let [service] =
        <[Service; 1]>::try_from(rendered::<Service>(cp, "Service").await).expect("one Service");
    let service = service.spec.expect("service spec");
    let labels = spec
        .template
        .metadata
        .and_then(|m| m.labels)
        .expect("pod labels");
    let selector = service.selector.expect("service selector");
    assert!(
        selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
        "the Service selects the controller Pods"
    );
    let metrics = service
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("metrics"));
    assert_eq!(metrics.map(|p| p.port), Some(8080));
}

/// `deploy/components/namespaced`: the controller's rules as a Role in the watched
/// namespace, the same rules as the ClusterRole, nothing cluster-wide for it (no
/// cluster-wide Secret access), `--namespace` on the controller; it applies.
#[tokio::test]
async fn the_namespaced_component_confines_the_controller_to_one_namespace() {
    use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
    let cp = control_plane().await;
    let (dir, rendered_yaml) = namespaced_install(cp).await;
    let overlay = dir.path().display().to_string();
    let objects = parse_yaml(&rendered_yaml).expect("rendered YAML");
    let of = |kind: &str| -> Vec<serde_json::Value> {
        objects
            .iter()
            .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == kind))
            .map(|o| serde_json::to_value(o).unwrap())
            .collect()
    };
    let named = |o: &serde_json::Value| o["metadata"]["name"] == "catalogsync-controller";
    assert!(
        !of("ClusterRole").iter().any(named),
        "no controller ClusterRole"
    );
    assert!(
        !of("ClusterRoleBinding").iter().any(named),
        "no ClusterRoleBinding"
    );
    let role: Role = serde_json::from_value(of("Role").into_iter().find(named).unwrap()).unwrap();
    assert_eq!(role.metadata.namespace.as_deref(), Some("catalogsync-apps"));
    let cluster_role: ClusterRole = rendered(cp, "ClusterRole")
        .await
        .into_iter()
        .find(|r: &ClusterRole| r.metadata.name.as_deref() == Some("catalogsync-controller"))
        .expect("the cluster-wide install's ClusterRole");
    assert_eq!(
        role.rules, cluster_role.rules,
        "the same rules, in one namespace"
    );
    let deployment = of("Deployment").remove(0);
    let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(
        args,
        &serde_json::json!([
            "controller",
            "--leader-elect",
            "--namespace",
            "catalogsync-apps"
        ])
    );

    // It applies (server dry run: the namespaces must exist).
    ensure_system_namespace(cp).await;
    cp.apply_yaml(
        "",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: catalogsync-apps}\n",
    )
    .await
    .expect("the watched namespace");
    let out = cp
        .kubectl(["apply", "-k", &overlay, "--dry-run=server"])
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("role.rbac.authorization.k8s.io/catalogsync-controller"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("clusterrole.rbac.authorization.k8s.io/catalogsync-controller"),
        "{stdout}"
    );
}

/// A kustomization of `deploy/` with the namespaced component (in a temp dir, kept while
/// the guard lives), and its rendering.
async fn namespaced_install(cp: &ControlPlane) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let deploy = pathdiff(&repo_path("deploy"), dir.path());
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!("resources: [{deploy}]\ncomponents: [{deploy}/components/namespaced]\n"),
    )
    .unwrap();
    let out = cp
        .kubectl(["kustomize", &dir.path().display().to_string()])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The namespaced install's controller reads its own pod's image (the sync Jobs' image)
/// with its own ServiceAccount token, and no pod elsewhere. Its accounts, Roles and
/// bindings applied for real into two fresh namespaces standing for catalogsync-system
/// and catalogsync-apps, so that the ClusterRole other tests install lends it nothing.
#[tokio::test]
async fn the_namespaced_controller_reads_its_own_image_and_no_other_pods() {
    use crate::harness::{assert_allowed, assert_forbidden};
    use k8s_openapi::api::rbac::v1::RoleBinding;
    let cp = control_plane().await;
    let system = cp.new_namespace("own-image-system").await;
    let apps = cp.new_namespace("own-image-apps").await;
    let (_dir, yaml) = namespaced_install(cp).await;
    let yaml = yaml
        .replace("catalogsync-system", &system)
        .replace("catalogsync-apps", &apps);
    for o in parse_yaml(&yaml).expect("rendered YAML") {
        let kind = o.types.as_ref().map(|t| t.kind.as_str()).unwrap_or("");
        if ["ServiceAccount", "Role", "RoleBinding"].contains(&kind) {
            let ns = o.metadata.namespace.clone().expect("namespaced");
            let doc = serde_json::to_string(&o).unwrap();
            cp.apply_yaml(&ns, &doc).await.expect("apply RBAC");
        }
    }
    let image = "registry.example/catalogsync:9.9.9";
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "catalogsync-controller-5d8f7-x2x9q"},
        "spec": {"serviceAccountName": "catalogsync-controller",
                 "automountServiceAccountToken": false,
                 "containers": [{"name": "controller", "image": image}]}
    }))
    .unwrap();
    let admin_pods: Api<Pod> = Api::namespaced(cp.admin_client(), &system);
    let pod_name = admin_pods
        .create(&PostParams::default(), &pod)
        .await
        .expect("the controller's pod")
        .metadata
        .name
        .unwrap();

    let ctl = cp.sa_client(&system, "catalogsync-controller").await;
    let read = || catalogsync::cli::controller_image(&ctl, &system, &pod_name);
    let found = crate::controller::eventually(30, "the controller reads its own image", || async {
        read().await.ok()
    })
    .await;
    assert_eq!(found.as_deref(), Some(image), "the sync Jobs' image");
    // Its own namespace only: no pod of any other namespace, no pod writes.
    assert_forbidden(
        Api::<Pod>::namespaced(ctl.clone(), "default")
            .list(&Default::default())
            .await,
        "list pods in another namespace",
    );
    assert_forbidden(
        Api::<Pod>::namespaced(ctl.clone(), &system)
            .delete(&pod_name, &Default::default())
            .await,
        "delete its own pod",
    );
    // The check can fail: without the component's Role binding it cannot read its pod.
    Api::<RoleBinding>::namespaced(cp.admin_client(), &system)
        .delete("catalogsync-controller-own-pod", &Default::default())
        .await
        .expect("unbind");
    crate::controller::eventually(30, "the read refused without the binding", || async {
        matches!(read().await, Err(kube::Error::Api(s)) if s.code == 403).then_some(())
    })
    .await;
    assert_allowed(admin_pods.get(&pod_name).await, "the pod is still there");
}

/// `path` relative to `base` (kustomize wants relative paths to other kustomizations).
fn pathdiff(path: &std::path::Path, base: &std::path::Path) -> String {
    let ups = base.components().count().saturating_sub(1);
    let root = std::path::Path::new("/");
    let rel = path.strip_prefix(root).unwrap();
    format!("{}{}", "../".repeat(ups), rel.display())
}
