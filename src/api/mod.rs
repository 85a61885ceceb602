//! The catalogsync.io/v1alpha1 API: the four kinds users write in YAML.

pub mod apidocs;
pub mod catalog;
pub mod catalog_app;
pub mod common;
pub mod crdgen;
mod duration;
pub mod identity_domain;
pub mod sync_policy;
pub mod sync_run;

pub use catalog_app::*;
pub use common::*;
pub use duration::parse_duration;
pub use identity_domain::*;
pub use sync_policy::*;
pub use sync_run::*;
