//! Exact and honest under failure: answers lost after the server applied a write, and a
//! sync pod killed mid-apply and retried by its Job. Real control plane, real SCIM servers,
//! the fault proxy forwarding a write and then losing its answer.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use catalogsync::api::{Direction, RunPhase, Stage, SyncRun};
use catalogsync::cluster::exit_code;
use kube::Api;
use serde_json::json;

use crate::sync_engine::{Via, World, condition};
use catalogsync::dev::up;

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

/// The fault campaign: seeded, repeatable scenarios against the real control plane and SCIM
/// servers behind the fault proxy. Each scenario draws a state of grants, records and
/// accounts, a policy with limits, the proxy's faults (answers lost after the write was
/// applied, 429s, 5xx, slow bodies, malformed JSON — of reads, and of writes after they
/// were applied — and page shifts while the app is listed) and a process fault (none, SIGTERM, or SIGKILL mid-apply followed by
/// the Job's retry), runs an Import or a Provision, and checks the invariants against the
/// servers' own state; then a clean rerun must record every user or account created. CI
/// runs 30 scenarios; `make faults` runs 300 and prints the table of docs/reliability.md.
/// `CATALOGSYNC_FAULT_SCENARIOS` and `CATALOGSYNC_FAULT_SEED` choose the campaign;
/// `CATALOGSYNC_FAULT_FIRST` skips the scenarios before it (to replay one).
#[tokio::test]
async fn fault_campaign() {
    let (tally, seed, ran) = run_campaign(
        "CATALOGSYNC_FAULT_SCENARIOS",
        30,
        Scenario::draw,
        async |_, s, tally| campaign::run(s, tally).await,
    )
    .await;
    println!("{}\n{}", tally.table(ran, seed), tally.kill_lag());
    tally.assert_clean();
}

/// The controller campaign: [`Scenario::draw`]'s state, limits and network faults, each
/// run a SyncRun the controller gives a Job the job runner runs (a world, a controller and
/// a job runner per scenario), with a process fault of the controller's: a restart
/// mid-apply, or a Replace (a second run requested while one applies; or while a Plan
/// run plans, which Replace must not cancel). The same invariants, with a Replace's two
/// runs each within its limits and their counts summing to the servers' changes; the new
/// run created only once the replaced run's Job (and so its pod) is gone. CI runs 8
/// scenarios; `CATALOGSYNC_FAULT_CONTROLLER_SCENARIOS`, `CATALOGSYNC_FAULT_SEED` and
/// `CATALOGSYNC_FAULT_FIRST` choose the campaign.
#[tokio::test]
async fn fault_campaign_controller() {
    let (tally, seed, ran) = run_campaign(
        "CATALOGSYNC_FAULT_CONTROLLER_SCENARIOS",
        8,
        Scenario::draw_controlled,
        async |i, s, tally| {
            let started = Instant::now();
            let violations = campaign::run_controlled(s, tally).await;
            println!(
                "controller scenario {i}: {} {:?}, {:.0?}, {} violations",
                s.process.name(),
                s.direction,
                started.elapsed(),
                violations.len()
            );
            violations
        },
    )
    .await;
    println!("{}", tally.table(ran, seed));
    tally.assert_clean();
}

/// Runs the scenarios `CATALOGSYNC_FAULT_FIRST..$count_var` (default `default`) of the
/// campaign of `CATALOGSYNC_FAULT_SEED`, each drawn by `draw` and run by `run` (given its number), and
/// returns the tally with the seed and the number of scenarios run.
async fn run_campaign(
    count_var: &str,
    default: u64,
    draw: fn(u64, u64) -> Scenario,
    run: impl AsyncFn(u64, &Scenario, &mut Tally) -> Vec<String>,
) -> (Tally, u64, u64) {
    let scenarios = env_number(count_var, default);
    let seed = env_number("CATALOGSYNC_FAULT_SEED", 1);
    let first = env_number("CATALOGSYNC_FAULT_FIRST", 0);
    let mut tally = Tally::default();
    for i in first..scenarios {
        let s = draw(seed, i);
        let violations = run(i, &s, &mut tally).await;
        if !violations.is_empty() {
            tally
                .failed
                .push(format!("scenario {i} ({s:?}): {violations:?}"));
        }
    }
    (tally, seed, scenarios - first.min(scenarios))
}

/// Whether a run ended in a final phase whose Ready condition gives a reason.
fn ended_with_reason(status: &catalogsync::api::SyncRunStatus) -> bool {
    status.phase.is_some_and(|p| p.is_finished())
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && !c.reason.is_empty())
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the campaign counts: scenarios by process fault, faults injected by kind,
/// violations.
#[derive(Default)]
pub(crate) struct Tally {
    directions: std::collections::BTreeMap<String, u64>,
    process: std::collections::BTreeMap<&'static str, u64>,
    pub(crate) injected: std::collections::BTreeMap<String, u64>,
    phases: std::collections::BTreeMap<String, u64>,
    /// After a SIGKILL: writes on the servers that the run's counts miss, per killed run.
    kill_lag: Vec<u64>,
    /// Writes left in `status.inFlight` after a run: their outcome stayed unknown.
    unknown: u64,
    failed: Vec<String>,
}

