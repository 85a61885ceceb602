//! End to end, the way `make demo` runs the product: the controller and the dev job
//! runner (each Job a real `catalogsync sync` process), real SCIM servers seeded with
//! the demo's data (`catalogsync::dev::seed`), the real control plane, and the
//! manifests of `examples/` pointed at those servers. Each test has its own namespace
//! and its own SCIM server.

use std::time::Duration;

use catalogsync::api::{CatalogApp, Counts, RunPhase, SyncRun};
use catalogsync::cluster::conditions::find;
use catalogsync::dev::seed::{AppShape, Scenario};
use catalogsync::dev::up::{self, DOMAIN_TENANT};
use catalogsync::scim::{self, ClientOptions, ScimClient};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::controller::{RunningController, eventually};
use crate::harness::{apply_yaml_with, control_plane, repo_path};
use crate::scim_server::{ScimServer, TenantSpec};

/// The product running in one namespace, as `make demo` runs it; or, on the real node
/// (`crate::node`), as installed from `deploy/`, with the same examples and data.
pub(crate) struct Product {
    pub(crate) ns: String,
    pub(crate) client: Client,
    pub(crate) scim: ScimServer,
    tenants: Vec<String>,
    running: Running,
}

/// Where the controller and the job runner run.
enum Running {
    /// In this process (one task each).
    InProcess {
        _controller: RunningController,
        runner_stop: watch::Sender<bool>,
    },
    /// As `catalogsync dev up` starts them: processes, their logs (and the Jobs') in `dir`.
    Processes {
        children: up::Children,
        dir: tempfile::TempDir,
    },
    /// Not started here: the real node runs them as installed from `deploy/`.
    Elsewhere,
}

impl Drop for Product {
    fn drop(&mut self) {
        match &mut self.running {
            Running::InProcess { runner_stop, .. } => {
                let _ = runner_stop.send(true);
            }
            Running::Processes { children, .. } => children.stop(),
            Running::Elsewhere => {}
        }
    }
}

impl Product {
    /// SCIM tenants for the domain and `apps` (demo tokens), the scenario seeded,
    /// the controller and the job runner started in this process.
    pub(crate) async fn start(prefix: &str, scenario: &Scenario, apps: &[&str]) -> Product {
        let cp = control_plane().await;
        let ns = cp.new_namespace(prefix).await;
        let client = cp.admin_client();
        let mut product = Product::with_scim(client.clone(), ns, "127.0.0.1", scenario, apps).await;
        let controller =
            RunningController::start(client.clone(), &product.ns, Duration::from_secs(300), None);
        let (runner_stop, rx) = watch::channel(false);
        tokio::spawn(catalogsync::dev::runner::run(
            client,
            catalogsync::dev::runner::RunnerConfig {
                binary: crate::sync_engine::binary().to_path_buf(),
                kubeconfig: Some(cp.kubeconfig_path().to_path_buf()),
                namespace: Some(product.ns.clone()),
                grace: Duration::from_secs(5),
            },
            rx,
        ));
        product.running = Running::InProcess {
            _controller: controller,
            runner_stop,
        };
        product
    }

    /// The same with the controller and the job runner as processes, started by
    /// `dev up`'s code, logging at `log` level.
    pub(crate) async fn start_as_processes(
        prefix: &str,
        scenario: &Scenario,
        apps: &[&str],
        log: &str,
    ) -> Product {
        let cp = control_plane().await;
        let ns = cp.new_namespace(prefix).await;
        let mut product =
            Product::with_scim(cp.admin_client(), ns, "127.0.0.1", scenario, apps).await;
        let dir = tempfile::tempdir().unwrap();
        let scope = up::Scope {
            namespace: Some(product.ns.clone()),
            log: Some(log.into()),
        };
        let binary = crate::sync_engine::binary();
        let children = up::start_processes(binary, dir.path(), cp.kubeconfig_path(), &scope)
            .await
            .expect("the controller and the job runner started");
        product.running = Running::Processes { children, dir };
        product
    }

    /// The controller's (or the job runner's, with the Jobs') log so far, of a product
    /// started as processes.
    pub(crate) fn log(&self, process: &str) -> String {
        let Running::Processes { dir, .. } = &self.running else {
            panic!("only processes have logs");
        };
        std::fs::read_to_string(dir.path().join(format!("{process}.log"))).unwrap_or_default()
    }

