//! The Helm chart `charts/catalogsync`: it lints; its renderings apply to a real
//! apiserver; its default rendering is `deploy/` less Helm's labels; with
//! `watchNamespace` its Roles let the controller and the sync Jobs work in that
//! namespace and nowhere else (real ServiceAccount tokens); its monitoring
//! objects carry the alerts of `deploy/monitoring/prometheusrule.yaml`.
//!
//! helm comes from `hack/helm.sh` (built once from the pinned Go module, cached).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use catalogsync::controller::leader::LeaseConfig;

use k8s_openapi::api::{
    batch::v1::Job,
    coordination::v1::Lease,
    core::v1::Secret,
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    Client,
    api::{Api, DeleteParams, DynamicObject, ListParams, PostParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::{Value, json};

use crate::controller::{RunningController, eventually};
use crate::harness::{ControlPlane, assert_allowed, assert_forbidden, control_plane, repo_path};

const RELEASE: &str = "catalogsync";
const SYSTEM_NS: &str = "catalogsync-system";
/// Labels Helm charts add by convention; `deploy/` has none of them.
const HELM_LABELS: [&str; 4] = [
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
];

/// `--set-json` of syncJob pod defaults with every field of the `--job-defaults` file.
const SYNC_JOB_DEFAULTS: &str = r#"syncJob={
  "resources": {"requests": {"cpu": "200m"}, "limits": {"memory": "1Gi"}},
  "nodeSelector": {"pool": "batch"},
  "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}],
  "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms":
    [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}]}}},
  "priorityClassName": "batch-low",
  "imagePullSecrets": [{"name": "corp-registry"}],
  "env": [{"name": "HTTPS_PROXY", "value": "http://proxy.corp:3128"},
          {"name": "NO_PROXY", "valueFrom": {"configMapKeyRef": {"name": "proxy", "key": "no-proxy"}}}]
}"#;
const JOB_DEFAULTS_CONFIG_MAP: &str = "catalogsync-job-defaults";

/// The helm binary that `hack/helm.sh` provides (built on first use).
fn helm_binary() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let out = Command::new(repo_path("hack/helm.sh"))
            .output()
            .expect("run hack/helm.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "hack/helm.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(stdout.lines().last().expect("helm path").trim())
    })
}

/// Runs helm with its own config, cache and data dirs, so ~/.config/helm is never read.
fn helm(args: &[&str]) -> Output {
    let home = repo_path("target/helm-home");
    Command::new(helm_binary())
        .args(args)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .expect("run helm")
}

fn chart() -> String {
    repo_path("charts/catalogsync").display().to_string()
}

/// `helm template` of the chart as release `catalogsync` in `ns`, with `extra` args
/// (`--set`, `--include-crds`); panics with helm's message if it fails.
fn render(ns: &str, extra: &[&str]) -> String {
    let chart = chart();
    let mut args = vec!["template", RELEASE, chart.as_str(), "--namespace", ns];
    args.extend(extra);
    let out = helm(&args);
    assert!(
        out.status.success(),
        "helm {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 rendering")
}

/// Every object of a YAML stream by (kind, namespace, name).
fn objects(yaml: &str) -> BTreeMap<(String, String, String), Value> {
    use serde::Deserialize as _;
    let mut objects = BTreeMap::new();
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let value = Value::deserialize(doc).expect("YAML document");
        if value.is_null() {
            continue;
        }
        let field = |path: &str| value.pointer(path).and_then(Value::as_str).unwrap_or("");
        let key = (
            field("/kind").to_string(),
            field("/metadata/namespace").to_string(),
            field("/metadata/name").to_string(),
        );
        assert!(
            objects.insert(key.clone(), value).is_none(),
            "{key:?} rendered twice"
        );
    }
    objects
}

fn of_kind<'a>(
    objects: &'a BTreeMap<(String, String, String), Value>,
    kind: &'a str,
) -> impl Iterator<Item = &'a Value> + 'a {
    objects
        .iter()
        .filter(move |((k, _, _), _)| k == kind)
        .map(|(_, v)| v)
}

/// Removes Helm's conventional labels wherever they occur (metadata, selectors).
fn strip_helm_labels(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for label in HELM_LABELS {
                map.remove(label);
            }
            map.values_mut().for_each(strip_helm_labels);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_helm_labels),
        _ => {}
    }
}