impl Tally {
    /// Fails with every violation the campaign found.
    fn assert_clean(&self) {
        assert!(
            self.failed.is_empty(),
            "invariant violations:\n{}",
            self.failed.join("\n")
        );
    }

    /// How far the counts of killed runs lag behind the servers.
    fn kill_lag(&self) -> String {
        let lagging = self.kill_lag.iter().filter(|l| **l > 0).count();
        format!(
            "after SIGKILL + retry: counts equal the servers in {} of {} runs; writes uncounted: {} in all, at most {} in one run\nwrites whose outcome stayed unknown (left in status.inFlight): {}",
            self.kill_lag.len() - lagging,
            self.kill_lag.len(),
            self.kill_lag.iter().sum::<u64>(),
            self.kill_lag.iter().max().unwrap_or(&0),
            self.unknown
        )
    }

    fn table(&self, scenarios: u64, seed: u64) -> String {
        let row = |m: &dyn Fn() -> Vec<(String, u64)>| {
            m().iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "| scenarios | seed | directions | process faults | injected faults | phases | invariant violations |\n\
             |---:|---:|---|---|---|---|---:|\n| {scenarios} | {seed} | {} | {} | {} | {} | {} |",
            row(&|| self
                .directions
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect()),
            row(&|| self
                .process
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect()),
            row(&|| self.injected.iter().map(|(k, v)| (k.clone(), *v)).collect()),
            row(&|| self.phases.iter().map(|(k, v)| (k.clone(), *v)).collect()),
            self.failed.len()
        )
    }
}

/// One scenario, drawn from the seed and its number.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    /// granted + recorded with an account; recorded with the account gone (granted or not);
    /// granted only (pending); recorded only with an account (revoked); not yet linked
    /// users with an account; accounts of no user.
    linked: usize,
    gone_granted: usize,
    gone_revoked: usize,
    pending: usize,
    revoked: usize,
    to_link: usize,
    unmatched: usize,
    create_users: bool,
    on_deleted: &'static str,
    max_creates: Option<u64>,
    max_deletes: Option<u64>,
    max_changes: Option<u64>,
    up_to_limit: bool,
    parallelism: u64,
    pub(crate) rate_lost: f64,
    rate_429: f64,
    rate_5xx: f64,
    pub(crate) process: Process,
    /// Import, or Provision: then `to_create` granted users without an account,
    /// `to_revoke` recorded users no longer granted (their account deactivated, or deleted
    /// when `delete_accounts`), `to_link` granted users whose account is adopted, and the
    /// limits above as `spec.provisioning.limits`.
    pub(crate) direction: Direction,
    to_create: usize,
    to_revoke: usize,
    delete_accounts: bool,
    /// Shares of answers whose body trickles in over 0.2–2 s, of reads answered with
    /// malformed JSON, and of writes answered so after the server applied them.
    rate_slow: f64,
    rate_bad_json: f64,
    rate_garbled: f64,
    /// Page shifts: before half the app's list pages past the first, an account of nobody
    /// is added and/or an unmatched one listed earlier deleted. Pages of 10 then.
    shift: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Process {
    None,
    Sigterm,
    KillAndRetry,
    /// Through the controller and the job runner: the controller restarted mid-apply.
    ControllerRestart,
    /// Through the controller and the job runner, `concurrencyPolicy: Replace`: a second
    /// run requested while the first applies; with `plan`, the first is a Plan run, which
    /// Replace must not stop.
    Replace {
        plan: bool,
    },
}

impl Process {
    /// Whether the run goes through the controller and the job runner.
    fn controlled(self) -> bool {
        matches!(self, Process::ControllerRestart | Process::Replace { .. })
    }

    fn name(self) -> &'static str {
        match self {
            Process::None => "none",
            Process::Sigterm => "SIGTERM",
            Process::KillAndRetry => "SIGKILL+retry",
            Process::ControllerRestart => "controller restart",
            Process::Replace { plan: false } => "Replace",
            Process::Replace { plan: true } => "Replace of a Plan run",
        }
    }
}

