//! A local control plane (etcd + kube-apiserver) shared by every test of this
//! binary.
//!
//! `control_plane().await` starts it on first use and returns the same
//! `&'static ControlPlane` to every test afterwards; tests isolate themselves
//! with `new_namespace`. There is no controller-manager: namespaces are never
//! garbage-collected, Deployments never get Pods, but the apiserver signs
//! service-account tokens itself, so `sa_client` hands out real tokens.
//!
//! Teardown: statics are never dropped, so the children and the temp dir are
//! cleaned by an `atexit` hook (runs on normal exit and on `process::exit`,
//! which is how the test runner ends after failures). If the process is killed
//! outright, the children still die by `PR_SET_PDEATHSIG`, and the next run
//! removes temp dirs left by dead processes.

use std::{
    ffi::OsStr,
    fs,
    io::{self, Write as _},
    net::TcpListener,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Mutex, Once},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::{Namespace, ServiceAccount},
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Client, Config,
    api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
    core::ObjectMeta,
    discovery::{self, Scope},
    runtime::wait::{await_condition, conditions},
};
use tokio::sync::OnceCell;

/// Field manager for everything the harness applies.
pub const FIELD_MANAGER: &str = "catalogsync-tests";

/// Prefix of the per-process temp dir; the pid follows, so stale dirs of dead
/// processes can be recognised and removed.
const DIR_PREFIX: &str = "catalogsync-envtest-";

const HOW_TO_GET_BINARIES: &str = "the integration tests need kube-apiserver and etcd: \
     run `hack/envtest.sh` (builds them from the pinned Go modules; needs Go) and \
     `export KUBEBUILDER_ASSETS=\"$(hack/envtest.sh)\"`, or point KUBEBUILDER_ASSETS at a \
     directory that contains both binaries";

/// Path of a file or directory of this repository.
pub fn repo_path(rel: impl AsRef<Path>) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A running etcd + kube-apiserver, with the CRDs of `crds/` established.
pub struct ControlPlane {
    dir: PathBuf,
    server: String,
    ca_der: Vec<u8>,
    admin_token: String,
    kubeconfig: PathBuf,
}

static CONTROL_PLANE: OnceCell<Result<ControlPlane, String>> = OnceCell::const_new();

/// The shared control plane, started on first use. Panics (so the test fails,
/// never skips) if it cannot be started.
pub async fn control_plane() -> &'static ControlPlane {
    let started = CONTROL_PLANE
        .get_or_init(|| async {
            let (tx, rx) = tokio::sync::oneshot::channel();
            // Children are spawned from a dedicated thread that never exits:
            // PR_SET_PDEATHSIG fires when the spawning *thread* ends, and test
            // threads end after each test.
            std::thread::Builder::new()
                .name("envtest-supervisor".into())
                .spawn(move || {
                    let result = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(anyhow::Error::from)
                        .and_then(|rt| rt.block_on(ControlPlane::start()))
                        .map_err(|e| format!("{e:#}"));
                    let _ = tx.send(result);
                    loop {
                        std::thread::park();
                    }
                })
                .map_err(|e| format!("cannot spawn the supervisor thread: {e}"))?;
            rx.await
                .map_err(|_| "the control-plane supervisor thread died".to_string())?
        })
        .await;
    match started {
        Ok(cp) => cp,
        Err(e) => panic!("local control plane unavailable: {e}"),
    }
}

