//! `catalogsync dev up`: the whole product on this machine, in one process tree.
//!
//! Starts the local control plane (CRDs installed), one SCIM server process with
//! three tenants (`iam`, the identity domain; `slack` and `jira`, the apps) seeded
//! with [`super::seed::Scenario::demo`], then the controller and the dev job runner
//! as child processes of this one. Writes into the state directory a kubeconfig,
//! an `env` file (shell syntax: URLs, tokens, KUBECONFIG) and one log per process,
//! prints `ready`, and runs until SIGINT/SIGTERM or until a child dies; then stops
//! every child, newest first. Children die with this process even if it is killed
//! (`PR_SET_PDEATHSIG`).

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::{Value, json};

use super::control_plane::{self, ControlPlane, log_tail, spawn_child, write_private};
use super::seed::Scenario;

/// Settings of `dev up`.
#[derive(Clone, Debug)]
pub struct UpConfig {
    /// Where the kubeconfig, the env file, the logs and etcd's data go (emptied first).
    pub state_dir: PathBuf,
    /// The repository (for `hack/envtest.sh` and `hack/scim/serve.py`).
    pub repo: PathBuf,
    /// The python of the SCIM servers' virtualenv (`hack/scim/setup.sh` prints it).
    pub python: PathBuf,
    /// The `catalogsync` binary run as controller, job runner and sync Jobs.
    pub binary: PathBuf,
    /// The admin kubeconfig of the local node (`hack/node.sh up`), where `deploy/` runs
    /// the controller and the Jobs: then only the SCIM servers start, on the node's bridge
    /// address so that pods reach them.
    pub node: Option<PathBuf>,
}

/// The local node's bridge address (`hack/node.sh`).
pub const NODE_BRIDGE: &str = "10.244.0.1";

/// The SCIM tenants: the identity domain, then the apps.
pub const DOMAIN_TENANT: &str = "iam";

pub fn token(tenant: &str) -> String {
    format!("demo-token-{tenant}")
}

/// Prints a step heading, with the time since `start`.
fn step(start: Instant, what: &str) {
    println!("[{:>5.1}s] {what}", start.elapsed().as_secs_f64());
}

pub async fn run(cfg: UpConfig, mut shutdown: tokio::sync::watch::Receiver<bool>) -> Result<()> {
    let start = Instant::now();
    let dir = &cfg.state_dir;
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    let result = async {
        if let Some(kubeconfig) = &cfg.node {
            let (root, tenants) = start_seeded_scim(&cfg, &dir, start, NODE_BRIDGE).await?;
            write_env(&dir, kubeconfig, None, &root, &tenants)?;
            step(
                start,
                &format!("ready; environment in {}", dir.join("env").display()),
            );
            crate::controller::stopped(&mut shutdown).await;
            return Ok(());
        }
        step(
            start,
            "starting the local control plane (etcd + kube-apiserver)",
        );
        let assets = control_plane::find_assets(&cfg.repo.join("hack/envtest.sh"))?;
        let crds = crate::api::crdgen::all();
        let cp = ControlPlane::start(&assets, &dir.join("control-plane"), &crds).await?;
        step(
            start,
            &format!("control plane ready at {}; CRDs installed", cp.server()),
        );
        let (root, tenants) = start_seeded_scim(&cfg, &dir, start, "127.0.0.1").await?;
        step(start, "starting the controller and the dev job runner");
        let kubeconfig = cp.kubeconfig_path().to_path_buf();
        let mut children =
            start_processes(&cfg.binary, &dir, &kubeconfig, &Scope::default()).await?;
        write_env(&dir, &kubeconfig, Some(&children.metrics), &root, &tenants)?;
        step(
            start,
            &format!("ready; environment in {}", dir.join("env").display()),
        );
        children.watch(&dir, &mut shutdown).await
    }
    .await;
    println!("stopping every process started by dev up");
    control_plane::terminate_children();
    result
}

/// Starts the SCIM servers, seeds them with the demo scenario and says what they hold;
/// returns their root URL and the tenants (the identity domain first).
async fn start_seeded_scim(
    cfg: &UpConfig,
    dir: &Path,
    start: Instant,
    host: &str,
) -> Result<(String, Vec<String>)> {
    let scenario = Scenario::demo();
    let mut tenants = vec![DOMAIN_TENANT.to_string()];
    tenants.extend(scenario.apps.iter().map(|a| a.name.clone()));
    step(
        start,
        &format!("starting the SCIM servers: {}", tenants.join(", ")),
    );
    let port = start_scim(cfg, dir, &tenants, host).await?;
    let root = format!("http://{host}:{port}");
    seed(&root, "default", &scenario).await?;
    let apps: Vec<String> = scenario
        .apps
        .iter()
        .map(|a| format!("{} accounts in {}", a.accounts().len(), a.name))
        .collect();
    let users = scenario.domain_user_count();
    step(
        start,
        &format!(
            "seeded: {users} users in the identity domain; {}",
            apps.join(", ")
        ),
    );
    for a in &scenario.apps {
        println!(
            "         {}: {} match by userName, {} by e-mail only, {} disputed, {} unmatched; \
             {} recorded in {}, {} of them deleted from the app",
            a.name,
            a.by_user_name,
            a.by_email,
            a.disputed,
            a.unmatched,
            a.recorded + a.deleted,
            a.grant_group,
            a.deleted
        );
    }
    Ok((root, tenants))
}