impl Scenario {
    pub(crate) fn draw(seed: u64, i: u64) -> Self {
        use rand::{Rng, SeedableRng};
        let mut r = rand::rngs::StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(i));
        let limit = |r: &mut rand::rngs::StdRng, max: u64| {
            r.random_bool(0.7).then(|| r.random_range(0..=max))
        };
        Scenario {
            linked: r.random_range(0..15),
            gone_granted: r.random_range(0..8),
            gone_revoked: r.random_range(0..4),
            pending: r.random_range(0..6),
            revoked: r.random_range(0..4),
            to_link: r.random_range(0..15),
            unmatched: r.random_range(0..25),
            create_users: r.random_bool(0.6),
            on_deleted: ["RemoveRecord", "DeactivateUser", "DeleteUser"][r.random_range(0..3)],
            max_creates: limit(&mut r, 20),
            max_deletes: limit(&mut r, 8),
            max_changes: limit(&mut r, 25),
            up_to_limit: r.random_bool(0.6),
            parallelism: [1, 4, 16][r.random_range(0..3)],
            rate_lost: [0.0, 0.2, 0.4][r.random_range(0..3)],
            rate_429: [0.0, 0.1][r.random_range(0..2)],
            rate_5xx: [0.0, 0.1][r.random_range(0..2)],
            process: [
                Process::None,
                Process::None,
                Process::Sigterm,
                Process::KillAndRetry,
            ][r.random_range(0..4)],
            // Drawn last: the fields above stay what they were for a seed.
            direction: [Direction::Import, Direction::Provision][r.random_range(0..2)],
            to_create: r.random_range(0..30),
            to_revoke: r.random_range(0..12),
            delete_accounts: r.random_bool(0.5),
            rate_slow: [0.0, 0.05, 0.15][r.random_range(0..3)],
            rate_bad_json: [0.0, 0.0, 0.02, 0.05][r.random_range(0..4)],
            shift: r.random_bool(0.4),
            rate_garbled: [0.0, 0.1, 0.2][r.random_range(0..3)],
        }
    }

    /// A scenario of the controller campaign: [`Scenario::draw`]'s state, limits and
    /// network faults, with a controller restart or a Replace as its process fault.
    pub(crate) fn draw_controlled(seed: u64, i: u64) -> Self {
        use rand::{Rng, SeedableRng};
        let mut s = Self::draw(seed, i);
        let mut r = rand::rngs::StdRng::seed_from_u64(
            seed.wrapping_mul(7_000_003).wrapping_add(i) ^ 0x5eed,
        );
        s.process = [
            Process::ControllerRestart,
            Process::Replace { plan: false },
            Process::Replace { plan: false },
            Process::Replace { plan: true },
        ][r.random_range(0..4)];
        // Something to apply, and slow enough answers (a share trickles over 0.2–2 s) for
        // the restart or the second request to land while the first run applies; a run
        // that aborts at its limits applies nothing, so Replace applies up to the limit.
        s.rate_slow = s.rate_slow.max(0.4);
        s.create_users = true;
        s.unmatched = s.unmatched.max(10);
        s.to_create = s.to_create.max(10);
        if s.process == (Process::Replace { plan: false }) {
            s.up_to_limit = true;
            // Room for writes both runs: limits of at least 5.
            for l in [&mut s.max_creates, &mut s.max_changes] {
                *l = l.map(|m| m.max(5));
            }
        }
        s
    }

    fn policy(&self) -> serde_json::Value {
        let concurrency = if matches!(self.process, Process::Replace { .. }) {
            "Replace"
        } else {
            "Forbid"
        };
        json!({
            "concurrencyPolicy": concurrency,
            "onNoMatch": if self.create_users { "CreateUser" } else { "Ignore" },
            "onAccountDeleted": self.on_deleted,
            "parallelism": self.parallelism,
            "limits": self.limits(),
        })
    }

    /// The limits: the policy's (Import) or `spec.provisioning.limits` (Provision).
    fn limits(&self) -> serde_json::Value {
        let mut limits = serde_json::Map::new();
        for (k, v) in [
            ("maxCreates", self.max_creates),
            ("maxDeletes", self.max_deletes),
            ("maxChanges", self.max_changes),
        ] {
            if let Some(v) = v {
                limits.insert(k.into(), json!(v));
            }
        }
        let when = if self.up_to_limit {
            "ApplyUpToLimit"
        } else {
            "Abort"
        };
        limits.insert("whenExceeded".into(), json!(when));
        limits.into()
    }
}

pub(crate) mod campaign {
    use super::*;
    use catalogsync::api::SyncRunStatus;
    use std::collections::HashMap;

    /// A tenant's users: id → (externalId, active).
    async fn users(c: &catalogsync::scim::ScimClient) -> HashMap<String, (Option<String>, bool)> {
        let (u, _) = c
            .list("Users", &["externalId", "active"], None)
            .await
            .unwrap();
        u.iter()
            .map(|u| {
                let id = u["id"].as_str().unwrap().to_string();
                let ext = u["externalId"].as_str().map(str::to_string);
                (id, (ext, u["active"].as_bool().unwrap_or(true)))
            })
            .collect()
    }

    /// Users `{kind}{i}` with their e-mail (and `externalId`, when given) for a tenant.
    async fn seed(w: &World, tenant: &str, kind: &str, n: usize, ext: &[String]) -> Vec<String> {
        let users: Vec<serde_json::Value> = (0..n)
            .map(|i| {
                let mut u = json!({"userName": format!("{kind}{i}"), "active": true,
                    "emails": [{"value": format!("{kind}{i}@corp.example"), "primary": true, "type": "work"}]});
                if let Some(e) = ext.get(i) {
                    u["externalId"] = json!(e);
                }
                u
            })
            .collect();
        w.server
            .seed(tenant, json!({"Users": users, "returnIds": true}))
            .await
    }

    /// Runs one scenario in a world of its own; returns the invariants it broke.
    pub(super) async fn run(s: &Scenario, tally: &mut Tally) -> Vec<String> {
        run_in(&world(s).await, s, tally).await
    }