impl ControlPlane {
    async fn start() -> Result<Self> {
        let assets = find_assets()?;
        remove_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .context("creating the control-plane temp dir")?
            .keep();
        register_cleanup(&dir);

        let admin_token = format!("{:032x}", rand::random::<u128>());
        let ca_der = write_credentials(&dir, &admin_token)?;

        // Free ports can be taken by someone else between probing and binding;
        // a retry with fresh ports covers that race.
        let mut last_error = None;
        for _ in 0..3 {
            match Self::launch(&assets, &dir, &ca_der, &admin_token).await {
                Ok(cp) => return Ok(cp),
                Err(e) => {
                    terminate_children();
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    async fn launch(assets: &Path, dir: &Path, ca_der: &[u8], admin_token: &str) -> Result<Self> {
        let [etcd_port, peer_port, api_port] = free_ports()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let d = |name: &str| dir.join(name).display().to_string();

        let mut etcd = spawn_child(
            "etcd",
            &assets.join("etcd"),
            &[
                "--name=envtest".into(),
                format!("--data-dir={}", d(&format!("etcd-{etcd_port}"))),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=envtest={peer_url}"),
                // Test data is disposable; fsync only slows the tests down.
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
            dir,
        )?;
        let mut apiserver = spawn_child(
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
                // Fairness queues only add latency on a single-tenant test server.
                "--enable-priority-and-fairness=false".into(),
            ],
            dir,
        )?;

        let cp = ControlPlane {
            dir: dir.to_path_buf(),
            server: format!("https://127.0.0.1:{api_port}"),
            ca_der: ca_der.to_vec(),
            admin_token: admin_token.to_string(),
            kubeconfig: dir.join("kubeconfig"),
        };
        cp.write_kubeconfig()?;

        let admin = cp.admin_client();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            for (name, child) in [("etcd", &mut etcd), ("kube-apiserver", &mut apiserver)] {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "{name} exited with {status} during startup; end of its log:\n{}",
                        log_tail(&dir.join(format!("{name}.log")))
                    );
                }
            }
            let readyz = http::Request::get("/readyz").body(Vec::new())?;
            match admin.request_text(readyz).await {
                Ok(body) if body.trim() == "ok" => break,
                _ if Instant::now() > deadline => bail!(
                    "kube-apiserver not ready after 120s; end of its log:\n{}",
                    log_tail(&dir.join("kube-apiserver.log"))
                ),
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }

        install_crds(&admin, &repo_path("crds")).await?;
        Ok(cp)
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

    /// The admin kubeconfig, for `kubectl` and other tools.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
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

    /// A client acting as ServiceAccount `ns/name` (created if missing), with a
    /// real token from the TokenRequest API.
    pub async fn sa_client(&self, ns: &str, name: &str) -> Client {
        let sas: Api<ServiceAccount> = Api::namespaced(self.admin_client(), ns);
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        sas.patch(name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&sa))
            .await
            .unwrap_or_else(|e| panic!("creating ServiceAccount {ns}/{name}: {e}"));
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let token = sas
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("requesting a token for {ns}/{name}: {e}"))
            .status
            .expect("TokenRequest status")
            .token;
        self.client_with_token(&token)
    }

    /// Creates a namespace named `<prefix>-<random>` and returns its name.
    pub async fn new_namespace(&self, prefix: &str) -> String {
        let ns = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{prefix}-")),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(self.admin_client())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating a namespace {prefix}-*: {e}"))
            .metadata
            .name
            .expect("generated namespace name")
    }

    /// Runs the machine's `kubectl` against this control plane as admin.
    pub async fn kubectl<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.kubectl_with_stdin(args, "").await
    }

    /// Like `kubectl`, with `stdin` as its standard input (e.g. `apply -f -`).
    pub async fn kubectl_with_stdin<I, S>(&self, args: I, stdin: &str) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            // Keep the discovery cache with the control plane, not in ~/.kube.
            .arg("--cache-dir")
            .arg(self.dir.join("kubectl-cache"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run kubectl (is it installed and on PATH?): {e}"));
        let mut input = child.stdin.take().expect("kubectl stdin");
        let stdin = stdin.to_owned();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            // kubectl may exit without reading; a broken pipe is not an error here.
            let _ = input.write_all(stdin.as_bytes()).await;
        });
        let output = child.wait_with_output().await.expect("waiting for kubectl");
        let _ = writer.await;
        output
    }

    /// Server-side applies every document of a (multi-document) YAML stream
    /// as admin; namespaced objects go to `ns`. Stops at the first rejection.
    pub async fn apply_yaml(
        &self,
        ns: &str,
        yaml: &str,
    ) -> Result<Vec<DynamicObject>, kube::Error> {
        let client = self.admin_client();
        let mut applied = Vec::new();
        for obj in parse_yaml(yaml).expect("parsable YAML") {
            let types = obj.types.clone().expect("apiVersion and kind");
            let gvk = GroupVersionKind::try_from(&types).expect("valid apiVersion");
            let (resource, caps) = discovery::pinned_kind(&client, &gvk).await?;
            let api: Api<DynamicObject> = match caps.scope {
                Scope::Namespaced => Api::namespaced_with(client.clone(), ns, &resource),
                Scope::Cluster => Api::all_with(client.clone(), &resource),
            };
            let name = obj.metadata.name.clone().expect("metadata.name");
            let params = PatchParams::apply(FIELD_MANAGER).force();
            applied.push(api.patch(&name, &params, &Patch::Apply(&obj)).await?);
        }
        Ok(applied)
    }

    /// Applies `yaml` expecting the apiserver to reject it (schema or CEL
    /// validation), and returns the rejection message. Panics if it is accepted.
    pub async fn apply_yaml_expect_rejection(&self, ns: &str, yaml: &str) -> String {
        match self.apply_yaml(ns, yaml).await {
            Ok(_) => panic!("the apiserver accepted what should be rejected:\n{yaml}"),
            Err(kube::Error::Api(status)) => {
                assert_eq!(
                    status.code, 422,
                    "expected an Invalid (422) rejection: {status:?}"
                );
                status.message
            }
            Err(e) => panic!("expected a validation rejection, got: {e}"),
        }
    }
}

