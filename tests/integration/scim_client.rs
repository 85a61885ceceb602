//! The SCIM client against the real scim2-server (hack/scim/serve.py).

use crate::scim_server::{FaultProxy, ScimServer, TenantSpec, generate_certs};
use catalogsync::scim::model::{GROUPS, USERS};
use catalogsync::scim::{
    Auth, BulkOperation, ClientOptions, ErrorKind, Group, MemberRemoval, PatchOp, RetryPolicy,
    ScimClient, ScimError, Timeouts, User,
};
use futures::TryStreamExt;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::{Duration, Instant};

fn client(server: &ScimServer, tenant: &str) -> ScimClient {
    ScimClient::new(
        &server.base_url(tenant),
        Auth::Bearer(server.token(tenant)),
        None,
        Timeouts::default(),
        4,
    )
    .expect("client")
}

fn user_names(resources: &[Value]) -> HashSet<String> {
    resources
        .iter()
        .map(|r| r["userName"].as_str().expect("userName").to_string())
        .collect()
}

#[tokio::test]
async fn lists_2500_users_by_index_and_by_cursor_asking_only_needed_attributes() {
    let server = ScimServer::start_with(
        vec![TenantSpec::new("idx"), TenantSpec::new("cur").cursor()],
        None,
    );
    for tenant in ["idx", "cur"] {
        server.seed_users(tenant, "user", 2500).await;
        let c = client(&server, tenant);
        let (users, stats) = c.list(USERS, &["userName"], None).await.expect("list");
        assert_eq!(users.len(), 2500, "{tenant}");
        assert_eq!(
            user_names(&users).len(),
            2500,
            "{tenant}: distinct userNames"
        );
        // maxResults is 1000: three pages, plus one ServiceProviderConfig request.
        assert_eq!(stats.pages, 3, "{tenant}");
        assert_eq!(c.requests(), 4, "{tenant}");
        assert!(stats.consistent);
        assert_eq!(stats.duplicates, 0);
        assert_eq!(stats.total_results, Some(2500));
        // attributes=id,userName: the seeded emails and names are not sent.
        assert!(
            users
                .iter()
                .all(|u| u.get("emails").is_none() && u.get("name").is_none())
        );
        let pager = c.pager(USERS, &["userName"], None).await.unwrap();
        assert_eq!(pager.uses_cursor(), tenant == "cur");
        assert_eq!(pager.page_size(), Some(1000));
    }

    // The stream form yields the same resources; a filter narrows the listing.
    let c = client(&server, "idx");
    let streamed: Vec<Value> = c
        .list_stream(USERS, &["userName"], None)
        .try_collect()
        .await
        .expect("stream");
    assert_eq!(user_names(&streamed).len(), 2500);
    let (found, _) = c
        .list(USERS, &["userName"], Some(r#"userName sw "user00001""#))
        .await
        .unwrap();
    assert_eq!(found.len(), 10, "user000010..user000019");
}

#[tokio::test]
async fn index_paging_survives_deletions_between_pages() {
    let server = ScimServer::start(&["idp"]);
    server.seed_users("idp", "user", 1000).await;
    let mut opts = ClientOptions::new(server.base_url("idp"), Auth::Bearer(server.token("idp")));
    opts.page_size = Some(100);
    let c = ScimClient::with_options(opts).unwrap();

    let mut pager = c.pager(USERS, &["userName"], None).await.unwrap();
    let mut seen: Vec<Value> = pager.next_page().await.unwrap().expect("first page");
    assert_eq!(seen.len(), 100);
    // Deleting 50 users of the first page shifts every later index by 50:
    // a naive index pager would now skip 50 users that still exist.
    for u in &seen[..50] {
        assert!(
            c.delete(USERS, u["id"].as_str().unwrap(), None)
                .await
                .unwrap()
        );
    }
    while let Some(page) = pager.next_page().await.unwrap() {
        seen.extend(page);
    }
    let stats = pager.stats().clone();
    let (now, _) = c.list(USERS, &["userName"], None).await.unwrap();
    assert_eq!(now.len(), 950);
    let seen_names = user_names(&seen);
    assert!(
        user_names(&now).is_subset(&seen_names),
        "no surviving user missed"
    );
    assert_eq!(seen.len(), seen_names.len(), "no user returned twice");
    assert_eq!(stats.passes, 2, "totalResults moved, so a second pass ran");
    assert!(
        stats.duplicates >= 900,
        "second pass dropped the users already seen: {stats:?}"
    );
    assert!(stats.consistent);
}

#[tokio::test]
async fn create_get_patch_replace_delete_with_etags_and_typed_errors() {
    let server = ScimServer::start(&["idp"]);
    let c = client(&server, "idp");
    let mut alice = User::new("alice");
    alice.emails.push(catalogsync::scim::model::Email {
        value: "alice@example.com".into(),
        kind: Some("work".into()),
        primary: Some(true),
    });
    let created = c.create(USERS, &alice).await.expect("create");
    let id = created["id"].as_str().unwrap().to_string();
    let v1 = created["meta"]["version"].as_str().unwrap().to_string();

    let got = c
        .get(USERS, &id, &["userName", "emails"])
        .await
        .unwrap()
        .expect("exists");
    assert_eq!(got["userName"], "alice");
    assert_eq!(got["emails"][0]["value"], "alice@example.com");

    let patch = PatchOp::new(vec![PatchOp::replace("displayName", json!("Alice L."))]);
    c.patch(USERS, &id, &patch, Some(&v1))
        .await
        .expect("patch with current ETag");
    let got = c.get(USERS, &id, &[]).await.unwrap().unwrap();
    assert_eq!(got["displayName"], "Alice L.");

    // The version moved: the old ETag is refused with a distinct kind.
    let stale = c.patch(USERS, &id, &patch, Some(&v1)).await.unwrap_err();
    assert_eq!(stale.kind(), Some(ErrorKind::PreconditionFailed), "{stale}");

    let mut replacement: User = serde_json::from_value(got.clone()).unwrap();
    replacement.display_name = Some("Alice Liddell".into());
    let v2 = got["meta"]["version"].as_str().map(str::to_string);
    let replaced = c
        .replace(USERS, &id, &replacement, v2.as_deref())
        .await
        .expect("put");
    assert_eq!(replaced["displayName"], "Alice Liddell");

    // A second alice is a uniqueness conflict, which the engine turns into a link.
    let dup = c.create(USERS, &User::new("alice")).await.unwrap_err();
    assert!(dup.is_conflict() && dup.is_uniqueness(), "{dup}");
    assert!(dup.to_string().contains("409"), "{dup}");

    let bad = c
        .create(
            USERS,
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"]}),
        )
        .await
        .unwrap_err();
    assert_eq!(bad.kind(), Some(ErrorKind::BadRequest), "{bad}");

    assert!(c.delete(USERS, &id, None).await.unwrap());
    assert!(c.get(USERS, &id, &[]).await.unwrap().is_none());
    assert!(!c.delete(USERS, &id, None).await.unwrap(), "already gone");
}

#[tokio::test]
async fn membership_changes_are_batched() {
    let server = ScimServer::start(&["idp"]);
    let ids = server.seed_users("idp", "member", 3000).await;
    assert_eq!(ids.len(), 3000);
    let c = client(&server, "idp");
    let group = c.create(GROUPS, &Group::new("app-users")).await.unwrap();
    let gid = group["id"].as_str().unwrap().to_string();

    let before = c.requests();
    let sent = c.add_members(&gid, &ids[..2500]).await.unwrap();
    assert_eq!(sent, 1, "2,500 members in one request (3 operations)");
    assert_eq!(c.requests() - before, 1);
    let (members, _) = c.group_members(&gid).await.unwrap().unwrap();
    assert_eq!(
        members.iter().collect::<HashSet<_>>(),
        ids[..2500].iter().collect()
    );
    // Members are added as users (RFC 7643 section 4.2 `members.type`), and stored so.
    let stored = c.get(GROUPS, &gid, &["members"]).await.unwrap().unwrap();
    let members = stored["members"].as_array().expect("members");
    assert!(
        members.iter().all(|m| m["type"] == "User"),
        "member types: {:?}",
        &members[..2]
    );

    // Auto uses read + replace under If-Match here (scim2-server has ETags).
    c.remove_members(&gid, &ids[..1200]).await.unwrap();
    let (members, _) = c.group_members(&gid).await.unwrap().unwrap();
    assert_eq!(
        members.iter().collect::<HashSet<_>>(),
        ids[1200..2500].iter().collect()
    );

    // The filter strategy: one request for 30 values.
    let mut opts = ClientOptions::new(server.base_url("idp"), Auth::Bearer(server.token("idp")));
    opts.member_removal = MemberRemoval::Filter;
    let fc = ScimClient::with_options(opts).unwrap();
    let sent = fc.remove_members(&gid, &ids[1200..1230]).await.unwrap();
    assert_eq!(sent, 1);
    let (members, _) = c.group_members(&gid).await.unwrap().unwrap();
    assert_eq!(
        members.iter().collect::<HashSet<_>>(),
        ids[1230..2500].iter().collect()
    );

    // Removing non-members changes nothing and sends no PATCH.
    let sent = c.remove_members(&gid, &ids[2500..2510]).await.unwrap();
    assert_eq!(sent, 0);
    // Removing everyone leaves an empty group.
    c.remove_members(&gid, &ids).await.unwrap();
    let (members, _) = c.group_members(&gid).await.unwrap().unwrap();
    assert!(members.is_empty());
    assert!(c.group_members("no-such-group").await.unwrap().is_none());
}

#[tokio::test]
async fn bulk_creates_in_chunks_of_max_operations() {
    let server = ScimServer::start(&["idp"]);
    let c = client(&server, "idp");
    let ops: Vec<BulkOperation> = (0..1500)
        .map(|i| {
            BulkOperation::post(
                USERS,
                format!("b{i}"),
                serde_json::to_value(User::new(format!("bulk{i}"))).unwrap(),
            )
        })
        .chain(std::iter::once(BulkOperation::post(
            USERS,
            "dup",
            serde_json::to_value(User::new("bulk0")).unwrap(),
        )))
        .collect();
    c.service_provider_config().await.unwrap();
    let before = c.requests();
    let outcomes = c.bulk(&ops).await.unwrap();
    assert_eq!(c.requests() - before, 2, "maxOperations is 1000");
    assert_eq!(outcomes.len(), 1501);
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| o.status == 201 && o.id().is_some())
            .count(),
        1500
    );
    assert_eq!(outcomes.last().unwrap().status, 409);
    let (users, _) = c.list(USERS, &["userName"], None).await.unwrap();
    assert_eq!(users.len(), 1500);
}