    /// A fresh world for `s`: its policy, both servers behind the fault proxy (with pages
    /// of 10 when pages shift).
    pub(crate) async fn world(s: &Scenario) -> World {
        World::new("campaign", s.policy(), s.shift.then_some(10), Via::Proxy).await
    }

    /// The accounts the proxy's page shifts added and deleted in the app.
    #[derive(Default)]
    pub(crate) struct Shifted {
        added: HashSet<String>,
        removed: HashSet<String>,
    }

    /// Runs one scenario in `w` (fresh, from [`world`]); returns the invariants it broke.
    pub(crate) async fn run_in(w: &World, s: &Scenario, tally: &mut Tally) -> Vec<String> {
        run_with(w, s, tally, None).await
    }

    /// Runs one scenario of the controller campaign in a world of its own, served by a
    /// controller and a job runner of its own (only its namespace): every run, the rerun
    /// too, is a SyncRun the controller gives a Job. Their logs stay in a kept directory
    /// when an invariant broke.
    pub(super) async fn run_controlled(s: &Scenario, tally: &mut Tally) -> Vec<String> {
        let w = world(s).await;
        let dir = tempfile::tempdir().unwrap();
        let scope = up::Scope {
            namespace: Some(w.ns.clone()),
            log: Some("info".into()),
        };
        let binary = crate::sync_engine::binary();
        let mut children = up::start_processes(binary, dir.path(), w.cp.kubeconfig_path(), &scope)
            .await
            .expect("the controller and the job runner started");
        let mut v = run_with(&w, s, tally, Some(&mut children)).await;
        children.stop();
        if !v.is_empty() {
            v.push(format!("logs in {}", dir.keep().display()));
        }
        v
    }

    /// Runs one scenario in `w`: with `ctl`, through the controller and the job runner.
    async fn run_with(
        w: &World,
        s: &Scenario,
        tally: &mut Tally,
        ctl: Option<&mut up::Children>,
    ) -> Vec<String> {
        *tally
            .directions
            .entry(format!("{:?}", s.direction))
            .or_default() += 1;
        match s.direction {
            Direction::Import => import(w, s, tally, ctl).await,
            Direction::Provision => provision(w, s, tally, ctl).await,
        }
    }

