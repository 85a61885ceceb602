//! Records apart from grants: each row of the "Grants and records" state table, in both
//! directions, against real SCIM servers — nothing granted is taken for deleted,
//! revocations stick, inactive accounts are never linked, a create's 409 is settled by the
//! rules, `maxChanges` is exact under parallelism, and every account lands in one count.

use std::collections::HashSet;

use catalogsync::api::{Counts, Direction, RunPhase, SyncRunStatus};
use serde_json::json;

use crate::sync_engine::{Via, World};

/// Every app account lands in exactly one account count (Provision's created accounts are
/// new ones, not listed ones).
fn assert_accounted(c: &Counts, direction: Direction) {
    assert_eq!(
        c.accounted(direction),
        c.app_accounts,
        "every account counted once: {c:?}"
    );
}

/// Runs `direction` to the end, checks it succeeded and its counts add up.
async fn succeed(w: &World, name: &str, direction: Direction) -> Counts {
    let (code, s) = match direction {
        Direction::Import => w.run(name, "Apply").await,
        Direction::Provision => w.provision(name, "Apply").await,
    };
    assert_eq!((code, s.phase), (0, Some(RunPhase::Succeeded)), "{s:?}");
    let c = s.counts.unwrap();
    assert_accounted(&c, direction);
    c
}

fn set(ids: &[&String]) -> HashSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// A granted user without an account (never provisioned) survives an Import with
/// `onAccountDeleted: DeleteUser` and gets an account from the next Provision; a recorded
/// user whose account is gone is deleted.
#[tokio::test]
async fn a_granted_user_without_an_account_is_pending_not_deleted() {
    let w = World::new(
        "rec-pending",
        json!({"onAccountDeleted": "DeleteUser"}),
        None,
        Via::Direct,
    )
    .await;
    let u = w
        .seed(
            "idp",
            &[
                ("alice", "alice@corp.example"),
                ("bob", "bob@corp.example"),
                ("carol", "carol@corp.example"),
            ],
        )
        .await;
    w.grant(&u).await;
    w.record(&[u[0].clone(), u[2].clone()]).await;
    w.seed("app", &[("alice", "alice@corp.example")]).await;

    let c = succeed(&w, "import-1", Direction::Import).await;
    assert_eq!(
        (c.already_linked, c.pending_provisioning, c.deleted),
        (1, 1, 1),
        "{c:?}"
    );
    assert!(
        w.idp.get("Users", &u[1], &[]).await.unwrap().is_some(),
        "bob kept"
    );
    assert!(
        w.idp.get("Users", &u[2], &[]).await.unwrap().is_none(),
        "carol deleted"
    );
    assert_eq!(w.members().await, set(&[&u[0], &u[1]]), "bob still granted");

    let c = succeed(&w, "provision-1", Direction::Provision).await;
    assert_eq!((c.created, c.pending_provisioning), (1, 0), "{c:?}");
    assert_eq!(w.records().await, set(&[&u[0], &u[1]]));

    let c = succeed(&w, "import-2", Direction::Import).await;
    assert_eq!(
        (c.already_linked, c.pending_provisioning, c.deleted),
        (2, 0, 0)
    );
}

/// A revoked user (recorded, no longer granted) stays revoked across Import → Provision →
/// Import: never re-granted or re-linked, its account deactivated, its record kept.
#[tokio::test]
async fn a_revoked_user_stays_revoked() {
    let w = World::new("rec-revoked", json!({}), None, Via::Direct).await;
    let u = w.seed("idp", &[("alice", "alice@corp.example")]).await;
    w.record(&u).await;
    w.server
        .seed(
            "app",
            json!({"Users": [{"userName": "alice", "externalId": u[0], "active": true}]}),
        )
        .await;
    let c = succeed(&w, "import-1", Direction::Import).await;
    assert_eq!((c.revoked, c.linked, c.skipped), (1, 0, 0), "{c:?}");
    assert!(w.members().await.is_empty(), "never re-granted");

    let c = succeed(&w, "provision-1", Direction::Provision).await;
    assert_eq!((c.revoked, c.deleted), (1, 1), "{c:?}");
    let (accounts, _) = w.app.list("Users", &["active"], None).await.unwrap();
    assert_eq!(accounts[0]["active"], json!(false));

    let c = succeed(&w, "import-2", Direction::Import).await;
    assert_eq!((c.revoked, c.linked), (1, 0));
    assert!(w.members().await.is_empty());
    assert_eq!(w.records().await, set(&[&u[0]]));
    let c = succeed(&w, "provision-2", Direction::Provision).await;
    assert_eq!(
        (c.revoked, c.deleted, c.updated),
        (1, 0, 0),
        "nothing left to do"
    );
}