/// Parses a multi-document YAML stream into objects, skipping empty documents.
pub fn parse_yaml(yaml: &str) -> Result<Vec<DynamicObject>> {
    use serde::Deserialize as _;
    let mut objects = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_yaml::Value::deserialize(doc)?;
        if value.is_null() {
            continue;
        }
        objects.push(serde_yaml::from_value(value)?);
    }
    Ok(objects)
}

/// The CRDs of a YAML file, or of every `*.yaml` file of a directory in
/// file-name order.
pub fn read_crds(path: &Path) -> Result<Vec<CustomResourceDefinition>> {
    let mut files: Vec<PathBuf> = if path.is_dir() {
        fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<io::Result<_>>()?
    } else {
        vec![path.to_path_buf()]
    };
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"));
    files.sort();
    let mut crds = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file)?;
        for obj in parse_yaml(&text).with_context(|| format!("parsing {}", file.display()))? {
            let value = serde_json::to_value(obj)?;
            crds.push(
                serde_json::from_value(value)
                    .with_context(|| format!("a CRD in {}", file.display()))?,
            );
        }
    }
    ensure!(!crds.is_empty(), "no CRDs in {}", path.display());
    Ok(crds)
}

async fn install_crds(client: &Client, dir: &Path) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crds = read_crds(dir)?;
    for crd in &crds {
        let name = crd.metadata.name.as_deref().context("CRD without a name")?;
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(crd),
        )
        .await
        .with_context(|| format!("installing CRD {name}"))?;
    }
    for crd in &crds {
        let name = crd.metadata.name.as_deref().unwrap_or_default();
        let established = await_condition(api.clone(), name, conditions::is_crd_established());
        tokio::time::timeout(Duration::from_secs(30), established)
            .await
            .with_context(|| format!("CRD {name} not Established after 30s"))??;
    }
    Ok(())
}

fn find_assets() -> Result<PathBuf> {
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
    let script = repo_path("hack/envtest.sh");
    eprintln!(
        "KUBEBUILDER_ASSETS is not set; running {}",
        script.display()
    );
    let out = Command::new("bash")
        .arg(&script)
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

fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
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

fn free_ports<const N: usize>() -> Result<[u16; N]> {
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

fn spawn_child(name: &str, bin: &Path, args: &[String], dir: &Path) -> Result<Child> {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))?;
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            // Dies with the test process even when it is killed outright.
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

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Pids of the children, in start order.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static TEMP_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

fn register_cleanup(dir: &Path) {
    *TEMP_DIR.lock().unwrap_or_else(|e| e.into_inner()) = Some(dir.to_path_buf());
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: registers a plain extern "C" function with no arguments.
        unsafe { libc::atexit(cleanup_at_exit) };
    });
}

extern "C" fn cleanup_at_exit() {
    terminate_children();
    if let Some(dir) = TEMP_DIR.lock().unwrap_or_else(|e| e.into_inner()).take() {
        if std::env::var_os("CATALOGSYNC_ENVTEST_KEEP").is_some() {
            eprintln!("keeping the control-plane dir {}", dir.display());
        } else {
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

/// Stops the children newest first (the apiserver before its etcd): SIGTERM,
/// then SIGKILL after a grace period; reaps them.
fn terminate_children() {
    let pids = std::mem::take(&mut *CHILDREN.lock().unwrap_or_else(|e| e.into_inner()));
    for pid in pids.into_iter().rev() {
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
}

/// Removes the temp dirs of earlier test processes that no longer run (they
/// were killed before their exit hook could clean up).
fn remove_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Asserts that RBAC forbade an API call (HTTP 403).
#[track_caller]
pub fn assert_forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

/// Asserts that an API call succeeded and returns its result.
#[track_caller]
pub fn assert_allowed<T>(result: Result<T, kube::Error>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("{what}: expected success, got {e}"))
}
