//! The engine end to end: `catalogsync sync --run NS/NAME` (the built binary) against
//! the local control plane and real SCIM servers (an identity domain tenant `idp` and an
//! app tenant `app`), asserting on both SCIM sides and on the SyncRun's status.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use catalogsync::api::{
    CatalogApp, GroupRole, IdentityDomain, RunPhase, Stage, SyncPolicy, SyncRun, SyncRunStatus,
};
use catalogsync::cluster::{exit_code, groups};
use catalogsync::scim::{self, ScimClient};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::harness::{ControlPlane, control_plane};
use crate::scim_server::{FaultProxy, ScimServer, TenantSpec};

/// One test's world: a namespace with the four kinds, a SCIM server with two tenants,
/// and test-side SCIM clients to seed and inspect them. Shared with `provisioning`.
pub(crate) struct World {
    pub(crate) cp: &'static ControlPlane,
    pub(crate) ns: String,
    pub(crate) server: ScimServer,
    pub(crate) idp: ScimClient,
    pub(crate) app: ScimClient,
    pub(crate) group_id: String,
    pub(crate) record_id: String,
    group_name: String,
    _proxy: Option<FaultProxy>,
    /// Where the engine's output goes, at debug level (else nowhere).
    engine_log: Option<std::path::PathBuf>,
}

/// Where the operator's objects point: straight at the server, or through a fault proxy.
pub(crate) enum Via {
    Direct,
    Proxy,
    /// Only the identity domain behind the proxy.
    ProxyDomain,
}

fn client(url: &str, token: &str) -> ScimClient {
    client_as(url, token, "GenericSCIM")
}

/// A test-side client that follows a catalog entry's conventions, as the engine's does.
pub(crate) fn client_as(url: &str, token: &str, catalog_item: &str) -> ScimClient {
    let mut opts = scim::ClientOptions::new(url, scim::Auth::Bearer(token.into()));
    opts.parallelism = 8;
    if let Some(e) = catalogsync::api::catalog::get(catalog_item) {
        opts.send_count = e.scim.send_count;
    }
    ScimClient::with_options(opts).expect("test SCIM client")
}

/// Other SCIM servers than the world's scim2-server tenants (`interop`): each a base URL
/// and a bearer token, and the app's catalog entry.
#[derive(Default)]
pub(crate) struct Ends {
    pub(crate) domain: Option<(String, String)>,
    pub(crate) app: Option<(String, String)>,
    pub(crate) catalog_item: Option<&'static str>,
}

impl World {
    pub(crate) async fn new(
        prefix: &str,
        policy: Value,
        max_results: Option<u64>,
        via: Via,
    ) -> World {
        Self::with_ends(prefix, policy, max_results, via, Ends::default()).await
    }

