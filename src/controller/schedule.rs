//! Cron schedules: parsing, the next time, and whether a run is due now.
//!
//! Pure: every function takes `now` as an argument. Like a CronJob with
//! `startingDeadlineSeconds`, a slot is only run while it is recent; after
//! downtime the controller runs at most the latest missed slot, never a burst.

use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// How late a scheduled slot may still start. Later slots are skipped.
pub const STARTING_DEADLINE: Duration = Duration::from_secs(5 * 60);

/// A cron expression that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schedule {expr:?}: {reason}")]
pub struct ScheduleError {
    pub expr: String,
    pub reason: String,
}

/// A parsed schedule (UTC).
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
}

/// Parses a five-field cron expression (an optional leading seconds field is
/// accepted too, for short test schedules).
pub fn parse(expr: &str) -> Result<Schedule, ScheduleError> {
    let parser = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build();
    parser
        .parse(expr)
        .map(|cron| Schedule { cron })
        .map_err(|e| ScheduleError {
            expr: expr.into(),
            reason: e.to_string(),
        })
}

impl Schedule {
    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&t, false).ok()
    }

    /// The latest slot at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_previous_occurrence(&t, true).ok()
    }
}

/// What the schedule says at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The slot to run now, if one is due.
    pub due: Option<DateTime<Utc>>,
    /// The next slot after `now` (for `status.nextSyncTime` and the requeue).
    pub next: Option<DateTime<Utc>>,
}

/// Decides whether a slot is due. `handled` is the latest slot already run or
/// skipped (or the moment scheduling started, e.g. the app's creation): only
/// slots after it count. A slot older than `deadline` is skipped, so a
/// controller back from downtime starts nothing until the next slot — or the
/// latest missed one if it is still within the deadline.
pub fn decide(
    schedule: &Schedule,
    handled: DateTime<Utc>,
    now: DateTime<Utc>,
    deadline: Duration,
) -> Decision {
    let next = schedule.next_after(now);
    let due = schedule
        .latest_at_or_before(now)
        .filter(|slot| *slot > handled)
        .filter(|slot| {
            (now - *slot)
                .to_std()
                .map(|late| late <= deadline)
                .unwrap_or(true)
        });
    Decision { due, next }
}

/// The deterministic name suffix of a slot: the unix minute for minute slots,
/// the unix second for slots with seconds (never equal: different magnitudes).
pub fn slot_token(slot: DateTime<Utc>) -> String {
    let secs = slot.timestamp();
    if secs % 60 == 0 {
        (secs / 60).to_string()
    } else {
        secs.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn parses_five_fields_and_rejects_garbage() {
        assert!(parse("*/15 * * * *").is_ok());
        assert!(parse("*/5 * * * * *").is_ok(), "seconds are accepted");
        let err = parse("every tuesday").unwrap_err();
        assert!(err.to_string().contains("every tuesday"), "{err}");
        assert!(parse("61 * * * *").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn next_is_strictly_after() {
        let s = parse("0 */4 * * *").unwrap();
        assert_eq!(
            s.next_after(t("2026-01-01T04:00:00Z")),
            Some(t("2026-01-01T08:00:00Z"))
        );
        assert_eq!(
            s.next_after(t("2026-01-01T03:59:59Z")),
            Some(t("2026-01-01T04:00:00Z"))
        );
    }

    #[test]
    fn due_when_a_new_slot_arrived() {
        let s = parse("0 * * * *").unwrap();
        let d = decide(
            &s,
            t("2026-01-01T09:00:00Z"),
            t("2026-01-01T10:00:30Z"),
            STARTING_DEADLINE,
        );
        assert_eq!(d.due, Some(t("2026-01-01T10:00:00Z")));
        assert_eq!(d.next, Some(t("2026-01-01T11:00:00Z")));
    }

    #[test]
    fn not_due_when_the_slot_was_handled() {
        let s = parse("0 * * * *").unwrap();
        let d = decide(
            &s,
            t("2026-01-01T10:00:00Z"),
            t("2026-01-01T10:01:00Z"),
            STARTING_DEADLINE,
        );
        assert_eq!(d.due, None);
        assert_eq!(d.next, Some(t("2026-01-01T11:00:00Z")));
    }

    #[test]
    fn no_catch_up_burst_after_downtime() {
        // Down from 05:30 to 10:20: five slots missed, the latest 20 min ago.
        let s = parse("0 * * * *").unwrap();
        let d = decide(
            &s,
            t("2026-01-01T05:00:00Z"),
            t("2026-01-01T10:20:00Z"),
            STARTING_DEADLINE,
        );
        assert_eq!(d.due, None, "a slot past the deadline is skipped");
        assert_eq!(d.next, Some(t("2026-01-01T11:00:00Z")));
        // Back within the deadline: only the latest slot runs.
        let d = decide(
            &s,
            t("2026-01-01T05:00:00Z"),
            t("2026-01-01T10:03:00Z"),
            STARTING_DEADLINE,
        );
        assert_eq!(d.due, Some(t("2026-01-01T10:00:00Z")));
    }

    #[test]
    fn slots_before_scheduling_started_do_not_count() {
        let s = parse("0 * * * *").unwrap();
        // Created at 10:02: the 10:00 slot is older than the app.
        let d = decide(
            &s,
            t("2026-01-01T10:02:00Z"),
            t("2026-01-01T10:03:00Z"),
            STARTING_DEADLINE,
        );
        assert_eq!(d.due, None);
    }

    #[test]
    fn slot_tokens_are_stable_and_distinct() {
        assert_eq!(slot_token(t("2026-01-01T10:00:00Z")), "29454360");
        assert_ne!(
            slot_token(t("2026-01-01T10:00:00Z")),
            slot_token(t("2026-01-01T10:01:00Z"))
        );
        assert_eq!(slot_token(t("1970-01-01T00:00:30Z")), "30");
    }
}
