//! `catalogsync sync --run NAMESPACE/NAME`: executes one SyncRun. Loads the run, its app,
//! identity domain and policy, resolves credentials (Job env, else the Secrets through the
//! API, for runs by hand), then runs the stages while a reporter writes progress to the
//! run's status; ends with the final phase and an exit code from [`crate::cluster::exit_code`].

pub mod extract;
pub mod import;
pub mod limits;
pub mod mapping;
pub mod matching;
pub mod outcome;
pub mod plan;
pub mod progress;
pub mod provision;
pub mod records;
pub mod stop;
pub mod writes;

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Api, Client};
use tracing::Instrument;

use crate::api::{
    AppliedLimits, CatalogApp, Direction, IdentityDomain, RunPhase, Stage, SyncPolicy,
    SyncPolicySpec, SyncRun,
};
use crate::cluster::credentials::{self, Side};
use crate::cluster::exit_code;
use crate::engine::plan::ImportPolicy;
use crate::scim::{ClientOptions, ScimClient};

use outcome::Outcome;
use progress::{RunState, Tracker};
use stop::{Stop, StopReason};

/// Entry of the subcommand: a kube client from the environment (in-cluster or the current
/// kubeconfig), SIGTERM/SIGINT wired to a graceful stop.
pub async fn main(run_ref: &str) -> u8 {
    let Some((namespace, name)) = run_ref
        .split_once('/')
        .filter(|(n, m)| !n.is_empty() && !m.is_empty())
    else {
        tracing::error!(run = run_ref, "--run must be NAMESPACE/NAME");
        return exit_code::INVALID;
    };
    let client = match Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no Kubernetes client configuration");
            return exit_code::FAILED;
        }
    };
    let stop = Stop::default();
    spawn_signal_handler(stop.clone());
    execute(client, namespace, name, stop).await
}

fn spawn_signal_handler(stop: Stop) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("signal received: no new writes, finishing in-flight ones");
        stop.stop(StopReason::Signal);
    });
}

/// A run that cannot start: why, and the exit code.
struct Invalid {
    message: String,
    code: u8,
}

impl Invalid {
    fn config(message: impl Into<String>) -> Self {
        Invalid {
            message: message.into(),
            code: exit_code::INVALID,
        }
    }
    fn transient(message: impl Into<String>) -> Self {
        Invalid {
            message: message.into(),
            code: exit_code::FAILED,
        }
    }
    /// Not an error: the run must not change anything any more.
    fn cancel(message: impl Into<String>) -> Self {
        Invalid {
            message: message.into(),
            code: exit_code::CANCELLED,
        }
    }
    fn outcome(self) -> (Outcome, u8) {
        let o = if self.code == exit_code::CANCELLED {
            Outcome::cancelled(self.message)
        } else {
            Outcome::failed(self.message)
        };
        (o, self.code)
    }
}

fn kube_err(what: &str, e: kube::Error) -> Invalid {
    match &e {
        kube::Error::Api(s) if s.code == 404 => Invalid::config(format!("{what} not found")),
        _ => Invalid::transient(format!("reading {what}: {e}")),
    }
}

async fn client_for(
    client: &Client,
    namespace: &str,
    side: Side,
    url: &str,
    auth: &crate::api::Auth,
    tls: Option<&crate::api::Tls>,
    parallelism: usize,
) -> Result<ScimClient, Invalid> {
    let resolved = if credentials::env_present(side, auth, tls) {
        credentials::from_env(side, auth, tls)
    } else {
        credentials::from_secrets(client, namespace, auth, tls).await
    }
    .map_err(|e| Invalid::config(format!("{side:?} credentials: {e}")))?;
    let mut opts = ClientOptions::new(url, resolved.credentials);
    opts.ca_pem = resolved.ca_pem.map(String::into_bytes);
    opts.parallelism = parallelism;
    ScimClient::with_options(opts).map_err(|e| Invalid::config(format!("{side:?} client: {e}")))
}

/// What every run needs from the cluster: its app, both SCIM clients, and the policy
/// (required for Import; for Provision it only lends parallelism, timeout and failure
/// threshold when the app has one).
struct Loaded {
    app: CatalogApp,
    policy: Option<SyncPolicySpec>,
    domain: ScimClient,
    app_client: ScimClient,
    parallelism: usize,
    timeout: String,
    max_failure_percent: u32,
}

