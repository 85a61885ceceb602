//! DEVELOPMENT TOOLING, not for production: the product on one machine.
//!
//! - [`control_plane`]: etcd + kube-apiserver with certificates, CRDs and a kubeconfig
//!   (the integration tests' control plane, and `catalogsync dev up`'s);
//! - [`seed`]: deterministic, realistic SCIM data for an identity domain and apps, with
//!   the counts a synchronization must report;
//! - [`up`]: `catalogsync dev up`, everything at once in one process tree.
//!
//! The dev job runner (a stand-in for the kubelet) is [`crate::dev::runner`].

pub mod cli;
pub mod control_plane;
pub mod runner;
pub mod seed;
pub mod up;

pub use control_plane::{ControlPlane, find_assets, terminate_children};