    /// A world whose identity domain or app (or both) is another server.
    pub(crate) async fn with_ends(
        prefix: &str,
        policy: Value,
        max_results: Option<u64>,
        via: Via,
        ends: Ends,
    ) -> World {
        let cp = control_plane().await;
        let ns = cp.new_namespace(prefix).await;
        // Tokens no code path would make up: a leak scan finds them wherever they leak.
        let tenant = |name: &str| TenantSpec {
            token: format!("token-{name}-{:016x}", rand::random::<u64>()),
            ..TenantSpec::new(name)
        };
        let server = ScimServer::start_with(vec![tenant("idp"), tenant("app")], max_results);
        let (proxy, idp_url, app_url) = match via {
            Via::Direct => (None, server.base_url("idp"), server.base_url("app")),
            Via::Proxy => {
                let p = FaultProxy::start(&server.root());
                let (i, a) = (p.base_url("idp"), p.base_url("app"));
                (Some(p), i, a)
            }
            Via::ProxyDomain => {
                let p = FaultProxy::start(&server.root());
                let i = p.base_url("idp");
                (Some(p), i, server.base_url("app"))
            }
        };
        let (idp_url, idp_token) = ends
            .domain
            .clone()
            .unwrap_or((idp_url, server.token("idp")));
        let (app_url, app_token) = ends.app.clone().unwrap_or((app_url, server.token("app")));
        let admin = cp.admin_client();
        let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns);
        for (name, token) in [("idp-token", &idp_token), ("app-token", &app_token)] {
            let s: Secret = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"catalogsync.io/credentials": "true"}},
                "stringData": {"token": token}
            }))
            .unwrap();
            secrets.create(&PostParams::default(), &s).await.unwrap();
        }
        create::<IdentityDomain>(
            cp,
            &ns,
            json!({"metadata": {"name": "corp"}, "spec": {
                "url": idp_url, "insecure": true,
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
                "catalogItem": ends.catalog_item.unwrap_or("GenericSCIM"),
                "connection": {"url": app_url, "insecure": true,
                    "auth": {"bearerToken": {"secretRef": {"name": "app-token", "key": "token"}}}},
                "provisioning": {"enabled": true},
                "synchronization": {"enabled": true, "policyRef": {"name": "default"}}
            }}),
        )
        .await;
        let group_name = app.grant_group_name();
        assert_eq!(group_name, format!("catalogsync-{ns}-slack"));
        let idp = match &ends.domain {
            Some((url, token)) => client(url, token),
            None => client(&server.base_url("idp"), &server.token("idp")),
        };
        let appc = match &ends.app {
            Some((url, token)) => client_as(url, token, ends.catalog_item.unwrap_or("GenericSCIM")),
            None => client(&server.base_url("app"), &server.token("app")),
        };
        // The controller creates both groups; here the test does, as the controller would.
        let group_id = groups::ensure(&idp, &app, GroupRole::Grant, None)
            .await
            .unwrap();
        let record_id = groups::ensure(&idp, &app, GroupRole::Record, None)
            .await
            .unwrap();
        World {
            record_id,
            cp,
            ns,
            server,
            idp,
            app: appc,
            group_id,
            group_name,
            _proxy: proxy,
            engine_log: None,
        }
    }

    /// Appends the output of every engine run from now on to `file`, at debug level.
    pub(crate) fn keep_engine_logs(&mut self, file: &std::path::Path) {
        self.engine_log = Some(file.to_path_buf());
    }

    pub(crate) fn proxy(&self) -> &FaultProxy {
        self._proxy.as_ref().expect("a world via the proxy")
    }

    /// Seeds users `{userName, email}` into a tenant; returns their ids in order.
    pub(crate) async fn seed(&self, tenant: &str, users: &[(&str, &str)]) -> Vec<String> {
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

    /// Grants and records `ids`: users whose account is linked.
    pub(crate) async fn add_members(&self, ids: &[String]) {
        self.grant(ids).await;
        self.record(ids).await;
    }

    /// Grants `ids` only (not yet provisioned).
    pub(crate) async fn grant(&self, ids: &[String]) {
        self.idp.add_members(&self.group_id, ids).await.unwrap();
    }

    /// Records `ids` only.
    pub(crate) async fn record(&self, ids: &[String]) {
        self.idp.add_members(&self.record_id, ids).await.unwrap();
    }

    /// The grant group's members.
    pub(crate) async fn members(&self) -> HashSet<String> {
        self.group(&self.group_id).await
    }

    /// The record group's members.
    pub(crate) async fn records(&self) -> HashSet<String> {
        self.group(&self.record_id).await
    }

    async fn group(&self, id: &str) -> HashSet<String> {
        let (m, _) = self.idp.group_members(id).await.unwrap().unwrap();
        m.into_iter().collect()
    }

    pub(crate) async fn user_names(&self, c: &ScimClient) -> HashSet<String> {
        let (users, _) = c.list("Users", &["userName"], None).await.unwrap();
        users
            .iter()
            .map(|u| u["userName"].as_str().unwrap().to_lowercase())
            .collect()
    }

    async fn new_run(&self, name: &str, mode: &str) {
        self.new_run_towards(name, "Import", mode).await
    }

    pub(crate) async fn new_run_towards(&self, name: &str, direction: &str, mode: &str) {
        create::<SyncRun>(
            self.cp,
            &self.ns,
            json!({"metadata": {"name": name},
                   "spec": {"appRef": {"name": "slack"}, "direction": direction, "mode": mode}}),
        )
        .await;
    }

    pub(crate) fn command(&self, run: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("/proc/self/exe");
        cmd.args([
            "sync_engine::engine_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENGINE_RUN_ENV, format!("{}/{run}", self.ns))
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
        if let Some(path) = &self.engine_log {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("the engine log");
            cmd.env("RUST_LOG", "debug")
                .stdout(file.try_clone().unwrap())
                .stderr(file);
        }
        cmd
    }

    /// Creates an Import SyncRun and runs the engine on it to the end; returns (exit code,
    /// status).
    pub(crate) async fn run(&self, name: &str, mode: &str) -> (i32, SyncRunStatus) {
        self.run_towards(name, "Import", mode).await
    }

    /// The same for a Provision run (identity domain → app).
    pub(crate) async fn provision(&self, name: &str, mode: &str) -> (i32, SyncRunStatus) {
        self.run_towards(name, "Provision", mode).await
    }

    async fn run_towards(&self, name: &str, direction: &str, mode: &str) -> (i32, SyncRunStatus) {
        self.new_run_towards(name, direction, mode).await;
        self.execute(name).await
    }

    /// Creates a SyncRun of the app with `spec` merged in, and runs the engine on it.
    pub(crate) async fn run_with(&self, name: &str, spec: Value) -> (i32, SyncRunStatus) {
        let mut full = json!({"appRef": {"name": "slack"}});
        full.as_object_mut()
            .unwrap()
            .extend(spec.as_object().unwrap().clone());
        create::<SyncRun>(
            self.cp,
            &self.ns,
            json!({"metadata": {"name": name}, "spec": full}),
        )
        .await;
        self.execute(name).await
    }

    /// Runs the engine on the existing SyncRun `name` to the end.
    async fn execute(&self, name: &str) -> (i32, SyncRunStatus) {
        let status = tokio::time::timeout(Duration::from_secs(300), self.command(name).status())
            .await
            .expect("sync finished within 5 minutes")
            .expect("sync ran");
        (status.code().unwrap_or(-1), self.status(name).await)
    }

    /// Merges `spec` into the app's spec.
    pub(crate) async fn patch_app(&self, spec: Value) {
        Api::<CatalogApp>::namespaced(self.cp.admin_client(), &self.ns)
            .patch(
                "slack",
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await
            .unwrap();
    }

    /// Merges `provisioning` into the app's `spec.provisioning`.
    pub(crate) async fn set_provisioning(&self, provisioning: Value) {
        self.patch_app(json!({ "provisioning": provisioning }))
            .await
    }

    pub(crate) async fn status(&self, name: &str) -> SyncRunStatus {
        Api::<SyncRun>::namespaced(self.cp.admin_client(), &self.ns)
            .get(name)
            .await
            .unwrap()
            .status
            .expect("the run has a status")
    }
}

/// A private copy of the built binary, taken on first use: worktrees sharing one
/// CARGO_TARGET_DIR overwrite each other's `catalogsync` while tests run.
pub fn binary() -> &'static std::path::Path {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let path = dir.join("catalogsync");
        std::fs::copy(env!("CARGO_BIN_EXE_catalogsync"), &path).unwrap();
        let ok = std::process::Command::new(&path)
            .args(["sync", "--help"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "the built catalogsync has no sync subcommand (replaced by another build?)"
        );
        path
    })
}

/// Set in a child process of this test binary to make it run the engine (see
/// [`engine_process`]).
const ENGINE_RUN_ENV: &str = "CATALOGSYNC_TEST_ENGINE_RUN";

/// The engine as a child process: this test binary re-executed (through /proc/self/exe,
/// which stays this very build even if a worktree sharing CARGO_TARGET_DIR rebuilds the
/// file), running only this test, which calls the same entry point as `catalogsync sync`
/// and exits with its code. Without the variable it does nothing.
#[test]
fn engine_process() {
    let Ok(run) = std::env::var(ENGINE_RUN_ENV) else {
        return;
    };
    // JSON when asked, as the Job logs.
    let format = match std::env::var_os("CATALOGSYNC_TEST_LOG_JSON") {
        Some(_) => catalogsync::telemetry::LogFormat::Json,
        None => Default::default(),
    };
    catalogsync::telemetry::init(format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let code = rt.block_on(catalogsync::engine::main(&run));
    std::process::exit(code.into());
}

async fn create<K>(cp: &ControlPlane, ns: &str, v: Value) -> K
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    crate::harness::create(&cp.admin_client(), ns, v)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// The run ended Failed, with exit code 1 and a message starting with `prefix`.
fn assert_failed(code: i32, s: &SyncRunStatus, prefix: &str) {
    assert_eq!(code, exit_code::FAILED as i32, "{s:?}");
    assert_eq!(s.phase, Some(RunPhase::Failed));
    let msg = s.message.as_deref().unwrap_or_default();
    assert!(msg.starts_with(prefix), "{msg}");
}

pub(crate) fn condition<'a>(
    s: &'a SyncRunStatus,
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

/// Progress is written mid-run (not only at the end) and a SIGTERM the controller did not
/// ask for (a pod deleted or evicted) ends the run Failed, `Interrupted`, not retried, with
/// counts that match what was really created. (A cancel marks the run first and ends it
/// `Cancelled`: the controller's tests.)
#[tokio::test]
async fn progress_is_reported_and_sigterm_interrupts_with_exact_counts() {
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
    // The whole plan is on record before the first write.
    assert_eq!(
        mid.planned.as_ref().map(|p| p.creates),
        Some(4000),
        "{mid:?}"
    );
    assert_eq!(mid.phase, Some(RunPhase::Running));
    assert_eq!(mid.progress.as_ref().unwrap().total, 4000);
    assert!(
        mid.message
            .as_deref()
            .unwrap_or("")
            .starts_with("applying:")
    );

    // SIGTERM: no new writes, in-flight ones finish, final status Failed, Interrupted,
    // and the exit code the podFailurePolicy fails the Job on.
    let pid = child.id().unwrap() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let st = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("exits soon after SIGTERM")
        .unwrap();
    assert_eq!(st.code(), Some(exit_code::INVALID as i32));
    let s = w.status("long").await;
    assert_eq!(s.phase, Some(RunPhase::Failed), "{s:?}");
    assert_eq!(condition(&s, "Failed").reason, "Interrupted");
    assert!(
        s.message
            .as_deref()
            .unwrap_or("")
            .starts_with("interrupted: "),
        "{s:?}"
    );
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

/// The real Job path: the `catalogsync-sync-job` identity of `deploy/` (RBAC enforced,
/// no Secret access) with SCIM credentials in the environment, as the Job builder sets them.
#[tokio::test]
async fn runs_as_the_sync_job_identity_with_credentials_from_env() {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::RoleBinding;

    let w = World::new("sync-jobid", json!({}), None, Via::Direct).await;
    let deploy = crate::harness::repo_path("deploy").display().to_string();
    let out =
        w.cp.kubectl(["apply", "-k", &deploy, "--server-side", "--force-conflicts"])
            .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sa = "catalogsync-sync-job";
    create::<ServiceAccount>(w.cp, &w.ns, json!({"metadata": {"name": sa}})).await;
    create::<RoleBinding>(
        w.cp,
        &w.ns,
        json!({"metadata": {"name": sa},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": sa},
               "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": w.ns}]}),
    )
    .await;
    let token = Api::<ServiceAccount>::namespaced(w.cp.admin_client(), &w.ns)
        .create_token_request(
            sa,
            &PostParams::default(),
            &TokenRequest {
                spec: TokenRequestSpec {
                    expiration_seconds: Some(3600),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let mut kubeconfig: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(w.cp.kubeconfig_path()).unwrap()).unwrap();
    kubeconfig["users"][0]["user"]["token"] = serde_yaml_ng::Value::String(token);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, serde_yaml_ng::to_string(&kubeconfig).unwrap()).unwrap();

    let users = w.seed("idp", &[("alice", "alice@corp.example")]).await;
    w.seed("app", &[("alice", "alice@corp.example")]).await;
    w.new_run("as-job", "Apply").await;
    // The run's own Role and RoleBinding, as the controller creates them with the Job:
    // the shared role grants nothing, so the run works with exactly these.
    let admin = w.cp.admin_client();
    let run: SyncRun = Api::namespaced(admin.clone(), &w.ns)
        .get("as-job")
        .await
        .unwrap();
    let app: CatalogApp = Api::namespaced(admin.clone(), &w.ns)
        .get(&run.spec.app_ref.name)
        .await
        .unwrap();
    let policy = app
        .spec
        .synchronization
        .as_ref()
        .map(|s| s.policy_ref.name.as_str());
    let config = catalogsync::controller::sync_run::job::JobConfig::new("catalogsync", sa);
    use catalogsync::controller::sync_run::job::{access_binding, access_role};
    Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(admin.clone(), &w.ns)
        .create(&PostParams::default(), &access_role(&run, &app, policy))
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(admin, &w.ns)
        .create(&PostParams::default(), &access_binding(&run, &config))
        .await
        .unwrap();
    let status = w
        .command("as-job")
        .env("KUBECONFIG", &path)
        .env("CATALOGSYNC_DOMAIN_TOKEN", w.server.token("idp"))
        .env("CATALOGSYNC_APP_TOKEN", w.server.token("app"))
        .status()
        .await
        .unwrap();
    let s = w.status("as-job").await;
    assert_eq!(status.code(), Some(0), "{s:?}");
    assert_eq!(s.counts.unwrap().linked, 1);
    assert_eq!(w.members().await, users.into_iter().collect());
}

/// onAccountDeleted DeactivateUser and DeleteUser, with a deletes limit applied exactly.
#[tokio::test]
async fn deleted_accounts_deactivate_or_delete_their_users() {
    let w = World::new(
        "sync-deletes",
        json!({"onAccountDeleted": "DeactivateUser",
               "limits": {"maxDeletes": 1, "whenExceeded": "ApplyUpToLimit"}}),
        None,
        Via::Direct,
    )
    .await;
    let users = w
        .seed(
            "idp",
            &[
                ("u1", "u1@corp.example"),
                ("u2", "u2@corp.example"),
                ("u3", "u3@corp.example"),
                ("u4", "u4@corp.example"),
            ],
        )
        .await;
    w.add_members(&users).await;
    w.seed(
        "app",
        &[("u1", "u1@corp.example"), ("u2", "u2@corp.example")],
    )
    .await;

    let (code, s) = w.run("deactivate", "Apply").await;
    assert_eq!(code, exit_code::LIMIT_EXCEEDED as i32, "{s:?}");
    assert_eq!(s.counts.as_ref().unwrap().deleted, 1);
    assert_eq!(
        condition(&s, "LimitExceeded").message,
        "planned 2 deletes, allowed 1"
    );
    let members = w.members().await;
    assert_eq!(members.len(), 3);
    let gone: Vec<&String> = users[2..]
        .iter()
        .filter(|u| !members.contains(*u))
        .collect();
    assert_eq!(gone.len(), 1);
    let deactivated = w.idp.get("Users", gone[0], &[]).await.unwrap().unwrap();
    assert_eq!(deactivated["active"], json!(false), "{deactivated}");

    Api::<SyncPolicy>::namespaced(w.cp.admin_client(), &w.ns)
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"onAccountDeleted": "DeleteUser", "limits": null}})),
        )
        .await
        .unwrap();
    let (code, s) = w.run("delete", "Apply").await;
    assert_eq!(code, 0, "{s:?}");
    assert_eq!(s.counts.unwrap().deleted, 1);
    let left: HashSet<String> = users[..2].iter().cloned().collect();
    assert_eq!(w.members().await, left);
    let other = users[2..].iter().find(|u| *u != gone[0]).unwrap();
    assert!(
        w.idp.get("Users", other, &[]).await.unwrap().is_none(),
        "deleted"
    );
    assert!(
        w.idp.get("Users", gone[0], &[]).await.unwrap().is_some(),
        "only deactivated"
    );
}

