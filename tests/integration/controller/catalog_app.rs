//! CatalogApp: its conditions on the way to Ready, the grant group that provisioning
//! creates, suspension, and one connectivity check shared by the apps of one endpoint.

use std::time::Duration;

use catalogsync::api::{CatalogApp, RunPhase, SyncRun};
use catalogsync::cluster::conditions::find;
use catalogsync::scim::{self, ClientOptions, ScimClient};
use kube::ResourceExt;
use kube::api::ListParams;
use serde_json::json;

use super::{Env, app_cond, app_message, eventually, phase, requested_echo, tf};

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

    // An impossible mapping path: refused at admission, the field and why named (the
    // controller's own check, for objects stored before the rule, is a unit test's).
    let patch = |mappings| {
        kube::api::Patch::Merge(json!({"spec": {"provisioning": {"attributeMappings": mappings}}}))
    };
    let apps = env.api::<CatalogApp>();
    let pp = kube::api::PatchParams::default();
    let bad = json!([{"domainAttribute": "userName", "appAttribute": "userName"},
                     {"domainAttribute": "displayName", "appAttribute": "name.value"}]);
    let refused = apps.patch("slack", &pp, &patch(bad)).await.unwrap_err();
    let kube::Error::Api(status) = refused else {
        panic!("expected the API server's refusal, got {refused}");
    };
    assert!(
        status.message.contains(
            "spec.provisioning.attributeMappings[1].appAttribute: Invalid value: \"string\": \
             impossible path \"name.value\": name is complex"
        ),
        "{}",
        status.message
    );
    assert_eq!(
        app_cond(&env.get_app().await, "ProvisioningEnabled"),
        tf("True", "Enabled")
    );
    let good = json!([{"domainAttribute": "emails[primary eq true].value", "appAttribute": "emails.value"},
                      {"domainAttribute": "userName", "appAttribute": "userName"}]);
    apps.patch("slack", &pp, &patch(good)).await.unwrap();
    env.wait_app("ProvisioningEnabled True again", |a| {
        app_cond(a, "ProvisioningEnabled") == tf("True", "Enabled")
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
