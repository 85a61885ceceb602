//! Sync engine benchmark: `catalogsync sync --run NS/NAME` (the release binary, as a child
//! process) against a real local control plane and a real SCIM server (scim2-server, an
//! identity domain tenant `idp` and an app tenant `app`), at several sizes and in three
//! shapes, next to a *lower bound*: the time the same server takes to answer the minimum
//! set of requests the sync needs, sent by a minimal client at the same concurrency.
//!
//! `make bench` runs it (see docs/benchmarks.md); `make bench-smoke` is a tiny run.
//! It is a plain `main` (`harness = false`). Under `cargo test --features dev --all-targets` (no `--bench`
//! argument) it only makes a smoke run at 100 accounts that checks the engine's results and
//! its request counts against the minimum, without timing anything.

mod common;
#[allow(dead_code)]
#[path = "../tests/integration/harness.rs"]
mod harness;
#[path = "../tests/integration/scim_server.rs"]
mod scim_server;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context as _, Result, bail, ensure};
use catalogsync::api::{
    CatalogApp, Counts, GroupRole, IdentityDomain, RunPhase, SyncPolicy, SyncPolicySpec, SyncRun,
    SyncRunStatus, catalog,
};
use catalogsync::controller::sync_run::job::MALLOC_MMAP_THRESHOLD;
use catalogsync::engine::extract::{self, Rules};
use catalogsync::engine::records::Records;
use clap::Parser;
use futures::StreamExt as _;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use common::{command_line, loadavg, machine, scratch_dir, token_secrets, tv, wait4};
use harness::{ControlPlane, control_plane, create};
use scim_server::ScimServer;

/// Member values per PATCH in the lower bound: what one `ScimClient::add_members` request
/// carries (one operation of 10,000 values), the client's batching unit.
const MEMBERS_PER_PATCH: usize = 10_000;

#[derive(Parser, Debug)]
#[command(
    about = "Benchmarks the engine against a real SCIM server",
    args_override_self = true
)]
struct Args {
    /// Accounts on each side (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    sizes: Vec<usize>,
    /// Shapes to run: first (every account to link), changed (1% to link), steady (nothing
    /// to do), deleted (1% of the records without an account: confirmed, then removed),
    /// create (1% of the accounts without a user: users created, granted and recorded).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "first,changed,steady,deleted,create"
    )]
    shapes: Vec<Shape>,
    /// Runs per (size, shape) below 100,000 accounts; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Runs per (size, shape) from 100,000 accounts on (each takes minutes).
    #[arg(long, default_value_t = 1)]
    large_runs: usize,
    /// Records without an account in the `deleted` shape (default: 1% of the accounts).
    /// Each costs the server one filter query that walks every app account (seconds at
    /// 100,000 accounts), so a large size may ask for fewer.
    #[arg(long)]
    deletions: Option<usize>,
    /// SyncPolicy parallelism.
    #[arg(long, default_value_t = 8)]
    parallelism: u32,
    /// The catalogsync binary to run (default: the one cargo built with this benchmark),
    /// e.g. a `--profile profiling` build to profile.
    #[arg(long)]
    engine: Option<PathBuf>,
    /// A command to run the engine under (split on spaces), e.g.
    /// "perf record -e cpu-clock -g -o /tmp/perf.data --". CPU is then the wrapper's; the peak
    /// RSS stays the engine's own, which it reports.
    #[arg(long)]
    wrap: Option<String>,
    /// Skip the lower bound (to profile the engine alone: a 100,000-account lower bound
    /// takes as long as the engine).
    #[arg(long)]
    engine_only: bool,
    /// Also write every measurement as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Shape {
    First,
    Changed,
    Steady,
    Deleted,
    Create,
}

/// One in a hundred: the share of accounts the `changed`, `deleted` and `create` shapes change
/// (at least one).
fn one_percent(n: usize) -> usize {
    (n / 100).max(1)
}

impl Shape {
    /// The domain users granted and recorded before the run (besides the `deleted` shape's
    /// users without accounts).
    fn members(self, ids: &[String]) -> Vec<String> {
        match self {
            Shape::First => Vec::new(),
            Shape::Steady | Shape::Deleted | Shape::Create => ids.to_vec(),
            // Every 100th account is new to the app: 1% to link, spread over all pages.
            Shape::Changed => ids
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 100 != 0)
                .map(|(_, id)| id.clone())
                .collect(),
        }
    }
}

