//! The last writes of an Import: removing the grants (first) and records of the users
//! whose account is gone. They run after the listing is freed: on a 100,000-member group
//! each removal reads and rewrites the whole member list, megabytes that would otherwise
//! stack on top of the listing's.

use crate::engine::limits::{Allowances, Kind};
use crate::engine::pipeline::Context;
use crate::engine::writes::{self, Writes};
use crate::scim::ScimError;

use crate::engine::journal;

/// Removals per PATCH: each uncounted one is journaled first, and a status carries at
/// most this many entries of them (about 70 bytes each).
const REMOVALS_PER_CALL: usize = 1_000;

/// A user whose grant (if any) and record are removed after the parallel stage.
pub(super) struct PendingRemoval {
    pub(super) user_id: String,
    pub(super) subject: String,
    pub(super) granted: bool,
    /// The user-level write (deactivate/delete) already happened and was counted.
    pub(super) counted: bool,
}

/// The removals left after the parallel stage, with what sending them needs.
pub(super) struct Removals<'a> {
    pub(super) context: &'a Context,
    pub(super) grant_id: String,
    pub(super) record_id: String,
    pub(super) allowed: &'a Allowances,
    pub(super) writes: &'a Writes,
    pub(super) pending: Vec<PendingRemoval>,
}

/// The journal's (and the failures') action of a removal that is only a record's.
const ACTION: &str = "RemoveRecord";

impl Removals<'_> {
    /// Counts removed records as deleted, each leaving the journal in the same update.
    fn count(&self, removed: &[&PendingRemoval]) {
        self.context.tracker.update(|s| {
            s.counts.deleted += removed.len() as i64;
            for p in removed {
                s.retire(ACTION, &p.user_id);
            }
        });
        self.writes.succeeded(removed.len() as u64);
    }

    /// A removal whose outcome is unknown (its answer lost, retries spent): the record group
    /// is read back and what is gone counts as deleted, the rest as failed.
    async fn settle_removals(&self, chunk: &[PendingRemoval], e: &ScimError) {
        let uncounted: Vec<&PendingRemoval> = chunk.iter().filter(|p| !p.counted).collect();
        let members = self
            .context
            .domain
            .group_members(&self.record_id)
            .await
            .ok()
            .flatten();
        let Some((members, _)) = members else {
            // Unknown still: counted as failed, the allowance kept, the removals in the
            // journal.
            self.context.tracker.update(|s| {
                for p in &uncounted {
                    s.keep_unknown(ACTION, &p.user_id);
                }
            });
            let n = uncounted.len() as u64;
            return self.writes.record_failed(n, ACTION, &chunk[0].subject, e);
        };
        let members: std::collections::HashSet<String> = members.into_iter().collect();
        let (kept, gone): (Vec<&PendingRemoval>, Vec<&PendingRemoval>) = uncounted
            .into_iter()
            .partition(|p| members.contains(&p.user_id));
        self.count(&gone);
        if let Some(first) = kept.first() {
            self.writes
                .record_failed(kept.len() as u64, ACTION, &first.subject, e);
        }
    }

    /// Removes the grants (first) and records of the users whose account is gone.
    pub(super) async fn flush(mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        if self.writes.stopping() {
            // Group-only removals not yet sent are writes not yet issued: give them back.
            let before = pending.len();
            pending.retain(|p| p.counted);
            let dropped = (before - pending.len()) as u64;
            self.allowed.release(Kind::Delete, dropped);
            self.context.tracker.advance(dropped);
        }
        for chunk in pending.chunks(REMOVALS_PER_CALL) {
            let entries = chunk
                .iter()
                .filter(|p| !p.counted)
                .map(|p| journal::entry(ACTION, &p.user_id, None));
            if !journal::enter(self.context, entries).await {
                break;
            }
            let grants: Vec<String> = chunk
                .iter()
                .filter(|p| p.granted)
                .map(|p| p.user_id.clone())
                .collect();
            let records: Vec<String> = chunk.iter().map(|p| p.user_id.clone()).collect();
            let domain = &self.context.domain;
            let result = match domain.remove_members(&self.grant_id, &grants).await {
                Ok(_) => domain
                    .remove_members(&self.record_id, &records)
                    .await
                    .map(|_| ()),
                Err(e) => Err(e),
            };
            let uncounted = chunk.iter().filter(|p| !p.counted).count() as u64;
            match result {
                Ok(()) => {
                    let uncounted: Vec<&PendingRemoval> =
                        chunk.iter().filter(|p| !p.counted).collect();
                    self.count(&uncounted);
                }
                Err(e) if uncounted > 0 => {
                    if writes::certainly_not_applied(&e) {
                        self.allowed.release(Kind::Delete, uncounted);
                        self.writes
                            .record_failed(uncounted, ACTION, &chunk[0].subject, &e);
                    } else {
                        self.settle_removals(chunk, &e).await;
                    }
                }
                // The users were deactivated/deleted; a stale record is retried next run.
                Err(e) => tracing::warn!(error = %e, "removing records of deleted users failed"),
            }
            self.context.tracker.advance(uncounted);
        }
    }
}