/// Writes whole floats as integers: kustomize prints the CRDs' `minimum: 0.0` as `0`.
fn whole_numbers_as_integers(value: &mut Value) {
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && !n.is_i64()) {
                *value = json!(f as i64);
            }
        }
        Value::Object(map) => map.values_mut().for_each(whole_numbers_as_integers),
        Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        _ => {}
    }
}

/// Removes the env var `name` from the first container and returns its value.
fn take_env(deployment: &mut Value, name: &str) -> Option<String> {
    let env = deployment
        .pointer_mut("/spec/template/spec/containers/0/env")?
        .as_array_mut()?;
    let at = env.iter().position(|e| e["name"] == name)?;
    env.remove(at)["value"].as_str().map(str::to_string)
}

#[test]
fn chart_lints_with_default_and_namespaced_values() {
    let chart = chart();
    let namespaced_with_job_defaults = [
        "--set",
        "watchNamespace=apps",
        "--set-json",
        SYNC_JOB_DEFAULTS,
    ];
    for extra in [&[][..], &namespaced_with_job_defaults[..]] {
        let mut args = vec!["lint", "--strict", chart.as_str()];
        args.extend(extra);
        let out = helm(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("0 chart(s) failed"),
            "helm {}: {stdout}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `syncJob.ttl` reaches the controller as `CATALOGSYNC_JOB_TTL` (its `--job-ttl`), a
/// duration it parses; unset, the controller's default (24 h) holds and nothing is rendered.
#[test]
fn sync_job_ttl_reaches_the_controller() {
    let deployment = |extra: &[&str]| {
        let rendered = objects(&render(SYSTEM_NS, extra));
        let key = ("Deployment", SYSTEM_NS, "catalogsync-controller");
        rendered[&(key.0.into(), key.1.into(), key.2.into())].clone()
    };
    let ttl = take_env(
        &mut deployment(&["--set", "syncJob.ttl=72h"]),
        "CATALOGSYNC_JOB_TTL",
    );
    assert_eq!(ttl.as_deref(), Some("72h"));
    let parsed = catalogsync::api::parse_duration(&ttl.unwrap());
    assert_eq!(parsed, Some(std::time::Duration::from_secs(72 * 3600)));
    assert_eq!(take_env(&mut deployment(&[]), "CATALOGSYNC_JOB_TTL"), None);
}

#[test]
fn chart_crds_are_the_crds_of_the_crds_dir() {
    let listing = |dir: &str| -> BTreeMap<String, String> {
        std::fs::read_dir(repo_path(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|e| e.unwrap().path())
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&p).unwrap())
            })
            .collect()
    };
    assert!(
        listing("crds") == listing("charts/catalogsync/crds"),
        "charts/catalogsync/crds differs from crds/: run `make crds`"
    );
}

#[test]
fn default_rendering_is_the_kustomize_install() {
    let deploy = repo_path("deploy").display().to_string();
    let out = Command::new("kubectl")
        .args(["kustomize", &deploy])
        .output()
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut kustomized = objects(&String::from_utf8_lossy(&out.stdout));
    let mut charted = objects(&render(SYSTEM_NS, &["--include-crds"]));
    charted.values_mut().for_each(strip_helm_labels);
    for object in kustomized.values_mut().chain(charted.values_mut()) {
        whole_numbers_as_integers(object);
    }

    // Helm installs into an existing namespace (or --create-namespace); it does not own it.
    let namespace = (
        "Namespace".to_string(),
        String::new(),
        SYSTEM_NS.to_string(),
    );
    assert!(
        kustomized.remove(&namespace).is_some(),
        "deploy/ has the namespace"
    );

    // The chart names the Jobs' image and account; deploy/ relies on the controller's
    // defaults, which must be the same.
    let deployment = ("Deployment", SYSTEM_NS, "catalogsync-controller");
    let key = |(k, n, m): (&str, &str, &str)| (k.to_string(), n.to_string(), m.to_string());
    let charted_deployment = charted.get_mut(&key(deployment)).expect("chart Deployment");
    let job_image = take_env(charted_deployment, "CATALOGSYNC_JOB_IMAGE");
    let job_account = take_env(charted_deployment, "CATALOGSYNC_JOB_SERVICE_ACCOUNT");
    let controller_default = format!("catalogsync:{}", env!("CARGO_PKG_VERSION"));
    let deploy_image =
        &kustomized[&key(deployment)]["spec"]["template"]["spec"]["containers"][0]["image"];
    assert_eq!(deploy_image, &json!(controller_default));
    assert_eq!(job_image.as_deref(), Some(controller_default.as_str()));
    assert_eq!(job_account.as_deref(), Some("catalogsync-sync-job"));

    let names = |m: &BTreeMap<_, Value>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&charted), names(&kustomized), "same kinds and names");
    for (key, deployed) in &kustomized {
        assert!(
            &charted[key] == deployed,
            "{key:?} differs:\nchart: {}\ndeploy: {}",
            serde_json::to_string_pretty(&charted[key]).unwrap(),
            serde_json::to_string_pretty(deployed).unwrap()
        );
    }
}

