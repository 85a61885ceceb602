//! Controller benchmark: N CatalogApps (each with its own SyncPolicy) on a real local
//! control plane, one IdentityDomain and a real SCIM server (scim2-server: the identity
//! domain tenant `idp`, every app on the tenant `app`), reconciled by the release
//! `catalogsync controller` binary as a child process.
//!
//! Measured: the time from the controller's start to every app `Ready=True` (a list every
//! 250 ms), the reconcile latency p50/p99 by kind from the controller's
//! `catalogsync_reconcile_duration_seconds` histogram, the API writes during a quiet window
//! after convergence (every object of the namespace whose resourceVersion changed, plus
//! objects created or deleted, Events included), and the controller's peak RSS and CPU
//! (peak RSS from its `/proc/<pid>/status` before SIGTERM, CPU from wait4's rusage after).
//!
//! `make bench-controller` runs it for 1,000 apps (see docs/benchmarks.md). Under
//! `cargo test --features dev --all-targets` (no `--bench` argument) it makes a smoke run at 20 apps with a
//! 5 s quiet window that fails unless every app is Ready and the quiet window has no write.

mod common;
#[allow(dead_code)]
#[path = "../tests/integration/harness.rs"]
mod harness;
#[path = "../tests/integration/scim_server.rs"]
mod scim_server;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use catalogsync::api::{CatalogApp, IdentityDomain, SyncPolicy, SyncRun};
use catalogsync::cluster::conditions::{find, is_true};
use clap::Parser;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use common::{command_line, loadavg, machine, scratch_dir, token_secrets, tv, wait4};
use harness::{control_plane, create};
use scim_server::ScimServer;

const HISTOGRAM: &str = "catalogsync_reconcile_duration_seconds";

