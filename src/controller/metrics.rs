//! Prometheus metrics of the controller (served on `/metrics`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
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
    conditions: Family<ConditionLabels, Gauge>,
    /// The condition series of each app, so all of them go when the app goes.
    app_series: Mutex<BTreeMap<(String, String), Vec<ConditionLabels>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("catalogsync");
        let reconciles = Family::<KindLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let durations = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        let runs = Family::<RunLabels, Counter>::default();
        let conditions = Family::<ConditionLabels, Gauge>::default();
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
        Metrics {
            registry,
            reconciles,
            errors,
            durations,
            runs,
            conditions,
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

    pub fn run_finished(&self, direction: &str, outcome: &str, reason: &str) {
        self.runs
            .get_or_create(&RunLabels {
                direction: direction.into(),
                outcome: outcome.into(),
                reason: reason.into(),
            })
            .inc();
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
        let key = (namespace.to_string(), name.to_string());
        if let Some(old) = series.get(&key) {
            for l in old.iter().filter(|l| !labels.contains(l)) {
                self.conditions.remove(l);
            }
        }
        for (l, (_, status)) in labels.iter().zip(conditions) {
            self.conditions.get_or_create(l).set(i64::from(*status));
        }
        series.insert(key, labels);
    }

    /// Removes every series of a deleted app.
    pub fn remove_app(&self, namespace: &str, name: &str) {
        let mut series = self.app_series.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = series.remove(&(namespace.to_string(), name.to_string())) {
            for l in &old {
                self.conditions.remove(l);
            }
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
            for l in series.remove(&key).unwrap_or_default() {
                self.conditions.remove(&l);
            }
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
        m.run_finished("Import", "Succeeded", "Succeeded");
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
}
