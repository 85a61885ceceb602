//! kstatus and Flux on real objects: every kind driven through the real controller and
//! engine, then read by kstatus (sigs.k8s.io/cli-utils) and by Flux's own CEL evaluator
//! with the healthCheckExprs of `deploy/flux/catalogsync.yaml` (the helper of
//! `hack/kstatus.sh`).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use catalogsync::api::{CatalogApp, IdentityDomain, RunPhase, SyncPolicy, SyncRun};
use serde_json::Value;

use super::{Env, RunningController, eventually, phase};
use crate::harness::repo_path;

/// The helper, built once (cached across runs by `hack/kstatus.sh`).
fn helper() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = Command::new(repo_path("hack/kstatus.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run hack/kstatus.sh");
        assert!(out.status.success(), "hack/kstatus.sh failed");
        let stdout = String::from_utf8(out.stdout).unwrap();
        stdout.lines().last().expect("a path").to_string()
    })
}

/// "Kind/name" → (kstatus's status, Flux's status) of every catalogsync object in the
/// namespace.
async fn statuses(env: &Env) -> BTreeMap<String, (String, String)> {
    let mut objects = listed::<IdentityDomain>(env).await;
    objects.extend(listed::<CatalogApp>(env).await);
    objects.extend(listed::<SyncPolicy>(env).await);
    objects.extend(listed::<SyncRun>(env).await);
    let input = serde_json::to_vec(&objects).unwrap();
    let flux = repo_path("deploy/flux/catalogsync.yaml");
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(helper())
            .arg(flux)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the kstatus helper");
        child.stdin.take().unwrap().write_all(&input).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "the kstatus helper failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (
                format!("{}/{}", s("kind"), s("name")),
                (s("kstatus"), s("flux")),
            )
        })
        .collect()
}

/// The objects of kind `K` in the namespace, as the API returns them (managedFields
/// left out: they only make the input long).
async fn listed<K>(env: &Env) -> Vec<Value>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let items = env
        .api::<K>()
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    items
        .iter()
        .map(|i| {
            let mut o = serde_json::to_value(i).unwrap();
            o["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("managedFields");
            o
        })
        .collect()
}

fn expect(got: &BTreeMap<String, (String, String)>, object: &str, kstatus: &str, flux: &str) {
    let (k, f) = got
        .get(object)
        .unwrap_or_else(|| panic!("{object} missing: {got:?}"));
    assert_eq!(
        (k.as_str(), f.as_str()),
        (kstatus, flux),
        "{object}: {got:?}"
    );
}

/// The description of `status.conditions` in the CRD of `plural` (`crds/`).
fn documented_conditions(plural: &str) -> String {
    let path = repo_path(format!("crds/{plural}.catalogsync.io.yaml"));
    let crd: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    schema["properties"]["status"]["properties"]["conditions"]["description"]
        .as_str()
        .expect("a description of status.conditions")
        .to_string()
}

/// Every condition written on the namespace's objects is one its CRD documents.
async fn conditions_are_documented(env: &Env) {
    for (plural, objects) in [
        ("identitydomains", listed::<IdentityDomain>(env).await),
        ("catalogapps", listed::<CatalogApp>(env).await),
        ("syncpolicies", listed::<SyncPolicy>(env).await),
        ("syncruns", listed::<SyncRun>(env).await),
    ] {
        let documented = documented_conditions(plural);
        let words: Vec<&str> = documented.split(|c: char| !c.is_alphanumeric()).collect();
        for object in &objects {
            let conditions = object["status"]["conditions"].as_array().cloned();
            for condition in conditions.unwrap_or_default() {
                let type_ = condition["type"].as_str().unwrap();
                assert!(
                    words.contains(&type_),
                    "{plural}/{}: condition {type_} is not in the CRD's \"{documented}\"",
                    object["metadata"]["name"]
                );
            }
        }
    }
}

const RUN: &str = "apiVersion: catalogsync.io/v1alpha1\nkind: SyncRun\n";

#[tokio::test]
async fn kstatus_and_flux_read_every_kind_as_the_crds_document() {
    let env = Env::new("kstatus").await;
    env.scim.seed_users("app", "user", 3).await;
    env.scim.seed_users("iam", "user", 3).await;
    env.policy("").await;
    env.apply("apiVersion: catalogsync.io/v1alpha1\nkind: SyncPolicy\nmetadata: {name: broken}\nspec: {schedule: \"not a cron\"}\n").await;
    env.app(true).await;
    env.apply(&format!(
        "{RUN}metadata: {{name: first}}\nspec: {{appRef: {{name: slack}}}}\n"
    ))
    .await;
    env.apply(&format!(
        "{RUN}metadata: {{name: orphan}}\nspec: {{appRef: {{name: nowhere}}}}\n"
    ))
    .await;

    // No controller yet: no status. kstatus calls that Current (the window the docs
    // name); Flux's expressions cannot read a missing status and keep it Unknown.
    let got = statuses(&env).await;
    for o in [
        "SyncRun/first",
        "SyncPolicy/default",
        "CatalogApp/slack",
        "IdentityDomain/corp",
    ] {
        expect(&got, o, "Current", "Unknown");
    }

    // The controller, no Job runner: `first` stays Pending with its Job never running.
    let ctl = RunningController::start(env.client.clone(), &env.ns, Duration::from_secs(300), None);
    env.wait_ready().await;
    let runs = env.api::<SyncRun>();
    eventually(
        30,
        "orphan fails, first is Pending with its Job",
        || async {
            let first = runs.get("first").await.ok()?;
            let orphan = runs.get("orphan").await.ok()?;
            let recorded = first.status.as_ref()?.job_name.is_some();
            (recorded && phase(&orphan) == Some(RunPhase::Failed)).then_some(())
        },
    )
    .await;
    let got = statuses(&env).await;
    expect(&got, "SyncRun/first", "InProgress", "InProgress");
    expect(&got, "SyncRun/orphan", "Failed", "Failed");
    expect(&got, "SyncPolicy/default", "Current", "Current");
    expect(&got, "SyncPolicy/broken", "Failed", "Failed");
    expect(&got, "CatalogApp/slack", "Current", "Current");
    expect(&got, "IdentityDomain/corp", "Current", "Current");

    // The engine runs it: Succeeded is Current.
    let (stop, runner) = env.start_runner();
    eventually(60, "first succeeds", || async {
        let first = runs.get("first").await.ok()?;
        (phase(&first) == Some(RunPhase::Succeeded)).then_some(())
    })
    .await;
    let got = statuses(&env).await;
    expect(&got, "SyncRun/first", "Current", "Current");
    expect(&got, "SyncRun/orphan", "Failed", "Failed");
    conditions_are_documented(&env).await;
    let _ = stop.send(true);
    runner.await.unwrap().unwrap();
    ctl.shutdown().await;
}
