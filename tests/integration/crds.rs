//! The CRDs of `crds/` install on a real apiserver and match the API contract.

use std::collections::BTreeSet;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};

use crate::harness::{self, control_plane, repo_path};

const KINDS: [&str; 4] = ["CatalogApp", "IdentityDomain", "SyncPolicy", "SyncRun"];

#[tokio::test]
async fn crds_are_established_and_follow_the_contract() {
    let cp = control_plane().await;
    let installed: Vec<CustomResourceDefinition> =
        Api::<CustomResourceDefinition>::all(cp.admin_client())
            .list(&ListParams::default())
            .await
            .expect("list CRDs")
            .items
            .into_iter()
            .filter(|crd| crd.spec.group == "catalogsync.io")
            .collect();

    let kinds: BTreeSet<&str> = installed
        .iter()
        .map(|c| c.spec.names.kind.as_str())
        .collect();
    assert_eq!(kinds, BTreeSet::from(KINDS));
    let from_files = harness::read_crds(&repo_path("crds")).expect("read crds/");
    assert_eq!(
        installed.len(),
        from_files.len(),
        "every CRD of crds/ is installed"
    );

    for crd in &installed {
        let name = crd.metadata.name.as_deref().unwrap_or_default();
        assert_eq!(crd.spec.scope, "Namespaced", "{name}");
        assert!(
            crd.spec
                .names
                .categories
                .iter()
                .flatten()
                .any(|c| c == "catalogsync"),
            "{name} is in category catalogsync"
        );
        let conditions = crd.status.as_ref().and_then(|s| s.conditions.as_ref());
        assert!(
            conditions
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Established" && c.status == "True"),
            "{name} is Established"
        );
        let v1alpha1 = crd
            .spec
            .versions
            .iter()
            .find(|v| v.name == "v1alpha1")
            .unwrap_or_else(|| panic!("{name} serves v1alpha1"));
        assert!(
            v1alpha1.served && v1alpha1.storage,
            "{name} v1alpha1 served and stored"
        );
        assert!(
            v1alpha1
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some()),
            "{name} has the status subresource"
        );
    }
}

#[tokio::test]
async fn catalogapp_synchronization_requires_provisioning() {
    let cp = control_plane().await;
    let ns = cp.new_namespace("crd-validation").await;
    let app = r#"
apiVersion: catalogsync.io/v1alpha1
kind: CatalogApp
metadata: {name: sync-without-provisioning}
spec:
  identityDomainRef: {name: corp}
  catalogItem: GenericSCIM
  connection: {url: "https://scim.example.com/v2", auth: {bearerToken: {secretRef: {name: s, key: token}}}}
  provisioning: {enabled: false}
  synchronization: {enabled: true, policyRef: {name: default}}
"#;
    let message = cp.apply_yaml_expect_rejection(&ns, app).await;
    assert!(
        message.contains("synchronization can only be enabled after provisioning is enabled"),
        "{message}"
    );
}

/// A valid CatalogApp with one part replaced, for the rejection table below.
fn app_with(connection_auth: &str, provisioning: &str) -> String {
    format!(
        r#"
apiVersion: catalogsync.io/v1alpha1
kind: CatalogApp
metadata: {{name: invalid}}
spec:
  identityDomainRef: {{name: corp}}
  connection: {{url: "https://scim.example.com/v2", auth: {connection_auth}}}
  provisioning: {provisioning}
"#
    )
}

/// A valid IdentityDomain with `spec` (a YAML flow map's inside).
fn domain_with(spec: &str) -> String {
    format!(
        r#"
apiVersion: catalogsync.io/v1alpha1
kind: IdentityDomain
metadata: {{name: invalid}}
spec: {{{spec}}}
"#
    )
}

fn policy_with(fields: &str) -> String {
    format!(
        r#"
apiVersion: catalogsync.io/v1alpha1
kind: SyncPolicy
metadata: {{name: invalid}}
spec: {fields}
"#
    )
}

