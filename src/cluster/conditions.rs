//! Condition bookkeeping with kstatus semantics: `Ready` always present, `Reconciling` and
//! `Stalled` present only while True (except on a SyncRun, see [`run_conditions`]),
//! `lastTransitionTime` kept unless the status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::RunPhase;

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// A condition as a reconcile decides it, before timestamps are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCondition {
    pub type_: String,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl DesiredCondition {
    pub fn new(type_: &str, status: bool, reason: &str, message: impl Into<String>) -> Self {
        DesiredCondition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
    pub fn truthy(type_: &str, reason: &str, message: impl Into<String>) -> Self {
        Self::new(type_, true, reason, message)
    }
    pub fn falsy(type_: &str, reason: &str, message: impl Into<String>) -> Self {
        Self::new(type_, false, reason, message)
    }
}

fn status_str(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// Merges the desired conditions into the previous list. Conditions whose status, reason,
/// message and generation are unchanged are returned exactly as before (so an unchanged
/// reconcile produces an identical status and no write). `Reconciling`/`Stalled` that are
/// False are dropped, as kstatus expects.
pub fn merge(
    previous: &[Condition],
    desired: &[DesiredCondition],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let shown: Vec<DesiredCondition> = desired
        .iter()
        .filter(|d| d.status || (d.type_ != RECONCILING && d.type_ != STALLED))
        .cloned()
        .collect();
    merge_explicit(previous, &shown, generation, now)
}

/// Like [`merge`], but every desired condition is written, False ones too.
pub fn merge_explicit(
    previous: &[Condition],
    desired: &[DesiredCondition],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let mut out = Vec::with_capacity(desired.len());
    for d in desired {
        let status = status_str(d.status);
        let prev = previous.iter().find(|c| c.type_ == d.type_);
        let transition = match prev {
            Some(p) if p.status == status => p.last_transition_time.clone(),
            _ => now.clone(),
        };
        let next = Condition {
            type_: d.type_.clone(),
            status: status.into(),
            reason: d.reason.clone(),
            message: d.message.clone(),
            observed_generation: generation,
            last_transition_time: transition,
        };
        out.push(match prev {
            Some(p) if *p == next => p.clone(),
            _ => next,
        });
    }
    out
}

/// kstatus's conditions of a SyncRun in `phase`: `Ready` only once it succeeded,
/// `Reconciling` while it waits or works, `Stalled` once it ended any other way (Failed,
/// LimitExceeded, and Cancelled: a cancelled run is finished and will never apply its
/// changes, so a GitOps wait must neither hang on it nor pass). All three carry `reason`
/// (the stage or the outcome's reason) and `message`.
///
/// All three are always written, False ones too (with [`merge_explicit`]): the controller
/// (Pending, and runs it ends itself) and the Job (Running, the outcome) write them under
/// their own field managers, and a server-side apply cannot remove a condition that the
/// other manager also owns, so a `Reconciling` dropped instead of set to False would stay.
pub fn run_conditions(phase: RunPhase, reason: &str, message: &str) -> Vec<DesiredCondition> {
    let finished = phase.is_finished();
    let succeeded = phase == RunPhase::Succeeded;
    vec![
        DesiredCondition::new(READY, succeeded, reason, message),
        DesiredCondition::new(RECONCILING, !finished, reason, message),
        DesiredCondition::new(STALLED, finished && !succeeded, reason, message),
    ]
}

/// Looks up a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition exists with status True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let first = merge(
            &[],
            &[DesiredCondition::truthy(READY, "Connected", "ok")],
            Some(1),
            &t("2026-01-01T00:00:00Z"),
        );
        let second = merge(
            &first,
            &[DesiredCondition::truthy(READY, "Connected", "ok")],
            Some(1),
            &t("2026-01-02T00:00:00Z"),
        );
        assert_eq!(first, second);
    }

    #[test]
    fn a_flip_moves_the_transition_time_but_a_new_message_does_not() {
        let first = merge(
            &[],
            &[DesiredCondition::truthy(READY, "Connected", "ok")],
            Some(1),
            &t("2026-01-01T00:00:00Z"),
        );
        let msg = merge(
            &first,
            &[DesiredCondition::truthy(READY, "Connected", "still ok")],
            Some(2),
            &t("2026-01-02T00:00:00Z"),
        );
        assert_eq!(msg[0].last_transition_time, t("2026-01-01T00:00:00Z"));
        assert_eq!(msg[0].observed_generation, Some(2));
        let flip = merge(
            &msg,
            &[DesiredCondition::falsy(READY, "Unauthorized", "401")],
            Some(2),
            &t("2026-01-03T00:00:00Z"),
        );
        assert_eq!(flip[0].last_transition_time, t("2026-01-03T00:00:00Z"));
        assert_eq!(flip[0].status, "False");
    }

    #[test]
    fn false_reconciling_and_stalled_are_absent() {
        let out = merge(
            &[],
            &[
                DesiredCondition::truthy(READY, "Ready", ""),
                DesiredCondition::falsy(RECONCILING, "Done", ""),
                DesiredCondition::falsy(STALLED, "Fine", ""),
            ],
            None,
            &t("2026-01-01T00:00:00Z"),
        );
        assert_eq!(out.len(), 1);
        assert!(is_true(&out, READY));
        let stalled = merge(
            &out,
            &[
                DesiredCondition::falsy(READY, "InvalidSchedule", "bad"),
                DesiredCondition::truthy(STALLED, "InvalidSchedule", "bad"),
            ],
            None,
            &t("2026-01-01T00:00:00Z"),
        );
        assert!(is_true(&stalled, STALLED));
    }

    /// (Ready, Reconciling, Stalled) of a run in `phase`.
    fn run_flags(phase: RunPhase) -> (bool, bool, bool) {
        let c = run_conditions(phase, "Why", "what");
        let of = |t: &str| c.iter().find(|d| d.type_ == t).unwrap().status;
        assert!(c.iter().all(|d| d.reason == "Why" && d.message == "what"));
        (of(READY), of(RECONCILING), of(STALLED))
    }

    #[test]
    fn a_run_is_ready_only_once_it_succeeded_and_stalled_once_it_ended_otherwise() {
        assert_eq!(run_flags(RunPhase::Pending), (false, true, false));
        assert_eq!(run_flags(RunPhase::Running), (false, true, false));
        assert_eq!(run_flags(RunPhase::Succeeded), (true, false, false));
        for ended in [
            RunPhase::Failed,
            RunPhase::LimitExceeded,
            RunPhase::Cancelled,
        ] {
            assert_eq!(run_flags(ended), (false, false, true), "{ended:?}");
        }
    }

    #[test]
    fn explicit_merge_keeps_false_reconciling_and_stalled() {
        let c = run_conditions(RunPhase::Succeeded, "Succeeded", "done");
        let now = t("2026-01-01T00:00:00Z");
        assert_eq!(merge(&[], &c, Some(1), &now).len(), 1);
        let all = merge_explicit(&[], &c, Some(1), &now);
        let types: Vec<&str> = all.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [READY, RECONCILING, STALLED]);
        assert_eq!(find(&all, RECONCILING).unwrap().status, "False");
    }
}
