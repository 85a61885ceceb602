//! SCIM 2.0 client (RFC 7643 / 7644, cursor pagination RFC 9865).
//!
//! - `client`: the [`ScimClient`] type, its options, construction and
//!   single-resource CRUD.
//! - `transport`: sending one request: auth header, concurrency limit, retry
//!   loop, error statuses turned into typed errors.
//! - `paging`: listing with pagination, by cursor or index, deduplicated by id.
//! - `membership`: group membership PATCHes, batched.
//! - `bulk`: Bulk requests and `create_many`.
//! - `auth`: credentials and the OAuth token cache.
//! - `retry`: the retry policy and `Retry-After` parsing.
//! - `error`: the error type.
//! - `model`: the wire types.
//! - `path`: attribute paths, parsed, and values extracted for matching.
//! - `schema`: the core and enterprise User attributes: multi-valued or not, sub-attributes.
//!
//! Nothing here imports the rest of the crate.

pub mod auth;
pub mod bulk;
pub mod client;
pub mod error;
#[cfg(test)]
mod fuzz;
pub mod membership;
pub mod model;
pub mod paging;
pub mod path;
pub mod retry;
pub mod schema;
pub mod transport;

pub use auth::Auth;
pub use bulk::{BulkOperation, BulkOutcome};
pub use client::{ClientOptions, ScimClient, Timeouts};
pub use error::{ErrorKind, ScimError};
pub use membership::MemberRemoval;
pub use model::{Capabilities, Group, ListResponse, PatchOp, ServiceProviderConfig, User};
pub use paging::{ListStats, Pager};
pub use path::AttrPath;
pub use retry::RetryPolicy;
pub use transport::RawResponse;
