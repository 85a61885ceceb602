//! The [`ScimClient`] type: its options, construction, the cached
//! ServiceProviderConfig and single-resource CRUD. Sending, paging,
//! membership and Bulk live in sibling modules as further `impl ScimClient`
//! blocks.

use crate::scim::auth::{Auth, Authenticator};
use crate::scim::error::{ErrorKind, Result, ScimError};
use crate::scim::model::{Capabilities, PatchOp, ServiceProviderConfig};
use crate::scim::retry::RetryPolicy;
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{OnceCell, Semaphore};
use tokio::time::Instant;

// These types lived in this module before the split; their old paths keep working.
pub use crate::scim::bulk::{BulkOperation, BulkOutcome};
pub use crate::scim::membership::MemberRemoval;
pub use crate::scim::paging::{ListStats, Pager};
pub use crate::scim::transport::RawResponse;

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// Whole request, body included: a 1,000-user page can take seconds.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(120),
        }
    }
}

/// Everything [`ScimClient::with_options`] accepts; [`ScimClient::new`] fills the rest with defaults.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub base_url: String,
    pub auth: Auth,
    /// PEM bundle of CAs to trust for this target.
    pub ca_pem: Option<Vec<u8>>,
    pub timeouts: Timeouts,
    /// Requests in flight at once against this target.
    pub parallelism: usize,
    pub retry: RetryPolicy,
    pub member_removal: MemberRemoval,
    /// Member values per `add`/`remove` operation.
    pub member_values_per_operation: usize,
    /// Operations per membership PATCH request.
    pub member_operations_per_request: usize,
    /// Page size to use instead of the advertised maximum (capped by it).
    pub page_size: Option<u64>,
    /// Send `count` with list requests. Off for a server that fails on it (a catalog
    /// entry's `sendCount: false`): its pages are then whatever size it serves.
    pub send_count: bool,
    /// Filter on our side even if the server advertises filtering (a catalog entry's
    /// `avoid: [Filter]`).
    pub avoid_filter: bool,
    /// Never send Bulk requests (a catalog entry's `avoid: [Bulk]`).
    pub avoid_bulk: bool,
}

impl ClientOptions {
    pub fn new(base_url: impl Into<String>, auth: Auth) -> Self {
        ClientOptions {
            base_url: base_url.into(),
            auth,
            ca_pem: None,
            timeouts: Timeouts::default(),
            parallelism: 4,
            retry: RetryPolicy::default(),
            member_removal: MemberRemoval::Auto,
            // One operation per request: scim2-server pays part of a PATCH per operation,
            // and that part grows with the group (docs/benchmarks.md, first import).
            member_values_per_operation: 10_000,
            member_operations_per_request: 1,
            page_size: None,
            send_count: true,
            avoid_filter: false,
            avoid_bulk: false,
        }
    }
}

/// A client for one SCIM service provider. Cheap to clone; clones share the
/// connection pool, concurrency limit, token cache and request counters.
#[derive(Clone)]
pub struct ScimClient {
    pub(super) inner: Arc<Inner>,
}

/// Shared by the sibling modules that extend [`ScimClient`].
pub(super) struct Inner {
    pub(super) base: String,
    pub(super) http: reqwest::Client,
    pub(super) auth: Authenticator,
    pub(super) opts: ClientOptions,
    pub(super) permits: Semaphore,
    pub(super) requests: AtomicU64,
    pub(super) retries: AtomicU64,
    spc: OnceCell<ServiceProviderConfig>,
    /// Set by a 429: every request of this client waits until then.
    pub(super) pause_until: std::sync::Mutex<Option<Instant>>,
    /// When the client was halted ([`ScimClient::halt`]): no retries since (but a read's
    /// within [`HALT_DEADLINE`] of it), and every request ends within [`HALT_DEADLINE`] of
    /// it (or of its own start).
    pub(super) halted: tokio::sync::watch::Sender<Option<Instant>>,
}

/// How long a request may still take once its client is halted: in-flight writes finish
/// or are given up well inside a pod's termination grace period.
pub const HALT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(8);

