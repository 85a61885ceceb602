//! Why a run ended before (or instead of) applying its plan: one typed error for loading
//! and both directions, with the condition reason, phase and exit code it ends the run with.
//! A run stopped by a signal, its timeout or too many failures is no error: that outcome
//! is decided from the counts in [`super::outcome::decide`].

use crate::api::RunPhase;
use crate::cluster::exit_code;
use crate::cluster::groups::GroupError;
use crate::scim::ScimError;

/// The condition reason of a run that broke or could not start.
pub const ERROR: &str = "Error";
/// The condition reason of a run that must not change anything any more.
pub const CANCELLED: &str = "Cancelled";
/// The condition reason of an approving run whose plan is no longer the approved one.
pub const PLAN_CHANGED: &str = "PlanChanged";
/// The condition reason of a retried attempt that refused to apply again.
pub const INTERRUPTED: &str = "Interrupted";
/// The condition reason of a run whose grant or record group is not the app's.
pub const GROUP_NOT_OWNED: &str = "GroupNotOwned";

/// A run that could not start, or broke before its plan was applied.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is wrong or incomplete: running again will not help.
    #[error("{0}")]
    Invalid(String),
    /// Reading the cluster failed: running again may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// Not a failure: the run must not change anything (its app suspended, its direction
    /// turned off).
    #[error("{0}")]
    Cancelled(String),
    /// A previous attempt of this run (a pod the Job retried) reached the apply stage:
    /// applying again would use the limits twice.
    #[error(
        "the previous attempt was interrupted while applying (its pod ended); this attempt applied nothing, so no limit is used twice. The counts are the previous attempt's, with the writes it had in flight looked up on the servers (any still unknown are listed in status.inFlight); the next run continues from what the servers hold"
    )]
    Interrupted,
    /// The app's grant or record group is missing, ambiguous or not the app's.
    #[error("{0}")]
    Group(#[from] GroupError),
    #[error("identity domain: {0}")]
    Domain(#[source] ScimError),
    #[error("app: {0}")]
    App(#[source] ScimError),
    /// The plan computed now is not the approved one: nothing was written. Approving the
    /// new plan (its digest is in `status.planDigest`) means reviewing it again.
    #[error(
        "the plan changed since it was approved, nothing applied: approved {approved}, the plan is now {planned}"
    )]
    PlanChanged { approved: String, planned: String },
}

impl RunError {
    /// Reading `what` from the cluster failed: missing is a configuration error, anything
    /// else may pass.
    pub fn reading(what: &str, e: kube::Error) -> Self {
        match &e {
            kube::Error::Api(s) if s.code == 404 => RunError::Invalid(format!("{what} not found")),
            _ => RunError::Unavailable(format!("reading {what}: {e}")),
        }
    }

    /// The reason of the run's conditions. Stable: alerts and dashboards key on it.
    pub fn reason(&self) -> &'static str {
        match self {
            RunError::Cancelled(_) => CANCELLED,
            RunError::PlanChanged { .. } => PLAN_CHANGED,
            RunError::Interrupted => INTERRUPTED,
            RunError::Group(GroupError::NotOwned { .. } | GroupError::OwnedByOther { .. }) => {
                GROUP_NOT_OWNED
            }
            _ => ERROR,
        }
    }

    /// The phase the run ends in.
    pub fn phase(&self) -> RunPhase {
        match self {
            RunError::Cancelled(_) => RunPhase::Cancelled,
            _ => RunPhase::Failed,
        }
    }

    /// The exit code of the Job: the controller and the Job's pod failure policy read it.
    pub fn exit_code(&self) -> u8 {
        match self {
            // A changed plan stays changed: the Job must not retry it.
            RunError::Invalid(_)
            | RunError::PlanChanged { .. }
            | RunError::Interrupted
            | RunError::Group(GroupError::NotOwned { .. } | GroupError::OwnedByOther { .. }) => {
                exit_code::INVALID
            }
            RunError::Cancelled(_) => exit_code::CANCELLED,
            _ => exit_code::FAILED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_phases_and_exit_codes() {
        let cases = [
            (RunError::Invalid("x".into()), ERROR, exit_code::INVALID),
            (RunError::Unavailable("x".into()), ERROR, exit_code::FAILED),
            (
                RunError::Cancelled("x".into()),
                CANCELLED,
                exit_code::CANCELLED,
            ),
            (
                RunError::Group(GroupError::Missing {
                    role: "grant",
                    name: "g".into(),
                }),
                ERROR,
                exit_code::FAILED,
            ),
            (
                RunError::Group(GroupError::NotOwned {
                    role: "grant",
                    name: "admins".into(),
                    mark: "catalogsync:a/b/grant".into(),
                }),
                GROUP_NOT_OWNED,
                exit_code::INVALID,
            ),
            (RunError::Interrupted, INTERRUPTED, exit_code::INVALID),
            (
                RunError::PlanChanged {
                    approved: "sha256:a".into(),
                    planned: "sha256:b".into(),
                },
                PLAN_CHANGED,
                exit_code::INVALID,
            ),
        ];
        for (e, reason, code) in cases {
            assert_eq!((e.reason(), e.exit_code()), (reason, code), "{e:?}");
        }
        assert_eq!(RunError::Cancelled("x".into()).phase(), RunPhase::Cancelled);
        assert_eq!(RunError::Invalid("x".into()).phase(), RunPhase::Failed);
    }
}