#[tokio::test]
async fn invalid_objects_are_rejected_with_helpful_messages() {
    let cp = control_plane().await;
    let ns = cp.new_namespace("crd-invalid").await;
    let bearer = "{bearerToken: {secretRef: {name: s, key: token}}}";
    let cases = [
        (
            app_with("{}", "{enabled: true}"),
            "exactly one auth method must be set",
        ),
        (
            app_with(
                "{bearerToken: {secretRef: {name: s, key: t}}, basic: {secretRef: {name: b}}}",
                "{enabled: true}",
            ),
            "exactly one auth method must be set",
        ),
        (
            app_with(bearer, "{enabled: true, limits: {maxCreates: -1}}"),
            "should be greater than or equal to 0",
        ),
        (
            app_with(bearer, "{enabled: true, operations: [Create, Explode]}"),
            "Unsupported value: \"Explode\"",
        ),
        (
            app_with(bearer, "{enabled: true}").replace("https://scim", "ftp://scim"),
            "must start with https:// or http://",
        ),
        (
            app_with(bearer, "{enabled: true}").replace(
                "identityDomainRef",
                "catalogItem: NoSuchApp\n  identityDomainRef",
            ),
            "supported values: \"GenericSCIM\"",
        ),
        (
            policy_with("{parallelism: 0}"),
            "should be greater than or equal to 1",
        ),
        (
            policy_with("{parallelism: 257}"),
            "should be less than or equal to 256",
        ),
        (
            policy_with("{limits: {maxDeletes: -5}}"),
            "should be greater than or equal to 0",
        ),
        (
            policy_with("{limits: {maxCreates: 1, whenExceeded: Sometimes}}"),
            "Unsupported value: \"Sometimes\"",
        ),
        (
            policy_with("{timeout: soon}"),
            "timeout must be a duration such as 30m, 1h or 1h30m",
        ),
    ];
    for (yaml, want) in cases {
        let message = cp.apply_yaml_expect_rejection(&ns, &yaml).await;
        assert!(
            message.contains(want),
            "expected {want:?} in the rejection of\n{yaml}\ngot: {message}"
        );
    }
}

/// Credentials go only where their owner meant: https (or an explicit `insecure`), no user
/// info, no fragment, an https token endpoint; bounded strings, no empty names.
#[tokio::test]
async fn unsafe_urls_and_oversized_or_empty_strings_are_rejected() {
    let cp = control_plane().await;
    let ns = cp.new_namespace("crd-security").await;
    let bearer = "{bearerToken: {secretRef: {name: s, key: token}}}";
    let oauth = |token_url: &str| {
        format!(
            "{{oauth2ClientCredentials: {{tokenURL: \"{token_url}\", secretRef: {{name: s}}}}}}"
        )
    };
    let long = "x".repeat(2100);
    let app = |auth: &str| app_with(auth, "{enabled: true}");
    let cases = [
        (
            app(bearer).replace("https://scim", "http://scim"),
            "url must start with https:// (credentials travel only over TLS); plain http:// needs spec.connection.insecure: true",
        ),
        (
            domain_with(&format!("url: \"http://iam.example.com\", auth: {bearer}")),
            "plain http:// needs spec.insecure: true",
        ),
        (
            app(&oauth("http://iam.example.com/token")),
            "tokenURL must start with https://",
        ),
        (
            domain_with(&format!(
                "url: \"https://iam.example.com\", auth: {}",
                oauth("http://iam.example.com/token")
            )),
            "tokenURL must start with https://",
        ),
        (
            app(bearer).replace("https://scim", "https://admin:pw@scim"),
            "must not carry user info",
        ),
        (
            app(&oauth("https://u@iam.example.com/token")),
            "must not carry user info",
        ),
        (
            app(bearer).replace("/v2", "/v2#frag"),
            "must not have a fragment",
        ),
        (app(bearer).replace("/v2", &format!("/{long}")), "Too long"),
        (
            app("{bearerToken: {secretRef: {name: s, key: \"\"}}}"),
            "should be at least 1 chars long",
        ),
        (
            app(&format!(
                "{{bearerToken: {{secretRef: {{name: {}, key: t}}}}}}",
                "s".repeat(254)
            )),
            "Too long",
        ),
        (
            app_with(bearer, "{enabled: true, grantGroup: \"\"}"),
            "should be at least 1 chars long",
        ),
        (
            app_with(
                bearer,
                &format!(
                    "{{enabled: true, attributeMappings: [{{domainAttribute: {}, appAttribute: x}}]}}",
                    "a".repeat(257)
                ),
            ),
            "Too long",
        ),
        (
            policy_with(&format!(
                "{{matching: [{{appAttribute: {}, domainAttribute: userName}}]}}",
                "a".repeat(257)
            )),
            "Too long",
        ),
        (
            policy_with("{limits: {maxChanges: -1}}"),
            "should be greater than or equal to 0",
        ),
    ];
    for (yaml, want) in cases {
        let message = cp.apply_yaml_expect_rejection(&ns, &yaml).await;
        assert!(
            message.contains(want),
            "expected {want:?} in the rejection of\n{yaml}\ngot: {message}"
        );
    }
    // The explicit opt-in admits plain http (tests and demos).
    let insecure = app(&oauth("http://iam.example.com/token"))
        .replace("https://scim", "http://scim")
        .replace("connection: {", "connection: {insecure: true, ");
    cp.apply_yaml(&ns, &insecure)
        .await
        .expect("insecure: true admits http");
    let domain = domain_with(&format!(
        "url: \"http://iam.example.com\", insecure: true, auth: {}",
        oauth("http://iam.example.com/token")
    ));
    cp.apply_yaml(&ns, &domain)
        .await
        .expect("insecure: true admits http");
}

