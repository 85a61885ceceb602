//! The product on a real one-node cluster (`hack/node.sh`: etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, containerd, kubelet, kube-proxy), installed
//! from `deploy/` as shipped with only the image set: the controller Deployment with
//! leader election, each run a Job whose pod runs `catalogsync sync` with the in-cluster
//! config. The SCIM servers listen on the node's bridge address, which pods reach.
//!
//! One node for the whole test binary, brought up on first use and torn down at exit
//! (`hack/node.sh down` undoes every change to the machine). The tests take turns: one
//! deletes the leader, which the others would feel. Needs root.

use std::path::PathBuf;
use std::sync::Once;
use std::time::{Duration, Instant};

use catalogsync::api::{Counts, RunPhase, SyncRun};
use catalogsync::dev::seed::Scenario;
use catalogsync::dev::up::DOMAIN_TENANT;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::{Mutex, OnceCell};

use crate::controller::eventually;
use crate::e2e::{Product, last_run};
use crate::harness::repo_path;

/// The node's bridge address: the API server and the test SCIM servers listen here.
const BRIDGE: &str = "10.244.0.1";
/// The image the node imports (hack/image.sh) and `deploy/` is set to.
const IMAGE: &str = "catalogsync.local/catalogsync:test";
const SYSTEM_NS: &str = "catalogsync-system";
const CONTROLLER: &str = "catalogsync-controller";

struct Node {
    kubeconfig: PathBuf,
}

static NODE: OnceCell<Result<Node, String>> = OnceCell::const_new();
/// One node test at a time.
static TURN: Mutex<()> = Mutex::const_new(());

/// The node, brought up and `deploy/` installed on first use. Panics (the test fails,
/// never skips) when it cannot be.
async fn node() -> &'static Node {
    let node = NODE
        .get_or_init(|| async { bring_up().await.map_err(|e| format!("{e:#}")) })
        .await;
    node.as_ref()
        .unwrap_or_else(|e| panic!("the local node is unavailable: {e}"))
}

async fn bring_up() -> anyhow::Result<Node> {
    // SAFETY: geteuid has no preconditions.
    anyhow::ensure!(
        unsafe { libc::geteuid() } == 0,
        "the node tests need root (containerd, kubelet, iptables); CI runs as root"
    );
    static DOWN: Once = Once::new();
    DOWN.call_once(|| {
        // SAFETY: registers a plain extern "C" function with no arguments.
        unsafe { libc::atexit(tear_down_at_exit) };
    });
    let started = Instant::now();
    let out = tokio::process::Command::new(repo_path("hack/node.sh"))
        .arg("up")
        .env("CATALOGSYNC_IMAGE", IMAGE)
        .stderr(std::process::Stdio::inherit())
        .output()
        .await?;
    anyhow::ensure!(out.status.success(), "hack/node.sh up failed");
    let kubeconfig = PathBuf::from(
        String::from_utf8(out.stdout)?
            .lines()
            .last()
            .unwrap_or("")
            .trim(),
    );
    eprintln!("node: up in {:.1}s", started.elapsed().as_secs_f64());
    let node = Node { kubeconfig };
    node.install().await?;
    Ok(node)
}

extern "C" fn tear_down_at_exit() {
    if std::env::var_os("CATALOGSYNC_NODE_KEEP").is_some() {
        eprintln!("keeping the node (hack/node.sh down removes it)");
        return;
    }
    let _ = std::process::Command::new(repo_path("hack/node.sh"))
        .arg("down")
        .status();
}

