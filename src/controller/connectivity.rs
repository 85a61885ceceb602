//! Connectivity checks against SCIM service providers (the identity domain, an
//! app), with stable condition reasons, plus a small cache
//! so that frequent reconciles (run progress) do not probe the providers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Client;

use crate::api::{Auth, Capabilities, Tls};
use crate::cluster::credentials::{self, CredentialsError};
use crate::scim::{ClientOptions, ErrorKind, RetryPolicy, ScimClient, ScimError, Timeouts};

/// Stable reasons of a failed check.
pub const CONNECTIVITY_FAILED: &str = "ConnectivityFailed";
pub const UNAUTHORIZED: &str = "Unauthorized";
pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
/// A referenced Secret lacks the label that allows catalogsync to use it.
pub const SECRET_NOT_ALLOWED: &str = "SecretNotAllowed";
/// The URL would send credentials in clear text (or carries user info or a fragment).
pub const INSECURE_URL: &str = "InsecureURL";

/// Why a check failed: a stable reason and the precise cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
    /// The provider may only be busy (connection refused or timed out, 429,
    /// 5xx): an object that was fine is not failed at once for it.
    pub transient: bool,
}

impl Failure {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Failure {
            reason,
            message: message.into(),
            transient: false,
        }
    }

    /// The same failure with another reason and message (what it meant for the caller).
    pub fn restated(&self, reason: &'static str, message: impl Into<String>) -> Self {
        Failure {
            reason,
            message: message.into(),
            transient: self.transient,
        }
    }
}

/// Whether `e` may come from a busy provider rather than a wrong setting.
fn is_transient(e: &ScimError) -> bool {
    match e {
        ScimError::RetriesExhausted { last, .. } => is_transient(last),
        ScimError::Transport { source, .. } => source.is_connect() || source.is_timeout(),
        _ => matches!(e.kind(), Some(ErrorKind::RateLimited | ErrorKind::Server)),
    }
}

/// Maps a credentials error: a missing Secret or key is the user's to fix;
/// an API error is ours to retry.
fn credentials_failure(e: CredentialsError) -> Result<Failure, kube::Error> {
    match e {
        CredentialsError::Api { source, .. } => Err(source),
        e @ CredentialsError::NotAllowed(_) => Ok(Failure::new(SECRET_NOT_ALLOWED, e.to_string())),
        e @ (CredentialsError::SecretNotFound(_) | CredentialsError::KeyMissing { .. }) => {
            Ok(Failure::new(SECRET_NOT_FOUND, e.to_string()))
        }
        e => Ok(Failure::new(SECRET_NOT_FOUND, e.to_string())),
    }
}

/// Maps a SCIM error to a stable reason.
pub fn scim_failure(e: &ScimError) -> Failure {
    let mut f = match e.kind() {
        Some(ErrorKind::Unauthorized | ErrorKind::Forbidden) => {
            Failure::new(UNAUTHORIZED, e.to_string())
        }
        _ => Failure::new(CONNECTIVITY_FAILED, e.to_string()),
    };
    f.transient = is_transient(e);
    f
}

