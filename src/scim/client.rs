//! The SCIM 2.0 HTTP client: auth, bounded concurrency, retries, paging,
//! CRUD, group membership batching and Bulk.

use crate::scim::auth::{Auth, Authenticator};
use crate::scim::error::{ErrorKind, Result, ScimError};
use crate::scim::model::{
    BULK_REQUEST_SCHEMA, Capabilities, ErrorResponse, GROUPS, ListResponse, PATCH_OP_SCHEMA,
    PatchOp, PatchOpKind, PatchOperation, ServiceProviderConfig, resource_id,
};
use crate::scim::retry::{RetryPolicy, parse_retry_after};
use futures::{Stream, StreamExt, TryStreamExt, stream};
use reqwest::{Method, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::sync::{OnceCell, Semaphore};
use tokio::time::Instant;

const SCIM_JSON: &str = "application/scim+json";

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
        }
    }
}

/// A client for one SCIM service provider. Cheap to clone; clones share the
/// connection pool, concurrency limit, token cache and request counters.
#[derive(Clone)]
pub struct ScimClient {
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    http: reqwest::Client,
    auth: Authenticator,
    opts: ClientOptions,
    permits: Semaphore,
    requests: AtomicU64,
    retries: AtomicU64,
    spc: OnceCell<ServiceProviderConfig>,
    /// Set by a 429: every request of this client waits until then.
    pause_until: std::sync::Mutex<Option<Instant>>,
}

impl fmt::Debug for ScimClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScimClient")
            .field("base_url", &self.inner.base)
            .field("auth", &self.inner.opts.auth)
            .field("parallelism", &self.inner.opts.parallelism)
            .finish()
    }
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub etag: Option<String>,
    pub body: Vec<u8>,
}

impl RawResponse {
    fn json<T: for<'de> Deserialize<'de>>(&self, what: &str) -> Result<T> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ScimError::Protocol(format!("malformed JSON in {what}: {e}")))
    }
}

/// Counts of one listing, for progress and for deciding whether to trust it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListStats {
    pub pages: u64,
    /// Distinct resources returned.
    pub resources: u64,
    /// Resources seen again (index pages shifting) and dropped.
    pub duplicates: u64,
    /// Index pagination: full passes made (a pass is repeated when totalResults moved).
    pub passes: u32,
    /// False when index paging saw totalResults change on every pass: some
    /// resource may have been missed. Always true with cursors.
    pub consistent: bool,
    /// The last totalResults the server reported.
    pub total_results: Option<u64>,
}

/// Index pagination is re-run while totalResults moves, at most this many passes.
const MAX_INDEX_PASSES: u32 = 3;

/// Pages through a listing, deduplicating by id. From [`ScimClient::pager`].
pub struct Pager {
    client: ScimClient,
    endpoint: String,
    attributes: Option<String>,
    filter: Option<String>,
    page_size: u64,
    cursor_mode: bool,
    cursor: Option<String>,
    start_index: u64,
    pass_total: Option<u64>,
    pass_unstable: bool,
    /// 128-bit keyed hashes of the ids seen: a listing of 100,000 ids kept as strings
    /// is ~8 MB; a collision (odds ~1e-29 at that size) would drop one resource.
    seen: HashSet<u128>,
    seen_keys: (RandomState, RandomState),
    stats: ListStats,
    done: bool,
}

impl Pager {
    pub fn stats(&self) -> &ListStats {
        &self.stats
    }

    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    pub fn uses_cursor(&self) -> bool {
        self.cursor_mode
    }

