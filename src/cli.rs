//! The command line: the controller, the sync Job entrypoint, the development Job runner
//! and `dev up`, the CRD and API reference printers. The binary's `main` only calls [`main`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::api::{JobSettings, apidocs, crdgen};
use crate::cluster::exit_code;
use crate::controller::http;
use crate::controller::leader::LeaseConfig;
use crate::controller::metrics::Metrics;
use crate::controller::sync_run::job::JobConfig;
use crate::controller::{self, Config};
use crate::{engine, telemetry};
use clap::{Args, Parser, Subcommand};
use k8s_openapi::api::core::v1::Pod;

#[derive(Parser, Debug)]
#[command(
    name = "catalogsync",
    version,
    about = "SaaS application provisioning and synchronization for an identity domain, the Kubernetes way"
)]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "CATALOGSYNC_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    log_format: telemetry::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the API reference (Markdown) generated from the CRD schemas.
    ApiDocs,
    /// Print every CRD as YAML (or write one file per CRD into a directory).
    Crds {
        /// Write `<crd name>.yaml` files into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Execute one SyncRun (the sync Job's entrypoint; also runs by hand with a kubeconfig).
    Sync {
        /// The SyncRun, as NAMESPACE/NAME.
        #[arg(long)]
        run: String,
    },
    /// Run the controller (reconciles every catalogsync kind, runs SyncRuns as Jobs).
    // Boxed: the largest variant by far, parsed once.
    Controller(Box<ControllerArgs>),
    /// DEVELOPMENT TOOLING, not for production: run the catalogsync Jobs of a local
    /// control plane (which has no kubelet) as processes on this machine.
    #[cfg(feature = "dev")]
    DevJobRunner(crate::dev::cli::JobRunnerArgs),
    /// DEVELOPMENT TOOLING, not for production: the product on this machine.
    #[cfg(feature = "dev")]
    #[command(subcommand)]
    Dev(crate::dev::cli::DevCommand),
}

#[derive(Args, Debug)]
struct ControllerArgs {
    /// Elect a leader among replicas through a Lease; only the leader acts.
    #[arg(long, env = "CATALOGSYNC_LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "catalogsync-system")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "catalogsync-controller")]
    lease_name: String,
    /// This replica's identity in the Lease (default: the pod name, else host name and pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Image of the sync Jobs (it must contain the `catalogsync` binary). Default: the
    /// controller's own image, read from its pod (POD_NAME, POD_NAMESPACE), so that an
    /// install retagged by kustomize or Helm runs its Jobs on the same build; outside a
    /// pod, `catalogsync:<version>`.
    #[arg(long, env = "CATALOGSYNC_JOB_IMAGE")]
    job_image: Option<String>,
    /// ServiceAccount of the sync Jobs' pods.
    #[arg(
        long,
        env = "CATALOGSYNC_JOB_SERVICE_ACCOUNT",
        default_value = "catalogsync-sync-job"
    )]
    job_service_account: String,
    /// YAML file with pod settings for every sync Job, shaped like a SyncPolicy's
    /// `spec.job` (resources, nodeSelector, tolerations, affinity, priorityClassName,
    /// imagePullSecrets, env); a policy's own settings win field by field.
    #[arg(long, env = "CATALOGSYNC_JOB_DEFAULTS")]
    job_defaults: Option<PathBuf>,
    /// How long a finished sync Job and its pod (with its logs) stay before Kubernetes
    /// removes them (the Job's `ttlSecondsAfterFinished`), e.g. `24h`, `90m`, `30s`; the
    /// SyncRun keeps the outcome.
    #[arg(long, env = "CATALOGSYNC_JOB_TTL", default_value = "24h", value_parser = job_ttl)]
    job_ttl: Duration,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "CATALOGSYNC_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Seconds between connectivity rechecks when nothing changes.
    #[arg(long, default_value_t = 300)]
    recheck_seconds: u64,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "CATALOGSYNC_WATCH_NAMESPACE")]
    namespace: Option<String>,
}

/// A watch channel that turns true on SIGTERM or Ctrl-C.
pub(crate) fn shutdown_channel() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        controller::shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = tx.send(true);
    });
    rx
}

