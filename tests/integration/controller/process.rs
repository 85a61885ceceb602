//! The controller as a whole rather than one kind: a restart mid-run, leader election,
//! no writes in a steady state, and the `catalogsync controller` command with the RBAC
//! of `deploy/`.

use std::time::{Duration, Instant};

use catalogsync::api::{CatalogApp, IdentityDomain, RunPhase, SyncPolicy, SyncRun};
use catalogsync::controller::leader::LeaseConfig;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use super::{Env, JOB_IMAGE, RunningController, app_cond, eventually, phase, tf};
use crate::harness::ControlPlane;

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

/// Set in a child process of this test binary to make it run the command line.
const CLI_ARGS_ENV: &str = "CATALOGSYNC_TEST_CLI_ARGS";

/// `catalogsync <args>` as a child process: this test binary re-executed through
/// /proc/self/exe (which stays this very build even when a checkout sharing
/// CARGO_TARGET_DIR rebuilds the files), running only [`cli_entry`].
pub(super) fn cli_process(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("/proc/self/exe");
    cmd.args([
        "--exact",
        "controller::process::cli_entry",
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
    let mut cfg: serde_yaml_ng::Value = serde_yaml_ng::from_str(&admin).unwrap();
    cfg["users"][0]["user"]["token"] = serde_yaml_ng::Value::String(token.into());
    std::fs::write(path, serde_yaml_ng::to_string(&cfg).unwrap()).unwrap();
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
