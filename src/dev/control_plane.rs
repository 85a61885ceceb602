//! DEVELOPMENT TOOLING, not for production: a local control plane (etcd +
//! kube-apiserver) for the integration tests and `catalogsync dev up`.
//!
//! [`ControlPlane::start`] generates a CA, a serving certificate, the
//! service-account signing key and an admin token in a directory, starts both
//! binaries on free ports, waits for `/readyz`, installs the CRDs and writes an
//! admin kubeconfig. There is no controller-manager and no kubelet: namespaces
//! are never garbage-collected and Jobs get no Pods (the dev job runner stands in).
//!
//! The children die with the process that started them: they get
//! `PR_SET_PDEATHSIG`, which fires when the *spawning thread* ends, so callers
//! start them from a thread that lives as long as they need the control plane.
//! [`terminate_children`] stops them gracefully.

use std::{
    fs,
    io::{self, Write as _},
    net::TcpListener,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Client, Config,
    api::{Api, Patch, PatchParams},
    runtime::wait::{await_condition, conditions},
};

/// Field manager of what the control plane installs (the CRDs).
pub const FIELD_MANAGER: &str = "catalogsync-tests";

/// How to get the binaries, for error messages.
pub const HOW_TO_GET_BINARIES: &str = "the local control plane needs kube-apiserver and etcd: \
     run `hack/envtest.sh` (builds them from the pinned Go modules; needs Go) and \
     `export KUBEBUILDER_ASSETS=\"$(hack/envtest.sh)\"`, or point KUBEBUILDER_ASSETS at a \
     directory that contains both binaries";

/// A running etcd + kube-apiserver, with the CRDs established.
pub struct ControlPlane {
    dir: PathBuf,
    server: String,
    ca_der: Vec<u8>,
    admin_token: String,
    kubeconfig: PathBuf,
}

impl ControlPlane {
    /// Starts a control plane whose files (certificates, data, logs, kubeconfig)
    /// live in `dir`, with the binaries of `assets`, and installs `crds`.
    pub async fn start(
        assets: &Path,
        dir: &Path,
        crds: &[CustomResourceDefinition],
    ) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let admin_token = format!("{:032x}", rand::random::<u128>());
        let ca_der = write_credentials(dir, &admin_token)?;
        // Free ports can be taken by someone else between probing and binding;
        // a retry with fresh ports covers that race.
        let mut last_error = None;
        for _ in 0..3 {
            match Self::launch(assets, dir, &ca_der, &admin_token, crds).await {
                Ok(cp) => return Ok(cp),
                Err(e) => {
                    terminate_children();
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    async fn launch(
        assets: &Path,
        dir: &Path,
        ca_der: &[u8],
        admin_token: &str,
        crds: &[CustomResourceDefinition],
    ) -> Result<Self> {
        let [etcd_port, peer_port, api_port] = free_ports()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let mut etcd = spawn_etcd(assets, dir, etcd_port, peer_port)?;
        let mut apiserver = spawn_apiserver(assets, dir, &etcd_url, api_port)?;
        let cp = ControlPlane {
            dir: dir.to_path_buf(),
            server: format!("https://127.0.0.1:{api_port}"),
            ca_der: ca_der.to_vec(),
            admin_token: admin_token.to_string(),
            kubeconfig: dir.join("kubeconfig"),
        };
        cp.write_kubeconfig()?;
        let admin = cp.admin_client();
        cp.wait_ready(&admin, &mut etcd, &mut apiserver).await?;
        install_crds(&admin, crds).await?;
        Ok(cp)
    }

    /// Waits until the apiserver says `ok` on /readyz, failing early with the log's end
    /// when etcd or the apiserver exits.
    async fn wait_ready(
        &self,
        admin: &Client,
        etcd: &mut Child,
        apiserver: &mut Child,
    ) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            for (name, child) in [("etcd", &mut *etcd), ("kube-apiserver", &mut *apiserver)] {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "{name} exited with {status} during startup; end of its log:\n{}",
                        log_tail(&self.dir.join(format!("{name}.log")))
                    );
                }
            }
            let readyz = http::Request::get("/readyz").body(Vec::new())?;
            match admin.request_text(readyz).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                _ if Instant::now() > deadline => bail!(
                    "kube-apiserver not ready after 120s; end of its log:\n{}",
                    log_tail(&self.dir.join("kube-apiserver.log"))
                ),
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    fn write_kubeconfig(&self) -> Result<()> {
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: admin\n  user:\n    token: {}\ncontexts:\n- name: envtest\n  context:\n    cluster: envtest\n    user: admin\n    namespace: default\ncurrent-context: envtest\n",
            self.server,
            self.dir.join("ca.crt").display(),
            self.admin_token
        );
        write_private(&self.kubeconfig, kubeconfig.as_bytes())
    }

