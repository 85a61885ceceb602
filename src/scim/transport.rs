//! Sending one request: auth header, concurrency limit, retry loop with
//! backoff and `Retry-After`, and turning error statuses into typed errors.

use crate::scim::client::ScimClient;
use crate::scim::error::{ErrorKind, Result, ScimError};
use crate::scim::model::ErrorResponse;
use crate::scim::retry::parse_retry_after;
use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, StatusCode, header};
use serde::Deserialize;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

const SCIM_JSON: &str = "application/scim+json";

/// Why a redirect is an error: following it would send the credentials elsewhere.
pub(crate) const REDIRECT_REFUSED: &str = "the server redirected; redirects are not followed, so that credentials never go to another address: set the URL it redirects to";

/// A successful answer.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub etag: Option<String>,
    pub body: Bytes,
}

impl RawResponse {
    pub(super) fn json<T: for<'de> Deserialize<'de>>(&self, what: &str) -> Result<T> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ScimError::Protocol(format!("malformed JSON in {what}: {e}")))
    }

    /// The answer to a write the server accepted. One that cannot be parsed leaves what was
    /// stored unknown, as a lost answer does: the caller looks it up instead of guessing.
    pub(super) fn written<T: for<'de> Deserialize<'de>>(
        &self,
        method: &Method,
        path: &str,
    ) -> Result<T> {
        self.json(&format!("{method} {path}"))
            .map_err(|e| unknown_outcome(method, path, e))
    }
}

/// What came back for one attempt, whatever the status.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

