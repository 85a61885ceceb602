//! Helpers shared by the benchmarks (`mod common;` in each): the token Secrets, the binary
//! under test's command line, the child's rusage, the machine's description.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use kube::Client;
use serde_json::json;

use crate::harness::create;

/// Creates the two bearer-token Secrets the benchmarks' IdentityDomain and apps refer to
/// (`idp-token`, `app-token`, key `token`), with `token(tenant)` as their value.
pub async fn token_secrets(
    client: &Client,
    ns: &str,
    token: impl Fn(&str) -> String,
) -> Result<()> {
    for (name, tenant) in [("idp-token", "idp"), ("app-token", "app")] {
        create::<k8s_openapi::api::core::v1::Secret>(
            client,
            ns,
            // Opted in as credentials, as catalogsync requires.
            json!({"metadata": {"name": name,
                                "labels": {"catalogsync.io/credentials": "true"}},
                   "stringData": {"token": token(tenant)}}),
        )
        .await?;
    }
    Ok(())
}

/// Waits for `pid` and returns its exit code and its own resource usage.
pub fn wait4(pid: libc::pid_t) -> Result<(i32, libc::rusage)> {
    let mut status = 0;
    // SAFETY: rusage is plain old data; wait4 fills it for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    if r != pid {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Ok((code, ru))
}

/// This run's scratch folder (the binary's copy, logs): `<tmp>/catalogsync-<what>-<pid>`.
pub fn scratch_dir(what: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("catalogsync-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The command line that starts the binary under test: `wrap` split on spaces, then a
/// private copy in `dir` of `binary`, or of the catalogsync cargo built with this
/// benchmark. A copy, taken at once: a shared CARGO_TARGET_DIR lets another checkout's
/// build replace target/release/catalogsync while the benchmark runs.
pub fn command_line(dir: &Path, binary: Option<&Path>, wrap: Option<&str>) -> Result<Vec<String>> {
    let built = binary.unwrap_or(Path::new(env!("CARGO_BIN_EXE_catalogsync")));
    let copy = dir.join("catalogsync");
    std::fs::copy(built, &copy).with_context(|| format!("copying {}", built.display()))?;
    let mut command: Vec<String> = wrap
        .map(|w| w.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    command.push(copy.display().to_string());
    Ok(command)
}

pub fn tv(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// nproc, CPU model, memory and load, for the figures' provenance.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kib| kib.parse::<f64>().ok())
        .map(|kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0))
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "machine: {nproc} CPUs ({cpu}), {mem} memory, load average {} at start",
        loadavg()
    )
}
