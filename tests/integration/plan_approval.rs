//! Plan approval in Git, end to end with the engine binary against real SCIM servers: a
//! Plan run over a limit reports its digest; a run approving that digest applies the
//! whole plan despite the limits; an approval of a plan that changed since writes nothing
//! and ends PlanChanged with the new digest.

use std::collections::HashSet;

use catalogsync::api::{RunPhase, SyncRunStatus};
use catalogsync::cluster::exit_code;
use serde_json::json;

use crate::sync_engine::{Via, World, condition};

fn digest(s: &SyncRunStatus) -> String {
    let d = s
        .plan_digest
        .clone()
        .expect("the run reports its plan's digest");
    assert!(d.starts_with("sha256:") && d.len() == 71, "{d}");
    d
}

/// Creates and runs a SyncRun of `direction` approving the plan with `digest`.
async fn approve(w: &World, name: &str, direction: &str, digest: &str) -> (i32, SyncRunStatus) {
    w.run_with(
        name,
        json!({"direction": direction, "mode": "Apply", "approvedPlan": {"digest": digest}}),
    )
    .await
}

/// The flow of docs/operations.md: Plan → review → commit the approving run.
#[tokio::test]
async fn an_approved_plan_is_applied_whole_and_a_changed_one_not_at_all() {
    let w = World::new(
        "plan-approval",
        json!({"onNoMatch": "CreateUser", "onAccountDeleted": "DeleteUser",
               "limits": {"maxCreates": 2, "maxDeletes": 0}}),
        None,
        Via::Direct,
    )
    .await;
    w.server.seed_users("app", "acct", 7).await;
    let gone = w.seed("idp", &[("gone", "gone@corp.example")]).await;
    w.add_members(&gone).await;
    let before = w.user_names(&w.idp).await;

    // 1. The plan exceeds both limits: a Plan run shows it and its digest.
    let (code, plan) = w.run("plan", "Plan").await;
    assert_eq!(code, exit_code::SUCCESS as i32, "{plan:?}");
    let approved = digest(&plan);
    let p = plan.planned.clone().unwrap();
    assert_eq!((p.creates, p.deletes), (7, 1));
    assert_eq!(condition(&plan, "LimitExceeded").status, "True");

    // Nothing changed: the same plan again has the same digest, and without an approval
    // the limits hold.
    let (code, held) = w.run("unapproved", "Apply").await;
    assert_eq!(code, exit_code::LIMIT_EXCEEDED as i32, "{held:?}");
    assert_eq!(digest(&held), approved, "stable while nothing changed");
    assert_eq!(w.user_names(&w.idp).await, before);

    // 2. The approving run applies the whole plan: 7 creates over maxCreates 2, 1 delete
    // over maxDeletes 0, held to exactly the plan's size.
    let (code, s) = approve(&w, "approved", "Import", &approved).await;
    assert_eq!(code, exit_code::SUCCESS as i32, "{s:?}");
    assert_eq!(s.phase, Some(RunPhase::Succeeded), "{s:?}");
    assert_eq!(digest(&s), approved);
    let c = s.counts.clone().unwrap();
    assert_eq!((c.created, c.deleted, c.failed), (7, 1, 0), "{c:?}");
    let limits = s.limits.clone().unwrap();
    assert_eq!((limits.max_creates, limits.max_deletes), (Some(7), Some(1)));
    let after = w.user_names(&w.idp).await;
    let created: HashSet<_> = after.difference(&before).collect();
    assert_eq!(created.len(), 7, "{created:?}");
    assert!(created.iter().all(|n| n.starts_with("acct")));
    assert!(!after.contains("gone"), "the approved delete happened");
    assert_eq!(w.members().await.len(), 7, "every created user is recorded");

    // 3. A plan approved, then the app changed before the approving run: nothing is
    // written, the run fails with PlanChanged and shows the new plan and its digest.
    w.seed("app", &[("bob", "bob@corp.example")]).await;
    let (code, replanned) = w.run("plan-2", "Plan").await;
    assert_eq!(code, exit_code::SUCCESS as i32, "{replanned:?}");
    let second = digest(&replanned);
    assert_ne!(second, approved);
    w.seed("app", &[("carol", "carol@corp.example")]).await;
    let (users, members) = (w.user_names(&w.idp).await, w.members().await);

    let (code, s) = approve(&w, "stale", "Import", &second).await;
    assert_eq!(code, exit_code::INVALID as i32, "not retried: {s:?}");
    assert_eq!(s.phase, Some(RunPhase::Failed));
    let now = digest(&s);
    assert_ne!(now, second);
    let failed = condition(&s, "Failed");
    assert_eq!(
        (failed.status.as_str(), failed.reason.as_str()),
        ("True", "PlanChanged")
    );
    let msg = s.message.clone().unwrap_or_default();
    assert!(msg.contains(&second) && msg.contains(&now), "{msg}");
    assert_eq!(s.planned.clone().unwrap().creates, 2, "bob and carol");
    let c = s.counts.clone().unwrap();
    assert_eq!((c.created, c.linked, c.deleted), (0, 0, 0));
    assert_eq!(w.user_names(&w.idp).await, users, "no user written");
    assert_eq!(w.members().await, members, "no membership written");
}

