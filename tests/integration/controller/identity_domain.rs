//! IdentityDomain: its Ready condition through missing and wrong credentials and an
//! unreachable endpoint, and its recovery without a restart.

use catalogsync::api::{IdentityDomain, RunPhase, SyncRun};
use catalogsync::cluster::conditions::find;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::{Env, eventually};

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

/// A Secret is used as credentials only when its owner labeled it: unlabeled, the domain
/// says which label to add and no Job is built from it; labeled, the domain connects
/// through the label-selected Secret watch, without a restart.
#[tokio::test]
async fn only_secrets_labeled_as_credentials_are_used() {
    let (env, _ctl) = Env::with_controller("ctl-optin").await;
    let domains = env.api::<IdentityDomain>();
    let ready = |reason: &'static str| {
        let domains = domains.clone();
        move || {
            let domains = domains.clone();
            async move {
                let d = domains.get("corp").await.ok()?;
                let c = find(&d.status?.conditions, "Ready")?.clone();
                (c.reason == reason).then_some(c)
            }
        }
    };
    env.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: iam-token}}\nstringData: {{token: {}}}\n",
        env.scim.token("iam")
    ))
    .await;
    env.domain(&env.scim.base_url("iam")).await;
    let c = eventually(
        30,
        "Ready=False SecretNotAllowed",
        ready("SecretNotAllowed"),
    )
    .await;
    assert_eq!(c.status, "False");
    assert!(
        c.message.contains("iam-token")
            && c.message.contains("catalogsync.io/credentials")
            && c.message.contains("true"),
        "{}",
        c.message
    );

    // The owner opts in: the label alone is enough.
    env.api::<Secret>()
        .patch(
            "iam-token",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"catalogsync.io/credentials": "true"}}})),
        )
        .await
        .unwrap();
    eventually(30, "Ready=True Connected", ready("Connected")).await;
}

/// The controller refuses to build a Job that would carry an unlabeled Secret: the run
/// fails with `SecretNotAllowed`, naming the Secret and the label, and no Job exists.
#[tokio::test]
async fn no_job_carries_an_unlabeled_secret() {
    let (env, _ctl) = Env::with_controller("ctl-optin-job").await;
    env.policy("").await;
    env.app(false).await;
    env.wait_ready().await;
    env.api::<Secret>()
        .patch(
            "app-token",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"catalogsync.io/credentials": null}}})),
        )
        .await
        .unwrap();
    env.apply("apiVersion: catalogsync.io/v1alpha1\nkind: SyncRun\nmetadata: {name: by-hand}\nspec: {appRef: {name: slack}, direction: Provision}\n")
        .await;
    let runs = env.api::<SyncRun>();
    let run = eventually(30, "the run refused", || async {
        let r = runs.get("by-hand").await.ok()?;
        let s = r.status.clone()?;
        (s.phase == Some(RunPhase::Failed)).then_some(s)
    })
    .await;
    let message = run.message.unwrap_or_default();
    assert!(
        message.contains("app-token") && message.contains("catalogsync.io/credentials"),
        "{message}"
    );
    assert!(
        run.conditions
            .iter()
            .any(|c| c.reason == "SecretNotAllowed"),
        "{:?}",
        run.conditions
    );
    assert!(env.api::<Job>().get_opt("by-hand").await.unwrap().is_none());
}