    /// The controller's metrics, of a product started as processes.
    pub(crate) async fn metrics(&self) -> String {
        let Running::Processes { children, .. } = &self.running else {
            panic!("only processes serve metrics");
        };
        let url = format!("{}/metrics", children.metrics);
        reqwest::get(url).await.unwrap().text().await.unwrap()
    }

    /// Stops the controller and the job runner (their logs are whole then).
    pub(crate) fn stop(&mut self) {
        if let Running::Processes { children, .. } = &mut self.running {
            children.stop();
        }
    }

    /// The SCIM servers (listening on `host`) seeded with `scenario`, in namespace `ns`
    /// of the cluster `client` reaches; no controller of its own.
    pub(crate) async fn with_scim(
        client: Client,
        ns: String,
        host: &str,
        scenario: &Scenario,
        apps: &[&str],
    ) -> Product {
        let tenants: Vec<String> = std::iter::once(DOMAIN_TENANT)
            .chain(apps.iter().copied())
            .map(String::from)
            .collect();
        let specs: Vec<TenantSpec> = tenants
            .iter()
            .map(|t| TenantSpec {
                token: up::token(t),
                ..TenantSpec::new(t)
            })
            .collect();
        let host = host.to_string();
        let scim = tokio::task::spawn_blocking(move || ScimServer::start_on(&host, specs, None))
            .await
            .unwrap();
        up::seed(&scim.root(), &ns, scenario).await.expect("seed");
        Product {
            ns,
            client,
            scim,
            tenants,
            running: Running::Elsewhere,
        }
    }

    /// An `examples/` manifest with the URLs and tokens of this product's SCIM
    /// servers, as `hack/demo.sh` applies it.
    pub(crate) fn example(&self, file: &str) -> String {
        let text = std::fs::read_to_string(repo_path("examples").join(file)).expect("example");
        // The local SCIM servers speak plain http: the objects opt in (`insecure`).
        let mut text = text
            .replace(
                "url: https://idcs-123.identity.example.com/admin/v1",
                &format!(
                    "url: {}\n  insecure: true",
                    self.scim.base_url(DOMAIN_TENANT)
                ),
            )
            .replace(
                "replace-with-identity-domain-bearer-token",
                &up::token(DOMAIN_TENANT),
            );
        for (app, url) in [
            ("slack", "https://api.example-saas.com/scim/v2"),
            ("jira", "https://jira.example-saas.com/scim/v2"),
        ] {
            if self.tenants.iter().any(|t| t == app) {
                let local = format!("url: {}\n    insecure: true", self.scim.base_url(app));
                text = text.replace(&format!("url: {url}"), &local);
            }
            text = text.replace(
                &format!("replace-with-{app}-scim-bearer-token"),
                &up::token(app),
            );
        }
        text
    }

    pub(crate) async fn apply(&self, yaml: &str) {
        apply_yaml_with(&self.client, &self.ns, yaml)
            .await
            .unwrap_or_else(|e| panic!("apply: {e}\n{yaml}"));
    }

    /// The domain, Secrets and policy of `examples/`, with `policy_limits` merged
    /// into the policy's spec.limits.
    pub(crate) async fn apply_base(&self, policy_limits: Value) {
        for f in ["secrets.yaml", "identitydomain.yaml"] {
            self.apply(&self.example(f)).await;
        }
        let mut policy: Value = serde_yaml_ng::from_str(&self.example("syncpolicy.yaml")).unwrap();
        if let (Some(l), Some(extra)) = (
            policy["spec"]["limits"].as_object_mut(),
            policy_limits.as_object(),
        ) {
            l.extend(extra.clone());
        }
        self.apply(&serde_yaml_ng::to_string(&policy).unwrap())
            .await;
    }

    pub(crate) fn apps(&self) -> Api<CatalogApp> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub(crate) fn runs(&self) -> Api<SyncRun> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub(crate) async fn wait_app(
        &self,
        app: &str,
        secs: u64,
        what: &str,
        pred: impl Fn(&CatalogApp) -> bool,
    ) -> CatalogApp {
        let apps = self.apps();
        eventually(secs, &format!("{app}: {what}"), || async {
            let a = apps.get(app).await.ok()?;
            pred(&a).then_some(a)
        })
        .await
    }