#[derive(Parser, Debug)]
#[command(
    about = "Benchmarks the controller: N CatalogApps to Ready, reconcile latency, quiet writes, RSS, CPU",
    args_override_self = true
)]
struct Args {
    /// CatalogApps to create (each with its own SyncPolicy).
    #[arg(long, default_value_t = 1000)]
    apps: usize,
    /// Length of the quiet window after convergence, in which writes are counted.
    #[arg(long, default_value_t = 60)]
    quiet_seconds: u64,
    /// Give up waiting for all Ready after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_seconds: u64,
    /// The catalogsync binary to run (default: the one cargo built with this benchmark).
    #[arg(long)]
    controller: Option<PathBuf>,
    /// A command to run the controller under (split on spaces), e.g.
    /// "valgrind --tool=massif --massif-out-file=/tmp/massif.out" or "env MALLOC_ARENA_MAX=2".
    /// CPU and RSS are then the wrapper's.
    #[arg(long)]
    wrap: Option<String>,
    /// Also write the measurement as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
struct Quantiles {
    kind: String,
    count: u64,
    sum_s: f64,
    p50_s: f64,
    p99_s: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
struct Measurement {
    apps: usize,
    apply_s: f64,
    all_ready_s: f64,
    reconciles_at_ready: Vec<Quantiles>,
    reconciles_after_quiet: Vec<Quantiles>,
    quiet_seconds: u64,
    quiet_writes: usize,
    quiet_write_objects: Vec<String>,
    user_s: f64,
    sys_s: f64,
    max_rss_kib: i64,
    exit_code: i32,
    load_before: String,
    load_at_ready: String,
    load_after: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    run(Args::parse()).await
}

async fn run(mut args: Args) -> Result<()> {
    let smoke = !args.bench;
    if smoke {
        eprintln!("smoke run; the benchmark itself runs with `make bench-controller`");
        args.apps = 20;
        args.quiet_seconds = 5;
        args.timeout_seconds = 60;
        args.json = None;
    }
    let machine = machine();
    eprintln!("{machine}");
    let dir = scratch_dir("cbench")?;
    let command = command_line(&dir, args.controller.as_deref(), args.wrap.as_deref())?;
    let cp = control_plane().await;
    let server = ScimServer::start(&["idp", "app"]);
    let ns = cp.new_namespace(&format!("cbench-{}", args.apps)).await;
    let client = cp.admin_client();
    let load_before = loadavg();

    // Apply: Secrets, the IdentityDomain, then N SyncPolicies and N CatalogApps.
    let applying = Instant::now();
    token_secrets(&client, &ns, |t| server.token(t)).await?;
    create::<IdentityDomain>(
        &client,
        &ns,
        json!({"metadata": {"name": "corp"}, "spec": {
            "url": server.base_url("idp"), "insecure": true,
            "auth": {"bearerToken": {"secretRef": {"name": "idp-token", "key": "token"}}}
        }}),
    )
    .await?;
    let app_url = server.base_url("app");
    futures::stream::iter(0..args.apps)
        .map(|i| {
            let (client, ns, app_url) = (client.clone(), ns.clone(), app_url.clone());
            async move {
                // An on-demand policy (no schedule): no run starts.
                create::<SyncPolicy>(
                    &client,
                    &ns,
                    json!({"metadata": {"name": format!("policy-{i:05}")}, "spec": {
                        "matching": [{"appAttribute": "userName", "domainAttribute": "userName"}]
                    }}),
                )
                .await?;
                create::<CatalogApp>(
                    &client,
                    &ns,
                    json!({"metadata": {"name": format!("app-{i:05}")}, "spec": {
                        "identityDomainRef": {"name": "corp"},
                        "connection": {"url": app_url, "insecure": true,
                            "auth": {"bearerToken": {"secretRef": {"name": "app-token", "key": "token"}}}},
                        "provisioning": {"enabled": true},
                        "synchronization": {"enabled": true, "policyRef": {"name": format!("policy-{i:05}")}}
                    }}),
                )
                .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    let apply_s = applying.elapsed().as_secs_f64();
    eprintln!(
        "applied {} SyncPolicies and {} CatalogApps in {apply_s:.1}s",
        args.apps, args.apps
    );

    // The controller, as a child process.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log = dir.join("controller.log");
    let mut cmd = std::process::Command::new(&command[0]);
    cmd.args(&command[1..])
        .args([
            "controller",
            "--namespace",
            &ns,
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .env("KUBECONFIG", cp.kubeconfig_path())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(log.with_extension("err"))?);
    let started = Instant::now();
    let child = cmd.spawn().context("starting catalogsync controller")?;
    let pid = child.id() as libc::pid_t;
    let stop = || {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        tokio::task::spawn_blocking(move || wait4(pid))
    };

    let apps: Api<CatalogApp> = Api::namespaced(client.clone(), &ns);
    let deadline = started + Duration::from_secs(args.timeout_seconds);
    let mut last_ready = usize::MAX;
    let all_ready_s = loop {
        let list = apps.list(&ListParams::default()).await?;
        let ready = list
            .items
            .iter()
            .filter(|a| {
                a.status
                    .as_ref()
                    .is_some_and(|s| is_true(&s.conditions, "Ready"))
            })
            .count();
        if ready == args.apps {
            break started.elapsed().as_secs_f64();
        }
        if ready != last_ready {
            // Why the others are not Ready: the Ready condition's reasons, counted.
            let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
            for a in &list.items {
                let c = a.status.as_ref().and_then(|s| find(&s.conditions, "Ready"));
                if c.is_none_or(|c| c.status != "True") {
                    let r = c.map_or("no status".to_string(), |c| {
                        format!("{} {}", c.status, c.reason)
                    });
                    *reasons.entry(r).or_default() += 1;
                }
            }
            eprintln!(
                "{:6.2}s: {ready}/{} Ready; others {reasons:?}",
                started.elapsed().as_secs_f64(),
                args.apps
            );
            last_ready = ready;
        }
        if Instant::now() > deadline {
            let _ = stop().await;
            bail!(
                "{ready}/{} apps Ready after {}s; controller log {}",
                args.apps,
                args.timeout_seconds,
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let load_at_ready = loadavg();
    eprintln!("all {} apps Ready after {all_ready_s:.2}s", args.apps);
    let http = reqwest::Client::new();
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let reconciles_at_ready = quantiles(&scrape(&http, &metrics_url).await?);

    // Quiet window: nothing changes; the controller must write nothing.
    // A short settle first, so that the last status writes of the convergence are over.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = versions(&client, &ns).await?;
    tokio::time::sleep(Duration::from_secs(args.quiet_seconds)).await;
    let after = versions(&client, &ns).await?;
    let mut quiet_write_objects = Vec::new();
    for (k, v) in &after {
        if before.get(k) != Some(v) {
            quiet_write_objects.push(k.clone());
        }
    }
    for k in before.keys() {
        if !after.contains_key(k) {
            quiet_write_objects.push(format!("{k} (deleted)"));
        }
    }
    let reconciles_after_quiet = quantiles(&scrape(&http, &metrics_url).await?);

    // Read while it runs: its peak so far is the run's (shutting down only frees).
    let max_rss_kib = child_peak_rss_kib(pid)?;
    let (exit_code, ru) = stop().await??;
    let m = Measurement {
        apps: args.apps,
        apply_s,
        all_ready_s,
        reconciles_at_ready,
        reconciles_after_quiet,
        quiet_seconds: args.quiet_seconds,
        quiet_writes: quiet_write_objects.len(),
        quiet_write_objects,
        user_s: tv(ru.ru_utime),
        sys_s: tv(ru.ru_stime),
        max_rss_kib,
        exit_code,
        load_before,
        load_at_ready,
        load_after: loadavg(),
    };
    println!("\n{machine}\n\n{}", table(&m));
    if let Some(path) = &args.json {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let doc = json!({"machine": machine, "result": m});
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
        eprintln!("wrote {}", path.display());
    }
    ensure!(
        m.exit_code == 0,
        "the controller exited {} after SIGTERM; log {}",
        m.exit_code,
        log.display()
    );
    if smoke {
        ensure!(
            m.quiet_writes == 0,
            "writes in the quiet window: {:?}",
            m.quiet_write_objects
        );
        println!("controller benchmark smoke: passed");
    }
    Ok(())
}

/// `kind/name` → resourceVersion of every object the controller reads or writes in the
/// namespace, Events included (a new Event is a write too).
async fn versions(client: &Client, ns: &str) -> Result<BTreeMap<String, String>> {
    async fn add<K>(
        out: &mut BTreeMap<String, String>,
        client: &Client,
        ns: &str,
        kind: &str,
    ) -> Result<()>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        for o in Api::<K>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await?
        {
            out.insert(
                format!("{kind}/{}", o.name_any()),
                o.resource_version().unwrap_or_default(),
            );
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    add::<CatalogApp>(&mut out, client, ns, "CatalogApp").await?;
    add::<SyncPolicy>(&mut out, client, ns, "SyncPolicy").await?;
    add::<IdentityDomain>(&mut out, client, ns, "IdentityDomain").await?;
    add::<SyncRun>(&mut out, client, ns, "SyncRun").await?;
    add::<Job>(&mut out, client, ns, "Job").await?;
    add::<Secret>(&mut out, client, ns, "Secret").await?;
    add::<Event>(&mut out, client, ns, "Event").await?;
    Ok(out)
}

async fn scrape(http: &reqwest::Client, url: &str) -> Result<String> {
    Ok(http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?)
}

/// p50 and p99 by kind from the reconcile-duration histogram, interpolated linearly within
/// the bucket as Prometheus' `histogram_quantile` does.
fn quantiles(text: &str) -> Vec<Quantiles> {
    // kind → (le, cumulative count)
    let mut buckets: BTreeMap<String, Vec<(f64, u64)>> = BTreeMap::new();
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(HISTOGRAM)) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let label = |name: &str| {
            let start = series.find(&format!("{name}=\""))? + name.len() + 2;
            let len = series[start..].find('"')?;
            Some(series[start..start + len].to_string())
        };
        let Some(kind) = label("kind") else { continue };
        if series.starts_with(&format!("{HISTOGRAM}_bucket")) {
            let le = match label("le").as_deref() {
                Some("+Inf") => f64::INFINITY,
                Some(x) => x.parse().unwrap_or(f64::NAN),
                None => continue,
            };
            let count = value.parse::<f64>().unwrap_or(0.0) as u64;
            buckets.entry(kind).or_default().push((le, count));
        } else if series.starts_with(&format!("{HISTOGRAM}_sum")) {
            sums.insert(kind, value.parse().unwrap_or(0.0));
        }
    }
    buckets
        .into_iter()
        .map(|(kind, mut b)| {
            b.sort_by(|x, y| x.0.total_cmp(&y.0));
            let count = b.last().map_or(0, |x| x.1);
            Quantiles {
                sum_s: sums.get(&kind).copied().unwrap_or(0.0),
                kind,
                count,
                p50_s: quantile(&b, 0.5),
                p99_s: quantile(&b, 0.99),
            }
        })
        .collect()
}

fn quantile(buckets: &[(f64, u64)], q: f64) -> f64 {
    let Some(&(_, total)) = buckets.last() else {
        return f64::NAN;
    };
    if total == 0 {
        return f64::NAN;
    }
    let rank = q * total as f64;
    let (mut lower, mut below) = (0.0, 0u64);
    for &(le, count) in buckets {
        if count as f64 >= rank {
            if le.is_infinite() {
                // Above the largest finite bound: report that bound, as Prometheus does.
                return lower;
            }
            let inside = (count - below) as f64;
            if inside == 0.0 {
                return le;
            }
            return lower + (le - lower) * (rank - below as f64) / inside;
        }
        lower = le;
        below = count;
    }
    lower
}

fn table(m: &Measurement) -> String {
    let mut out = format!(
        "| apps | apply s | start → all Ready s | quiet s | quiet writes | CPU s (user+sys) | peak RSS MiB |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n\
         | {} | {:.1} | {:.2} | {} | {} | {:.2} | {:.1} |\n\n",
        m.apps,
        m.apply_s,
        m.all_ready_s,
        m.quiet_seconds,
        m.quiet_writes,
        m.user_s + m.sys_s,
        m.max_rss_kib as f64 / 1024.0,
    );
    out.push_str(
        "| kind | reconciles at all Ready | p50 ms | p99 ms | mean ms | reconciles after the quiet window |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    for q in &m.reconciles_at_ready {
        let after = m
            .reconciles_after_quiet
            .iter()
            .find(|a| a.kind == q.kind)
            .map_or(0, |a| a.count);
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {} |\n",
            q.kind,
            q.count,
            q.p50_s * 1e3,
            q.p99_s * 1e3,
            q.sum_s * 1e3 / q.count.max(1) as f64,
            after,
        ));
    }
    if !m.quiet_write_objects.is_empty() {
        out.push_str(&format!(
            "\nwritten in the quiet window: {:?}\n",
            m.quiet_write_objects
        ));
    }
    out
}

/// Peak resident memory of a running child in KiB, from its `/proc/<pid>/status`. Not
/// wait4's `ru_maxrss`: exec keeps the peak of the image the child was spawned from, which
/// is this benchmark process.
fn child_peak_rss_kib(pid: libc::pid_t) -> Result<i64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    match catalogsync::telemetry::vm_hwm_kib(&status) {
        Some(k) => Ok(k as i64),
        None => bail!("no VmHWM in /proc/{pid}/status"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantile_interpolates_like_prometheus() {
        let b = [(0.01, 50), (0.05, 90), (0.1, 100), (f64::INFINITY, 100)];
        assert!((super::quantile(&b, 0.5) - 0.01).abs() < 1e-12);
        assert!((super::quantile(&b, 0.7) - 0.03).abs() < 1e-12);
        assert!((super::quantile(&b, 0.99) - 0.095).abs() < 1e-12);
    }
}
