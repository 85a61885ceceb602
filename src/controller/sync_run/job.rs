//! Builds the batch/v1 Job that executes a SyncRun. Pure: no I/O, so every field
//! (the restricted Pod Security fields above all) is unit-tested.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, PodSecurityContext, PodSpec,
    PodTemplateSpec, ResourceRequirements, SeccompProfile, SecurityContext, ServiceAccount, Volume,
    VolumeMount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::api::{CatalogApp, IdentityDomain, JobSettings, SyncPolicy, SyncRun};
use crate::cluster::credentials::{self, Side};
use crate::cluster::exit_code;

/// Label on SyncRuns and Jobs: the CatalogApp they belong to.
pub const APP_LABEL: &str = "catalogsync.io/app";
/// Label on Jobs and their Pods: the SyncRun they execute.
pub const RUN_LABEL: &str = "catalogsync.io/run";
/// Name of the Job's only container.
pub const CONTAINER: &str = "sync";
/// The non-root user of the image (see the Dockerfile).
pub const RUN_AS_USER: i64 = 65532;

/// Attempts after the first failed pod; exit codes that retrying cannot fix fail at once.
const BACKOFF_LIMIT: i32 = 2;
/// The pod's termination grace period, seconds.
const GRACE_PERIOD: i64 = 30;
/// How far past the policy's timeout the Job's deadline lies: the engine's timer fires
/// first and the run ends `Failed` with reason `Timeout`, not killed by the deadline.
const DEADLINE_MARGIN: i64 = 2 * GRACE_PERIOD;

/// Used when the policy is absent (provisioning runs) or its timeout unreadable.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// Settings from the controller's command line.
#[derive(Clone, Debug)]
pub struct JobConfig {
    /// Image that contains the `catalogsync` binary.
    pub image: String,
    /// ServiceAccount of the Job's pod.
    pub service_account: String,
    /// Pod settings of every Job (`--job-defaults`), under each policy's `spec.job`.
    pub defaults: JobSettings,
    /// How long a finished Job (and its pod, with its logs) stays before Kubernetes'
    /// TTL-after-finished controller removes it (`--job-ttl`); the SyncRun keeps the outcome.
    pub ttl_after_finished: Duration,
}

/// The default of `--job-ttl`: a day to read a finished run's pod logs.
pub const DEFAULT_JOB_TTL: Duration = Duration::from_secs(24 * 3600);

impl JobConfig {
    /// Jobs of `image` under `service_account`, with no pod defaults, kept a day.
    pub fn new(image: impl Into<String>, service_account: impl Into<String>) -> Self {
        JobConfig {
            image: image.into(),
            service_account: service_account.into(),
            defaults: JobSettings::default(),
            ttl_after_finished: DEFAULT_JOB_TTL,
        }
    }
}

/// The labels of a run's Job and Pod. Only ours: user labels (e.g. Argo CD's
/// tracking label) are never copied onto children.
pub fn labels(run: &SyncRun) -> BTreeMap<String, String> {
    BTreeMap::from([
        (RUN_LABEL.to_string(), run.name_any()),
        (APP_LABEL.to_string(), run.spec.app_ref.name.clone()),
    ])
}

