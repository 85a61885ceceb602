//! The sync engine end to end: `catalogsync sync --run NS/NAME` (the built binary) against
//! the local control plane and real SCIM servers (an identity domain tenant `idp` and an
//! app tenant `app`), asserting on both SCIM sides and on the SyncRun's status.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use catalogsync::api::{CatalogApp, IdentityDomain, RunPhase, Stage, SyncPolicy, SyncRun};
use catalogsync::exit_code;
use catalogsync::scim::{self, ScimClient};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use crate::harness::{ControlPlane, control_plane};
use crate::scim_server::{FaultProxy, ScimServer, TenantSpec};

/// One test's world: a namespace with the four kinds, a SCIM server with two tenants,
/// and test-side SCIM clients to seed and inspect them.
struct World {
    cp: &'static ControlPlane,
    ns: String,
    server: ScimServer,
    idp: ScimClient,
    app: ScimClient,
    group_id: String,
    group_name: String,
    _proxy: Option<FaultProxy>,
}

/// Where the operator's objects point: straight at the server, or through a fault proxy.
enum Via {
    Direct,
    Proxy,
}

fn client(url: &str, token: &str) -> ScimClient {
    ScimClient::new(
        url,
        scim::Auth::Bearer(token.into()),
        None,
        scim::Timeouts::default(),
        8,
    )
    .expect("test SCIM client")
}

