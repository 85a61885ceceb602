//! What the controller and the sync Job share, so that neither imports the other:
//!
//! - [`status`]: the server-side-apply status writer (field managers, patches);
//! - [`conditions`]: kstatus conditions (`Ready`, `Reconciling`, `Stalled`) and their
//!   bookkeeping;
//! - [`credentials`]: Secret references ↔ the Job's environment, resolved into SCIM
//!   authentication;
//! - [`exit_code`]: the Job ↔ controller contract of the engine's exit codes.
//! - [`groups`]: the app's grant and record groups and the ownership rule for them.
//! - [`mappings`]: attribute mappings checked against the User schema.

pub mod conditions;
pub mod credentials;
pub mod exit_code;
pub mod groups;
pub mod mappings;
pub mod status;
