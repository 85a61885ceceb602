//! The controller on the real control plane against real SCIM servers. Each
//! test runs its own controller in-process, restricted to the test's namespace.
//!
//! The tests live by what they exercise: `identity_domain`, `catalog_app`,
//! `sync_policy`, `sync_run`, and `process` (the controller as a whole: restart,
//! leader election, steady state, the `catalogsync controller` command). This module
//! holds what they share: the in-process controller, one test's world (`Env`: a
//! namespace, SCIM servers and the objects in it) and the status accessors.

mod catalog_app;
mod groups;
mod identity_domain;
mod kstatus;
mod leaks;
mod process;
mod sync_policy;
mod sync_run;
mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use catalogsync::api::{CatalogApp, RunPhase, SyncRun};
use catalogsync::cluster::conditions::find;
use catalogsync::controller::leader::LeaseConfig;
use catalogsync::controller::metrics::Metrics;
use catalogsync::controller::sync_run::job::JobConfig;
use catalogsync::controller::{self, Config};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use tokio::sync::watch;

use crate::harness::{ControlPlane, control_plane};
use crate::scim_server::ScimServer;

const JOB_IMAGE: &str = "registry.example/catalogsync:test";

/// A controller running in this process; stopped when dropped.
pub struct RunningController {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl RunningController {
    pub fn start(client: Client, ns: &str, recheck: Duration, lease: Option<LeaseConfig>) -> Self {
        Self::start_with_metrics(client, ns, recheck, lease, Arc::new(Metrics::default()))
    }

    /// Like `start`, recording into `metrics` (to serve or inspect them).
    pub fn start_with_metrics(
        client: Client,
        ns: &str,
        recheck: Duration,
        lease: Option<LeaseConfig>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (stop, rx) = watch::channel(false);
        let config = Config {
            job: JobConfig::new(JOB_IMAGE, "catalogsync-sync-job"),
            recheck,
            namespace: Some(ns.into()),
        };
        let task = tokio::spawn(controller::run(client, metrics, config, lease, rx, None));
        RunningController {
            stop,
            task: Some(task),
        }
    }

    /// Graceful shutdown; waits for it to finish.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let r = tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("controller stops within 30s");
            r.expect("controller task").expect("controller result");
        }
    }
}

