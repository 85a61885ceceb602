//! catalogsync: a Kubernetes operator for SaaS application provisioning and
//! synchronization into an identity domain, over SCIM 2.0.

pub mod api;
pub mod apidocs;
pub mod budget;
pub mod catalog;
pub mod cli;
pub mod conditions;
pub mod controller;
pub mod crdgen;
pub mod credentials;
pub mod dev;
pub mod devrunner;
pub mod exit_code;
pub mod http;
pub mod job_builder;
pub mod leader;
pub mod mapping;
pub mod matching;
pub mod metrics;
pub mod plan;
pub mod records;
pub mod schedule;
pub mod scim;
pub mod status;
pub mod sync;
pub mod telemetry;
