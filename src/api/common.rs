//! Types shared by several kinds: secret references, auth, limits, counts.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every catalogsync kind.
pub const GROUP: &str = "catalogsync.io";

/// A reference to one key of a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as the referring object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A reference to a whole Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret, in the same namespace as the referring object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A reference to another catalogsync object in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalRef {
    /// Name of the referenced object, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Bearer-token authentication.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BearerTokenAuth {
    /// The Secret key holding the token.
    pub secret_ref: SecretKeyRef,
}

/// HTTP basic authentication.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuth {
    /// A Secret with the keys `username` and `password`.
    pub secret_ref: SecretRef,
}

/// OAuth 2.0 client-credentials grant (RFC 6749 section 4.4).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2ClientCredentialsAuth {
    /// The token endpoint: `https://` unless the connection is `insecure`.
    #[serde(rename = "tokenURL")]
    #[schemars(length(max = 2048), extend("x-kubernetes-validations" = url_rules()))]
    pub token_url: String,
    /// A Secret with the keys `clientId` and `clientSecret`.
    pub secret_ref: SecretRef,
    /// Scopes to request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub scopes: Vec<String>,
}

/// How to authenticate to a SCIM service provider. Exactly one method must be set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "[has(self.bearerToken), has(self.basic), has(self.oauth2ClientCredentials)].filter(x, x).size() == 1",
    "message": "exactly one auth method must be set: bearerToken, basic or oauth2ClientCredentials"
}]))]
pub struct Auth {
    /// A bearer token read from a Secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<BearerTokenAuth>,
    /// Username and password read from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuth>,
    /// OAuth 2.0 client credentials read from a Secret.
    #[serde(
        default,
        rename = "oauth2ClientCredentials",
        skip_serializing_if = "Option::is_none"
    )]
    pub oauth2_client_credentials: Option<OAuth2ClientCredentialsAuth>,
}

impl Auth {
    /// The names of the Secrets this auth reads, for watches and job env.
    pub fn secret_names(&self) -> Vec<&str> {
        let mut names = Vec::new();
        if let Some(b) = &self.bearer_token {
            names.push(b.secret_ref.name.as_str());
        }
        if let Some(b) = &self.basic {
            names.push(b.secret_ref.name.as_str());
        }
        if let Some(o) = &self.oauth2_client_credentials {
            names.push(o.secret_ref.name.as_str());
        }
        names
    }
}

/// TLS settings for a SCIM endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tls {
    /// A Secret key holding PEM CA certificates to trust in addition to the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
}