#[tokio::test]
async fn create_many_reports_each_item_with_or_without_bulk() {
    let server = ScimServer::start_with(
        vec![TenantSpec::new("bulk"), TenantSpec::new("plain").no_bulk()],
        None,
    );
    for (tenant, expected_requests) in [("bulk", 1), ("plain", 3)] {
        let c = client(&server, tenant);
        c.create(USERS, &User::new("taken")).await.unwrap();
        c.service_provider_config().await.unwrap();
        let before = c.requests();
        let users: Vec<Value> = ["a", "taken", "b"]
            .iter()
            .map(|n| serde_json::to_value(User::new(*n)).unwrap())
            .collect();
        let results = c.create_many(USERS, users).await.unwrap();
        assert_eq!(c.requests() - before, expected_requests, "{tenant}");
        assert_eq!(results.len(), 3);
        let a = results[0].as_ref().expect("a created");
        assert_eq!(
            c.get(USERS, a, &[]).await.unwrap().unwrap()["userName"],
            "a"
        );
        let err = results[1].as_ref().unwrap_err();
        assert!(err.is_uniqueness(), "{tenant}: {err}");
        let b = results[2].as_ref().expect("b created");
        assert_eq!(
            c.get(USERS, b, &[]).await.unwrap().unwrap()["userName"],
            "b"
        );
    }
}