/// What a shape puts in place before each run: who is granted and recorded, and the
/// extra objects its changes need.
#[derive(Debug, Default)]
struct Setup {
    /// Domain users granted and recorded before the run.
    members: Vec<String>,
    /// Domain users the run links: granted and recorded (none of them is granted before).
    to_link: Vec<String>,
    /// `deleted`: domain users `gone…` granted and recorded, without an account in the app
    /// (id, number in the name): each confirmed gone, then its grant and record removed.
    gone: Vec<(String, usize)>,
    /// `create`: app accounts `new…` that match no domain user (id, number in the name):
    /// a user created for each, then granted and recorded.
    new_accounts: Vec<(String, usize)>,
}

impl Setup {
    fn granted_and_recorded(&self) -> Vec<String> {
        let mut m = self.members.clone();
        m.extend(self.gone.iter().map(|(id, _)| id.clone()));
        m
    }
}

/// Requests one tenant served, by method.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct Requests {
    requests: std::collections::BTreeMap<String, u64>,
    total: u64,
}

impl Requests {
    fn brief(&self) -> String {
        let parts: Vec<String> = self
            .requests
            .iter()
            .map(|(m, n)| format!("{n} {m}"))
            .collect();
        format!("{} ({})", self.total, parts.join(", "))
    }
}

#[derive(Debug, Clone, serde::Serialize)]
struct EngineRun {
    wall_s: f64,
    user_s: f64,
    sys_s: f64,
    max_rss_kib: i64,
    domain: Requests,
    app: Requests,
}

#[derive(Debug, Clone, serde::Serialize)]
struct LowerBound {
    wall_s: f64,
    domain: Requests,
    app: Requests,
}

