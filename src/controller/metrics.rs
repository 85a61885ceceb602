//! Prometheus metrics of the controller (served on `/metrics`): ours, prefixed
//! `catalogsync_`, and the standard `process_*` ones (`process`).

mod process;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub direction: String,
    pub outcome: String,
    /// The outcome's condition reason (`RunError::reason()` of the engine, or the
    /// controller's `JobFailed`, …): a small, stable set.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    pub direction: String,
    pub outcome: String,
}

/// One app and direction, for the last-success timestamp.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppRunLabels {
    pub namespace: String,
    pub name: String,
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    pub namespace: String,
    pub name: String,
    pub condition: String,
}

/// Every metric the controller exports.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<KindLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Family<KindLabels, Histogram>,
    runs: Family<RunLabels, Counter>,
    run_durations: Family<DurationLabels, Histogram>,
    conditions: Family<ConditionLabels, Gauge>,
    last_success: Family<AppRunLabels, Gauge<f64, AtomicU64>>,
    leader: Gauge,
    /// The series of each app, so all of them go when the app goes.
    app_series: Mutex<BTreeMap<(String, String), AppSeries>>,
}

/// The label sets an app has in the per-app families.
#[derive(Default)]
struct AppSeries {
    conditions: Vec<ConditionLabels>,
    last_success: Vec<AppRunLabels>,
}

/// Run durations span seconds (a small app) to hours (a large import).
const RUN_DURATION_BUCKETS: [f64; 12] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0,
];

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(process::ProcessCollector));
        let registry = root.sub_registry_with_prefix("catalogsync");
        let reconciles = Family::<KindLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let durations = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        let runs = Family::<RunLabels, Counter>::default();
        let conditions = Family::<ConditionLabels, Gauge>::default();
        let run_durations = Family::<DurationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(RUN_DURATION_BUCKETS)
        });
        let last_success = Family::<AppRunLabels, Gauge<f64, AtomicU64>>::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciliations by kind", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Failed reconciliations by kind and error reason",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciliations by kind",
            durations.clone(),
        );
        registry.register(
            "runs",
            "Finished SyncRuns by direction, outcome (final phase) and reason",
            runs.clone(),
        );
        registry.register(
            "app_condition",
            "1 when the CatalogApp condition is True, 0 otherwise",
            conditions.clone(),
        );
        registry.register(
            "run_duration_seconds",
            "Duration of finished SyncRuns (completionTime - startTime) by direction and outcome",
            run_durations.clone(),
        );
        registry.register(
            "app_last_success_timestamp_seconds",
            "Completion time (unix seconds) of the app's last succeeded run, by direction; dry-run plans do not count",
            last_success.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease (or runs without leader election), 0 on standby",
            leader.clone(),
        );
        let version = env!("CARGO_PKG_VERSION").to_string();
        registry.register(
            "build",
            "The running catalogsync's version (value always 1)",
            Info::new(BuildLabels { version }),
        );
        Metrics {
            registry: root,
            reconciles,
            errors,
            durations,
            runs,
            run_durations,
            conditions,
            last_success,
            leader,
            app_series: Mutex::new(BTreeMap::new()),
        }
    }
}

/// Measures one reconcile; records its duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    kind: &'static str,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .durations
            .get_or_create(&KindLabels {
                kind: self.kind.into(),
            })
            .observe(self.start.elapsed().as_secs_f64());
    }
}

