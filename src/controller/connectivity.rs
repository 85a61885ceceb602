//! Connectivity checks against SCIM service providers (the identity domain, an
//! app) and the grant group, with stable condition reasons, plus a small cache
//! so that frequent reconciles (run progress) do not probe the providers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::Client;
use serde_json::json;

use crate::api::{Auth, Capabilities, Tls};
use crate::credentials::{self, CredentialsError};
use crate::scim::{self, ClientOptions, ErrorKind, RetryPolicy, ScimClient, ScimError, Timeouts};

/// Stable reasons of a failed check.
pub const CONNECTIVITY_FAILED: &str = "ConnectivityFailed";
pub const UNAUTHORIZED: &str = "Unauthorized";
pub const SECRET_NOT_FOUND: &str = "SecretNotFound";

/// Why a check failed: a stable reason and the precise cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
}

impl Failure {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Failure {
            reason,
            message: message.into(),
        }
    }
}

/// Maps a credentials error: a missing Secret or key is the user's to fix;
/// an API error is ours to retry.
fn credentials_failure(e: CredentialsError) -> Result<Failure, kube::Error> {
    match e {
        CredentialsError::Api { source, .. } => Err(source),
        e @ (CredentialsError::SecretNotFound(_) | CredentialsError::KeyMissing { .. }) => {
            Ok(Failure::new(SECRET_NOT_FOUND, e.to_string()))
        }
        e => Ok(Failure::new(SECRET_NOT_FOUND, e.to_string())),
    }
}

/// Maps a SCIM error to a stable reason.
pub fn scim_failure(e: &ScimError) -> Failure {
    match e.kind() {
        Some(ErrorKind::Unauthorized | ErrorKind::Forbidden) => {
            Failure::new(UNAUTHORIZED, e.to_string())
        }
        _ => Failure::new(CONNECTIVITY_FAILED, e.to_string()),
    }
}

/// A SCIM client for an endpoint whose credentials live in Secrets of `ns`.
/// `Ok(Err(_))` is a failure to report; `Err(_)` an API error to retry.
pub async fn client_for(
    kube: &Client,
    ns: &str,
    url: &str,
    auth: &Auth,
    tls: Option<&Tls>,
) -> Result<Result<ScimClient, Failure>, kube::Error> {
    let resolved = match credentials::from_secrets(kube, ns, auth, tls).await {
        Ok(r) => r,
        Err(e) => return credentials_failure(e).map(Err),
    };
    let mut opts = ClientOptions::new(url, resolved.credentials);
    opts.ca_pem = resolved.ca_pem.map(String::into_bytes);
    // A check answers quickly or reports why; the Job does the patient work.
    opts.timeouts = Timeouts {
        connect: Duration::from_secs(5),
        request: Duration::from_secs(20),
    };
    opts.retry = RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(1),
        max_retry_after: Duration::from_secs(5),
    };
    Ok(
        ScimClient::with_options(opts)
            .map_err(|e| Failure::new(CONNECTIVITY_FAILED, e.to_string())),
    )
}

/// GETs the ServiceProviderConfig, then one user: the connectivity and
/// credentials test. Many providers serve the ServiceProviderConfig without
/// authentication (RFC 7644 section 4), so only the second request proves the
/// credentials.
pub async fn probe(client: &ScimClient) -> Result<Capabilities, Failure> {
    let caps = client.capabilities().await.map_err(|e| scim_failure(&e))?;
    client
        .send(
            reqwest::Method::GET,
            "/Users",
            &[("count", "1".to_string()), ("attributes", "id".to_string())],
            None,
            None,
        )
        .await
        .map_err(|e| scim_failure(&e))?;
    Ok(Capabilities {
        patch: caps.patch,
        bulk: caps.bulk,
        max_bulk_operations: caps.max_bulk_operations as i64,
        filter: caps.filter,
        max_results: caps.max_results as i64,
        etag: caps.etag,
        sort: caps.sort,
    })
}

fn scim_quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Makes sure the grant group exists in the identity domain; returns its id.
/// `known_id` (from status) is checked first, so a steady state costs one GET.
pub async fn ensure_group(
    client: &ScimClient,
    display_name: &str,
    known_id: Option<&str>,
) -> Result<String, ScimError> {
    if let Some(id) = known_id
        && let Some(g) = client
            .get(scim::model::GROUPS, id, &["displayName"])
            .await?
        && g.get("displayName").and_then(|v| v.as_str()) == Some(display_name)
    {
        return Ok(id.to_string());
    }
    let filter = format!("displayName eq \"{}\"", scim_quote(display_name));
    let find = || async {
        let (groups, _) = client
            .list(scim::model::GROUPS, &["displayName"], Some(&filter))
            .await?;
        Ok::<_, ScimError>(
            groups
                .iter()
                .filter(|g| g.get("displayName").and_then(|v| v.as_str()) == Some(display_name))
                .find_map(|g| g.get("id").and_then(|v| v.as_str()).map(String::from)),
        )
    };
    if let Some(id) = find().await? {
        return Ok(id);
    }
    let body = json!({
        "schemas": [scim::model::GROUP_SCHEMA],
        "displayName": display_name,
    });
    match client.create(scim::model::GROUPS, &body).await {
        Ok(g) => g
            .get("id")
            .and_then(|v| v.as_str())
            .map(String::from)
            .ok_or_else(|| ScimError::Protocol("created group has no id".into())),
        // Created concurrently by someone else: use theirs.
        Err(e) if e.is_uniqueness() => find().await?.ok_or_else(|| {
            ScimError::Protocol(format!(
                "group {display_name:?} conflicts but cannot be found"
            ))
        }),
        Err(e) => Err(e),
    }
}

/// Results of recent checks, keyed by object, valid while the object's inputs
/// (the fingerprint) are unchanged, for at most `ttl`. Secret changes
/// invalidate entries explicitly.
pub struct ProbeCache<T> {
    ttl: Duration,
    entries: Mutex<HashMap<String, (String, Instant, T)>>,
}

impl<T: Clone> ProbeCache<T> {
    pub fn new(ttl: Duration) -> Self {
        ProbeCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, key: &str, fingerprint: &str) -> Option<T> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(f, at, _)| f == fingerprint && at.elapsed() < self.ttl)
            .map(|(_, _, v)| v.clone())
    }

    pub fn put(&self, key: &str, fingerprint: &str, value: T) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.into(), (fingerprint.into(), Instant::now(), value));
    }

    pub fn invalidate(&self, key: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Time left before the entry must be rechecked.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_respects_fingerprint_ttl_and_invalidation() {
        let c = ProbeCache::new(Duration::from_secs(60));
        c.put("ns/a", "gen1", 1);
        assert_eq!(c.get("ns/a", "gen1"), Some(1));
        assert_eq!(c.get("ns/a", "gen2"), None, "changed inputs recheck");
        c.invalidate("ns/a");
        assert_eq!(c.get("ns/a", "gen1"), None);
        let expired = ProbeCache::new(Duration::ZERO);
        expired.put("k", "f", 1);
        assert_eq!(expired.get("k", "f"), None);
    }

    #[test]
    fn missing_secret_is_reported_not_retried() {
        let f = credentials_failure(CredentialsError::SecretNotFound("corp-iam".into())).unwrap();
        assert_eq!(f.reason, SECRET_NOT_FOUND);
        assert!(f.message.contains("corp-iam"));
        let f = credentials_failure(CredentialsError::KeyMissing {
            secret: "corp-iam".into(),
            key: "token".into(),
        })
        .unwrap();
        assert!(f.message.contains("token"));
    }
}