/// A SCIM client for an endpoint whose credentials live in Secrets of `ns`.
/// `Ok(Err(_))` is a failure to report; `Err(_)` an API error to retry.
async fn client_for(
    kube: &Client,
    Endpoint {
        ns,
        url,
        auth,
        tls,
        insecure,
        send_count,
    }: Endpoint<'_>,
) -> Result<Result<ScimClient, Failure>, kube::Error> {
    // Checked before any Secret is read: admission does too, but not for objects stored before.
    if let Some(why) = crate::api::url_refusal(url, auth, insecure) {
        return Ok(Err(Failure::new(INSECURE_URL, why)));
    }
    let resolved = match credentials::from_secrets(kube, ns, auth, tls).await {
        Ok(r) => r,
        Err(e) => return credentials_failure(e).map(Err),
    };
    let mut opts = ClientOptions::new(url, resolved.credentials);
    opts.ca_pem = resolved.ca_pem.map(String::into_bytes);
    opts.send_count = send_count;
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
    let mut query = vec![("attributes", "id".to_string())];
    if client.sends_count() {
        query.push(("count", "1".to_string()));
    }
    client
        .send(reqwest::Method::GET, "/Users", &query, None, None)
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

/// How long a transient failure of something that worked is reported as the
/// last success: two failure rechecks (`FAILURE_RECHECK`) fit in it.
pub const TRANSIENT_GRACE: Duration = Duration::from_secs(75);

/// Results of recent checks, keyed by object, valid while the object's inputs
/// (the fingerprint) are unchanged, for at most `ttl`. Secret changes
/// invalidate entries explicitly.
pub struct ProbeCache<T> {
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry<T>>>,
}

struct Entry<T> {
    fingerprint: String,
    at: Instant,
    value: T,
    /// When the checks began to fail transiently since `value` (a success).
    failing_since: Option<Instant>,
}

impl<T: Clone> ProbeCache<T> {
    pub fn new(ttl: Duration) -> Self {
        ProbeCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry<T>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &str, fingerprint: &str) -> Option<T> {
        self.lock()
            .get(key)
            .filter(|e| e.fingerprint == fingerprint && e.at.elapsed() < self.ttl)
            .map(|e| e.value.clone())
    }

    pub fn put(&self, key: &str, fingerprint: &str, value: T) {
        let entry = Entry {
            fingerprint: fingerprint.into(),
            at: Instant::now(),
            value,
            failing_since: None,
        };
        self.lock().insert(key.into(), entry);
    }

    pub fn invalidate(&self, key: &str) {
        self.lock().remove(key);
    }

    /// What to report for a check just made: a success (`failure` None) is
    /// remembered; a transient failure reports the last success with the same
    /// fingerprint instead, until the failures have lasted `TRANSIENT_GRACE`.
    /// Returns the outcome and whether it is such a stand-in.
    pub fn settle(
        &self,
        key: &str,
        fingerprint: &str,
        outcome: T,
        failure: Option<&Failure>,
    ) -> (T, bool) {
        let Some(f) = failure else {
            self.put(key, fingerprint, outcome.clone());
            return (outcome, false);
        };
        let mut entries = self.lock();
        match entries.get_mut(key) {
            Some(e) if f.transient && e.fingerprint == fingerprint => {
                let since = *e.failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() < TRANSIENT_GRACE {
                    return (e.value.clone(), true);
                }
                (outcome, false)
            }
            _ => (outcome, false),
        }
    }

    /// Time left before the entry must be rechecked.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// A SCIM endpoint as an object names it; its Secrets are in `ns`.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint<'a> {
    pub ns: &'a str,
    pub url: &'a str,
    pub auth: &'a Auth,
    pub tls: Option<&'a Tls>,
    /// Plain http allowed (the object's `insecure` opt-in).
    pub insecure: bool,
    /// List requests carry `count` (false for an app whose catalog entry says so).
    pub send_count: bool,
}

/// How long a failed endpoint check is reused before the endpoint is probed again.
const FAILURE_REUSE: Duration = Duration::from_secs(10);

/// One SCIM client and one connectivity check per endpoint and credentials,
/// shared by every object that uses them (a thousand apps of one provider make
/// one check, not a thousand, and reuse its connections). Keyed by namespace,
/// URL and the auth and TLS settings; a change of a Secret they name drops them.
pub struct Endpoints {
    ttl: Duration,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

struct Slot {
    created: Instant,
    ns: String,
    secrets: Vec<String>,
    client: tokio::sync::OnceCell<ScimClient>,
    /// The last check; held across a check, so that callers wait for the one in flight.
    check: tokio::sync::Mutex<Option<(Instant, Result<Capabilities, Failure>)>>,
}

impl Endpoints {
    pub fn new(ttl: Duration) -> Self {
        Endpoints {
            ttl,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, ep: Endpoint) -> Arc<Slot> {
        let Endpoint {
            ns,
            url,
            auth,
            tls,
            insecure,
            send_count,
        } = ep;
        let key = format!(
            "{ns}\n{url}\n{insecure}\n{send_count}\n{}\n{}",
            serde_json::to_string(auth).unwrap_or_default(),
            serde_json::to_string(&tls).unwrap_or_default()
        );
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        // A slot lives one ttl: endpoints no longer used do not pile up, and
        // clients are rebuilt now and then.
        slots.retain(|_, s| s.created.elapsed() < self.ttl);
        slots
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Slot {
                    created: Instant::now(),
                    ns: ns.to_string(),
                    secrets: credentials::secret_names(auth, tls),
                    client: tokio::sync::OnceCell::new(),
                    check: tokio::sync::Mutex::new(None),
                })
            })
            .clone()
    }

    /// The shared client of an endpoint. `Ok(Err(_))` is a failure to report
    /// (not kept: a Secret created later is read at the next call).
    pub async fn client(
        &self,
        kube: &Client,
        ep: Endpoint<'_>,
    ) -> Result<Result<ScimClient, Failure>, kube::Error> {
        client_of(&self.slot(ep), kube, ep).await
    }

    /// The endpoint's check ([`probe`]), made at most once per `ttl` (a failure:
    /// per `FAILURE_REUSE`) for all its users.
    pub async fn probe(
        &self,
        kube: &Client,
        ep: Endpoint<'_>,
    ) -> Result<Result<Capabilities, Failure>, kube::Error> {
        let slot = self.slot(ep);
        let mut last = slot.check.lock().await;
        if let Some((at, outcome)) = last.as_ref() {
            let fresh = if outcome.is_ok() {
                self.ttl
            } else {
                FAILURE_REUSE
            };
            if at.elapsed() < fresh {
                return Ok(outcome.clone());
            }
        }
        let outcome = match client_of(&slot, kube, ep).await? {
            Ok(client) => probe(&client).await,
            Err(f) => Err(f),
        };
        *last = Some((Instant::now(), outcome.clone()));
        Ok(outcome)
    }

    /// Forgets the endpoints whose credentials or CA the Secret `ns/name` holds.
    pub fn invalidate_secret(&self, ns: &str, name: &str) {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, s| s.ns != ns || !s.secrets.iter().any(|n| n == name));
    }
}