/// Provisioning (direction Provision): granted users get accounts with the mapped
/// attributes and externalId and are recorded, drift is updated, a revoked user's account
/// is deactivated (its record stays: it stays revoked), accounts of no user are left alone;
/// a rerun has nothing to do.
#[tokio::test]
async fn provision_follows_the_grant_group() {
    let w = World::new("sync-provision", json!({}), None, Via::Direct).await;
    let users = w
        .seed(
            "idp",
            &[
                ("alice", "alice@corp.example"),
                ("bob", "bob.new@corp.example"),
                ("carol", "carol@corp.example"),
                ("dave", "dave@corp.example"),
            ],
        )
        .await;
    // alice and carol: granted, pending provisioning; bob: granted and recorded; dave:
    // recorded, no longer granted.
    w.grant(&users[..3]).await;
    w.record(&[users[1].clone(), users[3].clone()]).await;
    let accounts: Vec<Value> = vec![
        json!({"userName": "bob", "externalId": users[1], "active": true,
               "emails": [{"value": "bob.old@corp.example", "primary": true}]}),
        json!({"userName": "dave", "externalId": users[3], "active": true}),
        json!({"userName": "grace", "active": true}),
    ];
    let app_ids = w
        .server
        .seed("app", json!({"Users": accounts, "returnIds": true}))
        .await;
    let (code, s) = w.provision("prov-plan", "Plan").await;
    assert_eq!(code, 0, "{s:?}");
    let p = s.planned.unwrap();
    assert_eq!((p.creates, p.updates, p.deletes), (2, 1, 1));
    let c = s.counts.unwrap();
    assert_eq!(
        (c.skipped, c.unmatched, c.pending_provisioning),
        (2, 1, 2),
        "{c:?}"
    );
    assert_eq!(
        w.user_names(&w.app).await.len(),
        3,
        "a plan changes nothing"
    );

    let (code, s) = w.provision("prov-apply", "Apply").await;
    assert_eq!(code, 0, "{s:?}");
    let c = s.counts.unwrap();
    assert_eq!(
        (c.created, c.updated, c.deleted, c.failed, c.failed_records),
        (2, 1, 1, 0, 0),
        "{c:?}"
    );
    assert_eq!(
        (c.already_linked, c.revoked, c.pending_provisioning),
        (1, 1, 0)
    );
    let (accts, _) = w
        .app
        .list(
            "Users",
            &["userName", "externalId", "active", "emails"],
            None,
        )
        .await
        .unwrap();
    let by_name = |n: &str| accts.iter().find(|a| a["userName"] == n).cloned().unwrap();
    assert_eq!(by_name("alice")["externalId"], json!(users[0]));
    assert_eq!(
        by_name("alice")["emails"][0]["value"],
        json!("alice@corp.example")
    );
    assert_eq!(
        by_name("bob")["emails"][0]["value"],
        json!("bob.new@corp.example")
    );
    assert_eq!(
        by_name("dave")["active"],
        json!(false),
        "revoked: deactivated"
    );
    assert_eq!(
        by_name("grace")["active"],
        json!(true),
        "never ours: untouched"
    );
    assert_eq!(accts.len(), 5);
    assert!(
        w.app
            .get("Users", &app_ids[1], &[])
            .await
            .unwrap()
            .is_some()
    );
    let recorded: HashSet<String> = users.iter().cloned().collect();
    assert_eq!(w.records().await, recorded, "created and kept records");
    assert_eq!(w.members().await.len(), 3, "Provision never writes grants");

    let (code, s) = w.provision("prov-again", "Apply").await;
    assert_eq!(code, 0, "{s:?}");
    let c = s.counts.unwrap();
    assert_eq!(
        (c.already_linked, c.created, c.updated, c.deleted, c.revoked),
        (3, 0, 0, 0, 1),
        "a rerun has nothing to do: {c:?}"
    );
}

