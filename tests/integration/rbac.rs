//! The RBAC of `deploy/`, applied for real and exercised with real requests
//! through service-account tokens: each account can do its job and no more.

use catalogsync::api::{CatalogApp, SyncRun};
use catalogsync::controller::sync_run::job::{self, JobConfig};
use k8s_openapi::api::{
    batch::v1::Job,
    coordination::v1::Lease,
    core::v1::{Event as CoreEvent, Namespace, Pod, Secret},
    events::v1::Event,
    rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
};
use kube::{
    Client,
    api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams},
    core::{ApiResource, GroupVersionKind},
};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::OnceCell;

use crate::harness::{ControlPlane, assert_allowed, assert_forbidden, control_plane, repo_path};

const SYSTEM_NS: &str = "catalogsync-system";

/// Applies `deploy/` for real, once per test process.
async fn deploy(cp: &ControlPlane) {
    static DEPLOYED: OnceCell<()> = OnceCell::const_new();
    DEPLOYED
        .get_or_init(|| async {
            let deploy = repo_path("deploy").display().to_string();
            let out = cp
                .kubectl(["apply", "-k", &deploy, "--server-side", "--force-conflicts"])
                .await;
            assert!(
                out.status.success(),
                "apply deploy/: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        })
        .await;
}

/// An Api for a catalogsync kind, e.g. `catalogsync("SyncRun", "syncruns")`.
fn catalogsync(client: &Client, ns: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("catalogsync.io", "v1alpha1", kind);
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

fn from_json<K: DeserializeOwned>(value: serde_json::Value) -> K {
    serde_json::from_value(value).expect("object from JSON")
}

/// A namespace holding the examples (Secrets, IdentityDomain, CatalogApp
/// `slack`, SyncPolicy, SyncRun `slack-plan`), as the admin created them.
async fn namespace_with_examples(cp: &ControlPlane, prefix: &str) -> String {
    let ns = cp.new_namespace(prefix).await;
    for file in [
        "secrets",
        "identitydomain",
        "catalogapp",
        "syncpolicy",
        "syncrun",
    ] {
        let yaml = std::fs::read_to_string(repo_path(format!("examples/{file}.yaml"))).unwrap();
        cp.apply_yaml(&ns, &yaml).await.expect("apply example");
    }
    ns
}

/// A scheduled SyncRun of the example app `slack`.
fn sync_run(name: &str) -> DynamicObject {
    from_json(json!({
        "apiVersion": "catalogsync.io/v1alpha1", "kind": "SyncRun",
        "metadata": {"name": name},
        "spec": {"appRef": {"name": "slack"}, "direction": "Import", "mode": "Apply", "trigger": "Schedule"}
    }))
}

fn sync_job(name: &str) -> Job {
    from_json(json!({
        "metadata": {"name": name},
        "spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "serviceAccountName": "catalogsync-sync-job",
            "containers": [{"name": "sync", "image": "catalogsync", "args": ["sync"]}]
        }}}
    }))
}

/// The per-run access the controller creates with a run's Job (its own functions), created
/// through the controller's own token: Kubernetes lets it grant only what it holds.
async fn grant_run_access(cp: &ControlPlane, ns: &str, run: &str) {
    let admin = cp.admin_client();
    let run: SyncRun = Api::namespaced(admin.clone(), ns).get(run).await.unwrap();
    let app: CatalogApp = Api::namespaced(admin, ns)
        .get(&run.spec.app_ref.name)
        .await
        .unwrap();
    let config = JobConfig::new("catalogsync", "catalogsync-sync-job");
    let ctl = cp.sa_client(SYSTEM_NS, "catalogsync-controller").await;
    let pp = PostParams::default();
    assert_allowed(
        Api::<Role>::namespaced(ctl.clone(), ns)
            .create(&pp, &job::access_role(&run, &app, Some("default")))
            .await,
        "the controller creates the run's Role",
    );
    assert_allowed(
        Api::<RoleBinding>::namespaced(ctl, ns)
            .create(&pp, &job::access_binding(&run, &config))
            .await,
        "the controller creates the run's RoleBinding",
    );
}

#[tokio::test]
async fn sync_job_account_reads_its_own_objects_and_reports_its_own_run_only() {
    let cp = control_plane().await;
    deploy(cp).await;
    let ns = namespace_with_examples(cp, "rbac-job").await;
    // What a user does in each app namespace (see deploy/rbac.yaml): grants nothing now.
    let binding: RoleBinding = from_json(json!({
        "metadata": {"name": "catalogsync-sync-job"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "catalogsync-sync-job"},
        "subjects": [{"kind": "ServiceAccount", "name": "catalogsync-sync-job", "namespace": ns}]
    }));
    Api::<RoleBinding>::namespaced(cp.admin_client(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("bind the sync-job role");
    // Another app and another run in the same namespace.
    let jira = std::fs::read_to_string(repo_path("examples/catalogapp-jira.yaml")).unwrap();
    cp.apply_yaml(&ns, &jira).await.unwrap();
    let admin_runs = catalogsync(&cp.admin_client(), &ns, "SyncRun", "syncruns");
    admin_runs
        .create(&PostParams::default(), &sync_run("other-run"))
        .await
        .unwrap();
    let job = cp.sa_client(&ns, "catalogsync-sync-job").await;
    let apps = catalogsync(&job, &ns, "CatalogApp", "catalogapps");
    let runs = catalogsync(&job, &ns, "SyncRun", "syncruns");
    let lp = ListParams::default();
    let status = json!({"status": {"phase": "Running", "progress": {"processed": 42, "total": 100, "percent": 42}}});
    let pp = PatchParams::default();

    // Before the controller grants the run's access, the account can do nothing.
    assert_forbidden(
        apps.get("slack").await,
        "get catalogapp without the run's Role",
    );
    assert_forbidden(
        runs.patch_status("slack-plan", &pp, &Patch::Merge(&status))
            .await,
        "patch syncruns/status without the run's Role",
    );
    grant_run_access(cp, &ns, "slack-plan").await;

    // Allowed: read its run, app, domain and policy; patch its run's status.
    eventually_allowed(|| apps.get("slack"), "get its catalogapp").await;
    assert_allowed(runs.get("slack-plan").await, "get its syncrun");
    assert_allowed(
        catalogsync(&job, &ns, "IdentityDomain", "identitydomains")
            .get("corp")
            .await,
        "get its identitydomain",
    );
    assert_allowed(
        catalogsync(&job, &ns, "SyncPolicy", "syncpolicies")
            .get("default")
            .await,
        "get its syncpolicy",
    );
    let patched = assert_allowed(
        runs.patch_status("slack-plan", &pp, &Patch::Merge(&status))
            .await,
        "patch its syncruns/status",
    );
    assert_eq!(patched.data["status"]["progress"]["percent"], 42);

    // Forbidden: other runs, other apps, listing, credentials, Jobs, any other change.
    assert_forbidden(
        runs.patch_status("other-run", &pp, &Patch::Merge(&status))
            .await,
        "patch another run's status",
    );
    assert_forbidden(runs.get("other-run").await, "get another run");
    assert_forbidden(runs.list(&lp).await, "list syncruns");
    assert_forbidden(apps.get("jira").await, "get another catalogapp");
    assert_forbidden(apps.list(&lp).await, "list catalogapps");
    assert_forbidden(
        Api::<Secret>::namespaced(job.clone(), &ns)
            .get("corp-iam")
            .await,
        "get secret",
    );
    assert_forbidden(
        Api::<Secret>::namespaced(job.clone(), &ns).list(&lp).await,
        "list secrets",
    );
    assert_forbidden(
        Api::<Job>::namespaced(job.clone(), &ns)
            .create(&PostParams::default(), &sync_job("escape"))
            .await,
        "create job",
    );
    let suspend = json!({"spec": {"suspend": true}});
    assert_forbidden(
        apps.patch("slack", &pp, &Patch::Merge(&suspend)).await,
        "patch catalogapp spec",
    );
    let mut app = apps.get("slack").await.unwrap();
    app.data["spec"]["suspend"] = json!(true);
    assert_forbidden(
        apps.replace("slack", &PostParams::default(), &app).await,
        "update catalogapp",
    );
    let app_status = json!({"status": {"observedGeneration": 1}});
    assert_forbidden(
        apps.patch_status("slack", &pp, &Patch::Merge(&app_status))
            .await,
        "patch catalogapps/status",
    );
    let run_spec = json!({"spec": {"mode": "Plan"}});
    assert_forbidden(
        runs.patch("slack-plan", &pp, &Patch::Merge(&run_spec))
            .await,
        "patch its run's spec",
    );
    assert_forbidden(
        runs.create(&PostParams::default(), &sync_run("sneaky"))
            .await,
        "create syncrun",
    );
    assert_forbidden(
        runs.delete("slack-plan", &DeleteParams::default()).await,
        "delete syncrun",
    );

    // Another namespace, even with a run of the same name: out of reach.
    let other = namespace_with_examples(cp, "rbac-job-other").await;
    assert_forbidden(
        catalogsync(&job, &other, "CatalogApp", "catalogapps")
            .get("slack")
            .await,
        "get catalogapp elsewhere",
    );
    assert_forbidden(
        catalogsync(&job, &other, "SyncRun", "syncruns")
            .patch_status("slack-plan", &pp, &Patch::Merge(&status))
            .await,
        "patch a run's status elsewhere",
    );
}

/// RBAC changes reach the authorizer's cache within moments: retry a call briefly.
async fn eventually_allowed<T, F, Fut>(call: F, what: &str) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = kube::Result<T>>,
{
    for _ in 0..50 {
        if let Ok(v) = call().await {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_allowed(call().await, what)
}

#[tokio::test]
async fn controller_account_runs_syncs_and_cannot_escalate() {
    let cp = control_plane().await;
    deploy(cp).await;
    let ns = namespace_with_examples(cp, "rbac-controller").await;
    let ctl = cp.sa_client(SYSTEM_NS, "catalogsync-controller").await;
    let lp = ListParams::default();

    // Reconcile the catalogsync kinds cluster-wide.
    let all_apps: Api<DynamicObject> = Api::all_with(
        ctl.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("catalogsync.io", "v1alpha1", "CatalogApp"),
            "catalogapps",
        ),
    );
    let listed = assert_allowed(
        all_apps.list(&lp).await,
        "list catalogapps in all namespaces",
    );
    assert!(
        listed
            .items
            .iter()
            .any(|a| a.metadata.namespace.as_deref() == Some(ns.as_str()))
    );
    let apps = catalogsync(&ctl, &ns, "CatalogApp", "catalogapps");
    let status = json!({"status": {"observedGeneration": 1}});
    assert_allowed(
        apps.patch_status("slack", &PatchParams::default(), &Patch::Merge(&status))
            .await,
        "patch catalogapps/status",
    );
    let annotate = json!({"metadata": {"annotations": {"catalogsync.io/handled": "yes"}}});
    assert_allowed(
        apps.patch("slack", &PatchParams::default(), &Patch::Merge(&annotate))
            .await,
        "patch catalogapp",
    );
    let app = apps.get("slack").await.unwrap();
    assert_forbidden(
        apps.replace("slack", &PostParams::default(), &app).await,
        "update (PUT) catalogapp",
    );

    // Run syncs: SyncRuns and their Jobs.
    let runs = catalogsync(&ctl, &ns, "SyncRun", "syncruns");
    let run = sync_run("scheduled");
    assert_allowed(
        runs.create(&PostParams::default(), &run).await,
        "create syncrun",
    );
    assert_allowed(
        runs.delete("scheduled", &DeleteParams::default()).await,
        "delete syncrun",
    );
    let jobs = Api::<Job>::namespaced(ctl.clone(), &ns);
    assert_allowed(
        jobs.create(&PostParams::default(), &sync_job("slack-sync"))
            .await,
        "create job",
    );
    assert_allowed(
        jobs.delete("slack-sync", &DeleteParams::background()).await,
        "delete job",
    );

    // Secrets: read to test connectivity, never write.
    let secrets = Api::<Secret>::namespaced(ctl.clone(), &ns);
    assert_allowed(secrets.get("slack-scim").await, "get secret");
    let secret: Secret =
        from_json(json!({"metadata": {"name": "planted"}, "stringData": {"k": "v"}}));
    assert_forbidden(
        secrets.create(&PostParams::default(), &secret).await,
        "create secret",
    );
    assert_forbidden(
        secrets.delete("slack-scim", &DeleteParams::default()).await,
        "delete secret",
    );

    // Events.
    let event: Event = from_json(json!({
        "metadata": {"name": "slack.synced"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "catalogsync.io/controller",
        "reportingInstance": "catalogsync-controller-0",
        "action": "Reconcile", "reason": "Synced", "type": "Normal",
        "regarding": {"apiVersion": "catalogsync.io/v1alpha1", "kind": "CatalogApp", "name": "slack", "namespace": ns}
    }));
    assert_allowed(
        Api::<Event>::namespaced(ctl.clone(), &ns)
            .create(&PostParams::default(), &event)
            .await,
        "create event",
    );

    // Why a Job's pod does not start: its pods and the Job's events, listed, never written.
    let pods = Api::<Pod>::namespaced(ctl.clone(), &ns);
    assert_allowed(pods.list(&lp).await, "list pods");
    assert_allowed(
        Api::<CoreEvent>::namespaced(ctl.clone(), &ns)
            .list(&lp)
            .await,
        "list core events",
    );
    assert_forbidden(
        pods.delete("slack-sync-x", &DeleteParams::default()).await,
        "delete pod",
    );
    assert_forbidden(pods.get("slack-sync-x").await, "get pod (list only)");

    // Leader election only in its own namespace.
    let lease: Lease = from_json(
        json!({"metadata": {"name": "catalogsync-controller"}, "spec": {"holderIdentity": "a"}}),
    );
    let pp = PostParams::default();
    assert_allowed(
        Api::<Lease>::namespaced(ctl.clone(), SYSTEM_NS)
            .create(&pp, &lease)
            .await,
        "create lease in catalogsync-system",
    );
    assert_forbidden(
        Api::<Lease>::namespaced(ctl.clone(), &ns)
            .create(&pp, &lease)
            .await,
        "create lease elsewhere",
    );

    // Nothing outside its job.
    assert_forbidden(
        Api::<Namespace>::all(ctl.clone())
            .delete(&ns, &DeleteParams::default())
            .await,
        "delete namespace",
    );
    let pod: Pod = from_json(
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}),
    );
    assert_forbidden(
        Api::<Pod>::namespaced(ctl.clone(), &ns)
            .create(&pp, &pod)
            .await,
        "create pod",
    );
    let crb: ClusterRoleBinding = from_json(json!({
        "metadata": {"name": "catalogsync-escalate"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "catalogsync-controller", "namespace": SYSTEM_NS}]
    }));
    assert_forbidden(
        Api::<ClusterRoleBinding>::all(ctl.clone())
            .create(&pp, &crb)
            .await,
        "create clusterrolebinding",
    );
    // It creates runs' Roles, but none granting more than it holds.
    let greedy: Role = from_json(json!({
        "metadata": {"name": "catalogsync-run-greedy"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}]
    }));
    assert_forbidden(
        Api::<Role>::namespaced(ctl.clone(), &ns)
            .create(&pp, &greedy)
            .await,
        "create a Role granting Secret writes",
    );
    let writer: ClusterRole = from_json(json!({
        "metadata": {"name": "catalogsync-test-secret-writer"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "update"]}]
    }));
    let _ = Api::<ClusterRole>::all(cp.admin_client())
        .create(&pp, &writer)
        .await;
    let admin_binding: RoleBinding = from_json(json!({
        "metadata": {"name": "catalogsync-run-writer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "catalogsync-test-secret-writer"},
        "subjects": [{"kind": "ServiceAccount", "name": "catalogsync-sync-job", "namespace": ns}]
    }));
    assert_forbidden(
        Api::<RoleBinding>::namespaced(ctl.clone(), &ns)
            .create(&pp, &admin_binding)
            .await,
        "bind a ClusterRole granting Secret writes",
    );
}