async fn client_of(
    slot: &Slot,
    kube: &Client,
    ep: Endpoint<'_>,
) -> Result<Result<ScimClient, Failure>, kube::Error> {
    enum Not {
        Api(kube::Error),
        Failed(Failure),
    }
    let built = slot
        .client
        .get_or_try_init(|| async {
            match client_for(kube, ep).await {
                Ok(Ok(c)) => Ok(c),
                Ok(Err(f)) => Err(Not::Failed(f)),
                Err(e) => Err(Not::Api(e)),
            }
        })
        .await;
    match built {
        Ok(c) => Ok(Ok(c.clone())),
        Err(Not::Failed(f)) => Ok(Err(f)),
        Err(Not::Api(e)) => Err(e),
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
    fn a_transient_failure_reports_the_last_success_for_a_while() {
        let c = ProbeCache::new(Duration::ZERO);
        let busy = Failure {
            transient: true,
            ..Failure::new(CONNECTIVITY_FAILED, "connection refused")
        };
        let wrong = Failure::new(UNAUTHORIZED, "HTTP 401");
        // Nothing worked before: the failure is reported.
        assert_eq!(
            c.settle("ns/a", "g1", Err(busy.clone()), Some(&busy)),
            (Err(busy.clone()), false)
        );
        assert_eq!(c.settle("ns/a", "g1", Ok(1), None), (Ok(1), false));
        // It worked with these inputs (the entry is stale: ttl zero): still Ok, flagged.
        assert_eq!(
            c.settle("ns/a", "g1", Err(busy.clone()), Some(&busy)),
            (Ok(1), true)
        );
        // Not for a failure that is no one's busyness, nor for other inputs.
        assert_eq!(
            c.settle("ns/a", "g1", Err(wrong.clone()), Some(&wrong)),
            (Err(wrong), false)
        );
        assert_eq!(
            c.settle("ns/a", "g2", Err(busy.clone()), Some(&busy)),
            (Err(busy), false)
        );
    }

    #[test]
    fn busy_answers_are_transient_refusals_are_not() {
        let status = |status: u16| ScimError::Status {
            method: "GET".into(),
            path: "/Users".into(),
            status,
            kind: ErrorKind::from_status(status),
            scim_type: None,
            detail: String::new(),
        };
        assert!(scim_failure(&status(503)).transient);
        assert!(scim_failure(&status(429)).transient);
        let exhausted = ScimError::RetriesExhausted {
            attempts: 2,
            last: Box::new(status(502)),
        };
        assert!(scim_failure(&exhausted).transient);
        let denied = scim_failure(&status(401));
        assert_eq!((denied.reason, denied.transient), (UNAUTHORIZED, false));
        assert!(!scim_failure(&status(404)).transient);
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
        let f = credentials_failure(CredentialsError::NotAllowed("corp-iam".into())).unwrap();
        assert_eq!(f.reason, SECRET_NOT_ALLOWED);
        assert!(f.message.contains("corp-iam") && f.message.contains("catalogsync.io/credentials"));
    }
}
