//! Credentials travel only over TLS, to the object's own host — on the real control plane,
//! through the controller's checks and the engine.

use catalogsync::api::{CatalogApp, RunPhase};
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::{Env, app_cond, app_message, tf};
use crate::scim_client::tiny_server;
use crate::scim_server::{FaultProxy, generate_certs};

/// The IdentityDomain `corp` at `url` with `more` (YAML lines of its spec).
fn domain(url: &str, more: &str) -> String {
    format!(
        "apiVersion: catalogsync.io/v1alpha1\nkind: IdentityDomain\nmetadata: {{name: corp}}\nspec:\n  url: {url}\n  auth: {{bearerToken: {{secretRef: {{name: iam-token, key: token}}}}}}\n{more}"
    )
}

/// The CatalogApp `slack` (provisioning only) at `url` with `more` (YAML lines of its
/// connection).
fn app(url: &str, more: &str) -> String {
    format!(
        "apiVersion: catalogsync.io/v1alpha1\nkind: CatalogApp\nmetadata: {{name: slack}}\nspec:\n  identityDomainRef: {{name: corp}}\n  provisioning: {{enabled: true}}\n  connection:\n    url: {url}\n    auth: {{bearerToken: {{secretRef: {{name: app-token, key: token}}}}}}\n{more}"
    )
}

/// https with a custom CA works without any opt-in, for the controller and for a run;
/// plain http is refused at admission (create and update) unless opted in; an untrusted
/// certificate and a redirect to another host end not Ready with a precise message, and the
/// redirect's target never hears from catalogsync.
#[tokio::test]
async fn credentials_go_over_tls_to_their_own_host_only() {
    let (env, _ctl) = Env::with_controller("tls").await;
    let certs = tempfile::tempdir().unwrap();
    generate_certs(certs.path());
    let tls = FaultProxy::start_with(&env.scim.root(), Some(certs.path()));
    let ca = std::fs::read_to_string(certs.path().join("ca.pem")).unwrap();
    env.secret("iam-token", &env.scim.token("iam")).await;
    env.secret("app-token", &env.scim.token("app")).await;
    env.apply(
        &json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "corp-ca", "labels": {"catalogsync.io/credentials": "true"}},
                "stringData": {"ca.crt": ca}})
        .to_string(),
    )
    .await;

    // Plain http without the opt-in: refused at admission, with the rule's message.
    let msg = env
        .cp
        .apply_yaml_expect_rejection(&env.ns, &domain(&env.scim.base_url("iam"), ""))
        .await;
    assert!(
        msg.contains("url must start with https:// (credentials travel only over TLS); plain http:// needs spec.insecure: true"),
        "{msg}"
    );
    let msg = env
        .cp
        .apply_yaml_expect_rejection(&env.ns, &app(&env.scim.base_url("app"), ""))
        .await;
    assert!(
        msg.contains("plain http:// needs spec.connection.insecure: true"),
        "{msg}"
    );

    // https with the custom CA, no opt-in: Ready, and a run works over TLS too.
    let with_ca = "tls: {caSecretRef: {name: corp-ca, key: ca.crt}}";
    env.apply(&domain(&tls.base_url("iam"), &format!("  {with_ca}\n")))
        .await;
    env.apply(&app(&tls.base_url("app"), &format!("    {with_ca}\n")))
        .await;
    env.wait_ready().await;
    let (stop, runner) = env.start_runner();
    env.request("over-tls", None).await;
    let a = env
        .wait_app("the provisioning run ended", |a| {
            a.status
                .as_ref()
                .and_then(|s| s.last_provisioning_run.as_ref())
                .is_some_and(|r| r.phase.is_some_and(RunPhase::is_finished))
        })
        .await;
    let run = a.status.unwrap().last_provisioning_run.unwrap();
    assert_eq!(run.phase, Some(RunPhase::Succeeded), "{:?}", run.message);
    let _ = stop.send(true);
    runner.await.unwrap().unwrap();

    // Switching to http later is refused as well (an update, not only a create).
    let err = env
        .api::<CatalogApp>()
        .patch(
            "slack",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"connection": {"url": env.scim.base_url("app")}}})),
        )
        .await
        .expect_err("http without the opt-in");
    assert!(err.to_string().contains("plain http://"), "{err}");

    // Without the CA the certificate is not trusted: the credential is never sent.
    env.apply(&app(&tls.base_url("app"), "")).await;
    let a = env
        .wait_app("ConnectivityFailed", |a| {
            app_cond(a, "ProvisioningEnabled") == tf("False", "ConnectivityFailed")
        })
        .await;
    let msg = app_message(&a, "ProvisioningEnabled");
    assert!(
        msg.contains("invalid peer certificate: UnknownIssuer"),
        "the message says why: {msg}"
    );

    // A redirect to another host is not followed: the credential stays home.
    let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
    let (elsewhere, mut seen_elsewhere) = tiny_server(ok.into()).await;
    let (home, mut seen_home) = tiny_server(format!(
        "HTTP/1.1 307 Temporary Redirect\r\nlocation: {elsewhere}/steal\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    ))
    .await;
    env.apply(&app(&format!("{home}/scim/v2"), "    insecure: true\n"))
        .await;
    let a = env
        .wait_app("the redirect refused", |a| {
            app_message(a, "ProvisioningEnabled").contains("redirected")
        })
        .await;
    assert_eq!(
        app_cond(&a, "ProvisioningEnabled").unwrap().0,
        "False",
        "{:?}",
        a.status
    );
    let head = tokio::time::timeout(std::time::Duration::from_secs(10), seen_home.recv())
        .await
        .expect("the check reached home")
        .unwrap();
    assert!(
        head.contains("Bearer"),
        "home is where the token goes: {head}"
    );
    assert!(
        seen_elsewhere.try_recv().is_err(),
        "nothing reached the redirect's target"
    );
}