    /// The next page of not-yet-seen resources, or `None` at the end.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Value>>> {
        while !self.done {
            let page = if self.cursor_mode {
                self.next_cursor_page().await?
            } else {
                self.next_index_page().await?
            };
            if !page.is_empty() {
                return Ok(Some(page));
            }
        }
        Ok(None)
    }

    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = vec![("count", self.page_size.to_string())];
        if let Some(a) = &self.attributes {
            q.push(("attributes", a.clone()));
        }
        if let Some(f) = &self.filter {
            q.push(("filter", f.clone()));
        }
        q
    }

    async fn fetch(&mut self, q: Vec<(&'static str, String)>) -> Result<ListResponse> {
        let path = format!("/{}", self.endpoint);
        let resp = self.client.send(Method::GET, &path, &q, None, None).await?;
        self.stats.pages += 1;
        let list: ListResponse = resp.json(&format!("ListResponse of GET {path}"))?;
        if list.resources.len() as u64 > self.page_size {
            return Err(ScimError::Protocol(format!(
                "GET {path}: {} resources in a page of count={}",
                list.resources.len(),
                self.page_size
            )));
        }
        if let Some(total) = list.total_results {
            self.stats.total_results = Some(total);
        }
        Ok(list)
    }

    fn dedup(&mut self, resources: Vec<Value>) -> Result<Vec<Value>> {
        let mut out = Vec::with_capacity(resources.len());
        for r in resources {
            let id = resource_id(&r).ok_or_else(|| {
                ScimError::Protocol(format!("a {} resource has no id", self.endpoint))
            })?;
            let key = (u128::from(self.seen_keys.0.hash_one(id)) << 64)
                | u128::from(self.seen_keys.1.hash_one(id));
            if self.seen.insert(key) {
                out.push(r);
            } else {
                self.stats.duplicates += 1;
            }
        }
        self.stats.resources += out.len() as u64;
        Ok(out)
    }

    async fn next_index_page(&mut self) -> Result<Vec<Value>> {
        let mut q = self.query();
        q.push(("startIndex", self.start_index.to_string()));
        let list = self.fetch(q).await?;
        let total = list.total_results.ok_or_else(|| {
            ScimError::Protocol(format!(
                "GET /{}: ListResponse without totalResults",
                self.endpoint
            ))
        })?;
        let n = list.resources.len() as u64;
        match self.pass_total {
            None => self.pass_total = Some(total),
            Some(t) if t != total => self.pass_unstable = true,
            _ => {}
        }
        if n == 0 && self.start_index <= total {
            return Err(ScimError::Protocol(format!(
                "GET /{}: empty page at startIndex={} though totalResults={total}",
                self.endpoint, self.start_index
            )));
        }
        self.start_index += n;
        let page = self.dedup(list.resources)?;
        if n == 0 || self.start_index > total {
            self.stats.passes += 1;
            if self.pass_unstable && self.stats.passes < MAX_INDEX_PASSES {
                // Index pages shift when resources come and go; another pass
                // catches what shifted past us (duplicates are dropped).
                self.start_index = 1;
                self.pass_total = None;
                self.pass_unstable = false;
            } else {
                self.stats.consistent = !self.pass_unstable;
                self.done = true;
            }
        }
        Ok(page)
    }

    async fn next_cursor_page(&mut self) -> Result<Vec<Value>> {
        let mut q = self.query();
        // An empty cursor asks for the first page by cursor (RFC 9865 §2.1).
        q.push(("cursor", self.cursor.clone().unwrap_or_default()));
        let list = self.fetch(q).await?;
        let n = list.resources.len();
        if let Some(next) = &list.next_cursor {
            if n == 0 {
                return Err(ScimError::Protocol(format!(
                    "GET /{}: empty page with a nextCursor",
                    self.endpoint
                )));
            }
            if self.cursor.as_ref() == Some(next) {
                return Err(ScimError::Protocol(format!(
                    "GET /{}: the server returned the same cursor again",
                    self.endpoint
                )));
            }
        }
        if self.stats.pages == 1
            && let Some(total) = list.total_results
            && n as u64 > total
        {
            return Err(ScimError::Protocol(format!(
                "GET /{}: {n} resources on the first page though totalResults={total}",
                self.endpoint
            )));
        }
        self.cursor = list.next_cursor;
        if self.cursor.is_none() {
            self.stats.passes = 1;
            self.stats.consistent = true;
            self.done = true;
        }
        self.dedup(list.resources)
    }
}

/// One operation of a Bulk request (RFC 7644 §3.7).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BulkOperation {
    pub method: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl BulkOperation {
    pub fn post(endpoint: &str, bulk_id: impl Into<String>, data: Value) -> Self {
        BulkOperation {
            method: "POST".into(),
            path: format!("/{endpoint}"),
            bulk_id: Some(bulk_id.into()),
            version: None,
            data: Some(data),
        }
    }
}

/// The outcome of one Bulk operation.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BulkOutcome {
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub bulk_id: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(deserialize_with = "status_code")]
    pub status: u16,
    #[serde(default)]
    pub response: Option<Value>,
}