/// The controller and the dev job runner, as children of this process.
pub struct Children {
    controller: Child,
    runner: Child,
    /// The controller's metrics address, `http://127.0.0.1:PORT`.
    pub metrics: String,
    /// Stopped and reaped: their pids may belong to others now.
    stopped: bool,
    /// How they were started: a restart of the controller starts it the same way.
    start: Box<Start>,
}

/// How the children were started.
struct Start {
    binary: PathBuf,
    dir: PathBuf,
    kubeconfig: PathBuf,
    scope: Scope,
}

/// What the controller and the job runner serve, and how much they log.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Only this namespace (`dev up`: every namespace).
    pub namespace: Option<String>,
    /// Their `RUST_LOG` (default: inherited).
    pub log: Option<String>,
}

/// Starts the controller and the dev job runner (`binary` is both, and the Jobs' image)
/// with their logs in `dir` (`controller.log`, `job-runner.log`: the Jobs' output goes
/// there too) and waits until the controller is ready. The tests start the demo's
/// processes through this too.
pub async fn start_processes(
    binary: &Path,
    dir: &Path,
    kubeconfig: &Path,
    scope: &Scope,
) -> Result<Children> {
    let (mut controller, metrics) = spawn_controller(binary, dir, kubeconfig, scope)?;
    let env = child_env(kubeconfig, scope);
    let mut args = vec![
        "dev-job-runner".into(),
        format!("--binary={}", binary.display()),
        format!("--kubeconfig={}", kubeconfig.display()),
    ];
    if let Some(ns) = &scope.namespace {
        args.push(format!("--namespace={ns}"));
    }
    let runner = spawn_child("job-runner", binary, &args, &env, dir)?;
    let log = dir.join("controller.log");
    wait_ready(&format!("{metrics}/readyz"), &mut controller, &log).await?;
    Ok(Children {
        controller,
        runner,
        metrics,
        stopped: false,
        start: Box::new(Start {
            binary: binary.to_path_buf(),
            dir: dir.to_path_buf(),
            kubeconfig: kubeconfig.to_path_buf(),
            scope: scope.clone(),
        }),
    })
}

/// The children's environment: KUBECONFIG, and `RUST_LOG` when the scope sets it.
fn child_env<'a>(kubeconfig: &'a Path, scope: &'a Scope) -> Vec<(&'static str, &'a Path)> {
    let mut env = vec![("KUBECONFIG", kubeconfig)];
    if let Some(level) = &scope.log {
        env.push(("RUST_LOG", Path::new(level)));
    }
    env
}

/// Spawns the controller on a free metrics port; returns it and its metrics URL.
fn spawn_controller(
    binary: &Path,
    dir: &Path,
    kubeconfig: &Path,
    scope: &Scope,
) -> Result<(Child, String)> {
    let [metrics_port] = control_plane::free_ports()?;
    let env = child_env(kubeconfig, scope);
    let mut args = vec![
        "controller".into(),
        format!("--metrics-addr=127.0.0.1:{metrics_port}"),
        "--job-image=catalogsync:dev".into(),
        "--recheck-seconds=60".into(),
    ];
    if let Some(ns) = &scope.namespace {
        args.push(format!("--namespace={ns}"));
    }
    let controller = spawn_child("controller", binary, &args, &env, dir)?;
    Ok((controller, format!("http://127.0.0.1:{metrics_port}")))
}

impl Children {
    /// Restarts the controller alone (SIGTERM, then SIGKILL after 5 s; a new process, on a
    /// new metrics port) and waits until the new one is ready; the job runner and the
    /// Jobs' processes keep running, as a Deployment's rollout leaves the Jobs' pods.
    pub async fn restart_controller(&mut self) -> Result<()> {
        if self.stopped {
            bail!("the controller and the job runner were stopped");
        }
        control_plane::stop_child(&self.controller);
        let s = &self.start;
        let (controller, metrics) = spawn_controller(&s.binary, &s.dir, &s.kubeconfig, &s.scope)?;
        self.controller = controller;
        self.metrics = metrics;
        let log = self.start.dir.join("controller.log");
        wait_ready(
            &format!("{}/readyz", self.metrics),
            &mut self.controller,
            &log,
        )
        .await
    }