    pub(crate) async fn wait_ready(&self, app: &str) -> CatalogApp {
        self.wait_app(app, 60, "Ready", |a| {
            cond(a, "Ready") == tf("True", "Ready")
        })
        .await
    }

    /// Requests the run these tests are about: Import when synchronization is on (an
    /// explicit `requested-direction: Import`; Both would provision first), else Provision.
    pub(crate) async fn request(&self, app: &str, token: &str) {
        let a = self.apps().get(app).await.expect("get app");
        let sync = a.spec.synchronization.as_ref().is_some_and(|s| s.enabled);
        self.apps()
            .patch(
                app,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {
                    "catalogsync.io/requested-at": token,
                    "catalogsync.io/requested-direction": sync.then_some("Import"),
                }}})),
            )
            .await
            .expect("annotate");
    }

    /// `hack/demo.sh`'s story (its steps 4 to 8): every manifest of `examples/` applied,
    /// both apps Ready, a synchronization of both requested (Provision, then Import);
    /// returns slack and jira once their runs ended, as the demo expects them: slack
    /// Succeeded, jira LimitExceeded.
    pub(crate) async fn demo_story(&self) -> [CatalogApp; 2] {
        let mut files: Vec<String> = std::fs::read_dir(repo_path("examples"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|f| f.ends_with(".yaml"))
            .collect();
        files.sort();
        for f in &files {
            self.apply(&self.example(f)).await;
        }
        let apps = ["slack", "jira"];
        for app in apps {
            self.wait_ready(app).await;
        }
        for app in apps {
            self.apps()
                .patch(
                    app,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": {
                        "catalogsync.io/requested-at": "demo"}}})),
                )
                .await
                .expect("annotate");
        }
        let slack = self.outcome("slack", "demo").await;
        let jira = self.outcome("jira", "demo").await;
        for (a, phase) in [
            (&slack, RunPhase::Succeeded),
            (&jira, RunPhase::LimitExceeded),
        ] {
            let run = last_run(a);
            assert_eq!(run.phase, Some(phase), "{:?}", run.message);
        }
        [slack, jira]
    }

    /// Waits until the run requested with `token` has ended; returns the app then.
    pub(crate) async fn outcome(&self, app: &str, token: &str) -> CatalogApp {
        self.wait_app(
            app,
            180,
            &format!("the run requested as {token} ended"),
            |a| {
                let st = a.status.clone().unwrap_or_default();
                st.last_handled_requested_at.as_deref() == Some(token)
                    && find(&st.conditions, "Synchronizing").is_some_and(|c| c.status == "False")
            },
        )
        .await
    }

    pub(crate) async fn patch_app(&self, app: &str, spec: Value) {
        self.apps()
            .patch(
                app,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await
            .expect("patch app");
    }

    pub(crate) fn scim_client(&self, tenant: &str) -> ScimClient {
        ScimClient::with_options(ClientOptions::new(
            self.scim.base_url(tenant),
            scim::Auth::Bearer(up::token(tenant)),
        ))
        .unwrap()
    }

    /// Members of a grant group in the identity domain.
    pub(crate) async fn members(&self, group: &str) -> usize {
        let (groups, _) = self
            .scim_client(DOMAIN_TENANT)
            .list(
                "Groups",
                &["displayName", "members"],
                Some(&format!("displayName eq \"{group}\"")),
            )
            .await
            .expect("list groups");
        assert_eq!(groups.len(), 1, "one group {group}");
        groups[0]["members"].as_array().map_or(0, Vec::len)
    }
}

pub(crate) fn cond(a: &CatalogApp, t: &str) -> Option<(String, String)> {
    let st = a.status.clone().unwrap_or_default();
    find(&st.conditions, t).map(|c| (c.status.clone(), c.reason.clone()))
}

pub(crate) fn tf(status: &str, reason: &str) -> Option<(String, String)> {
    Some((status.into(), reason.into()))
}

pub(crate) fn last_run(a: &CatalogApp) -> catalogsync::api::RunSummary {
    a.status
        .clone()
        .and_then(|s| s.last_run)
        .expect("status.lastRun")
}