#[test]
fn several_replicas_need_leader_election() {
    let chart = chart();
    let out = helm(&[
        "template",
        RELEASE,
        &chart,
        "--set",
        "leaderElection.enabled=false",
    ]);
    assert!(!out.status.success(), "rendered 2 replicas without a Lease");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("leaderElection.enabled"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let single = objects(&render(
        SYSTEM_NS,
        &["--set", "leaderElection.enabled=false,replicas=1"],
    ));
    let deployment = of_kind(&single, "Deployment").next().expect("Deployment");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["args"],
        json!(["controller"])
    );
    assert_eq!(
        of_kind(&single, "Role").count(),
        0,
        "no leader-election Role"
    );
}

#[test]
fn another_release_name_gets_its_own_lease_and_names() {
    let chart = chart();
    let out = helm(&["template", "idm", &chart, "--namespace", SYSTEM_NS]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = objects(&String::from_utf8_lossy(&out.stdout));
    let deployment = of_kind(&rendered, "Deployment").next().expect("Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(deployment["metadata"]["name"], "idm-controller");
    assert_eq!(
        container["args"],
        json!([
            "controller",
            "--leader-elect",
            "--lease-name=idm-controller"
        ])
    );
    let env = container["env"].as_array().expect("env");
    assert!(
        env.contains(&json!({"name": "CATALOGSYNC_JOB_SERVICE_ACCOUNT", "value": "idm-sync-job"}))
    );
    let job_account = (
        "ServiceAccount".to_string(),
        SYSTEM_NS.to_string(),
        "idm-sync-job".to_string(),
    );
    assert!(rendered.contains_key(&job_account));
}

/// Applies `yaml` with `kubectl apply` (`--dry-run=server` when `dry_run`).
async fn kubectl_apply(cp: &ControlPlane, yaml: &str, dry_run: bool) -> String {
    let mut args = vec!["apply", "-f", "-"];
    if dry_run {
        args.push("--dry-run=server");
    }
    let out = cp.kubectl_with_stdin(&args, yaml).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl {}: {}{stdout}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn default_and_namespaced_renderings_apply_with_server_dry_run() {
    let cp = control_plane().await;
    // A release namespace of its own: other tests install deploy/ for real into the system
    // namespace, and a dry run over that Deployment fails on its immutable selector (Helm's
    // labels differ). A server dry run creates nothing, so the namespace must exist.
    let release = cp.new_namespace("helm-dry").await;
    let applied = kubectl_apply(cp, &render(&release, &["--include-crds"]), true).await;
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/syncruns.catalogsync.io",
        "clusterrole.rbac.authorization.k8s.io/catalogsync-controller",
        "deployment.apps/catalogsync-controller",
        "service/catalogsync-controller-metrics",
    ] {
        assert!(applied.contains(object), "{object} in:\n{applied}");
    }

    let apps = cp.new_namespace("helm-dry-apps").await;
    let set = format!("watchNamespace={apps}");
    let rendered = render(&release, &["--set", &set, "--set-json", SYNC_JOB_DEFAULTS]);
    let applied = kubectl_apply(cp, &rendered, true).await;
    assert!(
        !applied.contains("clusterrole"),
        "nothing cluster-wide:\n{applied}"
    );
    for object in [
        "role.rbac.authorization.k8s.io/catalogsync-controller",
        "rolebinding.rbac.authorization.k8s.io/catalogsync-sync-job",
        "serviceaccount/catalogsync-sync-job",
        "configmap/catalogsync-job-defaults",
    ] {
        assert!(applied.contains(object), "{object} in:\n{applied}");
    }
}

/// An Api for a catalogsync kind in `ns`, or in all namespaces.
fn catalogsync(client: &Client, ns: Option<&str>, kind: &str, plural: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("catalogsync.io", "v1alpha1", kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

fn from_json<K: serde::de::DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("object from JSON")
}

#[tokio::test]
async fn namespaced_rbac_confines_the_controller_and_jobs_to_the_watched_namespace() {
    let cp = control_plane().await;
    let release_ns = cp.new_namespace("helm-release").await;
    let apps = cp.new_namespace("helm-apps").await;
    let other = cp.new_namespace("helm-other").await;
    let set = format!("watchNamespace={apps}");
    kubectl_apply(cp, &render(&release_ns, &["--set", &set]), false).await;
    let ctl = cp.sa_client(&release_ns, "catalogsync-controller").await;
    let lp = ListParams::default();
    let pp = PostParams::default();

    // The controller reconciles, runs Jobs and reads Secrets in the watched namespace...
    for (kind, plural) in [("CatalogApp", "catalogapps"), ("SyncRun", "syncruns")] {
        assert_allowed(
            catalogsync(&ctl, Some(&apps), kind, plural).list(&lp).await,
            plural,
        );
    }
    let jobs = Api::<Job>::namespaced(ctl.clone(), &apps);
    let job: Job = from_json(
        json!({"metadata": {"name": "slack-sync"}, "spec": {"template": {"spec": {
        "restartPolicy": "Never", "serviceAccountName": "catalogsync-sync-job",
        "containers": [{"name": "sync", "image": "catalogsync", "args": ["sync"]}]}}}}),
    );
    assert_allowed(jobs.create(&pp, &job).await, "create job");
    assert_allowed(
        jobs.delete("slack-sync", &DeleteParams::background()).await,
        "delete job",
    );
    assert_allowed(
        Api::<Secret>::namespaced(ctl.clone(), &apps)
            .list(&lp)
            .await,
        "list secrets",
    );
    let lease: Lease = from_json(json!({"metadata": {"name": "catalogsync-controller"}}));
    assert_allowed(
        Api::<Lease>::namespaced(ctl.clone(), &release_ns)
            .create(&pp, &lease)
            .await,
        "create its lease",
    );
    // ...and nowhere else: no cluster-wide list, no other namespace.
    assert_forbidden(
        catalogsync(&ctl, None, "CatalogApp", "catalogapps")
            .list(&lp)
            .await,
        "list catalogapps in all namespaces",
    );
    assert_forbidden(
        catalogsync(&ctl, Some(&other), "CatalogApp", "catalogapps")
            .list(&lp)
            .await,
        "list catalogapps elsewhere",
    );
    assert_forbidden(
        Api::<Secret>::namespaced(ctl.clone(), &other)
            .list(&lp)
            .await,
        "list secrets elsewhere",
    );
    // A run's own Role and RoleBinding, in the watched namespace only.
    let role: Role = from_json(
        json!({"metadata": {"name": "catalogsync-run-r1"}, "rules": [
        {"apiGroups": ["catalogsync.io"], "resources": ["syncruns/status"], "verbs": ["patch"], "resourceNames": ["r1"]},
        {"apiGroups": ["catalogsync.io"], "resources": ["catalogapps"], "verbs": ["get"], "resourceNames": ["slack"]}]}),
    );
    let binding: RoleBinding = from_json(json!({"metadata": {"name": "catalogsync-run-r1"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "catalogsync-run-r1"},
        "subjects": [{"kind": "ServiceAccount", "name": "catalogsync-sync-job", "namespace": apps}]}));
    assert_allowed(
        Api::<Role>::namespaced(ctl.clone(), &apps)
            .create(&pp, &role)
            .await,
        "create a run's Role",
    );
    assert_allowed(
        Api::<RoleBinding>::namespaced(ctl.clone(), &apps)
            .create(&pp, &binding)
            .await,
        "create a run's RoleBinding",
    );
    assert_forbidden(
        Api::<Role>::namespaced(ctl.clone(), &other)
            .create(&pp, &role)
            .await,
        "create a Role elsewhere",
    );
    assert_sync_job_reads_only_its_namespace(cp, &apps, &other).await;
    controller_reconciles_with_the_chart_rbac(cp, ctl, &release_ns, &apps).await;
}

/// The Ready condition's reason of a catalogsync object, once its status has one.
fn ready_reason(object: &DynamicObject) -> Option<String> {
    let conditions = object.data.pointer("/status/conditions")?.as_array()?;
    let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
    Some(format!(
        "{}/{}",
        ready["status"].as_str()?,
        ready["reason"].as_str()?
    ))
}

/// A real controller (in this process), as the chart's account with leader election
/// in the release namespace, reconciles what the admin applies in the watched one.
async fn controller_reconciles_with_the_chart_rbac(
    cp: &ControlPlane,
    ctl: Client,
    release_ns: &str,
    apps: &str,
) {
    let policy = std::fs::read_to_string(repo_path("examples/syncpolicy.yaml")).unwrap();
    // No Secret and a loopback URL: the domain's status says SecretNotFound, which the
    // controller can only tell by reading Secrets in the namespace.
    let domain = "apiVersion: catalogsync.io/v1alpha1\nkind: IdentityDomain\nmetadata: {name: corp}\n\
        spec: {url: 'https://127.0.0.1:9/scim/v2', auth: {bearerToken: {secretRef: {name: corp-iam, key: token}}}}\n";
    cp.apply_yaml(apps, &policy)
        .await
        .expect("apply the policy");
    cp.apply_yaml(apps, domain).await.expect("apply the domain");
    let lease = LeaseConfig::new(release_ns, "helm-test");
    let running = RunningController::start(ctl, apps, Duration::from_secs(300), Some(lease));
    let admin = cp.admin_client();
    for (kind, plural, name, reason) in [
        ("SyncPolicy", "syncpolicies", "default", "True/Valid"),
        (
            "IdentityDomain",
            "identitydomains",
            "corp",
            "False/SecretNotFound",
        ),
    ] {
        let api = catalogsync(&admin, Some(apps), kind, plural);
        eventually(60, &format!("{kind} Ready {reason}"), || async {
            let object = api.get(name).await.ok()?;
            (ready_reason(&object).as_deref() == Some(reason)).then_some(())
        })
        .await;
    }
    running.shutdown().await;
}

/// The chart made the Jobs' account in the watched namespace `apps`: by itself it reads
/// nothing (each run's Job gets its own Role), never Secrets, nothing in `other`.
async fn assert_sync_job_reads_only_its_namespace(cp: &ControlPlane, apps: &str, other: &str) {
    let job_account = cp.sa_client(apps, "catalogsync-sync-job").await;
    let lp = ListParams::default();
    // Its access comes per run, from the controller (a Role owned by the run).
    assert_forbidden(
        catalogsync(&job_account, Some(apps), "CatalogApp", "catalogapps")
            .list(&lp)
            .await,
        "sync job lists catalogapps",
    );
    assert_forbidden(
        Api::<Secret>::namespaced(job_account.clone(), apps)
            .list(&lp)
            .await,
        "sync job lists secrets",
    );
    assert_forbidden(
        catalogsync(&job_account, Some(other), "SyncRun", "syncruns")
            .list(&lp)
            .await,
        "sync job elsewhere",
    );
}

/// (alert, expr, for) of every rule of a PrometheusRule.
fn alerts(rule: &Value) -> Vec<Value> {
    rule["spec"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .map(|r| {
            let mut r = r.clone();
            let map = r.as_object_mut().unwrap();
            map.retain(|k, _| ["alert", "expr", "for"].contains(&k.as_str()));
            r
        })
        .collect()
}

/// The monitoring bundle's PrometheusRule, the one the chart renders.
fn bundle_rule() -> Value {
    let text = std::fs::read_to_string(repo_path("deploy/monitoring/prometheusrule.yaml")).unwrap();
    let copy =
        std::fs::read_to_string(repo_path("charts/catalogsync/files/prometheusrule.yaml")).unwrap();
    assert_eq!(
        copy, text,
        "charts/catalogsync/files/prometheusrule.yaml is stale: \
         cp deploy/monitoring/prometheusrule.yaml charts/catalogsync/files/"
    );
    serde_yaml_ng::from_str(&text).expect("the bundle's rule parses")
}

#[test]
fn monitoring_renders_a_service_monitor_and_the_bundles_alerts() {
    let rendered = objects(&render(
        SYSTEM_NS,
        &[
            "--set",
            "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true",
        ],
    ));
    let service = of_kind(&rendered, "Service").next().expect("Service");
    let monitor = of_kind(&rendered, "ServiceMonitor")
        .next()
        .expect("ServiceMonitor");
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("selector");
    let labels = service["metadata"]["labels"]
        .as_object()
        .expect("Service labels");
    assert!(
        selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
        "the ServiceMonitor selects the metrics Service"
    );
    let port = &monitor["spec"]["endpoints"][0]["port"];
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| &p["name"] == port),
        "the ServiceMonitor scrapes a port of the Service"
    );
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"],
        json!([SYSTEM_NS])
    );

    let rule = of_kind(&rendered, "PrometheusRule")
        .next()
        .expect("PrometheusRule");
    let charted = alerts(rule);
    assert_eq!(charted, alerts(&bundle_rule()));
    // Prometheus names a ServiceMonitor's job after the Service.
    let down = charted
        .iter()
        .find(|r| r["alert"] == "CatalogSyncControllerDown")
        .expect("the ControllerDown alert");
    let job = format!("job=\"{}\"", service["metadata"]["name"].as_str().unwrap());
    assert!(down["expr"].as_str().unwrap().contains(&job), "{down}");

    let plain = objects(&render(SYSTEM_NS, &[]));
    assert_eq!(of_kind(&plain, "ServiceMonitor").count(), 0);
    assert_eq!(of_kind(&plain, "PrometheusRule").count(), 0);
}

/// The rendered `--job-defaults` file and the path the controller is told to read.
fn job_defaults_file(rendered: &BTreeMap<(String, String, String), Value>) -> (String, String) {
    let key = (
        "ConfigMap".to_string(),
        SYSTEM_NS.to_string(),
        JOB_DEFAULTS_CONFIG_MAP.to_string(),
    );
    let file = rendered[&key]["data"]["job-defaults.yaml"]
        .as_str()
        .expect("job-defaults.yaml in the ConfigMap");
    let deployment = of_kind(rendered, "Deployment").next().expect("Deployment");
    let mut deployment = deployment.clone();
    let path = take_env(&mut deployment, "CATALOGSYNC_JOB_DEFAULTS").expect("the env var");
    (file.to_string(), path)
}

/// What the controller makes of a rendered `--job-defaults` file: its own loader.
fn load_job_defaults(file: &str) -> anyhow::Result<catalogsync::api::JobSettings> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job-defaults.yaml");
    std::fs::write(&path, file).unwrap();
    catalogsync::cli::job_defaults(Some(&path))
}

