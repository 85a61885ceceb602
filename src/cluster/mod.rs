//! What the controller and the sync Job share.

pub mod conditions;
pub mod credentials;
pub mod exit_code;
pub mod status;