/// Mappings as `(domainAttribute, appAttribute)` pairs.
type Mappings<'a> = &'a [(&'a str, &'a str)];

/// A CatalogApp named `name` (the valid one of `app_with`) whose provisioning and
/// synchronization map `provisioning` and `synchronization`.
fn app_mapping(name: &str, provisioning: Mappings, synchronization: Mappings) -> String {
    let list = |pairs: Mappings| {
        let items: Vec<String> = pairs
            .iter()
            .map(|(d, a)| format!("{{domainAttribute: {d:?}, appAttribute: {a:?}}}"))
            .collect();
        format!("[{}]", items.join(", "))
    };
    let bearer = "{bearerToken: {secretRef: {name: s, key: token}}}";
    let app = app_with(
        bearer,
        &format!(
            "{{enabled: true, attributeMappings: {}}}",
            list(provisioning)
        ),
    )
    .replace("{name: invalid}", &format!("{{name: {name}}}"));
    format!(
        "{app}  synchronization: {{enabled: false, policyRef: {{name: default}}, attributeMappings: {}}}\n",
        list(synchronization)
    )
}

/// Every mapping path the User schema allows passes admission: value filters, extension
/// URNs (the enterprise one checked, others unchecked), the catalog's own mappings.
fn possible_paths() -> Vec<String> {
    let mut paths: Vec<String> = [
        "userName",
        "NAME.GIVENNAME",
        "emails[type eq \"work\"].value",
        "emails[primary eq true].value",
        "emails[type eq \"work\" and primary eq true]",
        "addresses[type eq \"home\"].postalCode",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
        "urn:ietf:params:scim:schemas:core:2.0:User:name.familyName",
        "urn:example:params:scim:schemas:extension:acme:2.0:User:badge",
    ]
    .map(String::from)
    .into();
    for entry in catalogsync::api::catalog::entries() {
        for m in entry
            .provisioning_mappings
            .iter()
            .chain(&entry.import_mappings)
        {
            paths.extend([m.domain_attribute.clone(), m.app_attribute.clone()]);
        }
    }
    paths
}

/// An impossible mapping path (issue 16) is refused by the API server, on create and on
/// update, with the field and what is wrong; the controller's check stays behind it.
#[tokio::test]
async fn impossible_mapping_paths_are_refused_at_admission() {
    let cp = control_plane().await;
    let ns = cp.new_namespace("crd-mappings").await;
    let ok = ("userName", "userName");
    let cases: [(Mappings, Mappings, &str, &str); 8] = [
        (
            &[ok, ("displayName", "name.value")],
            &[],
            "spec.provisioning.attributeMappings[1].appAttribute",
            "impossible path \"name.value\": name is complex: name one of its sub-attributes \
             (formatted, familyName, givenName, middleName, honorificPrefix, honorificSuffix), \
             e.g. name.formatted",
        ),
        (
            &[("userName.x", "userName")],
            &[],
            "spec.provisioning.attributeMappings[0].domainAttribute",
            "impossible path \"userName.x\": userName is a simple attribute: no sub-attribute",
        ),
        (
            &[ok],
            &[("emails.value", "emails")],
            "spec.synchronization.attributeMappings[0].appAttribute",
            "impossible path \"emails\": emails is multi-valued and complex: name one of its \
             sub-attributes (value, display, type, primary, $ref), e.g. emails.value",
        ),
        (
            &[ok],
            &[ok, ("mail", "emails.value")],
            "spec.synchronization.attributeMappings[1].domainAttribute",
            "impossible path \"mail\": no attribute mail in the core User schema",
        ),
        (
            &[(
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:badge",
                "title",
            )],
            &[],
            "spec.provisioning.attributeMappings[0].domainAttribute",
            "no attribute badge in the core User schema (RFC 7643 section 4.1) or the enterprise",
        ),
        (
            &[("displayName[primary eq true]", "displayName")],
            &[],
            "spec.provisioning.attributeMappings[0].domainAttribute",
            "displayName is a simple attribute: no sub-attribute, no value filter",
        ),
        (
            &[("emails[type eq].value", "emails.value")],
            &[],
            "spec.provisioning.attributeMappings[0].domainAttribute",
            "a value filter is comparisons",
        ),
        (
            &[("urn:acme:User:bad name", "title")],
            &[],
            "spec.provisioning.attributeMappings[0].domainAttribute",
            "an attribute of another extension is written <its schema's URN>:<attribute>",
        ),
    ];
    for (i, (provisioning, synchronization, field, why)) in cases.iter().enumerate() {
        let yaml = app_mapping(&format!("impossible-{i}"), provisioning, synchronization);
        let message = cp.apply_yaml_expect_rejection(&ns, &yaml).await;
        assert!(
            message.contains(field) && message.contains(why),
            "expected {field} and {why:?} in the rejection of\n{yaml}\ngot: {message}"
        );
    }

    // What is possible is admitted on create, and the same object refused on update.
    let possible = possible_paths();
    let pairs: Vec<(&str, &str)> = possible.iter().map(|p| (p.as_str(), p.as_str())).collect();
    let valid = app_mapping("possible", &pairs, &pairs);
    cp.apply_yaml(&ns, &valid)
        .await
        .unwrap_or_else(|e| panic!("possible paths are admitted: {e}\n{valid}"));
    let mut broken = pairs.clone();
    broken[2].1 = "name.value";
    let message = cp
        .apply_yaml_expect_rejection(&ns, &app_mapping("possible", &broken, &pairs))
        .await;
    assert!(
        message.contains("spec.provisioning.attributeMappings[2].appAttribute")
            && message.contains("impossible path \"name.value\""),
        "{message}"
    );
    let renamed = app_mapping("possible", &[("name.formatted", "displayName")], &pairs);
    cp.apply_yaml(&ns, &renamed)
        .await
        .expect("an update to possible paths is admitted");

    // The bound that keeps the rules' cost within the API server's budget: the most
    // expensive object admitted (every path as long as allowed, under an extension URN:
    // all three patterns run), one mapping more refused.
    let long = format!("urn:example:User:{}", "a".repeat(256 - 17));
    let most = vec![(long.as_str(), long.as_str()); 64];
    cp.apply_yaml(&ns, &app_mapping("most", &most, &most))
        .await
        .expect("64 mappings of the longest paths are admitted");
    let many = vec![ok; 65];
    let message = cp
        .apply_yaml_expect_rejection(&ns, &app_mapping("many", &many, &[]))
        .await;
    assert!(message.contains("must have at most 64 items"), "{message}");
}

