//! Real SCIM peers besides scim2-server, started for the interop tests: scimmy (npm
//! `scimmy` + `scimmy-routers`, `hack/scimmy/server.js`, modules from
//! `hack/scimmy/setup.sh`) and Canaille (PyPI `canaille`, `hack/canaille/serve.py` in the
//! venv `hack/scim/setup.sh hack/canaille/requirements.txt` makes). Both listen on
//! 127.0.0.1 only, die when dropped and when the test process dies (stdin EOF).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::scim_server::{repo_root, spawn_command_ready, stop};

/// The last stdout line of a setup script (a path).
fn setup(script: &str, args: &[&str]) -> PathBuf {
    let out = Command::new("bash")
        .arg(repo_root().join(script))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    assert!(out.status.success(), "{script} failed");
    let stdout = String::from_utf8(out.stdout).expect("utf-8 from a setup script");
    PathBuf::from(stdout.lines().last().expect("a path line").trim())
}

/// A running peer, killed on drop.
pub struct Peer {
    child: Child,
    pub port: u16,
    token: String,
}

impl Peer {
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/scim/v2", self.port)
    }

    pub fn token(&self) -> String {
        self.token.clone()
    }

    /// scimmy's requests so far by method and endpoint: `{"POST Bulk": 1, …}`.
    pub async fn requests(&self) -> serde_json::Value {
        let stats: serde_json::Value = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/_admin/stats", self.port))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("scimmy stats")
            .json()
            .await
            .expect("scimmy stats JSON");
        stats["requests"].clone()
    }
}

impl Drop for Peer {
    /// Closing stdin lets the peer stop what it started (Canaille's server processes) and
    /// clean up; killed only if it has not exited in time.
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        stop(&mut self.child);
    }
}

/// scimmy with pages of at most `max_results` (its `filter.maxResults`).
pub fn scimmy(max_results: u64) -> Peer {
    scimmy_with(max_results, &[])
}

/// scimmy with more flags of `hack/scimmy/server.js` (`--ignore-filters`).
pub fn scimmy_with(max_results: u64, flags: &[&str]) -> Peer {
    static MODULES: OnceLock<PathBuf> = OnceLock::new();
    let modules = MODULES.get_or_init(|| setup("hack/scimmy/setup.sh", &[]));
    let token = "token-scimmy".to_string();
    let mut cmd = Command::new("node");
    cmd.arg(repo_root().join("hack/scimmy/server.js"))
        .args(["--max-results", &max_results.to_string()])
        .args(flags)
        .env("NODE_PATH", modules)
        .env("SCIM_TOKEN", &token);
    let (child, port) = spawn_command_ready(cmd, "scimmy", "SCIMMY_READY", Duration::from_secs(60));
    Peer { child, port, token }
}

/// Canaille on an empty database (it takes some seconds to start: install, client, token).
pub fn canaille() -> Peer {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    let python = PYTHON.get_or_init(|| {
        let requirements = repo_root().join("hack/canaille/requirements.txt");
        setup(
            "hack/scim/setup.sh",
            &[requirements.to_str().expect("a UTF-8 path")],
        )
    });
    let token = "token-canaille".to_string();
    let mut cmd = Command::new(python);
    cmd.arg(repo_root().join("hack/canaille/serve.py"))
        .env("SCIM_TOKEN", &token);
    let (child, port) =
        spawn_command_ready(cmd, "canaille", "CANAILLE_READY", Duration::from_secs(180));
    Peer { child, port, token }
}
