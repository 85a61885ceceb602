//! The app's two groups in the identity domain (grant and record) and the ownership rule
//! both the controller and the sync Job apply: a group is the app's when it carries the
//! app's ownership mark as `externalId`, or when `adoptExistingGroups` allows taking one
//! without a mark. A group marked for another app is never taken.

use serde_json::{Value, json};

use crate::api::{CatalogApp, GroupRole};
use crate::scim::PatchOp;
use crate::scim::model::{GROUP_SCHEMA, GROUPS, resource_id};
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
    #[error(
        "the identity domain did not keep the ownership mark (externalId {mark:?}) of the {role} group {name:?} it created: catalogsync cannot prove the group is the app's, so it never acts on it"
    )]
    MarkDropped {
        role: &'static str,
        name: String,
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
    let found = find_by_name(domain, &name_of(app, role)).await?;
    match choose(app, role, &found)? {
        Choice::None => Err(GroupError::Missing {
            role: role.as_str(),
            name: name_of(app, role),
        }),
        Choice::Ours(id) | Choice::Adopt(id) => Ok(id),
    }
}

/// Makes sure the app's group of `role` exists and carries the app's mark; returns its id.
/// For the controller. `known_id` (from status) is checked first, so a steady state costs
/// one GET. A missing group is created with the mark; an unmarked one is marked only with
/// `adoptExistingGroups` (so that later runs see it as the app's); any other is an error.
pub async fn ensure(
    domain: &ScimClient,
    app: &CatalogApp,
    role: GroupRole,
    known_id: Option<&str>,
) -> Result<String, GroupError> {
    let (name, mark) = (name_of(app, role), app.group_mark(role));
    if let Some(id) = known_id
        && let Some(g) = domain
            .get(GROUPS, id, &["displayName", "externalId"])
            .await?
        && is_still_ours(&g, &name, &mark)
    {
        return Ok(id.to_string());
    }
    let found = find_by_name(domain, &name).await?;
    let id = match choose(app, role, &found)? {
        Choice::Ours(id) => id,
        Choice::Adopt(id) => mark_group(domain, &id, &mark).await.map(|()| id)?,
        Choice::None => create(domain, app, role).await?,
    };
    Ok(id)
}

/// Creates the app's group with its mark. A 409 is someone else's group of that name, or
/// ours created meanwhile: the ownership rule decides, as for a group found.
async fn create(
    domain: &ScimClient,
    app: &CatalogApp,
    role: GroupRole,
) -> Result<String, GroupError> {
    let (name, mark) = (name_of(app, role), app.group_mark(role));
    let body = json!({
        "schemas": [GROUP_SCHEMA],
        "displayName": name,
        "externalId": mark,
        // Some servers (Canaille) require the attribute; an empty list is RFC-valid.
        "members": [],
    });
    match domain.create(GROUPS, &body).await {
        // A server that drops the mark makes a group no later run could tell from anyone's.
        Ok(g) if g.get("externalId").and_then(Value::as_str) != Some(mark.as_str()) => {
            Err(GroupError::MarkDropped {
                role: role.as_str(),
                name,
                mark,
            })
        }
        Ok(g) => resource_id(&g)
            .map(str::to_string)
            .ok_or_else(|| ScimError::Protocol("created group has no id".into()).into()),
        Err(e) if e.is_uniqueness() => {
            let found = find_by_name(domain, &name).await?;
            match choose(app, role, &found)? {
                Choice::Ours(id) => Ok(id),
                Choice::Adopt(id) => mark_group(domain, &id, &mark).await.map(|()| id),
                Choice::None => Err(ScimError::Protocol(format!(
                    "group {name:?} conflicts but cannot be found"
                ))
                .into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes the mark on an adopted group, so it stays the app's whatever the setting later.
async fn mark_group(domain: &ScimClient, id: &str, mark: &str) -> Result<(), GroupError> {
    let patch = PatchOp::new(vec![PatchOp::replace("externalId", json!(mark))]);
    domain.patch(GROUPS, id, &patch, None).await?;
    Ok(())
}

/// What to do with the groups found by the app's group name.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Choice {
    /// No group has the name.
    None,
    /// The app's group.
    Ours(String),
    /// An unmarked group the app adopts.
    Adopt(String),
}

/// The ownership rule over the groups found by name. Pure.
fn choose(app: &CatalogApp, role: GroupRole, found: &[FoundGroup]) -> Result<Choice, GroupError> {
    let name = name_of(app, role);
    let group = match found {
        [] => return Ok(Choice::None),
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
        Ownership::Ours => Ok(Choice::Ours(group.id.clone())),
        Ownership::Adopt => Ok(Choice::Adopt(group.id.clone())),
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

/// Whether the group under a known id is still the app's: same name, our mark. Pure.
fn is_still_ours(group: &Value, name: &str, mark: &str) -> bool {
    let text = |k: &str| group.get(k).and_then(Value::as_str);
    text("displayName").is_some_and(|d| d.eq_ignore_ascii_case(name))
        && text("externalId") == Some(mark)
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

    fn app(adopt: bool) -> CatalogApp {
        crate::api::catalog_app::test_app(
            json!({"enabled": true, "grantGroup": "admins", "adoptExistingGroups": adopt}),
        )
    }

    fn group(id: &str, external_id: Option<&str>) -> FoundGroup {
        FoundGroup {
            id: id.into(),
            external_id: external_id.map(str::to_string),
        }
    }

    #[test]
    fn the_found_groups_decide_create_use_adopt_or_refuse() {
        let (grant, record) = (GroupRole::Grant, GroupRole::Record);
        let ours = "catalogsync:team-a/slack/grant";
        let a = app(false);
        assert_eq!(choose(&a, grant, &[]).unwrap(), Choice::None);
        assert_eq!(
            choose(&a, grant, &[group("g1", Some(ours))]).unwrap(),
            Choice::Ours("g1".into())
        );
        // The grant group's mark does not make a record group ours.
        let e = choose(&a, record, &[group("g1", Some(ours))]).unwrap_err();
        assert!(matches!(e, GroupError::OwnedByOther { .. }), "{e}");
        let e = choose(&a, grant, &[group("g1", None)]).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, GroupError::NotOwned { .. }));
        assert!(
            text.contains("\"admins\"") && text.contains("adoptExistingGroups"),
            "{text}"
        );
        let e = choose(&a, grant, &[group("g1", None), group("g2", Some(ours))]).unwrap_err();
        assert!(matches!(e, GroupError::Ambiguous { count: 2, .. }), "{e}");

        let adopting = app(true);
        assert_eq!(
            choose(&adopting, grant, &[group("g1", None)]).unwrap(),
            Choice::Adopt("g1".into())
        );
        let other = "catalogsync:team-b/slack/grant";
        let e = choose(&adopting, grant, &[group("g1", Some(other))]).unwrap_err();
        assert!(e.to_string().contains(other), "{e}");
    }

    #[test]
    fn a_known_id_stands_while_name_and_mark_do() {
        let (name, mark) = ("admins", "catalogsync:team-a/slack/grant");
        let g = |d: &str, e: Option<&str>| json!({"id": "g1", "displayName": d, "externalId": e});
        assert!(is_still_ours(&g("admins", Some(mark)), name, mark));
        assert!(is_still_ours(&g("Admins", Some(mark)), name, mark));
        assert!(
            !is_still_ours(&g("admins", None), name, mark),
            "mark removed"
        );
        assert!(!is_still_ours(&g("admins", Some("hr-1")), name, mark));
        assert!(!is_still_ours(&g("ops", Some(mark)), name, mark), "renamed");
    }
}
