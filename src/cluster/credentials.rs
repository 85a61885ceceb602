//! Credentials for a SCIM endpoint, resolved from Secret references. In a sync Job they
//! arrive as Secret-backed environment variables (so the Job's account needs no Secret
//! access); run by hand, they are read from the Secrets through the API.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, Secret, SecretKeySelector};
use kube::api::ObjectMeta;
use kube::{Api, Client};

use crate::api::{Auth, Tls};
use crate::scim::Auth as ScimAuth;

/// The label a Secret must carry, with the value `"true"`, to be used as catalogsync
/// credentials: whoever may edit an IdentityDomain or CatalogApp cannot send an
/// arbitrary Secret of the namespace to a URL of their choice; the Secret's owner opts in.
pub const CREDENTIALS_LABEL: &str = "catalogsync.io/credentials";

/// The label selector of the Secrets catalogsync may read (its Secret watches).
pub fn allowed_selector() -> String {
    format!("{CREDENTIALS_LABEL}=true")
}

/// Whether a Secret's owner allowed catalogsync to use it as credentials.
pub fn allowed(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(CREDENTIALS_LABEL))
        .is_some_and(|v| v == "true")
}

/// Which SCIM endpoint the credentials are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The identity domain.
    Domain,
    /// The catalog app.
    App,
}

impl Side {
    fn prefix(self) -> &'static str {
        match self {
            Side::Domain => "CATALOGSYNC_DOMAIN_",
            Side::App => "CATALOGSYNC_APP_",
        }
    }
}

/// Credentials plus an optional extra CA bundle (PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The SCIM client's authentication, whose Debug never shows a secret.
    pub credentials: ScimAuth,
    pub ca_pem: Option<String>,
}

/// Why credentials could not be resolved. Messages name the Secret and key, never a value.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("Secret {0} not found")]
    SecretNotFound(String),
    #[error(
        "Secret {0} is not allowed as catalogsync credentials: add the label {CREDENTIALS_LABEL}: \"true\" (kubectl label secret {0} {CREDENTIALS_LABEL}=true)"
    )]
    NotAllowed(String),
    #[error("Secret {secret} has no key {key}")]
    KeyMissing { secret: String, key: String },
    #[error("reading Secret {secret}: {source}")]
    Api {
        secret: String,
        #[source]
        source: kube::Error,
    },
    #[error("no authentication method is set")]
    NoAuth,
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
}

/// One value to read: (env var suffix, secret name, key).
fn wanted(auth: &Auth, tls: Option<&Tls>) -> Vec<(&'static str, String, String)> {
    let mut out = Vec::new();
    if let Some(b) = &auth.bearer_token {
        out.push(("TOKEN", b.secret_ref.name.clone(), b.secret_ref.key.clone()));
    } else if let Some(b) = &auth.basic {
        out.push(("USERNAME", b.secret_ref.name.clone(), "username".into()));
        out.push(("PASSWORD", b.secret_ref.name.clone(), "password".into()));
    } else if let Some(o) = &auth.oauth2_client_credentials {
        out.push(("CLIENT_ID", o.secret_ref.name.clone(), "clientId".into()));
        out.push((
            "CLIENT_SECRET",
            o.secret_ref.name.clone(),
            "clientSecret".into(),
        ));
    }
    if let Some(ca) = tls.and_then(|t| t.ca_secret_ref.as_ref()) {
        out.push(("CA_CERT", ca.name.clone(), ca.key.clone()));
    }
    out
}

/// The Secret-backed environment variables a Job container needs for one side.
pub fn env_vars(side: Side, auth: &Auth, tls: Option<&Tls>) -> Vec<EnvVar> {
    wanted(auth, tls)
        .into_iter()
        .map(|(suffix, name, key)| EnvVar {
            name: format!("{}{suffix}", side.prefix()),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name,
                    key,
                    optional: Some(false),
                }),
                ..Default::default()
            }),
        })
        .collect()
}

/// The names of the Secrets a side's credentials come from.
pub fn secret_names(auth: &Auth, tls: Option<&Tls>) -> Vec<String> {
    let mut names: Vec<String> = wanted(auth, tls).into_iter().map(|(_, n, _)| n).collect();
    names.sort();
    names.dedup();
    names
}

fn assemble(
    auth: &Auth,
    mut values: BTreeMap<&'static str, String>,
) -> Result<Resolved, CredentialsError> {
    let mut take = |k: &str| values.remove(k).unwrap_or_default();
    let credentials = if auth.bearer_token.is_some() {
        ScimAuth::Bearer(take("TOKEN").trim().to_string())
    } else if auth.basic.is_some() {
        ScimAuth::Basic {
            username: take("USERNAME"),
            password: take("PASSWORD"),
        }
    } else if let Some(o) = &auth.oauth2_client_credentials {
        ScimAuth::OAuth2ClientCredentials {
            token_url: o.token_url.clone(),
            client_id: take("CLIENT_ID"),
            client_secret: take("CLIENT_SECRET"),
            scopes: o.scopes.clone(),
        }
    } else {
        return Err(CredentialsError::NoAuth);
    };
    let ca_pem = values.remove("CA_CERT");
    Ok(Resolved {
        credentials,
        ca_pem,
    })
}