/// The Job for `run`, named like the run and controlled by it.
pub fn build(
    run: &SyncRun,
    app: &CatalogApp,
    domain: &IdentityDomain,
    policy: Option<&SyncPolicy>,
    config: &JobConfig,
) -> Job {
    let timeout = policy
        .and_then(|p| crate::api::parse_duration(&p.spec.timeout))
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_TIMEOUT);
    let labels = labels(run);
    let settings = merge(&config.defaults, policy.and_then(|p| p.spec.job.as_ref()));
    let container = container(run, app, domain, config, &settings);
    Job {
        metadata: ObjectMeta {
            name: Some(run.name_any()),
            namespace: Some(run.namespace().unwrap_or_default()),
            labels: Some(labels.clone()),
            owner_references: run.controller_owner_ref(&()).map(|r| vec![r]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(BACKOFF_LIMIT),
            // The engine's own timer (from the run's start) ends a run Failed/Timeout; the
            // Job's deadline is the backstop past it and the pod's grace period.
            active_deadline_seconds: Some(timeout.as_secs().max(1) as i64 + DEADLINE_MARGIN),
            ttl_seconds_after_finished: Some(ttl_seconds(config.ttl_after_finished)),
            pod_failure_policy: Some(pod_failure_policy()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(pod(container, config, settings)),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// `ttlSecondsAfterFinished` of `ttl`: whole seconds, at most what the field holds.
fn ttl_seconds(ttl: Duration) -> i32 {
    i32::try_from(ttl.as_secs()).unwrap_or(i32::MAX)
}

/// Name of a run's own Role and RoleBinding (its Job's access to the API).
pub fn access_name(run: &SyncRun) -> String {
    format!("catalogsync-run-{}", run.name_any())
}

/// What a run's Job may do through the API, and nothing more: read its run, patch its
/// run's status, read its app, domain and policy — each by name. Owned by the run, so
/// it goes with it; the controller holds every permission it grants (no escalation).
pub fn access_role(run: &SyncRun, app: &CatalogApp, policy: Option<&str>) -> Role {
    let rule = |resource: &str, verb: &str, name: &str| PolicyRule {
        api_groups: Some(vec![crate::api::GROUP.into()]),
        resources: Some(vec![resource.into()]),
        verbs: vec![verb.into()],
        resource_names: Some(vec![name.into()]),
        ..Default::default()
    };
    let run_name = run.name_any();
    let mut rules = vec![
        rule("syncruns", "get", &run_name),
        rule("syncruns/status", "patch", &run_name),
        rule("catalogapps", "get", &run.spec.app_ref.name),
        rule("identitydomains", "get", &app.spec.identity_domain_ref.name),
    ];
    rules.extend(policy.map(|p| rule("syncpolicies", "get", p)));
    Role {
        metadata: access_meta(run),
        rules: Some(rules),
    }
}

/// Binds [`access_role`] to the Jobs' ServiceAccount in the run's namespace.
pub fn access_binding(run: &SyncRun, config: &JobConfig) -> RoleBinding {
    RoleBinding {
        metadata: access_meta(run),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: access_name(run),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: config.service_account.clone(),
            namespace: run.namespace(),
            ..Default::default()
        }]),
    }
}

/// The Jobs' ServiceAccount in the run's namespace, created with the first Job there:
/// without it the Job cannot create its pod. It holds no permission of its own (each
/// run's Role grants its Job's access), and it is never owned by a run or an app, so
/// that removing one never takes the identity from another app's running Job.
pub fn service_account(run: &SyncRun, config: &JobConfig) -> ServiceAccount {
    ServiceAccount {
        metadata: ObjectMeta {
            name: Some(config.service_account.clone()),
            namespace: run.namespace(),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".into(),
                "catalogsync".into(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn access_meta(run: &SyncRun) -> ObjectMeta {
    ObjectMeta {
        name: Some(access_name(run)),
        namespace: run.namespace(),
        labels: Some(labels(run)),
        owner_references: run.controller_owner_ref(&()).map(|r| vec![r]),
        ..Default::default()
    }
}

/// The Secrets a Job's containers read through their environment.
pub fn secret_names(job: &Job) -> Vec<String> {
    let containers = job
        .spec
        .iter()
        .flat_map(|s| s.template.spec.iter())
        .flat_map(|p| p.containers.iter());
    let mut names: Vec<String> = containers
        .flat_map(|c| c.env.iter().flatten())
        .filter_map(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
        .map(|r| r.name.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// glibc's `mmap` threshold, fixed: large buffers (listing pages, member lists, PATCH
/// bodies) go back to the system when freed. By default glibc raises the threshold to the
/// first such buffer freed and keeps later ones in the heap, resident after they are freed:
/// a steady Import at 100,000 accounts peaked at 60.0 MiB, 54.3 MiB with it, at no more CPU
/// (docs/benchmarks.md). An environment variable, as the binary has no `unsafe` for
/// `mallopt`.
pub const MALLOC_MMAP_THRESHOLD: (&str, &str) = ("MALLOC_MMAP_THRESHOLD_", "131072");

/// The `catalogsync sync` container: both sides' credentials from their Secret
/// references, bounded resources, the restricted security context. The settings'
/// extra variables come first, so that ours win over any of the same name.
fn container(
    run: &SyncRun,
    app: &CatalogApp,
    domain: &IdentityDomain,
    config: &JobConfig,
    settings: &JobSettings,
) -> Container {
    let mut env = settings.env.clone().unwrap_or_default();
    env.push(EnvVar {
        name: "CATALOGSYNC_LOG_FORMAT".into(),
        value: Some("json".into()),
        ..Default::default()
    });
    env.push(EnvVar {
        name: MALLOC_MMAP_THRESHOLD.0.into(),
        value: Some(MALLOC_MMAP_THRESHOLD.1.into()),
        ..Default::default()
    });
    env.extend(credentials::env_vars(
        Side::Domain,
        &domain.spec.auth,
        domain.spec.tls.as_ref(),
    ));
    env.extend(credentials::env_vars(
        Side::App,
        &app.spec.connection.auth,
        app.spec.connection.tls.as_ref(),
    ));
    let run_ref = format!("{}/{}", run.namespace().unwrap_or_default(), run.name_any());
    Container {
        name: CONTAINER.into(),
        image: Some(config.image.clone()),
        command: Some(vec!["catalogsync".into()]),
        args: Some(vec!["sync".into(), "--run".into(), run_ref]),
        env: Some(env),
        resources: Some(resources(settings.resources.as_ref())),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            seccomp_profile: Some(runtime_default()),
            ..Default::default()
        }),
        // A writable scratch dir despite the read-only root filesystem.
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        }]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    }
}

/// The pod around `container`: never restarted in place (the Job retries),
/// non-root, a small scratch volume; placement from the settings.
fn pod(container: Container, config: &JobConfig, settings: JobSettings) -> PodSpec {
    PodSpec {
        node_selector: settings.node_selector,
        tolerations: settings.tolerations,
        affinity: settings.affinity,
        priority_class_name: settings.priority_class_name,
        image_pull_secrets: settings.image_pull_secrets,
        restart_policy: Some("Never".into()),
        service_account_name: Some(config.service_account.clone()),
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            seccomp_profile: Some(runtime_default()),
            ..Default::default()
        }),
        containers: vec![container],
        volumes: Some(vec![Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("64Mi".into())),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        // The engine stops cleanly on SIGTERM and writes Cancelled (the controller cancelled
        // the run) or Interrupted (a pod deleted or evicted): its SCIM requests end
        // within `HALT_DEADLINE` (8 s) of the signal, the records of writes made and the
        // final status follow well inside this.
        termination_grace_period_seconds: Some(GRACE_PERIOD),
        ..Default::default()
    }
}

/// The settings of a Job: the policy's over the controller's defaults, field by field.
/// Lists (tolerations, imagePullSecrets) and affinity are replaced whole; nodeSelector
/// merges by key, env by name, resources by resource name.
pub fn merge(defaults: &JobSettings, policy: Option<&JobSettings>) -> JobSettings {
    let Some(p) = policy else {
        return defaults.clone();
    };
    let d = defaults;
    let node_selector = match (&d.node_selector, &p.node_selector) {
        (Some(d), Some(p)) => Some(
            d.iter()
                .chain(p)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        (d, p) => p.clone().or_else(|| d.clone()),
    };
    JobSettings {
        resources: layer(d.resources.clone(), p.resources.as_ref()),
        node_selector,
        tolerations: p.tolerations.clone().or_else(|| d.tolerations.clone()),
        affinity: p.affinity.clone().or_else(|| d.affinity.clone()),
        priority_class_name: p
            .priority_class_name
            .clone()
            .or_else(|| d.priority_class_name.clone()),
        image_pull_secrets: p
            .image_pull_secrets
            .clone()
            .or_else(|| d.image_pull_secrets.clone()),
        env: merge_env(d.env.as_deref(), p.env.as_deref()),
    }
}

/// `upper`'s variables over `lower`'s by name: same-named ones replaced in place,
/// new ones appended.
fn merge_env(lower: Option<&[EnvVar]>, upper: Option<&[EnvVar]>) -> Option<Vec<EnvVar>> {
    let (Some(lower), Some(upper)) = (lower, upper) else {
        return upper.or(lower).map(<[EnvVar]>::to_vec);
    };
    let mut env: Vec<EnvVar> = lower
        .iter()
        .map(|l| upper.iter().find(|u| u.name == l.name).unwrap_or(l).clone())
        .collect();
    env.extend(
        upper
            .iter()
            .filter(|u| !lower.iter().any(|l| l.name == u.name))
            .cloned(),
    );
    Some(env)
}

/// `upper` over `lower` per resource name: a resource `upper` names (in requests or
/// limits) takes both its request and its limit from `upper`, so that a request never
/// meets a smaller limit from another level.
fn layer(
    lower: Option<ResourceRequirements>,
    upper: Option<&ResourceRequirements>,
) -> Option<ResourceRequirements> {
    let Some(upper) = upper else {
        return lower;
    };
    let mut out = lower.unwrap_or_default();
    let named = |r: &ResourceRequirements| -> Vec<String> {
        r.requests
            .iter()
            .chain(&r.limits)
            .flat_map(|m| m.keys().cloned())
            .collect()
    };
    for name in named(upper) {
        for (mine, theirs) in [
            (&mut out.requests, &upper.requests),
            (&mut out.limits, &upper.limits),
        ] {
            let value = theirs.as_ref().and_then(|t| t.get(&name)).cloned();
            let map = mine.get_or_insert_with(BTreeMap::new);
            match value {
                Some(v) => map.insert(name.clone(), v),
                None => map.remove(&name),
            };
        }
    }
    Some(out)
}

/// The container's resources: the settings' over our own bounded defaults.
fn resources(settings: Option<&ResourceRequirements>) -> ResourceRequirements {
    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(memory.into())),
        ])
    };
    let ours = ResourceRequirements {
        requests: Some(quantities("100m", "128Mi")),
        limits: Some(quantities("1", "512Mi")),
        ..Default::default()
    };
    layer(Some(ours), settings).unwrap_or_default()
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..Default::default()
    }
}

