//! The app's two groups in the identity domain: the controller creates the grant and record
//! groups with catalogsync's ownership mark, never takes a group that is not the app's
//! (`GroupNotOwned`, the group untouched), adopts an unmarked one only with
//! `adoptExistingGroups` (and marks it), and never takes another app's group.

use catalogsync::api::CatalogApp;
use catalogsync::scim::model::GROUPS;
use catalogsync::scim::{self, ClientOptions, ScimClient};
use serde_json::{Value, json};

use super::{Env, app_cond, app_message, eventually, tf};

/// A client of the identity domain's tenant, to look at the groups as they are.
fn iam(env: &Env) -> ScimClient {
    ScimClient::with_options(ClientOptions::new(
        env.scim.base_url("iam"),
        scim::Auth::Bearer(env.scim.token("iam")),
    ))
    .unwrap()
}

/// Secrets, the Ready-able domain and the app `name` with `provisioning` (a YAML flow map).
async fn app(env: &Env, name: &str, provisioning: &str) {
    env.secret("iam-token", &env.scim.token("iam")).await;
    env.secret("app-token", &env.scim.token("app")).await;
    env.domain(&env.scim.base_url("iam")).await;
    env.apply(&format!(
        r#"
apiVersion: catalogsync.io/v1alpha1
kind: CatalogApp
metadata: {{name: {name}}}
spec:
  identityDomainRef: {{name: corp}}
  connection:
    url: {}
    insecure: true
    auth: {{bearerToken: {{secretRef: {{name: app-token, key: token}}}}}}
  provisioning: {provisioning}
"#,
        env.scim.base_url("app")
    ))
    .await;
}

async fn group(iam: &ScimClient, id: &str) -> Value {
    iam.get(GROUPS, id, &[])
        .await
        .unwrap()
        .expect("group exists")
}

fn member_ids(group: &Value) -> Vec<&str> {
    group["members"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["value"].as_str()).collect())
        .unwrap_or_default()
}

fn mark(env: &Env, app: &str, role: &str) -> String {
    format!("catalogsync:{}/{app}/{role}", env.ns)
}

#[tokio::test]
async fn provisioning_creates_the_grant_and_record_groups_with_the_ownership_mark() {
    let (env, _ctl) = Env::with_controller("ctl-groups").await;
    app(&env, "slack", "{enabled: true}").await;
    let a = env.wait_ready().await;
    let st = a.status.clone().unwrap();
    let iam = iam(&env);
    let grant_name = format!("catalogsync-{}-slack", env.ns);
    for (id, name, role) in [
        (
            st.grant_group_id.expect("grantGroupId"),
            grant_name.clone(),
            "grant",
        ),
        (
            st.record_group_id.expect("recordGroupId"),
            format!("{grant_name}-accounts"),
            "record",
        ),
    ] {
        let g = group(&iam, &id).await;
        assert_eq!(g["displayName"], name.as_str(), "{role}: {g}");
        assert_eq!(
            g["externalId"],
            mark(&env, "slack", role).as_str(),
            "{role}: {g}"
        );
    }
    let msg = app_message(&a, "ProvisioningEnabled");
    assert!(msg.contains(&format!("{grant_name}-accounts")), "{msg}");
}

#[tokio::test]
async fn an_existing_group_is_left_alone_until_adopted_on_purpose() {
    let (env, _ctl) = Env::with_controller("ctl-adopt").await;
    let iam = iam(&env);
    // An administrators group someone else manages, with a member.
    let member = env.scim.seed_users("iam", "root", 1).await;
    let admins = iam
        .create(
            GROUPS,
            &json!({
                "schemas": [scim::model::GROUP_SCHEMA],
                "displayName": "admins",
                "members": [{"value": member[0], "type": "User"}],
            }),
        )
        .await
        .unwrap();
    let admins_id = admins["id"].as_str().unwrap().to_string();
    let before = group(&iam, &admins_id).await;

    app(&env, "slack", "{enabled: true, grantGroup: admins}").await;
    let a = env
        .wait_app("Ready False GroupNotOwned", |a| {
            app_cond(a, "Ready") == tf("False", "GroupNotOwned")
        })
        .await;
    assert_eq!(
        app_cond(&a, "ProvisioningEnabled"),
        tf("False", "GroupNotOwned")
    );
    let msg = app_message(&a, "Ready");
    assert!(
        msg.contains("\"admins\"") && msg.contains("adoptExistingGroups"),
        "says which group and how to adopt it: {msg}"
    );
    assert_eq!(a.status.as_ref().unwrap().grant_group_id, None);
    // Rechecked (the failure is retried), the group stays as it was.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let after = group(&iam, &admins_id).await;
    assert_eq!(after["externalId"], before["externalId"], "{after}");
    assert_eq!(after["displayName"], "admins");
    assert_eq!(member_ids(&after), vec![member[0].as_str()]);

    // Adopted on purpose: Ready, the group now carries the mark, its members unchanged.
    env.patch_app_spec(json!({"provisioning": {"adoptExistingGroups": true}}))
        .await;
    let a = env.wait_ready().await;
    let st = a.status.clone().unwrap();
    assert_eq!(st.grant_group_id.as_deref(), Some(admins_id.as_str()));
    let adopted = group(&iam, &admins_id).await;
    assert_eq!(adopted["externalId"], mark(&env, "slack", "grant").as_str());
    assert_eq!(member_ids(&adopted), vec![member[0].as_str()]);
    let record = group(&iam, st.record_group_id.as_deref().expect("recordGroupId")).await;
    assert_eq!(record["displayName"], "admins-accounts");
    assert_eq!(record["externalId"], mark(&env, "slack", "record").as_str());
}

#[tokio::test]
async fn another_apps_group_is_never_taken_even_when_adopting() {
    let (env, _ctl) = Env::with_controller("ctl-other").await;
    let iam = iam(&env);
    app(&env, "jira", "{enabled: true, grantGroup: shared}").await;
    let jira = eventually(60, "jira Ready", || async {
        let a = env.api::<CatalogApp>().get("jira").await.ok()?;
        (app_cond(&a, "Ready") == tf("True", "Ready")).then_some(a)
    })
    .await;
    let shared_id = jira.status.unwrap().grant_group_id.expect("grantGroupId");
    let jira_mark = mark(&env, "jira", "grant");
    assert_eq!(
        group(&iam, &shared_id).await["externalId"],
        jira_mark.as_str()
    );

    // slack names jira's group and adopts existing groups: still not taken.
    app(
        &env,
        "slack",
        "{enabled: true, grantGroup: shared, adoptExistingGroups: true}",
    )
    .await;
    let a = env
        .wait_app("Ready False GroupNotOwned", |a| {
            app_cond(a, "Ready") == tf("False", "GroupNotOwned")
        })
        .await;
    let msg = app_message(&a, "ProvisioningEnabled");
    assert!(
        msg.contains("\"shared\"") && msg.contains(&jira_mark),
        "names the group and its owner: {msg}"
    );
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        group(&iam, &shared_id).await["externalId"],
        jira_mark.as_str()
    );
    // jira keeps its group.
    let jira = env.api::<CatalogApp>().get("jira").await.unwrap();
    assert_eq!(app_cond(&jira, "Ready"), tf("True", "Ready"));
}
