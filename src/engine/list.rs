//! Listing: each side's users read page by page into a [`Sink`] that keeps only their
//! compact form, both sides at once with one progress figure, and the app's grant and
//! record groups with their members. Shared by both directions.

use std::sync::Mutex;

use serde_json::Value;

use crate::api::{CatalogApp, GroupRole};
use crate::cluster::groups::{self, GroupError};
use crate::engine::records::{Ids, Records, TooLarge};
use crate::scim::model::USERS;
use crate::scim::{ScimClient, ScimError};

use super::error::RunError;
use super::pipeline::Context;
use super::progress::Tracker;

/// Lists the domain users into `users` and the app accounts into `accounts`, both sides
/// at once.
pub async fn both_sides(
    context: &Context,
    domain_attributes: &[String],
    users: impl Sink,
    app_attributes: &[String],
    accounts: impl Sink,
) -> Result<(), RunError> {
    let totals = Mutex::new((0, 0));
    let tracker = &context.tracker;
    let (u, a) = tokio::join!(
        list_side(
            tracker,
            &context.domain,
            domain_attributes,
            &totals,
            0,
            users
        ),
        list_side(tracker, &context.app, app_attributes, &totals, 1, accounts),
    );
    u.map_err(RunError::Domain)?;
    a.map_err(RunError::App)?;
    Ok(())
}

/// Where a side's listing goes, one document at a time.
pub trait Sink {
    /// The server announced this many documents.
    fn reserve(&mut self, n: usize);
    /// One listed document.
    fn take(&mut self, v: &Value) -> Result<(), ScimError>;
}

/// Collects converted documents into a `Vec` (documents that do not convert are skipped).
pub struct Collect<'o, T, F>(pub &'o mut Vec<T>, pub F);

impl<T, F: Fn(&Value) -> Option<T>> Sink for Collect<'_, T, F> {
    fn reserve(&mut self, n: usize) {
        self.0.reserve_exact(n);
    }
    fn take(&mut self, v: &Value) -> Result<(), ScimError> {
        self.0.extend((self.1)(v));
        Ok(())
    }
}

/// Appends documents to [`Records`]; `F` returns `None` for a document it skips.
pub struct Append<'o, F>(pub &'o mut Records, pub F);

impl<F> Sink for Append<'_, F>
where
    F: Fn(&Value, &mut Records) -> Option<Result<(), TooLarge>>,
{
    fn reserve(&mut self, n: usize) {
        self.0.reserve(n);
    }
    fn take(&mut self, v: &Value) -> Result<(), ScimError> {
        match (self.1)(v, self.0) {
            Some(Err(e)) => Err(ScimError::Protocol(e.to_string())),
            _ => Ok(()),
        }
    }
}

/// Lists one side's users (`side` 0 is the domain, 1 the app), converting each document at once so that only the compact
/// form stays in memory.
async fn list_side(
    tracker: &Tracker,
    client: &ScimClient,
    attrs: &[String],
    totals: &Mutex<(u64, u64)>,
    side: usize,
    mut out: impl Sink,
) -> Result<(), ScimError> {
    let attrs: Vec<&str> = attrs.iter().map(String::as_str).collect();
    let mut pager = client.pager(USERS, &attrs, None).await?;
    let mut first = true;
    while let Some(page) = pager.next_page().await? {
        for v in &page {
            out.take(v)?;
        }
        if std::mem::take(&mut first)
            && let Some(total) = pager.stats().total_results
        {
            // Sized once, after a page shows what a record takes: doubling columns of
            // 100,000 records wastes up to half of them and copies them all at each step.
            // totalResults is the server's word: capped so a wrong one cannot exhaust memory.
            let rest = (total as usize).saturating_sub(page.len());
            out.reserve(rest.min(1_000_000));
        }
        report_listing(
            tracker,
            totals,
            side,
            page.len() as u64,
            pager.stats().total_results,
        );
    }
    if !pager.stats().consistent {
        tracing::warn!(
            side,
            stats = ?pager.stats(),
            "the listing changed while it was read; deletion candidates are confirmed one by one"
        );
    }
    Ok(())
}

/// Listing progress: objects read over both sides' totalResults.
fn report_listing(
    tracker: &Tracker,
    totals: &Mutex<(u64, u64)>,
    side: usize,
    n: u64,
    total: Option<u64>,
) {
    let sum = {
        let mut t = totals.lock().expect("totals lock");
        if let Some(total) = total {
            if side == 0 {
                t.0 = total;
            } else {
                t.1 = total;
            }
        }
        t.0 + t.1
    };
    tracker.update(|s| {
        s.processed += n;
        s.total = sum.max(s.processed);
    });
}

/// The app's two groups in the identity domain and their members.
pub struct Groups {
    pub grant_id: String,
    pub record_id: String,
    pub grants: Ids,
    pub records: Ids,
}

/// Finds the app's grant and record groups (each must carry the app's ownership mark, or be
/// adopted on purpose) and reads their members.
pub async fn groups(domain: &ScimClient, app: &CatalogApp) -> Result<Groups, RunError> {
    let (grant_id, grants) = group(domain, app, GroupRole::Grant).await?;
    let (record_id, records) = group(domain, app, GroupRole::Record).await?;
    Ok(Groups {
        grant_id,
        record_id,
        grants,
        records,
    })
}

async fn group(
    domain: &ScimClient,
    app: &CatalogApp,
    role: GroupRole,
) -> Result<(String, Ids), RunError> {
    let id = groups::find(domain, app, role).await?;
    let (members, _) = domain
        .group_members(&id)
        .await
        .map_err(RunError::Domain)?
        .ok_or_else(|| GroupError::Missing {
            role: role.as_str(),
            name: groups::name_of(app, role),
        })?;
    // Kept for the whole run: compact.
    Ok((id, members.iter().collect()))
}