impl World {
    async fn new(prefix: &str, policy: Value, max_results: Option<u64>, via: Via) -> World {
        let cp = control_plane().await;
        let ns = cp.new_namespace(prefix).await;
        let server = ScimServer::start_with(
            vec![TenantSpec::new("idp"), TenantSpec::new("app")],
            max_results,
        );
        let (proxy, idp_url, app_url) = match via {
            Via::Direct => (None, server.base_url("idp"), server.base_url("app")),
            Via::Proxy => {
                let p = FaultProxy::start(&server.root());
                let (i, a) = (p.base_url("idp"), p.base_url("app"));
                (Some(p), i, a)
            }
        };
        let admin = cp.admin_client();
        let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns);
        for (name, tenant) in [("idp-token", "idp"), ("app-token", "app")] {
            let s: Secret = serde_json::from_value(json!({
                "metadata": {"name": name},
                "stringData": {"token": server.token(tenant)}
            }))
            .unwrap();
            secrets.create(&PostParams::default(), &s).await.unwrap();
        }
        create::<IdentityDomain>(
            cp,
            &ns,
            json!({"metadata": {"name": "corp"}, "spec": {
                "url": idp_url,
                "auth": {"bearerToken": {"secretRef": {"name": "idp-token", "key": "token"}}}
            }}),
        )
        .await;
        let mut policy_spec = json!({"matching": [
            {"appAttribute": "userName", "domainAttribute": "userName"},
            {"appAttribute": "emails[primary eq true].value", "domainAttribute": "emails.value"}
        ]});
        for (k, v) in policy.as_object().unwrap() {
            policy_spec[k] = v.clone();
        }
        create::<SyncPolicy>(
            cp,
            &ns,
            json!({"metadata": {"name": "default"}, "spec": policy_spec}),
        )
        .await;
        let app: CatalogApp = create(
            cp,
            &ns,
            json!({"metadata": {"name": "slack"}, "spec": {
                "identityDomainRef": {"name": "corp"},
                "connection": {"url": app_url,
                    "auth": {"bearerToken": {"secretRef": {"name": "app-token", "key": "token"}}}},
                "provisioning": {"enabled": true},
                "synchronization": {"enabled": true, "policyRef": {"name": "default"}}
            }}),
        )
        .await;
        let group_name = app.grant_group_name();
        assert_eq!(group_name, format!("catalogsync-{ns}-slack"));
        let idp = client(&server.base_url("idp"), &server.token("idp"));
        let appc = client(&server.base_url("app"), &server.token("app"));
        // The controller creates the grant group; here the test does.
        let group = idp
            .create(
                "Groups",
                &json!({"schemas": [scim::model::GROUP_SCHEMA], "displayName": group_name}),
            )
            .await
            .unwrap();
        let group_id = group["id"].as_str().unwrap().to_string();
        World {
            cp,
            ns,
            server,
            idp,
            app: appc,
            group_id,
            group_name,
            _proxy: proxy,
        }
    }

    fn proxy(&self) -> &FaultProxy {
        self._proxy.as_ref().expect("a world via the proxy")
    }

    /// Seeds users `{userName, email}` into a tenant; returns their ids in order.
    async fn seed(&self, tenant: &str, users: &[(&str, &str)]) -> Vec<String> {
        let users: Vec<Value> = users
            .iter()
            .map(|(n, e)| {
                json!({"userName": n, "active": true,
                       "emails": [{"value": e, "primary": true, "type": "work"}]})
            })
            .collect();
        self.server
            .seed(tenant, json!({"Users": users, "returnIds": true}))
            .await
    }

    async fn add_members(&self, ids: &[String]) {
        self.idp.add_members(&self.group_id, ids).await.unwrap();
    }

    async fn members(&self) -> HashSet<String> {
        let (m, _) = self
            .idp
            .group_members(&self.group_id)
            .await
            .unwrap()
            .unwrap();
        m.into_iter().collect()
    }

    async fn user_names(&self, c: &ScimClient) -> HashSet<String> {
        let (users, _) = c.list("Users", &["userName"], None).await.unwrap();
        users
            .iter()
            .map(|u| u["userName"].as_str().unwrap().to_lowercase())
            .collect()
    }

    async fn new_run(&self, name: &str, mode: &str) {
        create::<SyncRun>(
            self.cp,
            &self.ns,
            json!({"metadata": {"name": name},
                   "spec": {"appRef": {"name": "slack"}, "mode": mode}}),
        )
        .await;
    }

    fn command(&self, run: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_catalogsync"));
        cmd.args(["sync", "--run", &format!("{}/{run}", self.ns)])
            .env("KUBECONFIG", self.cp.kubeconfig_path())
            .env("RUST_LOG", "info")
            .env_remove("CATALOGSYNC_DOMAIN_TOKEN")
            .env_remove("CATALOGSYNC_APP_TOKEN")
            .stdin(Stdio::null())
            // The engine logs to stdout; CATALOGSYNC_TEST_LOGS=1 shows them.
            .stdout(if std::env::var_os("CATALOGSYNC_TEST_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        cmd
    }

    /// Creates a SyncRun and runs the engine on it to the end; returns (exit code, status).
    async fn run(&self, name: &str, mode: &str) -> (i32, catalogsync::api::SyncRunStatus) {
        self.new_run(name, mode).await;
        let status = tokio::time::timeout(Duration::from_secs(300), self.command(name).status())
            .await
            .expect("sync finished within 5 minutes")
            .expect("sync ran");
        (status.code().unwrap_or(-1), self.status(name).await)
    }

    async fn status(&self, name: &str) -> catalogsync::api::SyncRunStatus {
        Api::<SyncRun>::namespaced(self.cp.admin_client(), &self.ns)
            .get(name)
            .await
            .unwrap()
            .status
            .expect("the run has a status")
    }
}

async fn create<K>(cp: &ControlPlane, ns: &str, v: Value) -> K
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let mut v = v;
    v["apiVersion"] = json!(K::api_version(&()));
    v["kind"] = json!(K::kind(&()));
    let obj: K = serde_json::from_value(v).unwrap();
    Api::<K>::namespaced(cp.admin_client(), ns)
        .create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("creating {}: {e}", K::kind(&())))
}

fn condition<'a>(
    s: &'a catalogsync::api::SyncRunStatus,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {:?}", s.conditions))
}

