//! The controller on the real control plane against real SCIM servers. Each
//! test runs its own controller in-process, restricted to the test's namespace.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use catalogsync::api::{
    CatalogApp, Direction, IdentityDomain, RunPhase, SyncPolicy, SyncRun, Trigger,
};
use catalogsync::cluster::conditions::find;
use catalogsync::controller::leader::LeaseConfig;
use catalogsync::controller::metrics::Metrics;
use catalogsync::controller::sync_run::job::{APP_LABEL, JobConfig, RUN_LABEL};
use catalogsync::controller::{self, Config};
use catalogsync::scim::{self, ClientOptions, ScimClient};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
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
        let (stop, rx) = watch::channel(false);
        let config = Config {
            job: JobConfig {
                image: JOB_IMAGE.into(),
                service_account: "catalogsync-sync-job".into(),
            },
            recheck,
            namespace: Some(ns.into()),
        };
        let task = tokio::spawn(controller::run(
            client,
            Arc::new(Metrics::default()),
            config,
            lease,
            rx,
            None,
        ));
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

struct Env {
    cp: &'static ControlPlane,
    ns: String,
    client: Client,
    scim: ScimServer,
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
    async fn with_controller(prefix: &str) -> (Env, RunningController) {
        let env = Env::new(prefix).await;
        let ctl =
            RunningController::start(env.client.clone(), &env.ns, Duration::from_secs(300), None);
        (env, ctl)
    }

    async fn wait_ready(&self) -> CatalogApp {
        self.wait_app("Ready", |a| app_cond(a, "Ready") == tf("True", "Ready"))
            .await
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn apply(&self, yaml: &str) {
        self.cp
            .apply_yaml(&self.ns, yaml)
            .await
            .unwrap_or_else(|e| panic!("apply: {e}\n{yaml}"));
    }

    async fn secret(&self, name: &str, token: &str) {
        self.apply(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData: {{token: {token}}}\n"
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
  auth: {{bearerToken: {{secretRef: {{name: iam-token, key: token}}}}}}
"#
        ))
        .await;
    }

    /// Secrets, a Ready domain, and the app `slack` (labels a GitOps tool would set).
    async fn app(&self, sync: bool) {
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
    auth: {{bearerToken: {{secretRef: {{name: app-token, key: token}}}}}}
  provisioning: {{enabled: true}}{more_spec}
"#,
            self.scim.base_url("app")
        ))
        .await;
    }

    async fn policy(&self, extra: &str) {
        self.apply(&format!(
            "apiVersion: catalogsync.io/v1alpha1\nkind: SyncPolicy\nmetadata: {{name: default}}\nspec: {{{extra}}}\n"
        ))
        .await;
    }

    async fn get_app(&self) -> CatalogApp {
        self.api::<CatalogApp>()
            .get("slack")
            .await
            .expect("get app")
    }

    async fn wait_app(&self, what: &str, pred: impl Fn(&CatalogApp) -> bool) -> CatalogApp {
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

    async fn runs(&self) -> Vec<SyncRun> {
        self.api::<SyncRun>()
            .list(&ListParams::default())
            .await
            .expect("list runs")
            .items
    }

    /// The reasons of the events in the namespace, as kubectl shows them.
    async fn event_reasons(&self) -> String {
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

    async fn request_run(&self, token: &str) {
        self.api::<CatalogApp>()
            .patch(
                "slack",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {"catalogsync.io/requested-at": token}}}),
                ),
            )
            .await
            .expect("annotate");
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
    async fn job_writes(&self, run: &str, status: serde_json::Value) {
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

/// The phase of the app's `lastRun`.
fn last_run_phase(a: &CatalogApp) -> Option<RunPhase> {
    a.status.as_ref()?.last_run.as_ref()?.phase
}

/// The `requested-at` value the controller last handled.
fn requested_echo(a: &CatalogApp) -> Option<&str> {
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

fn phase(r: &SyncRun) -> Option<RunPhase> {
    r.status.as_ref().and_then(|s| s.phase)
}

#[tokio::test]
async fn identity_domain_reports_credential_problems_and_recovers_without_restart() {
    let (env, _ctl) = Env::with_controller("ctl-domain").await;
    let domains = env.api::<IdentityDomain>();
    let ready = |reason: &'static str| {
        let domains = domains.clone();
        move || {
            let domains = domains.clone();
            async move {
                let d = domains.get("corp").await.ok()?;
                let st = d.status.clone()?;
                let c = find(&st.conditions, "Ready")?;
                (c.reason == reason && st.observed_generation == d.metadata.generation).then_some(d)
            }
        }
    };

    // No Secret yet.
    env.domain(&env.scim.base_url("iam")).await;
    let d = eventually(30, "Ready=False SecretNotFound", ready("SecretNotFound")).await;
    let c = find(&d.status.unwrap().conditions, "Ready")
        .unwrap()
        .clone();
    assert_eq!(c.status, "False");
    assert!(c.message.contains("iam-token"), "{}", c.message);

    // A wrong token.
    env.secret("iam-token", "not-the-token").await;
    let d = eventually(30, "Ready=False Unauthorized", ready("Unauthorized")).await;
    assert!(
        find(&d.status.unwrap().conditions, "Ready")
            .unwrap()
            .message
            .contains("401")
    );

    // The right token: recovers through the Secret watch, no restart.
    env.secret("iam-token", &env.scim.token("iam")).await;
    let d = eventually(30, "Ready=True", ready("Connected")).await;
    let st = d.status.unwrap();
    assert_eq!(find(&st.conditions, "Ready").unwrap().status, "True");
    let caps = st.capabilities.expect("capabilities recorded");
    assert!(caps.patch && caps.filter, "{caps:?}");

    // Nothing listens there.
    domains
        .patch(
            "corp",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"url": "http://127.0.0.1:9/scim/v2"}})),
        )
        .await
        .unwrap();
    let d = eventually(
        40,
        "Ready=False ConnectivityFailed",
        ready("ConnectivityFailed"),
    )
    .await;
    assert!(
        d.status.unwrap().capabilities.is_some(),
        "last known capabilities kept"
    );

    // Events tell the story.
    let events = env.event_reasons().await;
    assert!(events.contains("ConnectivityRestored"), "{events}");
    assert!(events.contains("ConnectivityLost"), "{events}");
}