/// A SCIM 2.0 endpoint: base URL, credentials and TLS.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.url.startsWith('https://') || (has(self.insecure) && self.insecure)",
    "message": "url must start with https:// (credentials travel only over TLS); plain http:// needs spec.connection.insecure: true, for tests and demos only"
}, {
    "rule": "!has(self.auth.oauth2ClientCredentials) || self.auth.oauth2ClientCredentials.tokenURL.startsWith('https://') || (has(self.insecure) && self.insecure)",
    "message": "auth.oauth2ClientCredentials.tokenURL must start with https:// (the client secret travels there); plain http:// needs spec.connection.insecure: true, for tests and demos only"
}]))]
pub struct Connection {
    /// SCIM 2.0 base URL (the one that `/Users` and `/ServiceProviderConfig` are relative to).
    /// `https://` unless `insecure` is set; no user info, no fragment.
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

/// Admission rules of every URL that credentials are sent to.
pub fn url_rules() -> serde_json::Value {
    serde_json::json!([{
        "rule": "self.startsWith('https://') || self.startsWith('http://')",
        "message": "must start with https:// or http://"
    }, {
        "rule": "!self.matches('^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*@')",
        "message": "must not carry user info (user:password@host): credentials belong in a Secret"
    }, {
        "rule": "!self.contains('#')",
        "message": "must not have a fragment (#...)"
    }])
}

/// Why credentials must not be sent to `url` (or the OAuth2 token URL of `auth`) — the
/// admission rules again, for objects stored before them: plain http without the
/// `insecure` opt-in, user info, a fragment. None when they may.
pub fn url_refusal(url: &str, auth: &Auth, insecure: bool) -> Option<String> {
    let token_url = auth.oauth2_client_credentials.as_ref().map(|o| {
        (
            "auth.oauth2ClientCredentials.tokenURL",
            o.token_url.as_str(),
        )
    });
    std::iter::once(("url", url))
        .chain(token_url)
        .find_map(|(field, u)| {
            let lower = u.to_ascii_lowercase();
            let allowed = lower.starts_with("https://") || (insecure && lower.starts_with("http://"));
            let authority = u.split_once("://").map_or("", |(_, rest)| {
                rest.split(['/', '?', '#']).next().unwrap_or_default()
            });
            if !allowed {
                Some(format!(
                    "{field} {u:?} is not https://: credentials travel only over TLS (set insecure: true for tests and demos only)"
                ))
            } else if authority.contains('@') {
                Some(format!("{field} must not carry user info (user:password@host)"))
            } else if u.contains('#') {
                Some(format!("{field} {u:?} must not have a fragment"))
            } else {
                None
            }
        })
}

/// What a run does when its plan exceeds a limit.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum WhenExceeded {
    /// Apply nothing; the run ends `LimitExceeded` with the planned and allowed numbers.
    #[default]
    Abort,
    /// Apply exactly up to the limit, never one more, then end `LimitExceeded`.
    ApplyUpToLimit,
}

/// Maximum numbers of creates and deletes a run may make. Absent = no limit.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Maximum number of objects created in one run (users in the identity domain for an
    /// import, accounts in the app for provisioning). Absent = no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_creates: Option<i64>,
    /// Maximum number of deletes in one run: records removed, users deactivated or deleted
    /// (import); accounts deactivated or deleted (provisioning). Absent = no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_deletes: Option<i64>,
    /// Maximum number of creates and deletes together in one run (the seed's own
    /// "maximum number of changes"). Absent = no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_changes: Option<i64>,
    /// What to do when the plan exceeds a limit.
    #[serde(default)]
    pub when_exceeded: WhenExceeded,
}

/// Progress of an active run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Items processed so far in the current stage.
    pub processed: i64,
    /// Items to process in the current stage.
    pub total: i64,
    /// processed / total, in percent (0–100).
    pub percent: i32,
}

impl Progress {
    pub fn new(processed: u64, total: u64) -> Self {
        // An empty stage is complete.
        let percent = (processed.min(total) * 100)
            .checked_div(total)
            .unwrap_or(100) as i32;
        Progress {
            processed: processed as i64,
            total: total as i64,
            percent,
        }
    }
}

