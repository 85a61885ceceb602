//! Logging setup: human-readable by default, JSON for log pipelines.

use clap::ValueEnum;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. `RUST_LOG` overrides the default level (info).
pub fn init(format: LogFormat) {
    init_with_default(format, "info,kube_runtime=warn,kube_client=warn");
}

/// Like [`init`], with another default filter when `RUST_LOG` is unset.
pub fn init_with_default(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let registry = tracing_subscriber::registry().with(filter);
    // A second init (tests) is harmless, so the error is ignored.
    let _ = match format {
        LogFormat::Human => registry.with(fmt::layer().with_target(false)).try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true))
            .try_init(),
    };
}

/// This process's peak resident memory in KiB (`VmHWM`), where `/proc` has it. Not
/// `getrusage`: its `ru_maxrss` keeps the peak of the image we were exec'ed from, which
/// for a child spawned by a large process is the parent's.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    vm_hwm_kib(&status)
}

/// `VmHWM` of a `/proc/<pid>/status` text.
pub fn vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn peak_rss_is_read_from_proc_status() {
        let status = "Name:\tcatalogsync\nVmPeak:\t  900 kB\nVmHWM:\t   67564 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(super::vm_hwm_kib(status), Some(67564));
        assert_eq!(super::vm_hwm_kib("VmRSS: 1 kB"), None);
        if cfg!(target_os = "linux") {
            assert!(super::peak_rss_kib().is_some_and(|k| k > 0));
        }
    }
}