impl Drop for RunningController {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Polls `f` until it returns Some, or panics with `what` after `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub(crate) struct Env {
    pub(crate) cp: &'static ControlPlane,
    pub(crate) ns: String,
    client: Client,
    pub(crate) scim: ScimServer,
}

impl Env {
    async fn new(prefix: &str) -> Env {
        let cp = control_plane().await;
        let ns = cp.new_namespace(prefix).await;
        let scim = tokio::task::spawn_blocking(|| ScimServer::start(&["iam", "app"]))
            .await
            .unwrap();
        Env {
            cp,
            client: cp.admin_client(),
            ns,
            scim,
        }
    }

    /// A namespace, SCIM servers and a controller (5 min rechecks) for them.
    pub(crate) async fn with_controller(prefix: &str) -> (Env, RunningController) {
        let env = Env::new(prefix).await;
        let ctl =
            RunningController::start(env.client.clone(), &env.ns, Duration::from_secs(300), None);
        (env, ctl)
    }

    /// The dev job runner executing this namespace's Jobs with the real engine; stop it
    /// by sending `true`, then await the handle.
    pub(crate) fn start_runner(
        &self,
    ) -> (
        tokio::sync::watch::Sender<bool>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        let (stop, rx) = tokio::sync::watch::channel(false);
        let runner = tokio::spawn(catalogsync::dev::runner::run(
            self.client.clone(),
            catalogsync::dev::runner::RunnerConfig {
                binary: crate::sync_engine::binary().to_path_buf(),
                kubeconfig: Some(self.cp.kubeconfig_path().to_path_buf()),
                namespace: Some(self.ns.clone()),
                grace: Duration::from_secs(5),
            },
            rx,
        ));
        (stop, runner)
    }

    pub(crate) async fn wait_ready(&self) -> CatalogApp {
        self.wait_app("Ready", |a| app_cond(a, "Ready") == tf("True", "Ready"))
            .await
    }

    pub(crate) fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub(crate) async fn apply(&self, yaml: &str) {
        self.cp
            .apply_yaml(&self.ns, yaml)
            .await
            .unwrap_or_else(|e| panic!("apply: {e}\n{yaml}"));
    }

    pub(crate) async fn secret(&self, name: &str, token: &str) {
        self.apply(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, labels: {{catalogsync.io/credentials: \"true\"}}}}\nstringData: {{token: {token}}}\n"
        ))
        .await;
    }

    async fn domain(&self, url: &str) {
        self.apply(&format!(
            r#"
apiVersion: catalogsync.io/v1alpha1
kind: IdentityDomain
metadata: {{name: corp}}
spec:
  url: {url}
  insecure: true
  auth: {{bearerToken: {{secretRef: {{name: iam-token, key: token}}}}}}
"#
        ))
        .await;
    }

    /// Secrets, a Ready domain, and the app `slack` (labels a GitOps tool would set).
    pub(crate) async fn app(&self, sync: bool) {
        self.app_with_token(sync, &self.scim.token("app")).await;
    }

    async fn app_with_token(&self, sync: bool, app_token: &str) {
        self.secret("iam-token", &self.scim.token("iam")).await;
        self.secret("app-token", app_token).await;
        self.domain(&self.scim.base_url("iam")).await;
        self.catalog_app(
            r#"
  name: slack
  labels: {argocd.argoproj.io/instance: team-a}
  annotations: {argocd.argoproj.io/tracking-id: "team-a:catalogsync.io/CatalogApp:x/slack"}"#,
            &format!("\n  synchronization: {{enabled: {sync}, policyRef: {{name: default}}}}"),
        )
        .await;
    }

    /// The app `name` on the `app` tenant with the `app-token` Secret, provisioning only.
    async fn provisioning_app(&self, name: &str) {
        self.catalog_app(&format!("\n  name: {name}"), "").await;
    }

    /// A CatalogApp on the `app` tenant with the `app-token` Secret: `metadata` (YAML lines),
    /// provisioning enabled, then `more_spec` (YAML lines).
    async fn catalog_app(&self, metadata: &str, more_spec: &str) {
        self.apply(&format!(
            r#"
apiVersion: catalogsync.io/v1alpha1
kind: CatalogApp
metadata:{metadata}
spec:
  identityDomainRef: {{name: corp}}
  connection:
    url: {}
    insecure: true
    auth: {{bearerToken: {{secretRef: {{name: app-token, key: token}}}}}}
  provisioning: {{enabled: true}}{more_spec}
"#,
            self.scim.base_url("app")
        ))
        .await;
    }

    pub(crate) async fn policy(&self, extra: &str) {
        self.apply(&format!(
            "apiVersion: catalogsync.io/v1alpha1\nkind: SyncPolicy\nmetadata: {{name: default}}\nspec: {{{extra}}}\n"
        ))
        .await;
    }

    pub(crate) async fn get_app(&self) -> CatalogApp {
        self.api::<CatalogApp>()
            .get("slack")
            .await
            .expect("get app")
    }

    pub(crate) async fn wait_app(
        &self,
        what: &str,
        pred: impl Fn(&CatalogApp) -> bool,
    ) -> CatalogApp {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let a = self.get_app().await;
            if pred(&a) {
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; status: {:#?}",
                a.status
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub(crate) async fn runs(&self) -> Vec<SyncRun> {
        self.api::<SyncRun>()
            .list(&ListParams::default())
            .await
            .expect("list runs")
            .items
    }

    /// The reasons of the events in the namespace, as kubectl shows them.
    pub(crate) async fn event_reasons(&self) -> String {
        let out = self
            .cp
            .kubectl([
                "get",
                "events.events.k8s.io",
                "-n",
                &self.ns,
                "-o",
                "jsonpath={.items[*].reason}",
            ])
            .await;
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The first run, once the controller has recorded its Job.
    async fn first_run_with_job(&self, secs: u64) -> SyncRun {
        eventually(secs, "a run with its Job", || async {
            let r = self.runs().await.into_iter().next()?;
            r.status.as_ref()?.job_name.clone().map(|_| r)
        })
        .await
    }

    /// Requests the run of the lane a test is about: Import when synchronization is on
    /// (an explicit `requested-direction: Import`; Both would run Provision first), else
    /// Provision.
    pub(crate) async fn request_run(&self, token: &str) {
        let app = self.get_app().await;
        let sync = app.spec.synchronization.as_ref().is_some_and(|s| s.enabled);
        self.request(token, sync.then_some("Import")).await;
    }

    /// Sets `requested-at` to `token` and `requested-direction` to `direction` (absent: Both).
    pub(crate) async fn request(&self, token: &str, direction: Option<&str>) {
        request(&self.api::<CatalogApp>(), token, direction).await;
    }

    async fn patch_app_spec(&self, spec: serde_json::Value) {
        self.api::<CatalogApp>()
            .patch(
                "slack",
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await
            .expect("patch app");
    }

    /// Writes run status as the sync Job does (its own field manager).
    pub(crate) async fn job_writes(&self, run: &str, status: serde_json::Value) {
        catalogsync::cluster::status::apply(
            &self.api::<SyncRun>(),
            run,
            catalogsync::cluster::status::JOB_MANAGER,
            status,
        )
        .await
        .expect("job status write");
    }
}

fn cond_reason(
    conds: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    t: &str,
) -> Option<(String, String)> {
    find(conds, t).map(|c| (c.status.clone(), c.reason.clone()))
}

fn app_cond(a: &CatalogApp, t: &str) -> Option<(String, String)> {
    cond_reason(&a.status.clone().unwrap_or_default().conditions, t)
}

/// The `requested-at` value the controller last handled.
/// Requests a run of the app `slack` as a person does: `requested-at` set to `token`,
/// `requested-direction` to `direction` (absent: Both).
pub(crate) async fn request(apps: &Api<CatalogApp>, token: &str, direction: Option<&str>) {
    apps.patch(
        "slack",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {
            "catalogsync.io/requested-at": token,
            "catalogsync.io/requested-direction": direction,
        }}})),
    )
    .await
    .expect("annotate");
}

pub(crate) fn requested_echo(a: &CatalogApp) -> Option<&str> {
    a.status.as_ref()?.last_handled_requested_at.as_deref()
}

fn app_message(a: &CatalogApp, t: &str) -> String {
    let conds = a.status.clone().unwrap_or_default().conditions;
    find(&conds, t)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

fn tf(status: &str, reason: &str) -> Option<(String, String)> {
    Some((status.into(), reason.into()))
}

pub(crate) fn phase(r: &SyncRun) -> Option<RunPhase> {
    r.status.as_ref().and_then(|s| s.phase)
}