/// The counts a run reports. Import runs fill the first part, provisioning runs the second.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Accounts listed in the app.
    #[serde(default)]
    pub app_accounts: i64,
    /// Users listed in the identity domain.
    #[serde(default)]
    pub domain_users: i64,
    /// Accounts already recorded (linked) before this run.
    #[serde(default)]
    pub already_linked: i64,
    /// Accounts linked (recorded) by this run: an exact match, a Provision adoption, or a
    /// create that met the same user.
    #[serde(default)]
    pub linked: i64,
    /// Objects created by this run: IAM users for unmatched accounts (Import), accounts
    /// for granted users (Provision).
    #[serde(default)]
    pub created: i64,
    /// Objects updated by this run.
    #[serde(default)]
    pub updated: i64,
    /// Records removed, users deactivated or deleted, or accounts deactivated or deleted.
    #[serde(default)]
    pub deleted: i64,
    /// Accounts with no matching user, left alone.
    #[serde(default)]
    pub unmatched: i64,
    /// Accounts that match several users: reported, never acted on.
    #[serde(default)]
    pub disputed: i64,
    /// Accounts matched to a user while `onExactMatch` is Ignore, or (Provision) matched
    /// to a user who is neither granted nor recorded: left alone.
    #[serde(default)]
    pub ignored: i64,
    /// Inactive accounts that are not linked: never linked.
    #[serde(default)]
    pub inactive: i64,
    /// Accounts of recorded users no longer granted: never re-linked by Import; Provision
    /// deactivates or deletes them.
    #[serde(default)]
    pub revoked: i64,
    /// Accounts whose planned write was not made: a Plan run, a limit, or a stop.
    #[serde(default)]
    pub skipped: i64,
    /// Accounts whose write failed.
    #[serde(default)]
    pub failed: i64,
    /// Granted users without a record and without an account: they wait for Provision and
    /// are never taken for deleted.
    #[serde(default)]
    pub pending_provisioning: i64,
    /// Users without an account whose write failed: an Import's deletion, a Provision's
    /// create.
    #[serde(default)]
    pub failed_records: i64,
    /// Provisioning: changes the plan found but did not make because
    /// `spec.provisioning.operations` (or the app's catalog entry) does not allow them, e.g.
    /// a drifted account with Update not selected.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub not_allowed: i64,
    /// Grant-group members that are no listed user: a member referenced by something else
    /// than its id (some servers put the userName in `members[].value`), a nested group, or
    /// a user deleted or missed by the listing. Nothing is done for them, and the run says
    /// so in a warning: they never make a run look clean.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unresolved_members: i64,
}

impl Counts {
    /// The account counts summed: every app account lands in exactly one of them, so this
    /// equals `appAccounts`. A Provision's `created` accounts are new, not listed ones.
    pub fn accounted(&self, direction: super::Direction) -> i64 {
        let created = match direction {
            super::Direction::Import => self.created,
            super::Direction::Provision => 0,
        };
        self.already_linked
            + self.linked
            + created
            + self.unmatched
            + self.disputed
            + self.ignored
            + self.inactive
            + self.revoked
            + self.skipped
            + self.failed
    }
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// The creates and deletes a plan contains, counted against the limits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedCounts {
    /// Creates the plan contains.
    pub creates: i64,
    /// Deletes the plan contains.
    pub deletes: i64,
    /// Links the plan contains (not limited).
    #[serde(default)]
    pub links: i64,
    /// Updates the plan contains (not limited).
    #[serde(default)]
    pub updates: i64,
}

/// Adds `x-kubernetes-list-type: map` keyed by `type` to a condition list, so that
/// server-side apply merges conditions by type.
pub fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["type"]),
    );
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oauth(token_url: &str) -> Auth {
        Auth {
            oauth2_client_credentials: Some(OAuth2ClientCredentialsAuth {
                token_url: token_url.into(),
                secret_ref: SecretRef { name: "s".into() },
                scopes: vec![],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn credentials_go_only_over_tls_unless_opted_out() {
        let none = Auth::default();
        assert_eq!(url_refusal("https://iam.corp/scim/v2", &none, false), None);
        let why = url_refusal("http://iam.corp/scim/v2", &none, false).unwrap();
        assert!(
            why.contains("not https") && why.contains("insecure"),
            "{why}"
        );
        assert_eq!(url_refusal("http://iam.corp/scim/v2", &none, true), None);
        assert!(url_refusal("ftp://iam.corp", &none, true).is_some());
        let token = oauth("http://iam.corp/token");
        let why = url_refusal("https://iam.corp", &token, false).unwrap();
        assert!(why.contains("tokenURL"), "{why}");
        assert_eq!(url_refusal("https://iam.corp", &token, true), None);
    }

    #[test]
    fn user_info_and_fragments_are_refused() {
        let none = Auth::default();
        let why = url_refusal("https://u:pw@iam.corp/scim", &none, false).unwrap();
        assert!(why.contains("user info") && !why.contains("pw"), "{why}");
        assert!(url_refusal("https://iam.corp/scim#x", &none, false).is_some());
        assert_eq!(url_refusal("https://iam.corp/a@b", &none, false), None);
    }
}
