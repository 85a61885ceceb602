//! The harness hands out working identities: an admin, real service-account
//! tokens subject to RBAC, and a kubeconfig that `kubectl` accepts.

use k8s_openapi::api::{authentication::v1::SelfSubjectReview, core::v1::Pod};
use kube::{
    Client,
    api::{Api, ListParams, PostParams},
};

use crate::harness::{assert_allowed, assert_forbidden, control_plane};

async fn whoami(client: Client) -> (String, Vec<String>) {
    let review = Api::<SelfSubjectReview>::all(client)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("SelfSubjectReview");
    let user = review.status.and_then(|s| s.user_info).expect("user info");
    (
        user.username.unwrap_or_default(),
        user.groups.unwrap_or_default(),
    )
}

#[tokio::test]
async fn admin_and_service_account_clients_authenticate_as_themselves() {
    let cp = control_plane().await;
    let (admin, groups) = whoami(cp.admin_client()).await;
    assert_eq!(admin, "catalogsync-admin");
    assert!(groups.iter().any(|g| g == "system:masters"), "{groups:?}");

    let ns = cp.new_namespace("clients").await;
    let sa = cp.sa_client(&ns, "robot").await;
    let (user, groups) = whoami(sa.clone()).await;
    assert_eq!(user, format!("system:serviceaccount:{ns}:robot"));
    assert!(
        groups.iter().any(|g| g == "system:serviceaccounts"),
        "{groups:?}"
    );

    // RBAC is enforced: an unbound account may do nothing, the admin anything.
    let lp = ListParams::default();
    assert_forbidden(
        Api::<Pod>::namespaced(sa, &ns).list(&lp).await,
        "unbound account lists pods",
    );
    assert_allowed(
        Api::<Pod>::namespaced(cp.admin_client(), &ns)
            .list(&lp)
            .await,
        "admin lists pods",
    );
    // A made-up token is rejected outright.
    let forged = cp.client_with_token("not-a-token");
    match Api::<Pod>::namespaced(forged, &ns).list(&lp).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 401),
        other => panic!("forged token: expected 401, got {other:?}"),
    }
}

#[tokio::test]
async fn kubeconfig_works_for_kubectl() {
    let cp = control_plane().await;
    assert!(cp.kubeconfig_path().is_file());
    let out = cp
        .kubectl([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "catalogsync-admin");
    let out = cp
        .kubectl(["get", "namespace", "kube-system", "-o", "name"])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "namespace/kube-system"
    );
}
