//! Configurable sync Job pods: a SyncPolicy's `spec.job` over the controller's
//! `--job-defaults` reaches the Job the controller creates, the pod stays within the
//! restricted Pod Security level, and admission refuses extra env that would override
//! catalogsync's own variables or read other Secrets.

use std::sync::Arc;
use std::time::Duration;

use catalogsync::api::JobSettings;
use catalogsync::controller::metrics::Metrics;
use catalogsync::controller::sync_run::job::JobConfig;
use catalogsync::controller::{self, Config};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

use crate::controller::eventually;
use crate::harness::{self, ControlPlane, control_plane};

/// A domain, an app with synchronization on, and a policy whose `spec.job` sets every
/// field. The SCIM endpoints are never reached: creating a Job needs only the objects.
const OBJECTS: &str = r#"
apiVersion: catalogsync.io/v1alpha1
kind: IdentityDomain
metadata: {name: corp}
spec:
  url: https://127.0.0.1:9/admin/v1
  auth: {bearerToken: {secretRef: {name: iam-token, key: token}}}
---
apiVersion: catalogsync.io/v1alpha1
kind: CatalogApp
metadata: {name: slack}
spec:
  identityDomainRef: {name: corp}
  connection:
    url: https://127.0.0.1:9/scim/v2
    auth: {bearerToken: {secretRef: {name: app-token, key: token}}}
  provisioning: {enabled: true}
  synchronization: {enabled: true, policyRef: {name: default}}
---
apiVersion: catalogsync.io/v1alpha1
kind: SyncPolicy
metadata: {name: default}
spec:
  job:
    resources:
      requests: {memory: 1Gi}
      limits: {memory: 2Gi}
    nodeSelector: {pool: batch}
    tolerations: [{key: dedicated, operator: Equal, value: batch, effect: NoSchedule}]
    affinity:
      nodeAffinity:
        requiredDuringSchedulingIgnoredDuringExecution:
          nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: In, values: [a, b]}]}]
    priorityClassName: catalogsync-test-batch
    imagePullSecrets: [{name: registry}]
    env:
    - {name: HTTPS_PROXY, value: "http://proxy.corp:3128"}
    - name: NO_PROXY
      valueFrom: {configMapKeyRef: {name: proxy, key: no-proxy}}
---
apiVersion: catalogsync.io/v1alpha1
kind: SyncRun
metadata: {name: by-hand}
spec: {appRef: {name: slack}}
"#;

/// The controller's `--job-defaults`: the policy wins on pool and HTTPS_PROXY.
const DEFAULTS: &str = r#"
nodeSelector: {pool: sync, arch: amd64}
env: [{name: HTTPS_PROXY, value: "http://default:3128"}, {name: RUST_LOG, value: info}]
"#;

/// A namespace that enforces the restricted Pod Security level.
async fn restricted_namespace(cp: &ControlPlane) -> String {
    let ns = cp.new_namespace("job-pods").await;
    let label = "pod-security.kubernetes.io/enforce=restricted";
    let out = cp.kubectl(["label", "ns", &ns, label]).await;
    assert!(out.status.success(), "{out:?}");
    ns
}

/// Runs the controller for `ns` with `defaults` until the sender is dropped.
fn start_controller(cp: &ControlPlane, ns: &str, defaults: JobSettings) -> watch::Sender<bool> {
    let (stop, rx) = watch::channel(false);
    let config = Config {
        job: JobConfig {
            defaults,
            ..JobConfig::new("registry.example/catalogsync:test", "catalogsync-sync-job")
        },
        recheck: Duration::from_secs(300),
        namespace: Some(ns.into()),
    };
    let metrics = Arc::new(Metrics::default());
    tokio::spawn(controller::run(
        cp.admin_client(),
        metrics,
        config,
        None,
        rx,
        None,
    ));
    stop
}

/// Dry-run creates `pod` in `ns`: the apiserver's Pod Security admission decides.
async fn admit_pod(cp: &ControlPlane, ns: &str, name: &str, pod: PodSpec) -> kube::Result<Pod> {
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(pod),
        ..Default::default()
    };
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    Api::<Pod>::namespaced(cp.admin_client(), ns)
        .create(&dry_run, &pod)
        .await
}