/// Every situation in one run, then a rerun that finds nothing left to do.
#[tokio::test]
async fn import_handles_every_situation_and_reruns_idempotently() {
    let w = World::new("sync-situations", json!({}), None, Via::Direct).await;
    let users = w
        .seed(
            "idp",
            &[
                ("alice", "alice@corp.example"), // member, account present: already linked
                ("bob", "bob@corp.example"),     // account BOB: exact match (case-insensitive)
                ("carol", "carol@corp.example"), // member, account gone: record removed
                ("dan", "shared@corp.example"),  // two users share the email ...
                ("dora", "shared@corp.example"), // ... that one account matches: disputed
                ("ed", "ed.primary@corp.example"), // matched by email only (second rule)
            ],
        )
        .await;
    w.add_members(&[users[0].clone(), users[2].clone()]).await;
    w.seed(
        "app",
        &[
            ("alice", "alice@corp.example"),
            ("BOB", "bob@corp.example"),
            ("d.unknown", "shared@corp.example"),
            ("edward", "ED.PRIMARY@corp.example"),
            ("frank", "frank@corp.example"), // no match, onNoMatch Ignore
        ],
    )
    .await;
    let idp_before = w.user_names(&w.idp).await;

    let (code, s) = w.run("first", "Apply").await;
    assert_eq!(code, exit_code::SUCCESS as i32, "{s:?}");
    assert_eq!(s.phase, Some(RunPhase::Succeeded), "{s:?}");
    assert_eq!(s.stage, Some(Stage::Done));
    let c = s.counts.clone().unwrap();
    assert_eq!(
        (
            c.app_accounts,
            c.domain_users,
            c.already_linked,
            c.linked,
            c.created,
            c.deleted,
            c.unmatched,
            c.disputed,
            c.failed
        ),
        (5, 6, 1, 2, 0, 1, 1, 1, 0),
        "{c:?}"
    );
    let members = w.members().await;
    let want: HashSet<String> = [&users[0], &users[1], &users[5]]
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(
        members, want,
        "alice, bob and ed recorded; carol's record removed"
    );
    assert_eq!(
        w.user_names(&w.idp).await,
        idp_before,
        "no user created or deleted"
    );
    assert!(s.completion_time.is_some() && s.start_time.is_some());
    assert_eq!(condition(&s, "Complete").status, "True");
    assert_eq!(condition(&s, "LimitExceeded").status, "False");
    assert!(
        s.plan_items
            .iter()
            .any(|i| i.action == "Disputed" && i.subject == "d.unknown")
    );

    let (code, s) = w.run("second", "Apply").await;
    assert_eq!(code, 0);
    let c = s.counts.unwrap();
    assert_eq!(
        (
            c.already_linked,
            c.linked,
            c.deleted,
            c.disputed,
            c.unmatched
        ),
        (3, 0, 0, 1, 1),
        "a rerun has nothing to do"
    );
    assert_eq!(w.members().await, want);

    // A finished run is never run again (a retried Job exits with its outcome).
    let (code, again) = {
        let st = w.command("first").status().await.unwrap();
        (st.code().unwrap(), w.status("first").await)
    };
    assert_eq!(code, 0);
    assert_eq!(
        again.completion_time,
        w.status("first").await.completion_time
    );
}

/// 500 unmatched accounts, authoritative sync, maxCreates 37, 32 parallel workers: exactly
/// 37 users are created, and the run ends LimitExceeded with planned vs allowed.
#[tokio::test]
async fn apply_up_to_limit_creates_exactly_the_limit_under_parallelism() {
    let w = World::new(
        "sync-uptolimit",
        json!({"onNoMatch": "CreateUser", "parallelism": 32,
               "limits": {"maxCreates": 37, "whenExceeded": "ApplyUpToLimit"}}),
        None,
        Via::Direct,
    )
    .await;
    w.server.seed_users("app", "acct", 500).await;
    let before = w.user_names(&w.idp).await.len();

    let (code, s) = w.run("limited", "Apply").await;
    assert_eq!(code, exit_code::LIMIT_EXCEEDED as i32, "{s:?}");
    assert_eq!(s.phase, Some(RunPhase::LimitExceeded));
    let after = w.user_names(&w.idp).await;
    assert_eq!(
        after.len() - before,
        37,
        "exactly the limit, never one more"
    );
    let c = s.counts.clone().unwrap();
    assert_eq!((c.created, c.failed), (37, 0));
    assert_eq!(
        w.members().await.len(),
        37,
        "every created user is recorded"
    );
    assert_eq!(s.planned.as_ref().unwrap().creates, 500);
    assert_eq!(s.limits.as_ref().unwrap().max_creates, Some(37));
    let le = condition(&s, "LimitExceeded");
    assert_eq!(le.status, "True");
    assert_eq!(le.message, "planned 500 creates, allowed 37");
    // The created users carry the account's attributes.
    let (created, _) = w
        .idp
        .list("Users", &["userName", "emails", "name"], None)
        .await
        .unwrap();
    let u = &created[0];
    assert!(u["userName"].as_str().unwrap().starts_with("acct"));
    assert!(
        u["emails"][0]["value"]
            .as_str()
            .unwrap()
            .ends_with("@example.com")
    );
}

