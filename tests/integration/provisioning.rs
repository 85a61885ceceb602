//! Provisioning (direction Provision, identity domain → app) against real SCIM servers:
//! the mapped attributes of new accounts, updates after a change in the identity domain,
//! deactivation and deletion of revoked accounts, operations that are not selected, and
//! the provisioning limits in both modes under parallel workers. Uses the `World` of
//! `sync_engine`; `provision_follows_the_grant_group` there covers the basics.

use catalogsync::api::RunPhase;
use catalogsync::cluster::exit_code;
use catalogsync::scim::PatchOp;
use serde_json::{Value, json};

use crate::sync_engine::{Via, World, condition};

/// An identity domain user with every attribute the GenericSCIM mappings read, and a
/// second, non-primary email that must not be taken for the primary one.
fn person(user_name: &str, given: &str, family: &str) -> Value {
    json!({
        "userName": user_name,
        "active": true,
        "displayName": format!("{given} {family}"),
        "name": {"givenName": given, "familyName": family},
        "emails": [
            {"value": format!("{user_name}.home@home.example"), "type": "home"},
            {"value": format!("{user_name}@corp.example"), "primary": true, "type": "work"}
        ]
    })
}

async fn seed(w: &World, tenant: &str, users: Vec<Value>) -> Vec<String> {
    w.server
        .seed(tenant, json!({"Users": users, "returnIds": true}))
        .await
}

/// (userName, givenName, familyName) of the people of these tests.
const PEOPLE: [(&str, &str, &str); 4] = [
    ("alice", "Alice", "Archer"),
    ("bob", "Bob", "Baker"),
    ("carol", "Carol", "Clark"),
    ("dave", "Dave", "Drake"),
];

/// Seeds the first `n` of [`PEOPLE`] into the identity domain; returns their ids.
async fn seed_people(w: &World, n: usize) -> Vec<String> {
    let users = PEOPLE[..n]
        .iter()
        .map(|(u, g, f)| person(u, g, f))
        .collect();
    seed(w, "idp", users).await
}

/// Every account of the app, with every attribute.
async fn accounts(w: &World) -> Vec<Value> {
    w.app.list("Users", &[], None).await.unwrap().0
}

fn account<'a>(accounts: &'a [Value], user_name: &str) -> &'a Value {
    accounts
        .iter()
        .find(|a| a["userName"] == user_name)
        .unwrap_or_else(|| panic!("no account {user_name} in {accounts:?}"))
}

fn primary_email(v: &Value) -> Option<&str> {
    v["emails"]
        .as_array()?
        .iter()
        .find(|e| e["primary"] == json!(true))?["value"]
        .as_str()
}

/// The counts (created, updated, deleted, failed) of a run.
fn writes(s: &catalogsync::api::SyncRunStatus) -> (i64, i64, i64, i64) {
    let c = s.counts.clone().expect("counts");
    (c.created, c.updated, c.deleted, c.failed)
}

/// A world where alice and bob are granted and a first run created their accounts;
/// returns it with their user ids.
async fn alice_and_bob_provisioned(prefix: &str) -> (World, Vec<String>) {
    let w = World::new(prefix, json!({}), None, Via::Direct).await;
    let ids = seed_people(&w, 2).await;
    w.grant(&ids).await;
    let (code, s) = w.provision("grant", "Apply").await;
    assert_eq!((code, writes(&s)), (0, (2, 0, 0, 0)), "{s:?}");
    (w, ids)
}

