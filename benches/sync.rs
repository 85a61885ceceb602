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
    CatalogApp, IdentityDomain, RunPhase, SyncPolicy, SyncPolicySpec, SyncRun, SyncRunStatus,
};
use catalogsync::engine::extract::Rules;
use clap::Parser;
use kube::api::Api;
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
    /// Shapes to run: first (every account to link), changed (1% to link), steady (nothing to do).
    #[arg(long, value_delimiter = ',', default_value = "first,changed,steady")]
    shapes: Vec<Shape>,
    /// Runs per (size, shape) below 100,000 accounts; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Runs per (size, shape) from 100,000 accounts on (each takes minutes).
    #[arg(long, default_value_t = 1)]
    large_runs: usize,
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
}

impl Shape {
    /// The grant group before the run: which domain users are already members.
    fn members(self, ids: &[String]) -> Vec<String> {
        match self {
            Shape::First => Vec::new(),
            Shape::Steady => ids.to_vec(),
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
    domain_ids: Vec<String>,
    group_name: String,
    group_id: std::sync::Mutex<Option<String>>,
    domain_attrs: String,
    app_attrs: String,
    run_seq: std::sync::atomic::AtomicU32,
    logs: PathBuf,
    /// The engine's command line before `sync --run …`.
    command: Vec<String>,
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
        // The engine's own choice of attributes, so that the lower bound asks for the same.
        let spec: &SyncPolicySpec = &policy.spec;
        let rules = Rules::parse(&spec.matching).map_err(anyhow::Error::msg)?;
        let with_id = |attrs: Vec<String>| {
            let mut a = vec!["id".to_string()];
            a.extend(attrs.into_iter().filter(|x| x != "id"));
            a.join(",")
        };
        Ok(World {
            cp,
            ns,
            http: reqwest::Client::new(),
            accounts: n,
            domain_ids,
            group_name: app.grant_group_name(),
            group_id: std::sync::Mutex::new(None),
            domain_attrs: with_id(rules.domain_attributes()),
            app_attrs: with_id(rules.app_attributes()),
            run_seq: Default::default(),
            logs,
            command,
            server,
        })
    }

    async fn measure(&self, shape: Shape, runs: usize) -> Result<Measurement> {
        let members = shape.members(&self.domain_ids);
        let links = self.accounts - members.len();
        let to_link: Vec<String> = {
            let set: std::collections::HashSet<&String> = members.iter().collect();
            self.domain_ids
                .iter()
                .filter(|id| !set.contains(id))
                .cloned()
                .collect()
        };
        let load_before = loadavg();
        let mut engine = Vec::new();
        let mut lower = Vec::new();
        for _ in 0..runs {
            self.set_group(&members).await?;
            self.stats(true).await?;
            let e = self.run_engine(links).await?;
            engine.push(e);

            self.set_group(&members).await?;
            self.stats(true).await?;
            let started = Instant::now();
            self.lower_bound(&to_link).await?;
            let wall_s = started.elapsed().as_secs_f64();
            let (domain, app) = self.stats(true).await?;
            lower.push(LowerBound {
                wall_s,
                domain,
                app,
            });
        }
        Ok(Measurement {
            accounts: self.accounts,
            shape,
            links,
            engine,
            lower_bound: lower,
            load_before,
            load_after: loadavg(),
        })
    }

    /// Puts the grant group in the shape's state straight into the storage: deletes the
    /// group, then seeds it anew with `members`.
    async fn set_group(&self, members: &[String]) -> Result<()> {
        let old = self.group_id.lock().expect("group id").take();
        if let Some(id) = old {
            let resp = self
                .http
                .delete(format!("{}/Groups/{id}", self.server.base_url("idp")))
                .bearer_auth(self.server.token("idp"))
                .send()
                .await?;
            ensure!(
                resp.status().is_success(),
                "deleting the group: {}",
                resp.status()
            );
        }
        let members: Vec<Value> = members.iter().map(|id| json!({"value": id})).collect();
        let ids = self
            .server
            .seed(
                "idp",
                json!({"Groups": [{"displayName": self.group_name, "members": members}], "returnIds": true}),
            )
            .await;
        ensure!(ids.len() == 1, "seeding the grant group returned {ids:?}");
        *self.group_id.lock().expect("group id") = ids.into_iter().next();
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

    /// Creates a SyncRun and runs the release binary on it; wall time from spawn to exit,
    /// CPU and peak RSS of that process alone (wait4's rusage).
    async fn run_engine(&self, links: usize) -> Result<EngineRun> {
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
        if code != 0
            || status.phase != Some(RunPhase::Succeeded)
            || counts.linked != links as i64
            || counts.already_linked != (self.accounts - links) as i64
            || counts.failed != 0
        {
            bail!(
                "run {name}: exit {code}, phase {:?}, counts {counts:?}, expected {links} links; log {}",
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
    /// engine's concurrency: the ServiceProviderConfig of each side (page size), the grant
    /// group by name and its members, then both sides' user pages at once (each side's
    /// pages one after another, as index pagination allows), then the membership PATCHes.
    async fn lower_bound(&self, to_link: &[String]) -> Result<()> {
        let idp = self.server.base_url("idp");
        let app = self.server.base_url("app");
        let (idp_token, app_token) = (self.server.token("idp"), self.server.token("app"));
        let page = self
            .get_json(&format!("{idp}/ServiceProviderConfig"), &idp_token, &[])
            .await?;
        let page_size = page["filter"]["maxResults"].as_u64().unwrap_or(100);
        let filter = format!("displayName eq \"{}\"", self.group_name);
        let groups = self
            .get_json(
                &format!("{idp}/Groups"),
                &idp_token,
                &[
                    ("count", page_size.to_string()),
                    ("attributes", "id,displayName".into()),
                    ("filter", filter),
                    ("startIndex", "1".into()),
                ],
            )
            .await?;
        let group_id = groups["Resources"][0]["id"]
            .as_str()
            .context("no grant group")?
            .to_string();
        self.get_bytes(
            &format!("{idp}/Groups/{group_id}"),
            &idp_token,
            &[("attributes", "members,meta".into())],
        )
        .await?;
        let domain_side = self.list_all(&idp, &idp_token, &self.domain_attrs, page_size);
        let app_side = async {
            self.get_bytes(&format!("{app}/ServiceProviderConfig"), &app_token, &[])
                .await?;
            self.list_all(&app, &app_token, &self.app_attrs, page_size)
                .await
        };
        let (d, a) = tokio::join!(domain_side, app_side);
        d?;
        a?;
        for chunk in to_link.chunks(MEMBERS_PER_PATCH) {
            let values: Vec<Value> = chunk.iter().map(|id| json!({"value": id})).collect();
            let body = json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "add", "path": "members", "value": values}]
            });
            let resp = self
                .http
                .patch(format!("{idp}/Groups/{group_id}"))
                .bearer_auth(&idp_token)
                .header("content-type", "application/scim+json")
                .body(serde_json::to_vec(&body)?)
                .send()
                .await?;
            ensure!(resp.status().is_success(), "PATCH: {}", resp.status());
            resp.bytes().await?;
        }
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn header() -> String {
    "| accounts/side | shape | links | engine wall s | lower bound s | wall/LB | CPU s (user+sys) | CPU µs/account | peak RSS MiB | requests domain (engine / min) | requests app (engine / min) | runs |\n\
     |---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|"
        .to_string()
}

fn row(m: &Measurement) -> String {
    let wall = median(m.engine.iter().map(|e| e.wall_s).collect());
    let lb = median(m.lower_bound.iter().map(|l| l.wall_s).collect());
    let cpu = median(m.engine.iter().map(|e| e.user_s + e.sys_s).collect());
    let rss = m.engine.iter().map(|e| e.max_rss_kib).max().unwrap_or(0) as f64 / 1024.0;
    let (e, l) = (&m.engine[0], &m.lower_bound[0]);
    format!(
        "| {} | {:?} | {} | {:.2} | {:.2} | {:.2} | {:.3} | {:.1} | {:.1} | {} / {} | {} / {} | {} |",
        m.accounts,
        m.shape,
        m.links,
        wall,
        lb,
        wall / lb,
        cpu,
        cpu * 1e6 / m.accounts as f64,
        rss,
        e.domain.brief(),
        l.domain.brief(),
        e.app.brief(),
        l.app.brief(),
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