pub(super) fn error_from(
    method: &Method,
    path: &str,
    status: StatusCode,
    body: &[u8],
) -> ScimError {
    if status.is_redirection() {
        return ScimError::Status {
            method: method.to_string(),
            path: path.to_string(),
            status: status.as_u16(),
            kind: ErrorKind::Other,
            scim_type: None,
            detail: REDIRECT_REFUSED.into(),
        };
    }
    let parsed: Option<ErrorResponse> = serde_json::from_slice(body).ok();
    let detail = parsed
        .as_ref()
        .and_then(|e| e.detail.as_deref())
        .map(short_text)
        .unwrap_or_else(|| {
            let text = short_text(&String::from_utf8_lossy(body));
            if text.is_empty() {
                status.canonical_reason().unwrap_or("").to_string()
            } else {
                text
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

/// Longest error detail kept in a message: a run's message is one line in `kubectl get`.
const MAX_DETAIL_CHARS: usize = 200;

/// An error body reduced to a short line: an HTML page (a framework's 500 page, a proxy's
/// error page) to its title, or else its text without tags; whitespace collapsed; cut at
/// [`MAX_DETAIL_CHARS`].
pub(crate) fn short_text(body: &str) -> String {
    let lower = body.to_ascii_lowercase();
    let looks_html = lower.trim_start().starts_with('<')
        && (lower.contains("<html") || lower.contains("<!doctype") || lower.contains("<body"));
    let text = if looks_html {
        let title = lower.find("<title>").and_then(|start| {
            let start = start + "<title>".len();
            let end = start + lower[start..].find("</title>")?;
            Some(body[start..end].to_string())
        });
        match title.filter(|t| !t.trim().is_empty()) {
            // A framework's error page is often titled by the app, not by the error.
            Some(t) => format!(
                "an HTML page titled {:?}",
                t.split_whitespace().collect::<Vec<_>>().join(" ")
            ),
            None => format!("an HTML page: {}", strip_tags(body)),
        }
    } else {
        body.to_string()
    };
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() > MAX_DETAIL_CHARS {
        let cut: String = text.chars().take(MAX_DETAIL_CHARS).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// The text of an HTML page, its tags, scripts and styles left out.
fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len().min(4096));
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        out.push(' ');
        let tail = &rest[open..];
        let lower = tail.get(..7).unwrap_or(tail).to_ascii_lowercase();
        // A script or style body is no message.
        let skip_to = if lower.starts_with("<script") {
            "</script>"
        } else if lower.starts_with("<style") {
            "</style>"
        } else {
            ">"
        };
        match tail.to_ascii_lowercase().find(skip_to) {
            Some(end) => rest = &tail[end + skip_to.len()..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// Whether a status is worth another try: throttling and transient server trouble.
fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
}

/// Whether a failed attempt may have been applied by the server: a status saying it was
/// not (throttled, unavailable, or any 4xx) is certain; an error, a gateway's or a lost
/// answer is not.
fn may_have_applied(answer: Result<StatusCode, &reqwest::Error>) -> bool {
    match answer {
        Ok(status) => matches!(status.as_u16(), 500 | 502 | 504),
        // Not connected: the request never left.
        Err(e) => !e.is_connect(),
    }
}

impl ScimClient {
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
            .map(|b| serde_json::to_vec(b).map(Bytes::from))
            .transpose()
            .map_err(|e| ScimError::Config(format!("request body of {method} {path}: {e}")))?;
        self.send_bytes(method, path, query, payload, if_match)
            .await
    }

    /// [`Self::send`] with a body already serialized.
    pub(super) async fn send_bytes(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        payload: Option<Bytes>,
        if_match: Option<&str>,
    ) -> Result<RawResponse> {
        let url = format!("{}{}", self.inner.base, path);
        let mut oauth_refreshed = false;
        let mut attempt: u32 = 0;
        // Some earlier attempt may have been applied: a later failure proves nothing.
        let mut maybe_applied = false;
        loop {
            attempt += 1;
            self.wait_for_pause().await;
            let request = self
                .build_request(&method, &url, query, payload.clone(), if_match)
                .await?;
            let started = Instant::now();
            let exchanged = tokio::select! {
                r = self.exchange(request) => r,
                _ = self.halt_deadline(started) => {
                    let halted = ScimError::Halted { method: method.to_string(), path: path.to_string() };
                    return Err(if method == Method::POST {
                        unknown_outcome(&method, path, halted)
                    } else {
                        halted
                    });
                }
            };
            let answer = match exchanged {
                Ok(answer) => answer,
                Err(e) => {
                    let ambiguous = may_have_applied(Err(&e));
                    let err = ScimError::Transport {
                        method: method.to_string(),
                        path: path.to_string(),
                        source: e,
                    };
                    if ambiguous && method == Method::POST {
                        return Err(unknown_outcome(&method, path, err));
                    }
                    maybe_applied |= ambiguous;
                    if attempt >= self.inner.opts.retry.max_attempts || !self.may_retry(&method) {
                        return Err(ScimError::RetriesExhausted {
                            attempts: attempt,
                            last: Box::new(err),
                        });
                    }
                    self.backoff(attempt, None).await;
                    continue;
                }
            };

            if answer.status.is_success() {
                return Ok(RawResponse {
                    status: answer.status.as_u16(),
                    etag: answer
                        .headers
                        .get(header::ETAG)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string),
                    body: answer.body,
                });
            }
            if answer.status == StatusCode::UNAUTHORIZED
                && self.inner.auth.is_oauth()
                && !oauth_refreshed
            {
                // The cached token may have been revoked or expired early: fetch one anew once.
                oauth_refreshed = true;
                self.inner.auth.invalidate().await;
                attempt -= 1;
                continue;
            }
            let ambiguous = may_have_applied(Ok(answer.status));
            if ambiguous && method == Method::POST {
                let err = error_from(&method, path, answer.status, &answer.body);
                return Err(unknown_outcome(&method, path, err));
            }
            let retry_after = match self.retry_after_failure(&method, path, &answer, attempt) {
                Ok(r) => r,
                // A final answer after an attempt that may have been applied: not a
                // certain refusal.
                Err(last @ ScimError::Status { .. }) if maybe_applied => {
                    return Err(ScimError::RetriesExhausted {
                        attempts: attempt,
                        last: Box::new(last),
                    });
                }
                Err(e) => return Err(e),
            };
            maybe_applied |= ambiguous;
            if !self.may_retry(&method) {
                // Stopping: no retries. The failure stands, as after the last attempt.
                return Err(ScimError::RetriesExhausted {
                    attempts: attempt,
                    last: Box::new(error_from(&method, path, answer.status, &answer.body)),
                });
            }
            self.backoff(attempt, retry_after).await;
        }
    }

    /// Whether a failed attempt may be retried: always before a halt; after it only a read
    /// (it changes nothing, and it settles a write whose answer was lost) within
    /// `HALT_DEADLINE` of the halt, so that its last attempt still ends within twice that.
    fn may_retry(&self, method: &Method) -> bool {
        match *self.inner.halted.borrow() {
            None => true,
            Some(at) => *method == Method::GET && at.elapsed() < crate::scim::client::HALT_DEADLINE,
        }
    }

    /// Resolves once a halted client's deadline for a request started at `started` has
    /// passed; never while the client is not halted.
    async fn halt_deadline(&self, started: Instant) {
        let mut halted = self.inner.halted.subscribe();
        let Ok(at) = halted.wait_for(Option::is_some).await.map(|h| *h) else {
            return std::future::pending().await;
        };
        let from = at.map_or(started, |at| at.max(started));
        tokio::time::sleep_until(from + crate::scim::client::HALT_DEADLINE).await;
    }

    /// One attempt's request: headers, query, body and credentials.
    async fn build_request(
        &self,
        method: &Method,
        url: &str,
        query: &[(&str, String)],
        // `Bytes`: every attempt shares one copy of a body that may be megabytes.
        payload: Option<Bytes>,
        if_match: Option<&str>,
    ) -> Result<RequestBuilder> {
        let mut rb = self
            .inner
            .http
            .request(method.clone(), url)
            .header(header::ACCEPT, SCIM_JSON);
        if !query.is_empty() {
            rb = rb.query(query);
        }
        if let Some(p) = payload {
            rb = rb.header(header::CONTENT_TYPE, SCIM_JSON).body(p);
        }
        if let Some(etag) = if_match {
            rb = rb.header(header::IF_MATCH, etag);
        }
        self.inner.auth.apply(&self.inner.http, rb).await
    }

    /// Sends the request and reads the whole answer under a permit.
    async fn exchange(&self, request: RequestBuilder) -> reqwest::Result<Answer> {
        // The permit covers only the exchange, not the backoff sleeps.
        let _permit = self.inner.permits.acquire().await.expect("semaphore open");
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        let resp = request.send().await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// After an error status: the error when it is final, else the server's
    /// `Retry-After` (if any) to wait before the next attempt.
    fn retry_after_failure(
        &self,
        method: &Method,
        path: &str,
        answer: &Answer,
        attempt: u32,
    ) -> Result<Option<Duration>> {
        let policy = &self.inner.opts.retry;
        let status = answer.status;
        let err = error_from(method, path, status, &answer.body);
        if !retryable_status(status) {
            return Err(err);
        }
        let retry_after = answer
            .headers
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
        Ok(retry_after)
    }

    async fn backoff(&self, attempt: u32, retry_after: Option<Duration>) {
        self.inner.retries.fetch_add(1, Ordering::Relaxed);
        let delay = match retry_after {
            Some(ra) => ra,
            None => self.inner.opts.retry.backoff(attempt, &mut rand::rng()),
        };
        // A halted client's read waits no longer than its halt window.
        let delay = match *self.inner.halted.borrow() {
            Some(at) => {
                let end = at + crate::scim::client::HALT_DEADLINE;
                delay.min(end.saturating_duration_since(Instant::now()))
            }
            None => delay,
        };
        tracing::debug!(base = %self.inner.base, attempt, ?delay, "retrying SCIM request");
        tokio::time::sleep(delay).await;
    }
}

/// A write whose answer was lost or cannot be read.
fn unknown_outcome(method: &Method, path: &str, last: ScimError) -> ScimError {
    ScimError::OutcomeUnknown {
        method: method.to_string(),
        path: path.to_string(),
        last: Box::new(last),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gateway_errors_and_lost_answers_may_have_been_applied() {
        for (status, maybe) in [
            (429, false),
            (503, false),
            (400, false),
            (500, true),
            (502, true),
            (504, true),
        ] {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(may_have_applied(Ok(status)), maybe, "{status}");
        }
    }

    #[test]
    fn an_unreadable_answer_to_a_write_leaves_its_outcome_unknown() {
        let answer = RawResponse {
            status: 201,
            etag: None,
            body: Bytes::from_static(br#"{"id": "abc", "userName": "#),
        };
        let e = answer
            .written::<Value>(&Method::POST, "/Users")
            .unwrap_err();
        assert!(e.is_outcome_unknown(), "{e}");
        assert!(e.to_string().contains("malformed JSON"), "{e}");
        let read = answer.json::<Value>("GET /Users").unwrap_err();
        assert!(
            matches!(read, ScimError::Protocol(_)),
            "a read stays a protocol error"
        );
        let whole = RawResponse {
            body: Bytes::from_static(br#"{"id": "abc"}"#),
            ..answer
        };
        let v: Value = whole.written(&Method::POST, "/Users").unwrap();
        assert_eq!(v["id"], "abc");
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
        assert!(e.to_string().ends_with(": an HTML page: proxy"), "{e}");
        // Canaille's 500 page for a `count` parameter: the title, not the page.
        let page = format!(
            "<!doctype html><html><head><title>500 Internal Server Error</title><style>p {{}}</style></head><body><h1>Internal Server Error</h1><p>{}</p></body></html>",
            "The server encountered an internal error. ".repeat(50)
        );
        let e = error_from(
            &Method::GET,
            "/Users",
            StatusCode::INTERNAL_SERVER_ERROR,
            page.as_bytes(),
        );
        assert_eq!(
            e.to_string(),
            "GET /Users: HTTP 500: an HTML page titled \"500 Internal Server Error\""
        );
        let e = error_from(
            &Method::GET,
            "/Users",
            StatusCode::BAD_GATEWAY,
            b"<html><body><h1>Bad\n  gateway</h1><script>x()</script></body></html>",
        );
        assert_eq!(
            e.to_string(),
            "GET /Users: HTTP 502: an HTML page: Bad gateway"
        );
        let long = format!(r#"{{"detail": "{}"}}"#, "x".repeat(5000));
        let e = error_from(
            &Method::GET,
            "/Users",
            StatusCode::BAD_REQUEST,
            long.as_bytes(),
        );
        assert!(e.to_string().len() < 300, "{e}");
        assert!(e.to_string().ends_with("x…"), "{e}");
        let e = error_from(&Method::GET, "/Users", StatusCode::FOUND, b"");
        assert!(e.to_string().contains("redirected"), "{e}");
        assert!(retryable_status(StatusCode::TOO_MANY_REQUESTS));
        assert!(!retryable_status(StatusCode::CONFLICT));
    }
}
