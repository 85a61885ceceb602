//! catalogsync: a Kubernetes operator for SaaS application provisioning and
//! synchronization into an identity domain, over SCIM 2.0.

pub mod api;
pub mod apidocs;
pub mod budget;
pub mod catalog;
pub mod conditions;
pub mod crdgen;
pub mod credentials;
pub mod exit_code;
pub mod mapping;
pub mod matching;
pub mod plan;
pub mod scim;
pub mod status;
pub mod sync;
pub mod telemetry;