#[tokio::test]
async fn member_removal_falls_back_to_filters_without_etags() {
    let server = ScimServer::start_with(vec![TenantSpec::new("noetag").no_etag()], None);
    let ids = server.seed_users("noetag", "m", 50).await;
    let c = client(&server, "noetag");
    assert!(!c.capabilities().await.unwrap().etag);
    let gid = c.create(GROUPS, &Group::new("g")).await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    c.add_members(&gid, &ids).await.unwrap();
    let before = c.requests();
    assert_eq!(c.remove_members(&gid, &ids[..20]).await.unwrap(), 1);
    assert_eq!(c.requests() - before, 1, "one filtered PATCH, no read");
    let (members, version) = c.group_members(&gid).await.unwrap().unwrap();
    assert_eq!(
        members.iter().collect::<HashSet<_>>(),
        ids[20..].iter().collect()
    );
    assert!(version.is_none());
}

#[tokio::test]
async fn authentication_schemes_and_401() {
    let server = ScimServer::start_with(
        vec![
            TenantSpec::new("app")
                .basic("admin", "pw")
                .oauth_client("cid", "csecret"),
        ],
        None,
    );
    server.seed_users("app", "u", 5).await;
    let base = server.base_url("app");
    let mk = |auth| ScimClient::new(&base, auth, None, Timeouts::default(), 2).unwrap();

    let bad = mk(Auth::Bearer("wrong".into()));
    let err = bad.list(USERS, &["userName"], None).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::Unauthorized), "{err}");
    assert_eq!(
        bad.requests(),
        2,
        "ServiceProviderConfig is public; the 401 is not retried"
    );

    let basic = mk(Auth::Basic {
        username: "admin".into(),
        password: "pw".into(),
    });
    assert_eq!(basic.list(USERS, &[], None).await.unwrap().0.len(), 5);
    let wrong_pw = mk(Auth::Basic {
        username: "admin".into(),
        password: "nope".into(),
    });
    assert!(
        wrong_pw.get(USERS, "x", &[]).await.unwrap_err().kind() == Some(ErrorKind::Unauthorized)
    );

    let oauth = mk(Auth::OAuth2ClientCredentials {
        token_url: server.token_url("app"),
        client_id: "cid".into(),
        client_secret: "csecret".into(),
        scopes: vec!["scim".into()],
    });
    assert_eq!(oauth.list(USERS, &[], None).await.unwrap().0.len(), 5);
    assert!(oauth.get(USERS, "missing", &[]).await.unwrap().is_none());
    // The token endpoint behind a counting proxy: one token fetch serves many requests.
    let proxy = FaultProxy::start(&server.root());
    let counted = mk(Auth::OAuth2ClientCredentials {
        token_url: format!("{}/app/oauth2/token", proxy.root()),
        client_id: "cid".into(),
        client_secret: "csecret".into(),
        scopes: vec![],
    });
    for _ in 0..5 {
        assert!(counted.get(USERS, "missing", &[]).await.unwrap().is_none());
    }
    assert_eq!(counted.requests(), 5);
    assert_eq!(proxy.stats().await["requests"], 1, "the token is cached");

    let bad_oauth = mk(Auth::OAuth2ClientCredentials {
        token_url: server.token_url("app"),
        client_id: "cid".into(),
        client_secret: "wrong-secret".into(),
        scopes: vec![],
    });
    let err = bad_oauth.get(USERS, "x", &[]).await.unwrap_err();
    assert!(matches!(err, ScimError::Auth(_)), "{err}");
    assert!(!err.to_string().contains("wrong-secret"));
}