/// Exit codes that retrying cannot change fail the Job at once; evictions and
/// other disruptions do not count against the backoff limit.
fn pod_failure_policy() -> PodFailurePolicy {
    PodFailurePolicy {
        rules: vec![
            PodFailurePolicyRule {
                action: "FailJob".into(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    container_name: Some(CONTAINER.into()),
                    operator: "In".into(),
                    values: vec![
                        exit_code::INVALID.into(),
                        exit_code::LIMIT_EXCEEDED.into(),
                        exit_code::CANCELLED.into(),
                    ],
                }),
                on_pod_conditions: None,
            },
            PodFailurePolicyRule {
                action: "Ignore".into(),
                on_exit_codes: None,
                on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                    type_: "DisruptionTarget".into(),
                    status: "True".into(),
                }]),
            },
        ],
    }
}

/// The run a Job belongs to, by the Job's controller owner reference.
pub fn run_of(job: &Job) -> Option<String> {
    job.owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == SyncRun::kind(&()))
        .map(|o| o.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::*;

    fn objects() -> (SyncRun, CatalogApp, IdentityDomain, SyncPolicy) {
        let yaml = |s: &str| serde_yaml_ng::from_str::<serde_json::Value>(s).unwrap();
        let mut app: CatalogApp = serde_json::from_value(yaml(
            r#"
metadata: {name: slack, namespace: team-a, uid: u-app,
  labels: {argocd.argoproj.io/instance: team-a, team: a},
  annotations: {argocd.argoproj.io/tracking-id: "x"}}
spec:
  identityDomainRef: {name: corp}
  connection:
    url: https://slack.example/scim/v2
    auth: {bearerToken: {secretRef: {name: slack-scim, key: token}}}
"#,
        ))
        .unwrap();
        app.meta_mut().generation = Some(1);
        let domain: IdentityDomain = serde_json::from_value(yaml(
            r#"
metadata: {name: corp, namespace: team-a}
spec:
  url: https://iam.example/admin/v1
  auth: {basic: {secretRef: {name: corp-iam}}}
  tls: {caSecretRef: {name: corp-ca, key: ca.crt}}
"#,
        ))
        .unwrap();
        let policy: SyncPolicy = serde_json::from_value(yaml(
            r#"
metadata: {name: default, namespace: team-a}
spec: {timeout: 1h30m}
"#,
        ))
        .unwrap();
        let run: SyncRun = serde_json::from_value(yaml(
            r#"
metadata: {name: slack-29454360, namespace: team-a, uid: u-run,
  labels: {catalogsync.io/app: slack, argocd.argoproj.io/instance: team-a}}
spec: {appRef: {name: slack}, direction: Import, trigger: Schedule}
"#,
        ))
        .unwrap();
        (run, app, domain, policy)
    }

    fn config() -> JobConfig {
        JobConfig::new("registry.example/catalogsync:1.2.3", "catalogsync-sync-job")
    }

    #[test]
    fn job_runs_the_sync_entrypoint_owned_by_the_run() {
        let (run, app, domain, policy) = objects();
        let job = build(&run, &app, &domain, Some(&policy), &config());
        assert_eq!(job.metadata.name.as_deref(), Some("slack-29454360"));
        assert_eq!(job.metadata.namespace.as_deref(), Some("team-a"));
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("SyncRun", "slack-29454360", "u-run")
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(run_of(&job).as_deref(), Some("slack-29454360"));

        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(2));
        assert_eq!(spec.active_deadline_seconds, Some(5400 + 60));
        assert_eq!(spec.ttl_seconds_after_finished, Some(24 * 3600));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some("catalogsync-sync-job")
        );
        let c = &pod.containers[0];
        assert_eq!(
            c.image.as_deref(),
            Some("registry.example/catalogsync:1.2.3")
        );
        assert_eq!(c.command.as_deref(), Some(&["catalogsync".to_string()][..]));
        assert_eq!(
            c.args.as_deref().unwrap(),
            ["sync", "--run", "team-a/slack-29454360"]
        );
        let res = c.resources.as_ref().unwrap();
        assert!(res.requests.as_ref().unwrap().contains_key("memory"));
        assert!(res.limits.as_ref().unwrap().contains_key("memory"));
    }

    #[test]
    fn the_job_may_touch_only_its_own_run_app_domain_and_policy() {
        let (run, app, _, _) = objects();
        let role = access_role(&run, &app, Some("default"));
        let rules: Vec<(String, String, String)> = role
            .rules
            .unwrap()
            .into_iter()
            .map(|r| {
                assert_eq!(r.api_groups.unwrap(), ["catalogsync.io"]);
                (
                    r.resources.unwrap().join(","),
                    r.verbs.join(","),
                    r.resource_names.unwrap().join(","),
                )
            })
            .collect();
        let run_name = run.name_any();
        let want = [
            ("syncruns", "get", run_name.as_str()),
            ("syncruns/status", "patch", run_name.as_str()),
            ("catalogapps", "get", "slack"),
            (
                "identitydomains",
                "get",
                app.spec.identity_domain_ref.name.as_str(),
            ),
            ("syncpolicies", "get", "default"),
        ]
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()));
        assert_eq!(rules, want);
        assert_eq!(
            role.metadata.owner_references.unwrap()[0].name,
            run_name,
            "goes with its run"
        );
        let binding = access_binding(&run, &config());
        assert_eq!(binding.role_ref.name, access_name(&run));
        let subject = &binding.subjects.unwrap()[0];
        assert_eq!(subject.name, config().service_account);
        assert_eq!(subject.namespace, run.namespace());
        assert!(access_role(&run, &app, None).rules.unwrap().len() == 4);
        // The account the binding names exists where the Job runs, owned by no run.
        let sa = service_account(&run, &config());
        assert_eq!(sa.metadata.name.as_deref(), Some(subject.name.as_str()));
        assert_eq!(sa.metadata.namespace, run.namespace());
        assert!(sa.metadata.owner_references.is_none());
    }

    #[test]
    fn credentials_come_from_secret_refs_only() {
        let (run, app, domain, policy) = objects();
        let job = build(&run, &app, &domain, Some(&policy), &config());
        // What the controller checks for the credentials label before creating the Job.
        assert_eq!(secret_names(&job), ["corp-ca", "corp-iam", "slack-scim"]);
        let env = job.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        let secret_backed: Vec<(String, String, String)> = env
            .iter()
            .filter_map(|e| {
                let s = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
                Some((e.name.clone(), s.name.clone(), s.key.clone()))
            })
            .collect();
        assert_eq!(
            secret_backed,
            [
                (
                    "CATALOGSYNC_DOMAIN_USERNAME".into(),
                    "corp-iam".into(),
                    "username".into()
                ),
                (
                    "CATALOGSYNC_DOMAIN_PASSWORD".into(),
                    "corp-iam".into(),
                    "password".into()
                ),
                (
                    "CATALOGSYNC_DOMAIN_CA_CERT".into(),
                    "corp-ca".into(),
                    "ca.crt".into()
                ),
                (
                    "CATALOGSYNC_APP_TOKEN".into(),
                    "slack-scim".into(),
                    "token".into()
                ),
            ]
        );
        // No literal secret values: every other variable is plain configuration.
        assert!(
            env.iter()
                .filter(|e| e.value.is_some())
                .all(|e| e.name == "CATALOGSYNC_LOG_FORMAT" || e.name == MALLOC_MMAP_THRESHOLD.0)
        );
    }

    #[test]
    fn pod_passes_the_restricted_pod_security_standard() {
        let (run, app, domain, policy) = objects();
        let job = build(&run, &app, &domain, Some(&policy), &config());
        let pod = job.spec.unwrap().template.spec.unwrap();
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(65532));
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        assert!(pod.host_network.is_none() && pod.host_pid.is_none() && pod.host_ipc.is_none());
        for v in pod.volumes.as_deref().unwrap_or_default() {
            assert!(v.host_path.is_none(), "no hostPath volumes");
        }
        for c in &pod.containers {
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            assert_eq!(sc.run_as_non_root, Some(true));
            assert_ne!(sc.privileged, Some(true));
            assert_eq!(
                sc.capabilities.as_ref().unwrap().drop.as_deref(),
                Some(&["ALL".to_string()][..])
            );
            assert!(sc.capabilities.as_ref().unwrap().add.is_none());
            assert!(c.ports.is_none(), "no host ports");
        }
    }

    #[test]
    fn pod_failure_policy_fails_fast_on_unretryable_exit_codes() {
        let (run, app, domain, policy) = objects();
        let job = build(&run, &app, &domain, Some(&policy), &config());
        let pfp = job.spec.unwrap().pod_failure_policy.unwrap();
        let fail = &pfp.rules[0];
        assert_eq!(fail.action, "FailJob");
        let codes = &fail.on_exit_codes.as_ref().unwrap().values;
        assert!(codes.contains(&(exit_code::LIMIT_EXCEEDED as i32)));
        assert!(codes.contains(&(exit_code::INVALID as i32)));
        assert!(
            !codes.contains(&(exit_code::FAILED as i32)),
            "plain failures retry"
        );
        let ignore = &pfp.rules[1];
        assert_eq!(ignore.action, "Ignore");
        assert_eq!(
            ignore.on_pod_conditions.as_ref().unwrap()[0].type_,
            "DisruptionTarget"
        );
    }

    #[test]
    fn only_our_labels_reach_the_job_and_pod() {
        let (run, app, domain, policy) = objects();
        let job = build(&run, &app, &domain, Some(&policy), &config());
        let want = BTreeMap::from([
            (RUN_LABEL.to_string(), "slack-29454360".to_string()),
            (APP_LABEL.to_string(), "slack".to_string()),
        ]);
        assert_eq!(job.metadata.labels.as_ref(), Some(&want));
        assert!(job.metadata.annotations.is_none());
        let tpl = job.spec.unwrap().template.metadata.unwrap();
        assert_eq!(tpl.labels.as_ref(), Some(&want));
        assert!(tpl.annotations.is_none());
    }

    fn settings(yaml: &str) -> JobSettings {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    /// The pod of the Job built with `defaults` and a policy whose `spec.job` is `job`.
    fn pod_with(defaults: &str, job: Option<&str>) -> PodSpec {
        let (run, app, domain, mut policy) = objects();
        policy.spec.job = job.map(settings);
        let config = JobConfig {
            defaults: settings(defaults),
            ..config()
        };
        let job = build(&run, &app, &domain, Some(&policy), &config);
        job.spec.unwrap().template.spec.unwrap()
    }

    fn quantities(r: &Option<BTreeMap<String, Quantity>>) -> Vec<(&str, &str)> {
        let map = r.iter().flatten();
        map.map(|(k, v)| (k.as_str(), v.0.as_str())).collect()
    }

    fn env_of(pod: &PodSpec) -> Vec<(String, Option<String>)> {
        let env = pod.containers[0].env.iter().flatten();
        env.map(|e| (e.name.clone(), e.value.clone())).collect()
    }

    const POLICY_JOB: &str = r#"
resources: {requests: {memory: 1Gi}, limits: {memory: 2Gi}}
nodeSelector: {pool: batch}
tolerations: [{key: dedicated, operator: Equal, value: batch, effect: NoSchedule}]
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: In, values: [a]}]}]
priorityClassName: batch-low
imagePullSecrets: [{name: registry}]
env:
- {name: HTTPS_PROXY, value: "http://proxy:3128"}
- name: NO_PROXY
  valueFrom: {configMapKeyRef: {name: proxy, key: no_proxy}}
