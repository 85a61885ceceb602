//! Exit codes of `catalogsync sync`. The Job's podFailurePolicy maps
//! [`LIMIT_EXCEEDED`] to FailJob, so a run stopped on a limit is never retried.

/// The run succeeded (or a plan was computed).
pub const SUCCESS: u8 = 0;
/// The run failed; the Job may retry within its backoffLimit.
pub const FAILED: u8 = 1;
/// Bad invocation or configuration that retrying cannot fix.
pub const INVALID: u8 = 2;
/// The run stopped on a limit (`LimitExceeded`).
pub const LIMIT_EXCEEDED: u8 = 3;
/// The run was cancelled by the controller (SIGTERM after it marked the run) and wrote its
/// final status. A SIGTERM without that mark ends the run `Interrupted`, [`INVALID`].
pub const CANCELLED: u8 = 4;
