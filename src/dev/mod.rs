//! DEVELOPMENT TOOLING, not for production: the product on one machine.
//!
//! - [`control_plane`]: etcd + kube-apiserver with certificates, CRDs and a kubeconfig
//!   (the integration tests' control plane, and `catalogsync dev up`'s);
//! - [`seed`]: deterministic, realistic SCIM data for an identity domain and apps, with
//!   the counts a synchronization must report;
//! - [`up`]: `catalogsync dev up`, everything at once in one process tree;
//! - [`runner`]: the development job runner, which runs the sync Jobs of a control plane
//!   without a kubelet as processes on this machine;
//! - [`cli`]: the `dev up` and `dev-job-runner` subcommands.
//!
//! Compiled only with the cargo feature `dev` (the test, demo and benchmark commands turn
//! it on; the release image leaves it out), and the only place of `unsafe` code (process
//! control through libc).

pub mod cli;
pub mod control_plane;
pub mod runner;
pub mod seed;
pub mod up;

pub use control_plane::{ControlPlane, find_assets, terminate_children};
