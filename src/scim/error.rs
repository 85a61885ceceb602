//! Typed SCIM client errors. Messages carry method, path, status and the
//! server's SCIM `detail`, never credentials.

use crate::scim::path::PathError;

/// A transport error with its causes: reqwest's own message ("error sending request for
/// url ...") hides why (an untrusted certificate, a refused connection), which an operator
/// reading a condition needs.
fn with_causes(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let m = c.to_string();
        if !text.contains(&m) {
            text.push_str(": ");
            text.push_str(&m);
        }
        cause = c.source();
    }
    text
}

/// Coarse classes of HTTP failures, so callers can branch without matching codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    /// 409: a unique value (e.g. userName) is taken, or a version conflict.
    Conflict,
    /// 412: the `If-Match` version is stale.
    PreconditionFailed,
    PayloadTooLarge,
    RateLimited,
    Server,
    Other,
}

impl ErrorKind {
    pub fn from_status(status: u16) -> Self {
        match status {
            400 => ErrorKind::BadRequest,
            401 => ErrorKind::Unauthorized,
            403 => ErrorKind::Forbidden,
            404 => ErrorKind::NotFound,
            409 => ErrorKind::Conflict,
            412 => ErrorKind::PreconditionFailed,
            413 => ErrorKind::PayloadTooLarge,
            429 => ErrorKind::RateLimited,
            500..=599 => ErrorKind::Server,
            _ => ErrorKind::Other,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScimError {
    /// The server answered with an error status.
    #[error("{method} {path}: HTTP {status}{}: {detail}", scim_type.as_ref().map(|t| format!(" ({t})")).unwrap_or_default())]
    Status {
        method: String,
        path: String,
        status: u16,
        kind: ErrorKind,
        scim_type: Option<String>,
        detail: String,
    },
    /// The request could not be sent or its answer not read.
    #[error("{method} {path}: {}", with_causes(source))]
    Transport {
        method: String,
        path: String,
        #[source]
        source: reqwest::Error,
    },
    /// Retryable failures went on past the retry budget, or an attempt failed for good after
    /// an earlier one may have been applied: either way the write may have happened.
    #[error("gave up after {attempts} attempts: {last}")]
    RetriesExhausted { attempts: u32, last: Box<ScimError> },
    /// A create was sent and its answer lost (a timeout, a reset, a gateway error), or a
    /// write's success answer cannot be parsed: it may have been (or was) applied, so it is
    /// not sent again; the caller looks the object up.
    #[error("{method} {path}: the outcome is unknown (the answer was lost): {last}")]
    OutcomeUnknown {
        method: String,
        path: String,
        last: Box<ScimError>,
    },
    /// The server asked to wait longer than the client is willing to.
    #[error("{method} {path}: rate limited, server asks to wait {seconds}s (limit {limit}s)")]
    RetryAfterTooLong {
        method: String,
        path: String,
        seconds: u64,
        limit: u64,
    },
    /// The client was halted (its run is stopping) and the request ran past the deadline,
    /// or would have been retried.
    #[error("{method} {path}: given up, the run is stopping")]
    Halted { method: String, path: String },
    /// The answer breaks the protocol: malformed JSON, pages contradicting totalResults…
    #[error("SCIM protocol violation: {0}")]
    Protocol(String),
    /// Obtaining credentials failed (OAuth2 token endpoint).
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("invalid SCIM client configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Path(#[from] PathError),
}

impl ScimError {
    /// The HTTP error class, looking through exhausted retries.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            ScimError::Status { kind, .. } => Some(*kind),
            ScimError::RetriesExhausted { last, .. } => last.kind(),
            ScimError::RetryAfterTooLong { .. } => Some(ErrorKind::RateLimited),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ScimError::Status { status, .. } => Some(*status),
            ScimError::RetriesExhausted { last, .. } => last.status(),
            _ => None,
        }
    }

    /// True for 409 — "create met an existing user", which the engine settles by a lookup.
    pub fn is_conflict(&self) -> bool {
        self.kind() == Some(ErrorKind::Conflict)
    }

    /// True when a write may have been applied although no readable answer said so.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, ScimError::OutcomeUnknown { .. })
    }

    /// True for 404: the resource is not there (a DELETE whose answer was lost succeeded).
    pub fn is_not_found(&self) -> bool {
        self.kind() == Some(ErrorKind::NotFound)
    }

    /// True for 409 with scimType `uniqueness` (RFC 7644 §3.12), or 409 without scimType.
    pub fn is_uniqueness(&self) -> bool {
        match self {
            ScimError::Status {
                status: 409,
                scim_type,
                ..
            } => scim_type.as_deref().is_none_or(|t| t == "uniqueness"),
            ScimError::RetriesExhausted { last, .. } => last.is_uniqueness(),
            _ => false,
        }
    }

    pub fn scim_type(&self) -> Option<&str> {
        match self {
            ScimError::Status { scim_type, .. } => scim_type.as_deref(),
            ScimError::RetriesExhausted { last, .. } => last.scim_type(),
            _ => None,
        }
    }
}

pub type Result<T, E = ScimError> = std::result::Result<T, E>;