impl BulkOutcome {
    /// The id of a created resource: the last segment of its location.
    pub fn id(&self) -> Option<&str> {
        self.location.as_deref()?.rsplit('/').next()
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

fn status_code<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u16, D::Error> {
    use serde::de::Error;
    match Value::deserialize(d)? {
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| D::Error::custom("bad status")),
        Value::String(s) => s.trim().parse().map_err(D::Error::custom),
        _ => Err(D::Error::custom("bad status")),
    }
}

fn error_from(method: &Method, path: &str, status: StatusCode, body: &[u8]) -> ScimError {
    let parsed: Option<ErrorResponse> = serde_json::from_slice(body).ok();
    let detail = parsed
        .as_ref()
        .and_then(|e| e.detail.clone())
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                status.canonical_reason().unwrap_or("").to_string()
            } else {
                text.chars().take(300).collect()
            }
        });
    ScimError::Status {
        method: method.to_string(),
        path: path.to_string(),
        status: status.as_u16(),
        kind: ErrorKind::from_status(status.as_u16()),
        scim_type: parsed.and_then(|e| e.scim_type),
        detail,
    }
}

/// Whether a status is worth another try: throttling and transient server trouble.
fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
}

/// The PatchOp that adds `ids` to `members`, `per_op` values per operation, serialized
/// straight from the ids: as a `Value` every `{"value": id}` is a map of its own, tens of
/// megabytes for a moment per 10,000-value request.
fn members_add_body(ids: &[&str], per_op: usize) -> Result<Vec<u8>> {
    #[derive(Serialize)]
    struct Member<'a> {
        value: &'a str,
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
                value: c.iter().map(|id| Member { value: id }).collect(),
            })
            .collect(),
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
            }),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// HTTP requests sent so far (each retry counts), token requests excluded.
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Retries made so far.
    pub fn retries(&self) -> u64 {
        self.inner.retries.load(Ordering::Relaxed)
    }

    async fn wait_for_pause(&self) {
        let until = *self.inner.pause_until.lock().expect("pause lock");
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }

    fn pause(&self, delay: Duration) {
        let until = Instant::now() + delay;
        let mut guard = self.inner.pause_until.lock().expect("pause lock");
        if guard.is_none_or(|u| u < until) {
            *guard = Some(until);
        }
    }

    /// Sends one request with auth, concurrency limit and retries. `path` is
    /// relative to the base URL (e.g. `/Users/abc`). Error statuses become
    /// [`ScimError::Status`].
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<RawResponse> {
        let payload = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ScimError::Config(format!("request body of {method} {path}: {e}")))?;
        self.send_bytes(method, path, query, payload, if_match)
            .await
    }

    /// [`Self::send`] with a body already serialized.
    async fn send_bytes(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        payload: Option<Vec<u8>>,
        if_match: Option<&str>,
    ) -> Result<RawResponse> {
        let url = format!("{}{}", self.inner.base, path);
        let policy = &self.inner.opts.retry;
        let mut oauth_refreshed = false;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            self.wait_for_pause().await;
            let mut rb = self
                .inner
                .http
                .request(method.clone(), &url)
                .header(header::ACCEPT, SCIM_JSON);
            if !query.is_empty() {
                rb = rb.query(query);
            }
            if let Some(p) = &payload {
                rb = rb.header(header::CONTENT_TYPE, SCIM_JSON).body(p.clone());
            }
            if let Some(etag) = if_match {
                rb = rb.header(header::IF_MATCH, etag);
            }
            let rb = self.inner.auth.apply(&self.inner.http, rb).await?;

            // The permit covers only the exchange, not the backoff sleeps.
            let outcome = {
                let _permit = self.inner.permits.acquire().await.expect("semaphore open");
                self.inner.requests.fetch_add(1, Ordering::Relaxed);
                match rb.send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        let headers = resp.headers().clone();
                        resp.bytes().await.map(|b| (status, headers, b.to_vec()))
                    }
                    Err(e) => Err(e),
                }
            };

            let (status, headers, bytes) = match outcome {
                Ok(x) => x,
                Err(e) => {
                    let err = ScimError::Transport {
                        method: method.to_string(),
                        path: path.to_string(),
                        source: e,
                    };
                    if attempt >= policy.max_attempts {
                        return Err(ScimError::RetriesExhausted {
                            attempts: attempt,
                            last: Box::new(err),
                        });
                    }
                    self.backoff(attempt, None).await;
                    continue;
                }
            };

            if status.is_success() {
                return Ok(RawResponse {
                    status: status.as_u16(),
                    etag: headers
                        .get(header::ETAG)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string),
                    body: bytes,
                });
            }
            if status == StatusCode::UNAUTHORIZED && self.inner.auth.is_oauth() && !oauth_refreshed
            {
                // The cached token may have been revoked or expired early: fetch one anew once.
                oauth_refreshed = true;
                self.inner.auth.invalidate().await;
                attempt -= 1;
                continue;
            }
            let err = error_from(&method, path, status, &bytes);
            if !retryable_status(status) {
                return Err(err);
            }
            let retry_after = headers
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            if let Some(ra) = retry_after
                && ra > policy.max_retry_after
            {
                return Err(ScimError::RetryAfterTooLong {
                    method: method.to_string(),
                    path: path.to_string(),
                    seconds: ra.as_secs(),
                    limit: policy.max_retry_after.as_secs(),
                });
            }
            if attempt >= policy.max_attempts {
                return Err(ScimError::RetriesExhausted {
                    attempts: attempt,
                    last: Box::new(err),
                });
            }
            if status == StatusCode::TOO_MANY_REQUESTS
                && let Some(ra) = retry_after
            {
                // Throttling applies to the whole client, not just this request.
                self.pause(ra);
            }
            self.backoff(attempt, retry_after).await;
        }
    }

    async fn backoff(&self, attempt: u32, retry_after: Option<Duration>) {
        self.inner.retries.fetch_add(1, Ordering::Relaxed);
        let delay = match retry_after {
            Some(ra) => ra,
            None => self.inner.opts.retry.backoff(attempt, &mut rand::rng()),
        };
        tracing::debug!(base = %self.inner.base, attempt, ?delay, "retrying SCIM request");
        tokio::time::sleep(delay).await;
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

    pub async fn capabilities(&self) -> Result<Capabilities> {
        Ok(self.service_provider_config().await?.capabilities())
    }

    /// A pager over `resource_type` ("Users", "Groups"). Asks only for
    /// `attributes` (plus `id`; empty = all), pages at the server's maximum,
    /// by cursor when advertised.
    pub async fn pager(
        &self,
        resource_type: &str,
        attributes: &[&str],
        filter: Option<&str>,
    ) -> Result<Pager> {
        let spc = self.service_provider_config().await?;
        let max = spc.max_page_size();
        let page_size = self.inner.opts.page_size.map_or(max, |p| p.clamp(1, max));
        let attributes = if attributes.is_empty() {
            None
        } else {
            let mut attrs: Vec<&str> = vec!["id"];
            attrs.extend(attributes.iter().filter(|a| **a != "id"));
            Some(attrs.join(","))
        };
        Ok(Pager {
            client: self.clone(),
            endpoint: resource_type.trim_matches('/').to_string(),
            attributes,
            filter: filter.map(str::to_string),
            page_size,
            cursor_mode: spc.supports_cursor(),
            cursor: None,
            start_index: 1,
            pass_total: None,
            pass_unstable: false,
            seen: HashSet::new(),
            seen_keys: Default::default(),
            stats: ListStats::default(),
            done: false,
        })
    }

    /// Lists resources page by page into `on_page`, which keeps what it needs.
    pub async fn list_pages<F, E>(
        &self,
        resource_type: &str,
        attributes: &[&str],
        filter: Option<&str>,
        mut on_page: F,
    ) -> std::result::Result<ListStats, E>
    where
        F: FnMut(Vec<Value>) -> std::result::Result<(), E>,
        E: From<ScimError>,
    {
        let mut pager = self.pager(resource_type, attributes, filter).await?;
        while let Some(page) = pager.next_page().await? {
            on_page(page)?;
        }
        Ok(pager.stats.clone())
    }

    /// Lists resources as a stream of single resources.
    pub fn list_stream(
        &self,
        resource_type: &str,
        attributes: &[&str],
        filter: Option<&str>,
    ) -> impl Stream<Item = Result<Value>> + Send + 'static {
        let client = self.clone();
        let resource_type = resource_type.to_string();
        let attributes: Vec<String> = attributes.iter().map(|a| a.to_string()).collect();
        let filter = filter.map(str::to_string);
        stream::once(async move {
            let attrs: Vec<&str> = attributes.iter().map(String::as_str).collect();
            client
                .pager(&resource_type, &attrs, filter.as_deref())
                .await
        })
        .map_ok(|pager| {
            stream::try_unfold(pager, |mut pager| async move {
                let next = pager.next_page().await?;
                Ok::<_, ScimError>(next.map(|page| {
                    (
                        stream::iter(page.into_iter().map(Ok::<_, ScimError>)),
                        pager,
                    )
                }))
            })
            .try_flatten()
        })
        .try_flatten()
    }

    /// Lists every resource into memory (convenience for small listings and tests).
    pub async fn list(
        &self,
        resource_type: &str,
        attributes: &[&str],
        filter: Option<&str>,
    ) -> Result<(Vec<Value>, ListStats)> {
        let mut all = Vec::new();
        let stats = self
            .list_pages(resource_type, attributes, filter, |page| {
                all.extend(page);
                Ok::<_, ScimError>(())
            })
            .await?;
        Ok((all, stats))
    }

    fn resource_path(resource_type: &str, id: &str) -> String {
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
        resp.json(&format!("POST {path}"))
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
        resp.json(&format!("PUT {path}"))
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
        Ok(Some(resp.json(&format!("PATCH {path}"))?))
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
            let keep: Vec<Value> = members
                .iter()
                .filter(|m| !remove.contains(m.as_str()))
                .map(|m| json!({"value": m}))
                .collect();
            if keep.len() == members.len() {
                return Ok(requests);
            }
            let op = if keep.is_empty() {
                PatchOp::remove("members")
            } else {
                PatchOp::replace("members", Value::Array(keep))
            };
            requests += 1;
            match self
                .patch(GROUPS, group_id, &PatchOp::new(vec![op]), Some(&version))
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

    /// Creates many resources; one result per input, in order (`Ok` = the new
    /// id). Uses Bulk when the server advertises it (scim2-server: ~2.6× the
    /// throughput of parallel POSTs), else `parallelism` POSTs at a time.
    /// A failed item does not stop the others. A whole Bulk request that
    /// fails (after retries) fails every item of it.
    pub async fn create_many(
        &self,
        resource_type: &str,
        resources: Vec<Value>,
    ) -> Result<Vec<Result<String>>> {
        if !self.service_provider_config().await?.bulk.supported {
            let results = stream::iter(resources.into_iter().map(|r| {
                let c = self.clone();
                let rt = resource_type.to_string();
                async move {
                    let created = c.create(&rt, &r).await?;
                    resource_id(&created).map(str::to_string).ok_or_else(|| {
                        ScimError::Protocol(format!("POST /{rt}: created resource has no id"))
                    })
                }
            }))
            .buffered(self.inner.opts.parallelism)
            .collect()
            .await;
            return Ok(results);
        }
        let endpoint = resource_type.trim_matches('/');
        let ops: Vec<BulkOperation> = resources
            .into_iter()
            .enumerate()
            .map(|(i, r)| BulkOperation::post(endpoint, format!("c{i}"), r))
            .collect();
        let outcomes = self.bulk(&ops).await?;
        let mut by_bulk_id: std::collections::HashMap<String, BulkOutcome> = outcomes
            .into_iter()
            .filter_map(|o| o.bulk_id.clone().map(|b| (b, o)))
            .collect();
        let path = format!("/Bulk POST /{endpoint}");
        Ok(ops
            .iter()
            .map(|op| {
                let bulk_id = op.bulk_id.as_deref().unwrap_or_default();
                let Some(outcome) = by_bulk_id.remove(bulk_id) else {
                    return Err(ScimError::Protocol(format!(
                        "{path}: no outcome for bulkId {bulk_id}"
                    )));
                };
                if outcome.is_success() {
                    return outcome.id().map(str::to_string).ok_or_else(|| {
                        ScimError::Protocol(format!("{path}: created resource has no location"))
                    });
                }
                let body = outcome
                    .response
                    .as_ref()
                    .map(|r| r.to_string())
                    .unwrap_or_default();
                let status = StatusCode::from_u16(outcome.status)
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                Err(error_from(&Method::POST, &path, status, body.as_bytes()))
            })
            .collect())
    }

    /// Sends Bulk requests (RFC 7644 §3.7), split to the advertised
    /// maxOperations and maxPayloadSize. Operations that refer to each other
    /// by bulkId must fit in one request.
    pub async fn bulk(&self, operations: &[BulkOperation]) -> Result<Vec<BulkOutcome>> {
        let spc = self.service_provider_config().await?;
        if !spc.bulk.supported {
            return Err(ScimError::Config("the server does not support Bulk".into()));
        }
        let max_ops = spc.bulk.max_operations.unwrap_or(100).max(1) as usize;
        // Keep a margin under maxPayloadSize for the envelope.
        let max_bytes = spc.bulk.max_payload_size.map(|b| (b as usize) * 9 / 10);
        let mut outcomes = Vec::with_capacity(operations.len());
        let mut batch: Vec<Value> = Vec::new();
        let mut batch_bytes = 0usize;
        for op in operations {
            let v = serde_json::to_value(op)
                .map_err(|e| ScimError::Config(format!("bulk operation: {e}")))?;
            let size = v.to_string().len() + 1;
            if let Some(limit) = max_bytes
                && size > limit
            {
                return Err(ScimError::Config(format!(
                    "one bulk operation is {size} bytes, over the server's maxPayloadSize"
                )));
            }
            let full = batch.len() >= max_ops || max_bytes.is_some_and(|l| batch_bytes + size > l);
            if full {
                outcomes.extend(self.bulk_request(std::mem::take(&mut batch)).await?);
                batch_bytes = 0;
            }
            batch_bytes += size;
            batch.push(v);
        }
        if !batch.is_empty() {
            outcomes.extend(self.bulk_request(batch).await?);
        }
        Ok(outcomes)
    }

    async fn bulk_request(&self, ops: Vec<Value>) -> Result<Vec<BulkOutcome>> {
        let body = json!({"schemas": [BULK_REQUEST_SCHEMA], "Operations": ops});
        let resp = self
            .send(Method::POST, "/Bulk", &[], Some(&body), None)
            .await?;
        #[derive(Deserialize)]
        struct BulkResponse {
            #[serde(rename = "Operations", default)]
            operations: Vec<BulkOutcome>,
        }
        let parsed: BulkResponse = resp.json("BulkResponse")?;
        Ok(parsed.operations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_body_is_the_patchop() {
        let body: Value =
            serde_json::from_slice(&members_add_body(&["a", "b", "c"], 2).unwrap()).unwrap();
        let expected = serde_json::to_value(PatchOp::new(vec![
            PatchOp::add("members", json!([{"value": "a"}, {"value": "b"}])),
            PatchOp::add("members", json!([{"value": "c"}])),
        ]))
        .unwrap();
        assert_eq!(body, expected);
    }

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
    fn error_bodies_become_typed_errors() {
        let body = br#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"409","scimType":"uniqueness","detail":"userName taken"}"#;
        let e = error_from(&Method::POST, "/Users", StatusCode::CONFLICT, body);
        assert!(e.is_conflict() && e.is_uniqueness());
        assert_eq!(
            e.to_string(),
            "POST /Users: HTTP 409 (uniqueness): userName taken"
        );
        let e = error_from(&Method::GET, "/Users", StatusCode::UNAUTHORIZED, b"");
        assert_eq!(e.kind(), Some(ErrorKind::Unauthorized));
        assert_eq!(e.to_string(), "GET /Users: HTTP 401: Unauthorized");
        let e = error_from(
            &Method::GET,
            "/x",
            StatusCode::BAD_GATEWAY,
            b"<html>proxy</html>",
        );
        assert!(e.to_string().contains("<html>proxy</html>"));
        assert!(retryable_status(StatusCode::TOO_MANY_REQUESTS));
        assert!(!retryable_status(StatusCode::CONFLICT));
    }

    #[test]
    fn bulk_outcome_status_forms() {
        let o: BulkOutcome = serde_json::from_value(
            json!({"status": "201", "location": "http://h/scim/v2/Users/abc"}),
        )
        .unwrap();
        assert_eq!((o.status, o.id()), (201, Some("abc")));
        let o: BulkOutcome = serde_json::from_value(json!({"status": 409})).unwrap();
        assert!(!o.is_success());
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