impl Node {
    async fn client(&self) -> Client {
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("node kubeconfig"),
            &Default::default(),
        )
        .await
        .expect("node kubeconfig");
        Client::try_from(config).expect("node client")
    }

    async fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    /// `kubectl apply -k` of a kustomization that takes `deploy/` as is and sets only
    /// the image, as a user does; then both replicas Ready.
    async fn install(&self) -> anyhow::Result<()> {
        let dir = repo_path("target/node-install");
        std::fs::create_dir_all(&dir)?;
        let (name, tag) = IMAGE.rsplit_once(':').expect("image tag");
        std::fs::write(
            dir.join("kustomization.yaml"),
            format!(
                "resources: [../../deploy]\nimages:\n- name: catalogsync\n  newName: {name}\n  newTag: {tag}\n"
            ),
        )?;
        let started = Instant::now();
        self.kubectl(&["apply", "-k", &dir.to_string_lossy()])
            .await?;
        self.rolled_out().await?;
        eprintln!(
            "node: deploy/ installed, controller rolled out in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// The controller Deployment's rollout, finished.
    async fn rolled_out(&self) -> anyhow::Result<()> {
        let deployment = format!("deployment/{CONTROLLER}");
        let args = [
            "-n",
            SYSTEM_NS,
            "rollout",
            "status",
            &deployment,
            "--timeout=180s",
        ];
        self.kubectl(&args).await.map(drop)
    }

    /// `kubectl set env` on the controller Deployment (`NAME=VALUE`, or `NAME-` to remove
    /// it), then the rollout, and a leader among the new pods.
    async fn set_controller_env(&self, change: &str) -> anyhow::Result<()> {
        let deployment = format!("deployment/{CONTROLLER}");
        self.kubectl(&["-n", SYSTEM_NS, "set", "env", &deployment, change])
            .await?;
        self.rolled_out().await?;
        let client = self.client().await;
        let wanted = change.split_once('=');
        let current = |pod: &Pod| {
            let env = pod.spec.as_ref().and_then(|s| s.containers[0].env.clone());
            let value = |name: &str| {
                env.iter()
                    .flatten()
                    .find(|e| e.name == name)
                    .and_then(|e| e.value.clone())
            };
            match wanted {
                Some((name, v)) => value(name).as_deref() == Some(v),
                None => value(change.trim_end_matches('-')).is_none(),
            }
        };
        eventually(90, "a leader among the new controller pods", || async {
            let (pods, holder) = controllers(&client).await;
            let holder = holder?;
            pods.iter()
                .any(|p| p.name_any() == holder && ready(p) && current(p))
                .then_some(())
        })
        .await;
        Ok(())
    }
}

/// A namespace for one test where Pod Security `restricted` is enforced: a Job pod
/// that violates it is refused and the test fails.
async fn restricted_namespace(client: &Client, prefix: &str) -> String {
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {"generateName": format!("{prefix}-"), "labels": {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/warn": "restricted"}}
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace")
        .name_any()
}

/// The demo's product in a restricted namespace of the node: SCIM servers on the bridge
/// address, the examples pointed at them, the apps Ready.
async fn product(client: &Client, prefix: &str, scenario: &Scenario, apps: &[&str]) -> Product {
    let ns = restricted_namespace(client, prefix).await;
    let p = Product::with_scim(client.clone(), ns, BRIDGE, scenario, apps).await;
    p.apply_base(json!({})).await;
    for app in apps {
        let file = if *app == "slack" {
            "catalogapp.yaml".to_string()
        } else {
            format!("catalogapp-{app}.yaml")
        };
        p.apply(&p.example(&file)).await;
    }
    for app in apps {
        p.wait_ready(app).await;
    }
    p
}

/// The controller pods and the Lease's holder.
async fn controllers(client: &Client) -> (Vec<Pod>, Option<String>) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM_NS);
    let lp = ListParams::default().labels("app.kubernetes.io/component=controller");
    let pods = pods.list(&lp).await.expect("controller pods").items;
    let lease = Api::<Lease>::namespaced(client.clone(), SYSTEM_NS)
        .get_opt(CONTROLLER)
        .await
        .expect("lease");
    let holder = lease.and_then(|l| l.spec?.holder_identity);
    (pods, holder)
}

fn ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

/// The pods of a run's Job.
async fn run_pods(p: &Product, run: &str) -> Vec<Pod> {
    let lp = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={run}"));
    Api::<Pod>::namespaced(p.client.clone(), &p.ns)
        .list(&lp)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

/// SCIM requests answered so far by the domain's and the app's tenants.
async fn scim_requests(p: &Product, app: &str) -> u64 {
    let mut total = 0;
    for tenant in [DOMAIN_TENANT, app] {
        let by_method = p.scim.requests(tenant).await;
        total += by_method
            .as_object()
            .map_or(0, |m| m.values().filter_map(Value::as_u64).sum::<u64>());
    }
    total
}

/// The working-set bytes of each container of `ns` as the kubelet reports them (its
/// summary API, through the API server's node proxy).
async fn memory(node: &Node, ns: &str) -> Vec<(String, u64)> {
    let Ok(text) = node
        .kubectl(&[
            "get",
            "--raw",
            "/api/v1/nodes/catalogsync-node/proxy/stats/summary",
        ])
        .await
    else {
        return Vec::new();
    };
    let summary: Value = serde_json::from_str(&text).unwrap_or_default();
    let mut out = Vec::new();
    for pod in summary["pods"].as_array().into_iter().flatten() {
        if pod["podRef"]["namespace"] != ns {
            continue;
        }
        let name = pod["podRef"]["name"].as_str().unwrap_or_default();
        for c in pod["containers"].as_array().into_iter().flatten() {
            if let Some(bytes) = c["memory"]["workingSetBytes"].as_u64() {
                out.push((name.to_string(), bytes));
            }
        }
    }
    out
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::test]
async fn node_deploy_as_shipped_runs_the_demo_in_real_pods() {
    let node = node().await;
    let _turn = TURN.lock().await;
    let client = node.client().await;

    // Two replicas Ready, one of them the leader; the image is the one set by kustomize.
    // (Another node test may have deleted the leader: its replacement gets time to start.)
    let (pods, holder) = eventually(90, "two Ready replicas and a leader", || async {
        let (pods, holder) = controllers(&client).await;
        let ready_pods: Vec<Pod> = pods.into_iter().filter(ready).collect();
        (ready_pods.len() == 2 && holder.is_some()).then_some((ready_pods, holder))
    })
    .await;
    let deployment = Api::<Deployment>::namespaced(client.clone(), SYSTEM_NS)
        .get(CONTROLLER)
        .await
        .unwrap();
    assert_eq!(deployment.spec.unwrap().replicas, Some(2));
    let names: Vec<String> = pods.iter().map(ResourceExt::name_any).collect();
    assert!(
        names.contains(holder.as_ref().unwrap()),
        "{holder:?} leads, not one of {names:?}"
    );
    for pod in &pods {
        let image = pod.spec.as_ref().unwrap().containers[0].image.as_deref();
        assert_eq!(image, Some(IMAGE));
    }

    let scenario = Scenario::demo();
    let p = product(&client, "node-demo", &scenario, &["slack", "jira"]).await;
    let before = scim_requests(&p, "slack").await;
    let requested = Instant::now();
    p.request("slack", "demo").await;
    p.request("jira", "demo").await;

    // From the request to the sync pod running and to the engine's first SCIM request.
    let mut running_after = None;
    let mut first_request_after = None;
    let deadline = requested + Duration::from_secs(60);
    while (running_after.is_none() || first_request_after.is_none()) && Instant::now() < deadline {
        if running_after.is_none() {
            let runs = p
                .runs()
                .list(&ListParams::default().labels("catalogsync.io/app=slack"))
                .await
                .unwrap();
            for run in runs.items {
                let pods = run_pods(&p, &run.name_any()).await;
                if pods
                    .iter()
                    .any(|pod| matches!(phase(pod), Some("Running" | "Succeeded")))
                {
                    running_after = Some(requested.elapsed());
                }
            }
        }
        if first_request_after.is_none() && scim_requests(&p, "slack").await > before {
            first_request_after = Some(requested.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let running_after = running_after.expect("the slack run's pod ran within 60 s");
    let first_request_after = first_request_after.expect("a SCIM request within 60 s");
    eprintln!(
        "node: request -> sync pod running {:.2}s, -> first SCIM request {:.2}s",
        running_after.as_secs_f64(),
        first_request_after.as_secs_f64()
    );

    // slack: Succeeded through a real Job pod, with the demo's exact counts.
    let slack_run = crate::e2e::assert_demo_slack_succeeded(&p, &scenario, "demo").await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &p.ns);
    let job = jobs.get(&slack_run).await.unwrap();
    let template = job.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        template.containers[0].image.as_deref(),
        Some(IMAGE),
        "the Job's image follows the controller's"
    );
    // The engine writes the outcome before its process exits: the pod follows.
    eventually(30, "the slack run's pod Succeeded on the node", || async {
        let pods = run_pods(&p, &slack_run).await;
        pods.iter()
            .any(|pod| {
                phase(pod) == Some("Succeeded")
                    && pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
                        == Some("catalogsync-node")
            })
            .then_some(())
    })
    .await;
    // The controller made the Jobs' ServiceAccount here; the Job could not start without.
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), &p.ns)
        .get("catalogsync-sync-job")
        .await
        .expect("the sync Jobs' ServiceAccount");
    assert_eq!(
        sa.labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("catalogsync")
    );

    // jira: over its delete limit; the pod's exit code ends the Job through the
    // podFailurePolicy, and the run says LimitExceeded.
    let jira_run = crate::e2e::assert_demo_jira_limit_exceeded(&p, &scenario, "demo").await;
    assert_eq!(run_pods(&p, &jira_run).await.len(), 1, "not retried");

    let controllers_mem = memory(node, SYSTEM_NS).await;
    for (pod, bytes) in &controllers_mem {
        eprintln!(
            "node: memory of controller pod {pod}: {:.1} MiB",
            mib(*bytes)
        );
    }
    assert_eq!(
        controllers_mem.len(),
        2,
        "the kubelet reports both controllers"
    );
}

/// A SyncRun of `app` that is Running, and its name.
async fn running_run(p: &Product, app: &str) -> SyncRun {
    eventually(90, "a Running run", || async {
        let lp = ListParams::default().labels(&format!("catalogsync.io/app={app}"));
        let runs = p.runs().list(&lp).await.ok()?.items;
        runs.into_iter()
            .find(|r| r.status.as_ref().and_then(|s| s.phase) == Some(RunPhase::Running))
    })
    .await
}

/// The demo's slack with `extra` more accounts in the app, so that a run lasts a while.
async fn long_run_product(client: &Client, prefix: &str, extra: usize) -> (Product, Scenario) {
    let mut scenario = Scenario::demo();
    scenario.apps.retain(|a| a.name == "slack");
    let ns = restricted_namespace(client, prefix).await;
    let p = Product::with_scim(client.clone(), ns, BRIDGE, &scenario, &["slack"]).await;
    p.scim
        .seed(
            "slack",
            json!({"generate": {"count": extra, "prefix": "guest", "domain": "guests.example"}}),
        )
        .await;
    p.apply_base(json!({})).await;
    p.apply(&p.example("catalogapp.yaml")).await;
    p.wait_ready("slack").await;
    (p, scenario)
}

/// Exactly one run and one Job for the one request.
async fn one_run_and_job(p: &Product) {
    let runs = p.runs().list(&ListParams::default()).await.unwrap().items;
    assert_eq!(
        runs.len(),
        1,
        "one run: {:?}",
        runs.iter().map(ResourceExt::name_any).collect::<Vec<_>>()
    );
    let jobs = Api::<Job>::namespaced(p.client.clone(), &p.ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(jobs.len(), 1, "one Job");
}

#[tokio::test]
async fn node_deleting_the_leader_mid_run_hands_over_without_a_second_run() {
    let node = node().await;
    let _turn = TURN.lock().await;
    let client = node.client().await;
    let (p, scenario) = long_run_product(&client, "node-leader", 20_000).await;
    p.request("slack", "one").await;
    let running = running_run(&p, "slack").await;

    // The sync pod's memory while it works, as the kubelet reports it (sampled each second).
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let ns = p.ns.clone();
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        while !*stopped.borrow() {
            let now = memory(node, &ns).await.into_iter().map(|(_, b)| b).max();
            peak = peak.max(now.unwrap_or(0));
            let _ = tokio::time::timeout(Duration::from_secs(1), stopped.changed()).await;
        }
        peak
    });

    let (_, leader) = controllers(&client).await;
    let leader = leader.expect("a leader");
    let deleted = Instant::now();
    Api::<Pod>::namespaced(client.clone(), SYSTEM_NS)
        .delete(&leader, &DeleteParams::default())
        .await
        .expect("delete the leader pod");
    let new_leader = eventually(30, "another replica leads", || async {
        let (pods, holder) = controllers(&client).await;
        let holder = holder?;
        (holder != leader && pods.iter().any(|p| p.name_any() == holder && ready(p)))
            .then_some(holder)
    })
    .await;
    eprintln!(
        "node: leader {leader} deleted; {new_leader} leads after {:.1}s",
        deleted.elapsed().as_secs_f64()
    );

    let a = p.outcome("slack", "one").await;
    let _ = stop.send(true);
    let peak = sampler.await.unwrap();
    eprintln!(
        "node: sync pod peak memory (20,000+ accounts, kubelet samples): {:.1} MiB",
        mib(peak)
    );
    let run = last_run(&a);
    assert_eq!(run.name, running.name_any(), "the same run");
    let phase = run.phase.expect("a phase");
    assert!(phase.is_finished(), "{phase:?}");
    if phase == RunPhase::Succeeded {
        let counts = run.counts.unwrap();
        let slack = scenario.app("slack");
        assert_eq!(
            counts.app_accounts as usize,
            slack.accounts().len() + 20_000
        );
        assert_eq!(counts.unmatched as usize, slack.unmatched + 20_000);
    } else {
        assert!(run.message.is_some_and(|m| !m.is_empty()), "a reason");
    }
    one_run_and_job(&p).await;
}