/// `--job-ttl`: a duration like a policy's `timeout` (`24h`, `1h30m`, `30s`; `0s` removes
/// a Job as soon as it finishes).
fn job_ttl(s: &str) -> Result<Duration, String> {
    crate::api::parse_duration(s)
        .ok_or_else(|| format!("{s:?} is no duration like 24h, 90m or 30s"))
}

/// The `--job-defaults` file's settings (none without a file); refused like a
/// policy's `spec.job` would be at admission. Public so that the Helm chart's tests
/// check its rendered file with the controller's own loader.
pub fn job_defaults(path: Option<&std::path::Path>) -> anyhow::Result<JobSettings> {
    use anyhow::Context as _;
    let Some(path) = path else {
        return Ok(JobSettings::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --job-defaults {}", path.display()))?;
    let settings: Option<JobSettings> = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("parsing --job-defaults {}", path.display()))?;
    let settings = settings.unwrap_or_default();
    if let Some(why) = settings.refusal() {
        anyhow::bail!("--job-defaults {}: {why}", path.display());
    }
    Ok(settings)
}

async fn run_controller(args: ControllerArgs) -> anyhow::Result<()> {
    // A bad defaults file stops the controller at once rather than every run later.
    let defaults = job_defaults(args.job_defaults.as_deref())?;
    let client = kube::Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let shutdown = shutdown_channel();
    let mut http_stop = shutdown.clone();
    let server = tokio::spawn(http::serve(
        args.metrics_addr,
        metrics.clone(),
        ready.clone(),
        async move {
            let _ = http_stop.wait_for(|s| *s).await;
        },
    ));
    let identity = args.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let lease = args.leader_elect.then(|| LeaseConfig {
        name: args.lease_name.clone(),
        ..LeaseConfig::new(&args.lease_namespace, &identity)
    });
    let image = match args.job_image {
        Some(image) => image,
        None => own_image(&client).await,
    };
    tracing::info!(image, "sync Jobs run this image");
    let config = Config {
        job: JobConfig {
            image,
            service_account: args.job_service_account,
            defaults,
            ttl_after_finished: args.job_ttl,
        },
        recheck: Duration::from_secs(args.recheck_seconds.max(1)),
        namespace: args.namespace,
    };
    let result = controller::run(client, metrics, config, lease, shutdown, Some(ready)).await;
    server.abort();
    result
}

/// The image of the container running this controller, else `catalogsync:<version>`.
async fn own_image(client: &kube::Client) -> String {
    let fallback = concat!("catalogsync:", env!("CARGO_PKG_VERSION")).to_string();
    let (Ok(name), Ok(ns)) = (std::env::var("POD_NAME"), std::env::var("POD_NAMESPACE")) else {
        return fallback;
    };
    match controller_image(client, &ns, &name).await {
        Ok(image) => image.unwrap_or(fallback),
        Err(e) => {
            tracing::warn!(error = %e, pod = %name, "cannot read the controller's own image; set --job-image");
            fallback
        }
    }
}

/// The controller's image, from its pod `ns/name`. Read through `list` with a field
/// selector, the verb the controller holds anyway (to tell why a Job's pod does not
/// start); the namespaced install grants it in the controller's namespace only. Public
/// so that the RBAC tests read it with the controller's own ServiceAccount token.
pub async fn controller_image(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> kube::Result<Option<String>> {
    let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), ns);
    let params = kube::api::ListParams::default().fields(&format!("metadata.name={name}"));
    let list = pods.list(&params).await?;
    Ok(list
        .items
        .first()
        .and_then(|pod| container_image(pod, CONTROLLER_CONTAINER)))
}

/// Name of the controller's container in `deploy/` and the chart.
const CONTROLLER_CONTAINER: &str = "controller";

/// The image of the container `name` of `pod`, else of its first container (a pod
/// renamed by hand); sidecars injected later come after it.
fn container_image(pod: &Pod, name: &str) -> Option<String> {
    let containers = &pod.spec.as_ref()?.containers;
    containers
        .iter()
        .find(|c| c.name == name)
        .or_else(|| containers.first())?
        .image
        .clone()
}

fn block_on(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "exiting");
            ExitCode::FAILURE
        }
    }
}

/// Parses the process's arguments and runs the command.
pub fn main() -> ExitCode {
    run(Cli::parse())
}

/// Runs the command of `args` (the first is the program name).
pub fn main_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    run(Cli::parse_from(args))
}

