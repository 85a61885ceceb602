//! The integration tests: one binary, so kube and tokio link once.

mod scim_client;
mod scim_server;