#[derive(Debug, Clone, serde::Serialize)]
struct Measurement {
    accounts: usize,
    shape: Shape,
    links: usize,
    creates: usize,
    deletes: usize,
    engine: Vec<EngineRun>,
    lower_bound: Vec<LowerBound>,
    load_before: String,
    load_after: String,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(mut args: Args) -> Result<()> {
    let smoke = !args.bench;
    if smoke {
        // `cargo test --features dev --all-targets` runs this binary without `--bench`: a smoke run of the
        // harness at 100 accounts that checks correctness and request counts, no timings.
        eprintln!("smoke run; the benchmark itself runs with `make bench`");
        args.sizes = vec![100];
        args.runs = 1;
        args.json = None;
    }
    let machine = machine();
    eprintln!("{machine}");
    let dir = scratch_dir("bench")?;
    let command = command_line(&dir, args.engine.as_deref(), args.wrap.as_deref())?;
    let cp = control_plane().await;
    let mut all = Vec::new();
    for &n in &args.sizes {
        let runs = if n >= 100_000 {
            args.large_runs
        } else {
            args.runs
        };
        let world = World::new(cp, n, args.parallelism, command.clone(), dir.clone()).await?;
        let world = World {
            deletions: args.deletions.unwrap_or(one_percent(n)),
            engine_only: args.engine_only,
            ..world
        };
        for &shape in &args.shapes {
            let m = world.measure(shape, runs.max(1)).await?;
            eprintln!("{}", row(&m));
            all.push(m);
        }
    }
    let mut out = String::new();
    writeln!(out, "\n{machine}\n")?;
    writeln!(out, "{}", header())?;
    for m in &all {
        writeln!(out, "{}", row(m))?;
    }
    println!("{out}");
    if smoke {
        // Steady state must cost exactly the minimum: no per-account request.
        let failed: Vec<String> = all
            .iter()
            .filter(|m| {
                m.engine.iter().zip(&m.lower_bound).any(|(e, l)| {
                    e.domain.requests != l.domain.requests || e.app.requests != l.app.requests
                })
            })
            .map(|m| format!("{:?} at {} accounts", m.shape, m.accounts))
            .collect();
        println!(
            "sync benchmark smoke: {} passed, {} failed",
            all.len() - failed.len(),
            failed.len()
        );
        ensure!(failed.is_empty(), "requests above the minimum: {failed:?}");
    }
    if let Some(path) = &args.json {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let doc = json!({"machine": machine, "parallelism": args.parallelism, "results": all});
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// One size: a SCIM server with both tenants seeded, the four kinds in a namespace.
struct World {
    cp: &'static ControlPlane,
    ns: String,
    server: ScimServer,
    http: reqwest::Client,
    accounts: usize,
    parallelism: usize,
    /// How many records the `deleted` shape leaves without an account.
    deletions: usize,
    domain_ids: Vec<String>,
    /// The app's grant and record groups: (name, ownership mark).
    groups: [(String, String); 2],
    /// The ids of the groups as last seeded: [grant, record].
    group_ids: std::sync::Mutex<Option<[String; 2]>>,
    /// The policy's rules as the engine parses them, without and with CreateUser's import
    /// mappings (which add to the app listing's attributes).
    rules: Rules,
    create_rules: Rules,
    domain_attrs: String,
    app_attrs: String,
    create_app_attrs: String,
    run_seq: std::sync::atomic::AtomicU32,
    logs: PathBuf,
    /// The engine's command line before `sync --run …`.
    command: Vec<String>,
    /// No lower bound is taken (`--engine-only`).
    engine_only: bool,
}

/// The `attributes=` the engine's pager sends: `id` first, then the rest.
fn with_id(attrs: Vec<String>) -> String {
    let mut a = vec!["id".to_string()];
    a.extend(attrs.into_iter().filter(|x| x != "id"));
    a.join(",")
}

impl World {
    async fn new(
        cp: &'static ControlPlane,
        n: usize,
        parallelism: u32,
        command: Vec<String>,
        logs: PathBuf,
    ) -> Result<World> {
        let server = ScimServer::start(&["idp", "app"]);
        let seeding = Instant::now();
        let domain_ids = server.seed_users("idp", "user", n).await;
        ensure!(
            domain_ids.len() == n,
            "seeded {} domain users",
            domain_ids.len()
        );
        server
            .seed("app", json!({"generate": {"count": n, "prefix": "user"}}))
            .await;
        eprintln!(
            "seeded {n} users on each side in {:.1}s",
            seeding.elapsed().as_secs_f64()
        );
        let ns = cp.new_namespace(&format!("bench-{n}")).await;
        let admin = cp.admin_client();
        token_secrets(&admin, &ns, |t| server.token(t)).await?;
        create::<IdentityDomain>(
            &cp.admin_client(),
            &ns,
            json!({"metadata": {"name": "corp"}, "spec": {
                "url": server.base_url("idp"), "insecure": true,
                "auth": {"bearerToken": {"secretRef": {"name": "idp-token", "key": "token"}}}
            }}),
        )
        .await?;
        let policy: SyncPolicy = create(
            &cp.admin_client(),
            &ns,
            json!({"metadata": {"name": "default"}, "spec": {
                "matching": [
                    {"appAttribute": "userName", "domainAttribute": "userName"},
                    {"appAttribute": "emails[primary eq true].value", "domainAttribute": "emails.value"}
                ],
                "onNoMatch": "Ignore",
                "onAccountDeleted": "RemoveRecord",
                "parallelism": parallelism
            }}),
        )
        .await?;
        let app: CatalogApp = create(
            &cp.admin_client(),
            &ns,
            json!({"metadata": {"name": "app"}, "spec": {
                "identityDomainRef": {"name": "corp"},
                "connection": {"url": server.base_url("app"), "insecure": true,
                    "auth": {"bearerToken": {"secretRef": {"name": "app-token", "key": "token"}}}},
                "provisioning": {"enabled": true},
                "synchronization": {"enabled": true, "policyRef": {"name": "default"}}
            }}),
        )
        .await?;
        // The engine's own choice of attributes, so that the lower bound asks for the same
        // (src/engine/load.rs: CreateUser adds the catalog entry's import mappings).
        let spec: &SyncPolicySpec = &policy.spec;
        let rules = Rules::parse(&spec.matching).map_err(anyhow::Error::msg)?;
        let import = catalog::get(&app.spec.catalog_item)
            .or_else(|| catalog::get("GenericSCIM"))
            .map(|e| e.import_mappings.clone())
            .unwrap_or_default();
        let create_rules = rules
            .clone()
            .with_import_mappings(import)
            .map_err(anyhow::Error::msg)?;
        Ok(World {
            cp,
            ns,
            http: reqwest::Client::new(),
            accounts: n,
            parallelism: parallelism.max(1) as usize,
            deletions: one_percent(n),
            engine_only: false,
            domain_ids,
            groups: [
                (app.grant_group_name(), app.group_mark(GroupRole::Grant)),
                (app.record_group_name(), app.group_mark(GroupRole::Record)),
            ],
            group_ids: std::sync::Mutex::new(None),
            domain_attrs: with_id(rules.domain_attributes()),
            app_attrs: with_id(rules.app_attributes()),
            create_app_attrs: with_id(create_rules.app_attributes()),
            rules,
            create_rules,
            run_seq: Default::default(),
            logs,
            command,
            server,
        })
    }

    async fn measure(&self, shape: Shape, runs: usize) -> Result<Measurement> {
        let setup = self.prepare(shape).await?;
        let result = self.measure_setup(shape, &setup, runs).await;
        self.clean_up(shape, &setup).await?;
        result
    }

    async fn measure_setup(&self, shape: Shape, setup: &Setup, runs: usize) -> Result<Measurement> {
        let load_before = loadavg();
        let mut engine = Vec::new();
        let mut lower = Vec::new();
        for run in 0..runs {
            // Odd runs go lower bound first: the server slows down over a benchmark, so the
            // side that always ran first would always meet the faster server.
            if run % 2 == 1 && !self.engine_only {
                lower.push(self.lower_bound_once(shape, setup).await?);
            }
            engine.push(self.engine_once(setup).await?);
            if run % 2 == 0 && !self.engine_only {
                lower.push(self.lower_bound_once(shape, setup).await?);
            }
        }
        Ok(Measurement {
            accounts: self.accounts,
            shape,
            links: setup.to_link.len(),
            creates: setup.new_accounts.len(),
            deletes: setup.gone.len(),
            engine,
            lower_bound: lower,
            load_before,
            load_after: loadavg(),
        })
    }

    /// The shape's state: the members, and for `deleted` and `create` the extra objects,
    /// seeded straight into the storage (`deleted`: 1% more domain users; `create`: 1% more
    /// app accounts and the policy's `onNoMatch: CreateUser`).
    async fn prepare(&self, shape: Shape) -> Result<Setup> {
        let members = shape.members(&self.domain_ids);
        let to_link = {
            let set: std::collections::HashSet<&String> = members.iter().collect();
            self.domain_ids
                .iter()
                .filter(|id| !set.contains(id))
                .cloned()
                .collect()
        };
        let extra = one_percent(self.accounts);
        let numbered =
            |ids: Vec<String>| ids.into_iter().enumerate().map(|(i, id)| (id, i)).collect();
        let mut setup = Setup {
            members,
            to_link,
            ..Setup::default()
        };
        match shape {
            Shape::Deleted => {
                let ids = self.server.seed_users("idp", "gone", self.deletions).await;
                ensure!(
                    ids.len() == self.deletions,
                    "seeded {} gone users",
                    ids.len()
                );
                setup.gone = numbered(ids);
            }
            Shape::Create => {
                let ids = self.server.seed_users("app", "new", extra).await;
                ensure!(ids.len() == extra, "seeded {} new accounts", ids.len());
                setup.new_accounts = numbered(ids);
                self.on_no_match("CreateUser").await?;
            }
            _ => {}
        }
        Ok(setup)
    }

    /// Takes away what [`Self::prepare`] added, so that the next shape starts from N and N.
    async fn clean_up(&self, shape: Shape, setup: &Setup) -> Result<()> {
        let gone: Vec<String> = setup.gone.iter().map(|(id, _)| id.clone()).collect();
        self.delete_users("idp", &gone).await?;
        let new: Vec<String> = setup
            .new_accounts
            .iter()
            .map(|(id, _)| id.clone())
            .collect();
        self.delete_users("app", &new).await?;
        if shape == Shape::Create {
            self.on_no_match("Ignore").await?;
        }
        Ok(())
    }

    async fn on_no_match(&self, value: &str) -> Result<()> {
        Api::<SyncPolicy>::namespaced(self.cp.admin_client(), &self.ns)
            .patch(
                "default",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"onNoMatch": value}})),
            )
            .await?;
        Ok(())
    }

    /// `create`: the users a run created are the record group's members beyond the seeded
    /// ones; deleted so that the next run creates them again.
    async fn delete_created_users(&self, setup: &Setup) -> Result<()> {
        if setup.new_accounts.is_empty() {
            return Ok(());
        }
        let record = self.group_ids.lock().expect("group ids").clone();
        let record = record.context("no groups")?[1].clone();
        let v = self
            .get_json(
                &format!("{}/Groups/{record}", self.server.base_url("idp")),
                &self.server.token("idp"),
                &[("attributes", "members".into())],
            )
            .await?;
        let known: std::collections::HashSet<&str> =
            self.domain_ids.iter().map(String::as_str).collect();
        let created: Vec<String> = v["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["value"].as_str())
            .filter(|id| !known.contains(id))
            .map(str::to_string)
            .collect();
        ensure!(
            created.len() == setup.new_accounts.len(),
            "{} created users recorded, expected {}",
            created.len(),
            setup.new_accounts.len()
        );
        self.delete_users("idp", &created).await
    }

    /// DELETE /Users/{id} of each, `parallelism` at a time.
    async fn delete_users(&self, tenant: &str, ids: &[String]) -> Result<()> {
        let (base, token) = (self.server.base_url(tenant), self.server.token(tenant));
        let results: Vec<Result<()>> = futures::stream::iter(ids.iter().map(|id| {
            let (base, token) = (&base, &token);
            async move {
                let resp = self
                    .http
                    .delete(format!("{base}/Users/{id}"))
                    .bearer_auth(token)
                    .send()
                    .await?;
                ensure!(
                    resp.status().is_success(),
                    "DELETE user {id}: {}",
                    resp.status()
                );
                Ok(())
            }
        }))
        .buffer_unordered(self.parallelism)
        .collect()
        .await;
        results.into_iter().collect()
    }

    /// Puts both groups in the shape's state straight into the storage: deletes them, then
    /// seeds them anew with their ownership marks and `members`.
    async fn set_groups(&self, members: &[String]) -> Result<()> {
        let old = self.group_ids.lock().expect("group ids").take();
        for id in old.into_iter().flatten() {
            let resp = self
                .http
                .delete(format!("{}/Groups/{id}", self.server.base_url("idp")))
                .bearer_auth(self.server.token("idp"))
                .send()
                .await?;
            ensure!(
                resp.status().is_success(),
                "deleting a group: {}",
                resp.status()
            );
        }
        let members: Vec<Value> = members.iter().map(|id| json!({"value": id})).collect();
        let groups: Vec<Value> = self
            .groups
            .iter()
            .map(
                |(name, mark)| json!({"displayName": name, "externalId": mark, "members": members}),
            )
            .collect();
        let ids = self
            .server
            .seed("idp", json!({"Groups": groups, "returnIds": true}))
            .await;
        let ids: [String; 2] = ids
            .try_into()
            .map_err(|ids| anyhow::anyhow!("seeding the groups returned {ids:?}"))?;
        *self.group_ids.lock().expect("group ids") = Some(ids);
        Ok(())
    }

    /// Requests served per tenant since the last reset: (identity domain, app).
    async fn stats(&self, reset: bool) -> Result<(Requests, Requests)> {
        let mut out = Vec::new();
        for tenant in ["idp", "app"] {
            let v: Requests = self
                .http
                .post(format!("{}/_admin/{tenant}/stats", self.server.root()))
                .bearer_auth(self.server.token(tenant))
                .json(&json!({"reset": reset}))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            out.push(v);
        }
        let app = out.pop().unwrap_or_default();
        let domain = out.pop().unwrap_or_default();
        Ok((domain, app))
    }

    /// One engine run from the shape's state, and back to it.
    async fn engine_once(&self, setup: &Setup) -> Result<EngineRun> {
        self.set_groups(&setup.granted_and_recorded()).await?;
        self.stats(true).await?;
        let run = self.run_engine(setup).await?;
        self.delete_created_users(setup).await?;
        Ok(run)
    }

    /// One lower-bound pass from the shape's state, and back to it.
    async fn lower_bound_once(&self, shape: Shape, setup: &Setup) -> Result<LowerBound> {
        self.set_groups(&setup.granted_and_recorded()).await?;
        self.stats(true).await?;
        let started = Instant::now();
        self.lower_bound(shape, setup).await?;
        let wall_s = started.elapsed().as_secs_f64();
        let (domain, app) = self.stats(true).await?;
        self.delete_created_users(setup).await?;
        Ok(LowerBound {
            wall_s,
            domain,
            app,
        })
    }

    /// Creates a SyncRun and runs the release binary on it; wall time from spawn to exit,
    /// CPU and peak RSS of that process alone (wait4's rusage).
    async fn run_engine(&self, setup: &Setup) -> Result<EngineRun> {
        let seq = self
            .run_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("run-{seq}");
        create::<SyncRun>(&self.cp.admin_client(),
            &self.ns,
            json!({"metadata": {"name": name}, "spec": {"appRef": {"name": "app"}, "mode": "Apply"}}),
        )
        .await?;
        let log = self.logs.join(format!("{}-{name}.log", self.ns));
        let mut cmd = std::process::Command::new(&self.command[0]);
        cmd.args(&self.command[1..])
            .args(["sync", "--run", &format!("{}/{name}", self.ns)])
            .env("KUBECONFIG", self.cp.kubeconfig_path())
            .env("RUST_LOG", "info")
            // JSON lines, so that the peak RSS the engine reports at the end can be read back.
            .env("CATALOGSYNC_LOG_FORMAT", "json")
            // Large buffers returned to the system when freed, as in the Job.
            .env(MALLOC_MMAP_THRESHOLD.0, MALLOC_MMAP_THRESHOLD.1)
            // Credentials as the Job passes them (Secret-backed environment variables), so
            // the engine reads no Secret through the API, as in the cluster.
            .env("CATALOGSYNC_DOMAIN_TOKEN", self.server.token("idp"))
            .env("CATALOGSYNC_APP_TOKEN", self.server.token("app"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(log.with_extension("err"))?);
        let (code, wall, ru) = tokio::task::spawn_blocking(move || -> Result<_> {
            let started = Instant::now();
            let child = cmd.spawn().context("starting catalogsync")?;
            let (code, ru) = wait4(child.id() as libc::pid_t)?;
            Ok((code, started.elapsed(), ru))
        })
        .await??;
        let (domain, app) = self.stats(true).await?;
        let status = self.status(&name).await?;
        let counts = status.counts.clone().unwrap_or_default();
        let expected = Expected::of(self.accounts, setup);
        if code != 0 || status.phase != Some(RunPhase::Succeeded) || !expected.matches(&counts) {
            bail!(
                "run {name}: exit {code}, phase {:?}, counts {counts:?}, expected {expected:?}; log {}",
                status.phase,
                log.display()
            );
        }
        Ok(EngineRun {
            wall_s: wall.as_secs_f64(),
            user_s: tv(ru.ru_utime),
            sys_s: tv(ru.ru_stime),
            max_rss_kib: reported_peak_rss_kib(&log)?,
            domain,
            app,
        })
    }

    async fn status(&self, name: &str) -> Result<SyncRunStatus> {
        Api::<SyncRun>::namespaced(self.cp.admin_client(), &self.ns)
            .get(name)
            .await?
            .status
            .context("the run has no status")
    }

    /// The minimum the sync needs from the server, as a minimal client sends it with the
    /// engine's concurrency: the domain's ServiceProviderConfig (page size); the grant group
    /// by name and its members, then the record group's; both sides' user pages at once
    /// (each side's pages one after another, as index pagination allows; the app's
    /// ServiceProviderConfig first); one filter query in the app per deletion candidate,
    /// `parallelism` at a time; the link PATCHes (grant, then record, per 10,000 links); the
    /// POSTs of new users, `parallelism` at a time, then their grant and record PATCHes;
    /// the removals (grant, then record: the group's members and version, then a `replace`
    /// under `If-Match`).
    async fn lower_bound(&self, shape: Shape, setup: &Setup) -> Result<()> {
        let idp = self.server.base_url("idp");
        let app = self.server.base_url("app");
        let (idp_token, app_token) = (self.server.token("idp"), self.server.token("app"));
        let page = self
            .get_json(&format!("{idp}/ServiceProviderConfig"), &idp_token, &[])
            .await?;
        let page_size = page["filter"]["maxResults"].as_u64().unwrap_or(100);
        let mut ids = Vec::new();
        for (name, _) in &self.groups {
            let filter = format!("displayName eq \"{name}\"");
            let groups = self
                .get_json(
                    &format!("{idp}/Groups"),
                    &idp_token,
                    &[
                        ("count", page_size.to_string()),
                        ("attributes", "id,displayName,externalId".into()),
                        ("filter", filter),
                        ("startIndex", "1".into()),
                    ],
                )
                .await?;
            let id = groups["Resources"][0]["id"]
                .as_str()
                .with_context(|| format!("no group {name}"))?
                .to_string();
            self.get_bytes(
                &format!("{idp}/Groups/{id}"),
                &idp_token,
                &[("attributes", "members,meta".into())],
            )
            .await?;
            ids.push(id);
        }
        let (grant, record) = (&ids[0], &ids[1]);
        let app_attrs = match shape {
            Shape::Create => &self.create_app_attrs,
            _ => &self.app_attrs,
        };
        let domain_side = self.list_all(&idp, &idp_token, &self.domain_attrs, page_size);
        let app_side = async {
            self.get_bytes(&format!("{app}/ServiceProviderConfig"), &app_token, &[])
                .await?;
            self.list_all(&app, &app_token, app_attrs, page_size).await
        };
        let (d, a) = tokio::join!(domain_side, app_side);
        d?;
        a?;
        self.confirm_gone(&app, &app_token, page_size, &setup.gone)
            .await?;
        for chunk in setup.to_link.chunks(MEMBERS_PER_PATCH) {
            self.add_members(grant, chunk).await?;
            self.add_members(record, chunk).await?;
        }
        let created = self.create_users(&setup.new_accounts).await?;
        for chunk in created.chunks(MEMBERS_PER_PATCH) {
            self.add_members(grant, chunk).await?;
            self.add_members(record, chunk).await?;
        }
        if !setup.gone.is_empty() {
            let gone: Vec<&str> = setup.gone.iter().map(|(id, _)| id.as_str()).collect();
            self.remove_members(grant, &gone).await?;
            self.remove_members(record, &gone).await?;
        }
        Ok(())
    }

    /// One query in the app per deletion candidate, the engine's own `or` filter
    /// (`Rules::confirmation_filter`: externalId, then each rule's values), `parallelism` at
    /// a time; each must find nothing.
    async fn confirm_gone(
        &self,
        app: &str,
        token: &str,
        page_size: u64,
        gone: &[(String, usize)],
    ) -> Result<()> {
        let filters: Vec<String> = gone
            .iter()
            .map(|(id, i)| {
                let name = format!("gone{i:06}");
                let doc = json!({"id": id, "userName": name, "active": true,
                    "emails": [{"value": format!("{name}@example.com"), "type": "work", "primary": true}]});
                let user = self.rules.domain_user(&doc).context("a gone user")?;
                let users = Records::of_users(self.rules.app.len(), &[user]);
                Ok(self.rules.confirmation_filter(id, Some(users.get(0))))
            })
            .collect::<Result<_>>()?;
        let results: Vec<Result<()>> =
            futures::stream::iter(filters.into_iter().map(|filter| async move {
                let v = self
                    .get_json(
                        &format!("{app}/Users"),
                        token,
                        &[
                            ("count", page_size.to_string()),
                            ("attributes", "id".into()),
                            ("filter", filter),
                            ("startIndex", "1".into()),
                        ],
                    )
                    .await?;
                ensure!(
                    v["totalResults"] == 0,
                    "a gone user's account was found: {v}"
                );
                Ok(())
            }))
            .buffered(self.parallelism)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// POST /Users of the engine's own body (`extract::new_user`) for each new account,
    /// `parallelism` at a time; the new users' ids.
    async fn create_users(&self, accounts: &[(String, usize)]) -> Result<Vec<String>> {
        let idp = self.server.base_url("idp");
        let token = self.server.token("idp");
        let rules = &self.create_rules;
        let bodies: Vec<Vec<u8>> = accounts
            .iter()
            .map(|(id, i)| {
                let name = format!("new{i:06}");
                let doc = json!({"id": id, "userName": name, "active": true,
                    "name": {"givenName": "Given", "familyName": format!("Family{i}")},
                    "emails": [{"value": format!("{name}@example.com"), "type": "work", "primary": true}]});
                let account = rules.app_account(&doc).context("a new account")?;
                let records = Records::of_accounts(rules.app.len(), rules.import.len(), &[account]);
                Ok(serde_json::to_vec(&extract::new_user(rules, records.get(0)))?)
            })
            .collect::<Result<_>>()?;
        let results: Vec<Result<String>> = futures::stream::iter(bodies.into_iter().map(|body| {
            let (idp, token) = (&idp, &token);
            async move {
                let resp = self
                    .http
                    .post(format!("{idp}/Users"))
                    .bearer_auth(token)
                    .header("content-type", "application/scim+json")
                    .body(body)
                    .send()
                    .await?;
                ensure!(resp.status().is_success(), "POST /Users: {}", resp.status());
                let v: Value = serde_json::from_slice(&resp.bytes().await?)?;
                Ok(v["id"]
                    .as_str()
                    .context("a created user without id")?
                    .to_string())
            }
        }))
        .buffer_unordered(self.parallelism)
        .collect()
        .await;
        results.into_iter().collect()
    }

    /// One PATCH `add` of `ids` (as the engine's `add_members` sends it: `type: User`).
    async fn add_members(&self, group: &str, ids: &[String]) -> Result<()> {
        let values: Vec<Value> = ids
            .iter()
            .map(|id| json!({"value": id, "type": "User"}))
            .collect();
        self.patch_group(
            group,
            json!({"op": "add", "path": "members", "value": values}),
            None,
        )
        .await
    }

    /// Removing members as the engine's client does where the server has ETags: the
    /// group's members and version, then one `replace` of the members kept under
    /// `If-Match` (a `remove` by filter costs scim2-server seconds per 100 values).
    async fn remove_members(&self, group: &str, ids: &[&str]) -> Result<()> {
        let idp = self.server.base_url("idp");
        let token = self.server.token("idp");
        let resp = self
            .http
            .get(format!("{idp}/Groups/{group}"))
            .bearer_auth(&token)
            .header("accept", "application/scim+json")
            .query(&[("attributes", "members,meta")])
            .send()
            .await?;
        ensure!(resp.status().is_success(), "GET group: {}", resp.status());
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let v: Value = serde_json::from_slice(&resp.bytes().await?)?;
        let version = etag
            .or_else(|| v["meta"]["version"].as_str().map(str::to_string))
            .context("the group has no version")?;
        let remove: std::collections::HashSet<&str> = ids.iter().copied().collect();
        let keep: Vec<Value> = v["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["value"].as_str())
            .filter(|id| !remove.contains(id))
            .map(|id| json!({"value": id}))
            .collect();
        self.patch_group(
            group,
            json!({"op": "replace", "path": "members", "value": keep}),
            Some(&version),
        )
        .await
    }

    async fn patch_group(&self, group: &str, op: Value, if_match: Option<&str>) -> Result<()> {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [op]
        });
        let mut req = self
            .http
            .patch(format!("{}/Groups/{group}", self.server.base_url("idp")))
            .bearer_auth(self.server.token("idp"))
            .header("content-type", "application/scim+json")
            .body(serde_json::to_vec(&body)?);
        if let Some(v) = if_match {
            req = req.header("if-match", v);
        }
        let resp = req.send().await?;
        ensure!(resp.status().is_success(), "PATCH: {}", resp.status());
        resp.bytes().await?;
        Ok(())
    }

    /// Every page of `/Users`, reading only `totalResults` from the first.
    async fn list_all(&self, base: &str, token: &str, attrs: &str, page_size: u64) -> Result<()> {
        #[derive(serde::Deserialize)]
        struct Total {
            #[serde(rename = "totalResults")]
            total_results: u64,
        }
        let mut start = 1u64;
        let mut total = None;
        loop {
            let bytes = self
                .get_bytes(
                    &format!("{base}/Users"),
                    token,
                    &[
                        ("count", page_size.to_string()),
                        ("attributes", attrs.to_string()),
                        ("startIndex", start.to_string()),
                    ],
                )
                .await?;
            let t = match total {
                Some(t) => t,
                None => serde_json::from_slice::<Total>(&bytes)?.total_results,
            };
            total = Some(t);
            start += page_size;
            if start > t {
                return Ok(());
            }
        }
    }

    async fn get_bytes(
        &self,
        url: &str,
        token: &str,
        query: &[(&str, String)],
    ) -> Result<bytes::Bytes> {
        let resp = self
            .http
            .get(url)
            .bearer_auth(token)
            .header("accept", "application/scim+json")
            .query(query)
            .send()
            .await?;
        ensure!(resp.status().is_success(), "GET {url}: {}", resp.status());
        Ok(resp.bytes().await?)
    }

    async fn get_json(&self, url: &str, token: &str, query: &[(&str, String)]) -> Result<Value> {
        Ok(serde_json::from_slice(
            &self.get_bytes(url, token, query).await?,
        )?)
    }
}

/// The counts a run of a shape must end with.
#[derive(Debug)]
struct Expected {
    app_accounts: i64,
    linked: i64,
    already_linked: i64,
    created: i64,
    deleted: i64,
}

impl Expected {
    fn of(accounts: usize, setup: &Setup) -> Expected {
        let links = setup.to_link.len();
        Expected {
            app_accounts: (accounts + setup.new_accounts.len()) as i64,
            linked: links as i64,
            already_linked: (accounts - links) as i64,
            created: setup.new_accounts.len() as i64,
            deleted: setup.gone.len() as i64,
        }
    }

    fn matches(&self, c: &Counts) -> bool {
        c.app_accounts == self.app_accounts
            && c.linked == self.linked
            && c.already_linked == self.already_linked
            && c.created == self.created
            && c.deleted == self.deleted
            && c.failed == 0
    }
}

/// The median; NaN for none (no lower bound under `--engine-only`).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn header() -> String {
    "| accounts/side | shape | links | creates | deletes | engine wall s | lower bound s | wall/LB | CPU s (user+sys) | CPU µs/account | peak RSS MiB | requests domain (engine / min) | requests app (engine / min) | runs |\n\
     |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|"
        .to_string()
}

