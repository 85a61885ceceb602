//! Nothing secret leaks. With known credential values, at debug level:
//! - the demo's story (`hack/demo.sh`'s steps, the controller and the job runner as
//!   `catalogsync dev up` starts them, the Jobs run as processes), then a wrong token: 401s
//!   in the controller's checks and in a run;
//! - scenarios of the fault campaign: answers lost after the write, 429 and 5xx, SIGTERM,
//!   SIGKILL mid-apply and the Job's retry;
//!
//! then every place an operator looks — the controller's and the engine's output, every
//! Event, every object (status included) of the four kinds, `/metrics` — is scanned for
//! each value and its base64 forms.

use catalogsync::api::{CatalogApp, IdentityDomain, RunPhase, SyncPolicy, SyncRun};
use catalogsync::dev::seed::Scenario as DemoScenario;
use catalogsync::dev::up;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams};
use serde::Serialize;

use super::{app_cond, eventually, tf};
use crate::e2e::Product;
use crate::faults::{Process, Scenario, Tally, campaign};

/// A value no code path would make up.
fn distinctive(what: &str) -> String {
    format!("tok-{what}-{:016x}", rand::random::<u64>())
}

/// Base64 (the form of a Secret's `data`) and its URL-safe alphabet, unpadded: a value
/// encoded inside a longer text still matches when it starts on a 3-byte boundary.
fn base64_forms(value: &str) -> [String; 2] {
    const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in value.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(STD[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    let url_safe = out.replace('+', "-").replace('/', "_");
    [out, url_safe]
}

/// Where the credentials appear: one line per (credential, place, form found).
fn hits(places: &[(String, String)], credentials: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (name, value) in credentials {
        let [b64, url_safe] = base64_forms(value);
        for (place, text) in places {
            let url_safe = (url_safe != b64).then_some(("base64url", &url_safe));
            let forms = [("raw", value), ("base64", &b64)]
                .into_iter()
                .chain(url_safe);
            for (form, needle) in forms {
                if text.contains(needle.as_str()) {
                    found.push(format!("{name} ({form}) in the {place}"));
                }
            }
        }
    }
    found
}

/// The scan finds what is there, in each form, and nothing else.
#[test]
fn the_scan_finds_a_planted_credential() {
    let secret = "tok-app-5eed0fc0ffee1234".to_string();
    let [b64, _] = base64_forms(&secret);
    assert_eq!(
        b64, "dG9rLWFwcC01ZWVkMGZjMGZmZWUxMjM0",
        "as base64 encodes it"
    );
    assert_eq!(base64_forms("a?>")[1], "YT8-", "URL-safe");
    let creds = [("app".to_string(), secret.clone())];
    let place = |name: &str, text: String| (name.to_string(), text);
    let planted = [
        place(
            "logs",
            format!("DEBUG request authorization=\"Bearer {secret}\""),
        ),
        place("events", format!(r#"[{{"data":{{"token":"{b64}"}}}}]"#)),
        place("metrics", "catalogsync_runs_total 3".into()),
    ];
    assert_eq!(
        hits(&planted, &creds),
        ["app (raw) in the logs", "app (base64) in the events"]
    );
    assert!(hits(&planted[2..], &creds).is_empty());
}

/// Every Event of `ns`, and every object of the four kinds (statuses included), as JSON.
async fn events_and_objects(client: &Client, ns: &str) -> [(String, String); 2] {
    async fn all<K>(client: &Client, ns: &str) -> String
    where
        K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + Serialize
            + std::fmt::Debug,
    {
        let list = Api::<K>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .unwrap();
        serde_json::to_string(&list.items).unwrap()
    }
    let objects = [
        all::<IdentityDomain>(client, ns).await,
        all::<CatalogApp>(client, ns).await,
        all::<SyncPolicy>(client, ns).await,
        all::<SyncRun>(client, ns).await,
    ]
    .join("\n");
    [
        (format!("events of {ns}"), all::<Event>(client, ns).await),
        (format!("statuses of {ns}"), objects),
    ]
}

/// What a story leaves to scan, and the credentials it used.
#[derive(Default)]
struct Haystack {
    places: Vec<(String, String)>,
    credentials: Vec<(String, String)>,
}

/// The demo's story, then a wrong slack token; a decoy credential is planted in an Event.
async fn demo_story(decoy: &str) -> Haystack {
    let scenario = DemoScenario::demo();
    let mut p =
        Product::start_as_processes("leaks-demo", &scenario, &["slack", "jira"], "debug").await;
    p.demo_story().await;

    // A wrong slack token: the controller's check and a run meet 401s.
    let wrong = distinctive("wrong");
    p.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: slack-scim, labels: {{catalogsync.io/credentials: \"true\"}}}}\nstringData: {{token: {wrong}}}\n"
    ))
    .await;
    p.wait_app("slack", 60, "Unauthorized", |a| {
        app_cond(a, "ProvisioningEnabled") == tf("False", "Unauthorized")
    })
    .await;
    p.apply("apiVersion: catalogsync.io/v1alpha1\nkind: SyncRun\nmetadata: {name: wrong-token}\nspec: {appRef: {name: slack}, direction: Provision, mode: Apply}\n")
        .await;
    let runs: Api<SyncRun> = Api::namespaced(p.client.clone(), &p.ns);
    let phase = eventually(120, "the wrong-token run ended", || async {
        let phase = runs.get("wrong-token").await.ok()?.status?.phase?;
        phase.is_finished().then_some(phase)
    })
    .await;
    assert_eq!(phase, RunPhase::Failed);

    // The decoy, where a careless message would put a credential: the scan must find it.
    p.apply(&format!(
        "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {{name: decoy}}\neventTime: \"2026-01-01T00:00:00.000000Z\"\nreportingController: leaks-test\nreportingInstance: leaks-test\naction: Check\nreason: Decoy\ntype: Normal\nnote: \"planted {decoy}\"\nregarding: {{kind: CatalogApp, name: slack, namespace: {}}}\n",
        p.ns
    ))
    .await;

    let metrics = p.metrics().await;
    p.stop();
    let mut places = vec![
        ("controller log".to_string(), p.log("controller")),
        // The Jobs' processes write into the runner's output, as into a pod's log.
        ("engine logs".to_string(), p.log("job-runner")),
        ("metrics".to_string(), metrics),
    ];
    places.extend(events_and_objects(&p.client.clone(), &p.ns).await);
    // The haystacks are real: they hold the story (so a miss is not an empty scan).
    let text = |place: &str| &places.iter().find(|(p, _)| p.starts_with(place)).unwrap().1;
    assert!(
        text("controller log").contains("401"),
        "the checks are logged"
    );
    assert!(text("engine logs").contains("run finished"));
    assert!(
        text("engine logs").contains("401"),
        "the failing run is logged"
    );
    assert!(text("events").contains("ConnectivityLost"));
    assert!(text("statuses").contains("LimitExceeded") && text("statuses").contains("401"));
    assert!(text("metrics").contains("catalogsync_"));
    let mut credentials: Vec<(String, String)> = ["iam", "slack", "jira"]
        .iter()
        .map(|t| (format!("{t} token"), up::token(t)))
        .collect();
    credentials.push(("wrong slack token".into(), wrong));
    Haystack {
        places,
        credentials,
    }
}

/// The first scenarios of the campaign (seed 1) that lose answers, one per process fault
/// and direction, each in a world of its own with its engine's output kept.
async fn fault_scenarios(log_dir: &std::path::Path) -> Haystack {
    let mut picked: Vec<Scenario> = Vec::new();
    for i in 0.. {
        let s = Scenario::draw(1, i);
        let kind = |p: &Scenario| (p.process, p.direction);
        if s.rate_lost > 0.0 && !picked.iter().any(|p| kind(p) == kind(&s)) {
            picked.push(s);
        }
        if picked.len() == 6 {
            break;
        }
    }
    let mut tally = Tally::default();
    let mut hay = Haystack::default();
    for (i, s) in picked.iter().enumerate() {
        let log = log_dir.join(format!("engine-{i}.log"));
        let mut w = campaign::world(s).await;
        w.keep_engine_logs(&log);
        let violations = campaign::run_in(&w, s, &mut tally).await;
        assert!(violations.is_empty(), "{s:?}: {violations:?}");
        let engine = std::fs::read_to_string(&log).unwrap();
        assert!(engine.contains("run finished") || s.process == Process::KillAndRetry);
        let scenario = format!("{:?} {:?}", s.direction, s.process);
        hay.places
            .push((format!("engine logs of {scenario}"), engine));
        hay.places
            .extend(events_and_objects(&w.cp.admin_client(), &w.ns).await);
        for t in ["idp", "app"] {
            hay.credentials
                .push((format!("{t} token of {scenario}"), w.server.token(t)));
        }
    }
    let lost =
        tally.injected.get("lost").unwrap_or(&0) + tally.injected.get("lost502").unwrap_or(&0);
    assert!(lost > 0, "answers were lost: {:?}", tally.injected);
    hay
}

#[tokio::test]
async fn no_credential_value_reaches_logs_events_statuses_or_metrics() {
    let decoy = distinctive("decoy");
    let dir = tempfile::tempdir().unwrap();
    // Concurrently: each waits on processes most of the time.
    let (demo, faults) = tokio::join!(demo_story(&decoy), fault_scenarios(dir.path()));
    let places = [demo.places, faults.places].concat();
    let mut credentials = [demo.credentials, faults.credentials].concat();
    credentials.push(("decoy".into(), decoy));
    let found = hits(&places, &credentials);
    let bytes: usize = places.iter().map(|(_, t)| t.len()).sum();
    println!(
        "scanned {} places ({bytes} bytes) for {} credentials: {found:?}",
        places.len(),
        credentials.len()
    );
    assert_eq!(
        found,
        [format!(
            "decoy (raw) in the events of {}",
            places_ns(&places)
        )],
        "only the planted decoy is found"
    );
}

/// The demo's namespace, from its events' place name.
fn places_ns(places: &[(String, String)]) -> String {
    places
        .iter()
        .find_map(|(p, _)| {
            p.strip_prefix("events of ")
                .filter(|ns| ns.starts_with("leaks-demo"))
        })
        .unwrap()
        .to_string()
}