async fn load(
    client: &Client,
    namespace: &str,
    run: &SyncRun,
    stop: &Stop,
) -> Result<Loaded, Invalid> {
    let apps: Api<CatalogApp> = Api::namespaced(client.clone(), namespace);
    let app_name = &run.spec.app_ref.name;
    let app = apps
        .get(app_name)
        .await
        .map_err(|e| kube_err(&format!("CatalogApp {app_name}"), e))?;
    // The controller cancels runs of suspended apps; a Job starting meanwhile must not act.
    if app.spec.suspend {
        return Err(Invalid::cancel(format!(
            "CatalogApp {app_name} is suspended"
        )));
    }
    let enabled = match run.spec.direction {
        Direction::Import => app.spec.synchronization.as_ref().is_some_and(|s| s.enabled),
        Direction::Provision => app.spec.provisioning.as_ref().is_some_and(|p| p.enabled),
    };
    if !enabled {
        return Err(Invalid::cancel(format!(
            "{} is not enabled for CatalogApp {app_name}",
            match run.spec.direction {
                Direction::Import => "synchronization",
                Direction::Provision => "provisioning",
            }
        )));
    }
    let domains: Api<IdentityDomain> = Api::namespaced(client.clone(), namespace);
    let domain_name = &app.spec.identity_domain_ref.name;
    let domain = domains
        .get(domain_name)
        .await
        .map_err(|e| kube_err(&format!("IdentityDomain {domain_name}"), e))?;
    let policy_name = app
        .spec
        .synchronization
        .as_ref()
        .map(|s| s.policy_ref.name.clone());
    let policy = match (&policy_name, run.spec.direction) {
        (None, Direction::Import) => {
            return Err(Invalid::config(format!(
                "CatalogApp {app_name} has no synchronization.policyRef"
            )));
        }
        (None, Direction::Provision) => None,
        (Some(name), direction) => {
            let policies: Api<SyncPolicy> = Api::namespaced(client.clone(), namespace);
            match policies.get_opt(name).await {
                Ok(Some(p)) => Some(p.spec),
                Ok(None) if direction == Direction::Provision => None,
                Ok(None) => return Err(Invalid::config(format!("SyncPolicy {name} not found"))),
                Err(e) => return Err(kube_err(&format!("SyncPolicy {name}"), e)),
            }
        }
    };
    let (parallelism, timeout, max_failure_percent) = match &policy {
        Some(p) => (p.parallelism, p.timeout.clone(), p.max_failure_percent),
        None => (8, "1h".to_string(), 40),
    };
    let parallelism = parallelism.clamp(1, 256) as usize;
    let timeout_after = crate::api::parse_duration(&timeout)
        .ok_or_else(|| Invalid::config(format!("timeout {timeout:?} is not a duration")))?;
    let domain_client = client_for(
        client,
        namespace,
        Side::Domain,
        &domain.spec.url,
        &domain.spec.auth,
        domain.spec.tls.as_ref(),
        parallelism,
    )
    .await?;
    let app_client = client_for(
        client,
        namespace,
        Side::App,
        &app.spec.connection.url,
        &app.spec.connection.auth,
        app.spec.connection.tls.as_ref(),
        parallelism,
    )
    .await?;
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(timeout_after).await;
            stop.stop(StopReason::Timeout);
        });
    }
    Ok(Loaded {
        app,
        policy,
        domain: domain_client,
        app_client,
        parallelism,
        timeout,
        max_failure_percent: max_failure_percent.clamp(0, 100) as u32,
    })
}

impl Loaded {
    /// The shared part of a run, held to `limits`.
    fn common(
        self,
        limits: Option<crate::api::Limits>,
        run: &SyncRun,
        tracker: &Tracker,
        stop: &Stop,
    ) -> import::Common {
        tracker.update(|s| s.limits = Some(applied_limits(limits.as_ref())));
        import::Common {
            grant_group: self.app.grant_group_name(),
            domain: self.domain,
            app: self.app_client,
            limits,
            parallelism: self.parallelism,
            mode: run.spec.mode,
            max_failure_percent: self.max_failure_percent,
            timeout: self.timeout,
            tracker: tracker.clone(),
            stop: stop.clone(),
        }
    }
}

fn applied_limits(limits: Option<&crate::api::Limits>) -> AppliedLimits {
    AppliedLimits {
        max_creates: limits.and_then(|l| l.max_creates),
        max_deletes: limits.and_then(|l| l.max_deletes),
    }
}

