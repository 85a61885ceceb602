//! SCIM 2.0 wire types (RFC 7643 / 7644 / 9865). Resources stay
//! `serde_json::Value` in the client so that extension attributes survive;
//! `User` and `Group` are typed conveniences that keep unknown attributes.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE_USER_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const BULK_REQUEST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// The endpoints of the two core resource types.
pub const USERS: &str = "Users";
pub const GROUPS: &str = "Groups";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Supported {
    #[serde(default)]
    pub supported: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkConfig {
    #[serde(default)]
    pub supported: bool,
    #[serde(default)]
    pub max_operations: Option<u64>,
    #[serde(default)]
    pub max_payload_size: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FilterConfig {
    #[serde(default)]
    pub supported: bool,
    #[serde(default)]
    pub max_results: Option<u64>,
}

/// RFC 9865 §4 `pagination` of the ServiceProviderConfig.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaginationConfig {
    #[serde(default)]
    pub cursor: bool,
    #[serde(default)]
    pub index: bool,
    #[serde(default)]
    pub default_pagination_method: Option<String>,
    #[serde(default)]
    pub default_page_size: Option<u64>,
    #[serde(default)]
    pub max_page_size: Option<u64>,
    #[serde(default)]
    pub cursor_timeout: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationScheme {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceProviderConfig {
    #[serde(default)]
    pub patch: Supported,
    #[serde(default)]
    pub bulk: BulkConfig,
    #[serde(default)]
    pub filter: FilterConfig,
    #[serde(default)]
    pub sort: Supported,
    #[serde(default)]
    pub etag: Supported,
    #[serde(default)]
    pub change_password: Supported,
    #[serde(default)]
    pub pagination: Option<PaginationConfig>,
    #[serde(default)]
    pub authentication_schemes: Vec<AuthenticationScheme>,
}

/// What the engine needs to know about a server, flat (the shape of
/// `IdentityDomain.status.capabilities` in docs/API.md, plus cursor).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    pub patch: bool,
    pub bulk: bool,
    pub max_bulk_operations: u64,
    pub max_bulk_payload_size: u64,
    pub filter: bool,
    pub max_results: u64,
    pub etag: bool,
    pub sort: bool,
    pub cursor: bool,
}

/// Page size used when a server advertises no limit (RFC 7644 leaves it open;
/// most services cap pages between 100 and 1000).
pub const DEFAULT_PAGE_SIZE: u64 = 100;

impl ServiceProviderConfig {
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            patch: self.patch.supported,
            bulk: self.bulk.supported,
            max_bulk_operations: self.bulk.max_operations.unwrap_or(0),
            max_bulk_payload_size: self.bulk.max_payload_size.unwrap_or(0),
            filter: self.filter.supported,
            max_results: self.filter.max_results.unwrap_or(0),
            etag: self.etag.supported,
            sort: self.sort.supported,
            cursor: self.supports_cursor(),
        }
    }

    pub fn supports_cursor(&self) -> bool {
        self.pagination.as_ref().is_some_and(|p| p.cursor)
    }

    /// The largest page the server will serve: the smaller of
    /// `filter.maxResults` and `pagination.maxPageSize`, else [`DEFAULT_PAGE_SIZE`].
    pub fn max_page_size(&self) -> u64 {
        let bounds = [
            self.filter.max_results,
            self.pagination.as_ref().and_then(|p| p.max_page_size),
        ];
        bounds
            .into_iter()
            .flatten()
            .filter(|b| *b > 0)
            .min()
            .unwrap_or(DEFAULT_PAGE_SIZE)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListResponse {
    #[serde(default)]
    pub total_results: Option<u64>,
    #[serde(default)]
    pub items_per_page: Option<u64>,
    #[serde(default)]
    pub start_index: Option<u64>,
    #[serde(default, rename = "Resources")]
    pub resources: Vec<Value>,
    #[serde(default)]
    pub next_cursor: Option<String>,
    #[serde(default)]
    pub previous_cursor: Option<String>,
}

/// The SCIM error body (RFC 7644 §3.12). `status` is a string in the RFC but
/// some servers send a number, so both are accepted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorResponse {
    #[serde(default, deserialize_with = "string_or_number")]
    pub status: Option<String>,
    #[serde(default)]
    pub scim_type: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatchOpKind {
    Add,
    Remove,
    Replace,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchOperation {
    pub op: PatchOpKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchOp {
    pub schemas: Vec<String>,
    #[serde(rename = "Operations")]
    pub operations: Vec<PatchOperation>,
}

impl PatchOp {
    pub fn new(operations: Vec<PatchOperation>) -> Self {
        PatchOp {
            schemas: vec![PATCH_OP_SCHEMA.to_string()],
            operations,
        }
    }

    pub fn add(path: impl Into<String>, value: Value) -> PatchOperation {
        PatchOperation {
            op: PatchOpKind::Add,
            path: Some(path.into()),
            value: Some(value),
        }
    }

    pub fn replace(path: impl Into<String>, value: Value) -> PatchOperation {
        PatchOperation {
            op: PatchOpKind::Replace,
            path: Some(path.into()),
            value: Some(value),
        }
    }

    pub fn remove(path: impl Into<String>) -> PatchOperation {
        PatchOperation {
            op: PatchOpKind::Remove,
            path: Some(path.into()),
            value: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Email {
    pub value: String,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Name {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formatted: Option<String>,
}

/// A SCIM User; attributes not modelled here are kept in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[serde(default = "user_schemas")]
    pub schemas: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    pub user_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<Email>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn user_schemas() -> Vec<String> {
    vec![USER_SCHEMA.to_string()]
}

impl User {
    pub fn new(user_name: impl Into<String>) -> Self {
        User {
            schemas: user_schemas(),
            user_name: user_name.into(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// A SCIM Group; attributes not modelled here are kept in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    #[serde(default = "group_schemas")]
    pub schemas: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Member>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn group_schemas() -> Vec<String> {
    vec![GROUP_SCHEMA.to_string()]
}

impl Group {
    pub fn new(display_name: impl Into<String>) -> Self {
        Group {
            schemas: group_schemas(),
            display_name: display_name.into(),
            ..Default::default()
        }
    }
}

/// `id` of a resource.
pub fn resource_id(resource: &Value) -> Option<&str> {
    resource.get("id").and_then(Value::as_str)
}

/// `meta.version` (the ETag) of a resource.
pub fn resource_version(resource: &Value) -> Option<&str> {
    resource
        .get("meta")
        .and_then(|m| m.get("version"))
        .and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn page_size_is_the_smallest_advertised_bound() {
        let mut spc: ServiceProviderConfig = serde_json::from_value(json!({
            "filter": {"supported": true, "maxResults": 1000},
            "pagination": {"cursor": true, "index": true, "maxPageSize": 500}
        }))
        .unwrap();
        assert_eq!(spc.max_page_size(), 500);
        assert!(spc.capabilities().cursor);
        spc.pagination = None;
        assert_eq!(spc.max_page_size(), 1000);
        spc.filter.max_results = None;
        assert_eq!(spc.max_page_size(), DEFAULT_PAGE_SIZE);
    }

    #[test]
    fn error_status_string_or_number() {
        let a: ErrorResponse =
            serde_json::from_value(json!({"status": "409", "scimType": "uniqueness"})).unwrap();
        let b: ErrorResponse = serde_json::from_value(json!({"status": 409})).unwrap();
        assert_eq!(a.status.as_deref(), Some("409"));
        assert_eq!(b.status.as_deref(), Some("409"));
        assert_eq!(a.scim_type.as_deref(), Some("uniqueness"));
    }

    #[test]
    fn user_keeps_unknown_attributes() {
        let v = json!({"userName": "a", "nickName": "x", ENTERPRISE_USER_SCHEMA: {"employeeNumber": "1"}});
        let u: User = serde_json::from_value(v).unwrap();
        assert_eq!(u.schemas, vec![USER_SCHEMA]);
        let back = serde_json::to_value(&u).unwrap();
        assert_eq!(back["nickName"], "x");
        assert_eq!(back[ENTERPRISE_USER_SCHEMA]["employeeNumber"], "1");
        let patch = serde_json::to_value(PatchOp::new(vec![PatchOp::remove(
            "members[value eq \"1\"]",
        )]))
        .unwrap();
        assert_eq!(
            patch["Operations"][0],
            json!({"op": "remove", "path": "members[value eq \"1\"]"})
        );
    }
}
