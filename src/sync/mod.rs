//! `catalogsync sync --run NAMESPACE/NAME`: executes one SyncRun. Loads the run, its app,
//! identity domain and policy, resolves credentials (Job env, else the Secrets through the
//! API, for runs by hand), then runs the stages while a reporter writes progress to the
//! run's status; ends with the final phase and an exit code from [`crate::exit_code`].

pub mod extract;
pub mod import;
pub mod outcome;
pub mod progress;
pub mod stop;

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Api, Client};
use tracing::Instrument;

use crate::api::{
    AppliedLimits, CatalogApp, Direction, IdentityDomain, RunPhase, Stage, SyncPolicy, SyncRun,
};
use crate::credentials::{self, Credentials, Side};
use crate::exit_code;
use crate::plan::ImportPolicy;
use crate::scim::{self, ClientOptions, ScimClient};

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

/// Parses a Go-style duration (`90m`, `1h30m`, `45s`, `500ms`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            _ => return None,
        };
        total += unit;
        rest = &rest[unit_len..];
    }
    Some(total)
}

fn to_scim_auth(c: Credentials) -> scim::Auth {
    match c {
        Credentials::Bearer(t) => scim::Auth::Bearer(t),
        Credentials::Basic { username, password } => scim::Auth::Basic { username, password },
        Credentials::OAuth2ClientCredentials {
            token_url,
            client_id,
            client_secret,
            scopes,
        } => scim::Auth::OAuth2ClientCredentials {
            token_url,
            client_id,
            client_secret,
            scopes,
        },
    }
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
    let mut opts = ClientOptions::new(url, to_scim_auth(resolved.credentials));
    opts.ca_pem = resolved.ca_pem.map(String::into_bytes);
    opts.parallelism = parallelism;
    ScimClient::with_options(opts).map_err(|e| Invalid::config(format!("{side:?} client: {e}")))
}

/// Builds the Import run from the cluster objects.
async fn prepare_import(
    client: &Client,
    namespace: &str,
    run: &SyncRun,
    tracker: &Tracker,
    stop: &Stop,
) -> Result<import::ImportRun, Invalid> {
    let apps: Api<CatalogApp> = Api::namespaced(client.clone(), namespace);
    let app_name = &run.spec.app_ref.name;
    let app = apps
        .get(app_name)
        .await
        .map_err(|e| kube_err(&format!("CatalogApp {app_name}"), e))?;
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
        .map(|s| s.policy_ref.name.clone())
        .ok_or_else(|| {
            Invalid::config(format!(
                "CatalogApp {app_name} has no synchronization.policyRef"
            ))
        })?;
    let policies: Api<SyncPolicy> = Api::namespaced(client.clone(), namespace);
    let policy = policies
        .get(&policy_name)
        .await
        .map_err(|e| kube_err(&format!("SyncPolicy {policy_name}"), e))?;
    let p = policy.spec;
    let rules = extract::Rules::parse(&p.matching).map_err(Invalid::config)?;
    let timeout = parse_duration(&p.timeout)
        .ok_or_else(|| Invalid::config(format!("timeout {:?} is not a duration", p.timeout)))?;
    let parallelism = p.parallelism.clamp(1, 256) as usize;
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
    tracker.update(|s| {
        s.limits = Some(AppliedLimits {
            max_creates: p.limits.as_ref().and_then(|l| l.max_creates),
            max_deletes: p.limits.as_ref().and_then(|l| l.max_deletes),
        })
    });
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            stop.stop(StopReason::Timeout);
        });
    }
    Ok(import::ImportRun {
        domain: domain_client,
        app: app_client,
        rules,
        policy: ImportPolicy {
            on_exact_match: p.on_exact_match,
            on_no_match: p.on_no_match,
            on_account_deleted: p.on_account_deleted,
        },
        limits: p.limits.clone(),
        parallelism,
        mode: run.spec.mode,
        grant_group: app.grant_group_name(),
        max_failure_percent: p.max_failure_percent.clamp(0, 100) as u32,
        timeout: p.timeout.clone(),
        tracker: tracker.clone(),
        stop: stop.clone(),
    })
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
    let (outcome, code) = match run.spec.direction {
        Direction::Provision => {
            let o = Outcome::failed(
                "Provision runs are not implemented by this version of the sync Job",
            );
            (o, exit_code::INVALID)
        }
        Direction::Import => {
            match prepare_import(&client, namespace, &run, &tracker, &stop).await {
                Err(inv) => (Outcome::failed(inv.message), inv.code),
                Ok(ir) => match import::run(&ir).await {
                    Ok(observed) => {
                        let counts = tracker.snapshot().counts;
                        let o = outcome::decide(run.spec.mode, &counts, &observed);
                        let code = o.exit_code();
                        (o, code)
                    }
                    Err(import::ImportError::Stopped) => {
                        let counts = tracker.snapshot().counts;
                        let observed = outcome::Observed {
                            stopped: stop.reason(),
                            timeout: ir.timeout.clone(),
                            max_failure_percent: ir.max_failure_percent,
                            ..Default::default()
                        };
                        let o = outcome::decide(run.spec.mode, &counts, &observed);
                        let code = o.exit_code();
                        (o, code)
                    }
                    Err(e) => (Outcome::failed(e.to_string()), exit_code::FAILED),
                },
            }
        }
    };
    let _ = stop_reporter.send(true);
    let _ = reporter.await;

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
        deleted = fin.counts.deleted,
        unmatched = fin.counts.unmatched,
        disputed = fin.counts.disputed,
        failed = fin.counts.failed,
        message = %outcome.message,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("1d"), None);
        assert_eq!(parse_duration("h"), None);
    }
}