/// Builds the Import run.
fn prepare_import(
    l: Loaded,
    run: &SyncRun,
    tracker: &Tracker,
    stop: &Stop,
) -> Result<import::ImportRun, Invalid> {
    let p = l.policy.clone().expect("load requires a policy for Import");
    let mut rules = extract::Rules::parse(&p.matching).map_err(Invalid::config)?;
    if p.on_no_match == crate::api::OnNoMatch::CreateUser {
        let import = crate::api::catalog::get(&l.app.spec.catalog_item)
            .or_else(|| crate::api::catalog::get("GenericSCIM"))
            .map(|e| e.import_mappings.clone())
            .unwrap_or_default();
        rules = rules
            .with_import_mappings(import)
            .map_err(Invalid::config)?;
    }
    Ok(import::ImportRun {
        rules,
        policy: ImportPolicy {
            on_exact_match: p.on_exact_match,
            on_no_match: p.on_no_match,
            on_account_deleted: p.on_account_deleted,
        },
        c: l.common(p.limits.clone(), run, tracker, stop),
    })
}

/// Builds the Provision run: mappings, operations and limits from `spec.provisioning`.
fn prepare_provision(
    l: Loaded,
    run: &SyncRun,
    tracker: &Tracker,
    stop: &Stop,
) -> Result<provision::ProvisionRun, Invalid> {
    let prov = l
        .app
        .spec
        .provisioning
        .clone()
        .filter(|p| p.enabled)
        .ok_or_else(|| Invalid::config("provisioning is not enabled for this app"))?;
    let mappings = if prov.attribute_mappings.is_empty() {
        mapping::default_mappings(&l.app.spec.catalog_item)
    } else {
        prov.attribute_mappings.clone()
    };
    let mappings = mapping::Mappings::parse(&mappings).map_err(Invalid::config)?;
    let entry = crate::api::catalog::get(&l.app.spec.catalog_item);
    // Only what both the app (its catalog entry) and the user allow.
    let operations: Vec<_> = prov
        .operations
        .iter()
        .copied()
        .filter(|o| entry.is_none_or(|e| e.operations.contains(o)))
        .collect();
    let deactivate_deletes =
        entry.is_some_and(|e| e.deactivation == crate::api::catalog::Deactivation::Delete);
    Ok(provision::ProvisionRun {
        mappings,
        operations,
        deactivate_deletes,
        c: l.common(prov.limits.clone(), run, tracker, stop),
    })
}

/// Runs the stages of either direction and decides the outcome.
async fn run_stages(
    client: &Client,
    namespace: &str,
    run: &SyncRun,
    tracker: &Tracker,
    stop: &Stop,
) -> (Outcome, u8) {
    let loaded = match load(client, namespace, run, stop).await {
        Ok(l) => l,
        Err(inv) => return inv.outcome(),
    };
    let (timeout, max_failure_percent) = (loaded.timeout.clone(), loaded.max_failure_percent);
    let (domain, app) = (loaded.domain.clone(), loaded.app_client.clone());
    let started = std::time::Instant::now();
    let result = match run.spec.direction {
        Direction::Import => match prepare_import(loaded, run, tracker, stop) {
            Ok(ir) => import::run(&ir).await,
            Err(inv) => return inv.outcome(),
        },
        Direction::Provision => match prepare_provision(loaded, run, tracker, stop) {
            Ok(pr) => provision::run(&pr).await,
            Err(inv) => return inv.outcome(),
        },
    };
    // Cost of the run, for capacity planning: requests per side, retries, wall time.
    tracing::info!(
        domain_requests = domain.requests(),
        domain_retries = domain.retries(),
        app_requests = app.requests(),
        app_retries = app.retries(),
        seconds = started.elapsed().as_secs_f64(),
        "SCIM traffic"
    );
    let observed = match result {
        Ok(o) => o,
        Err(import::ImportError::Stopped) => outcome::Observed {
            stopped: stop.reason(),
            timeout,
            max_failure_percent,
            ..Default::default()
        },
        Err(e) => return (Outcome::failed(e.to_string()), exit_code::FAILED),
    };
    let o = outcome::decide(run.spec.mode, &tracker.snapshot().counts, &observed);
    let code = o.exit_code();
    (o, code)
}