/// Three granted users get three accounts carrying every mapped attribute and their id as
/// externalId; a change of name in the identity domain reaches the app on the next run.
#[tokio::test]
async fn provision_maps_every_attribute_and_follows_a_rename() {
    let w = World::new("prov-attrs", json!({}), None, Via::Direct).await;
    let ids = seed_people(&w, 4).await;
    w.grant(&ids[..3]).await; // dave is not granted

    let (code, s) = w.provision("create", "Apply").await;
    assert_eq!(code, exit_code::SUCCESS as i32, "{s:?}");
    assert_eq!(s.phase, Some(RunPhase::Succeeded));
    assert_eq!(writes(&s), (3, 0, 0, 0), "{s:?}");
    let accts = accounts(&w).await;
    assert_eq!(accts.len(), 3, "only the granted users: {accts:?}");
    for (i, (user_name, given, family)) in PEOPLE[..3].iter().enumerate() {
        let a = account(&accts, user_name);
        assert_eq!(a["externalId"], json!(ids[i]), "{a}");
        assert_eq!(a["name"]["givenName"], json!(given), "{a}");
        assert_eq!(a["name"]["familyName"], json!(family), "{a}");
        assert_eq!(a["displayName"], json!(format!("{given} {family}")), "{a}");
        assert_eq!(
            primary_email(a),
            Some(format!("{user_name}@corp.example").as_str()),
            "{a}"
        );
        assert_eq!(a["active"], json!(true), "{a}");
    }

    // Bob marries: his family and display names change in the identity domain.
    let rename = PatchOp::new(vec![
        PatchOp::replace("name.familyName", json!("Baker-Smith")),
        PatchOp::replace("displayName", json!("Bob Baker-Smith")),
    ]);
    w.idp.patch("Users", &ids[1], &rename, None).await.unwrap();
    let (code, s) = w.provision("rename", "Apply").await;
    assert_eq!(code, exit_code::SUCCESS as i32, "{s:?}");
    assert_eq!(writes(&s), (0, 1, 0, 0), "{s:?}");
    // An updated account is still an already linked one.
    assert_eq!(s.counts.as_ref().unwrap().already_linked, 3);
    let after = accounts(&w).await;
    let bob = account(&after, "bob");
    assert_eq!(bob["name"]["familyName"], json!("Baker-Smith"), "{bob}");
    assert_eq!(bob["displayName"], json!("Bob Baker-Smith"), "{bob}");
    assert_eq!(bob["name"]["givenName"], json!("Bob"), "{bob}");
    assert_eq!(primary_email(bob), Some("bob@corp.example"), "{bob}");
    assert_eq!(bob["externalId"], json!(ids[1]));
    for name in ["alice", "carol"] {
        assert_eq!(account(&after, name), account(&accts, name), "untouched");
    }
}

/// A member removed from the grant group: with the default operations [Create, Update,
/// Deactivate] the account is deactivated (and reactivated if granted again); once Delete
/// is selected it is deleted.
#[tokio::test]
async fn a_revoked_account_is_deactivated_or_with_delete_deleted() {
    let (w, ids) = alice_and_bob_provisioned("prov-revoke").await;
    let accts = accounts(&w).await;
    let bob_account = account(&accts, "bob")["id"].as_str().unwrap().to_string();

    w.idp.remove_members(&w.group_id, &ids[1..]).await.unwrap();
    let (code, s) = w.provision("revoke", "Apply").await;
    assert_eq!(code, 0, "{s:?}");
    assert_eq!(
        writes(&s),
        (0, 0, 1, 0),
        "a deactivation counts as a delete"
    );
    let bob = w.app.get("Users", &bob_account, &[]).await.unwrap();
    let bob = bob.expect("deactivated, not deleted");
    assert_eq!(bob["active"], json!(false), "{bob}");
    assert_eq!(account(&accounts(&w).await, "alice")["active"], json!(true));

    // Granted again: the same account is reactivated (an Update), no second one created.
    w.grant(&ids[1..]).await;
    let (code, s) = w.provision("regrant", "Apply").await;
    assert_eq!((code, writes(&s)), (0, (0, 1, 0, 0)), "{s:?}");
    let bob = w.app.get("Users", &bob_account, &[]).await.unwrap();
    assert_eq!(bob.unwrap()["active"], json!(true));
    assert_eq!(accounts(&w).await.len(), 2);
    w.idp.remove_members(&w.group_id, &ids[1..]).await.unwrap();

    w.set_provisioning(json!({"operations": ["Create", "Update", "Deactivate", "Delete"]}))
        .await;
    let (code, s) = w.provision("delete", "Apply").await;
    assert_eq!(code, 0, "{s:?}");
    assert_eq!(writes(&s), (0, 0, 1, 0), "{s:?}");
    assert!(
        w.app
            .get("Users", &bob_account, &[])
            .await
            .unwrap()
            .is_none(),
        "GET of the deleted account is a 404"
    );
    assert_eq!(accounts(&w).await.len(), 1, "alice's account stays");
    assert!(
        w.idp.get("Users", &ids[1], &[]).await.unwrap().is_some(),
        "the identity domain user is not provisioning's to delete"
    );
}

