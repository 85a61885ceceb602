//! The run's write-ahead journal (`status.inFlight`): what makes a run's counts exact across
//! pod kills. A create or delete is written into the journal, and the journal into the
//! run's status (awaited), before the write starts; the write leaves the journal in the same
//! state update that counts it ([`RunState::retire`](super::progress::RunState::retire)),
//! and status writes take turns, so every status on record shows each write either counted
//! or in flight, never both and never neither. A retried pod looks each entry left in
//! flight up on the servers and counts what happened ([`settle`]).
//!
//! Entries are recorded a chunk ahead of the writes (the next chunk while this one's writes
//! run), so the journal costs one status write per chunk, mostly hidden.

use std::time::Duration;

use futures::{Stream, StreamExt, stream};
use serde_json::Value;

use crate::api::{CatalogApp, InFlightWrite};
use crate::scim::ScimClient;
use crate::scim::model::USERS;
use crate::scim::path::quote;

use super::list;
use super::pipeline::Context;
use super::progress::{Bucket, RunState, Tracker};
use super::stop::StopReason;
use super::writes::removal_outcome;

/// Writes per journal chunk: several rounds of `parallelism` writes, at least 64.
fn chunk_size(parallelism: usize) -> usize {
    (parallelism * 4).max(64)
}

/// A journal entry.
pub fn entry(action: &str, id: &str, user_name: Option<&str>) -> InFlightWrite {
    InFlightWrite {
        action: action.into(),
        id: id.into(),
        user_name: user_name.map(str::to_string),
    }
}

/// Yields `work` once each item's journal `entries` are on record, a chunk ahead of the
/// writes. A chunk that could not be recorded is dropped and the run stops
/// ([`StopReason::Unrecorded`]); nothing is recorded once the run stops.
pub fn ahead<'a, W: 'a>(
    context: &'a Context,
    work: impl Iterator<Item = W> + 'a,
    entries: &'a (impl Fn(&W) -> Vec<InFlightWrite> + 'a),
) -> impl Stream<Item = W> + 'a {
    stream::iter(work)
        .chunks(chunk_size(context.parallelism))
        .map(move |chunk| async move {
            let recorded =
                !context.stop.is_stopped() && enter(context, chunk.iter().flat_map(entries)).await;
            if recorded { chunk } else { Vec::new() }
        })
        .buffered(2)
        .flat_map(stream::iter)
}

/// Puts `entries` into the journal and the journal on record; false (and the run stops)
/// when the status cannot be written.
pub async fn enter(context: &Context, entries: impl Iterator<Item = InFlightWrite>) -> bool {
    context.tracker.update(|s| {
        for e in entries {
            s.in_flight.insert((e.action.clone(), e.id.clone()), e);
        }
    });
    for attempt in 1..=3u64 {
        match context.checkpoint.save(&context.tracker).await {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(attempt, error = %e, "recording the journal failed");
                tokio::time::sleep(Duration::from_millis(250 * attempt)).await;
            }
        }
    }
    context.stop.stop(StopReason::Unrecorded);
    false
}

/// Closes the journal once no write is in flight: what is left never started, or failed
/// and was counted as failed; only writes whose outcome stayed unknown stay listed.
pub fn close(tracker: &Tracker) {
    tracker.update(close_state);
}

fn close_state(s: &mut RunState) {
    let unknown = std::mem::take(&mut s.unknown);
    s.in_flight.retain(|k, _| unknown.contains(k));
}

/// What a retried pod needs to look up its predecessor's writes.
pub struct Lookups<'a> {
    pub domain: &'a ScimClient,
    pub app: &'a ScimClient,
    pub catalog_app: &'a CatalogApp,
}

/// Settles the journal a killed attempt left: each write in flight is looked up and, if it
/// happened, counted (and retired in the same update). An entry that cannot be looked up
/// stays in `status.inFlight`: its outcome is unknown, and the status says so.
pub async fn settle(lookups: &Lookups<'_>, tracker: &Tracker) {
    let entries: Vec<InFlightWrite> = tracker.update(|s| s.in_flight.values().cloned().collect());
    if entries.is_empty() {
        return;
    }
    let records = match entries.iter().any(|e| e.action == "RemoveRecord") {
        true => list::groups(lookups.domain, lookups.catalog_app).await.ok(),
        false => None,
    };
    for e in entries {
        let happened = match e.action.as_str() {
            "RemoveRecord" => records.as_ref().map(|g| !g.records.contains(&e.id)),
            _ => happened(lookups, &e).await,
        };
        match happened {
            Some(true) => tracker.update(|s| {
                count(s, &e.action);
                s.retire(&e.action, &e.id);
            }),
            Some(false) => tracker.update(|s| s.retire(&e.action, &e.id)),
            None => tracing::warn!(
                action = e.action,
                id = e.id,
                "an interrupted write stays unknown"
            ),
        }
    }
    tracing::info!(
        unknown = tracker.update(|s| s.in_flight.len()),
        "the interrupted attempt's writes are settled"
    );
}

