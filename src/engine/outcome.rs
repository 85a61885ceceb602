//! The final phase, message, conditions and exit code of a run, decided from what happened.
//! Pure.

use crate::api::{Counts, Mode, RunPhase};
use crate::cluster::conditions::{self, DesiredCondition};
use crate::cluster::exit_code;
use crate::engine::limits::LimitCheck;

use super::error::{CANCELLED, INTERRUPTED, RunError};
use super::stop::StopReason;

pub const COMPLETE: &str = "Complete";
pub const FAILED: &str = "Failed";
pub const LIMIT_EXCEEDED: &str = "LimitExceeded";
/// True while the run found something it could not act on and that a clean run has not:
/// grant-group members that are no listed user.
pub const WARNING: &str = "Warning";

/// What the apply observed, besides the counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// The plan-versus-limits check.
    pub limit: Option<LimitCheck>,
    /// An allowance ran out during the apply: a create or delete was refused.
    pub limit_reached: bool,
    pub stopped: Option<StopReason>,
    pub timeout: String,
    pub max_failure_percent: u32,
}

impl Observed {
    pub fn new(timeout: &str, max_failure_percent: u32) -> Self {
        Observed {
            timeout: timeout.to_string(),
            max_failure_percent,
            ..Default::default()
        }
    }

    /// Records the limit check; true when the run goes on to apply (not a Plan, not Abort).
    pub fn proceed(&mut self, mode: Mode, check: LimitCheck) -> bool {
        let apply = mode == Mode::Apply && !matches!(check, LimitCheck::Abort { .. });
        self.limit = Some(check);
        apply
    }
}

/// The end of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub phase: RunPhase,
    /// The reason of its conditions.
    pub reason: String,
    pub message: String,
    pub conditions: Vec<DesiredCondition>,
}

impl Outcome {
    pub fn exit_code(&self) -> u8 {
        // Interrupted is final: the Job's podFailurePolicy fails it on INVALID, so no
        // retried pod applies again.
        if self.reason == INTERRUPTED {
            return exit_code::INVALID;
        }
        exit_code_of(self.phase)
    }

    /// A run that could not start or broke: the error's phase and reason, the error as
    /// message.
    pub fn of_error(e: &RunError) -> Self {
        Self::ended(e.phase(), e.reason(), e.to_string())
    }

    /// A run the controller cancelled (`why`, e.g. "cancelled: the app is suspended") and
    /// whose pod then stopped: `Cancelled`, with what it did before.
    pub fn cancelled(why: &str, counts: &Counts) -> Self {
        Self::ended(
            RunPhase::Cancelled,
            CANCELLED,
            format!("{why}; {}", summary(counts)),
        )
    }

    fn ended(phase: RunPhase, reason: &str, message: String) -> Self {
        Outcome {
            phase,
            reason: reason.to_string(),
            conditions: conditions_for(phase, reason, &message, None),
            message,
        }
    }
}

/// The exit code of a finished phase.
pub fn exit_code_of(phase: RunPhase) -> u8 {
    match phase {
        RunPhase::Succeeded => exit_code::SUCCESS,
        RunPhase::LimitExceeded => exit_code::LIMIT_EXCEEDED,
        RunPhase::Cancelled => exit_code::CANCELLED,
        _ => exit_code::FAILED,
    }
}

fn conditions_for(
    phase: RunPhase,
    reason: &str,
    message: &str,
    limit: Option<&str>,
) -> Vec<DesiredCondition> {
    let mut c = vec![
        DesiredCondition::new(COMPLETE, phase == RunPhase::Succeeded, reason, message),
        DesiredCondition::new(FAILED, phase == RunPhase::Failed, reason, message),
    ];
    c.push(match limit {
        Some(m) => DesiredCondition::truthy(LIMIT_EXCEEDED, "LimitExceeded", m),
        None => DesiredCondition::falsy(
            LIMIT_EXCEEDED,
            "WithinLimits",
            "the plan is within the limits",
        ),
    });
    c.extend(conditions::run_conditions(phase, reason, message));
    c
}

fn summary(c: &Counts) -> String {
    let mut s = format!(
        "{} accounts: {} already linked, {} linked, {} created, {} updated, {} deleted, {} unmatched, {} disputed, {} failed",
        c.app_accounts,
        c.already_linked,
        c.linked,
        c.created,
        c.updated,
        c.deleted,
        c.unmatched,
        c.disputed,
        c.failed + c.failed_records
    );
    let extra = [
        (c.ignored, "ignored"),
        (c.inactive, "inactive"),
        (c.revoked, "revoked"),
        (c.skipped, "skipped"),
        (c.pending_provisioning, "pending provisioning"),
        (c.not_allowed, "not allowed by the operations"),
        (c.unresolved_members, "unresolved grant-group members"),
    ];
    for (n, what) in extra.into_iter().filter(|(n, _)| *n > 0) {
        s += &format!(", {n} {what}");
    }
    s
}