/// Executes the SyncRun `namespace/name` and returns the process exit code.
pub async fn execute(client: Client, namespace: &str, name: &str, stop: Stop) -> u8 {
    let runs: Api<SyncRun> = Api::namespaced(client.clone(), namespace);
    let run = match runs.get(name).await {
        Ok(r) => r,
        Err(e) => {
            let inv = kube_err(&format!("SyncRun {namespace}/{name}"), e);
            tracing::error!(run = %format!("{namespace}/{name}"), error = %inv.message, "cannot start");
            return inv.code;
        }
    };
    let previous = run.status.clone().unwrap_or_default();
    if let Some(phase) = previous.phase.filter(|p| p.is_finished()) {
        // A Job retried after the run finished must not run it again.
        tracing::info!(run = name, ?phase, "run already finished");
        return outcome::exit_code_of(phase);
    }
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let tracker = Tracker::new(RunState {
        phase: Some(RunPhase::Running),
        stage: Some(Stage::Listing),
        start_time: Some(previous.start_time.clone().unwrap_or(now)),
        ..Default::default()
    });
    let span = tracing::info_span!("sync", run = %format!("{namespace}/{name}"), app = %run.spec.app_ref.name, direction = ?run.spec.direction, mode = ?run.spec.mode);
    execute_run(client, runs, run, previous, tracker, stop)
        .instrument(span)
        .await
}

/// A run cancelled by the controller already says why ("cancelled: synchronization was
/// disabled", in its `Cancelled` condition, which our progress writes do not own); the
/// final status keeps that reason in front of the counts.
async fn keep_cancel_reason(runs: &Api<SyncRun>, name: &str, outcome: &mut Outcome) {
    let Ok(current) = runs.get(name).await else {
        return;
    };
    let conditions = current.status.unwrap_or_default().conditions;
    if let Some(reason) = crate::cluster::conditions::find(&conditions, "Cancelled")
        .filter(|c| c.status == "True" && !c.message.is_empty())
        .map(|c| c.message.clone())
        && let Some(counts) = outcome.message.strip_prefix("cancelled; ")
    {
        outcome.message = format!("{reason}; {counts}");
    }
}

async fn execute_run(
    client: Client,
    runs: Api<SyncRun>,
    run: SyncRun,
    previous: crate::api::SyncRunStatus,
    tracker: Tracker,
    stop: Stop,
) -> u8 {
    let name = run.metadata.name.clone().unwrap_or_default();
    let name = name.as_str();
    let namespace = run.metadata.namespace.clone().unwrap_or_default();
    let namespace = namespace.as_str();
    let generation = run.metadata.generation;
    if let Err(e) = progress::write(&runs, name, &tracker, &previous.conditions, generation).await {
        tracing::warn!(error = %e, "writing the Running status failed");
    }

    let (stop_reporter, reporter) = progress::spawn_reporter(
        runs.clone(),
        name.to_string(),
        tracker.clone(),
        previous.conditions.clone(),
        generation,
    );
    let (mut outcome, code) = run_stages(&client, namespace, &run, &tracker, &stop).await;
    let _ = stop_reporter.send(true);
    let _ = reporter.await;
    if outcome.phase == RunPhase::Cancelled {
        keep_cancel_reason(&runs, name, &mut outcome).await;
    }

    tracker.update(|s| {
        s.phase = Some(outcome.phase);
        s.stage = Some(Stage::Done);
        s.completion_time = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        s.message = Some(outcome.message.clone());
        s.conditions = outcome.conditions.clone();
    });
    let fin = tracker.snapshot();
    tracing::info!(
        phase = ?outcome.phase,
        app_accounts = fin.counts.app_accounts,
        domain_users = fin.counts.domain_users,
        already_linked = fin.counts.already_linked,
        linked = fin.counts.linked,
        created = fin.counts.created,
        updated = fin.counts.updated,
        deleted = fin.counts.deleted,
        unmatched = fin.counts.unmatched,
        disputed = fin.counts.disputed,
        failed = fin.counts.failed,
        // Not `message`: that is the event's own key in JSON logs.
        summary = %outcome.message,
        peak_rss_kib = crate::telemetry::peak_rss_kib(),
        "run finished"
    );
    // The final status is the run's result: retry it a few times.
    for attempt in 1..=5u32 {
        match progress::write(&runs, name, &tracker, &previous.conditions, generation).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(attempt, error = %e, "writing the final status failed");
                tokio::time::sleep(Duration::from_millis(500 * attempt as u64)).await;
            }
        }
    }
    code
}
