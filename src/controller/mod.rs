//! The controller: the long-running operator. One kube-rs Controller per kind,
//! sharing a [`Context`].
//!
//! Each reconcile is a pipeline — dereference (read what the object refers
//! to), decide (a pure function), apply (create/delete children), update
//! status (server-side apply, only when it changed).
//!
//! - here: the runtime — the [`Context`], one function per kind's controller
//!   and what it watches, [`run`] with leader election, shutdown;
//! - one module per kind: `identity_domain`, `catalog_app/`, `sync_policy`,
//!   `sync_run/` (with the Job builder, `sync_run::job`);
//! - shared by them: `connectivity` (SCIM endpoint probes and their caches),
//!   `schedule` (cron slots);
//! - serving: `leader` (the Lease), `metrics`, `http` (metrics and probes).

pub mod catalog_app;
pub mod connectivity;
pub mod http;
pub mod identity_domain;
pub mod leader;
pub mod metrics;
pub mod schedule;
pub mod sync_policy;
pub mod sync_run;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::core::PartialObjectMeta as Meta;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, reflector};
use kube::runtime::watcher::{self, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::watch;

use crate::api::{Capabilities, CatalogApp, IdentityDomain, SyncPolicy, SyncRun};
use crate::cluster::credentials;
use crate::controller::metrics::Metrics;
use crate::controller::sync_run::job::{JobConfig, RUN_LABEL};
use connectivity::{Endpoints, Failure, ProbeCache};

/// Errors of a reconcile; each carries a metric label.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0} has no namespace")]
    NoNamespace(String),
}

impl Error {
    /// A short, bounded label for `catalogsync_reconcile_errors_total{reason}`.
    pub fn metric_label(&self) -> String {
        match self {
            Error::Kube(kube::Error::Api(s)) => format!("api_{}", s.reason.to_lowercase()),
            Error::Kube(_) => "kube".into(),
            Error::NoNamespace(_) => "no_namespace".into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How soon a failed connectivity check is retried when nothing else changes.
pub const FAILURE_RECHECK: Duration = Duration::from_secs(30);

/// The controller's settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub job: JobConfig,
    /// How often connectivity is rechecked when nothing changes.
    pub recheck: Duration,
    /// Watch only this namespace (all when unset).
    pub namespace: Option<String>,
}

/// An event to publish about the reconciled object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectEvent {
    pub type_: EventType,
    pub reason: String,
    pub note: String,
}

impl ObjectEvent {
    pub fn normal(reason: &str, note: impl Into<String>) -> Self {
        ObjectEvent {
            type_: EventType::Normal,
            reason: reason.into(),
            note: note.into(),
        }
    }
    pub fn warning(reason: &str, note: impl Into<String>) -> Self {
        ObjectEvent {
            type_: EventType::Warning,
            reason: reason.into(),
            note: note.into(),
        }
    }

    /// A Warning `NotReady` when `Ready` turns False: on the object's first status as on
    /// a flip from True, so a new object that never worked is announced too. None while
    /// it stays False: the condition tells the rest.
    pub fn not_ready(
        old: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
        new: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    ) -> Option<Self> {
        use crate::cluster::conditions::{READY, find};
        let ready = find(new, READY).filter(|c| c.status == "False")?;
        let was_not_false = find(old, READY).is_none_or(|c| c.status != "False");
        was_not_false.then(|| {
            let note = format!("not Ready ({}): {}", ready.reason, ready.message);
            Self::warning("NotReady", note)
        })
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub config: Config,
    pub domain_probes: ProbeCache<std::result::Result<Capabilities, Failure>>,
    pub app_probes: ProbeCache<catalog_app::ProvisioningState>,
    /// Clients and checks shared by the domains and apps of one endpoint.
    pub endpoints: Endpoints,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, config: Config) -> Self {
        let reporter = Reporter {
            controller: "catalogsync-controller".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            domain_probes: ProbeCache::new(config.recheck),
            app_probes: ProbeCache::new(config.recheck),
            endpoints: Endpoints::new(config.recheck),
            client,
            metrics,
            config,
        }
    }