fn run(cli: Cli) -> ExitCode {
    match cli.command {
        // dev up talks to people on its stdout; the apiserver's start-up errors are noise.
        #[cfg(feature = "dev")]
        Command::Dev(_) => telemetry::init_with_default(cli.log_format, "warn,kube_client=off"),
        _ => telemetry::init(cli.log_format),
    }
    match cli.command {
        Command::Sync { run } => {
            // One thread: a run waits on its SCIM peers, and handing each answer to another
            // worker cost more CPU (wake-ups, futexes) than the parsing it spread out.
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: starting the async runtime: {e}");
                    return ExitCode::from(exit_code::FAILED);
                }
            };
            ExitCode::from(rt.block_on(engine::main(&run)))
        }
        Command::ApiDocs => {
            print!("{}", apidocs::render());
            ExitCode::SUCCESS
        }
        Command::Crds { out_dir } => match out_dir {
            None => {
                print!("{}", crdgen::to_yaml());
                ExitCode::SUCCESS
            }
            Some(dir) => match crdgen::write_dir(&dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: writing CRDs to {}: {e}", dir.display());
                    ExitCode::FAILURE
                }
            },
        },
        Command::Controller(args) => block_on(run_controller(*args)),
        #[cfg(feature = "dev")]
        Command::DevJobRunner(args) => block_on(crate::dev::cli::run_job_runner(args)),
        #[cfg(feature = "dev")]
        Command::Dev(crate::dev::cli::DevCommand::Up(args)) => {
            block_on(crate::dev::cli::run_up(args))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults_from(yaml: &str) -> anyhow::Result<JobSettings> {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), yaml).unwrap();
        job_defaults(Some(file.path()))
    }

    #[test]
    fn job_defaults_file_has_the_shape_of_spec_job() {
        let settings = defaults_from(
            "nodeSelector: {pool: batch}\nenv:\n- {name: HTTPS_PROXY, value: http://proxy:3128}\n",
        )
        .unwrap();
        assert_eq!(settings.node_selector.unwrap()["pool"], "batch");
        assert_eq!(settings.env.unwrap()[0].name, "HTTPS_PROXY");
        assert_eq!(defaults_from("").unwrap(), JobSettings::default());
        assert_eq!(job_defaults(None).unwrap(), JobSettings::default());
    }

    #[test]
    fn the_jobs_image_is_the_controller_containers() {
        let pod: Pod = serde_json::from_value(serde_json::json!({"spec": {"containers": [
            {"name": "istio-proxy", "image": "proxy:1"},
            {"name": "controller", "image": "registry.example/catalogsync:1.2.3"}]}}))
        .unwrap();
        assert_eq!(
            container_image(&pod, CONTROLLER_CONTAINER).as_deref(),
            Some("registry.example/catalogsync:1.2.3")
        );
        // Renamed by hand: the first container.
        assert_eq!(container_image(&pod, "other").as_deref(), Some("proxy:1"));
    }

    #[test]
    fn job_ttl_defaults_to_a_day_and_takes_durations() {
        let ttl = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["catalogsync", "controller"], args].concat());
            match cli.map_err(|e| e.kind())?.command {
                Command::Controller(c) => Ok(c.job_ttl),
                _ => unreachable!("the controller command"),
            }
        };
        if std::env::var_os("CATALOGSYNC_JOB_TTL").is_none() {
            assert_eq!(ttl(&[]), Ok(Duration::from_secs(24 * 3600)));
        }
        assert_eq!(ttl(&["--job-ttl", "5s"]), Ok(Duration::from_secs(5)));
        assert_eq!(ttl(&["--job-ttl", "1h30m"]), Ok(Duration::from_secs(5400)));
        assert_eq!(
            ttl(&["--job-ttl", "a day"]),
            Err(clap::error::ErrorKind::ValueValidation)
        );
    }

    #[test]
    fn job_defaults_file_is_refused_like_a_policy() {
        let err = defaults_from("env:\n- {name: CATALOGSYNC_APP_TOKEN, value: x}\n").unwrap_err();
        assert!(format!("{err:#}").contains("CATALOGSYNC_"), "{err:#}");
        let err = defaults_from("nodeSelector: [a]\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("parsing --job-defaults"),
            "{err:#}"
        );
    }
}
