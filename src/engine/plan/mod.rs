//! The plans, one per direction: pure functions from what was listed to the writes.

pub mod import;
pub mod provision;

pub use import::*;