#[tokio::test]
async fn provisioning_creates_the_grant_group_and_kubectl_wait_ready_works() {
    let (env, _ctl) = Env::with_controller("ctl-prov").await;
    // The app before its identity domain: IdentityDomainNotFound.
    env.provisioning_app("slack").await;
    env.wait_app("IdentityDomainNotFound", |a| {
        app_cond(a, "ProvisioningEnabled") == tf("False", "IdentityDomainNotFound")
    })
    .await;
    // The domain exists but cannot connect (its Secret is missing): IdentityDomainNotReady.
    env.domain(&env.scim.base_url("iam")).await;
    let a = env
        .wait_app("IdentityDomainNotReady", |a| {
            app_cond(a, "ProvisioningEnabled") == tf("False", "IdentityDomainNotReady")
        })
        .await;
    let msg = app_message(&a, "ProvisioningEnabled");
    assert!(
        msg.contains("iam-token"),
        "the domain's cause is passed on: {msg}"
    );

    // The app first points at a wrong token: Unauthorized, stable reason.
    env.app_with_token(false, "wrong").await;
    let a = env
        .wait_app("ProvisioningEnabled False Unauthorized", |a| {
            app_cond(a, "ProvisioningEnabled") == tf("False", "Unauthorized")
        })
        .await;
    assert_eq!(app_cond(&a, "Ready"), tf("False", "Unauthorized"));

    env.secret("app-token", &env.scim.token("app")).await;
    let out = env
        .cp
        .kubectl([
            "wait",
            "--for=condition=Ready",
            "catalogapp/slack",
            "-n",
            &env.ns,
            "--timeout=60s",
        ])
        .await;
    assert!(
        out.status.success(),
        "kubectl wait: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = env.get_app().await;
    let st = a.status.clone().unwrap();
    assert_eq!(st.observed_generation, a.metadata.generation);
    assert_eq!(app_cond(&a, "ProvisioningEnabled"), tf("True", "Enabled"));
    assert_eq!(
        app_cond(&a, "SynchronizationEnabled"),
        tf("False", "Disabled")
    );
    assert!(find(&st.conditions, "Stalled").is_none());
    assert!(find(&st.conditions, "Reconciling").is_none());

    // The grant group exists in the identity domain, under the recorded id.
    let group_id = st.grant_group_id.expect("grantGroupId");
    let iam = ScimClient::with_options(ClientOptions::new(
        env.scim.base_url("iam"),
        scim::Auth::Bearer(env.scim.token("iam")),
    ))
    .unwrap();
    let group = iam
        .get("Groups", &group_id, &[])
        .await
        .unwrap()
        .expect("group exists");
    assert_eq!(
        group["displayName"],
        format!("catalogsync-{}-slack", env.ns)
    );
}

#[tokio::test]
async fn requested_run_creates_exactly_one_run_and_a_restricted_job() {
    let (env, _ctl) = Env::with_controller("ctl-request").await;
    env.policy("timeout: 30m").await;
    env.app(true).await;
    env.wait_ready().await;

    env.request_run("1700000000").await;
    let a = env
        .wait_app("request echoed", |a| {
            requested_echo(a) == Some("1700000000")
        })
        .await;
    assert_eq!(
        app_cond(&a, "Synchronizing").map(|c| c.0),
        Some("True".into())
    );
    let run = eventually(30, "run Pending with jobName", || async {
        let runs = env.runs().await;
        assert!(
            runs.len() <= 1,
            "exactly one run: {:?}",
            runs.iter().map(|r| r.name_any()).collect::<Vec<_>>()
        );
        runs.into_iter().find(|r| {
            phase(r) == Some(RunPhase::Pending)
                && r.status
                    .as_ref()
                    .and_then(|s| s.job_name.as_ref())
                    .is_some()
        })
    })
    .await;
    assert_eq!(run.spec.trigger, Trigger::Requested);
    assert_eq!(run.spec.direction, Direction::Import);
    assert_eq!(
        run.labels().get(APP_LABEL).map(String::as_str),
        Some("slack")
    );
    assert!(!run.labels().contains_key("argocd.argoproj.io/instance"));
    assert!(run.annotations().is_empty());
    let owner = &run.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("CatalogApp", "slack")
    );

    // The Job: owned by the run, our labels only, restricted pod, secrets by reference.
    let job = env.api::<Job>().get(&run.name_any()).await.expect("job");
    let owner = &job.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("SyncRun", run.uid().unwrap().as_str(), Some(true))
    );
    assert_eq!(job.labels().get(RUN_LABEL), Some(&run.name_any()));
    assert!(!job.labels().contains_key("argocd.argoproj.io/instance"));
    let spec = job.spec.unwrap();
    assert_eq!(spec.backoff_limit, Some(2));
    assert_eq!(spec.active_deadline_seconds, Some(1800));
    assert!(spec.ttl_seconds_after_finished.is_some());
    assert!(spec.pod_failure_policy.is_some());
    let pod = spec.template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("catalogsync-sync-job")
    );
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some(JOB_IMAGE));
    let args = c.args.clone().unwrap();
    assert_eq!(
        args,
        ["sync", "--run", &format!("{}/{}", env.ns, run.name_any())]
    );
    let env_vars = c.env.clone().unwrap();
    let token = env_vars
        .iter()
        .find(|e| e.name == "CATALOGSYNC_APP_TOKEN")
        .unwrap();
    assert!(token.value.is_none());
    assert_eq!(
        token
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap()
            .name,
        "app-token"
    );

    // The API server's own Pod Security admission agrees the pod is restricted.
    let check_ns = env.cp.new_namespace("ctl-pss").await;
    env.cp
        .kubectl([
            "label",
            "ns",
            &check_ns,
            "pod-security.kubernetes.io/enforce=restricted",
        ])
        .await;
    let pod_obj = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "pss-check"},
        "spec": serde_json::to_value(&pod).unwrap(),
    });
    let created = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(env.client.clone(), &check_ns)
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &serde_json::from_value(pod_obj).unwrap(),
        )
        .await;
    assert!(
        created.is_ok(),
        "restricted namespace rejects the Job pod: {created:?}"
    );

    // Quiet afterwards: still exactly one run.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.runs().await.len(), 1);
}