/// Abort applies nothing; a Plan run changes nothing and lists what it would do.
#[tokio::test]
async fn abort_and_plan_change_nothing() {
    let w = World::new(
        "sync-abort",
        json!({"onNoMatch": "CreateUser", "onAccountDeleted": "DeleteUser",
               "limits": {"maxCreates": 37, "maxDeletes": 0}}),
        None,
        Via::Direct,
    )
    .await;
    w.server.seed_users("app", "acct", 120).await;
    let gone = w.seed("idp", &[("gone", "gone@corp.example")]).await;
    w.add_members(&gone).await;
    let before = w.user_names(&w.idp).await;

    let (code, s) = w.run("aborted", "Apply").await;
    assert_eq!(code, exit_code::LIMIT_EXCEEDED as i32, "{s:?}");
    assert_eq!(s.phase, Some(RunPhase::LimitExceeded));
    assert_eq!(
        s.message.as_deref(),
        Some("nothing applied: planned 120 creates, allowed 37; planned 1 deletes, allowed 0")
    );
    let c = s.counts.clone().unwrap();
    assert_eq!((c.created, c.deleted, c.linked), (0, 0, 0));
    assert_eq!(
        w.user_names(&w.idp).await,
        before,
        "the domain is unchanged"
    );
    assert_eq!(w.members().await, gone.iter().cloned().collect());

    let (code, s) = w.run("preview", "Plan").await;
    assert_eq!(code, 0, "{s:?}");
    assert_eq!(s.phase, Some(RunPhase::Succeeded));
    assert_eq!(w.user_names(&w.idp).await, before, "a plan changes nothing");
    assert_eq!(w.members().await, gone.iter().cloned().collect());
    let p = s.planned.clone().unwrap();
    assert_eq!((p.creates, p.deletes), (120, 1));
    let creates = s
        .plan_items
        .iter()
        .filter(|i| i.action == "CreateUser")
        .count();
    assert_eq!(creates, 10, "the first 10 creates are listed");
    assert!(
        s.plan_items
            .iter()
            .any(|i| i.action == "DeleteUser" && i.subject == "gone")
    );
    assert_eq!(condition(&s, "LimitExceeded").status, "True");
}

/// Progress is written mid-run (not only at the end) and SIGTERM ends the run Cancelled
/// with counts that match what was really created.
#[tokio::test]
async fn progress_is_reported_and_sigterm_cancels_with_exact_counts() {
    let w = World::new(
        "sync-cancel",
        json!({"onNoMatch": "CreateUser", "parallelism": 2}),
        None,
        Via::Direct,
    )
    .await;
    w.server.seed_users("app", "acct", 4000).await;
    w.new_run("long", "Apply").await;
    let mut child = w.command("long").spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut saw_listing_or_planning = false;
    let mut mid_apply = None;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let Ok(Some(s)) = Api::<SyncRun>::namespaced(w.cp.admin_client(), &w.ns)
            .get("long")
            .await
            .map(|r| r.status)
        else {
            continue;
        };
        if matches!(s.stage, Some(Stage::Listing | Stage::Planning)) {
            saw_listing_or_planning = true;
        }
        if s.stage == Some(Stage::Applying)
            && let Some(p) = &s.progress
            && p.processed >= 200
            && p.processed < p.total
        {
            mid_apply = Some(s);
            break;
        }
        assert!(
            s.phase != Some(RunPhase::Succeeded),
            "finished before it could be cancelled"
        );
    }
    let mid = mid_apply.expect("progress observed mid-apply");
    assert!(saw_listing_or_planning || mid.planned.is_some());
    assert_eq!(mid.phase, Some(RunPhase::Running));
    assert_eq!(mid.progress.as_ref().unwrap().total, 4000);
    assert!(
        mid.message
            .as_deref()
            .unwrap_or("")
            .starts_with("applying:")
    );

    // SIGTERM: no new writes, in-flight ones finish, final status Cancelled.
    let pid = child.id().unwrap() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let st = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("exits soon after SIGTERM")
        .unwrap();
    assert_eq!(st.code(), Some(exit_code::CANCELLED as i32));
    let s = w.status("long").await;
    assert_eq!(s.phase, Some(RunPhase::Cancelled), "{s:?}");
    let created_in_domain = w.user_names(&w.idp).await.len() as i64;
    let c = s.counts.unwrap();
    assert_eq!(c.created, created_in_domain, "counts are exact");
    assert!(c.created < 4000);
    assert_eq!(
        w.members().await.len() as i64,
        created_in_domain,
        "created users recorded"
    );
}