    /// The directory holding the control plane's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The admin kubeconfig, for `kubectl` and other tools.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// A client authenticated as cluster admin (group `system:masters`).
    ///
    /// A new client for each call: a client belongs to the runtime that made
    /// it, and every `#[tokio::test]` has its own runtime.
    pub fn admin_client(&self) -> Client {
        self.client_with_token(&self.admin_token)
    }

    /// A client that sends `token` as its bearer token.
    pub fn client_with_token(&self, token: &str) -> Client {
        let mut config = Config::new(self.server.parse().expect("server URL"));
        config.root_cert = Some(vec![self.ca_der.clone()]);
        config.auth_info =
            serde_json::from_value(serde_json::json!({ "token": token })).expect("auth info");
        Client::try_from(config).expect("client from config")
    }
}

/// etcd on 127.0.0.1:`etcd_port`, its data in `dir` (disposable).
fn spawn_etcd(assets: &Path, dir: &Path, etcd_port: u16, peer_port: u16) -> Result<Child> {
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let data = dir.join(format!("etcd-{etcd_port}"));
    spawn_child(
        "etcd",
        &assets.join("etcd"),
        &[
            "--name=envtest".into(),
            format!("--data-dir={}", data.display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=envtest={peer_url}"),
            // The data is disposable; fsync only slows things down.
            "--unsafe-no-fsync".into(),
            "--log-level=warn".into(),
        ],
        &[],
        dir,
    )
}

/// kube-apiserver on 127.0.0.1:`api_port`, with the certificates and tokens in `dir`.
fn spawn_apiserver(assets: &Path, dir: &Path, etcd_url: &str, api_port: u16) -> Result<Child> {
    let d = |name: &str| dir.join(name).display().to_string();
    spawn_child(
        "kube-apiserver",
        &assets.join("kube-apiserver"),
        &[
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", d("apiserver")),
            format!("--tls-cert-file={}", d("serving.crt")),
            format!("--tls-private-key-file={}", d("serving.key")),
            format!("--token-auth-file={}", d("tokens.csv")),
            "--authorization-mode=RBAC".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", d("sa.pub")),
            format!("--service-account-signing-key-file={}", d("sa.key")),
            // No token controller runs, so Pods must not wait for token Secrets.
            "--disable-admission-plugins=ServiceAccount".into(),
            "--allow-privileged=true".into(),
            // Fairness queues only add latency on a single-tenant server.
            "--enable-priority-and-fairness=false".into(),
        ],
        &[],
        dir,
    )
}

/// Server-side applies the CRDs and waits until each is Established.
pub async fn install_crds(client: &Client, crds: &[CustomResourceDefinition]) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        let name = crd.metadata.name.as_deref().context("CRD without a name")?;
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(crd),
        )
        .await
        .with_context(|| format!("installing CRD {name}"))?;
    }
    for crd in crds {
        let name = crd.metadata.name.as_deref().unwrap_or_default();
        let established = await_condition(api.clone(), name, conditions::is_crd_established());
        tokio::time::timeout(Duration::from_secs(30), established)
            .await
            .with_context(|| format!("CRD {name} not Established after 30s"))??;
    }
    Ok(())
}