#[tokio::test]
async fn policy_job_settings_reach_a_restricted_job() {
    let cp = control_plane().await;
    let ns = restricted_namespace(cp).await;
    // The Priority admission plugin refuses pods naming an unknown PriorityClass.
    let class = "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: catalogsync-test-batch}\nvalue: 100\n";
    cp.apply_yaml(&ns, class).await.expect("PriorityClass");
    cp.apply_yaml(&ns, OBJECTS).await.expect("apply objects");
    let defaults = serde_yaml_ng::from_str(DEFAULTS).unwrap();
    let _controller = start_controller(cp, &ns, defaults);

    let jobs: Api<Job> = Api::namespaced(cp.admin_client(), &ns);
    let job = eventually(60, "the run's Job", || async {
        jobs.get_opt("by-hand").await.ok().flatten()
    })
    .await;
    let pod = job.spec.unwrap().template.spec.unwrap();
    let c = &pod.containers[0];
    let res = c.resources.clone().unwrap();
    assert_eq!(res.requests.unwrap()["memory"].0, "1Gi");
    assert_eq!(res.limits.unwrap()["memory"].0, "2Gi");
    let selector = pod.node_selector.clone().unwrap();
    assert_eq!(selector["pool"], "batch", "the policy wins");
    assert_eq!(selector["arch"], "amd64", "defaults fill in");
    assert_eq!(
        pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
        Some("dedicated")
    );
    assert!(pod.affinity.as_ref().unwrap().node_affinity.is_some());
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("catalogsync-test-batch")
    );
    assert_eq!(pod.image_pull_secrets.as_ref().unwrap()[0].name, "registry");
    let env = c.env.clone().unwrap();
    let value = |name: &str| env.iter().find(|e| e.name == name).map(|e| e.value.clone());
    assert_eq!(
        value("HTTPS_PROXY"),
        Some(Some("http://proxy.corp:3128".into()))
    );
    assert_eq!(value("RUST_LOG"), Some(Some("info".into())));
    assert_eq!(value("CATALOGSYNC_LOG_FORMAT"), Some(Some("json".into())));
    let no_proxy = env.iter().find(|e| e.name == "NO_PROXY").unwrap();
    assert!(
        no_proxy
            .value_from
            .as_ref()
            .unwrap()
            .config_map_key_ref
            .is_some()
    );

    // The apiserver's Pod Security admission accepts the Job's pod in this namespace...
    harness::assert_allowed(
        admit_pod(cp, &ns, "job-pod", pod.clone()).await,
        "restricted admission of the Job's pod",
    );
    // ...and would refuse it without our hardening, so the check above can fail.
    let mut weak = pod;
    weak.containers[0].security_context = None;
    let err = admit_pod(cp, &ns, "weak", weak)
        .await
        .expect_err("unhardened pod refused");
    assert!(err.to_string().contains("restricted"), "{err}");
}

#[tokio::test]
async fn admission_refuses_env_that_would_override_ours_or_read_secrets() {
    let cp = control_plane().await;
    let ns = cp.new_namespace("job-env").await;
    let policy = |env: &str| {
        format!(
            "apiVersion: catalogsync.io/v1alpha1\nkind: SyncPolicy\nmetadata: {{name: p}}\nspec:\n  job:\n    env: [{env}]\n"
        )
    };
    let msg = cp
        .apply_yaml_expect_rejection(&ns, &policy("{name: CATALOGSYNC_APP_TOKEN, value: x}"))
        .await;
    assert!(
        msg.contains("spec.job.env[0]") && msg.contains("CATALOGSYNC_ are set by catalogsync"),
        "{msg}"
    );
    let secret = "{name: X, valueFrom: {secretKeyRef: {name: other-app, key: token}}}";
    let msg = cp.apply_yaml_expect_rejection(&ns, &policy(secret)).await;
    assert!(
        msg.contains("secretKeyRef would put other Secrets"),
        "{msg}"
    );
    let claims = "apiVersion: catalogsync.io/v1alpha1\nkind: SyncPolicy\nmetadata: {name: p}\nspec:\n  job:\n    resources: {claims: [{name: gpu}]}\n";
    let msg = cp.apply_yaml_expect_rejection(&ns, claims).await;
    assert!(msg.contains("claims is not supported"), "{msg}");
    // What is allowed is accepted: plain values and ConfigMap keys.
    let allowed = policy(
        "{name: HTTPS_PROXY, value: \"http://p:3128\"}, {name: NO_PROXY, valueFrom: {configMapKeyRef: {name: proxy, key: k}}}",
    );
    cp.apply_yaml(&ns, &allowed).await.expect("allowed env");
}
