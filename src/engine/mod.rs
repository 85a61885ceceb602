//! `catalogsync sync --run NAMESPACE/NAME`: the program a sync Job runs, executing one
//! SyncRun in either direction — Import (synchronization: app → identity domain) or
//! Provision (identity domain → app). Where things are:
//!
//! - [`run`]: reads the SyncRun, writes its status around the stages, returns the exit code.
//! - [`load`]: the app, identity domain, policy and credentials; each direction's run.
//! - [`pipeline`]: list → plan → check limits → apply, the sequence both directions run.
//! - [`import`], [`provision`]: each direction's steps (listing, planning, the writes).
//! - [`list`]: listing a side page by page, the grant and record groups and their members.
//! - [`records`], [`extract`], [`matching`]: Import's compact records, their values from
//!   SCIM documents, and which user owns each account.
//! - [`mapping`]: attribute mappings, keyed by direction.
//! - [`state`]: the "Grants and records" table: where each account and each granted or
//!   recorded user stands; both plans start from it.
//! - [`plan`]: the pure plans, one per direction.
//! - [`approval`]: the digest of a plan, and the limits of a run approving one.
//! - [`limits`]: the plan's check against `maxCreates`/`maxDeletes`, and the allowances
//!   the apply writes within.
//! - [`writes`]: the outcome of each write and the failure threshold.
//! - [`journal`]: the write-ahead journal of creates and deletes in the run's status, and
//!   how a retried pod settles what a killed one left in flight.
//! - [`progress`]: the run's state and the reporter writing it to the status.
//! - [`outcome`]: the final phase, message, conditions and exit code.
//! - [`error`]: [`RunError`], why a run could not start or broke, with its reason.
//! - [`stop`]: signals, the timeout and the failure threshold stopping a run.

pub mod approval;
pub mod confirm;
pub mod error;
pub mod extract;
pub mod import;
pub mod journal;
pub mod limits;
pub mod list;
pub mod load;
pub mod mapping;
pub mod matching;
pub mod outcome;
pub mod pacing;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod provision;
pub mod records;
pub mod run;
pub mod state;
pub mod stop;
pub mod writes;

use kube::Client;

use crate::cluster::exit_code;

pub use error::RunError;
pub use run::execute;
use stop::Stop;

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
    stop.on_signals();
    execute(client, namespace, name, stop).await
}