pub(crate) fn message(a: &CatalogApp, t: &str) -> String {
    find(&a.status.clone().unwrap_or_default().conditions, t)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// A scenario with only some of the demo's apps.
fn demo_with(apps: &[&str]) -> Scenario {
    let mut s = Scenario::demo();
    s.apps.retain(|a| apps.contains(&a.name.as_str()));
    s
}

#[tokio::test]
async fn e2e_synchronization_is_refused_before_provisioning() {
    let scenario = demo_with(&["slack"]);
    let p = Product::start("e2e-seed-rule", &scenario, &["slack"]).await;
    p.apply_base(json!({})).await;

    // Admission: synchronization on, provisioning off, is rejected with the rule.
    let off = p.example("catalogapp.yaml").replace(
        "    enabled: true\n    grantGroup",
        "    enabled: false\n    grantGroup",
    );
    let cp = control_plane().await;
    let msg = cp.apply_yaml_expect_rejection(&p.ns, &off).await;
    assert!(
        msg.contains("synchronization can only be enabled after provisioning is enabled"),
        "{msg}"
    );

    // Provisioning on but not working (wrong app token): synchronization is refused
    // at run time, and a requested run is not started.
    p.apply(&p.example("catalogapp.yaml")).await;
    p.apply(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: slack-scim, labels: {catalogsync.io/credentials: \"true\"}}\nstringData: {token: wrong}\n",
    )
    .await;
    let a = p
        .wait_app("slack", 60, "ProvisioningNotEnabled", |a| {
            cond(a, "SynchronizationEnabled") == tf("False", "ProvisioningNotEnabled")
        })
        .await;
    assert_eq!(cond(&a, "ProvisioningEnabled"), tf("False", "Unauthorized"));
    assert!(
        message(&a, "SynchronizationEnabled").contains("synchronization needs provisioning"),
        "{}",
        message(&a, "SynchronizationEnabled")
    );
    p.request("slack", "refused").await;
    p.wait_app("slack", 30, "request handled", |a| {
        a.status
            .as_ref()
            .and_then(|s| s.last_handled_requested_at.as_deref())
            == Some("refused")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let runs = p.runs().list(&ListParams::default()).await.unwrap().items;
    assert!(runs.is_empty(), "no run while provisioning fails: {runs:?}");

    // The right token: provisioning works, so synchronization does.
    p.apply(&p.example("secrets.yaml")).await;
    p.wait_ready("slack").await;
    p.request("slack", "allowed").await;
    let a = p.outcome("slack", "allowed").await;
    assert_eq!(last_run(&a).phase, Some(RunPhase::Succeeded));
}

#[tokio::test]
async fn e2e_demo_synchronizes_one_app_and_stops_the_other_on_its_limit() {
    let scenario = Scenario::demo();
    let p = Product::start("e2e-demo", &scenario, &["slack", "jira"]).await;
    p.apply_base(json!({})).await;
    for f in ["catalogapp.yaml", "catalogapp-jira.yaml"] {
        p.apply(&p.example(f)).await;
    }
    for app in ["slack", "jira"] {
        p.wait_ready(app).await;
        p.request(app, "demo").await;
    }
    assert_demo_slack_succeeded(&p, &scenario, "demo").await;
    assert_demo_jira_limit_exceeded(&p, &scenario, "demo").await;
}

/// The demo's slack run requested as `token`: every situation counted exactly, and
/// applied. Returns its name.
pub(crate) async fn assert_demo_slack_succeeded(
    p: &Product,
    scenario: &Scenario,
    token: &str,
) -> String {
    let users = scenario.domain_user_count();

    // slack: every situation counted exactly, and applied.
    let slack = scenario.app("slack");
    let a = p.outcome("slack", token).await;
    let run = last_run(&a);
    assert_eq!(run.phase, Some(RunPhase::Succeeded), "{:?}", run.message);
    let counts = run.counts.expect("counts");
    assert_eq!(counts, slack.expected(users));
    assert_eq!(cond(&a, "LimitExceeded").unwrap().0, "False");
    let linked = (counts.linked + counts.already_linked) as usize;
    assert_eq!(
        p.members("slack-users-accounts").await,
        linked,
        "records = linked accounts"
    );
    assert_eq!(
        p.members("slack-users").await,
        linked + slack.pending,
        "grants = linked accounts and the users pending provisioning, never removed"
    );
    run.name
}

/// The demo's jira run requested as `token`: over its delete limit, nothing applied,
/// and its Job ended by the podFailurePolicy (the exit code), not retried.
pub(crate) async fn assert_demo_jira_limit_exceeded(
    p: &Product,
    scenario: &Scenario,
    token: &str,
) -> String {
    // jira: 35 planned deletes > 20 allowed: nothing applied, and the message says
    // what to change.
    let jira = scenario.app("jira");
    let a = p.outcome("jira", token).await;
    let run = last_run(&a);
    assert_eq!(
        run.phase,
        Some(RunPhase::LimitExceeded),
        "{:?}",
        run.message
    );
    let msg = message(&a, "LimitExceeded");
    assert_eq!(cond(&a, "LimitExceeded").unwrap().0, "True");
    assert!(
        msg.contains("planned 0 creates and 35 deletes")
            && msg.contains("raise maxDeletes to at least 35")
            && msg.contains("SyncPolicy \"default\""),
        "{msg}"
    );
    let full = p.runs().get(&run.name).await.unwrap().status.unwrap();
    assert_eq!(full.planned.unwrap().deletes, jira.deleted as i64);
    let counts = full.counts.unwrap_or_default();
    assert_eq!(counts.linked + counts.deleted, 0, "nothing applied");
    assert_eq!(
        p.members("jira-users").await,
        jira.recorded + jira.deleted + jira.pending,
        "the grant group is untouched"
    );
    assert_eq!(
        p.members("jira-users-accounts").await,
        jira.recorded + jira.deleted,
        "the record group is untouched"
    );
    // Its Job failed by the podFailurePolicy (exit code: limit), not retried. The run
    // ends first (the engine writes it); the Job controller marks the Job a moment later.
    let jobs = Api::<Job>::namespaced(p.client.clone(), &p.ns);
    eventually(30, "the Job Failed by its PodFailurePolicy", || async {
        let job = jobs.get(&run.name).await.ok()?;
        let conditions = job.status?.conditions.unwrap_or_default();
        conditions
            .iter()
            .any(|c| c.type_ == "Failed" && c.reason.as_deref() == Some("PodFailurePolicy"))
            .then_some(())
    })
    .await;
    run.name
}

#[tokio::test]
async fn e2e_raising_the_limit_lets_the_next_run_apply() {
    let scenario = demo_with(&["jira"]);
    let p = Product::start("e2e-limit", &scenario, &["jira"]).await;
    p.apply_base(json!({})).await;
    p.apply(&p.example("catalogapp-jira.yaml")).await;
    p.wait_ready("jira").await;
    p.request("jira", "first").await;
    let a = p.outcome("jira", "first").await;
    assert_eq!(last_run(&a).phase, Some(RunPhase::LimitExceeded));

    // What the message says to do.
    p.apply_base(json!({"maxDeletes": 35})).await;
    p.request("jira", "second").await;
    let a = p.outcome("jira", "second").await;
    let run = last_run(&a);
    assert_eq!(run.phase, Some(RunPhase::Succeeded), "{:?}", run.message);
    let jira = scenario.app("jira");
    assert_eq!(
        run.counts.unwrap(),
        jira.expected(scenario.domain_user_count())
    );
    assert_eq!(cond(&a, "LimitExceeded").unwrap().0, "False");
}

#[tokio::test]
async fn e2e_synchronization_off_during_a_run_cancels_it_and_on_again_runs() {
    let scenario = demo_with(&["slack"]);
    let p = Product::start("e2e-onoff", &scenario, &["slack"]).await;
    // Many more accounts, so the run lasts long enough to be switched off.
    p.scim
        .seed(
            "slack",
            json!({"generate": {"count": 20000, "prefix": "guest", "domain": "guests.example"}}),
        )
        .await;
    p.apply_base(json!({})).await;
    p.apply(&p.example("catalogapp.yaml")).await;
    p.wait_ready("slack").await;
    p.request("slack", "one").await;
    let running = eventually(60, "a Running run", || async {
        let runs = p.runs().list(&ListParams::default()).await.ok()?.items;
        runs.into_iter()
            .find(|r| r.status.as_ref().and_then(|s| s.phase) == Some(RunPhase::Running))
    })
    .await;

    p.patch_app("slack", json!({"synchronization": {"enabled": false}}))
        .await;
    let cancelled = eventually(30, "the run Cancelled", || async {
        let r = p.runs().get(&running.name_any()).await.ok()?;
        (r.status.as_ref()?.phase == Some(RunPhase::Cancelled)).then_some(r)
    })
    .await;
    let msg = cancelled.status.unwrap().message.unwrap_or_default();
    assert!(msg.contains("synchronization was disabled"), "{msg}");
    let a = p
        .wait_app("slack", 30, "SynchronizationEnabled False Disabled", |a| {
            cond(a, "SynchronizationEnabled") == tf("False", "Disabled")
        })
        .await;
    assert_eq!(cond(&a, "Synchronizing").unwrap().0, "False");
    let jobs: Api<Job> = Api::namespaced(p.client.clone(), &p.ns);
    eventually(30, "the Job deleted", || async {
        jobs.get_opt(&running.name_any())
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    // The process stopped (SIGTERM): the phase stays Cancelled, nothing overwrote it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = p.runs().get(&running.name_any()).await.unwrap();
    assert_eq!(r.status.unwrap().phase, Some(RunPhase::Cancelled));

    // On again: a new request runs to the end.
    p.patch_app("slack", json!({"synchronization": {"enabled": true}}))
        .await;
    p.wait_ready("slack").await;
    p.request("slack", "two").await;
    let a = p.outcome("slack", "two").await;
    let run = last_run(&a);
    assert_eq!(run.phase, Some(RunPhase::Succeeded), "{:?}", run.message);
    assert_ne!(run.name, running.name_any());
    let counts = run.counts.unwrap();
    let slack = scenario.app("slack");
    assert_eq!(counts.app_accounts as usize, slack.accounts().len() + 20000);
    assert_eq!(counts.unmatched as usize, slack.unmatched + 20000);
}

#[tokio::test]
async fn e2e_a_provisioning_run_then_a_synchronization_run() {
    // A new app: 60 people granted in the identity domain, no accounts yet.
    let mut scenario = demo_with(&[]);
    scenario.apps.push(AppShape {
        name: "slack".into(),
        grant_group: "slack-users".into(),
        offset: 100,
        by_user_name: 0,
        by_email: 0,
        disputed: 0,
        unmatched: 0,
        recorded: 0,
        deleted: 0,
        pending: 60,
    });
    let p = Product::start("e2e-prov", &scenario, &["slack"]).await;
    // The app starts empty: the seed's accounts are what provisioning must create.
    p.scim.reset("slack").await;
    p.apply_base(json!({})).await;
    let app = p.example("catalogapp.yaml").replace(
        "    enabled: true\n    policyRef",
        "    enabled: false\n    policyRef",
    );
    p.apply(&app).await;
    p.wait_ready("slack").await;

    // Synchronization off: an on-demand request is a provisioning run.
    p.request("slack", "provision").await;
    let a = p
        .wait_app("slack", 120, "provisioning run ended", |a| {
            a.status
                .as_ref()
                .and_then(|s| s.last_provisioning_run.as_ref())
                .is_some_and(|r| r.phase.is_some_and(RunPhase::is_finished))
        })
        .await;
    let prov = a.status.unwrap().last_provisioning_run.unwrap();
    assert_eq!(prov.phase, Some(RunPhase::Succeeded), "{:?}", prov.message);
    assert_eq!(prov.counts.unwrap().created, 60);
    let (accounts, _) = p
        .scim_client("slack")
        .list("Users", &["userName", "externalId"], None)
        .await
        .unwrap();
    assert_eq!(accounts.len(), 60);
    assert!(accounts.iter().all(|a| a["externalId"].is_string()));

    // Then synchronization: every account is already recorded, nothing to change.
    p.patch_app("slack", json!({"synchronization": {"enabled": true}}))
        .await;
    p.wait_app("slack", 60, "SynchronizationEnabled", |a| {
        cond(a, "SynchronizationEnabled") == tf("True", "Enabled")
    })
    .await;
    p.request("slack", "import").await;
    let a = p.outcome("slack", "import").await;
    let run = last_run(&a);
    assert_eq!(run.phase, Some(RunPhase::Succeeded), "{:?}", run.message);
    assert_eq!(
        run.counts.unwrap(),
        Counts {
            app_accounts: 60,
            domain_users: scenario.domain_user_count() as i64,
            already_linked: 60,
            ..Default::default()
        }
    );
    assert_eq!(p.members("slack-users").await, 60);
    assert_eq!(
        p.members("slack-users-accounts").await,
        60,
        "every account recorded"
    );
}
