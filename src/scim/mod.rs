//! SCIM 2.0 client (RFC 7643 / 7644, cursor pagination RFC 9865).
//!
//! `client` talks HTTP (auth, retries, paging, membership batching), `model`
//! holds the wire types, `path` parses attribute paths and extracts values
//! for matching.

pub mod auth;
pub mod client;
pub mod error;
pub mod model;
pub mod path;
pub mod retry;

pub use auth::Auth;
pub use client::{
    BulkOperation, BulkOutcome, ClientOptions, ListStats, MemberRemoval, Pager, RawResponse,
    ScimClient, Timeouts,
};
pub use error::{ErrorKind, ScimError};
pub use model::{Capabilities, Group, ListResponse, PatchOp, ServiceProviderConfig, User};
pub use path::AttrPath;
pub use retry::RetryPolicy;
