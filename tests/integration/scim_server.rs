//! Starts the real SCIM test server (`hack/scim/serve.py`, scim2-server in a
//! virtualenv made by `hack/scim/setup.sh`) and the fault proxy
//! (`hack/scim/faultproxy.py`) for tests. Both die when dropped, and when the
//! test process dies (they exit on stdin EOF).

#![allow(dead_code)] // a shared helper: each test module uses part of it

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python, made once per test process.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo_root().join("hack/scim/setup.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run hack/scim/setup.sh");
        assert!(out.status.success(), "hack/scim/setup.sh failed");
        let stdout = String::from_utf8(out.stdout).expect("utf-8 from setup.sh");
        PathBuf::from(stdout.lines().last().expect("python path line").trim())
    })
}

/// Spawns a python script and waits for its `<PREFIX> port=<n>` line.
fn spawn_ready(
    script: &str,
    args: &[String],
    env: &[(&str, String)],
    prefix: &str,
) -> (Child, u16) {
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("hack/scim").join(script))
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    spawn_command_ready(cmd, script, prefix, READY_TIMEOUT)
}

/// Spawns a server (told to exit when its stdin closes) and waits for its
/// `<PREFIX> port=<n>` line.
pub(crate) fn spawn_command_ready(
    mut cmd: Command,
    what: &str,
    prefix: &str,
    timeout: Duration,
) -> (Child, u16) {
    cmd.arg("--exit-on-stdin-eof")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let script = what;
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {script}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    let prefix = prefix.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(port) = line
                .strip_prefix(&prefix)
                .and_then(|r| r.trim().strip_prefix("port="))
            {
                let _ = tx.send(port.trim().parse::<u16>().ok());
            }
        }
    });
    match rx.recv_timeout(timeout) {
        Ok(Some(port)) => (child, port),
        other => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{script} did not become ready: {other:?}");
        }
    }
}

pub(crate) fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// One tenant of the test server.
#[derive(Debug, Clone)]
pub struct TenantSpec {
    pub name: String,
    pub token: String,
    /// Advertise and default to cursor pagination (RFC 9865).
    pub cursor: bool,
    pub basic: Option<(String, String)>,
    pub oauth_client: Option<(String, String)>,
    /// Advertise no Bulk / no ETag support.
    pub no_bulk: bool,
    pub no_etag: bool,
}

impl TenantSpec {
    /// A tenant whose bearer token is `token-<name>`.
    pub fn new(name: &str) -> Self {
        TenantSpec {
            name: name.to_string(),
            token: format!("token-{name}"),
            cursor: false,
            basic: None,
            oauth_client: None,
            no_bulk: false,
            no_etag: false,
        }
    }

    pub fn no_bulk(mut self) -> Self {
        self.no_bulk = true;
        self
    }

    pub fn no_etag(mut self) -> Self {
        self.no_etag = true;
        self
    }

    pub fn cursor(mut self) -> Self {
        self.cursor = true;
        self
    }

    pub fn basic(mut self, user: &str, password: &str) -> Self {
        self.basic = Some((user.into(), password.into()));
        self
    }

    pub fn oauth_client(mut self, id: &str, secret: &str) -> Self {
        self.oauth_client = Some((id.into(), secret.into()));
        self
    }
}

/// A running `serve.py`, killed on drop.
pub struct ScimServer {
    child: Child,
    /// The address it listens on (127.0.0.1 unless started with `start_on`).
    pub host: String,
    pub port: u16,
    tenants: BTreeMap<String, TenantSpec>,
    http: reqwest::Client,
}

impl ScimServer {
    /// Tenants with bearer tokens `token-<name>`, index pagination.
    pub fn start(tenants: &[&str]) -> Self {
        Self::start_with(tenants.iter().map(|t| TenantSpec::new(t)).collect(), None)
    }

    pub fn start_with(tenants: Vec<TenantSpec>, max_results: Option<u64>) -> Self {
        Self::start_on("127.0.0.1", tenants, max_results)
    }

    /// Listening on `host` (e.g. the local node's bridge address, which pods reach).
    pub fn start_on(host: &str, tenants: Vec<TenantSpec>, max_results: Option<u64>) -> Self {
        let mut auth = serde_json::Map::new();
        let mut args = Vec::new();
        for t in &tenants {
            let mut spec = json!({"bearer": [t.token]});
            if let Some((u, p)) = &t.basic {
                spec["basic"] = json!({ u: p });
            }
            if let Some((id, secret)) = &t.oauth_client {
                spec["clients"] = json!({ id: secret });
            }
            auth.insert(t.name.clone(), spec);
            args.push(t.name.clone());
            for (on, flag) in [
                (t.cursor, "--cursor"),
                (t.no_bulk, "--no-bulk"),
                (t.no_etag, "--no-etag"),
            ] {
                if on {
                    args.extend([flag.to_string(), t.name.clone()]);
                }
            }
        }
        if let Some(m) = max_results {
            args.extend(["--max-results".to_string(), m.to_string()]);
        }
        args.extend(["--host".to_string(), host.to_string()]);
        // Credentials go through the environment, never the command line (ps shows it).
        let env = [("SCIM_AUTH", Value::Object(auth).to_string())];
        let (child, port) = spawn_ready("serve.py", &args, &env, "SCIM_READY");
        ScimServer {
            child,
            host: host.to_string(),
            port,
            tenants: tenants.into_iter().map(|t| (t.name.clone(), t)).collect(),
            http: reqwest::Client::new(),
        }
    }

