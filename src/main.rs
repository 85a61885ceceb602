//! The `catalogsync` binary: the controller, the sync Job entrypoint and the CRD printer.

use std::path::PathBuf;
use std::process::ExitCode;

use catalogsync::{apidocs, crdgen, exit_code, sync, telemetry};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "catalogsync",
    version,
    about = "SaaS application provisioning and synchronization for an identity domain, the Kubernetes way"
)]
struct Cli {
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match cli.command {
        Command::ApiDocs => {
            print!("{}", apidocs::render());
            ExitCode::SUCCESS
        }
        Command::Sync { run } => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: starting the async runtime: {e}");
                    return ExitCode::from(exit_code::FAILED);
                }
            };
            ExitCode::from(rt.block_on(sync::main(&run)))
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
    }
}