    /// Import: users created for accounts, recorded users whose account is gone acted on.
    async fn import(
        w: &World,
        s: &Scenario,
        tally: &mut Tally,
        ctl: Option<&mut up::Children>,
    ) -> Vec<String> {
        let linked = seed(w, "idp", "linked", s.linked, &[]).await;
        let gone_granted = seed(w, "idp", "gone", s.gone_granted, &[]).await;
        let gone_revoked = seed(w, "idp", "left", s.gone_revoked, &[]).await;
        let pending = seed(w, "idp", "pending", s.pending, &[]).await;
        let revoked = seed(w, "idp", "revoked", s.revoked, &[]).await;
        seed(w, "idp", "tolink", s.to_link, &[]).await;
        w.grant(&[linked.clone(), gone_granted.clone(), pending.clone()].concat())
            .await;
        w.record(
            &[
                linked.clone(),
                gone_granted.clone(),
                gone_revoked.clone(),
                revoked.clone(),
            ]
            .concat(),
        )
        .await;
        let mut account_ids = HashSet::new();
        for (kind, n) in [
            ("linked", s.linked),
            ("revoked", s.revoked),
            ("tolink", s.to_link),
        ] {
            account_ids.extend(seed(w, "app", kind, n, &[]).await);
        }
        let unmatched = seed(w, "app", "contractor", s.unmatched, &[]).await;
        account_ids.extend(unmatched.iter().cloned());
        let candidates: Vec<String> = [gone_granted.clone(), gone_revoked.clone()].concat();
        let users_before = users(&w.idp).await;

        let mut v = Vec::new();
        // Shifts delete only accounts of nobody: no user's deletion depends on them.
        let controlled = ctl.is_some();
        let (statuses, shifted) = faulty_run(w, s, &unmatched, tally, ctl, &mut v).await;
        // An account a shift added is one more of nobody: a user may be created for it.
        account_ids.extend(shifted.added.iter().cloned());

        let after = users(&w.idp).await;
        let records = w.records().await;
        let grants = w.members().await;
        // Creates: users carrying an app account's id, new since the start (with the id).
        let created: Vec<(&String, &String)> = after
            .iter()
            .filter(|(id, _)| !users_before.contains_key(*id))
            .filter_map(|(id, (ext, _))| ext.as_ref().map(|e| (id, e)))
            .filter(|(_, e)| account_ids.contains(*e))
            .collect();
        no_two_with_one_external_id(&mut v, &after, "an account got two users");
        // Deletes: recorded users whose account was gone, acted on (unrecorded, inactive or
        // deleted).
        let deletes = candidates
            .iter()
            .filter(|u| !records.contains(*u) || after.get(*u).is_none_or(|(_, active)| !active))
            .count() as u64;
        let creates = created.len() as u64;
        if !s.create_users && creates > 0 {
            v.push(format!("{creates} users created with onNoMatch Ignore"));
        }
        for u in &pending {
            if !grants.contains(u) || after.get(u).is_none_or(|(_, active)| !active) {
                v.push(format!("pending user {u} was taken for deleted"));
            }
        }
        for u in &revoked {
            if grants.contains(u) {
                v.push(format!("revoked user {u} was granted again"));
            }
        }
        check_runs(&mut v, s, &statuses, creates, deletes, tally);

        // A clean rerun, limits lifted: every created user ends up recorded.
        Api::<catalogsync::api::SyncPolicy>::namespaced(w.cp.admin_client(), &w.ns)
            .patch(
                "default",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"spec": {"limits": null}})),
            )
            .await
            .unwrap();
        let rerun = rerun(w, "Import", controlled).await;
        let records = w.records().await;
        let now = users(&w.idp).await;
        for (id, account) in created {
            // A user whose account a shift deleted is the rerun's deletion candidate.
            let gone = shifted.removed.contains(account);
            let acted_on = !records.contains(id) || now.get(id).is_none_or(|(_, a)| !a);
            if gone && !acted_on {
                v.push(format!(
                    "user {id} created for account {account}, deleted by a shift, left recorded by a rerun"
                ));
            }
            if !gone && !records.contains(id) {
                v.push(format!(
                    "created user {id} for account {account} unrecorded after a rerun ({:?})",
                    rerun.phase
                ));
            }
        }
        v
    }

    /// Provision: accounts created for granted users, accounts of revoked users
    /// deactivated or deleted; linked, adopted and unmatched accounts left standing.
    async fn provision(
        w: &World,
        s: &Scenario,
        tally: &mut Tally,
        ctl: Option<&mut up::Children>,
    ) -> Vec<String> {
        let linked = seed(w, "idp", "linked", s.linked, &[]).await;
        let gone = seed(w, "idp", "gone", s.gone_granted, &[]).await;
        let pending = seed(w, "idp", "pending", s.to_create, &[]).await;
        let revoked = seed(w, "idp", "revoked", s.to_revoke, &[]).await;
        let to_link = seed(w, "idp", "tolink", s.to_link, &[]).await;
        let grants_before: HashSet<String> = [
            linked.clone(),
            gone.clone(),
            pending.clone(),
            to_link.clone(),
        ]
        .concat()
        .into_iter()
        .collect();
        w.grant(&grants_before.iter().cloned().collect::<Vec<_>>())
            .await;
        w.record(&[linked.clone(), gone.clone(), revoked.clone()].concat())
            .await;
        // Linked and revoked accounts carry their user's id; adoptable and unmatched ones
        // carry none.
        let unmatched = seed(w, "app", "contractor", s.unmatched, &[]).await;
        let mut standing: Vec<String> = [
            seed(w, "app", "linked", s.linked, &linked).await,
            seed(w, "app", "tolink", s.to_link, &[]).await,
            unmatched.clone(),
        ]
        .concat();
        let revoked_accounts = seed(w, "app", "revoked", s.to_revoke, &revoked).await;
        let removal = if s.delete_accounts {
            "Delete"
        } else {
            "Deactivate"
        };
        w.set_provisioning(json!({"limits": s.limits(),
                                  "operations": ["Create", "Update", removal]}))
            .await;
        let before = users(&w.app).await;

        let mut v = Vec::new();
        // Shifts add and delete only accounts of nobody, which the engine leaves alone.
        let controlled = ctl.is_some();
        let (statuses, shifted) = faulty_run(w, s, &unmatched, tally, ctl, &mut v).await;
        standing.retain(|a| !shifted.removed.contains(a));

        let after = users(&w.app).await;
        let new = |id: &&String| !before.contains_key(*id) && !shifted.added.contains(*id);
        let created: Vec<String> = after
            .iter()
            .filter(|(id, _)| new(id))
            .filter_map(|(_, (ext, _))| ext.clone())
            .collect();
        let creates = after.keys().filter(new).count() as u64;
        for ext in &created {
            if !pending.contains(ext) {
                v.push(format!("an account was created for {ext}, not pending"));
            }
        }
        no_two_with_one_external_id(&mut v, &after, "a user got two accounts");
        let deletes = revoked_accounts
            .iter()
            .filter(|a| after.get(*a).is_none_or(|(_, active)| !active))
            .count() as u64;
        for a in &standing {
            if after.get(a).is_none_or(|(_, active)| !active) {
                v.push(format!("account {a} of a granted or unknown user removed"));
            }
        }
        if w.members().await != grants_before {
            v.push("the grant group changed (Provision never writes it)".into());
        }
        check_runs(&mut v, s, &statuses, creates, deletes, tally);

        // A clean rerun, limits lifted: every created account recorded, every deleted
        // account's record removed.
        w.set_provisioning(json!({"limits": null})).await;
        let rerun = rerun(w, "Provision", controlled).await;
        let records = w.records().await;
        for ext in &created {
            if !records.contains(ext) {
                v.push(format!(
                    "the account created for {ext} unrecorded after a rerun ({:?})",
                    rerun.phase
                ));
            }
        }
        let after = users(&w.app).await;
        for (user, account) in revoked.iter().zip(&revoked_accounts) {
            if s.delete_accounts && !after.contains_key(account) && records.contains(user) {
                v.push(format!(
                    "{user}'s account deleted but still recorded after a rerun"
                ));
            }
        }
        v
    }

    /// No `externalId` on two objects.
    fn no_two_with_one_external_id(
        v: &mut Vec<String>,
        users: &HashMap<String, (Option<String>, bool)>,
        what: &str,
    ) {
        let exts: Vec<&String> = users.values().filter_map(|(e, _)| e.as_ref()).collect();
        if exts.iter().collect::<HashSet<_>>().len() != exts.len() {
            v.push(what.to_string());
        }
    }

    /// The invariants of both directions: the limits held, every run ended in a phase
    /// with a reason, and their counts are what the servers show (after a SIGKILL too:
    /// the lag, which only writes left in flight may explain, is tallied). With a Replace
    /// there are two runs: each run's counts within its limits, the servers' changes at
    /// most the limits of the runs that wrote, and equal to the sum of their counts.
    fn check_runs(
        v: &mut Vec<String>,
        s: &Scenario,
        statuses: &[SyncRunStatus],
        creates: u64,
        deletes: u64,
        tally: &mut Tally,
    ) {
        let check = |v: &mut Vec<String>, what: &str, n: u64, max: Option<u64>, runs: u64| {
            if max.is_some_and(|m| n > m * runs) {
                v.push(format!("{what} {n} > {max:?} × {runs} runs"));
            }
        };
        let (mut created, mut deleted, mut unknown) = (0, 0, 0);
        for (i, status) in statuses.iter().enumerate() {
            if !ended_with_reason(status) {
                v.push(format!(
                    "run {i} did not end in a phase with a reason: {:?}",
                    status.phase
                ));
            }
            let c = status.counts.clone().unwrap_or_default();
            let (c, d) = (c.created.max(0) as u64, c.deleted.max(0) as u64);
            check(v, &format!("run {i}: counted creates"), c, s.max_creates, 1);
            check(v, &format!("run {i}: counted deletes"), d, s.max_deletes, 1);
            check(
                v,
                &format!("run {i}: counted changes"),
                c + d,
                s.max_changes,
                1,
            );
            created += c;
            deleted += d;
            unknown += status.in_flight.len() as u64;
        }
        // The runs that may have written (a Plan run is not among them).
        let writers = statuses.len() as u64;
        check(v, "creates", creates, s.max_creates, writers);
        check(v, "deletes", deletes, s.max_deletes, writers);
        check(v, "changes", creates + deletes, s.max_changes, writers);
        // Exact counts: what the servers show, also after a SIGKILL (the retried pod settles
        // the journal). Only writes the status still lists in flight (their outcome
        // unknown: the servers could not be read) may be missing from them.
        let lag = creates.saturating_sub(created) + deletes.saturating_sub(deleted);
        let over = created > creates || deleted > deletes;
        tally.unknown += unknown;
        if s.process == Process::KillAndRetry {
            tally.kill_lag.push(lag);
        }
        if over || lag > unknown {
            v.push(format!(
                "counts {created} created, {deleted} deleted but the servers show {creates}, {deletes} ({unknown} writes in flight)"
            ));
        }
    }

    /// The scenario's run under its faults (the proxy's plan, with page shifts that may
    /// delete `deletable` accounts, and the process fault); tallies them and returns the
    /// final status of every run (two with a Replace) and the shifts' accounts, with the
    /// proxy's faults off again. Violations of the controller's own rules go to `v`.
    async fn faulty_run(
        w: &World,
        s: &Scenario,
        deletable: &[String],
        tally: &mut Tally,
        ctl: Option<&mut up::Children>,
        v: &mut Vec<String>,
    ) -> (Vec<SyncRunStatus>, Shifted) {
        if ctl.is_some() {
            // The controller checks the app through the proxy too: its faults start once
            // the app is Ready, as a run's would in a running cluster.
            controlled::app_ready(w).await;
        }
        let shift = json!({"rate": if s.shift { 0.5 } else { 0.0 },
                           "users": "/app/scim/v2/Users", "deletable": deletable});
        w.proxy()
            .plan(
                json!({"rateLost": s.rate_lost, "rate429": s.rate_429, "rate5xx": s.rate_5xx,
                       "retryAfter": "0", "rateSlow": s.rate_slow,
                       "rateBadJson": s.rate_bad_json, "rateGarbled": s.rate_garbled,
                       "shift": shift}),
            )
            .await;
        let direction = format!("{:?}", s.direction);
        let statuses = match ctl {
            Some(ctl) if s.process.controlled() => {
                controlled::execute(w, &direction, s.process, ctl, tally, v).await
            }
            _ => vec![execute(w, &direction, s.process).await],
        };
        *tally.process.entry(s.process.name()).or_default() += 1;
        let stats = w.proxy().stats().await;
        for (k, v) in stats["injected"].as_object().into_iter().flatten() {
            *tally.injected.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
        }
        for status in &statuses {
            *tally
                .phases
                .entry(format!("{:?}", status.phase))
                .or_default() += 1;
        }
        w.proxy().plan(json!({})).await;
        let ids = |k: &str| -> HashSet<String> {
            serde_json::from_value(stats["shifted"][k].clone()).unwrap_or_default()
        };
        let shifted = Shifted {
            added: ids("added"),
            removed: ids("removed"),
        };
        (statuses, shifted)
    }

    /// A clean Apply run towards `direction`: the engine executed here, or (`controlled`)
    /// a SyncRun the controller runs; its final status.
    async fn rerun(w: &World, direction: &str, controlled: bool) -> SyncRunStatus {
        if !controlled {
            return match direction {
                "Import" => w.run("rerun", "Apply").await.1,
                _ => w.provision("rerun", "Apply").await.1,
            };
        }
        w.new_run_towards("rerun", direction, "Apply").await;
        controlled::finished(w, "rerun").await
    }

    /// Waits until the run has started applying (or ended first).
    async fn until_applying(w: &World, run: &str) {
        let runs: Api<SyncRun> = Api::namespaced(w.cp.admin_client(), &w.ns);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let st = runs
                .get_opt(run)
                .await
                .ok()
                .flatten()
                .and_then(|r| r.status)
                .unwrap_or_default();
            if st.stage == Some(Stage::Applying) || st.phase.is_some_and(|p| p.is_finished()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Runs the scenario's run with its process fault; returns the final status.
    async fn execute(w: &World, direction: &str, process: Process) -> SyncRunStatus {
        w.new_run_towards("faulty", direction, "Apply").await;
        if process == Process::None {
            w.command("faulty").status().await.unwrap();
            return w.status("faulty").await;
        }
        let mut child = w.command("faulty").spawn().unwrap();
        // Strike once the apply started (or the run ended first).
        until_applying(w, "faulty").await;
        match process {
            Process::Sigterm => {
                let pid = child.id().unwrap() as i32;
                unsafe { libc::kill(pid, libc::SIGTERM) };
                child.wait().await.unwrap();
            }
            _ => {
                child.start_kill().unwrap();
                child.wait().await.unwrap();
                // The Job's retry of the same run.
                w.command("faulty").status().await.unwrap();
            }
        }
        w.status("faulty").await
    }

    /// The process faults of the controller campaign: SyncRuns the controller gives Jobs
    /// the job runner runs.
    mod controlled {
        use super::*;
        use catalogsync::api::{CatalogApp, Mode};
        use k8s_openapi::api::batch::v1::Job;
        use kube::ResourceExt;
        use kube::api::ListParams;

        /// How long a run may take through the controller.
        const RUN_TIMEOUT: Duration = Duration::from_secs(180);

        /// Waits for the run's end; its final status.
        pub(super) async fn finished(w: &World, run: &str) -> SyncRunStatus {
            let runs: Api<SyncRun> = Api::namespaced(w.cp.admin_client(), &w.ns);
            let deadline = Instant::now() + RUN_TIMEOUT;
            loop {
                let st = runs
                    .get_opt(run)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|r| r.status)
                    .unwrap_or_default();
                if st.phase.is_some_and(|p| p.is_finished()) || Instant::now() > deadline {
                    return st;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }

        /// Waits (up to a minute) until the controller reports the app Ready.
        pub(super) async fn app_ready(w: &World) {
            let apps = Api::<CatalogApp>::namespaced(w.cp.admin_client(), &w.ns);
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                let ready = apps
                    .get("slack")
                    .await
                    .ok()
                    .and_then(|a| a.status)
                    .is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                    });
                if ready {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }

        /// Asks the controller for a run towards `direction` (`requested-at: token`).
        async fn request(w: &World, token: &str, direction: &str) {
            let apps = Api::<CatalogApp>::namespaced(w.cp.admin_client(), &w.ns);
            crate::controller::request(&apps, token, Some(direction)).await;
        }

        /// The namespace's SyncRuns.
        async fn runs(w: &World) -> Vec<SyncRun> {
            Api::<SyncRun>::namespaced(w.cp.admin_client(), &w.ns)
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
        }

        /// The process fault through the controller; the final statuses of its runs, the
        /// first first. Breaks of Replace's rules go to `v`.
        pub(super) async fn execute(
            w: &World,
            direction: &str,
            process: Process,
            ctl: &mut up::Children,
            tally: &mut Tally,
            v: &mut Vec<String>,
        ) -> Vec<SyncRunStatus> {
            match process {
                Process::ControllerRestart => {
                    w.new_run_towards("faulty", direction, "Apply").await;
                    until_applying(w, "faulty").await;
                    let runs: Api<SyncRun> = Api::namespaced(w.cp.admin_client(), &w.ns);
                    let ended = |r: Option<SyncRun>| {
                        r.and_then(|r| r.status?.phase)
                            .is_some_and(|p| p.is_finished())
                    };
                    let before = ended(runs.get_opt("faulty").await.unwrap());
                    ctl.restart_controller()
                        .await
                        .expect("the controller restarted");
                    let after = ended(runs.get_opt("faulty").await.unwrap());
                    *tally
                        .process
                        .entry(match (before, after) {
                            (false, false) => "restart: run active across it",
                            (false, true) => "restart: run ended during it",
                            _ => "restart: run ended before it",
                        })
                        .or_default() += 1;
                    vec![finished(w, "faulty").await]
                }
                Process::Replace { plan } => replace(w, direction, plan, tally, v).await,
                _ => unreachable!("not a process fault of the controller"),
            }
        }

        /// A run, then while it applies (or plans) a second requested under Replace. An
        /// Apply run of the same direction is cancelled and the new run starts only once
        /// its Job (deleted in the foreground: after its pod) is gone; a Plan run is not
        /// cancelled, the new run waits for its end.
        async fn replace(
            w: &World,
            direction: &str,
            plan: bool,
            tally: &mut Tally,
            v: &mut Vec<String>,
        ) -> Vec<SyncRunStatus> {
            let first = if plan {
                w.new_run_towards("first", direction, "Plan").await;
                "first".to_string()
            } else {
                request(w, "first", direction).await;
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    if let Some(r) = runs(w).await.first() {
                        break r.name_any();
                    }
                    if Instant::now() > deadline {
                        let app = Api::<CatalogApp>::namespaced(w.cp.admin_client(), &w.ns)
                            .get("slack")
                            .await
                            .unwrap();
                        v.push(format!("no run for the first request: {:?}", app.status));
                        return vec![];
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            until_applying(w, &first).await;
            let jobs: Api<Job> = Api::namespaced(w.cp.admin_client(), &w.ns);
            let old_job = jobs.get_opt(&first).await.unwrap().is_some();
            request(w, "second", direction).await;
            let deadline = Instant::now() + RUN_TIMEOUT;
            let second = loop {
                // The runs, then the old Job: a new run seen before a read that still finds
                // the Job started while the old pod could still write.
                let old = runs(w).await;
                let job_there = jobs.get_opt(&first).await.unwrap().is_some_and(|j| {
                    // A Job that ended by itself (its run finished) holds nothing.
                    j.status
                        .as_ref()
                        .is_none_or(|s| s.succeeded.unwrap_or(0) == 0 && s.failed.unwrap_or(0) == 0)
                        || j.metadata.deletion_timestamp.is_some()
                });
                if let Some(r) = old.iter().find(|r| r.name_any() != first) {
                    let first_run = old.iter().find(|r| r.name_any() == first);
                    let first_active = first_run
                        .and_then(|r| r.status.as_ref()?.phase)
                        .is_none_or(|p| !p.is_finished());
                    if job_there && first_active {
                        v.push(format!(
                            "run {} created while the run {first} it replaces still had its Job",
                            r.name_any()
                        ));
                    } else if job_there {
                        // Finished but its Job (pod) not yet gone: only a cancelled run's
                        // pod may still write.
                        let cancelled = first_run
                            .and_then(|r| r.status.as_ref()?.phase)
                            .is_some_and(|p| p == RunPhase::Cancelled);
                        if cancelled {
                            v.push(format!(
                                "run {} created while the cancelled run {first}'s Job was still there",
                                r.name_any()
                            ));
                        }
                    }
                    break r.name_any();
                }
                if Instant::now() > deadline {
                    let app = Api::<CatalogApp>::namespaced(w.cp.admin_client(), &w.ns)
                        .get("slack")
                        .await
                        .unwrap();
                    let job = jobs.get_opt(&first).await.unwrap();
                    let first_run = old.iter().find(|r| r.name_any() == first);
                    v.push(format!(
                        "no run for the second request: app {:?}; first run {:?}; its Job {:?}",
                        app.status,
                        first_run.map(|r| &r.status),
                        job.map(|j| (
                            j.metadata.deletion_timestamp,
                            j.metadata.finalizers,
                            j.status
                        ))
                    ));
                    return vec![];
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let first_status = finished(w, &first).await;
            let second_status = finished(w, &second).await;
            let cancelled = first_status.phase == Some(RunPhase::Cancelled);
            if plan && cancelled {
                v.push(format!("Replace cancelled the Plan run {first}"));
            }
            let first_mode = runs(w)
                .await
                .iter()
                .find(|r| r.name_any() == first)
                .map(|r| r.spec.mode);
            if plan && first_mode != Some(Mode::Plan) {
                v.push(format!("run {first} is no Plan run: {first_mode:?}"));
            }
            *tally
                .process
                .entry(match (old_job, cancelled) {
                    (_, true) => "Replace: first run cancelled",
                    (true, false) => "Replace: first run let end",
                    (false, false) => "Replace: first run ended before the second request",
                })
                .or_default() += 1;
            if plan {
                // A Plan run writes nothing and counts what it would do: only its end counts.
                if !ended_with_reason(&first_status) {
                    v.push(format!(
                        "the Plan run {first} did not end in a phase with a reason: {:?}",
                        first_status.phase
                    ));
                }
                return vec![second_status];
            }
            vec![first_status, second_status]
        }
    }
}