/// Decides the outcome of a run that got as far as a plan.
pub fn decide(mode: Mode, counts: &Counts, o: &Observed) -> Outcome {
    let limit_msg = o
        .limit
        .as_ref()
        .and_then(|l| l.message())
        .map(str::to_string);
    let (phase, reason, message) = match (mode, o.stopped) {
        // Not a cancel (the controller marks those, see `Outcome::cancelled`): a pod deleted
        // by a person, evicted or drained. What it wrote is counted; it stops for good.
        (_, Some(StopReason::Signal)) => (
            RunPhase::Failed,
            INTERRUPTED,
            format!(
                "interrupted: the sync pod was stopped (deleted, evicted or its node drained), \
                 not cancelled; its in-flight writes finished and are counted, nothing more is \
                 applied and the Job does not retry it; the next run continues; {}",
                summary(counts)
            ),
        ),
        (_, Some(StopReason::Timeout)) => (
            RunPhase::Failed,
            "Timeout",
            format!("timed out after {}; {}", o.timeout, summary(counts)),
        ),
        (_, Some(StopReason::TooManyFailures)) => (
            RunPhase::Failed,
            "TooManyFailures",
            format!(
                "stopped: more than {}% of changes failed; {}",
                o.max_failure_percent,
                summary(counts)
            ),
        ),
        (_, Some(StopReason::Unrecorded)) => (
            RunPhase::Failed,
            "Unrecorded",
            format!(
                "stopped: the next writes could not be recorded in the run's status (the Kubernetes API did not answer), so none was made; {}",
                summary(counts)
            ),
        ),
        (Mode::Plan, None) => (
            RunPhase::Succeeded,
            "Planned",
            match &limit_msg {
                Some(m) => format!("plan (nothing applied) would exceed a limit: {m}"),
                None => "plan computed, nothing applied".to_string(),
            },
        ),
        (Mode::Apply, None) => match &o.limit {
            Some(LimitCheck::Abort { message }) => (
                RunPhase::LimitExceeded,
                "LimitExceeded",
                format!("nothing applied: {message}"),
            ),
            Some(LimitCheck::UpToLimit { message }) => (
                RunPhase::LimitExceeded,
                "LimitExceeded",
                format!("applied up to the limit: {message}; {}", summary(counts)),
            ),
            _ if o.limit_reached => (
                RunPhase::LimitExceeded,
                "LimitExceeded",
                format!("stopped at the limit; {}", summary(counts)),
            ),
            _ => (RunPhase::Succeeded, "Succeeded", summary(counts)),
        },
    };
    let warning = warning(counts);
    let (reason, message) = match (&warning, phase) {
        (Some(w), RunPhase::Succeeded) if reason == "Succeeded" => {
            ("SucceededWithWarnings", format!("{message}; warning: {w}"))
        }
        _ => (reason, message),
    };
    let mut conditions = conditions_for(phase, reason, &message, limit_msg.as_deref());
    conditions.push(match warning {
        Some(w) => DesiredCondition::truthy(WARNING, "UnresolvedMembers", w),
        None => DesiredCondition::falsy(WARNING, "NoWarnings", "every member was accounted for"),
    });
    Outcome {
        phase,
        reason: reason.to_string(),
        conditions,
        message,
    }
}

