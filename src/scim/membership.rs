//! Group membership: reading a group's member ids, and adding or removing
//! members in batched PATCH requests.

use crate::scim::client::ScimClient;
use crate::scim::error::{ErrorKind, Result, ScimError};
use crate::scim::model::{GROUPS, PATCH_OP_SCHEMA, PatchOp, PatchOpKind, PatchOperation};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// How [`ScimClient::remove_members`] removes members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemberRemoval {
    /// `ReplaceWithEtag` when the server advertises ETags, else `Filter`.
    #[default]
    Auto,
    /// `remove` operations with `members[value eq "a" or value eq "b" …]` paths.
    /// Costs grow with members × values on servers that evaluate the filter
    /// per member (scim2-server: ~7.8 s for 100 values on a 10,000-member group).
    Filter,
    /// Read the members, then `replace` them without the removed ones under
    /// `If-Match`, re-reading on 412. Costs about one read plus one PATCH.
    ReplaceWithEtag,
}

/// The PatchOp that adds `ids` to `members` as users (`"type": "User"`, RFC 7643 section
/// 4.2, so that providers that also nest groups need not guess), `per_op` values per
/// operation, serialized straight from the ids: as a `Value` every `{"value": id}` is a map of its own, tens of
/// megabytes for a moment per 10,000-value request.
fn members_add_body(ids: &[&str], per_op: usize) -> Result<Vec<u8>> {
    #[derive(Serialize)]
    struct Member<'a> {
        value: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
    }
    #[derive(Serialize)]
    struct Op<'a> {
        op: PatchOpKind,
        path: &'static str,
        value: Vec<Member<'a>>,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        schemas: [&'static str; 1],
        #[serde(rename = "Operations")]
        operations: Vec<Op<'a>>,
    }
    let body = Body {
        schemas: [PATCH_OP_SCHEMA],
        operations: ids
            .chunks(per_op)
            .map(|c| Op {
                op: PatchOpKind::Add,
                path: "members",
                value: c
                    .iter()
                    .map(|id| Member {
                        value: id,
                        kind: "User",
                    })
                    .collect(),
            })
            .collect(),
    };
    serde_json::to_vec(&body).map_err(|e| ScimError::Config(format!("membership PATCH: {e}")))
}

/// The PatchOp that replaces `members` with `keep` (or removes them all when `keep` is
/// empty), serialized straight from the ids like [`members_add_body`]: a 100,000-member
/// group as `Value`s, twice (the list, then the PatchOp), was ~70 MB for a moment.
fn members_replace_body(keep: &[&str]) -> Result<Vec<u8>> {
    #[derive(Serialize)]
    struct Member<'a> {
        value: &'a str,
    }
    #[derive(Serialize)]
    struct Op<'a> {
        op: PatchOpKind,
        path: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<Vec<Member<'a>>>,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        schemas: [&'static str; 1],
        #[serde(rename = "Operations")]
        operations: [Op<'a>; 1],
    }
    let op = if keep.is_empty() {
        Op {
            op: PatchOpKind::Remove,
            path: "members",
            value: None,
        }
    } else {
        Op {
            op: PatchOpKind::Replace,
            path: "members",
            value: Some(keep.iter().map(|id| Member { value: id }).collect()),
        }
    };
    let body = Body {
        schemas: [PATCH_OP_SCHEMA],
        operations: [op],
    };
    serde_json::to_vec(&body).map_err(|e| ScimError::Config(format!("membership PATCH: {e}")))
}

fn unique_ids(ids: &[String]) -> Vec<&str> {
    let mut seen = HashSet::new();
    ids.iter()
        .map(String::as_str)
        .filter(|id| seen.insert(*id))
        .collect()
}

impl ScimClient {
    /// The member ids of a group and its version, `None` if the group does not exist.
    pub async fn group_members(
        &self,
        group_id: &str,
    ) -> Result<Option<(Vec<String>, Option<String>)>> {
        let path = Self::resource_path(GROUPS, group_id);
        let query = vec![("attributes", "members,meta".to_string())];
        let resp = match self.send(Method::GET, &path, &query, None, None).await {
            Ok(r) => r,
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        // Typed, not a `Value`: a 100,000-member group as a `Value` is 100,000 maps,
        // tens of megabytes for a moment, where only the ids are needed.
        #[derive(Deserialize)]
        struct Member {
            value: Option<String>,
        }
        #[derive(Deserialize)]
        struct Meta {
            version: Option<String>,
        }
        #[derive(Deserialize)]
        struct GroupMembers {
            #[serde(default)]
            members: Option<Vec<Member>>,
            meta: Option<Meta>,
        }
        let group: GroupMembers = resp.json(&format!("GET {path}"))?;
        let members = group
            .members
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.value)
            .collect();
        let version = resp
            .etag
            .clone()
            .or_else(|| group.meta.and_then(|m| m.version));
        Ok(Some((members, version)))
    }