/// Resolves credentials from the environment a Job was given (see [`env_vars`]).
pub fn from_env(side: Side, auth: &Auth, tls: Option<&Tls>) -> Result<Resolved, CredentialsError> {
    let mut values = BTreeMap::new();
    for (suffix, _, _) in wanted(auth, tls) {
        let var = format!("{}{suffix}", side.prefix());
        let v = std::env::var(&var).map_err(|_| CredentialsError::EnvMissing(var))?;
        values.insert(suffix, v);
    }
    assemble(auth, values)
}

/// True when the environment carries this side's credentials (we run inside a Job).
pub fn env_present(side: Side, auth: &Auth, tls: Option<&Tls>) -> bool {
    wanted(auth, tls)
        .iter()
        .all(|(suffix, _, _)| std::env::var_os(format!("{}{suffix}", side.prefix())).is_some())
}

fn decode(data: &Option<BTreeMap<String, ByteString>>, key: &str) -> Option<String> {
    data.as_ref()?
        .get(key)
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
}

/// Resolves credentials by reading the referenced Secrets in `namespace`.
pub async fn from_secrets(
    client: &Client,
    namespace: &str,
    auth: &Auth,
    tls: Option<&Tls>,
) -> Result<Resolved, CredentialsError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut cache: BTreeMap<String, Secret> = BTreeMap::new();
    let mut values = BTreeMap::new();
    for (suffix, name, key) in wanted(auth, tls) {
        if !cache.contains_key(&name) {
            let secret = usable(&name, api.get_opt(&name).await, |s| &s.metadata)?;
            cache.insert(name.clone(), secret);
        }
        let secret = &cache[&name];
        let v = decode(&secret.data, &key)
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(&key).cloned())
            })
            .ok_or_else(|| CredentialsError::KeyMissing {
                secret: name.clone(),
                key: key.clone(),
            })?;
        values.insert(suffix, v);
    }
    assemble(auth, values)
}

/// Checks that each named Secret of `namespace` exists and carries the
/// [`CREDENTIALS_LABEL`] (metadata only: no value is read).
pub async fn check_allowed(
    client: &Client,
    namespace: &str,
    names: &[String],
) -> Result<(), CredentialsError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for name in names {
        usable(name, api.get_metadata_opt(name).await, |m| &m.metadata)?;
    }
    Ok(())
}

/// The Secret `name` as read: it must exist and allow catalogsync to use it.
fn usable<T>(
    name: &str,
    read: kube::Result<Option<T>>,
    metadata: impl Fn(&T) -> &ObjectMeta,
) -> Result<T, CredentialsError> {
    let secret = read
        .map_err(|source| CredentialsError::Api {
            secret: name.to_string(),
            source,
        })?
        .ok_or_else(|| CredentialsError::SecretNotFound(name.to_string()))?;
    if !allowed(metadata(&secret)) {
        return Err(CredentialsError::NotAllowed(name.to_string()));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BearerTokenAuth, SecretKeyRef};

    fn bearer() -> Auth {
        Auth {
            bearer_token: Some(BearerTokenAuth {
                secret_ref: SecretKeyRef {
                    name: "corp-iam".into(),
                    key: "token".into(),
                },
            }),
            ..Default::default()
        }
    }

    #[test]
    fn env_vars_reference_secrets_and_carry_no_value() {
        let vars = env_vars(Side::App, &bearer(), None);
        assert_eq!(vars.len(), 1);
        assert_eq!(vars[0].name, "CATALOGSYNC_APP_TOKEN");
        assert!(vars[0].value.is_none());
        let sel = vars[0]
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!((sel.name.as_str(), sel.key.as_str()), ("corp-iam", "token"));
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = ScimAuth::Basic {
            username: "svc".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", ScimAuth::Bearer("tok-123".into())).contains("tok-123"));
        let resolved = Resolved {
            credentials: ScimAuth::OAuth2ClientCredentials {
                token_url: "https://iam/token".into(),
                client_id: "cid".into(),
                client_secret: "cs-456".into(),
                scopes: vec![],
            },
            ca_pem: None,
        };
        assert!(!format!("{resolved:?}").contains("cs-456"));
    }

    #[test]
    fn only_secrets_labeled_true_are_allowed() {
        let meta = |labels: &[(&str, &str)]| ObjectMeta {
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        };
        assert!(allowed(&meta(&[(CREDENTIALS_LABEL, "true")])));
        assert!(!allowed(&meta(&[(CREDENTIALS_LABEL, "false")])));
        assert!(!allowed(&meta(&[("app", "x")])));
        assert!(!allowed(&ObjectMeta::default()));
        let why = CredentialsError::NotAllowed("corp-iam".into()).to_string();
        assert!(why.contains("corp-iam") && why.contains("catalogsync.io/credentials"));
    }

    #[test]
    fn bearer_token_is_trimmed() {
        let r = assemble(&bearer(), BTreeMap::from([("TOKEN", "abc\n".to_string())])).unwrap();
        assert_eq!(r.credentials, ScimAuth::Bearer("abc".into()));
    }
}
