//! catalogsync: a Kubernetes operator for SaaS application provisioning and
//! synchronization into an identity domain, over SCIM 2.0.

// Unsafe code lives only in the development tooling (process control of the local
// control plane); the product itself has none.
#![cfg_attr(not(feature = "dev"), forbid(unsafe_code))]
#![cfg_attr(feature = "dev", deny(unsafe_code))]

pub mod api;
pub mod cli;
pub mod cluster;
pub mod controller;
#[cfg(feature = "dev")]
#[allow(unsafe_code)]
pub mod dev;
pub mod engine;
pub mod scim;
pub mod telemetry;