/// With operations [Create] only, a drifted account is not updated and a revoked member's
/// account is not deactivated; only the create happens, and `counts.notAllowed` says what
/// was left undone.
#[tokio::test]
async fn operations_not_selected_are_never_performed() {
    let w = World::new("prov-createonly", json!({}), None, Via::Direct).await;
    let ids = seed_people(&w, 3).await;
    // alice has her account; carol is pending provisioning; bob is revoked.
    w.add_members(&ids[..1]).await;
    w.grant(&ids[2..]).await;
    w.record(&ids[1..2]).await;
    seed(
        &w,
        "app",
        vec![
            // alice's account drifted: another family name and email.
            json!({"userName": "alice", "externalId": ids[0], "active": true,
                   "displayName": "Alice Archer", "name": {"givenName": "Alice", "familyName": "Old"},
                   "emails": [{"value": "alice.old@corp.example", "primary": true}]}),
            json!({"userName": "bob", "externalId": ids[1], "active": true}),
        ],
    )
    .await;
    let before = accounts(&w).await;
    w.set_provisioning(json!({"operations": ["Create"]})).await;

    let (code, s) = w.provision("create-only", "Apply").await;
    assert_eq!(code, 0, "{s:?}");
    assert_eq!(writes(&s), (1, 0, 0, 0), "only carol's create: {s:?}");
    let c = s.counts.clone().unwrap();
    assert_eq!(
        c.not_allowed, 2,
        "alice's update, bob's deactivation: {c:?}"
    );
    let msg = s.message.clone().unwrap_or_default();
    assert!(msg.ends_with(", 2 not allowed by the operations"), "{msg}");
    let p = s.planned.clone().unwrap();
    assert_eq!((p.creates, p.updates, p.deletes), (1, 0, 0));
    let after = accounts(&w).await;
    assert_eq!(after.len(), 3);
    assert_eq!(account(&after, "carol")["externalId"], json!(ids[2]));
    for name in ["alice", "bob"] {
        assert_eq!(
            account(&after, name),
            account(&before, name),
            "{name}'s account is unchanged"
        );
    }
    assert_eq!(account(&after, "bob")["active"], json!(true));
}

/// 60 granted users, `maxCreates: 7`, 32 parallel workers (the SyncPolicy's parallelism,
/// which provisioning runs use): Abort creates nothing, ApplyUpToLimit exactly 7; both
/// end LimitExceeded with the planned and allowed numbers. Then `maxDeletes` holds the
/// same way for deactivations.
#[tokio::test]
async fn provisioning_limits_abort_or_apply_exactly_up_to_the_limit() {
    let w = World::new("prov-limits", json!({"parallelism": 32}), None, Via::Direct).await;
    let ids = w.server.seed_users("idp", "u", 60).await;
    w.grant(&ids).await;
    w.set_provisioning(json!({"limits": {"maxCreates": 7, "whenExceeded": "Abort"}}))
        .await;

    let (code, s) = w.provision("aborted", "Apply").await;
    assert_eq!(code, exit_code::LIMIT_EXCEEDED as i32, "{s:?}");
    assert_eq!(s.phase, Some(RunPhase::LimitExceeded));
    assert_eq!(
        s.message.as_deref(),
        Some("nothing applied: planned 60 creates, allowed 7")
    );
    assert_eq!(writes(&s), (0, 0, 0, 0));
    assert_eq!(s.planned.as_ref().unwrap().creates, 60);
    assert_eq!(s.limits.as_ref().unwrap().max_creates, Some(7));
    assert!(accounts(&w).await.is_empty(), "nothing created");

    w.set_provisioning(json!({"limits": {"whenExceeded": "ApplyUpToLimit"}}))
        .await;
    let (code, s) = w.provision("up-to-limit", "Apply").await;
    assert_eq!(code, exit_code::LIMIT_EXCEEDED as i32, "{s:?}");
    assert_eq!(s.phase, Some(RunPhase::LimitExceeded));
    assert_eq!(writes(&s), (7, 0, 0, 0), "{s:?}");
    let le = condition(&s, "LimitExceeded");
    assert_eq!(le.status, "True");
    assert_eq!(le.message, "planned 60 creates, allowed 7");
    let created = accounts(&w).await;
    assert_eq!(created.len(), 7, "exactly the limit, never one more");
    assert!(
        created
            .iter()
            .all(|a| ids.iter().any(|id| a["externalId"] == json!(id)))
    );

    // Everyone revoked, maxDeletes 3: exactly 3 of the 7 accounts are deactivated.
    w.idp.remove_members(&w.group_id, &ids).await.unwrap();
    w.set_provisioning(json!({"limits": {"maxDeletes": 3}}))
        .await;
    let (code, s) = w.provision("revoke-up-to-limit", "Apply").await;
    assert_eq!(code, exit_code::LIMIT_EXCEEDED as i32, "{s:?}");
    assert_eq!(writes(&s), (0, 0, 3, 0), "{s:?}");
    assert_eq!(
        condition(&s, "LimitExceeded").message,
        "planned 7 deletes, allowed 3"
    );
    let inactive = accounts(&w)
        .await
        .iter()
        .filter(|a| a["active"] == json!(false))
        .count();
    assert_eq!(inactive, 3, "exactly the limit, never one more");
}

