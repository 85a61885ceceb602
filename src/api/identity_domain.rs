//! IdentityDomain: the IAM, a SCIM 2.0 service provider holding users and groups.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Auth, Tls, conditions_schema, url_rules};

/// An identity domain reached over SCIM 2.0.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "catalogsync.io",
    version = "v1alpha1",
    kind = "IdentityDomain",
    doc = "An identity domain (the IAM) reached over SCIM 2.0: its URL, credentials and TLS settings.",
    namespaced,
    status = "IdentityDomainStatus",
    shortname = "idd",
    category = "catalogsync",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".spec.url","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.url.startsWith('https://') || (has(self.insecure) && self.insecure)",
    "message": "url must start with https:// (credentials travel only over TLS); plain http:// needs spec.insecure: true, for tests and demos only"
}, {
    "rule": "!has(self.auth.oauth2ClientCredentials) || self.auth.oauth2ClientCredentials.tokenURL.startsWith('https://') || (has(self.insecure) && self.insecure)",
    "message": "auth.oauth2ClientCredentials.tokenURL must start with https:// (the client secret travels there); plain http:// needs spec.insecure: true, for tests and demos only"
}]))]
pub struct IdentityDomainSpec {
    /// SCIM 2.0 base URL of the identity domain. `https://` unless `insecure` is set; no
    /// user info, no fragment.
    #[schemars(length(max = 2048), extend("x-kubernetes-validations" = url_rules()))]
    pub url: String,
    /// How to authenticate. Credentials are only ever read from Secrets.
    pub auth: Auth,
    /// TLS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// Allow plain `http://` for `url` and the OAuth2 `tokenURL`: credentials then travel
    /// unencrypted. For tests and demos only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

/// What the identity domain's ServiceProviderConfig advertises.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// PATCH is supported.
    #[serde(default)]
    pub patch: bool,
    /// Bulk is supported.
    #[serde(default)]
    pub bulk: bool,
    /// Maximum operations in one Bulk request.
    #[serde(default)]
    pub max_bulk_operations: i64,
    /// Filtering is supported.
    #[serde(default)]
    pub filter: bool,
    /// Maximum resources the server returns in one list page.
    #[serde(default)]
    pub max_results: i64,
    /// ETags are supported.
    #[serde(default)]
    pub etag: bool,
    /// Sorting is supported.
    #[serde(default)]
    pub sort: bool,
}

/// Observed state of an IdentityDomain.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityDomainStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions: `Ready` (reasons Connected, ConnectivityFailed, Unauthorized, SecretNotFound,
    /// SecretNotAllowed, InsecureURL).
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// What the service provider supports, from its ServiceProviderConfig.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
}
