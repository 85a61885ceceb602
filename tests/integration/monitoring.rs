//! `deploy/monitoring`: the alerting rules pass `promtool check rules` and their unit
//! tests (`promtool test rules`, each alert fires on its series); every metric the rules
//! and the Grafana dashboard query is exported; a running controller serves the leader,
//! build and process metrics on `/metrics`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use catalogsync::controller::http;
use catalogsync::controller::leader::LeaseConfig;
use catalogsync::controller::metrics::Metrics;

use crate::controller::{RunningController, eventually};
use crate::harness::{control_plane, repo_path};

/// promtool: `$PROMTOOL`, else the pinned build of `hack/promtool.sh` (cached; the
/// first build takes minutes).
fn promtool() -> &'static Path {
    static PROMTOOL: OnceLock<PathBuf> = OnceLock::new();
    PROMTOOL.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo_path("hack/promtool.sh"))
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run hack/promtool.sh");
        assert!(out.status.success(), "hack/promtool.sh failed");
        let stdout = String::from_utf8(out.stdout).unwrap();
        PathBuf::from(stdout.lines().last().expect("promtool's path").trim())
    })
}

fn run_promtool(args: &[&str], dir: &Path) {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn yaml(rel: &str) -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(repo_path(rel)).unwrap()).unwrap()
}

/// The PrometheusRule's `spec`: a Prometheus rule file (`groups`).
fn rule_file() -> serde_yaml_ng::Value {
    yaml("deploy/monitoring/prometheusrule.yaml")["spec"].clone()
}

fn strings<'a>(values: impl Iterator<Item = &'a serde_yaml_ng::Value>) -> BTreeSet<String> {
    values
        .filter_map(|v| v.as_str())
        .map(String::from)
        .collect()
}

#[test]
fn alerting_rules_pass_promtool_and_each_alert_fires_in_its_unit_test() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rule_file();
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml_ng::to_string(&rules).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        repo_path("deploy/monitoring/tests/rules-test.yaml"),
        dir.path().join("rules-test.yaml"),
    )
    .unwrap();
    run_promtool(&["check", "rules", "rules.yaml"], dir.path());
    run_promtool(&["test", "rules", "rules-test.yaml"], dir.path());

    // Every alert has a unit test in which it fires.
    let groups = rules["groups"].as_sequence().unwrap();
    let rules = groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap());
    let alerts = strings(rules.map(|r| &r["alert"]));
    let tests = yaml("deploy/monitoring/tests/rules-test.yaml");
    let cases = tests["tests"].as_sequence().unwrap().iter();
    let firing = cases
        .flat_map(|t| t["alert_rule_test"].as_sequence().unwrap())
        .filter(|c| c["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty()));
    let tested = strings(firing.map(|c| &c["alertname"]));
    assert!(alerts.len() >= 8, "{alerts:?}");
    assert_eq!(
        alerts, tested,
        "alerts without a unit test in which they fire"
    );
}

#[test]
fn the_bundle_builds_with_kustomize() {
    let dir = repo_path("deploy/monitoring");
    let out = Command::new("kubectl")
        .args(["kustomize", &dir.display().to_string()])
        .output()
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_slice(&out.stdout)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    let expected = BTreeSet::from(["ConfigMap", "PrometheusRule", "ServiceMonitor"]);
    assert_eq!(kinds, expected);
    let dashboard = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json = dashboard["data"]["dashboard.json"].as_str().unwrap();
    serde_json::from_str::<serde_json::Value>(json).expect("the dashboard in the ConfigMap parses");
}

/// Our metric names in PromQL expressions (`up` is Prometheus's own).
fn metric_names(exprs: &[String]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for expr in exprs {
        for prefix in ["catalogsync_", "process_"] {
            for (at, _) in expr.match_indices(prefix) {
                let name: String = expr[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                names.insert(name);
            }
        }
    }
    names
}

/// The queries of the dashboard's panels and the rules' expressions.
fn queried_metric_names() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo_path("deploy/monitoring/dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard parses");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut exprs: Vec<String> = panels
        .iter()
        .filter_map(|p| p["targets"].as_array())
        .flatten()
        .filter_map(|t| t["expr"].as_str().map(String::from))
        .collect();
    let groups = rule_file()["groups"].as_sequence().unwrap().clone();
    for rule in groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap())
    {
        exprs.push(rule["expr"].as_str().unwrap().into());
    }
    metric_names(&exprs)
}

/// The sample names an OpenMetrics exposition serves, from its `# TYPE` lines.
fn served_metric_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(declared) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = declared.split_once(' ').unwrap();
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "info" => &["_info"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    }
    names
}

/// A registry in which every family has a series: each thing the controller records
/// happened once.
fn every_metric_recorded() -> Metrics {
    let m = Metrics::default();
    drop(m.reconcile("CatalogApp"));
    m.reconcile_failure("CatalogApp", "kube");
    m.run_finished("Import", "Succeeded", "Succeeded", Some(12.0));
    m.set_app_conditions("ns", "slack", &[("Ready".into(), true)]);
    m.set_last_success("ns", "slack", "Import", 1.0);
    m
}

#[test]
fn every_metric_the_dashboard_and_alerts_query_exists() {
    let queried = queried_metric_names();
    for new in [
        "catalogsync_run_duration_seconds_bucket",
        "catalogsync_app_last_success_timestamp_seconds",
        "catalogsync_leader",
        "process_resident_memory_bytes",
    ] {
        assert!(
            queried.contains(new),
            "the bundle queries {new}: {queried:?}"
        );
    }
    let exposition = every_metric_recorded().render();
    let served = served_metric_names(&exposition);
    let missing: Vec<_> = queried.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "not exported: {missing:?}\n{exposition}"
    );
}

#[tokio::test]
async fn a_running_controller_serves_leader_build_and_process_metrics() {
    let cp = control_plane().await;
    let ns = cp.new_namespace("monitoring").await;
    let metrics = Arc::new(Metrics::default());
    // The shipped lease settings: shutting down must fit a pod's grace period with them.
    let lease = LeaseConfig::new(&ns, "monitoring-test");
    let recheck = Duration::from_secs(300);
    let ctl = RunningController::start_with_metrics(
        cp.admin_client(),
        &ns,
        recheck,
        Some(lease),
        metrics.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let router = http::router(metrics.clone(), Arc::new(AtomicBool::new(true)));
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let exposition = eventually(60, "/metrics with catalogsync_leader 1", || async {
        let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
        text.contains("\ncatalogsync_leader 1\n").then_some(text)
    })
    .await;
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        exposition.contains(&format!(
            "catalogsync_build_info{{version=\"{version}\"}} 1"
        )),
        "{exposition}"
    );
    let served = served_metric_names(&exposition);
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(served.contains(name), "{name} not served:\n{exposition}");
    }

    // Shutting down releases the lease and says so, well within the pod's 30 s grace
    // period, even right after winning the lease.
    let stopping = std::time::Instant::now();
    ctl.shutdown().await;
    let took = stopping.elapsed();
    eprintln!("shutdown took {took:?}");
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    assert!(metrics.render().contains("\ncatalogsync_leader 0\n"));
    server.abort();
}