/// The directory with `kube-apiserver` and `etcd`: `$KUBEBUILDER_ASSETS` when it
/// has both, else what `script` (`hack/envtest.sh`) prints as its last line.
pub fn find_assets(script: &Path) -> Result<PathBuf> {
    let has_binaries = |dir: &Path| {
        ["kube-apiserver", "etcd"]
            .iter()
            .all(|b| is_executable(&dir.join(b)))
    };
    if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS").map(PathBuf::from)
        && has_binaries(&dir)
    {
        return Ok(dir);
    }
    eprintln!(
        "KUBEBUILDER_ASSETS is not set; running {}",
        script.display()
    );
    let out = Command::new("bash")
        .arg(script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}; {HOW_TO_GET_BINARIES}", script.display()))?;
    ensure!(
        out.status.success(),
        "{} failed ({}); {HOW_TO_GET_BINARIES}",
        script.display(),
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    ensure!(
        has_binaries(&dir),
        "{} printed {dir:?}, which lacks kube-apiserver or etcd; {HOW_TO_GET_BINARIES}",
        script.display()
    );
    Ok(dir)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Writes the CA, the serving cert, the service-account key pair and the token
/// file; returns the CA certificate (DER) that clients trust.
fn write_credentials(dir: &Path, admin_token: &str) -> Result<Vec<u8>> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "catalogsync-envtest-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::from_params(&ca_params, &ca_key);

    let serving_key = KeyPair::generate()?;
    let mut serving =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    serving
        .distinguished_name
        .push(DnType::CommonName, "catalogsync-envtest-apiserver");
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving.signed_by(&serving_key, &issuer)?;

    let sa_key = KeyPair::generate()?;

    write_private(&dir.join("ca.crt"), ca_cert.pem().as_bytes())?;
    write_private(&dir.join("serving.crt"), serving_cert.pem().as_bytes())?;
    write_private(
        &dir.join("serving.key"),
        serving_key.serialize_pem().as_bytes(),
    )?;
    write_private(&dir.join("sa.key"), sa_key.serialize_pem().as_bytes())?;
    write_private(&dir.join("sa.pub"), sa_key.public_key_pem().as_bytes())?;
    // token,user,uid,"groups"
    write_private(
        &dir.join("tokens.csv"),
        format!("{admin_token},catalogsync-admin,catalogsync-admin,\"system:masters\"\n")
            .as_bytes(),
    )?;
    Ok(ca_cert.der().to_vec())
}

/// Writes a file readable by its owner only (it may hold credentials).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents))
        .with_context(|| format!("writing {}", path.display()))
}

/// `N` distinct free TCP ports on 127.0.0.1.
pub fn free_ports<const N: usize>() -> Result<[u16; N]> {
    // Hold all listeners at once so the N ports are distinct.
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()?;
    let ports = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<io::Result<Vec<_>>>()?;
    ports.try_into().map_err(|_| anyhow!("port count"))
}

/// Starts `bin` with its output appended to `<dir>/<name>.log`, killed when the
/// spawning thread ends, and remembered for [`terminate_children`].
pub fn spawn_child(
    name: &str,
    bin: &Path,
    args: &[String],
    env: &[(&str, &Path)],
    dir: &Path,
) -> Result<Child> {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))?;
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            // Dies with its parent even when the parent is killed outright.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    CHILDREN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(child.id());
    Ok(child)
}

/// The last 30 lines of a log file.
pub fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Pids of the children, in start order.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Stops every child of [`spawn_child`] newest first (the apiserver before its
/// etcd): SIGTERM, then SIGKILL after a grace period; reaps them.
pub fn terminate_children() {
    let pids = std::mem::take(&mut *CHILDREN.lock().unwrap_or_else(|e| e.into_inner()));
    for pid in pids.into_iter().rev() {
        terminate(pid);
    }
}

/// Stops one child of [`spawn_child`] as [`terminate_children`] would, and forgets it (its
/// pid may be reused once reaped).
pub fn stop_child(child: &Child) {
    let pid = child.id();
    CHILDREN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|p| *p != pid);
    terminate(pid);
}

/// SIGTERM, then SIGKILL after 5 s; reaps the child.
fn terminate(pid: u32) {
    let pid = pid as libc::pid_t;
    // SAFETY: plain syscalls on our own child's pid, which stays reserved
    // until we reap it.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut status = 0;
            let r = libc::waitpid(pid, &mut status, libc::WNOHANG);
            if r != 0 {
                break; // reaped, or not our child any more
            }
            if Instant::now() > deadline {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