impl fmt::Debug for ScimClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScimClient")
            .field("base_url", &self.inner.base)
            .field("auth", &self.inner.opts.auth)
            .field("parallelism", &self.inner.opts.parallelism)
            .finish()
    }
}

impl ScimClient {
    /// A client with default retry policy and membership batching.
    pub fn new(
        base_url: &str,
        auth: Auth,
        ca_pem: Option<&[u8]>,
        timeouts: Timeouts,
        parallelism: usize,
    ) -> Result<Self> {
        let mut opts = ClientOptions::new(base_url, auth);
        opts.ca_pem = ca_pem.map(<[u8]>::to_vec);
        opts.timeouts = timeouts;
        opts.parallelism = parallelism;
        Self::with_options(opts)
    }

    pub fn with_options(opts: ClientOptions) -> Result<Self> {
        let base = opts.base_url.trim_end_matches('/').to_string();
        let parsed = reqwest::Url::parse(&base)
            .map_err(|e| ScimError::Config(format!("base URL {base:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ScimError::Config(format!(
                "base URL {base:?} is not http(s)"
            )));
        }
        if opts.parallelism == 0 {
            return Err(ScimError::Config("parallelism must be at least 1".into()));
        }
        if opts.member_values_per_operation == 0 || opts.member_operations_per_request == 0 {
            return Err(ScimError::Config(
                "membership batch sizes must be at least 1".into(),
            ));
        }
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            // A redirect would carry the credentials to wherever the server points: never
            // followed; the 3xx is reported (see `transport`).
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(opts.timeouts.connect)
            .timeout(opts.timeouts.request)
            .pool_max_idle_per_host(opts.parallelism)
            .user_agent(concat!("catalogsync/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &opts.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| ScimError::Config(format!("CA bundle: {e}")))?;
            if certs.is_empty() {
                return Err(ScimError::Config("CA bundle holds no certificate".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| ScimError::Config(format!("HTTP client: {e}")))?;
        Ok(ScimClient {
            inner: Arc::new(Inner {
                base,
                http,
                auth: Authenticator::new(opts.auth.clone()),
                permits: Semaphore::new(opts.parallelism),
                opts,
                requests: AtomicU64::new(0),
                retries: AtomicU64::new(0),
                spc: OnceCell::new(),
                pause_until: std::sync::Mutex::new(None),
                halted: tokio::sync::watch::Sender::new(None),
            }),
        })
    }

    /// Stops retrying (reads still retry within [`HALT_DEADLINE`]: they settle writes whose
    /// answer was lost), and bounds every request from now on (in flight or new) to
    /// [`HALT_DEADLINE`]: what a run that is stopping needs of its clients.
    pub fn halt(&self) {
        self.inner.halted.send_if_modified(|h| {
            let first = h.is_none();
            h.get_or_insert_with(Instant::now);
            first
        });
    }

    /// Whether [`Self::halt`] was called.
    pub fn is_halted(&self) -> bool {
        self.inner.halted.borrow().is_some()
    }

    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// Whether list requests carry `count` ([`ClientOptions::send_count`]).
    pub fn sends_count(&self) -> bool {
        self.inner.opts.send_count
    }

    /// HTTP requests sent so far (each retry counts), token requests excluded.
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Retries made so far.
    pub fn retries(&self) -> u64 {
        self.inner.retries.load(Ordering::Relaxed)
    }

    /// The ServiceProviderConfig, fetched once and cached.
    pub async fn service_provider_config(&self) -> Result<ServiceProviderConfig> {
        self.inner
            .spc
            .get_or_try_init(|| async {
                let resp = self
                    .send(Method::GET, "/ServiceProviderConfig", &[], None, None)
                    .await?;
                resp.json::<ServiceProviderConfig>("ServiceProviderConfig")
            })
            .await
            .cloned()
    }

    /// Whether creates go in Bulk requests: advertised, and not avoided.
    pub async fn uses_bulk(&self) -> Result<bool> {
        Ok(!self.inner.opts.avoid_bulk && self.service_provider_config().await?.bulk.supported)
    }

    pub async fn capabilities(&self) -> Result<Capabilities> {
        Ok(self.service_provider_config().await?.capabilities())
    }

    pub(super) fn resource_path(resource_type: &str, id: &str) -> String {
        // Server-assigned ids are opaque: keep them from breaking out of the path.
        let encoded: String = id
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        format!("/{}/{encoded}", resource_type.trim_matches('/'))
    }

    /// GET one resource; `Ok(None)` when it does not exist.
    pub async fn get(
        &self,
        resource_type: &str,
        id: &str,
        attributes: &[&str],
    ) -> Result<Option<Value>> {
        let path = Self::resource_path(resource_type, id);
        let query: Vec<(&str, String)> = if attributes.is_empty() {
            vec![]
        } else {
            vec![("attributes", attributes.join(","))]
        };
        match self.send(Method::GET, &path, &query, None, None).await {
            Ok(resp) => Ok(Some(resp.json(&format!("GET {path}"))?)),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// POST a new resource; returns what the server stored. A taken unique
    /// value is an error whose [`ScimError::is_uniqueness`] is true.
    pub async fn create<T: Serialize + ?Sized>(
        &self,
        resource_type: &str,
        resource: &T,
    ) -> Result<Value> {
        let body = serde_json::to_value(resource)
            .map_err(|e| ScimError::Config(format!("resource to create: {e}")))?;
        let path = format!("/{}", resource_type.trim_matches('/'));
        let resp = self
            .send(Method::POST, &path, &[], Some(&body), None)
            .await?;
        resp.written(&Method::POST, &path)
    }

    /// PUT a whole resource, under `If-Match` when a version is given.
    pub async fn replace<T: Serialize + ?Sized>(
        &self,
        resource_type: &str,
        id: &str,
        resource: &T,
        if_match: Option<&str>,
    ) -> Result<Value> {
        let body = serde_json::to_value(resource)
            .map_err(|e| ScimError::Config(format!("resource to replace: {e}")))?;
        let path = Self::resource_path(resource_type, id);
        let resp = self
            .send(Method::PUT, &path, &[], Some(&body), if_match)
            .await?;
        resp.written(&Method::PUT, &path)
    }

    /// PATCH a resource, under `If-Match` when a version is given. Returns the
    /// resource when the server sends it (204 No Content → `None`).
    pub async fn patch(
        &self,
        resource_type: &str,
        id: &str,
        patch: &PatchOp,
        if_match: Option<&str>,
    ) -> Result<Option<Value>> {
        let body =
            serde_json::to_value(patch).map_err(|e| ScimError::Config(format!("PatchOp: {e}")))?;
        let path = Self::resource_path(resource_type, id);
        let resp = self
            .send(Method::PATCH, &path, &[], Some(&body), if_match)
            .await?;
        if resp.body.is_empty() {
            return Ok(None);
        }
        Ok(Some(resp.written(&Method::PATCH, &path)?))
    }

    /// DELETE a resource; `Ok(false)` when it was already gone.
    pub async fn delete(
        &self,
        resource_type: &str,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<bool> {
        let path = Self::resource_path(resource_type, id);
        match self.send(Method::DELETE, &path, &[], None, if_match).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_path_encoded() {
        assert_eq!(
            ScimClient::resource_path("Users", "abc-1_2.x~"),
            "/Users/abc-1_2.x~"
        );
        assert_eq!(
            ScimClient::resource_path("Users", "../Groups"),
            "/Users/..%2FGroups"
        );
        assert_eq!(
            ScimClient::resource_path("/Groups/", "a b"),
            "/Groups/a%20b"
        );
    }

    #[test]
    fn rejects_bad_options() {
        assert!(ScimClient::new("ftp://x", Auth::None, None, Timeouts::default(), 1).is_err());
        assert!(ScimClient::new("http://x", Auth::None, None, Timeouts::default(), 0).is_err());
        assert!(
            ScimClient::new(
                "http://x",
                Auth::None,
                Some(b"not pem"),
                Timeouts::default(),
                1
            )
            .is_err()
        );
        let c = ScimClient::new(
            "http://x/scim/v2/",
            Auth::Bearer("tok".into()),
            None,
            Timeouts::default(),
            2,
        )
        .unwrap();
        assert_eq!(c.base_url(), "http://x/scim/v2");
        assert!(!format!("{c:?}").contains("tok\""));
    }
}
