//! Confirming deletion candidates: a recorded user whose account the listing did not show
//! is acted on only once a lookup in the app finds no account for it.

use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;

use crate::engine::plan::Deletion;
use crate::engine::records::Records;
use crate::scim::ScimClient;
use crate::scim::error::ScimError;
use crate::scim::model::{GROUPS, USERS};

use super::error::RunError;
use super::extract::Rules;

/// Keeps only the deletion candidates whose account is really gone: index pagination is
/// not a snapshot, so the listing can miss an account. One filtered query in the app per
/// candidate (never per account): its user id as externalId, or any of its rule values.
/// An app that rejects `or` filters is detected once per run; from then on each candidate
/// is looked up one clause at a time, stopping at the first that finds an account.
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
    let no_or = &AtomicBool::new(false);
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
        let clauses = rules.confirmation_clauses(&d.user_id, user);
        let found = account_exists(app, &clauses, no_or).await?;
        on_checked();
        Ok::<Check, RunError>(if found { Check::Present } else { Check::Gone })
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

/// Whether any of the clauses finds an account in the app: one `or` query while the app
/// takes them, else one query per clause. `no_or` remembers a rejection for the run.
async fn account_exists(
    app: &ScimClient,
    clauses: &[String],
    no_or: &AtomicBool,
) -> Result<bool, RunError> {
    if clauses.len() > 1 && !no_or.load(Ordering::Relaxed) {
        match app.list(USERS, &["id"], Some(&clauses.join(" or "))).await {
            Ok((found, _)) => return Ok(!found.is_empty()),
            Err(e) if rejects_or_filter(&e) => {
                if !no_or.swap(true, Ordering::Relaxed) {
                    tracing::info!(error = %e, "the app rejects `or` filters: confirming deletions one clause at a time");
                }
            }
            Err(e) => return Err(RunError::App(e)),
        }
    }
    for clause in clauses {
        let (found, _) = app
            .list(USERS, &["id"], Some(clause))
            .await
            .map_err(RunError::App)?;
        if !found.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// True when the app refused a filter for its `or`, not for its values: 400 invalidFilter,
/// 501, or a 400 saying the filter is not supported.
fn rejects_or_filter(e: &ScimError) -> bool {
    let detail = match e {
        ScimError::Status { detail, .. } => detail.to_lowercase(),
        ScimError::RetriesExhausted { last, .. } => return rejects_or_filter(last),
        _ => return false,
    };
    match e.status() {
        Some(501) => true,
        Some(400) => {
            e.scim_type() == Some("invalidFilter")
                || detail.contains("not supported")
                || detail.contains("unsupported")
        }
        _ => false,
    }
}

/// What the confirmation of one deletion candidate found.
enum Check {
    Gone,
    Present,
    NotAUser,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::error::ErrorKind;

    fn status(code: u16, scim_type: Option<&str>, detail: &str) -> ScimError {
        ScimError::Status {
            method: "GET".into(),
            path: "/Users".into(),
            status: code,
            kind: ErrorKind::from_status(code),
            scim_type: scim_type.map(str::to_string),
            detail: detail.into(),
        }
    }

    #[test]
    fn an_or_rejection_is_told_from_other_failures() {
        assert!(rejects_or_filter(&status(
            400,
            Some("invalidFilter"),
            "or is not supported"
        )));
        assert!(rejects_or_filter(&status(501, None, "Not Implemented")));
        assert!(rejects_or_filter(&status(
            400,
            None,
            "Filter operator OR not supported"
        )));
        assert!(!rejects_or_filter(&status(
            400,
            Some("invalidValue"),
            "bad"
        )));
        assert!(!rejects_or_filter(&status(500, None, "not supported")));
        assert!(!rejects_or_filter(&status(403, None, "forbidden")));
        assert!(!rejects_or_filter(&ScimError::Protocol("x".into())));
    }
}
