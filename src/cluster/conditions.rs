//! Condition bookkeeping with kstatus semantics: `Ready` always present, `Reconciling` and
//! `Stalled` present only while True, `lastTransitionTime` kept unless the status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

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
    let mut out = Vec::with_capacity(desired.len());
    for d in desired {
        if !d.status && (d.type_ == RECONCILING || d.type_ == STALLED) {
            continue;
        }
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
}