    /// Adds members to a group: many values per operation, many operations
    /// per request (a PATCH costs about the same whatever it adds).
    /// Returns the number of PATCH requests sent.
    pub async fn add_members(&self, group_id: &str, member_ids: &[String]) -> Result<usize> {
        let ids = unique_ids(member_ids);
        let opts = &self.inner.opts;
        let per_op = opts.member_values_per_operation.max(1);
        let per_request = per_op * opts.member_operations_per_request.max(1);
        let path = Self::resource_path(GROUPS, group_id);
        let mut requests = 0;
        for chunk in ids.chunks(per_request) {
            let body = members_add_body(chunk, per_op)?;
            // The answer (204, or the whole group on some servers) is not needed.
            self.send_bytes(Method::PATCH, &path, &[], Some(body), None)
                .await?;
            requests += 1;
        }
        Ok(requests)
    }

    /// Removes members from a group, by [`MemberRemoval`]. Ids that are not
    /// members are ignored. Returns the number of PATCH requests sent.
    pub async fn remove_members(&self, group_id: &str, member_ids: &[String]) -> Result<usize> {
        let ids = unique_ids(member_ids);
        if ids.is_empty() {
            return Ok(0);
        }
        let use_etag = match self.inner.opts.member_removal {
            MemberRemoval::Filter => false,
            MemberRemoval::ReplaceWithEtag => true,
            MemberRemoval::Auto => {
                let caps = self.capabilities().await?;
                caps.etag && caps.patch
            }
        };
        if use_etag {
            self.remove_members_by_replace(group_id, &ids).await
        } else {
            self.remove_members_by_filter(group_id, &ids).await
        }
    }

    async fn remove_members_by_filter(&self, group_id: &str, ids: &[&str]) -> Result<usize> {
        // Filters grow with values; 100 per path keeps URLs of errors and
        // server-side filter parsing bounded.
        const VALUES_PER_FILTER: usize = 100;
        let opts = &self.inner.opts;
        let per_op = VALUES_PER_FILTER.min(opts.member_values_per_operation);
        // As many values per request as an add carries, in filter-sized operations.
        let ops_per_request =
            (opts.member_values_per_operation * opts.member_operations_per_request / per_op).max(1);
        let ops: Vec<PatchOperation> = ids
            .chunks(per_op)
            .map(|chunk| {
                let filter = chunk
                    .iter()
                    .map(|id| format!("value eq {}", crate::scim::path::quote(id)))
                    .collect::<Vec<_>>()
                    .join(" or ");
                PatchOp::remove(format!("members[{filter}]"))
            })
            .collect();
        let mut requests = 0;
        for batch in ops.chunks(ops_per_request) {
            self.patch(GROUPS, group_id, &PatchOp::new(batch.to_vec()), None)
                .await?;
            requests += 1;
        }
        Ok(requests)
    }

    async fn remove_members_by_replace(&self, group_id: &str, ids: &[&str]) -> Result<usize> {
        const MAX_CONFLICTS: u32 = 5;
        let remove: HashSet<&str> = ids.iter().copied().collect();
        let mut requests = 0;
        for round in 1..=MAX_CONFLICTS {
            let Some((members, version)) = self.group_members(group_id).await? else {
                return Err(ScimError::Status {
                    method: "GET".into(),
                    path: Self::resource_path(GROUPS, group_id),
                    status: 404,
                    kind: ErrorKind::NotFound,
                    scim_type: None,
                    detail: "group not found".into(),
                });
            };
            let Some(version) = version else {
                // No version to guard the replace with: fall back to filters.
                return self.remove_members_by_filter(group_id, ids).await;
            };
            let keep: Vec<&str> = members
                .iter()
                .map(String::as_str)
                .filter(|m| !remove.contains(m))
                .collect();
            if keep.len() == members.len() {
                return Ok(requests);
            }
            let body = members_replace_body(&keep)?;
            drop(keep);
            requests += 1;
            // The answer (204, or the whole group on some servers) is not needed.
            let path = Self::resource_path(GROUPS, group_id);
            match self
                .send_bytes(Method::PATCH, &path, &[], Some(body), Some(&version))
                .await
            {
                Ok(_) => return Ok(requests),
                Err(e)
                    if e.kind() == Some(ErrorKind::PreconditionFailed) && round < MAX_CONFLICTS =>
                {
                    tracing::debug!(
                        group_id,
                        round,
                        "group changed meanwhile, re-reading members"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last round returns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn membership_body_is_the_patchop() {
        let body: Value =
            serde_json::from_slice(&members_add_body(&["a", "b", "c"], 2).unwrap()).unwrap();
        let expected = serde_json::to_value(PatchOp::new(vec![
            PatchOp::add(
                "members",
                json!([{"value": "a", "type": "User"}, {"value": "b", "type": "User"}]),
            ),
            PatchOp::add("members", json!([{"value": "c", "type": "User"}])),
        ]))
        .unwrap();
        assert_eq!(body, expected);
    }

    #[test]
    fn replace_body_is_the_patchop() {
        let body: Value =
            serde_json::from_slice(&members_replace_body(&["a", "b"]).unwrap()).unwrap();
        let expected = serde_json::to_value(PatchOp::new(vec![PatchOp::replace(
            "members",
            json!([{"value": "a"}, {"value": "b"}]),
        )]))
        .unwrap();
        assert_eq!(body, expected);
        let body: Value = serde_json::from_slice(&members_replace_body(&[]).unwrap()).unwrap();
        let expected =
            serde_json::to_value(PatchOp::new(vec![PatchOp::remove("members")])).unwrap();
        assert_eq!(body, expected);
    }
}
