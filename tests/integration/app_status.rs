//! What users and GitOps tools see of catalogsync, with the real controller: a SyncRun a
//! person created is never pruned by the history limits; `kubectl get` shows Ready, the
//! Ready message and the SyncRun columns; an object not Ready from the start gets a
//! Warning; the Deployment logs JSON.

use catalogsync::api::RunPhase;
use kube::ResourceExt;
use serde_json::json;

use crate::controller::{Env, eventually, phase, requested_echo};
use crate::harness::{parse_yaml, repo_path};

/// A run committed to Git: no mark of the controller, trigger Manual.
const USER_RUN: &str = r#"
apiVersion: catalogsync.io/v1alpha1
kind: SyncRun
metadata: {name: mine}
spec: {appRef: {name: slack}, direction: Import, mode: Plan}
"#;

/// Requests a run, lets it end `Succeeded` as its Job would, and waits until the app
/// has seen it end (so the next request is not held back by `concurrencyPolicy: Forbid`).
async fn requested_run_succeeds(env: &Env, token: &str, ended_at: &str) -> String {
    env.request_run(token).await;
    let run = eventually(30, "the requested run", || async {
        let a = env.get_app().await;
        if requested_echo(&a) != Some(token) {
            return None;
        }
        let runs = env.runs().await;
        runs.into_iter()
            .find(|r| !phase(r).is_some_and(RunPhase::is_finished))
    })
    .await;
    let name = run.name_any();
    env.job_writes(
        &name,
        json!({"phase": "Succeeded", "completionTime": ended_at}),
    )
    .await;
    env.wait_app("the run ended", |a| {
        let st = a.status.clone().unwrap_or_default();
        st.active_run.is_none() && st.last_import.is_some_and(|r| r.name == name)
    })
    .await;
    name
}

/// `kubectl get KIND -o wide` in the test's namespace: the table as users see it.
async fn table(env: &Env, kind: &str) -> String {
    let out = env
        .cp
        .kubectl(["get", kind, "-n", &env.ns, "-o", "wide"])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The cells of the row named `name` under the header's column `column`.
fn cell<'a>(table: &'a str, name: &str, column: &str) -> &'a str {
    let mut lines = table.lines();
    let header = lines.next().expect("a header");
    let start = header
        .find(column)
        .unwrap_or_else(|| panic!("no column {column}:\n{table}"));
    let row = lines
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name}:\n{table}"));
    row.get(start..)
        .unwrap_or("")
        .split_whitespace()
        .next()
        .unwrap_or("")
}

#[tokio::test]
async fn a_user_run_survives_history_pruning_and_kubectl_shows_the_columns() {
    let (env, _ctl) = Env::with_controller("app-status").await;
    env.policy("successfulRunsHistoryLimit: 1, failedRunsHistoryLimit: 1")
        .await;
    env.app(true).await;
    env.wait_ready().await;

    // A person's Plan run, the oldest of all, ends first.
    env.apply(USER_RUN).await;
    eventually(30, "the controller took the user's run", || async {
        let r = env
            .runs()
            .await
            .into_iter()
            .find(|r| r.name_any() == "mine")?;
        r.status?.job_name.map(|_| ())
    })
    .await;
    env.job_writes(
        "mine",
        json!({"phase": "Succeeded", "completionTime": "2026-01-01T00:00:00Z",
               "counts": {"linked": 7}}),
    )
    .await;
    env.wait_app("the user's run ended", |a| {
        a.status
            .as_ref()
            .and_then(|s| s.last_run.as_ref())
            .is_some_and(|r| r.name == "mine")
    })
    .await;

    // Three controller runs: the history keeps one of them, and the user's run.
    let mut last = String::new();
    for (i, token) in ["a", "b", "c"].iter().enumerate() {
        last = requested_run_succeeds(&env, token, &format!("2026-01-01T00:00:0{}Z", i + 1)).await;
    }
    let mut names = eventually(30, "pruned to the limit", || async {
        let names: Vec<String> = env.runs().await.iter().map(|r| r.name_any()).collect();
        (names.len() == 2).then_some(names)
    })
    .await;
    names.sort();
    let mut want = vec!["mine".to_string(), last.clone()];
    want.sort();
    assert_eq!(
        names, want,
        "the user's run is kept, the controller's pruned"
    );
    let st = env.get_app().await.status.unwrap();
    assert_eq!(st.last_import.unwrap().name, last);

    // kubectl: Ready everywhere, the Ready message like Flux, the run's mode and linked.
    let runs = table(&env, "syncruns").await;
    assert_eq!(cell(&runs, "mine", "MODE"), "Plan", "{runs}");
    assert_eq!(cell(&runs, "mine", "LINKED"), "7", "{runs}");
    assert_eq!(cell(&runs, "mine", "PHASE"), "Succeeded", "{runs}");
    assert!(runs.lines().next().unwrap().contains("READY"), "{runs}");
    let apps = table(&env, "catalogapps").await;
    assert_eq!(cell(&apps, "slack", "READY"), "True", "{apps}");
    assert_eq!(cell(&apps, "slack", "LAST IMPORT"), "Succeeded", "{apps}");
    let slack = apps.lines().find(|l| l.starts_with("slack")).unwrap();
    assert!(apps.lines().next().unwrap().contains("STATUS"), "{apps}");
    assert!(slack.contains("the app is reconciled"), "{apps}");
    for kind in ["identitydomains", "syncpolicies"] {
        let t = table(&env, kind).await;
        let name = if kind == "syncpolicies" {
            "default"
        } else {
            "corp"
        };
        assert_eq!(cell(&t, name, "READY"), "True", "{t}");
        assert!(t.lines().next().unwrap().contains("STATUS"), "{t}");
    }
}

#[tokio::test]
async fn a_policy_invalid_from_the_start_gets_a_warning() {
    let (env, _ctl) = Env::with_controller("app-status-event").await;
    env.policy("schedule: \"every tuesday\"").await;
    eventually(30, "a NotReady event", || async {
        env.event_reasons().await.contains("NotReady").then_some(())
    })
    .await;
}

#[test]
fn the_deployment_logs_json() {
    let yaml = std::fs::read_to_string(repo_path("deploy/deployment.yaml")).unwrap();
    let objects = parse_yaml(&yaml).expect("deploy/deployment.yaml");
    let deployment = serde_json::to_value(&objects[0]).unwrap();
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    let format = env
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "CATALOGSYNC_LOG_FORMAT");
    assert_eq!(format.map(|e| &e["value"]), Some(&json!("json")));
}