"#;

    #[test]
    fn every_policy_job_setting_reaches_the_pod() {
        let pod = pod_with("{}", Some(POLICY_JOB));
        let res = pod.containers[0].resources.as_ref().unwrap();
        assert_eq!(
            quantities(&res.requests),
            [("cpu", "100m"), ("memory", "1Gi")]
        );
        assert_eq!(quantities(&res.limits), [("cpu", "1"), ("memory", "2Gi")]);
        assert_eq!(pod.node_selector.as_ref().unwrap()["pool"], "batch");
        let toleration = &pod.tolerations.as_ref().unwrap()[0];
        assert_eq!(toleration.key.as_deref(), Some("dedicated"));
        let node = pod.affinity.as_ref().unwrap().node_affinity.as_ref();
        let terms = &node
            .unwrap()
            .required_during_scheduling_ignored_during_execution;
        assert_eq!(terms.as_ref().unwrap().node_selector_terms.len(), 1);
        assert_eq!(pod.priority_class_name.as_deref(), Some("batch-low"));
        assert_eq!(pod.image_pull_secrets.as_ref().unwrap()[0].name, "registry");
        let c = &pod.containers[0];
        let no_proxy = c.env.iter().flatten().find(|e| e.name == "NO_PROXY");
        let source = no_proxy.unwrap().value_from.as_ref().unwrap();
        assert_eq!(source.config_map_key_ref.as_ref().unwrap().key, "no_proxy");
    }

    #[test]
    fn defaults_apply_when_the_policy_sets_nothing() {
        let defaults = "{nodeSelector: {pool: sync}, priorityClassName: low, env: [{name: HTTPS_PROXY, value: p}]}";
        for job in [None, Some("{}")] {
            let pod = pod_with(defaults, job);
            assert_eq!(pod.node_selector.as_ref().unwrap()["pool"], "sync");
            assert_eq!(pod.priority_class_name.as_deref(), Some("low"));
            assert_eq!(env_of(&pod)[0], ("HTTPS_PROXY".into(), Some("p".into())));
        }
        // Provisioning runs have no policy: the defaults still hold.
        let (run, app, domain, _) = objects();
        let config = JobConfig {
            defaults: settings(defaults),
            ..config()
        };
        let job = build(&run, &app, &domain, None, &config);
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.priority_class_name.as_deref(), Some("low"));
    }

    #[test]
    fn the_policy_wins_over_the_defaults_field_by_field() {
        let defaults = r#"
nodeSelector: {pool: sync, arch: amd64}
tolerations: [{key: a, operator: Exists}]
imagePullSecrets: [{name: corp-registry}]
priorityClassName: low
env: [{name: HTTPS_PROXY, value: default}, {name: NO_PROXY, value: .corp}]
"#;
        let pod = pod_with(
            defaults,
            Some(
                "{nodeSelector: {pool: big}, tolerations: [{key: b, operator: Exists}], imagePullSecrets: [], env: [{name: HTTPS_PROXY, value: mine}, {name: RUST_LOG, value: debug}]}",
            ),
        );
        // Maps merge by key, lists are replaced ([] clears), env merges by name.
        let selector = pod.node_selector.clone().unwrap();
        assert_eq!(
            (selector["pool"].as_str(), selector["arch"].as_str()),
            ("big", "amd64")
        );
        let tolerations = pod.tolerations.clone().unwrap();
        assert_eq!(tolerations.len(), 1);
        assert_eq!(tolerations[0].key.as_deref(), Some("b"));
        assert_eq!(pod.image_pull_secrets, Some(vec![]));
        assert_eq!(pod.priority_class_name.as_deref(), Some("low"));
        let env = env_of(&pod);
        let user: Vec<_> = env
            .iter()
            .take(3)
            .map(|(n, v)| (n.as_str(), v.as_deref()))
            .collect();
        assert_eq!(
            user,
            [
                ("HTTPS_PROXY", Some("mine")),
                ("NO_PROXY", Some(".corp")),
                ("RUST_LOG", Some("debug"))
            ]
        );
    }

    #[test]
    fn resources_merge_per_resource_name() {
        let defaults = "{resources: {requests: {memory: 256Mi}, limits: {memory: 1Gi, ephemeral-storage: 1Gi}}}";
        // The policy names memory (limit only): its request goes too, so that no request
        // from another level exceeds the limit (Kubernetes sets it to the limit).
        let pod = pod_with(defaults, Some("{resources: {limits: {memory: 4Gi}}}"));
        let res = pod.containers[0].resources.clone().unwrap();
        assert_eq!(quantities(&res.requests), [("cpu", "100m")]);
        assert_eq!(
            quantities(&res.limits),
            [
                ("cpu", "1"),
                ("ephemeral-storage", "1Gi"),
                ("memory", "4Gi")
            ]
        );
        // Without a policy setting, the defaults' memory replaces ours; cpu stays ours.
        let pod = pod_with(defaults, None);
        let res = pod.containers[0].resources.clone().unwrap();
        assert_eq!(
            quantities(&res.requests),
            [("cpu", "100m"), ("memory", "256Mi")]
        );
        assert_eq!(
            quantities(&res.limits),
            [
                ("cpu", "1"),
                ("ephemeral-storage", "1Gi"),
                ("memory", "1Gi")
            ]
        );
    }

    #[test]
    fn our_variables_come_after_the_extra_ones_and_so_win() {
        // Admission refuses CATALOGSYNC_ names; were one to get through, the later
        // definition (ours) is the one the container sees.
        let pod = pod_with("{env: [{name: CATALOGSYNC_LOG_FORMAT, value: text}]}", None);
        let env = env_of(&pod);
        let last = env
            .iter()
            .rposition(|(n, _)| n == "CATALOGSYNC_LOG_FORMAT")
            .unwrap();
        assert_eq!(env[last].1.as_deref(), Some("json"));
        assert_eq!(env[0].0, "CATALOGSYNC_LOG_FORMAT");
        assert!(last > 0);
    }

    #[test]
    fn pod_with_every_setting_stays_restricted() {
        let pod = pod_with(POLICY_JOB, Some(POLICY_JOB));
        let plain = pod_with("{}", None);
        assert_eq!(pod.security_context, plain.security_context);
        assert_eq!(
            pod.containers[0].security_context,
            plain.containers[0].security_context
        );
        assert_eq!(pod.volumes, plain.volumes);
        assert!(pod.host_network.is_none() && pod.host_pid.is_none());
    }

    #[test]
    fn the_finished_job_ttl_is_the_controllers_setting() {
        let (run, app, domain, policy) = objects();
        let ttl = |secs: u64| {
            let config = JobConfig {
                ttl_after_finished: Duration::from_secs(secs),
                ..config()
            };
            let job = build(&run, &app, &domain, Some(&policy), &config);
            job.spec.unwrap().ttl_seconds_after_finished
        };
        assert_eq!(ttl(5), Some(5));
        assert_eq!(ttl(0), Some(0), "removed as soon as it finishes");
        assert_eq!(ttl(u64::MAX), Some(i32::MAX), "clamped, never wrapped");
    }

    #[test]
    fn default_timeout_without_a_policy() {
        let (run, app, domain, _) = objects();
        let job = build(&run, &app, &domain, None, &config());
        assert_eq!(job.spec.unwrap().active_deadline_seconds, Some(3600 + 60));
    }
}