#[tokio::test]
async fn node_deleting_a_running_sync_pod_interrupts_the_run_with_true_counts() {
    let node = node().await;
    let _turn = TURN.lock().await;
    let client = node.client().await;
    let (p, _scenario) = long_run_product(&client, "node-podkill", 20_000).await;
    let records_before = p.members("slack-users-accounts").await;
    p.request("slack", "one").await;
    let running = running_run(&p, "slack").await;
    let pods = eventually(30, "the sync pod running", || async {
        let pods = run_pods(&p, &running.name_any()).await;
        pods.iter()
            .any(|pod| phase(pod) == Some("Running"))
            .then_some(pods)
    })
    .await;
    let pod = pods
        .iter()
        .find(|pod| phase(pod) == Some("Running"))
        .unwrap();
    let stage = p.runs().get(&running.name_any()).await.unwrap().status;
    let stage = stage.and_then(|s| s.stage);
    Api::<Pod>::namespaced(client.clone(), &p.ns)
        .delete(&pod.name_any(), &DeleteParams::default())
        .await
        .expect("delete the sync pod");

    // A person deleting the pod (or a drain) is no cancel: Failed, reason Interrupted.
    let a = p.outcome("slack", "one").await;
    let run = last_run(&a);
    let full = p.runs().get(&run.name).await.unwrap().status.unwrap();
    let reasons: Vec<&str> = full
        .conditions
        .iter()
        .filter(|c| c.status == "True")
        .map(|c| c.reason.as_str())
        .collect();
    eprintln!(
        "node: a sync pod deleted at stage {stage:?}: run {:?}, reasons {reasons:?}, message {:?}",
        run.phase, full.message
    );
    assert_eq!(run.phase, Some(RunPhase::Failed), "{:?}", full.message);
    let failed = full.conditions.iter().find(|c| c.type_ == "Failed");
    assert_eq!(
        failed.map(|c| (c.status.as_str(), c.reason.as_str())),
        Some(("True", "Interrupted"))
    );
    let message = full.message.clone().unwrap_or_default();
    assert!(message.starts_with("interrupted: "), "{message}");
    // Its exit code fails the Job through the podFailurePolicy: no retried pod applies.
    let jobs: Api<Job> = Api::namespaced(client.clone(), &p.ns);
    let why = eventually(60, "the Job Failed by its podFailurePolicy", || async {
        let job = jobs.get(&run.name).await.ok()?;
        let conditions = job.status?.conditions?;
        let failed = conditions
            .into_iter()
            .find(|c| c.type_ == "Failed" && c.status == "True")?;
        Some(failed.reason.unwrap_or_default())
    })
    .await;
    assert_eq!(why, "PodFailurePolicy");
    let retried: Vec<String> = run_pods(&p, &run.name)
        .await
        .iter()
        .map(ResourceExt::name_any)
        .filter(|name| *name != pod.name_any())
        .collect();
    assert!(retried.is_empty(), "not retried: {retried:?}");
    // True counts: the in-flight writes finished and were counted, so the record group
    // changed by exactly the records the run says it added and removed.
    let counts: Counts = full.counts.clone().unwrap_or_default();
    let records = p.members("slack-users-accounts").await as i64;
    assert_eq!(
        records,
        records_before as i64 + counts.linked - counts.deleted,
        "{counts:?}"
    );
    one_run_and_job(&p).await;
}

