//! Integration tests of catalogsync against a real local control plane (etcd +
//! kube-apiserver, see `harness`) and real SCIM servers (see `scim_server`). One test
//! binary, so kube and tokio link once; one control plane shared by all tests, each test
//! in its own namespace.

mod app_status;
mod argocd;
mod clients;
mod controller;
mod crds;
mod deploy;
mod devrunner;
mod e2e;
mod examples;
mod faults;
mod harness;
mod helm;
mod interop;
mod job_pods;
mod monitoring;
mod node;
mod peers;
mod plan_approval;
mod provisioning;
mod rbac;
mod records;
mod scim_client;
mod scim_server;
mod sync_engine;
