//! The words of the CatalogApp's status and events about its runs: a run's
//! progress, a limit it stopped on (and what to raise), how it ended.

use kube::ResourceExt;

use crate::api::{Direction, RunPhase, RunSummary, SyncRun};
use crate::controller::ObjectEvent;

/// "run NAME (DIRECTION, PHASE): STAGE PROCESSED/TOTAL (PERCENT%)".
pub fn progress_text(run: &SyncRun) -> String {
    let status = run.status.clone().unwrap_or_default();
    let phase = status
        .phase
        .map(|p| format!("{p:?}"))
        .unwrap_or("Pending".into());
    let mut text = format!("run {} ({:?}, {phase})", run.name_any(), run.spec.direction);
    let stage = status
        .stage
        .filter(|_| status.phase == Some(RunPhase::Running))
        .map(|stage| format!(" {}", format!("{stage:?}").to_lowercase()));
    match status.progress {
        // The numbers are per stage: without its name, 100% of listing reads as done.
        Some(p) if p.total > 0 => text.push_str(&format!(
            ":{} {}/{} ({}%)",
            stage.unwrap_or_default(),
            p.processed,
            p.total,
            p.percent
        )),
        // Nothing counted yet (listing has not learnt its totals): only the stage.
        _ => {
            if let Some(stage) = stage {
                text.push_str(&format!(":{stage}"));
            }
        }
    }
    text
}

/// What a run planned against what its limits allowed, and where to raise them.
pub fn limit_text(run: &SyncRun, policy: Option<&str>) -> String {
    let status = run.status.clone().unwrap_or_default();
    let planned = status.planned.unwrap_or_default();
    let limits = status.limits.unwrap_or_default();
    let allowed = |v: Option<i64>| v.map_or("unlimited".to_string(), |v| v.to_string());
    // Say what to change: which field of which object, and to what.
    let over: Vec<String> = [
        ("maxCreates", planned.creates, limits.max_creates),
        ("maxDeletes", planned.deletes, limits.max_deletes),
        (
            "maxChanges",
            planned.creates + planned.deletes,
            limits.max_changes,
        ),
    ]
    .into_iter()
    .filter(|(_, p, max)| max.is_some_and(|m| *p > m))
    .map(|(field, p, _)| format!("{field} to at least {p}"))
    .collect();
    let place = match (run.spec.direction, policy) {
        (Direction::Import, Some(p)) => format!("spec.limits of SyncPolicy {p:?}"),
        (Direction::Import, None) => "spec.limits of the SyncPolicy".to_string(),
        (Direction::Provision, _) => "spec.provisioning.limits of this CatalogApp".to_string(),
    };
    let hint = if over.is_empty() {
        String::new()
    } else {
        format!(
            ". If these changes are expected, raise {} in {place} (or set whenExceeded: ApplyUpToLimit) and request a run",
            over.join(" and ")
        )
    };
    let changes = limits
        .max_changes
        .map(|m| format!(" and {m} changes in all"))
        .unwrap_or_default();
    format!(
        "run {} stopped on a limit: planned {} creates and {} deletes; allowed {} creates and {} deletes{changes}{hint}",
        run.name_any(),
        planned.creates,
        planned.deletes,
        allowed(limits.max_creates),
        allowed(limits.max_deletes),
    )
}

/// The event for a run seen ending (or, for a non-final phase, starting).
pub fn run_event(run: &RunSummary, phase: RunPhase) -> ObjectEvent {
    let message = format!(
        "SyncRun {} ended {phase:?}{}",
        run.name,
        run.message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default()
    );
    match phase {
        RunPhase::Succeeded => ObjectEvent::normal("RunSucceeded", message),
        RunPhase::Failed => ObjectEvent::warning("RunFailed", message),
        RunPhase::LimitExceeded => ObjectEvent::warning("LimitExceeded", message),
        RunPhase::Cancelled => ObjectEvent::normal("RunCancelled", message),
        RunPhase::Pending | RunPhase::Running => ObjectEvent::normal("RunStarted", message),
    }
}