    /// Publishes an event; a failure to do so is logged, never fatal.
    pub async fn publish(&self, reference: &ObjectReference, event: &ObjectEvent) {
        let published = Event {
            type_: event.type_,
            reason: event.reason.clone(),
            note: Some(truncate(&event.note, 1000)),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&published, reference).await {
            tracing::warn!(error = %e, reason = %event.reason, "publishing an event failed");
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Now, to the second (the API server stores times to the second, so a finer
/// time would make every status differ from the stored one).
pub fn now_time() -> Time {
    to_time(Utc::now())
}

pub fn to_time(t: DateTime<Utc>) -> Time {
    Time(jiff::Timestamp::from_second(t.timestamp()).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
}

pub fn time_of(t: &Time) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.0.as_second(), 0)
}

fn error_policy<K>(kind: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |obj, err, ctx| {
        let _ = obj;
        tracing::warn!(kind, error = %err, "reconcile failed");
        ctx.metrics.reconcile_failure(kind, &err.metric_label());
        Action::requeue(Duration::from_secs(15))
    }
}

/// The SyncPolicy an app references: its name (if any) and the object (if found).
pub async fn policy_of(
    ctx: &Context,
    app: &CatalogApp,
    ns: &str,
) -> Result<(Option<String>, Option<SyncPolicy>)> {
    let Some(name) = app
        .spec
        .synchronization
        .as_ref()
        .map(|s| s.policy_ref.name.clone())
    else {
        return Ok((None, None));
    };
    let policy = Api::<SyncPolicy>::namespaced(ctx.client.clone(), ns)
        .get_opt(&name)
        .await?;
    Ok((Some(name), policy))
}

/// Removes the metrics of deleted apps. Reconciles never see a deletion (no
/// finalizers, which would leave namespaces stuck), so a watch does it.
async fn forget_deleted_apps(
    api: Api<Meta<CatalogApp>>,
    metrics: Arc<Metrics>,
    mut stop: impl Future<Output = ()> + Unpin,
) {
    use kube::runtime::watcher::Event;
    let mut events = watcher(api, watcher::Config::default()).boxed();
    let mut listed = Vec::new();
    loop {
        let event = tokio::select! {
            _ = &mut stop => return,
            e = events.next() => e,
        };
        match event {
            Some(Ok(Event::Delete(m))) => {
                metrics.remove_app(&m.namespace().unwrap_or_default(), &m.name_any())
            }
            Some(Ok(Event::Init)) => listed.clear(),
            Some(Ok(Event::InitApply(m))) => {
                listed.push((m.namespace().unwrap_or_default(), m.name_any()))
            }
            // After a relist, apps deleted meanwhile are those not listed.
            Some(Ok(Event::InitDone)) => metrics.retain_apps(&listed),
            Some(Ok(Event::Apply(_))) => {}
            Some(Err(e)) => {
                tracing::debug!(error = %e, "CatalogApp metadata watch");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            None => return,
        }
    }
}

/// An Api over all namespaces, or the one the controller is restricted to.
fn scoped<K>(client: &Client, ns: &Option<String>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Drops what no reconcile reads before an object enters a store: managedFields
/// (about half of an object with a status) and kubectl's last-applied copy.
fn slim<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// A Controller over the objects of `api`, whose store keeps them slimmed.
fn controller<K>(api: Api<K>, config: ControllerConfig) -> Controller<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let objects = reflector(
        writer,
        watcher(api, watcher::Config::default()).modify(slim::<K>),
    )
    .applied_objects();
    Controller::for_stream(objects, reader).with_config(config)
}

/// At most `n` reconciles of a kind at once. Each holds an API connection or two
/// (apps SCIM ones too): unbounded, 1,000 objects at start open hundreds, each
/// with its TLS and read buffers, which stay pooled after the burst.
fn bounded(n: u16) -> ControllerConfig {
    ControllerConfig::default().concurrency(n)
}

/// Objects reconciled at once, by kind. Apps: each may hold two SCIM connections.
const APP_RECONCILE_CONCURRENCY: u16 = 16;
const RECONCILE_CONCURRENCY: u16 = 8;

/// Runs the controllers until `shutdown` turns true.
pub async fn run_controllers(ctx: Arc<Context>, shutdown: watch::Receiver<bool>) {
    let stop = move || {
        let mut rx = shutdown.clone();
        async move { stopped(&mut rx).await }
    };
    let forget = forget_deleted_apps(
        scoped::<Meta<CatalogApp>>(&ctx.client, &ctx.config.namespace),
        ctx.metrics.clone(),
        Box::pin(stop()),
    );
    tokio::join!(
        domain_controller(&ctx, stop()),
        app_controller(&ctx, stop()),
        policy_controller(&ctx, stop()),
        run_controller(&ctx, stop()),
        forget,
    );
}

/// The Secrets the controller watches: only those their owners allowed as credentials
/// (a label selector). Adding the label arrives as a new Secret, removing it as a deletion.
fn credential_secrets() -> watcher::Config {
    watcher::Config::default().labels(&credentials::allowed_selector())
}

/// IdentityDomain: re-tested when a referenced Secret changes.
fn domain_controller(
    ctx: &Arc<Context>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> {
    let (client, ns) = (&ctx.client, &ctx.config.namespace);
    let domains = controller(
        scoped::<IdentityDomain>(client, ns),
        bounded(RECONCILE_CONCURRENCY),
    );
    let store = domains.store();
    let c = ctx.clone();
    domains
        .watches(
            scoped::<Meta<Secret>>(client, ns),
            credential_secrets(),
            move |s| {
                let (ns, name) = (s.namespace().unwrap_or_default(), s.name_any());
                c.endpoints.invalidate_secret(&ns, &name);
                let hits = referrers(&store, Some(ns.clone()), |d: &IdentityDomain| {
                    credentials::secret_names(&d.spec.auth, d.spec.tls.as_ref()).contains(&name)
                });
                for d in &hits {
                    c.domain_probes.invalidate(&format!("{ns}/{}", d.name));
                }
                hits
            },
        )
        .graceful_shutdown_on(stop)
        .run(
            identity_domain::reconcile,
            error_policy("IdentityDomain"),
            ctx.clone(),
        )
        .for_each(|_| async {})
}

/// CatalogApp: its runs (by spec.appRef, so hand-made runs count too), its runs' Jobs
/// being deleted, its Secrets, its domain and its policy; all but the runs by metadata only (Meta:
/// the mappers need no more, and Secret data is never transferred nor kept).
/// Runs report progress every second or two; a short debounce folds a burst of
/// them into one reconcile (and one status write). Each reconcile probes SCIM
/// providers: bounding concurrent reconciles keeps a thousand apps from opening
/// thousands of connections to one provider at once (which it refuses).
fn app_controller(
    ctx: &Arc<Context>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> {
    let (client, ns) = (&ctx.client, &ctx.config.namespace);
    let watch_all = watcher::Config::default();
    let apps = controller(
        scoped::<CatalogApp>(client, ns),
        bounded(APP_RECONCILE_CONCURRENCY).debounce(Duration::from_millis(500)),
    );
    let (by_secret, by_domain, by_policy) = (apps.store(), apps.store(), apps.store());
    let c = ctx.clone();
    apps.watches(scoped::<SyncRun>(client, ns), watch_all.clone(), |r| {
        r.namespace()
            .map(|ns| ObjectRef::<CatalogApp>::new(&r.spec.app_ref.name).within(&ns))
    })
    .watches(
        scoped::<Meta<Secret>>(client, ns),
        credential_secrets(),
        move |s| {
            let (ns, name) = (s.namespace().unwrap_or_default(), s.name_any());
            c.endpoints.invalidate_secret(&ns, &name);
            let hits = referrers(&by_secret, Some(ns.clone()), |a: &CatalogApp| {
                let connection = &a.spec.connection;
                credentials::secret_names(&connection.auth, connection.tls.as_ref()).contains(&name)
            });
            for a in &hits {
                c.app_probes.invalidate(&format!("{ns}/{}", a.name));
            }
            hits
        },
    )
    .watches(
        scoped::<Meta<IdentityDomain>>(client, ns),
        watch_all.clone(),
        move |d| {
            referrers(&by_domain, d.namespace(), |a: &CatalogApp| {
                a.spec.identity_domain_ref.name == d.name_any()
            })
        },
    )
    .watches(
        scoped::<Meta<Job>>(client, ns),
        watch_all.clone().labels(RUN_LABEL),
        being_deleted_job_app,
    )
    .watches(
        scoped::<Meta<SyncPolicy>>(client, ns),
        watch_all,
        move |p| {
            referrers(&by_policy, p.namespace(), |a: &CatalogApp| {
                let synchronization = a.spec.synchronization.as_ref();
                synchronization.is_some_and(|s| s.policy_ref.name == p.name_any())
            })
        },
    )
    .graceful_shutdown_on(stop)
    .run(
        catalog_app::reconcile,
        error_policy("CatalogApp"),
        ctx.clone(),
    )
    .for_each(|_| async {})
}

/// The app of a run's Job that is being deleted (or gone): a run replacing it waits for
/// that. Other Job changes do not concern the app.
fn being_deleted_job_app(job: Meta<Job>) -> Option<ObjectRef<CatalogApp>> {
    job.metadata.deletion_timestamp.as_ref()?;
    let app = job.labels().get(sync_run::job::APP_LABEL)?;
    Some(ObjectRef::new(app).within(&job.namespace()?))
}

/// SyncPolicy: validation only.
fn policy_controller(
    ctx: &Arc<Context>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> {
    controller(
        scoped::<SyncPolicy>(&ctx.client, &ctx.config.namespace),
        bounded(RECONCILE_CONCURRENCY),
    )
    .graceful_shutdown_on(stop)
    .run(
        sync_policy::reconcile,
        error_policy("SyncPolicy"),
        ctx.clone(),
    )
    .for_each(|_| async {})
}

/// SyncRun: its Job (ours only, by label; owns watches metadata only).
fn run_controller(
    ctx: &Arc<Context>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> {
    let (client, ns) = (&ctx.client, &ctx.config.namespace);
    controller(
        scoped::<SyncRun>(client, ns),
        bounded(RECONCILE_CONCURRENCY),
    )
    .owns(
        scoped::<Job>(client, ns),
        watcher::Config::default().labels(RUN_LABEL),
    )
    .graceful_shutdown_on(stop)
    .run(sync_run::reconcile, error_policy("SyncRun"), ctx.clone())
    .for_each(|_| async {})
}

/// The objects of `store` in namespace `ns` for which `refers` holds: those a
/// changed Secret, domain or policy concerns.
fn referrers<K>(
    store: &reflector::Store<K>,
    ns: Option<String>,
    refers: impl Fn(&K) -> bool,
) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .state()
        .into_iter()
        .filter(|o| o.namespace() == ns && refers(o))
        .map(|o| ObjectRef::from_obj(&*o))
        .collect()
}

/// Runs the controllers, with leader election when `lease` is set, until
/// `shutdown` turns true. Returns an error when leadership is lost (the
/// process should exit and start over as a candidate).
pub async fn run(
    client: Client,
    metrics: Arc<Metrics>,
    config: Config,
    lease: Option<crate::controller::leader::LeaseConfig>,
    shutdown: watch::Receiver<bool>,
    ready: Option<Arc<std::sync::atomic::AtomicBool>>,
) -> anyhow::Result<()> {
    let ctx = Arc::new(Context::new(client.clone(), metrics, config));
    let set_ready = |v: bool| {
        if let Some(r) = &ready {
            r.store(v, std::sync::atomic::Ordering::Relaxed);
        }
    };
    let Some(lease) = lease else {
        // Without leader election this replica acts alone: it leads.
        ctx.metrics.leader().set(1);
        set_ready(true);
        run_controllers(ctx, shutdown).await;
        return Ok(());
    };
    // A standby replica is healthy and ready; it just does not act.
    set_ready(true);
    let mut leadership = crate::controller::leader::Leadership::start(client, &lease)
        .await?
        .report_to(ctx.metrics.leader());
    let mut shutdown_rx = shutdown.clone();
    tokio::select! {
        acquired = leadership.acquired() => acquired?,
        _ = stopped(&mut shutdown_rx) => {
            leadership.release().await;
            return Ok(());
        }
    }
    tracing::info!(identity = %lease.identity, "acquired leadership; starting controllers");
    // Stop the controllers on shutdown or on lost leadership, whichever first.
    let (stop_tx, stop_rx) = watch::channel(false);
    let controllers = tokio::spawn(run_controllers(ctx, stop_rx));
    let lost = tokio::select! {
        _ = stopped(&mut shutdown_rx) => false,
        _ = leadership.lost() => true,
    };
    let _ = stop_tx.send(true);
    let _ = controllers.await;
    leadership.release().await;
    if lost {
        anyhow::bail!(
            "lost leadership of lease {}/{}",
            lease.namespace,
            lease.name
        );
    }
    Ok(())
}

/// Resolves once the shutdown flag is true (or its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    // The guard wait_for returns is not Send: drop it here.
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// Waits for SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing the SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
    }
}

/// The Resource trait's object reference, for events.
pub fn reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    obj.object_ref(&())
}