/// Counts a write of `action` that happened, as the apply would have.
fn count(s: &mut RunState, action: &str) {
    match action {
        // Import: the account lands in `created`, out of `skipped`.
        "CreateUser" => s.settle(1, Bucket::Created),
        "CreateAccount" => {
            s.counts.created += 1;
            s.counts.pending_provisioning -= 1;
        }
        "RecreateAccount" => s.counts.created += 1,
        _ => s.counts.deleted += 1,
    }
}

/// Whether the write of `e` happened, as the servers show it; `None` when they cannot say.
async fn happened(l: &Lookups<'_>, e: &InFlightWrite) -> Option<bool> {
    match e.action.as_str() {
        "CreateUser" => {
            let filter = format!("externalId eq {}", quote(&e.id));
            let (found, _) = l
                .domain
                .list(USERS, &["externalId"], Some(&filter))
                .await
                .ok()?;
            Some(found.iter().any(|u| external_id(u) == Some(e.id.as_str())))
        }
        "CreateAccount" | "RecreateAccount" => created_account(l.app, e).await,
        "DeactivateUser" | "DeleteUser" => {
            removal_outcome(l.domain, USERS, &e.id, e.action == "DeactivateUser").await
        }
        "DeactivateAccount" | "DeleteAccount" => {
            removal_outcome(l.app, USERS, &e.id, e.action == "DeactivateAccount").await
        }
        _ => None,
    }
}

/// A create in the app happened if an account with its userName now carries the user's id
/// (or carries none: an app whose `externalId` is not writable).
async fn created_account(app: &ScimClient, e: &InFlightWrite) -> Option<bool> {
    let name = e.user_name.as_deref()?;
    let filter = format!("userName eq {}", quote(name));
    let (found, _) = app
        .list(USERS, &["userName", "externalId"], Some(&filter))
        .await
        .ok()?;
    Some(found.iter().any(|a| {
        a.get("userName").and_then(Value::as_str) == Some(name)
            && external_id(a).is_none_or(|x| x == e.id)
    }))
}

fn external_id(v: &Value) -> Option<&str> {
    v.get("externalId").and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settled_write_is_counted_and_retired_together() {
        let mut s = RunState::default();
        s.counts.skipped = 3;
        s.counts.pending_provisioning = 2;
        for (action, id) in [
            ("CreateUser", "a1"),
            ("CreateAccount", "u1"),
            ("DeleteUser", "u2"),
        ] {
            s.in_flight
                .insert((action.into(), id.into()), entry(action, id, None));
        }
        for (action, id) in [
            ("CreateUser", "a1"),
            ("CreateAccount", "u1"),
            ("DeleteUser", "u2"),
        ] {
            count(&mut s, action);
            s.retire(action, id);
        }
        let c = &s.counts;
        assert_eq!(
            (c.skipped, c.created, c.pending_provisioning, c.deleted),
            (2, 2, 1, 1)
        );
        assert!(s.in_flight.is_empty());
    }

    #[test]
    fn closing_keeps_only_the_writes_whose_outcome_is_unknown() {
        let mut s = RunState::default();
        for id in ["never-started", "failed", "unknown"] {
            s.in_flight.insert(
                ("CreateUser".into(), id.into()),
                entry("CreateUser", id, None),
            );
        }
        s.keep_unknown("CreateUser", "unknown");
        close_state(&mut s);
        let left: Vec<&str> = s.in_flight.values().map(|e| e.id.as_str()).collect();
        assert_eq!(left, ["unknown"]);
        assert!(s.unknown.is_empty());
    }

    #[test]
    fn chunks_cover_several_rounds_of_parallel_writes() {
        assert_eq!(chunk_size(1), 64);
        assert_eq!(chunk_size(32), 128);
    }
}