#[test]
fn sync_job_defaults_become_a_mounted_file_the_controller_reads() {
    let rendered = objects(&render(SYSTEM_NS, &["--set-json", SYNC_JOB_DEFAULTS]));
    let (file, path) = job_defaults_file(&rendered);
    let pod = &of_kind(&rendered, "Deployment").next().unwrap()["spec"]["template"];
    let container = &pod["spec"]["containers"][0];

    // The path is the ConfigMap's key in a read-only mount of that ConfigMap.
    let mounts = container["volumeMounts"].as_array().expect("volumeMounts");
    let mount = mounts
        .iter()
        .find(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
        .expect("a mount holding the file");
    assert_eq!(mount["readOnly"], true);
    assert_eq!(
        format!("{}/job-defaults.yaml", mount["mountPath"].as_str().unwrap()),
        path
    );
    let volume = pod["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mount's volume");
    assert_eq!(volume["configMap"]["name"], JOB_DEFAULTS_CONFIG_MAP);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);

    // The controller accepts the file, with exactly the values given.
    let settings = load_job_defaults(&file).expect("the controller accepts the file");
    let given: Value = serde_json::from_str(SYNC_JOB_DEFAULTS.trim_start_matches("syncJob="))
        .expect("the values as JSON");
    assert_eq!(serde_json::to_value(&settings).unwrap(), given);

    // A change of the file changes the Pod template, so the controller restarts to read it.
    let checksum = |rendered: &BTreeMap<_, Value>| {
        of_kind(rendered, "Deployment").next().unwrap()["spec"]["template"]["metadata"]
            ["annotations"]["checksum/job-defaults"]
            .as_str()
            .expect("the checksum annotation")
            .to_string()
    };
    let changed = objects(&render(
        SYSTEM_NS,
        &[
            "--set-json",
            SYNC_JOB_DEFAULTS,
            "--set",
            "syncJob.priorityClassName=batch-high",
        ],
    ));
    assert_ne!(checksum(&rendered), checksum(&changed));
}

#[test]
fn sync_job_defaults_breaking_the_env_rules_are_refused_by_the_controller() {
    for (env, why) in [
        (
            r#"{"name": "CATALOGSYNC_APP_TOKEN", "value": "x"}"#,
            "CATALOGSYNC_",
        ),
        (
            r#"{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}"#,
            "secretKeyRef",
        ),
    ] {
        let set = format!(r#"syncJob={{"env": [{env}]}}"#);
        let rendered = objects(&render(SYSTEM_NS, &["--set-json", &set]));
        let (file, _) = job_defaults_file(&rendered);
        let err = load_job_defaults(&file).expect_err(env);
        assert!(format!("{err:#}").contains(why), "{env}: {err:#}");
    }
}