/// An inactive account is never linked, in either direction; an active one is.
#[tokio::test]
async fn inactive_accounts_are_never_linked() {
    let w = World::new("rec-inactive", json!({}), None, Via::Direct).await;
    let u = w
        .seed(
            "idp",
            &[("alice", "alice@corp.example"), ("bob", "bob@corp.example")],
        )
        .await;
    w.server
        .seed(
            "app",
            json!({"Users": [
                {"userName": "alice", "active": false},
                {"userName": "bob", "active": true}
            ]}),
        )
        .await;
    let c = succeed(&w, "import", Direction::Import).await;
    assert_eq!((c.inactive, c.linked), (1, 1), "{c:?}");
    assert_eq!(w.members().await, set(&[&u[1]]));
    assert_eq!(w.records().await, set(&[&u[1]]));
    // Granted now, alice's only account is still inactive: not adopted, no second one.
    w.grant(&u[..1]).await;
    let c = succeed(&w, "provision", Direction::Provision).await;
    assert_eq!((c.inactive, c.linked, c.created), (1, 0, 0), "{c:?}");
    assert_eq!(w.user_names(&w.app).await.len(), 2);
}

/// A CreateUser that meets a 409 for a name held by a user the rules do not match ends
/// disputed: nobody is linked, nothing is created.
#[tokio::test]
async fn a_create_conflict_with_another_users_name_is_disputed() {
    let w = World::new(
        "rec-conflict",
        json!({"onNoMatch": "CreateUser",
               "matching": [{"appAttribute": "emails[primary eq true].value",
                             "domainAttribute": "emails.value"}]}),
        None,
        Via::Direct,
    )
    .await;
    let u = w.seed("idp", &[("erin", "erin@corp.example")]).await;
    w.seed("app", &[("erin", "erin@partner.example")]).await;
    let c = succeed(&w, "import", Direction::Import).await;
    assert_eq!((c.disputed, c.created, c.linked), (1, 0, 0), "{c:?}");
    assert!(w.members().await.is_empty() && w.records().await.is_empty());
    assert_eq!(w.user_names(&w.idp).await.len(), 1, "no second erin");
    assert!(w.idp.get("Users", &u[0], &[]).await.unwrap().is_some());
}

/// Provision adopts by the same rules as Import (here: by e-mail), instead of creating a
/// second account, and records the user.
#[tokio::test]
async fn provision_adopts_by_the_same_rules_as_import() {
    let w = World::new("rec-adopt", json!({}), None, Via::Direct).await;
    let u = w.seed("idp", &[("bob", "bob@corp.example")]).await;
    w.grant(&u).await;
    w.seed("app", &[("bobby", "bob@corp.example")]).await;
    let c = succeed(&w, "provision", Direction::Provision).await;
    assert_eq!((c.linked, c.created), (1, 0), "{c:?}");
    let (accounts, _) = w.app.list("Users", &["externalId"], None).await.unwrap();
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0]["externalId"], json!(u[0]));
    assert_eq!(w.records().await, set(&[&u[0]]));
    let c = succeed(&w, "import", Direction::Import).await;
    assert_eq!(
        c.already_linked, 1,
        "the same owner in both directions: {c:?}"
    );
}

/// With synchronization on, the app decides deletions: Provision does not recreate a
/// recorded account that is gone. With it off, Provision recreates it.
#[tokio::test]
async fn a_gone_account_is_recreated_only_without_synchronization() {
    let w = World::new("rec-gone", json!({}), None, Via::Direct).await;
    let u = w.seed("idp", &[("alice", "alice@corp.example")]).await;
    w.add_members(&u).await;
    let c = succeed(&w, "provision-on", Direction::Provision).await;
    assert_eq!(c.created, 0, "{c:?}");
    assert!(w.user_names(&w.app).await.is_empty());
    w.patch_app(json!({"synchronization": {"enabled": false}}))
        .await;
    let c = succeed(&w, "provision-off", Direction::Provision).await;
    assert_eq!(c.created, 1, "{c:?}");
    assert_eq!(w.user_names(&w.app).await.len(), 1);
}

