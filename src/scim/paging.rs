//! Listing with pagination: by cursor (RFC 9865) when the server advertises
//! it, else by index, re-running index passes while totalResults moves.
//! Resources are deduplicated by id.

use crate::scim::client::ScimClient;
use crate::scim::error::{Result, ScimError};
use crate::scim::model::{ListResponse, resource_id};
use crate::scim::path::{ValueFilter, parse_resource_filter};
use futures::{Stream, TryStreamExt, stream};
use reqwest::Method;
use serde_json::Value;
use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

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
    /// Resources a filtered answer held that do not match the filter: dropped, never
    /// trusted (some servers ignore filters and answer with everything).
    pub unmatched: u64,
}

/// Index pagination is re-run while totalResults moves, at most this many passes.
const MAX_INDEX_PASSES: u32 = 3;

/// Pages through a listing, deduplicating by id. From [`ScimClient::pager`].
pub struct Pager {
    client: ScimClient,
    endpoint: String,
    attributes: Option<String>,
    /// The filter sent to the server: `None` when it cannot filter (its
    /// ServiceProviderConfig says `filter.supported: false`) and `local_filter` does it.
    filter: Option<String>,
    /// The filter, evaluated on every listed resource: the whole filtering when the server
    /// cannot filter, a check of its answer when it can.
    local_filter: Option<ValueFilter>,
    /// `None`: no `count` parameter (a server that fails on it); pages are what it sends.
    page_size: Option<u64>,
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

    /// The `count` asked for, if any.
    pub fn page_size(&self) -> Option<u64> {
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
        let mut q = Vec::new();
        if let Some(n) = self.page_size {
            q.push(("count", n.to_string()));
        }
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
        if let Some(count) = self.page_size
            && list.resources.len() as u64 > count
        {
            return Err(ScimError::Protocol(format!(
                "GET {path}: {} resources in a page of count={count}",
                list.resources.len(),
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
            if !self.seen.insert(key) {
                self.stats.duplicates += 1;
            } else if self
                .local_filter
                .as_ref()
                .is_none_or(|f| f.matches_resource(&r))
            {
                out.push(r);
            } else {
                self.stats.unmatched += 1;
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

impl ScimClient {
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
        let page_size = self
            .inner
            .opts
            .send_count
            .then(|| self.inner.opts.page_size.map_or(max, |p| p.clamp(1, max)));
        let local_filter = filter
            .map(parse_resource_filter)
            .transpose()
            .map_err(ScimError::Path)?;
        let server_filters = spc.filter.supported && !self.inner.opts.avoid_filter;
        let mut attributes: Vec<&str> = attributes.to_vec();
        let filter_attrs = local_filter.as_ref().map(ValueFilter::attributes);
        if !attributes.is_empty() {
            // The check needs the attributes the filter reads.
            attributes.extend(filter_attrs.iter().flatten().map(String::as_str));
        }
        let attributes = &attributes[..];
        let attributes = if attributes.is_empty() {
            None
        } else {
            let mut attrs: Vec<&str> = vec!["id"];
            for a in attributes {
                if !attrs.contains(a) {
                    attrs.push(a);
                }
            }
            Some(attrs.join(","))
        };
        Ok(Pager {
            client: self.clone(),
            endpoint: resource_type.trim_matches('/').to_string(),
            attributes,
            filter: filter.filter(|_| server_filters).map(str::to_string),
            local_filter,
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
        if pager.stats.unmatched > 0 && pager.filter.is_some() {
            tracing::warn!(
                base = %self.inner.base,
                filter = ?filter,
                unmatched = pager.stats.unmatched,
                "the server's filtered answer held resources that do not match: dropped"
            );
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
}