    /// `http://<host>:<port>`, the server root (what a proxy forwards to).
    pub fn root(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// The SCIM base URL of a tenant.
    pub fn base_url(&self, tenant: &str) -> String {
        assert!(self.tenants.contains_key(tenant), "unknown tenant {tenant}");
        format!("{}/{tenant}/scim/v2", self.root())
    }

    pub fn token(&self, tenant: &str) -> String {
        self.tenants[tenant].token.clone()
    }

    /// The tenant's OAuth2 client-credentials token endpoint.
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/token", self.root())
    }

    async fn admin(&self, tenant: &str, action: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(format!("{}/_admin/{tenant}/{action}", self.root()))
            .bearer_auth(self.token(tenant))
            .json(&body)
            .send()
            .await
            .expect("admin request");
        let status = resp.status();
        let v: Value = resp.json().await.expect("admin JSON");
        assert!(
            status.is_success(),
            "admin {action} on {tenant}: {status} {v}"
        );
        v
    }

    /// Generates `count` users `<prefix>000000…` (name, primary work email)
    /// straight into the tenant's storage; returns their ids.
    pub async fn seed_users(&self, tenant: &str, prefix: &str, count: usize) -> Vec<String> {
        self.seed(
            tenant,
            json!({"generate": {"count": count, "prefix": prefix}, "returnIds": true}),
        )
        .await
    }

    /// Loads `{"Users": [...], "Groups": [...]}` straight into the storage; returns the ids.
    pub async fn seed(&self, tenant: &str, body: Value) -> Vec<String> {
        let v = self.admin(tenant, "seed", body).await;
        serde_json::from_value(v["ids"].clone()).unwrap_or_default()
    }

    pub async fn reset(&self, tenant: &str) {
        self.admin(tenant, "reset", json!({})).await;
    }

    /// The tenant's SCIM requests answered so far, by method: `{"GET": n, ...}`.
    pub async fn requests(&self, tenant: &str) -> Value {
        self.admin(tenant, "stats", json!({})).await["requests"].clone()
    }
}

impl Drop for ScimServer {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Writes a throwaway CA (`ca.pem`) and a certificate for 127.0.0.1
/// (`server.pem`, `server.key`) into `dir`.
pub fn generate_certs(dir: &Path) {
    let status = Command::new(python())
        .arg(repo_root().join("hack/scim/gencert.py"))
        .arg(dir)
        .status()
        .expect("run gencert.py");
    assert!(status.success(), "gencert.py failed");
}

/// A running `faultproxy.py` in front of a server root, killed on drop.
pub struct FaultProxy {
    child: Child,
    pub port: u16,
    scheme: &'static str,
    http: reqwest::Client,
}

impl FaultProxy {
    pub fn start(upstream_root: &str) -> Self {
        Self::start_with(upstream_root, None)
    }

    /// With `tls_dir` (from [`generate_certs`]) the proxy serves HTTPS.
    pub fn start_with(upstream_root: &str, tls_dir: Option<&Path>) -> Self {
        let mut args = vec!["--upstream".to_string(), upstream_root.to_string()];
        let mut http = reqwest::Client::builder();
        if let Some(dir) = tls_dir {
            args.push("--tls-cert".into());
            args.push(dir.join("server.pem").display().to_string());
            args.push("--tls-key".into());
            args.push(dir.join("server.key").display().to_string());
            let ca = std::fs::read(dir.join("ca.pem")).expect("ca.pem");
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA"));
        }
        let (child, port) = spawn_ready("faultproxy.py", &args, &[], "FAULTPROXY_READY");
        FaultProxy {
            child,
            port,
            scheme: if tls_dir.is_some() { "https" } else { "http" },
            http: http.build().expect("HTTP client"),
        }
    }

    pub fn root(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    /// The SCIM base URL of a tenant, through the proxy.
    pub fn base_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/scim/v2", self.root())
    }

    /// Replaces the fault plan and zeroes the counters, e.g.
    /// `json!({"fail": {"1": 429, "2": 503, "3": "drop"}, "retryAfter": "1"})`.
    pub async fn plan(&self, plan: Value) {
        let mut plan = plan;
        plan["reset"] = json!(true);
        let resp = self
            .http
            .post(format!("{}/_fault", self.root()))
            .json(&plan)
            .send()
            .await
            .expect("fault plan");
        assert!(resp.status().is_success());
    }

    /// `{"requests": n, "injected": {"429": k, ...}}` since the last plan.
    pub async fn stats(&self) -> Value {
        self.http
            .get(format!("{}/_fault", self.root()))
            .send()
            .await
            .expect("fault stats")
            .json()
            .await
            .expect("fault stats JSON")
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}