/// A member deactivated in the identity domain: deactivating the account is the Deactivate
/// operation (not Update) and counts against maxDeletes, like a revoked member's.
#[tokio::test]
async fn an_inactive_members_account_is_deactivated_only_by_deactivate() {
    let (w, ids) = alice_and_bob_provisioned("prov-inactive").await;

    // Bob leaves the company: deactivated in the identity domain, still granted; Alice
    // changes her display name.
    let off = PatchOp::new(vec![PatchOp::replace("active", json!(false))]);
    w.idp.patch("Users", &ids[1], &off, None).await.unwrap();
    let renamed = PatchOp::new(vec![PatchOp::replace("displayName", json!("Alice A."))]);
    w.idp.patch("Users", &ids[0], &renamed, None).await.unwrap();

    w.set_provisioning(json!({"operations": ["Create", "Update"]}))
        .await;
    let (code, s) = w.provision("update-only", "Apply").await;
    assert_eq!(code, 0, "{s:?}");
    assert_eq!(
        writes(&s),
        (0, 1, 0, 0),
        "alice updated, bob not deactivated"
    );
    assert_eq!(s.counts.as_ref().unwrap().not_allowed, 1);
    let accts = accounts(&w).await;
    assert_eq!(account(&accts, "alice")["displayName"], json!("Alice A."));
    assert_eq!(
        account(&accts, "bob")["active"],
        json!(true),
        "Deactivate not selected"
    );

    w.set_provisioning(json!({"operations": ["Create", "Update", "Deactivate"],
                              "limits": {"maxDeletes": 0}}))
        .await;
    let (code, s) = w.provision("over-limit", "Apply").await;
    assert_eq!(code, exit_code::LIMIT_EXCEEDED as i32, "{s:?}");
    assert_eq!(
        s.message.as_deref(),
        Some("nothing applied: planned 1 deletes, allowed 0")
    );
    assert_eq!(account(&accounts(&w).await, "bob")["active"], json!(true));

    w.set_provisioning(json!({"limits": null})).await;
    let (code, s) = w.provision("deactivate", "Apply").await;
    assert_eq!(code, 0, "{s:?}");
    assert_eq!(writes(&s), (0, 0, 1, 0), "{s:?}");
    assert_eq!(account(&accounts(&w).await, "bob")["active"], json!(false));

    let (code, s) = w.provision("again", "Apply").await;
    assert_eq!(code, 0, "{s:?}");
    assert_eq!(writes(&s), (0, 0, 0, 0), "nothing left to do: {s:?}");
    assert_eq!(s.counts.unwrap().already_linked, 2);
}