impl Metrics {
    /// Counts a reconcile of `kind` and times it until the guard drops.
    pub fn reconcile(&self, kind: &'static str) -> ReconcileTimer<'_> {
        self.reconciles
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
        ReconcileTimer {
            metrics: self,
            kind,
            start: Instant::now(),
        }
    }

    pub fn reconcile_failure(&self, kind: &str, reason: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                kind: kind.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts a finished run and, when its start and completion are known, its duration.
    pub fn run_finished(&self, direction: &str, outcome: &str, reason: &str, seconds: Option<f64>) {
        self.runs
            .get_or_create(&RunLabels {
                direction: direction.into(),
                outcome: outcome.into(),
                reason: reason.into(),
            })
            .inc();
        if let Some(seconds) = seconds {
            self.run_durations
                .get_or_create(&DurationLabels {
                    direction: direction.into(),
                    outcome: outcome.into(),
                })
                .observe(seconds);
        }
    }

    /// The leader gauge, for the leader election to set.
    pub fn leader(&self) -> Gauge {
        self.leader.clone()
    }

    /// Records the completion time of an app's last succeeded run in `direction`. It
    /// only moves forward: a pruned run or an older one seen later never lowers it.
    pub fn set_last_success(&self, namespace: &str, name: &str, direction: &str, unix: f64) {
        let labels = AppRunLabels {
            namespace: namespace.into(),
            name: name.into(),
            direction: direction.into(),
        };
        let gauge = self.last_success.get_or_create(&labels);
        if gauge.get() < unix {
            gauge.set(unix);
        }
        let mut series = self.app_series.lock().unwrap_or_else(|e| e.into_inner());
        let app = series
            .entry((namespace.to_string(), name.to_string()))
            .or_default();
        if !app.last_success.contains(&labels) {
            app.last_success.push(labels);
        }
    }

    /// Sets the condition gauges of an app; series of conditions it no longer has go away.
    pub fn set_app_conditions(&self, namespace: &str, name: &str, conditions: &[(String, bool)]) {
        let labels: Vec<ConditionLabels> = conditions
            .iter()
            .map(|(c, _)| ConditionLabels {
                namespace: namespace.into(),
                name: name.into(),
                condition: c.clone(),
            })
            .collect();
        let mut series = self.app_series.lock().unwrap_or_else(|e| e.into_inner());
        let app = series
            .entry((namespace.to_string(), name.to_string()))
            .or_default();
        for l in app.conditions.iter().filter(|l| !labels.contains(l)) {
            self.conditions.remove(l);
        }
        for (l, (_, status)) in labels.iter().zip(conditions) {
            self.conditions.get_or_create(l).set(i64::from(*status));
        }
        app.conditions = labels;
    }

    /// Removes every series of a deleted app.
    pub fn remove_app(&self, namespace: &str, name: &str) {
        let mut series = self.app_series.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = series.remove(&(namespace.to_string(), name.to_string())) {
            self.remove_series(old);
        }
    }

    /// Removes the series of every app not in `apps` (namespace, name).
    pub fn retain_apps(&self, apps: &[(String, String)]) {
        let mut series = self.app_series.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<(String, String)> = series
            .keys()
            .filter(|k| !apps.contains(k))
            .cloned()
            .collect();
        for key in gone {
            self.remove_series(series.remove(&key).unwrap_or_default());
        }
    }

    fn remove_series(&self, app: AppSeries) {
        for l in &app.conditions {
            self.conditions.remove(l);
        }
        for l in &app.last_success {
            self.last_success.remove(l);
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_renders() {
        let m = Metrics::default();
        drop(m.reconcile("CatalogApp"));
        m.reconcile_failure("CatalogApp", "kube");
        m.run_finished("Import", "Succeeded", "Succeeded", Some(42.0));
        let text = m.render();
        assert!(
            text.contains("catalogsync_reconciles_total{kind=\"CatalogApp\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "catalogsync_reconcile_errors_total{kind=\"CatalogApp\",reason=\"kube\"} 1"
            )
        );
        assert!(
            text.contains("catalogsync_runs_total{direction=\"Import\",outcome=\"Succeeded\",reason=\"Succeeded\"} 1")
        );
        assert!(
            text.contains("catalogsync_reconcile_duration_seconds_count{kind=\"CatalogApp\"} 1")
        );
    }

    #[test]
    fn app_condition_series_go_away_with_the_app() {
        let m = Metrics::default();
        m.set_app_conditions(
            "ns",
            "slack",
            &[("Ready".into(), true), ("Synchronizing".into(), false)],
        );
        m.set_app_conditions("ns", "jira", &[("Ready".into(), false)]);
        let text = m.render();
        assert!(text.contains(
            "catalogsync_app_condition{namespace=\"ns\",name=\"slack\",condition=\"Ready\"} 1"
        ));
        m.set_app_conditions("ns", "slack", &[("Ready".into(), false)]);
        let text = m.render();
        assert!(!text.contains("condition=\"Synchronizing\""), "{text}");
        m.remove_app("ns", "slack");
        let text = m.render();
        assert!(!text.contains("name=\"slack\""), "{text}");
        assert!(text.contains("name=\"jira\""));
        m.retain_apps(&[]);
        assert!(!m.render().contains("name=\"jira\""));
    }

    #[test]
    fn run_durations_are_a_histogram_by_direction_and_outcome() {
        let m = Metrics::default();
        m.run_finished("Import", "Succeeded", "Succeeded", Some(42.0));
        m.run_finished("Import", "Succeeded", "Succeeded", Some(4000.0));
        m.run_finished("Provision", "Failed", "JobFailed", None);
        let text = m.render();
        let series = "catalogsync_run_duration_seconds";
        let import = "direction=\"Import\",outcome=\"Succeeded\"";
        assert!(
            text.contains(&format!("{series}_count{{{import}}} 2")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{series}_sum{{{import}}} 4042.0")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{series}_bucket{{le=\"60.0\",{import}}} 1")),
            "{text}"
        );
        // A run without both times is counted but not timed.
        assert!(!text.contains("outcome=\"Failed\"}"), "{text}");
        assert!(text.contains("catalogsync_runs_total{direction=\"Provision\",outcome=\"Failed\",reason=\"JobFailed\"} 1"));
    }

    #[test]
    fn last_success_only_moves_forward_and_goes_away_with_the_app() {
        let m = Metrics::default();
        let series = |dir: &str| {
            format!(
                "catalogsync_app_last_success_timestamp_seconds{{namespace=\"ns\",name=\"slack\",direction=\"{dir}\"}}"
            )
        };
        m.set_app_conditions("ns", "slack", &[("Ready".into(), true)]);
        m.set_last_success("ns", "slack", "Import", 2000.0);
        m.set_last_success("ns", "slack", "Import", 1000.0);
        m.set_last_success("ns", "slack", "Provision", 1500.0);
        let text = m.render();
        assert!(
            text.contains(&format!("{} 2000.0", series("Import"))),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} 1500.0", series("Provision"))),
            "{text}"
        );
        // New conditions keep the timestamps.
        m.set_app_conditions("ns", "slack", &[("Ready".into(), false)]);
        assert!(m.render().contains(&series("Import")));
        m.remove_app("ns", "slack");
        let text = m.render();
        assert!(!text.contains("name=\"slack\""), "{text}");
        m.set_last_success("ns", "jira", "Import", 1.0);
        m.retain_apps(&[]);
        assert!(!m.render().contains("name=\"jira\""));
    }

    #[test]
    fn build_info_leader_and_process_metrics_are_served() {
        let m = Metrics::default();
        let version = env!("CARGO_PKG_VERSION");
        let text = m.render();
        assert!(
            text.contains(&format!(
                "catalogsync_build_info{{version=\"{version}\"}} 1"
            )),
            "{text}"
        );
        assert!(text.contains("catalogsync_leader 0\n"), "{text}");
        m.leader().set(1);
        let text = m.render();
        assert!(text.contains("catalogsync_leader 1\n"), "{text}");
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.lines().any(|l| l.starts_with(name)), "{name}: {text}");
        }
    }
}
