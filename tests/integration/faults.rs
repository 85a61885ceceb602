//! Exact and honest under failure: answers lost after the server applied a write, and a
//! sync pod killed mid-apply and retried by its Job. Real control plane, real SCIM servers,
//! the fault proxy forwarding a write and then losing its answer.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use catalogsync::api::{RunPhase, Stage, SyncRun};
use catalogsync::cluster::exit_code;
use kube::Api;
use serde_json::json;

use crate::sync_engine::{Via, World, condition};

/// The `externalId`s of a tenant's users: an Import's creates carry their account's id.
async fn external_ids(w: &World) -> Vec<String> {
    let (users, _) = w.idp.list("Users", &["externalId"], None).await.unwrap();
    users
        .iter()
        .filter_map(|u| u["externalId"].as_str().map(str::to_string))
        .collect()
}

/// Half of the write answers are lost after the server applied the write (the connection
/// cut, or a gateway's 502). Creates are never sent twice: a lost one is looked up. The
/// limit holds, no user is created twice, and the counts are what the server holds.
#[tokio::test]
async fn lost_answers_are_looked_up_not_guessed() {
    let w = World::new(
        "fault-lost",
        json!({"onNoMatch": "CreateUser", "parallelism": 4,
               "limits": {"maxCreates": 12, "whenExceeded": "ApplyUpToLimit"}}),
        None,
        Via::ProxyDomain,
    )
    .await;
    w.server.seed_users("app", "acct", 30).await;
    w.proxy().plan(json!({"rateLost": 0.5})).await;
    let (code, s) = w.run("lossy", "Apply").await;
    let stats = w.proxy().stats().await;
    assert!(
        stats["injected"]["lost"].as_u64().unwrap_or(0)
            + stats["injected"]["lost502"].as_u64().unwrap_or(0)
            > 0,
        "answers were lost: {stats}"
    );
    assert_ne!(s.phase, Some(RunPhase::Running), "{code} {s:?}");
    let c = s.counts.unwrap();
    let ext = external_ids(&w).await;
    let unique: HashSet<&String> = ext.iter().collect();
    assert_eq!(unique.len(), ext.len(), "no account got two users");
    assert!(ext.len() <= 12, "maxCreates holds: {}", ext.len());
    assert_eq!(
        c.created,
        ext.len() as i64,
        "counts are the server's: {c:?}"
    );

    // Without faults the next run records every user the lossy one created.
    w.proxy().plan(json!({})).await;
    let (code, s) = w.run("clean", "Apply").await;
    assert!(
        code == 0 || code == exit_code::LIMIT_EXCEEDED as i32,
        "{s:?}"
    );
    let users: HashSet<String> = {
        let (u, _) = w.idp.list("Users", &["id"], None).await.unwrap();
        u.iter()
            .map(|u| u["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(w.records().await, users, "every created user recorded");
}

/// SIGKILL in the middle of an apply, then the Job's retry of the same run: the retried
/// pod does not apply again (one run, one budget), ends Failed with reason Interrupted and
/// is not retried; the next run records what the killed one created.
#[tokio::test]
async fn a_killed_attempt_is_never_applied_twice() {
    let w = World::new(
        "fault-kill",
        json!({"onNoMatch": "CreateUser", "parallelism": 2,
               "limits": {"maxCreates": 50, "whenExceeded": "ApplyUpToLimit"}}),
        None,
        Via::Direct,
    )
    .await;
    w.server.seed_users("app", "acct", 300).await;
    w.new_run_towards("killed", "Import", "Apply").await;
    let mut child = w.command("killed").spawn().unwrap();
    let runs: Api<SyncRun> = Api::namespaced(w.cp.admin_client(), &w.ns);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "never saw the apply start");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let created = external_ids(&w).await.len();
        let stage = runs
            .get("killed")
            .await
            .unwrap()
            .status
            .and_then(|s| s.stage);
        if stage == Some(Stage::Applying) && created >= 5 {
            break;
        }
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let after_kill = external_ids(&w).await.len();
    assert!((5..=50).contains(&after_kill), "{after_kill}");

    // The Job retries the pod: the same run, again.
    let status = w.command("killed").status().await.unwrap();
    assert_eq!(
        status.code(),
        Some(exit_code::INVALID as i32),
        "not retried again"
    );
    let s = w.status("killed").await;
    assert_eq!(s.phase, Some(RunPhase::Failed), "{s:?}");
    assert_eq!(condition(&s, "Failed").reason, "Interrupted");
    assert_eq!(
        external_ids(&w).await.len(),
        after_kill,
        "nothing applied twice"
    );

    // The next run links what the killed attempt created and left unrecorded.
    let (_, s) = w.run("next", "Apply").await;
    let c = s.counts.unwrap();
    assert!(c.created <= 50, "{c:?}");
    let ext = external_ids(&w).await;
    assert_eq!(ext.len() as i64, after_kill as i64 + c.created);
    let records = w.records().await.len();
    assert_eq!(records, ext.len(), "every created user recorded");
}