#[tokio::test]
async fn scheduled_run_then_disabling_cancels_it_and_enabling_resumes() {
    let (env, _ctl) = Env::with_controller("ctl-sched").await;
    // Every 5 seconds (seconds field) so the test does not wait for a minute.
    env.policy("schedule: \"*/5 * * * * *\"").await;
    env.app(true).await;
    let run = eventually(60, "a scheduled run with its Job", || async {
        let r = env.runs().await.into_iter().next()?;
        (r.status.as_ref()?.job_name.is_some()).then_some(r)
    })
    .await;
    assert_eq!(run.spec.trigger, Trigger::Schedule);
    let a = env.get_app().await;
    assert!(a.status.as_ref().unwrap().next_sync_time.is_some());
    // Forbid: the active run blocks the following slots.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        env.runs().await.len(),
        1,
        "Forbid: no second run while one is active"
    );

    // The Job reports progress; the app mirrors it.
    env.job_writes(
        &run.name_any(),
        json!({"phase": "Running", "progress": {"processed": 42, "total": 100, "percent": 42}}),
    )
    .await;
    let a = env
        .wait_app("progress mirrored", |a| {
            a.status
                .as_ref()
                .and_then(|s| s.active_run.as_ref())
                .and_then(|r| r.progress.as_ref())
                .map(|p| p.percent)
                == Some(42)
        })
        .await;
    assert!(
        find(&a.status.unwrap().conditions, "Synchronizing")
            .unwrap()
            .message
            .contains("42%")
    );

    // Turning synchronization off cancels the run and deletes its Job.
    env.patch_app_spec(json!({"synchronization": {"enabled": false}}))
        .await;
    let cancelled = eventually(30, "run Cancelled", || async {
        let r = env.api::<SyncRun>().get(&run.name_any()).await.ok()?;
        (phase(&r) == Some(RunPhase::Cancelled)).then_some(r)
    })
    .await;
    assert!(
        cancelled
            .status
            .unwrap()
            .message
            .unwrap()
            .contains("disabled")
    );
    eventually(30, "Job deleted", || async {
        env.api::<Job>()
            .get_opt(&run.name_any())
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    // A late progress write of the dying Job cannot turn the cancellation into a failure.
    env.job_writes(&run.name_any(), json!({"phase": "Running"}))
        .await;
    let r = eventually(30, "run Cancelled again", || async {
        let r = env.api::<SyncRun>().get(&run.name_any()).await.ok()?;
        (phase(&r) == Some(RunPhase::Cancelled)).then_some(r)
    })
    .await;
    assert!(r.status.unwrap().message.unwrap().contains("disabled"));
    let a = env
        .wait_app("SynchronizationEnabled False Disabled", |a| {
            app_cond(a, "SynchronizationEnabled") == tf("False", "Disabled")
                && last_run_phase(a) == Some(RunPhase::Cancelled)
        })
        .await;
    assert_eq!(app_cond(&a, "Synchronizing").unwrap().0, "False");
    let events = env.event_reasons().await;
    assert!(events.contains("RunCancelled"), "{events}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(env.runs().await.len(), 1, "no scheduling while disabled");

    // On again: the schedule resumes.
    env.patch_app_spec(json!({"synchronization": {"enabled": true}}))
        .await;
    eventually(30, "a new scheduled run", || async {
        (env.runs().await.len() >= 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn suspend_stops_scheduling_and_cancels_the_active_run() {
    let (env, _ctl) = Env::with_controller("ctl-suspend").await;
    env.policy("").await;
    env.app(true).await;
    env.wait_ready().await;
    env.request_run("one").await;
    let run = eventually(30, "a run", || async {
        env.runs().await.into_iter().next()
    })
    .await;
    env.patch_app_spec(json!({"suspend": true})).await;
    eventually(30, "run Cancelled", || async {
        let r = env.api::<SyncRun>().get(&run.name_any()).await.ok()?;
        (phase(&r) == Some(RunPhase::Cancelled)).then_some(())
    })
    .await;
    let a = env
        .wait_app("Suspended", |a| {
            app_cond(a, "SynchronizationEnabled") == tf("False", "Suspended")
        })
        .await;
    assert_eq!(app_cond(&a, "Ready").unwrap().0, "True");
    // A request while suspended waits.
    env.request_run("two").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.runs().await.len(), 1);
    assert_eq!(requested_echo(&env.get_app().await), Some("one"));
    // Resumed: the pending request runs.
    env.patch_app_spec(json!({"suspend": false})).await;
    env.wait_app("request two handled", |a| requested_echo(a) == Some("two"))
        .await;
    assert_eq!(env.runs().await.len(), 2);
}

#[tokio::test]
async fn missing_policy_is_reported_until_it_exists() {
    let (env, _ctl) = Env::with_controller("ctl-policy").await;
    env.app(true).await;
    let a = env
        .wait_app("PolicyNotFound", |a| {
            app_cond(a, "SynchronizationEnabled") == tf("False", "PolicyNotFound")
        })
        .await;
    assert_eq!(app_cond(&a, "Ready"), tf("False", "PolicyNotFound"));
    env.policy("schedule: \"0 3 * * *\"").await;
    let a = env
        .wait_app("recovered", |a| {
            app_cond(a, "SynchronizationEnabled") == tf("True", "Enabled")
        })
        .await;
    assert_eq!(app_cond(&a, "Ready"), tf("True", "Ready"));
    assert!(a.status.unwrap().next_sync_time.is_some());

    // An invalid schedule stalls.
    env.policy("schedule: \"every tuesday\"").await;
    let a = env
        .wait_app("Stalled", |a| {
            app_cond(a, "Stalled") == tf("True", "InvalidSchedule")
        })
        .await;
    assert_eq!(app_cond(&a, "Ready"), tf("False", "InvalidSchedule"));
    // The policy says so itself.
    let p = eventually(30, "policy Ready False InvalidSchedule", || async {
        let p = env.api::<SyncPolicy>().get("default").await.ok()?;
        let c = find(&p.status.as_ref()?.conditions, "Ready")?.clone();
        (c.reason == "InvalidSchedule" && c.status == "False").then_some(p)
    })
    .await;
    assert_eq!(p.status.unwrap().observed_generation, p.metadata.generation);
}

#[tokio::test]
async fn run_history_is_pruned_to_the_limits() {
    let (env, _ctl) = Env::with_controller("ctl-prune").await;
    env.policy("successfulRunsHistoryLimit: 1, failedRunsHistoryLimit: 1")
        .await;
    env.app(true).await;
    env.wait_ready().await;
    for (i, outcome) in ["Succeeded", "Failed", "Succeeded", "Failed", "Succeeded"]
        .iter()
        .enumerate()
    {
        env.request_run(&format!("req-{i}")).await;
        let run = eventually(30, "the requested run", || async {
            let a = env.get_app().await;
            let want = format!("req-{i}");
            if requested_echo(&a) != Some(want.as_str()) {
                return None;
            }
            env.runs()
                .await
                .into_iter()
                .find(|r| !phase(r).is_some_and(RunPhase::is_finished))
        })
        .await;
        env.job_writes(
            &run.name_any(),
            json!({"phase": outcome, "completionTime": format!("2026-01-01T00:00:0{i}Z")}),
        )
        .await;
        // Let the app see it ended before the next request (Forbid would hold it).
        let want = (run.name_any(), outcome.to_string());
        env.wait_app("run ended", |a| {
            let st = a.status.clone().unwrap_or_default();
            st.active_run.is_none()
                && st
                    .last_run
                    .map(|r| (r.name, r.phase.map(|p| format!("{p:?}"))))
                    == Some((want.0.clone(), Some(want.1.clone())))
        })
        .await;
    }
    let runs = eventually(30, "pruned to 1 + 1", || async {
        let runs = env.runs().await;
        (runs.len() == 2).then_some(runs)
    })
    .await;
    let mut phases: Vec<_> = runs.iter().filter_map(phase).collect();
    phases.sort_by_key(|p| format!("{p:?}"));
    assert_eq!(phases, [RunPhase::Failed, RunPhase::Succeeded]);
    let a = env.get_app().await;
    assert_eq!(
        a.status.unwrap().last_run.unwrap().phase,
        Some(RunPhase::Succeeded)
    );
}

#[tokio::test]
async fn job_failing_without_an_outcome_fails_the_run_with_the_jobs_reason() {
    let (env, _ctl) = Env::with_controller("ctl-jobfail").await;
    env.policy("").await;
    env.app(true).await;
    env.wait_ready().await;
    env.request_run("x").await;
    let run = env.first_run_with_job(30).await;
    env.job_writes(&run.name_any(), json!({"phase": "Running"}))
        .await;
    // The Job controller gives up (deadline); the pod never wrote an outcome.
    let t = "2026-01-01T00:00:00Z";
    env.api::<Job>()
        .patch_status(
            &run.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "startTime": t, "failed": 1,
                "conditions": [
                    {"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline", "lastTransitionTime": t},
                    {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline", "lastTransitionTime": t}
                ]}})),
        )
        .await
        .expect("job status");
    let failed = eventually(30, "run Failed", || async {
        let r = env.api::<SyncRun>().get(&run.name_any()).await.ok()?;
        (phase(&r) == Some(RunPhase::Failed)).then_some(r)
    })
    .await;
    let msg = failed.status.unwrap().message.unwrap();
    assert!(
        msg.contains("DeadlineExceeded") && msg.contains("deadline"),
        "{msg}"
    );
    let a = env
        .wait_app("lastRun Failed", |a| {
            last_run_phase(a) == Some(RunPhase::Failed)
        })
        .await;
    assert_eq!(app_cond(&a, "Synchronizing").unwrap().0, "False");
    let events = env.event_reasons().await;
    assert!(events.contains("RunFailed"), "{events}");
}

#[tokio::test]
async fn a_run_stopped_on_a_limit_sets_limit_exceeded_with_planned_and_allowed() {
    let (env, _ctl) = Env::with_controller("ctl-limit").await;
    env.policy("limits: {maxCreates: 100}").await;
    env.app(true).await;
    env.wait_ready().await;
    env.request_run("limit").await;
    let run = env.first_run_with_job(30).await;
    env.job_writes(
        &run.name_any(),
        json!({"phase": "LimitExceeded", "completionTime": "2026-01-01T00:00:00Z",
               "planned": {"creates": 150, "deletes": 2},
               "limits": {"maxCreates": 100}}),
    )
    .await;
    let a = env
        .wait_app("LimitExceeded True", |a| {
            app_cond(a, "LimitExceeded") == tf("True", "LimitExceeded")
        })
        .await;
    let msg = app_message(&a, "LimitExceeded");
    assert!(msg.contains("150") && msg.contains("100"), "{msg}");
    assert_eq!(app_cond(&a, "Ready"), tf("True", "Ready"));
    eventually(10, "LimitExceeded event", || async {
        env.event_reasons()
            .await
            .contains("LimitExceeded")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn controller_restart_mid_run_creates_no_duplicate_and_keeps_status() {
    let env = Env::new("ctl-restart").await;
    let ctl = RunningController::start(env.client.clone(), &env.ns, Duration::from_secs(300), None);
    env.policy("schedule: \"*/3 * * * * *\"").await;
    env.app(true).await;
    let run = env.first_run_with_job(60).await;
    env.job_writes(
        &run.name_any(),
        json!({"phase": "Running", "progress": {"processed": 1, "total": 2, "percent": 50}}),
    )
    .await;
    env.wait_app("active run mirrored", |a| {
        a.status
            .as_ref()
            .and_then(|s| s.active_run.as_ref())
            .is_some_and(|r| r.progress.is_some())
    })
    .await;
    ctl.shutdown().await;

    let before = env.api::<SyncRun>().get(&run.name_any()).await.unwrap();
    let _ctl =
        RunningController::start(env.client.clone(), &env.ns, Duration::from_secs(300), None);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let runs = env.runs().await;
    assert_eq!(runs.len(), 1, "no duplicate after a restart");
    let after = &runs[0];
    assert_eq!(
        phase(after),
        Some(RunPhase::Running),
        "the run's status is intact"
    );
    assert_eq!(after.status, before.status);
    assert_eq!(
        env.api::<Job>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

#[tokio::test]
async fn two_controllers_elect_one_leader_and_hand_over() {
    let env = Env::new("ctl-leader").await;
    let lease = |id: &str| LeaseConfig {
        duration: Duration::from_secs(6),
        grace: Duration::from_secs(2),
        ..LeaseConfig::new(&env.ns, id)
    };
    let a = RunningController::start(
        env.client.clone(),
        &env.ns,
        Duration::from_secs(300),
        Some(lease("replica-a")),
    );
    let leases = env.api::<Lease>();
    let holder = || async {
        leases
            .get_opt("catalogsync-controller")
            .await
            .ok()??
            .spec?
            .holder_identity
    };
    eventually(30, "replica-a leads", || async {
        (holder().await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let b = RunningController::start(
        env.client.clone(),
        &env.ns,
        Duration::from_secs(300),
        Some(lease("replica-b")),
    );
    env.policy("").await;
    env.app(false).await;
    env.wait_app("Ready through the leader", |a| {
        app_cond(a, "Ready") == tf("True", "Ready")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        holder().await.as_deref(),
        Some("replica-a"),
        "the standby does not take over a live lease"
    );
    let managers: Vec<String> = env
        .get_app()
        .await
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.iter().any(|m| m == "catalogsync-controller"),
        "{managers:?}"
    );

    // The leader stops and releases the lease: the standby takes over and acts.
    a.shutdown().await;
    eventually(30, "replica-b leads", || async {
        (holder().await.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    env.patch_app_spec(json!({"synchronization": {"enabled": true}}))
        .await;
    env.wait_app("the new leader reconciles", |a| {
        a.status.as_ref().and_then(|s| s.observed_generation) == a.metadata.generation
            && app_cond(a, "SynchronizationEnabled") == tf("True", "Enabled")
    })
    .await;
    b.shutdown().await;
}

#[tokio::test]
async fn apps_of_one_endpoint_share_one_connectivity_check() {
    let (env, _ctl) = Env::with_controller("ctl-shared").await;
    env.app(false).await;
    let apps = ["slack", "jira", "zoom", "miro", "figma"];
    for name in &apps[1..] {
        env.provisioning_app(name).await;
    }
    let api = env.api::<CatalogApp>();
    eventually(60, "all apps Ready", || {
        let api = api.clone();
        async move {
            let list = api.list(&ListParams::default()).await.ok()?;
            (list.items.len() == apps.len()
                && list
                    .items
                    .iter()
                    .all(|a| app_cond(a, "Ready") == tf("True", "Ready")))
            .then_some(())
        }
    })
    .await;
    // A check is two GETs (ServiceProviderConfig, one user); the grant groups live in
    // the identity domain's tenant. One check serves all five apps; a second one may
    // follow a Secret event that arrived after the first (it drops the shared check).
    let requests = env.scim.requests("app").await;
    let gets = requests["GET"].as_u64().unwrap_or(0);
    assert!(
        (2..=4).contains(&gets),
        "{gets} GETs for {} apps of one endpoint: {requests}",
        apps.len()
    );
}

#[tokio::test]
async fn steady_state_makes_no_writes() {
    let env = Env::new("ctl-quiet").await;
    // Rechecks every second: many reconciles, none of which may write.
    let _ctl = RunningController::start(env.client.clone(), &env.ns, Duration::from_secs(1), None);
    env.policy("schedule: \"0 3 * * *\"").await;
    env.app(true).await;
    env.wait_app("Ready", |a| {
        app_cond(a, "Ready") == tf("True", "Ready")
            && app_cond(a, "SynchronizationEnabled") == tf("True", "Enabled")
    })
    .await;
    env.request_run("once").await;
    let run = env.first_run_with_job(30).await;
    env.job_writes(
        &run.name_any(),
        json!({"phase": "Succeeded", "completionTime": "2026-01-01T00:00:00Z"}),
    )
    .await;
    env.wait_app("idle", |a| {
        a.status
            .as_ref()
            .is_some_and(|s| s.active_run.is_none() && s.last_run.is_some())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let versions = || async {
        let mut v = vec![
            env.get_app().await.resource_version(),
            env.api::<IdentityDomain>()
                .get("corp")
                .await
                .unwrap()
                .resource_version(),
            env.api::<SyncPolicy>()
                .get("default")
                .await
                .unwrap()
                .resource_version(),
        ];
        v.extend(env.runs().await.iter().map(|r| r.resource_version()));
        v.extend(
            env.api::<Job>()
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .map(|j| j.resource_version()),
        );
        v.extend(
            env.api::<Secret>()
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .map(|s| s.resource_version()),
        );
        v
    };
    let before = versions().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(versions().await, before, "no writes while nothing changes");
}

#[tokio::test]
async fn end_to_end_a_requested_run_executes_through_the_dev_job_runner() {
    let env = Env::new("ctl-e2e").await;
    // The same 20 people exist in the app and the identity domain: the import links them.
    env.scim.seed_users("app", "user", 20).await;
    env.scim.seed_users("iam", "user", 20).await;
    let _ctl =
        RunningController::start(env.client.clone(), &env.ns, Duration::from_secs(300), None);
    let (stop, rx) = watch::channel(false);
    let runner = tokio::spawn(catalogsync::dev::runner::run(
        env.client.clone(),
        catalogsync::dev::runner::RunnerConfig {
            binary: crate::sync_engine::binary().to_path_buf(),
            kubeconfig: Some(env.cp.kubeconfig_path().to_path_buf()),
            namespace: Some(env.ns.clone()),
            grace: Duration::from_secs(5),
        },
        rx,
    ));
    env.policy("").await;
    env.app(true).await;
    env.wait_ready().await;
    env.request_run("e2e").await;
    let a = env
        .wait_app("lastRun Succeeded", |a| {
            last_run_phase(a) == Some(RunPhase::Succeeded)
        })
        .await;
    let st = a.status.unwrap();
    let last = st.last_run.unwrap();
    let counts = last.counts.expect("counts mirrored");
    assert_eq!(counts.app_accounts, 20, "{counts:?}");
    assert_eq!(counts.linked + counts.already_linked, 20, "{counts:?}");
    assert!(last.start_time.is_some() && last.completion_time.is_some());
    assert!(st.active_run.is_none());
    assert_eq!(
        find(&st.conditions, "Synchronizing").unwrap().status,
        "False"
    );
    assert_eq!(
        find(&st.conditions, "LimitExceeded").unwrap().status,
        "False"
    );
    let job = env.api::<Job>().get(&last.name).await.unwrap();
    let complete = job.status.unwrap().conditions.unwrap();
    assert!(
        complete
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True")
    );
    let _ = stop.send(true);
    runner.await.unwrap().unwrap();
}

/// Set in a child process of this test binary to make it run the command line.
const CLI_ARGS_ENV: &str = "CATALOGSYNC_TEST_CLI_ARGS";

/// `catalogsync <args>` as a child process: this test binary re-executed through
/// /proc/self/exe (which stays this very build even when a checkout sharing
/// CARGO_TARGET_DIR rebuilds the files), running only [`cli_entry`].
fn cli_process(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("/proc/self/exe");
    cmd.args([
        "--exact",
        "controller::cli_entry",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CLI_ARGS_ENV, serde_json::to_string(args).unwrap());
    cmd
}

/// The command line of `catalogsync`, when [`CLI_ARGS_ENV`] is set; else nothing.
#[test]
fn cli_entry() {
    let Ok(args) = std::env::var(CLI_ARGS_ENV) else {
        return;
    };
    let args: Vec<String> = serde_json::from_str(&args).unwrap();
    let code = catalogsync::cli::main_from(std::iter::once("catalogsync".to_string()).chain(args));
    std::process::exit(if code == std::process::ExitCode::SUCCESS {
        0
    } else {
        1
    });
}

/// `deploy/` applied for real (CRDs, RBAC, namespace), once per process.
async fn deploy(cp: &ControlPlane) {
    static DEPLOYED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DEPLOYED
        .get_or_init(|| async {
            let dir = crate::harness::repo_path("deploy").display().to_string();
            let out = cp
                .kubectl(["apply", "-k", &dir, "--server-side", "--force-conflicts"])
                .await;
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        })
        .await;
}

/// A kubeconfig for `client`'s token (the ServiceAccount the binary runs as).
fn kubeconfig_with_token(cp: &ControlPlane, token: &str, path: &std::path::Path) {
    let admin = std::fs::read_to_string(cp.kubeconfig_path()).unwrap();
    let mut cfg: serde_yaml::Value = serde_yaml::from_str(&admin).unwrap();
    cfg["users"][0]["user"]["token"] = serde_yaml::Value::String(token.into());
    std::fs::write(path, serde_yaml::to_string(&cfg).unwrap()).unwrap();
}

#[tokio::test]
async fn the_controller_command_runs_with_deploy_rbac_serves_metrics_and_shuts_down_gracefully() {
    let env = Env::new("ctl-binary").await;
    deploy(env.cp).await;
    // The controller's own identity, with the least-privilege RBAC of deploy/.
    let sa = "catalogsync-controller";
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(env.client.clone(), "catalogsync-system");
    let token = sas
        .create_token_request(
            sa,
            &PostParams::default(),
            &serde_json::from_value(json!({"spec": {"expirationSeconds": 3600}})).unwrap(),
        )
        .await
        .expect("token for the controller account")
        .status
        .unwrap()
        .token;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    kubeconfig_with_token(env.cp, &token, &kubeconfig);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let lease_name = format!("catalogsync-{}", env.ns);
    let mut child = cli_process(&[
        "controller",
        "--leader-elect",
        "--lease-namespace",
        "catalogsync-system",
        "--lease-name",
        &lease_name,
        "--identity",
        "binary-under-test",
        "--namespace",
        &env.ns,
        "--metrics-addr",
        &format!("127.0.0.1:{port}"),
        "--job-image",
        JOB_IMAGE,
    ])
    .env("KUBECONFIG", &kubeconfig)
    .env("RUST_LOG", "info")
    .stdout(std::fs::File::create(dir.path().join("log")).unwrap())
    .stderr(std::fs::File::create(dir.path().join("err")).unwrap())
    .kill_on_drop(true)
    .spawn()
    .expect("start the controller binary");

    let http = reqwest::Client::new();
    let get = |path: &'static str| {
        let http = http.clone();
        async move {
            let r = http
                .get(format!("http://127.0.0.1:{port}{path}"))
                .send()
                .await
                .ok()?;
            Some((r.status().as_u16(), r.text().await.ok()?))
        }
    };
    let log = |dir: &std::path::Path| {
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        format!("{}{}", read("log"), read("err"))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while get("/healthz").await.map(|r| r.0) != Some(200) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the controller exited with {status}:\n{}", log(dir.path()));
        }
        assert!(
            Instant::now() < deadline,
            "no /healthz after 60s:\n{}",
            log(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eventually(30, "/readyz", || async {
        (get("/readyz").await?.0 == 200).then_some(())
    })
    .await;

    env.policy("").await;
    env.app(true).await;
    env.wait_app("Ready (as the controller account)", |a| {
        app_cond(a, "Ready") == tf("True", "Ready")
    })
    .await;
    env.request_run("rbac").await;
    let run = env.first_run_with_job(30).await;
    env.api::<Job>()
        .get(&run.name_any())
        .await
        .expect("Job created by the controller account");
    let events = env.event_reasons().await;
    assert!(events.contains("RunStarted"), "{events}");

    let (_, metrics) = get("/metrics").await.expect("/metrics");
    assert!(
        metrics.contains("catalogsync_reconciles_total{kind=\"CatalogApp\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "catalogsync_app_condition{{namespace=\"{}\",name=\"slack\",condition=\"Ready\"}} 1",
            env.ns
        )),
        "{metrics}"
    );
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "catalogsync-system");
    let holder = leases
        .get(&lease_name)
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert_eq!(holder.as_deref(), Some("binary-under-test"));

    // A deleted app's series go away.
    env.api::<CatalogApp>()
        .delete("slack", &Default::default())
        .await
        .unwrap();
    eventually(30, "the app's metrics removed", || async {
        let (_, m) = get("/metrics").await?;
        (!m.contains("name=\"slack\"")).then_some(())
    })
    .await;

    // SIGTERM: controllers stop, the lease is released, the process exits 0.
    let pid = child.id().unwrap() as i32;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits within 20s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    let holder = leases
        .get(&lease_name)
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert_ne!(
        holder.as_deref(),
        Some("binary-under-test"),
        "lease released"
    );
}

#[tokio::test]
async fn replace_cancels_the_active_run_for_a_new_one() {
    let (env, _ctl) = Env::with_controller("ctl-replace").await;
    env.policy("concurrencyPolicy: Replace").await;
    env.app(true).await;
    env.wait_ready().await;
    env.request_run("first").await;
    let first = env.first_run_with_job(30).await;
    env.job_writes(&first.name_any(), json!({"phase": "Running"}))
        .await;
    env.request_run("second").await;
    let replaced = eventually(30, "first run Cancelled", || async {
        let r = env.api::<SyncRun>().get(&first.name_any()).await.ok()?;
        (phase(&r) == Some(RunPhase::Cancelled)).then_some(r)
    })
    .await;
    assert!(
        replaced
            .status
            .unwrap()
            .message
            .unwrap()
            .contains("replaced")
    );
    let a = env
        .wait_app("second run active", |a| {
            a.status
                .as_ref()
                .and_then(|s| s.active_run.as_ref())
                .map(|r| &r.name)
                .is_some_and(|n| *n != first.name_any())
        })
        .await;
    assert_eq!(requested_echo(&a), Some("second"));
    assert_eq!(env.runs().await.len(), 2);
}

#[tokio::test]
async fn provisioning_runs_follow_the_provisioning_schedule() {
    let (env, _ctl) = Env::with_controller("ctl-provsched").await;
    env.app(false).await;
    env.patch_app_spec(json!({"provisioning": {"schedule": "*/5 * * * * *"}}))
        .await;
    let run = env.first_run_with_job(60).await;
    assert_eq!(run.spec.direction, Direction::Provision);
    assert_eq!(run.spec.trigger, Trigger::Schedule);
    assert!(run.name_any().starts_with("slack-p"), "{}", run.name_any());
    let job = env.api::<Job>().get(&run.name_any()).await.unwrap();
    assert_eq!(
        job.spec.unwrap().active_deadline_seconds,
        Some(3600),
        "no policy: the default timeout"
    );
    env.job_writes(
        &run.name_any(),
        json!({"phase": "Succeeded", "completionTime": "2026-01-01T00:00:00Z",
               "counts": {"created": 3}}),
    )
    .await;
    let a = env
        .wait_app("lastProvisioningRun", |a| {
            a.status
                .as_ref()
                .and_then(|s| s.last_provisioning_run.as_ref())
                .and_then(|r| r.phase)
                == Some(RunPhase::Succeeded)
        })
        .await;
    let st = a.status.unwrap();
    assert!(st.next_provisioning_time.is_some());
    assert!(st.last_run.is_none(), "imports are reported apart");
    assert_eq!(st.last_provisioning_run.unwrap().counts.unwrap().created, 3);
}

#[tokio::test]
async fn hand_made_runs_wait_for_each_other() {
    let (env, _ctl) = Env::with_controller("ctl-manual").await;
    env.policy("").await;
    env.app(true).await;
    env.wait_ready().await;
    for name in ["manual-a", "manual-b"] {
        env.apply(&format!(
            "apiVersion: catalogsync.io/v1alpha1\nkind: SyncRun\nmetadata: {{name: {name}}}\nspec: {{appRef: {{name: slack}}}}\n"
        ))
        .await;
        tokio::time::sleep(Duration::from_millis(1100)).await; // distinct creation seconds
    }
    let has_job = |name: &'static str| {
        let jobs = env.api::<Job>();
        async move { jobs.get_opt(name).await.unwrap().is_some() }
    };
    eventually(30, "manual-a has its Job", || async {
        has_job("manual-a").await.then_some(())
    })
    .await;
    let b = eventually(30, "manual-b waits", || async {
        let r = env.api::<SyncRun>().get("manual-b").await.ok()?;
        r.status
            .as_ref()?
            .message
            .as_deref()?
            .contains("waiting for run manual-a")
            .then_some(r)
    })
    .await;
    assert_eq!(phase(&b), Some(RunPhase::Pending));
    assert!(
        !has_job("manual-b").await,
        "no second Job while the first runs"
    );
    env.wait_app("activeRun is the executing run", |a| {
        a.status
            .as_ref()
            .and_then(|s| s.active_run.as_ref())
            .map(|r| r.name.as_str())
            == Some("manual-a")
    })
    .await;

    env.job_writes(
        "manual-a",
        json!({"phase": "Succeeded", "completionTime": "2026-01-01T00:00:00Z"}),
    )
    .await;
    eventually(40, "manual-b gets its Job", || async {
        has_job("manual-b").await.then_some(())
    })
    .await;
    let b = env.api::<SyncRun>().get("manual-b").await.unwrap();
    let st = b.status.unwrap();
    assert_eq!(st.job_name.as_deref(), Some("manual-b"));
    assert!(
        st.message.is_none(),
        "the waiting note is gone: {:?}",
        st.message
    );
}

#[tokio::test]
async fn a_late_pending_never_overwrites_what_the_job_wrote() {
    // The controller is down while a run's Job starts and reports (as after a crash
    // between creating the Job and recording it).
    let env = Env::new("ctl-late").await;
    env.policy("").await;
    env.app(true).await;
    env.apply("apiVersion: catalogsync.io/v1alpha1\nkind: SyncRun\nmetadata: {name: fast}\nspec: {appRef: {name: slack}}\n")
        .await;
    let run = env.api::<SyncRun>().get("fast").await.unwrap();
    let job = catalogsync::controller::sync_run::job::build(
        &run,
        &env.get_app().await,
        &env.api::<IdentityDomain>().get("corp").await.unwrap(),
        Some(&env.api::<SyncPolicy>().get("default").await.unwrap()),
        &JobConfig {
            image: JOB_IMAGE.into(),
            service_account: "catalogsync-sync-job".into(),
        },
    );
    env.api::<Job>()
        .create(&PostParams::default(), &job)
        .await
        .unwrap();
    env.job_writes(
        "fast",
        json!({"phase": "Running", "progress": {"processed": 5, "total": 10, "percent": 50}}),
    )
    .await;

    let _ctl =
        RunningController::start(env.client.clone(), &env.ns, Duration::from_secs(300), None);
    let r = eventually(30, "jobName recorded", || async {
        let r = env.api::<SyncRun>().get("fast").await.ok()?;
        r.status.as_ref()?.job_name.is_some().then_some(r)
    })
    .await;
    assert_eq!(phase(&r), Some(RunPhase::Running), "the Job's phase stands");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = env.api::<SyncRun>().get("fast").await.unwrap();
    assert_eq!(phase(&r), Some(RunPhase::Running));
    assert_eq!(r.status.unwrap().progress.unwrap().percent, 50);
}