/// What a run must not look clean with.
fn warning(c: &Counts) -> Option<String> {
    (c.unresolved_members > 0).then(|| {
        format!(
            "{} grant-group members are no listed user (referenced by something else than \
             their id, a nested group, or a deleted user): nothing was done for them",
            c.unresolved_members
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::conditions::{READY, STALLED};

    fn observed(limit: Option<LimitCheck>) -> Observed {
        Observed {
            limit,
            timeout: "1h".into(),
            max_failure_percent: 40,
            ..Default::default()
        }
    }

    #[test]
    fn abort_is_limit_exceeded_with_planned_and_allowed() {
        let o = decide(
            Mode::Apply,
            &Counts::default(),
            &observed(Some(LimitCheck::Abort {
                message: "planned 120 creates, allowed 100".into(),
            })),
        );
        assert_eq!(o.phase, RunPhase::LimitExceeded);
        assert_eq!(o.exit_code(), exit_code::LIMIT_EXCEEDED);
        assert_eq!(
            o.message,
            "nothing applied: planned 120 creates, allowed 100"
        );
        let le = o
            .conditions
            .iter()
            .find(|c| c.type_ == LIMIT_EXCEEDED)
            .unwrap();
        assert!(le.status);
        assert_eq!(le.message, "planned 120 creates, allowed 100");
        let stalled = o.conditions.iter().find(|c| c.type_ == STALLED).unwrap();
        assert!(stalled.status);
        assert_eq!(
            (stalled.reason.as_str(), stalled.message.as_str()),
            ("LimitExceeded", o.message.as_str())
        );
    }

    #[test]
    fn plan_mode_succeeds_and_reports_a_limit_it_would_exceed() {
        let o = decide(
            Mode::Plan,
            &Counts::default(),
            &observed(Some(LimitCheck::Abort {
                message: "planned 2 deletes, allowed 1".into(),
            })),
        );
        assert_eq!(o.phase, RunPhase::Succeeded);
        assert!(o.message.contains("would exceed"));
        assert!(
            o.conditions
                .iter()
                .any(|c| c.type_ == LIMIT_EXCEEDED && c.status)
        );
    }

    #[test]
    fn a_signal_interrupts_for_good_and_timeout_fails() {
        let mut ob = observed(None);
        ob.stopped = Some(StopReason::Signal);
        let counts = Counts {
            linked: 7,
            ..Default::default()
        };
        let o = decide(Mode::Apply, &counts, &ob);
        // Failed, Interrupted, and an exit code the podFailurePolicy fails the Job on.
        assert_eq!(
            (o.phase, o.reason.as_str(), o.exit_code()),
            (RunPhase::Failed, INTERRUPTED, exit_code::INVALID)
        );
        assert!(o.message.starts_with("interrupted: "), "{}", o.message);
        assert!(o.message.contains("7 linked"), "{}", o.message);
        let failed = o.conditions.iter().find(|c| c.type_ == FAILED).unwrap();
        assert!(failed.status);
        assert_eq!(failed.reason, INTERRUPTED);
        // The controller's cancel keeps its own words in front of the counts.
        let c = Outcome::cancelled("cancelled: the app is suspended", &counts);
        assert_eq!(
            (c.phase, c.reason.as_str(), c.exit_code()),
            (RunPhase::Cancelled, CANCELLED, exit_code::CANCELLED)
        );
        assert!(
            c.message
                .starts_with("cancelled: the app is suspended; 0 accounts:"),
            "{}",
            c.message
        );
        assert!(!c.conditions.iter().any(|c| c.type_ == FAILED && c.status));
        ob.stopped = Some(StopReason::Timeout);
        let o = decide(Mode::Apply, &Counts::default(), &ob);
        assert_eq!(o.phase, RunPhase::Failed);
        assert!(o.message.starts_with("timed out after 1h"));
    }

    #[test]
    fn unresolved_members_never_look_clean() {
        let counts = Counts {
            unresolved_members: 12,
            ..Default::default()
        };
        let o = decide(Mode::Apply, &counts, &observed(Some(LimitCheck::Within)));
        assert_eq!(o.phase, RunPhase::Succeeded);
        assert!(
            o.message.contains("12 unresolved grant-group members"),
            "{}",
            o.message
        );
        assert!(
            o.message.contains("warning: 12 grant-group members"),
            "{}",
            o.message
        );
        let w = o.conditions.iter().find(|c| c.type_ == WARNING).unwrap();
        assert!(w.status);
        assert_eq!(w.reason, "UnresolvedMembers");
        let ready = o.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(ready.reason, "SucceededWithWarnings");
        let clean = decide(
            Mode::Apply,
            &Counts::default(),
            &observed(Some(LimitCheck::Within)),
        );
        let w = clean
            .conditions
            .iter()
            .find(|c| c.type_ == WARNING)
            .unwrap();
        assert!(!w.status);
        assert!(!clean.message.contains("warning"));
    }

    #[test]
    fn clean_apply_succeeds_and_reaching_a_limit_is_limit_exceeded() {
        let o = decide(
            Mode::Apply,
            &Counts::default(),
            &observed(Some(LimitCheck::Within)),
        );
        assert_eq!(o.phase, RunPhase::Succeeded);
        assert!(o.conditions.iter().any(|c| c.type_ == COMPLETE && c.status));
        assert!(o.conditions.iter().any(|c| c.type_ == READY && c.status));
        let mut ob = observed(None);
        ob.limit_reached = true;
        assert_eq!(
            decide(Mode::Apply, &Counts::default(), &ob).phase,
            RunPhase::LimitExceeded
        );
    }
}
