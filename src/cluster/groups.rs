//! The app's two groups in the identity domain (grant and record) and the ownership rule
//! both the controller and the sync Job apply: a group is the app's when it carries the
//! app's ownership mark as `externalId`, or when `adoptExistingGroups` allows taking one
//! without a mark. A group marked for another app is never taken.

use serde_json::Value;

use crate::api::{CatalogApp, GroupRole};
use crate::scim::model::GROUPS;
use crate::scim::path::quote;
use crate::scim::{ScimClient, ScimError};

/// Why an app's group cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error(
        "{role} group {name:?} not found in the identity domain (the controller creates it when provisioning is enabled)"
    )]
    Missing { role: &'static str, name: String },
    #[error("{count} groups in the identity domain have the display name {name:?}")]
    Ambiguous { count: usize, name: String },
    #[error(
        "{role} group {name:?} exists in the identity domain without catalogsync's ownership mark (externalId {mark:?}); set spec.provisioning.adoptExistingGroups: true to adopt it, or choose another name"
    )]
    NotOwned {
        role: &'static str,
        name: String,
        mark: String,
    },
    #[error(
        "{role} group {name:?} belongs to something else (externalId {found:?}, expected {mark:?}); choose another name"
    )]
    OwnedByOther {
        role: &'static str,
        name: String,
        found: String,
        mark: String,
    },
    #[error("{0}")]
    Scim(#[from] ScimError),
}

/// What the ownership rule says of a group found by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// It carries the app's mark.
    Ours,
    /// No mark, and the app adopts existing groups: write the mark, then use it.
    Adopt,
    /// No mark, and adoption is off.
    NotOwned,
    /// Another mark: never taken, whatever `adoptExistingGroups` says.
    OwnedByOther(String),
}

/// The ownership rule. Pure.
pub fn ownership(external_id: Option<&str>, mark: &str, adopt: bool) -> Ownership {
    match external_id.filter(|e| !e.is_empty()) {
        Some(e) if e == mark => Ownership::Ours,
        Some(e) if e.starts_with("catalogsync:") => Ownership::OwnedByOther(e.to_string()),
        Some(_) | None if adopt => Ownership::Adopt,
        Some(_) | None => Ownership::NotOwned,
    }
}

/// A group found by display name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundGroup {
    pub id: String,
    pub external_id: Option<String>,
}

/// The groups whose display name is `name` (case-insensitive, as SCIM compares it).
pub async fn find_by_name(domain: &ScimClient, name: &str) -> Result<Vec<FoundGroup>, ScimError> {
    let filter = format!("displayName eq {}", quote(name));
    let (groups, _) = domain
        .list(GROUPS, &["displayName", "externalId"], Some(&filter))
        .await?;
    let text = |g: &Value, k: &str| g.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(groups
        .iter()
        .filter(|g| text(g, "displayName").is_some_and(|d| d.eq_ignore_ascii_case(name)))
        .filter_map(|g| {
            Some(FoundGroup {
                id: text(g, "id")?,
                external_id: text(g, "externalId"),
            })
        })
        .collect())
}

/// The id of the app's group of `role`, for a run: it must exist and be the app's (an
/// unmarked group only with `adoptExistingGroups`). Never creates or marks anything.
pub async fn find(
    domain: &ScimClient,
    app: &CatalogApp,
    role: GroupRole,
) -> Result<String, GroupError> {
    let name = name_of(app, role);
    let found = find_by_name(domain, &name).await?;
    let group = match found.as_slice() {
        [] => {
            return Err(GroupError::Missing {
                role: role.as_str(),
                name,
            });
        }
        [one] => one,
        many => {
            return Err(GroupError::Ambiguous {
                count: many.len(),
                name,
            });
        }
    };
    let mark = app.group_mark(role);
    match ownership(
        group.external_id.as_deref(),
        &mark,
        app.adopts_existing_groups(),
    ) {
        Ownership::Ours | Ownership::Adopt => Ok(group.id.clone()),
        Ownership::NotOwned => Err(GroupError::NotOwned {
            role: role.as_str(),
            name,
            mark,
        }),
        Ownership::OwnedByOther(found) => Err(GroupError::OwnedByOther {
            role: role.as_str(),
            name,
            found,
            mark,
        }),
    }
}

/// The display name of the app's group of `role`.
pub fn name_of(app: &CatalogApp, role: GroupRole) -> String {
    match role {
        GroupRole::Grant => app.grant_group_name(),
        GroupRole::Record => app.record_group_name(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_taken_only_with_our_mark_or_on_purpose() {
        let mark = "catalogsync:team-a/slack/grant";
        assert_eq!(ownership(Some(mark), mark, false), Ownership::Ours);
        assert_eq!(ownership(None, mark, false), Ownership::NotOwned);
        assert_eq!(ownership(Some(""), mark, false), Ownership::NotOwned);
        assert_eq!(ownership(Some("hr-42"), mark, false), Ownership::NotOwned);
        assert_eq!(ownership(None, mark, true), Ownership::Adopt);
        assert_eq!(ownership(Some("hr-42"), mark, true), Ownership::Adopt);
        let other = "catalogsync:team-b/slack/grant";
        for adopt in [false, true] {
            assert_eq!(
                ownership(Some(other), mark, adopt),
                Ownership::OwnedByOther(other.into())
            );
        }
    }
}