/// `maxChanges` bounds creates and deletes together, exactly, with 32 parallel workers.
#[tokio::test]
async fn max_changes_is_exact_under_parallelism() {
    let w = World::new(
        "rec-changes",
        json!({"onNoMatch": "CreateUser", "parallelism": 32,
               "limits": {"maxCreates": 100, "maxDeletes": 100, "maxChanges": 25,
                          "whenExceeded": "ApplyUpToLimit"}}),
        None,
        Via::Direct,
    )
    .await;
    let people: Vec<(String, String)> = (0..20)
        .map(|i| (format!("gone{i}"), format!("gone{i}@corp.example")))
        .collect();
    let people: Vec<(&str, &str)> = people
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let u = w.seed("idp", &people).await;
    w.add_members(&u).await;
    w.server.seed_users("app", "acct", 40).await;
    let (code, s): (i32, SyncRunStatus) = w.run("capped", "Apply").await;
    assert_eq!(s.phase, Some(RunPhase::LimitExceeded), "{code} {s:?}");
    let c = s.counts.clone().unwrap();
    assert_accounted(&c, Direction::Import);
    let created = w.user_names(&w.idp).await.len() as i64 - 20;
    let records = w.records().await;
    let removed = u.iter().filter(|id| !records.contains(*id)).count() as i64;
    assert_eq!(
        records.len() as i64,
        20 - removed + created,
        "every created user recorded"
    );
    assert_eq!(created + removed, 25, "the servers show exactly maxChanges");
    assert_eq!((c.created, c.deleted), (created, removed));
    assert_eq!(c.skipped, 40 - created, "the creates not made are skipped");
}

/// Deletion confirmation on an app that rejects `or` filters: one lookup per clause, and
/// the Import completes.
#[tokio::test]
async fn an_app_that_rejects_or_filters_still_imports() {
    let w = World::new("rec-nor", json!({}), None, Via::Proxy).await;
    w.proxy().plan(json!({"rejectOrFilter": true})).await;
    let u = w
        .seed(
            "idp",
            &[("alice", "alice@corp.example"), ("bob", "bob@corp.example")],
        )
        .await;
    w.add_members(&u).await;
    w.seed("app", &[("bob", "bob@corp.example")]).await;
    let c = succeed(&w, "import", Direction::Import).await;
    assert_eq!((c.already_linked, c.deleted), (1, 1), "{c:?}");
    assert_eq!(w.records().await, set(&[&u[1]]));
}

/// A Plan run's Job log holds the whole plan, one JSON line per planned change, while its
/// status keeps only the first items of each kind.
#[tokio::test]
async fn a_plan_run_logs_every_planned_change() {
    let w = World::new("rec-planlog", json!({}), None, Via::Direct).await;
    w.server.seed_users("idp", "p", 15).await;
    w.server.seed_users("app", "p", 15).await;
    w.new_run_towards("plan", "Import", "Plan").await;
    let out = w
        .command("plan")
        .env("CATALOGSYNC_TEST_LOG_JSON", "1")
        .stdout(std::process::Stdio::piped())
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["message"] == "planned change")
        .collect();
    assert_eq!(lines.len(), 15, "every link, not only the first 10");
    assert!(lines.iter().all(|l| l["action"] == "Link"));
    let targets: HashSet<&str> = lines.iter().filter_map(|l| l["id"].as_str()).collect();
    assert_eq!(targets.len(), 15);
    let s = w.status("plan").await;
    assert_eq!(s.plan_items.len(), 10);
    assert_eq!(s.counts.unwrap().skipped, 15, "nothing applied");
    assert!(w.records().await.is_empty());
}

/// Import on the rows with a grant or record but no link yet: a granted user's matching
/// account is recorded (the grant is already there); a revoked user whose account is gone
/// only loses the record — `onAccountDeleted: DeleteUser` never touches a user who is no
/// longer granted.
#[tokio::test]
async fn import_records_granted_accounts_and_only_unrecords_revoked_users() {
    let w = World::new(
        "rec-rows",
        json!({"onAccountDeleted": "DeleteUser"}),
        None,
        Via::Direct,
    )
    .await;
    let u = w
        .seed(
            "idp",
            &[("bob", "bob@corp.example"), ("dave", "dave@corp.example")],
        )
        .await;
    w.grant(&u[..1]).await;
    w.record(&u[1..]).await;
    w.seed("app", &[("bob", "bob@corp.example")]).await;
    let c = succeed(&w, "import", Direction::Import).await;
    assert_eq!((c.linked, c.deleted), (1, 1), "{c:?}");
    assert_eq!(
        w.records().await,
        set(&[&u[0]]),
        "bob recorded, dave's record removed"
    );
    assert_eq!(w.members().await, set(&[&u[0]]), "grants unchanged");
    assert!(
        w.idp.get("Users", &u[1], &[]).await.unwrap().is_some(),
        "dave kept"
    );
}
