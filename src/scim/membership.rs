//! Group membership: reading a group's member ids, and adding or removing
//! members in batched PATCH requests.

use crate::scim::client::ScimClient;
use crate::scim::error::{ErrorKind, Result, ScimError};
use crate::scim::model::{GROUPS, PATCH_OP_SCHEMA, PatchOp, PatchOpKind, PatchOperation};
use crate::scim::transport::RawResponse;
use bytes::Bytes;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
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

/// The PatchOp that replaces `members` with those of `members` not in `remove` (or
/// removes them all when none is kept), serialized straight from the borrowed ids into
/// a buffer of about its final size: at 100,000 members every copy or doubling of the
/// list costs megabytes of peak memory.
fn members_replace_body(members: &[Cow<'_, str>], remove: &HashSet<&str>) -> Result<Bytes> {
    #[derive(Serialize)]
    struct Member<'a> {
        value: &'a str,
    }
    /// The kept members as a sequence, without collecting them first.
    struct Kept<'a>(&'a [Cow<'a, str>], &'a HashSet<&'a str>);
    impl Serialize for Kept<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            s.collect_seq(self.iter().map(|value| Member { value }))
        }
    }
    impl<'a> Kept<'a> {
        fn iter(&self) -> impl Iterator<Item = &'a str> + use<'a, '_> {
            let remove = self.1;
            self.0
                .iter()
                .map(|m| m.as_ref())
                .filter(move |m| !remove.contains(m))
        }
    }
    #[derive(Serialize)]
    struct Op<'a> {
        op: PatchOpKind,
        path: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<Kept<'a>>,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        schemas: [&'static str; 1],
        #[serde(rename = "Operations")]
        operations: [Op<'a>; 1],
    }
    let kept = Kept(members, remove);
    let op = if kept.iter().next().is_none() {
        Op {
            op: PatchOpKind::Remove,
            path: "members",
            value: None,
        }
    } else {
        Op {
            op: PatchOpKind::Replace,
            path: "members",
            value: Some(kept),
        }
    };
    // `{"value":"…"},` per member, plus the envelope.
    let size = 128 + members.iter().map(|m| m.len() + 13).sum::<usize>();
    let mut buf = Vec::with_capacity(size);
    let body = Body {
        schemas: [PATCH_OP_SCHEMA],
        operations: [op],
    };
    serde_json::to_writer(&mut buf, &body)
        .map_err(|e| ScimError::Config(format!("membership PATCH: {e}")))?;
    Ok(Bytes::from(buf))
}

/// A group's members as its answer carries them, borrowed from the answer's bytes:
/// a 100,000-member group as owned strings or `Value`s is megabytes more for a moment.
#[derive(Deserialize)]
struct GroupMembers<'a> {
    #[serde(default, borrow)]
    members: Option<Vec<MemberRef<'a>>>,
    meta: Option<GroupVersion>,
}

#[derive(Deserialize)]
struct MemberRef<'a> {
    // A plain `Cow`, not `Option<Cow>`: serde borrows only the former. A member
    // without a value reads as "" and is skipped.
    #[serde(borrow, default)]
    value: Cow<'a, str>,
}

#[derive(Deserialize)]
struct GroupVersion {
    version: Option<String>,
}

impl<'a> GroupMembers<'a> {
    fn parse(resp: &'a RawResponse, what: &str) -> Result<Self> {
        serde_json::from_slice(&resp.body)
            .map_err(|e| ScimError::Protocol(format!("malformed JSON in {what}: {e}")))
    }

    /// The member ids, in the answer's order.
    fn ids(self) -> Vec<Cow<'a, str>> {
        self.members
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.value)
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// The group's version: the ETag header, else `meta.version`.
    fn version(&self, resp: &RawResponse) -> Option<String> {
        resp.etag
            .clone()
            .or_else(|| self.meta.as_ref().and_then(|m| m.version.clone()))
    }
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
        let Some(resp) = self.group_members_answer(group_id).await? else {
            return Ok(None);
        };
        let group = GroupMembers::parse(&resp, "GET group members")?;
        let version = group.version(&resp);
        let ids = group.ids().into_iter().map(Cow::into_owned).collect();
        Ok(Some((ids, version)))
    }

    /// The answer to reading a group's members and version, `None` if it does not exist.
    async fn group_members_answer(&self, group_id: &str) -> Result<Option<RawResponse>> {
        let path = Self::resource_path(GROUPS, group_id);
        let query = vec![("attributes", "members,meta".to_string())];
        match self.send(Method::GET, &path, &query, None, None).await {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
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
            let body = Bytes::from(members_add_body(chunk, per_op)?);
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
            let Some(resp) = self.group_members_answer(group_id).await? else {
                return Err(ScimError::Status {
                    method: "GET".into(),
                    path: Self::resource_path(GROUPS, group_id),
                    status: 404,
                    kind: ErrorKind::NotFound,
                    scim_type: None,
                    detail: "group not found".into(),
                });
            };
            let group = GroupMembers::parse(&resp, "GET group members")?;
            let Some(version) = group.version(&resp) else {
                // No version to guard the replace with: fall back to filters.
                return self.remove_members_by_filter(group_id, ids).await;
            };
            let members = group.ids();
            if !members.iter().any(|m| remove.contains(m.as_ref())) {
                return Ok(requests);
            }
            let body = members_replace_body(&members, &remove)?;
            // Only the body goes on: the read answer and its ids are freed before sending.
            drop(members);
            drop(resp);
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
        let members: Vec<Cow<str>> = ["a", "b", "c"].map(Cow::Borrowed).to_vec();
        let body: Value =
            serde_json::from_slice(&members_replace_body(&members, &HashSet::from(["b"])).unwrap())
                .unwrap();
        let expected = serde_json::to_value(PatchOp::new(vec![PatchOp::replace(
            "members",
            json!([{"value": "a"}, {"value": "c"}]),
        )]))
        .unwrap();
        assert_eq!(body, expected);
        let all = HashSet::from(["a", "b", "c"]);
        let body: Value =
            serde_json::from_slice(&members_replace_body(&members, &all).unwrap()).unwrap();
        let expected =
            serde_json::to_value(PatchOp::new(vec![PatchOp::remove("members")])).unwrap();
        assert_eq!(body, expected);
    }

    #[test]
    fn members_are_read_in_place_and_escaped_ones_owned() {
        let resp = RawResponse {
            status: 200,
            etag: None,
            body: Bytes::from_static(
                br#"{"members":[{"value":"a"},{"value":"b\"q"},{"display":"x"}],"meta":{"version":"W/\"3\""}}"#,
            ),
        };
        let group = GroupMembers::parse(&resp, "test").unwrap();
        assert_eq!(group.version(&resp).as_deref(), Some("W/\"3\""));
        let ids = group.ids();
        assert!(matches!(ids[0], Cow::Borrowed("a")));
        assert_eq!(ids[1], "b\"q");
        assert_eq!(ids.len(), 2);
    }
}