    /// Stops both (SIGTERM, then SIGKILL after 5 s), the job runner first; once.
    pub fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        control_plane::stop_child(&self.runner);
        control_plane::stop_child(&self.controller);
    }

    /// Runs until asked to stop, or until a process we depend on dies.
    async fn watch(
        &mut self,
        dir: &Path,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<()> {
        loop {
            for (name, child) in [
                ("controller", &mut self.controller),
                ("job-runner", &mut self.runner),
            ] {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "the {name} exited with {status}; end of its log:\n{}",
                        log_tail(&dir.join(format!("{name}.log")))
                    );
                }
            }
            tokio::select! {
                _ = crate::controller::stopped(shutdown) => return Ok(()),
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}

/// Writes the `env` file: KUBECONFIG, the metrics URL (when the controller runs here),
/// the state directory and each tenant's SCIM URL and token, in shell syntax.
fn write_env(
    dir: &Path,
    kubeconfig: &Path,
    metrics: Option<&str>,
    root: &str,
    tenants: &[String],
) -> Result<()> {
    let mut vars = vec![
        ("KUBECONFIG".to_string(), kubeconfig.display().to_string()),
        (
            "CATALOGSYNC_STATE_DIR".to_string(),
            dir.display().to_string(),
        ),
    ];
    if let Some(metrics) = metrics {
        vars.push((
            "CATALOGSYNC_METRICS".to_string(),
            format!("{metrics}/metrics"),
        ));
    }
    for t in tenants {
        let key = t.to_uppercase();
        vars.push((format!("{key}_URL"), format!("{root}/{t}/scim/v2")));
        vars.push((format!("{key}_TOKEN"), token(t)));
    }
    let env_text: String = vars
        .iter()
        .map(|(k, v)| format!("export {k}='{v}'\n"))
        .collect();
    // Written whole under a temporary name: a reader never sees half a file.
    write_private(&dir.join("env.tmp"), env_text.as_bytes())?;
    std::fs::rename(dir.join("env.tmp"), dir.join("env"))?;
    Ok(())
}

/// Starts `serve.py` on `host` with one tenant per name and returns its port.
async fn start_scim(cfg: &UpConfig, dir: &Path, tenants: &[String], host: &str) -> Result<u16> {
    let auth: serde_json::Map<String, Value> = tenants
        .iter()
        .map(|t| (t.clone(), json!(token(t))))
        .collect();
    let auth_file = dir.join("scim-auth.json");
    write_private(&auth_file, Value::Object(auth).to_string().as_bytes())?;
    let mut args = vec![
        cfg.repo.join("hack/scim/serve.py").display().to_string(),
        format!("--auth-file={}", auth_file.display()),
        "--port=0".into(),
        format!("--host={host}"),
    ];
    args.extend(tenants.iter().cloned());
    let mut child: Child = spawn_child("scim", &cfg.python, &args, &[], dir)?;
    let log = dir.join("scim.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(port) = text
            .lines()
            .find_map(|l| l.strip_prefix("SCIM_READY port="))
            .and_then(|p| p.trim().parse().ok())
        {
            return Ok(port);
        }
        if let Some(status) = child.try_wait()? {
            bail!("the SCIM server exited with {status}:\n{}", log_tail(&log));
        }
        ensure!(
            Instant::now() < deadline,
            "the SCIM server did not start in 60s:\n{}",
            log_tail(&log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn admin_seed(
    http: &reqwest::Client,
    root: &str,
    tenant: &str,
    body: Value,
) -> Result<Value> {
    let resp = http
        .post(format!("{root}/_admin/{tenant}/seed"))
        .bearer_auth(token(tenant))
        .json(&body)
        .send()
        .await
        .with_context(|| format!("seeding {tenant}"))?;
    let status = resp.status();
    let v: Value = resp.json().await?;
    ensure!(status.is_success(), "seeding {tenant}: {status} {v}");
    Ok(v)
}

/// Loads the scenario into the tenants: the domain's users, each app's grant and record
/// groups as catalogsync owns them for apps in `namespace` (their members are the domain's
/// ids), the apps' accounts.
pub async fn seed(root: &str, namespace: &str, scenario: &Scenario) -> Result<()> {
    let http = reqwest::Client::new();
    let v = admin_seed(
        &http,
        root,
        DOMAIN_TENANT,
        json!({"Users": scenario.domain_users(), "returnIds": true}),
    )
    .await?;
    let ids: Vec<String> = serde_json::from_value(v["ids"].clone())?;
    let groups: Vec<Value> = scenario
        .apps
        .iter()
        .flat_map(|a| a.groups(namespace, &ids))
        .collect();
    admin_seed(&http, root, DOMAIN_TENANT, json!({"Groups": groups})).await?;
    for app in &scenario.apps {
        admin_seed(&http, root, &app.name, json!({"Users": app.accounts()})).await?;
    }
    Ok(())
}

async fn wait_ready(url: &str, child: &mut Child, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if reqwest::get(url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("the controller exited with {status}:\n{}", log_tail(log));
        }
        ensure!(
            Instant::now() < deadline,
            "the controller was not ready in 60s:\n{}",
            log_tail(log)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