fn row(m: &Measurement) -> String {
    let wall = median(m.engine.iter().map(|e| e.wall_s).collect());
    let lb = median(m.lower_bound.iter().map(|l| l.wall_s).collect());
    let cpu = median(m.engine.iter().map(|e| e.user_s + e.sys_s).collect());
    let rss = m.engine.iter().map(|e| e.max_rss_kib).max().unwrap_or(0) as f64 / 1024.0;
    let e = &m.engine[0];
    let (l_domain, l_app) = m.lower_bound.first().map_or(("-".into(), "-".into()), |l| {
        (l.domain.brief(), l.app.brief())
    });
    format!(
        "| {} | {:?} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.3} | {:.1} | {:.1} | {} / {} | {} / {} | {} |",
        m.accounts,
        m.shape,
        m.links,
        m.creates,
        m.deletes,
        wall,
        lb,
        wall / lb,
        cpu,
        cpu * 1e6 / m.accounts as f64,
        rss,
        e.domain.brief(),
        l_domain,
        e.app.brief(),
        l_app,
        m.engine.len(),
    )
}

/// The `peak_rss_kib` of the engine's "run finished" log line (the engine reads its own
/// `VmHWM`): wait4's `ru_maxrss` keeps the peak of the image the child was exec'ed from,
/// which is this benchmark process and its test data.
fn reported_peak_rss_kib(log: &std::path::Path) -> Result<i64> {
    let text = std::fs::read_to_string(log)?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "run finished")
        .and_then(|v| v["peak_rss_kib"].as_i64())
        .with_context(|| {
            format!(
                "no peak_rss_kib in the \"run finished\" line of {}",
                log.display()
            )
        })
}
