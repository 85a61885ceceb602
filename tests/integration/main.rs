//! Integration tests of catalogsync against a real local control plane
//! (etcd + kube-apiserver, see `harness`) and real SCIM servers (see `scim_server`).
//! One test binary, one control plane shared by all tests; each test works in its own
//! namespace.

mod clients;
mod crds;
mod deploy;
mod examples;
mod harness;
mod rbac;
mod scim_client;
mod scim_server;
mod sync_engine;
