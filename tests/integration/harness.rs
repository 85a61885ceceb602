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
    fs, io,
    path::{Path, PathBuf},
    process::{Output, Stdio},
    sync::{Mutex, Once},
};

use anyhow::{Context as _, Result, ensure};
use catalogsync::dev;
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::{Namespace, ServiceAccount},
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Client,
    api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
    core::ObjectMeta,
    discovery::{self, Scope},
};
use tokio::sync::OnceCell;

/// Field manager for everything the harness applies.
pub use catalogsync::dev::control_plane::FIELD_MANAGER;

/// Prefix of the per-process temp dir; the pid follows, so stale dirs of dead
/// processes can be recognised and removed.
const DIR_PREFIX: &str = "catalogsync-envtest-";

/// Path of a file or directory of this repository.
pub fn repo_path(rel: impl AsRef<Path>) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The shared local control plane (see `catalogsync::dev::control_plane`),
/// with the test helpers below; derefs to the library's control plane
/// (`admin_client`, `client_with_token`, `kubeconfig_path`).
pub struct ControlPlane(dev::ControlPlane);

impl std::ops::Deref for ControlPlane {
    type Target = dev::ControlPlane;
    fn deref(&self) -> &dev::ControlPlane {
        &self.0
    }
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
                        .and_then(|rt| rt.block_on(start()))
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

async fn start() -> Result<ControlPlane> {
    let assets = dev::find_assets(&repo_path("hack/envtest.sh"))?;
    remove_stale_dirs();
    let dir = tempfile::Builder::new()
        .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
        .tempdir()
        .context("creating the control-plane temp dir")?
        .keep();
    register_cleanup(&dir);
    let crds = read_crds(&repo_path("crds"))?;
    Ok(ControlPlane(
        dev::ControlPlane::start(&assets, &dir, &crds).await?,
    ))
}

impl ControlPlane {
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
            .arg(self.kubeconfig_path())
            // Keep the discovery cache with the control plane, not in ~/.kube.
            .arg("--cache-dir")
            .arg(self.dir().join("kubectl-cache"))
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
        apply_yaml_with(&self.admin_client(), ns, yaml).await
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

/// Server-side applies every document of a (multi-document) YAML stream through
/// `client`; namespaced objects go to `ns`. Stops at the first rejection.
pub async fn apply_yaml_with(
    client: &Client,
    ns: &str,
    yaml: &str,
) -> Result<Vec<DynamicObject>, kube::Error> {
    let mut applied = Vec::new();
    for obj in parse_yaml(yaml).expect("parsable YAML") {
        let types = obj.types.clone().expect("apiVersion and kind");
        let gvk = GroupVersionKind::try_from(&types).expect("valid apiVersion");
        let (resource, caps) = discovery::pinned_kind(client, &gvk).await?;
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

/// Creates a namespaced object of kind `K` from JSON (apiVersion and kind added).
pub async fn create<K>(client: &Client, ns: &str, mut v: serde_json::Value) -> Result<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    v["apiVersion"] = serde_json::json!(K::api_version(&()));
    v["kind"] = serde_json::json!(K::kind(&()));
    let obj: K = serde_json::from_value(v)?;
    Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &obj)
        .await
        .with_context(|| format!("creating {}", K::kind(&())))
}

/// Parses a multi-document YAML stream into objects, skipping empty documents.
pub fn parse_yaml(yaml: &str) -> Result<Vec<DynamicObject>> {
    use serde::Deserialize as _;
    let mut objects = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let value = serde_yaml_ng::Value::deserialize(doc)?;
        if value.is_null() {
            continue;
        }
        objects.push(serde_yaml_ng::from_value(value)?);
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
    dev::terminate_children();
    if let Some(dir) = TEMP_DIR.lock().unwrap_or_else(|e| e.into_inner()).take() {
        if std::env::var_os("CATALOGSYNC_ENVTEST_KEEP").is_some() {
            eprintln!("keeping the control-plane dir {}", dir.display());
        } else {
            let _ = fs::remove_dir_all(&dir);
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