/// The deployed controller's `CATALOGSYNC_JOB_TTL`, set for one test and removed (the
/// default, 24 h) afterwards; also if the test fails, without waiting then.
struct JobTtl<'a> {
    node: &'a Node,
    restored: bool,
}

impl<'a> JobTtl<'a> {
    async fn set(node: &'a Node, ttl: &str) -> JobTtl<'a> {
        node.set_controller_env(&format!("CATALOGSYNC_JOB_TTL={ttl}"))
            .await
            .expect("set the Job TTL");
        JobTtl {
            node,
            restored: false,
        }
    }

    async fn restore(mut self) {
        self.restored = true;
        self.node
            .set_controller_env("CATALOGSYNC_JOB_TTL-")
            .await
            .expect("restore the Job TTL");
    }
}

impl Drop for JobTtl<'_> {
    fn drop(&mut self) {
        if !self.restored {
            let _ = std::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&self.node.kubeconfig)
                .args(["-n", SYSTEM_NS, "set", "env"])
                .arg(format!("deployment/{CONTROLLER}"))
                .arg("CATALOGSYNC_JOB_TTL-")
                .status();
        }
    }
}

/// The kube-controller-manager `hack/node.sh` started runs the TTL-after-finished
/// controller (on by default: `--controllers=*`), as its log says.
fn ttl_controller_started(node: &Node) -> bool {
    let log = node
        .kubeconfig
        .with_file_name("logs")
        .join("kube-controller-manager.log");
    let log = std::fs::read_to_string(log).unwrap_or_default();
    log.lines()
        .any(|l| l.contains("Started controller") && l.contains("ttl-after-finished"))
}