#[tokio::test]
async fn syncrun_spec_is_immutable() {
    let cp = control_plane().await;
    let ns = cp.new_namespace("crd-immutable").await;
    let run = r#"
apiVersion: catalogsync.io/v1alpha1
kind: SyncRun
metadata: {name: once}
spec: {appRef: {name: slack}, direction: Import, mode: Plan}
"#;
    cp.apply_yaml(&ns, run).await.expect("a SyncRun is created");
    let message = cp
        .apply_yaml_expect_rejection(&ns, &run.replace("mode: Plan", "mode: Apply"))
        .await;
    assert!(
        message.contains("SyncRun spec is immutable once created"),
        "{message}"
    );
}

#[tokio::test]
async fn kubectl_get_shows_the_printer_columns() {
    let cp = control_plane().await;
    let ns = cp.new_namespace("crd-columns").await;
    cp.apply_yaml(
        &ns,
        r#"
apiVersion: catalogsync.io/v1alpha1
kind: SyncRun
metadata: {name: slack-run}
spec: {appRef: {name: slack}, direction: Import}
---
apiVersion: catalogsync.io/v1alpha1
kind: CatalogApp
metadata: {name: slack}
spec:
  identityDomainRef: {name: corp}
  connection: {url: "https://scim.example.com/v2", auth: {bearerToken: {secretRef: {name: s, key: token}}}}
"#,
    )
    .await
    .expect("objects are created");
    let header = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let first = text.lines().next().unwrap_or_default().to_string();
        (
            first
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>(),
            text,
        )
    };
    let (cols, _) = header(cp.kubectl(["get", "catalogapps", "-n", &ns]).await);
    assert_eq!(
        cols,
        [
            "NAME",
            "READY",
            "PROVISIONING",
            "SYNCHRONIZATION",
            "LAST",
            "PROVISION",
            "LAST",
            "IMPORT",
            "AGE",
            "STATUS"
        ]
    );
    let (cols, _) = header(cp.kubectl(["get", "syncruns", "-n", &ns]).await);
    assert_eq!(
        cols,
        [
            "NAME",
            "APP",
            "DIRECTION",
            "MODE",
            "PHASE",
            "READY",
            "PROGRESS",
            "LINKED",
            "CREATED",
            "DELETED",
            "AGE"
        ]
    );
    let (_, text) = header(cp.kubectl(["get", "catalogsync", "-n", &ns]).await);
    assert!(text.contains("catalogapp.catalogsync.io/slack"), "{text}");
    assert!(text.contains("syncrun.catalogsync.io/slack-run"), "{text}");
}