/// Throughput on a large tenant pair (run by hand: `cargo test --test integration
/// large_import -- --ignored --nocapture`, with CATALOGSYNC_TEST_LOGS=1 for the traffic).
#[tokio::test]
#[ignore = "slow: 20,000 accounts"]
async fn large_import_links_everything_in_few_requests() {
    let n = 20_000;
    let w = World::new("sync-large", json!({"parallelism": 8}), None, Via::Direct).await;
    w.server.seed_users("idp", "u", n).await;
    w.server.seed_users("app", "u", n).await;
    let started = Instant::now();
    let (code, s) = w.run("large", "Apply").await;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(code, 0, "{s:?}");
    assert_eq!(s.counts.unwrap().linked, n as i64);
    assert_eq!(w.members().await.len(), n);
    eprintln!(
        "imported {n} accounts in {secs:.1}s ({:.0}/s)",
        n as f64 / secs
    );
}

/// The confirmation of deletion candidates against a real app: a candidate whose account
/// the listing missed is kept (found by userName, by any email, or by externalId); only
/// accounts really gone are confirmed, including members the user listing never showed.
#[tokio::test]
async fn deletion_candidates_are_confirmed_against_the_app() {
    use catalogsync::engine::confirm::confirm_deletions;
    use catalogsync::engine::plan::Deletion;

    let server = ScimServer::start(&["idp", "app"]);
    let idp = client(&server.base_url("idp"), &server.token("idp"));
    let app = client(&server.base_url("app"), &server.token("app"));
    let seed = |tenant: &'static str, users: Value| {
        let server = &server;
        async move {
            server
                .seed(tenant, json!({"Users": users, "returnIds": true}))
                .await
        }
    };
    // A nested group in the grant group: not a user, never a deletion.
    let nested = idp
        .create(
            "Groups",
            &json!({"schemas": [scim::model::GROUP_SCHEMA], "displayName": "nested"}),
        )
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // An unlisted member (the listing missed it) whose account exists under its email.
    let unlisted = seed(
        "idp",
        json!([{"userName": "hidden", "emails": [{"value": "hidden@corp.example", "primary": true}]}]),
    )
    .await;
    seed(
        "app",
        json!([
            {"userName": "ALICE"},
            {"userName": "b.smith", "emails": [{"value": "other@x.example"}, {"value": "bob@corp.example", "primary": true}]},
            {"userName": "whatever", "externalId": "u-erin"},
            {"userName": "h", "emails": [{"value": "hidden@corp.example", "primary": true}]}
        ]),
    )
    .await;
    let rules = user_name_then_email();
    let users = vec![
        user("u-alice", "alice", "alice@corp.example"),
        user("u-bob", "bob", "bob@corp.example"),
        user("u-carol", "carol", "carol@corp.example"),
        user("u-erin", "erin", "erin@corp.example"),
    ];
    let candidates: Vec<Deletion> = (0..4)
        .map(|i| Deletion {
            user_id: users[i].id.clone(),
            user: Some(i as u32),
            granted: true,
        })
        .chain([
            Deletion {
                user_id: unlisted[0].clone(),
                user: None,
                granted: true,
            },
            Deletion {
                user_id: "u-deleted-meanwhile".into(),
                user: None,
                granted: true,
            },
            Deletion {
                user_id: nested,
                user: None,
                granted: true,
            },
        ])
        .collect();
    let checked = std::sync::atomic::AtomicUsize::new(0);
    let users = catalogsync::engine::records::Records::of_users(rules.app.len(), &users);
    let (confirmed, still_there) =
        confirm_deletions(&idp, &app, &rules, candidates, &users, 4, || {
            checked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
        .await
        .unwrap();
    let ids: Vec<&str> = confirmed.iter().map(|d| d.user_id.as_str()).collect();
    assert_eq!(ids, ["u-carol", "u-deleted-meanwhile"]);
    assert_eq!(
        still_there, 4,
        "alice by userName, bob by email, erin by externalId, hidden"
    );
    assert_eq!(checked.into_inner(), 7);
}

/// An app that rejects `or` filters (400 invalidFilter): the confirmation falls back to one
/// lookup per clause, so a candidate whose account is gone is still confirmed and one whose
/// account only its email finds is kept; the rejection is met once, not once per candidate.
#[tokio::test]
async fn deletion_candidates_are_confirmed_without_or_filters() {
    use catalogsync::engine::confirm::confirm_deletions;
    use catalogsync::engine::plan::Deletion;
    use catalogsync::engine::records::Records;

    let server = ScimServer::start(&["idp", "app"]);
    let proxy = FaultProxy::start(&server.root());
    proxy.plan(json!({"rejectOrFilter": true})).await;
    let idp = client(&server.base_url("idp"), &server.token("idp"));
    let app = client(&proxy.base_url("app"), &server.token("app"));
    // dave's account is still there (the listing missed it), found by its email only.
    server
        .seed(
            "app",
            json!({"Users": [
                {"userName": "d.other", "emails": [{"value": "dave@corp.example", "primary": true}]}
            ]}),
        )
        .await;
    let rules = user_name_then_email();
    let users = [
        user("u-carol", "carol", "carol@corp.example"),
        user("u-dave", "dave", "dave@corp.example"),
        user("u-frank", "frank", "frank@corp.example"),
    ];
    let candidates: Vec<Deletion> = (0..users.len())
        .map(|i| Deletion {
            user_id: users[i].id.clone(),
            user: Some(i as u32),
            granted: true,
        })
        .collect();
    let users = Records::of_users(rules.app.len(), &users);
    let (confirmed, still_there) =
        confirm_deletions(&idp, &app, &rules, candidates, &users, 1, || {})
            .await
            .expect("the Import does not fail on an app without `or` filters");
    let ids: Vec<&str> = confirmed.iter().map(|d| d.user_id.as_str()).collect();
    assert_eq!(
        ids,
        ["u-carol", "u-frank"],
        "accounts really gone are deleted"
    );
    assert_eq!(still_there, 1, "dave, found by the email clause");
    let stats = proxy.stats().await;
    assert_eq!(
        stats["injected"]["invalidFilter"], 1,
        "the rejection is remembered for the run: {stats}"
    );
    // The rejected query, then at most 3 clauses per candidate (dave's stops at the email,
    // whose hit may take one more page request).
    assert!(
        stats["requests"].as_u64().unwrap() <= 1 + 3 * 3 + 1,
        "{stats}"
    );
}

/// The real CLI: `catalogsync sync --run` is wired to the engine (a bad reference is a
/// configuration error, a missing run too).
#[tokio::test]
async fn the_cli_runs_the_engine() {
    let cp = control_plane().await;
    let bin = env!("CARGO_BIN_EXE_catalogsync");
    let bad = tokio::process::Command::new(bin)
        .args(["sync", "--run", "no-slash"])
        .output()
        .await
        .unwrap();
    assert_eq!(bad.status.code(), Some(exit_code::INVALID as i32));
    let missing = tokio::process::Command::new(bin)
        .args(["sync", "--run", "default/no-such-run"])
        .env("KUBECONFIG", cp.kubeconfig_path())
        .output()
        .await
        .unwrap();
    assert_eq!(
        missing.status.code(),
        Some(exit_code::INVALID as i32),
        "{}",
        String::from_utf8_lossy(&missing.stdout)
    );
}

/// The policy timeout stops a run like SIGTERM does, but ends it Failed; counts stay exact.
#[tokio::test]
async fn the_policy_timeout_fails_the_run_with_exact_counts() {
    let w = World::new(
        "sync-timeout",
        json!({"onNoMatch": "CreateUser", "parallelism": 1, "timeout": "3s"}),
        None,
        Via::Direct,
    )
    .await;
    w.server.seed_users("app", "acct", 3000).await;
    let (code, s) = w.run("slow", "Apply").await;
    assert_failed(code, &s, "timed out after 3s");
    assert_eq!(condition(&s, "Failed").reason, "Timeout");
    let created = w.user_names(&w.idp).await.len() as i64;
    assert_eq!(s.counts.unwrap().created, created);
    assert!(created < 3000);
}

/// A run whose configuration is broken fails at once with a clear message and the
/// "invalid" exit code (retrying cannot help), before touching either side.
#[tokio::test]
async fn a_missing_policy_is_an_invalid_run() {
    let w = World::new("sync-nopolicy", json!({}), None, Via::Direct).await;
    Api::<SyncPolicy>::namespaced(w.cp.admin_client(), &w.ns)
        .delete("default", &Default::default())
        .await
        .unwrap();
    let (code, s) = w.run("orphan", "Apply").await;
    assert_eq!(code, exit_code::INVALID as i32, "{s:?}");
    assert_eq!(s.phase, Some(RunPhase::Failed));
    assert_eq!(s.message.as_deref(), Some("SyncPolicy default not found"));
    assert!(s.completion_time.is_some());
}

/// A run of a suspended app ends Cancelled at once and changes nothing.
#[tokio::test]
async fn a_suspended_app_cancels_the_run() {
    let w = World::new("sync-suspended", json!({}), None, Via::Direct).await;
    w.seed("idp", &[("alice", "alice@corp.example")]).await;
    w.seed("app", &[("alice", "alice@corp.example")]).await;
    w.patch_app(json!({"suspend": true})).await;
    let (code, s) = w.run("while-suspended", "Apply").await;
    assert_eq!(code, exit_code::CANCELLED as i32, "{s:?}");
    assert_eq!(s.phase, Some(RunPhase::Cancelled));
    assert_eq!(s.message.as_deref(), Some("CatalogApp slack is suspended"));
    assert!(w.members().await.is_empty(), "nothing linked");
}

/// Past maxFailurePercent (once 10 changes were attempted) the run stops issuing writes and
/// ends Failed. The identity domain refuses every create (HTTP 400 from the fault proxy).
#[tokio::test]
async fn too_many_failures_stop_the_run() {
    let w = World::new(
        "sync-failures",
        json!({"onNoMatch": "CreateUser", "parallelism": 1, "maxFailurePercent": 40}),
        None,
        Via::ProxyDomain,
    )
    .await;
    w.server.seed_users("app", "acct", 50).await;
    // Requests to the domain: ServiceProviderConfig, for each of the two groups its query
    // and itself, one page of users; every later one (the creates) is refused.
    let fail: serde_json::Map<String, Value> =
        (7..=200).map(|i| (i.to_string(), json!(400))).collect();
    w.proxy().plan(json!({"fail": fail})).await;
    let (code, s) = w.run("refused", "Apply").await;
    assert_failed(code, &s, "stopped: more than 40% of changes failed");
    let c = s.counts.unwrap();
    assert_eq!(
        (c.created, c.failed),
        (0, 10),
        "stops at the 10th attempt: {c:?}"
    );
    assert_eq!(s.failures.len(), 10);
    assert!(s.failures[0].reason.as_deref().unwrap().contains("400"));
    assert!(w.user_names(&w.idp).await.is_empty());
}

/// The rules of the confirmation tests: userName, then the primary e-mail.
fn user_name_then_email() -> catalogsync::engine::extract::Rules {
    use catalogsync::api::MatchRule;
    catalogsync::engine::extract::Rules::parse(&[
        MatchRule {
            app_attribute: "userName".into(),
            domain_attribute: "userName".into(),
            case_sensitive: false,
        },
        MatchRule {
            app_attribute: "emails[primary eq true].value".into(),
            domain_attribute: "emails.value".into(),
            case_sensitive: false,
        },
    ])
    .unwrap()
}

/// A domain user as those rules read it.
fn user(id: &str, name: &str, email: &str) -> catalogsync::engine::records::DomainUser {
    catalogsync::engine::records::DomainUser {
        id: id.into(),
        user_name: name.into(),
        active: true,
        keys: vec![vec![name.into()], vec![email.into()]],
    }
}