/// 429s and 5xx injected in front of both sides: retries make the run succeed with
/// correct counts.
#[tokio::test]
async fn throttling_and_server_errors_are_retried() {
    let w = World::new(
        "sync-faults",
        json!({"onNoMatch": "CreateUser", "parallelism": 8}),
        Some(50),
        Via::Proxy,
    )
    .await;
    let ids = w.server.seed_users("idp", "u", 200).await;
    w.add_members(&ids[..50]).await; // u000000..u000049 already recorded
    w.server.seed_users("app", "u", 150).await; // u000000..u000149: 100 to link
    w.seed("app", &[("newbie", "newbie@corp.example")]).await; // 1 to create
    w.proxy()
        .plan(json!({"rate429": 0.08, "rate5xx": 0.05, "retryAfter": "0"}))
        .await;

    let (code, s) = w.run("faulty", "Apply").await;
    assert_eq!(code, 0, "{s:?}");
    let c = s.counts.unwrap();
    assert_eq!(
        (
            c.app_accounts,
            c.already_linked,
            c.linked,
            c.created,
            c.deleted,
            c.failed
        ),
        (151, 50, 100, 1, 0, 0),
        "{:?}",
        s.failures
    );
    assert_eq!(w.members().await.len(), 151);
    let stats = w.proxy().stats().await;
    let injected: u64 = stats["injected"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    assert!(injected > 0, "faults were injected: {stats}");
}

/// Accounts deleted in the app while the engine lists it shift index pages; no account
/// that still exists is taken for deleted.
#[tokio::test]
async fn accounts_deleted_while_listing_are_not_mistaken() {
    let w = World::new("sync-shift", json!({}), Some(50), Via::Direct).await;
    let n = 1500;
    let ids = w.server.seed_users("idp", "u", n).await;
    w.add_members(&ids).await;
    let app_ids = w.server.seed_users("app", "u", n).await;

    w.new_run("shifting", "Apply").await;
    let mut child = w.command("shifting").spawn().unwrap();
    // Delete the first accounts one by one while the listing runs: every deletion moves
    // every later account one index down.
    let deleted: Vec<usize> = (0..60).collect();
    for &i in &deleted {
        w.app.delete("Users", &app_ids[i], None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let st = tokio::time::timeout(Duration::from_secs(300), child.wait())
        .await
        .unwrap()
        .unwrap();
    let s = w.status("shifting").await;
    assert_eq!(st.code(), Some(0), "{s:?}");
    let members = w.members().await;
    for (i, id) in ids.iter().enumerate() {
        if i >= deleted.len() {
            assert!(
                members.contains(id),
                "user {i} lost its record though its account exists"
            );
        }
    }
    let c = s.counts.unwrap();
    let removed = (n - members.len()) as i64;
    assert_eq!(c.deleted, removed);
    assert!(removed <= deleted.len() as i64);
    // Every member was either seen (already linked) or confirmed gone (removed).
    assert_eq!(c.already_linked + c.deleted, n as i64, "{c:?}");
}

/// A missing grant group fails the run clearly.
#[tokio::test]
async fn missing_grant_group_fails_clearly() {
    let w = World::new("sync-nogroup", json!({}), None, Via::Direct).await;
    w.idp.delete("Groups", &w.group_id, None).await.unwrap();
    let (code, s) = w.run("nogroup", "Apply").await;
    assert_eq!(code, exit_code::FAILED as i32);
    assert_eq!(s.phase, Some(RunPhase::Failed));
    let msg = s.message.clone().unwrap();
    assert!(
        msg.contains(&w.group_name) && msg.contains("not found"),
        "{msg}"
    );
    assert_eq!(condition(&s, "Failed").status, "True");
}