fn fast_retry_client(base: &str, token: String, max_attempts: u32) -> ScimClient {
    let mut opts = ClientOptions::new(base, Auth::Bearer(token));
    opts.retry = RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        max_retry_after: Duration::from_secs(10),
    };
    ScimClient::with_options(opts).unwrap()
}

#[tokio::test]
async fn retries_429_5xx_and_dropped_connections_through_the_fault_proxy() {
    let server = ScimServer::start(&["idp"]);
    server.seed_users("idp", "user", 2500).await;
    let proxy = FaultProxy::start(&server.root());
    let base = proxy.base_url("idp");

    // 429 (Retry-After: 1), 503, a dropped connection, then success.
    proxy
        .plan(json!({"fail": {"1": 429, "2": 503, "3": "drop"}, "retryAfter": "1"}))
        .await;
    let c = fast_retry_client(&base, server.token("idp"), 5);
    let started = Instant::now();
    let spc = c.service_provider_config().await.expect("recovered");
    assert!(spc.patch.supported);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert_eq!(c.requests(), 4);
    assert_eq!(c.retries(), 3);
    let stats = proxy.stats().await;
    assert_eq!(stats["requests"], 4);
    assert_eq!(stats["injected"], json!({"429": 1, "503": 1, "drop": 1}));

    // Random throttling and server errors during a full listing.
    proxy
        .plan(json!({"rate429": 0.25, "rate5xx": 0.15, "retryAfter": "0"}))
        .await;
    let c = fast_retry_client(&base, server.token("idp"), 10);
    let (users, _) = c
        .list(USERS, &["userName"], None)
        .await
        .expect("list under faults");
    assert_eq!(user_names(&users).len(), 2500);
    let injected: u64 = proxy.stats().await["injected"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        c.retries(),
        injected,
        "every injected fault was retried once"
    );

    // Bounded attempts: the last error is kept.
    proxy
        .plan(json!({"fail": {"1": 500, "2": 500, "3": 500}}))
        .await;
    let c = fast_retry_client(&base, server.token("idp"), 3);
    let err = c.get(USERS, "x", &[]).await.unwrap_err();
    assert!(
        matches!(err, ScimError::RetriesExhausted { attempts: 3, .. }),
        "{err}"
    );
    assert_eq!(err.kind(), Some(ErrorKind::Server));

    // A Retry-After past the client's limit fails at once rather than stalling.
    proxy
        .plan(json!({"fail": {"1": 429}, "retryAfter": "3600"}))
        .await;
    let c = fast_retry_client(&base, server.token("idp"), 3);
    let started = Instant::now();
    let err = c.get(USERS, "x", &[]).await.unwrap_err();
    assert!(
        matches!(err, ScimError::RetryAfterTooLong { seconds: 3600, .. }),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Costs of the real server, for the numbers in the docs. Run with
/// `cargo test --test integration scim_costs -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: ~1 min, prints measurements"]
async fn scim_costs() {
    const N: usize = 20_000;
    let server = ScimServer::start_with(
        vec![TenantSpec::new("idx"), TenantSpec::new("cur").cursor()],
        None,
    );
    let t = Instant::now();
    let ids = server.seed_users("idx", "user", N).await;
    println!("seed {N} users (server-side): {:.2?}", t.elapsed());
    server.seed_users("cur", "user", N).await;

    for tenant in ["idx", "cur"] {
        let c = client(&server, tenant);
        c.service_provider_config().await.unwrap();
        for attrs in [&["userName", "emails"][..], &[][..]] {
            let t = Instant::now();
            let (users, stats) = c.list(USERS, attrs, None).await.unwrap();
            let el = t.elapsed();
            println!(
                "list {tenant} attrs={attrs:?}: {} users, {} pages, {:.2?} total, {:.0?}/page",
                users.len(),
                stats.pages,
                el,
                el / stats.pages as u32
            );
        }
    }

    let c = client(&server, "idx");
    for i in 0..2 {
        let t = Instant::now();
        let (found, _) = c
            .list(USERS, &["userName"], Some(r#"userName eq "user012345""#))
            .await
            .unwrap();
        println!(
            "filter userName eq (#{i}): {} found, {:.2?}",
            found.len(),
            t.elapsed()
        );
    }
    let t = Instant::now();
    let (found, _) = c
        .list(
            USERS,
            &["userName"],
            Some(r#"emails.value eq "user012345@example.com""#),
        )
        .await
        .unwrap();
    println!(
        "filter emails.value eq: {} found, {:.2?}",
        found.len(),
        t.elapsed()
    );
    let t = Instant::now();
    for id in &ids[..100] {
        c.get(USERS, id, &["userName"]).await.unwrap().unwrap();
    }
    println!("GET by id: {:.2?} each", t.elapsed() / 100);
    let t = Instant::now();
    assert!(c.get(USERS, "missing", &[]).await.unwrap().is_none());
    println!("GET 404: {:.2?}", t.elapsed());

    let gid = c.create(GROUPS, &Group::new("big")).await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let t = Instant::now();
    let sent = c.add_members(&gid, &ids[..10_000]).await.unwrap();
    println!("add 10,000 members: {sent} request(s), {:.2?}", t.elapsed());
    let t = Instant::now();
    c.add_members(&gid, &ids[10_000..10_001]).await.unwrap();
    println!("add 1 member to a 10,000-member group: {:.2?}", t.elapsed());
    let t = Instant::now();
    c.add_members(&gid, &ids[10_001..11_001]).await.unwrap();
    println!(
        "add 1,000 members to a 10,001-member group: {:.2?}",
        t.elapsed()
    );
    let t = Instant::now();
    let (m, _) = c.group_members(&gid).await.unwrap().unwrap();
    println!("read {} members: {:.2?}", m.len(), t.elapsed());
    let t = Instant::now();
    c.remove_members(&gid, &ids[..1000]).await.unwrap();
    println!(
        "remove 1,000 members (read + replace under If-Match): {:.2?}",
        t.elapsed()
    );
    let mut opts = ClientOptions::new(server.base_url("idx"), Auth::Bearer(server.token("idx")));
    opts.member_removal = MemberRemoval::Filter;
    let fc = ScimClient::with_options(opts).unwrap();
    for n in [1usize, 10, 100] {
        let from = 1000 + n;
        let t = Instant::now();
        fc.remove_members(&gid, &ids[from..from + n]).await.unwrap();
        println!(
            "remove {n} members by value filter (1 operation): {:.2?}",
            t.elapsed()
        );
    }

    let ops: Vec<BulkOperation> = (0..5000)
        .map(|i| {
            BulkOperation::post(
                USERS,
                format!("b{i}"),
                serde_json::to_value(User::new(format!("bulk{i}"))).unwrap(),
            )
        })
        .collect();
    let t = Instant::now();
    let out = c.bulk(&ops).await.unwrap();
    let el = t.elapsed();
    assert!(out.iter().all(|o| o.status == 201));
    println!(
        "bulk create 5,000 users: {el:.2?} ({:.0} users/s)",
        5000.0 / el.as_secs_f64()
    );

    let t = Instant::now();
    let futs = (0..1000).map(|i| {
        let c = c.clone();
        async move {
            c.create(USERS, &User::new(format!("single{i}")))
                .await
                .map(|_| ())
        }
    });
    futures::future::try_join_all(futs).await.unwrap();
    let el = t.elapsed();
    println!(
        "1,000 single POSTs, parallelism 4: {el:.2?} ({:.0} users/s)",
        1000.0 / el.as_secs_f64()
    );
    println!("requests made by the main client: {}", c.requests());
}

#[tokio::test]
async fn trusts_the_given_ca_and_only_it() {
    let server = ScimServer::start(&["idp"]);
    server.seed_users("idp", "tls", 3).await;
    let dir = tempfile::tempdir().unwrap();
    generate_certs(dir.path());
    let proxy = FaultProxy::start_with(&server.root(), Some(dir.path()));
    let base = proxy.base_url("idp");
    assert!(base.starts_with("https://"));
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();

    let c = ScimClient::new(
        &base,
        Auth::Bearer(server.token("idp")),
        Some(&ca),
        Timeouts::default(),
        2,
    )
    .unwrap();
    assert_eq!(c.list(USERS, &["userName"], None).await.unwrap().0.len(), 3);

    // Without the CA the certificate is not trusted.
    let mut opts = ClientOptions::new(base, Auth::Bearer(server.token("idp")));
    opts.retry.max_attempts = 1;
    let untrusting = ScimClient::with_options(opts).unwrap();
    let err = untrusting.service_provider_config().await.unwrap_err();
    assert!(
        matches!(err, ScimError::RetriesExhausted { ref last, .. } if matches!(**last, ScimError::Transport { .. })),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_or_contradictory_pages_are_clear_errors() {
    let server = ScimServer::start(&["idp"]);
    server.seed_users("idp", "user", 1500).await;
    let proxy = FaultProxy::start(&server.root());
    let c = client_at(&proxy.base_url("idp"), &server.token("idp"));
    c.service_provider_config().await.unwrap();

    proxy.plan(json!({"fail": {"2": "badjson"}})).await;
    let err = c.list(USERS, &["userName"], None).await.unwrap_err();
    assert!(matches!(err, ScimError::Protocol(_)), "{err}");
    assert!(err.to_string().contains("malformed JSON"), "{err}");

    proxy.plan(json!({"fail": {"2": "emptypage"}})).await;
    let err = c.list(USERS, &["userName"], None).await.unwrap_err();
    assert!(
        err.to_string().contains("empty page at startIndex=1001"),
        "{err}"
    );

    proxy.plan(json!({})).await;
    assert_eq!(
        c.list(USERS, &["userName"], None).await.unwrap().0.len(),
        1500
    );
}

fn client_at(base: &str, token: &str) -> ScimClient {
    ScimClient::new(
        base,
        Auth::Bearer(token.to_string()),
        None,
        Timeouts::default(),
        4,
    )
    .expect("client")
}

/// A tiny HTTP server: answers every request with `answer` and sends each request's
/// head (request line and headers) to the returned channel.
pub(crate) async fn tiny_server(
    answer: String,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let root = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (tx, answer) = (tx.clone(), answer.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (root, rx)
}

/// A redirect never carries credentials elsewhere: the client does not follow it (the
/// SCIM endpoint's nor the token endpoint's) and says the server redirected.
#[tokio::test]
async fn redirects_are_refused_and_credentials_stay_home() {
    let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
    let (elsewhere, mut seen_elsewhere) = tiny_server(ok.into()).await;
    let redirect = format!(
        "HTTP/1.1 302 Found\r\nlocation: {elsewhere}/steal\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    let (home, mut seen_home) = tiny_server(redirect.clone()).await;

    let mut opts = ClientOptions::new(
        format!("{home}/scim/v2"),
        Auth::Bearer("tok-redirect".into()),
    );
    opts.retry.max_attempts = 1;
    let c = ScimClient::with_options(opts).unwrap();
    let err = c
        .send(reqwest::Method::GET, "/Users", &[], None, None)
        .await
        .expect_err("a redirect is an error");
    assert!(err.to_string().contains("redirected"), "{err}");
    let head = seen_home.recv().await.unwrap();
    assert!(
        head.contains("tok-redirect"),
        "the home server got the token"
    );

    // The token endpoint redirects: the client secret stays home too.
    let (token_home, _seen) = tiny_server(redirect).await;
    let mut opts = ClientOptions::new(
        format!("{home}/scim/v2"),
        Auth::OAuth2ClientCredentials {
            token_url: format!("{token_home}/token"),
            client_id: "cid".into(),
            client_secret: "cs-redirect".into(),
            scopes: vec![],
        },
    );
    opts.retry.max_attempts = 1;
    let c = ScimClient::with_options(opts).unwrap();
    let err = c
        .send(reqwest::Method::GET, "/Users", &[], None, None)
        .await
        .expect_err("a redirecting token endpoint is an error");
    assert!(err.to_string().contains("redirected"), "{err}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        seen_elsewhere.try_recv().is_err(),
        "nothing reached the redirect target"
    );
}
