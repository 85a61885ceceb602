//! Confirming deletion candidates: a recorded user whose account the listing did not show
//! is acted on only once a lookup in the app finds no account for it.

use futures::StreamExt;

use crate::engine::plan::Deletion;
use crate::engine::records::Records;
use crate::scim::ScimClient;
use crate::scim::model::{GROUPS, USERS};

use super::error::RunError;
use super::extract::Rules;

/// Keeps only the deletion candidates whose account is really gone: index pagination is
/// not a snapshot, so the listing can miss an account. One filtered query in the app per
/// candidate (never per account): its user id as externalId, or any of its rule values.
/// Returns the confirmed deletions and how many candidates still had an account.
pub async fn confirm_deletions(
    domain: &ScimClient,
    app: &ScimClient,
    rules: &Rules,
    candidates: Vec<Deletion>,
    users: &Records,
    parallelism: usize,
    on_checked: impl Fn(),
) -> Result<(Vec<Deletion>, usize), RunError> {
    let on_checked = &on_checked;
    let checks = futures::stream::iter(candidates.iter().map(|d| async move {
        let fetched;
        let user = match d.user {
            Some(u) => Some(users.get(u)),
            None => {
                // A member the user listing missed (or a deleted user): read it for its values.
                fetched = domain
                    .get(USERS, &d.user_id, &[])
                    .await
                    .map_err(RunError::Domain)?
                    .and_then(|v| rules.domain_user(&v))
                    .map(|u| Records::of_users(rules.app.len(), &[u]));
                if fetched.is_none()
                    && domain
                        .get(GROUPS, &d.user_id, &["id"])
                        .await
                        .map_err(RunError::Domain)?
                        .is_some()
                {
                    // A nested group is no record of an account: never removed.
                    on_checked();
                    return Ok(Check::NotAUser);
                }
                fetched.as_ref().map(|f| f.get(0))
            }
        };
        let filter = rules.confirmation_filter(&d.user_id, user);
        let (found, _) = app
            .list(USERS, &["id"], Some(&filter))
            .await
            .map_err(RunError::App)?;
        on_checked();
        Ok::<Check, RunError>(if found.is_empty() {
            Check::Gone
        } else {
            Check::Present
        })
    }))
    .buffered(parallelism.max(1))
    .collect::<Vec<_>>()
    .await;
    let mut confirmed = Vec::with_capacity(candidates.len());
    let mut still_there = 0;
    for (d, check) in candidates.into_iter().zip(checks) {
        match check? {
            Check::Gone => confirmed.push(d),
            Check::Present => still_there += 1,
            Check::NotAUser => {}
        }
    }
    if still_there > 0 {
        tracing::info!(
            still_there,
            "deletion candidates whose account still exists"
        );
    }
    Ok((confirmed, still_there))
}

/// What the confirmation of one deletion candidate found.
enum Check {
    Gone,
    Present,
    NotAUser,
}