#[tokio::test]
async fn node_a_finished_job_goes_by_its_ttl_and_the_run_keeps_its_outcome() {
    let node = node().await;
    let _turn = TURN.lock().await;
    let client = node.client().await;
    assert!(
        ttl_controller_started(node),
        "kube-controller-manager runs ttl-after-finished"
    );
    let ttl = JobTtl::set(node, "3s").await;
    let mut scenario = Scenario::demo();
    scenario.apps.retain(|a| a.name == "slack");
    let p = product(&client, "node-ttl", &scenario, &["slack"]).await;
    p.request("slack", "ttl").await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &p.ns);
    let job = eventually(60, "the run's Job", || async {
        jobs.list(&ListParams::default()).await.ok()?.items.pop()
    })
    .await;
    let seconds = job.spec.and_then(|s| s.ttl_seconds_after_finished);
    assert_eq!(seconds, Some(3), "the controller's --job-ttl");
    let run_name = crate::e2e::assert_demo_slack_succeeded(&p, &scenario, "ttl").await;
    assert_eq!(job.metadata.name.as_ref(), Some(&run_name));
    let finished = p.runs().get(&run_name).await.unwrap();

    // Kubernetes' TTL-after-finished controller deletes the Job, and its pod with it.
    let ended = Instant::now();
    eventually(60, "the Job and its pod removed by the TTL", || async {
        let job = jobs.get_opt(&run_name).await.ok()?;
        (job.is_none() && run_pods(&p, &run_name).await.is_empty()).then_some(())
    })
    .await;
    eprintln!(
        "node: a finished Job (ttlSecondsAfterFinished 3) removed {:.1}s after its run ended",
        ended.elapsed().as_secs_f64()
    );

    // The run keeps its outcome: the controller neither recreates the Job nor touches the
    // run (a few reconciles' worth of time: the Job's deletion triggers one at once).
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            jobs.get_opt(&run_name).await.unwrap().is_none(),
            "no Job again"
        );
        let now = p.runs().get(&run_name).await.unwrap();
        assert_eq!(now.status, finished.status, "the run's outcome unchanged");
        assert_eq!(
            now.status.as_ref().and_then(|s| s.phase),
            Some(RunPhase::Succeeded)
        );
    }
    let a = p.apps().get("slack").await.unwrap();
    assert_eq!(last_run(&a).name, run_name, "still the app's last run");
    ttl.restore().await;
}
