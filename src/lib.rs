//! catalogsync: a Kubernetes operator for SaaS application provisioning and
//! synchronization into an identity domain, over SCIM 2.0.
//!
//! # Architecture
//!
//! Users write IdentityDomains, CatalogApps, SyncPolicies and SyncRuns. The controller
//! reconciles them and, for every run, creates a Job; the Job's pod runs the engine
//! (`catalogsync sync --run NAMESPACE/NAME`), which talks SCIM to the identity domain and
//! the app and writes the run's progress and outcome into the SyncRun's status; the
//! controller mirrors the latest run into the CatalogApp's status.
//!
//! ```text
//!   kubectl / Argo CD / Flux
//!            │ apply                         status ▲
//!            ▼                                       │
//!   controller ──creates──▶ SyncRun ──▶ Job ──▶ engine ──SCIM──▶ identity domain, app
//!            ▲                                       │
//!            └──────── SyncRun status ◀──writes──────┘
//! ```
//!
//! # Modules, lowest layer first
//!
//! | module | what | may import |
//! |---|---|---|
//! | [`scim`] | SCIM 2.0 client: transport, paging, membership batching, Bulk, auth, retry, errors, model, paths | nothing of ours |
//! | [`api`] | the CRD types, the built-in catalog, durations, CRD and API-reference generation | `scim` (the User schema its admission rule on paths comes from) |
//! | [`cluster`] | what the controller and the Job share: the status writer, kstatus conditions, credentials, the exit-code contract | `api`, `scim` |
//! | [`engine`] | `catalogsync sync`: load, list → plan → check limits → apply, records, matching, mappings, progress, outcome | `api`, `cluster`, `scim` |
//! | [`controller`] | `catalogsync controller`: runtime and watches, one module per kind, the Job builder, schedules, leader election, metrics and HTTP | `api`, `cluster`, `scim` |
//! | [`dev`] | development tooling (feature `dev`): local control plane, seed data, `dev up`, the development job runner | everything |
//! | [`cli`], [`telemetry`] | the command line and logging | everything |
//!
//! `engine` and `controller` never import each other: what both need lives in `cluster`.
//! The layering is checked by a unit test (`layers_import_downward`).

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

#[cfg(test)]
mod layers;
