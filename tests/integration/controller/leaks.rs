//! Nothing secret leaks: a story with distinctive credential values (a provisioning and
//! an import run, then a wrong token: 401s in the controller's checks and in a run), then
//! every place an operator looks is scanned for each value.

use std::time::Duration;

use catalogsync::api::{CatalogApp, IdentityDomain, SyncPolicy, SyncRun};
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use serde::Serialize;

use super::process::cli_process;
use super::{Env, JOB_IMAGE, app_cond, eventually, tf};
use crate::harness::control_plane;
use crate::scim_server::{ScimServer, TenantSpec};

/// A value no code path would make up.
fn distinctive(what: &str) -> String {
    format!("tok-{what}-{:016x}", rand::random::<u64>())
}

/// Runs `catalogsync sync --run ns/name` by hand (credentials from the labeled Secrets),
/// returning its exit status and its whole output.
async fn sync_by_hand(env: &Env, run: &str) -> (bool, String) {
    let target = format!("{}/{run}", env.ns);
    let out = cli_process(&["sync", "--run", &target])
        .env("KUBECONFIG", env.cp.kubeconfig_path())
        .env("RUST_LOG", "debug")
        .output()
        .await
        .expect("run catalogsync sync");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn hand_made_run(env: &Env, name: &str, direction: &str) {
    env.apply(&format!(
        "apiVersion: catalogsync.io/v1alpha1\nkind: SyncRun\nmetadata: {{name: {name}}}\nspec: {{appRef: {{name: slack}}, direction: {direction}, mode: Apply}}\n"
    ))
    .await;
}

/// Every object's status of the four kinds, as JSON.
async fn statuses(env: &Env) -> String {
    async fn all<K>(env: &Env) -> String
    where
        K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + Serialize
            + std::fmt::Debug,
    {
        let list = env.api::<K>().list(&ListParams::default()).await.unwrap();
        serde_json::to_string(&list.items).unwrap()
    }
    [
        all::<IdentityDomain>(env).await,
        all::<CatalogApp>(env).await,
        all::<SyncPolicy>(env).await,
        all::<SyncRun>(env).await,
    ]
    .join("\n")
}

#[tokio::test]
async fn no_credential_value_reaches_logs_events_statuses_or_metrics() {
    let (iam_token, app_token, wrong_token) =
        (distinctive("iam"), distinctive("app"), distinctive("wrong"));
    let tenants = vec![
        TenantSpec {
            token: iam_token.clone(),
            ..TenantSpec::new("iam")
        },
        TenantSpec {
            token: app_token.clone(),
            ..TenantSpec::new("app")
        },
    ];
    let cp = control_plane().await;
    let env = Env {
        cp,
        ns: cp.new_namespace("leaks").await,
        client: cp.admin_client(),
        scim: tokio::task::spawn_blocking(|| ScimServer::start_with(tenants, None))
            .await
            .unwrap(),
    };
    env.scim.seed_users("iam", "user", 3).await;
    env.scim.seed_users("app", "user", 3).await;

    // The controller as a process, at debug level, its output and metrics kept.
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut controller = cli_process(&[
        "controller",
        "--namespace",
        &env.ns,
        "--metrics-addr",
        &format!("127.0.0.1:{port}"),
        "--job-image",
        JOB_IMAGE,
    ])
    .env("KUBECONFIG", env.cp.kubeconfig_path())
    .env("RUST_LOG", "debug")
    .stdout(std::fs::File::create(dir.path().join("out")).unwrap())
    .stderr(std::fs::File::create(dir.path().join("err")).unwrap())
    .kill_on_drop(true)
    .spawn()
    .expect("start the controller");

    // The story: Ready, a provisioning run and an import run, each executed by hand.
    env.policy("").await;
    env.app(true).await;
    env.wait_ready().await;
    let mut engine_logs = String::new();
    for (run, direction) in [("provision-1", "Provision"), ("import-1", "Import")] {
        hand_made_run(&env, run, direction).await;
        let (ok, log) = sync_by_hand(&env, run).await;
        assert!(ok, "{run}:\n{log}");
        engine_logs.push_str(&log);
    }

    // A wrong app token: the controller's check and a run meet 401s.
    env.secret("app-token", &wrong_token).await;
    env.wait_app("Unauthorized", |a| {
        app_cond(a, "ProvisioningEnabled") == tf("False", "Unauthorized")
    })
    .await;
    hand_made_run(&env, "provision-2", "Provision").await;
    let (ok, log) = sync_by_hand(&env, "provision-2").await;
    assert!(!ok, "a run with a wrong token fails:\n{log}");
    assert!(log.contains("401"), "the failure is logged:\n{log}");
    engine_logs.push_str(&log);

    let metrics = eventually(30, "metrics", || async {
        let r = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .ok()?;
        r.text().await.ok()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await; // the controller's last lines
    controller.start_kill().unwrap();
    let _ = controller.wait().await;
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
    let controller_logs = format!("{}{}", read("out"), read("err"));
    let events = serde_json::to_string(
        &env.api::<Event>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items,
    )
    .unwrap();
    let statuses = statuses(&env).await;

    // The haystacks are real: they hold the story (so a miss is not an empty scan).
    assert!(
        controller_logs.contains("401"),
        "the controller logged its checks:\n{controller_logs}"
    );
    assert!(engine_logs.contains("run finished"), "{engine_logs}");
    assert!(events.contains("ConnectivityLost"), "{events}");
    assert!(statuses.contains("provision-2") && statuses.contains("401"));
    assert!(metrics.contains("catalogsync_"), "{metrics}");
    for (place, text) in [
        ("controller logs", &controller_logs),
        ("engine logs", &engine_logs),
        ("events", &events),
        ("statuses", &statuses),
        ("metrics", &metrics),
    ] {
        for secret in [&iam_token, &app_token, &wrong_token] {
            assert!(
                !text.contains(secret.as_str()),
                "{secret} leaked into the {place}"
            );
        }
    }
}
