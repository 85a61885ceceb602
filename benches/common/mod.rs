//! Helpers shared by the benchmarks (`mod common;` in each): object creation, the child's
//! rusage, the machine's description.

use anyhow::{Result, bail};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

/// Creates a namespaced object of kind `K` from JSON (apiVersion and kind added).
pub async fn create<K>(client: &Client, ns: &str, mut v: Value) -> Result<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    v["apiVersion"] = json!(K::api_version(&()));
    v["kind"] = json!(K::kind(&()));
    let obj: K = serde_json::from_value(v)?;
    Ok(Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &obj)
        .await?)
}

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
            json!({"metadata": {"name": name}, "stringData": {"token": token(tenant)}}),
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
