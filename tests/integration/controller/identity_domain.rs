//! IdentityDomain: its Ready condition through missing and wrong credentials and an
//! unreachable endpoint, and its recovery without a restart.

use catalogsync::api::IdentityDomain;
use catalogsync::cluster::conditions::find;
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
