//! The catalogsync.io/v1alpha1 API: the four kinds users write in YAML, and what is
//! derived from them alone. It imports nothing else of the crate but the SCIM User schema
//! ([`crate::scim`]), which its admission rule on attribute paths is generated from.
//!
//! - the kinds: [`identity_domain`], [`catalog_app`], [`sync_policy`], [`sync_run`], and
//!   the types they share ([`common`]);
//! - [`catalog`]: the built-in app catalog (`catalog/*.yaml`, compiled in);
//! - [`parse_duration`]: durations as specs write them (`90m`);
//! - [`crdgen`] and [`apidocs`]: the CRDs and the API reference, generated from the types;
//! - [`attribute_path`]: the admission rule on mapping paths, from the User schema.

pub mod apidocs;
pub mod attribute_path;
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