/// An approval belongs to an applying run: the API refuses it on a Plan run.
#[tokio::test]
async fn a_plan_run_cannot_carry_an_approval() {
    let cp = crate::harness::control_plane().await;
    let ns = cp.new_namespace("plan-approval-cel").await;
    let digest = format!("sha256:{}", "0".repeat(64));
    let msg = cp
        .apply_yaml_expect_rejection(
            &ns,
            &format!(
                "apiVersion: catalogsync.io/v1alpha1\nkind: SyncRun\nmetadata: {{name: r}}\n\
                 spec: {{appRef: {{name: slack}}, mode: Plan, approvedPlan: {{digest: \"{digest}\"}}}}\n"
            ),
        )
        .await;
    assert!(msg.contains("mode must be Apply"), "{msg}");
    let msg = cp
        .apply_yaml_expect_rejection(
            &ns,
            "apiVersion: catalogsync.io/v1alpha1\nkind: SyncRun\nmetadata: {name: r}\n\
             spec: {appRef: {name: slack}, approvedPlan: {digest: \"sha256:abc\"}}\n",
        )
        .await;
    assert!(msg.contains("approvedPlan.digest"), "{msg}");
}

/// Provisioning: the approved plan creates every granted account despite `maxCreates: 1`;
/// an approval of an update whose value changed since writes nothing: the digest covers
/// the values a change writes, not only what it acts on.
#[tokio::test]
async fn provisioning_approvals_cover_the_values_written() {
    let w = World::new("plan-approval-prov", json!({}), None, Via::Direct).await;
    w.set_provisioning(json!({"limits": {"maxCreates": 1}}))
        .await;
    let people: Vec<_> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| json!({"userName": n, "displayName": n.to_uppercase(), "active": true}))
        .collect();
    let ids = w
        .server
        .seed("idp", json!({"Users": people, "returnIds": true}))
        .await;
    w.grant(&ids).await;

    let (code, plan) = w.provision("plan", "Plan").await;
    assert_eq!(code, exit_code::SUCCESS as i32, "{plan:?}");
    assert_eq!(plan.planned.clone().unwrap().creates, 3);
    let (code, s) = approve(&w, "approved", "Provision", &digest(&plan)).await;
    assert_eq!(code, exit_code::SUCCESS as i32, "{s:?}");
    assert_eq!(s.counts.clone().unwrap().created, 3);
    let expected: HashSet<String> = ["alice", "bob", "carol"].map(String::from).into();
    assert_eq!(w.user_names(&w.app).await, expected);

    let rename = |name: &str| {
        catalogsync::scim::PatchOp::new(vec![catalogsync::scim::PatchOp::replace(
            "displayName",
            json!(name),
        )])
    };
    w.idp
        .patch("Users", &ids[1], &rename("Bob Two"), None)
        .await
        .unwrap();
    let (_, plan) = w.provision("plan-2", "Plan").await;
    assert_eq!(plan.planned.clone().unwrap().updates, 1);
    w.idp
        .patch("Users", &ids[1], &rename("Bob Three"), None)
        .await
        .unwrap();
    let (code, s) = approve(&w, "stale", "Provision", &digest(&plan)).await;
    assert_eq!(code, exit_code::INVALID as i32, "{s:?}");
    assert_eq!(condition(&s, "Failed").reason, "PlanChanged");
    assert_eq!(s.planned.clone().unwrap().updates, 1, "the same update ...");
    assert_ne!(digest(&s), digest(&plan), "... writing another value");
    let (accounts, _) = w.app.list("Users", &[], None).await.unwrap();
    let bob = accounts.iter().find(|a| a["userName"] == "bob").unwrap();
    assert_eq!(bob["displayName"], "BOB", "the account was not updated");
}
