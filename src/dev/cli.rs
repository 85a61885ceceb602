//! The development subcommands: `catalogsync dev up` and `catalogsync dev-job-runner`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::runner;

#[derive(Subcommand, Debug)]
pub enum DevCommand {
    /// Start a local control plane, seeded SCIM servers (identity domain `iam`, apps
    /// `slack` and `jira`), the controller and the dev job runner; run until Ctrl-C.
    Up(UpArgs),
}

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Kubeconfig, `env` file and logs go here (emptied first).
    #[arg(long, default_value = ".demo")]
    state_dir: PathBuf,
    /// The repository root (for hack/envtest.sh and hack/scim/serve.py).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Python of the SCIM servers' virtualenv (default: what hack/scim/setup.sh prints).
    #[arg(long)]
    scim_python: Option<PathBuf>,
    /// The local node's admin kubeconfig (`hack/node.sh up`, `deploy/` installed there):
    /// start only the seeded SCIM servers, on the node's bridge address.
    #[arg(long)]
    node: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct JobRunnerArgs {
    /// The binary standing for the image's `catalogsync` (default: this executable).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Passed to the processes as KUBECONFIG (default: this process's KUBECONFIG).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Only run Jobs of this namespace.
    #[arg(long)]
    namespace: Option<String>,
}

pub async fn run_job_runner(args: JobRunnerArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await?;
    let binary = match args.binary {
        Some(b) => b,
        None => std::env::current_exe()?,
    };
    let config = runner::RunnerConfig {
        binary,
        kubeconfig: args.kubeconfig,
        namespace: args.namespace,
        grace: Duration::from_secs(30),
    };
    runner::run(client, config, crate::cli::shutdown_channel()).await
}

pub async fn run_up(args: UpArgs) -> anyhow::Result<()> {
    let repo = args.repo.canonicalize()?;
    let python = match args.scim_python {
        Some(p) => p,
        None => {
            let out = std::process::Command::new("bash")
                .arg(repo.join("hack/scim/setup.sh"))
                .stderr(std::process::Stdio::inherit())
                .output()?;
            anyhow::ensure!(out.status.success(), "hack/scim/setup.sh failed");
            let stdout = String::from_utf8_lossy(&out.stdout);
            PathBuf::from(stdout.lines().last().unwrap_or_default().trim())
        }
    };
    let config = super::up::UpConfig {
        state_dir: args.state_dir,
        repo,
        python,
        binary: std::env::current_exe()?,
        node: args.node,
    };
    super::up::run(config, crate::cli::shutdown_channel()).await
}
