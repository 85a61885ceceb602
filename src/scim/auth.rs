//! Credentials for a SCIM target. `Debug` never prints secrets.

use crate::scim::error::{Result, ScimError};
use serde::Deserialize;
use std::fmt;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// No credentials (e.g. a local test server). Most servers answer 401.
    None,
    Bearer(String),
    Basic {
        username: String,
        password: String,
    },
    /// OAuth 2.0 client credentials grant (RFC 6749 §4.4); the token is cached until it expires.
    OAuth2ClientCredentials {
        token_url: String,
        client_id: String,
        client_secret: String,
        scopes: Vec<String>,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Auth::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Auth::OAuth2ClientCredentials {
                token_url,
                client_id,
                scopes,
                ..
            } => f
                .debug_struct("OAuth2ClientCredentials")
                .field("token_url", token_url)
                .field("client_id", client_id)
                .field("client_secret", &"<redacted>")
                .field("scopes", scopes)
                .finish(),
        }
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

struct CachedToken {
    token: String,
    refresh_at: Instant,
}

/// Refresh a token this long before it expires, so requests in flight don't
/// carry a token that dies on the way.
const TOKEN_EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// Lifetime assumed when the token endpoint gives no `expires_in`.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// Applies [`Auth`] to requests, fetching and caching OAuth2 tokens.
pub(crate) struct Authenticator {
    auth: Auth,
    token: Mutex<Option<CachedToken>>,
}

impl Authenticator {
    pub(crate) fn new(auth: Auth) -> Self {
        Authenticator {
            auth,
            token: Mutex::new(None),
        }
    }

    pub(crate) fn is_oauth(&self) -> bool {
        matches!(self.auth, Auth::OAuth2ClientCredentials { .. })
    }

    /// Forgets the cached token (after a 401), so the next request fetches a new one.
    pub(crate) async fn invalidate(&self) {
        *self.token.lock().await = None;
    }

    pub(crate) async fn apply(
        &self,
        http: &reqwest::Client,
        rb: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder> {
        Ok(match &self.auth {
            Auth::None => rb,
            Auth::Bearer(token) => rb.bearer_auth(token),
            Auth::Basic { username, password } => rb.basic_auth(username, Some(password)),
            Auth::OAuth2ClientCredentials { .. } => rb.bearer_auth(self.oauth_token(http).await?),
        })
    }

    async fn oauth_token(&self, http: &reqwest::Client) -> Result<String> {
        let Auth::OAuth2ClientCredentials {
            token_url,
            client_id,
            client_secret,
            scopes,
        } = &self.auth
        else {
            unreachable!("oauth_token on non-OAuth credentials")
        };
        // Held across the fetch so concurrent requests share one token request.
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref()
            && Instant::now() < t.refresh_at
        {
            return Ok(t.token.clone());
        }
        let mut form = vec![("grant_type", "client_credentials".to_string())];
        if !scopes.is_empty() {
            form.push(("scope", scopes.join(" ")));
        }
        let resp = http
            .post(token_url)
            .basic_auth(client_id, Some(client_secret))
            .form(&form)
            .send()
            .await
            .map_err(|e| ScimError::Auth(format!("token request to {token_url}: {e}")))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| ScimError::Auth(format!("token response from {token_url}: {e}")))?;
        if status.is_redirection() {
            return Err(ScimError::Auth(format!(
                "token endpoint {token_url} answered HTTP {}: {}",
                status.as_u16(),
                crate::scim::transport::REDIRECT_REFUSED
            )));
        }
        if !status.is_success() {
            // The error body of a token endpoint holds no secret (RFC 6749 §5.2).
            let text = String::from_utf8_lossy(&body);
            return Err(ScimError::Auth(format!(
                "token endpoint {token_url} answered HTTP {}: {}",
                status.as_u16(),
                text.chars().take(300).collect::<String>()
            )));
        }
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            ScimError::Auth(format!(
                "token endpoint {token_url} sent malformed JSON: {e}"
            ))
        })?;
        let lifetime = parsed
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        let refresh_at =
            Instant::now() + lifetime.saturating_sub(TOKEN_EXPIRY_MARGIN.min(lifetime / 2));
        *cached = Some(CachedToken {
            token: parsed.access_token.clone(),
            refresh_at,
        });
        Ok(parsed.access_token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secrets() {
        let all = [
            Auth::Bearer("s3cr3t-token".into()),
            Auth::Basic {
                username: "admin".into(),
                password: "s3cr3t-pw".into(),
            },
            Auth::OAuth2ClientCredentials {
                token_url: "https://idp/token".into(),
                client_id: "cid".into(),
                client_secret: "s3cr3t-client".into(),
                scopes: vec!["scim".into()],
            },
        ];
        for a in all {
            let d = format!("{a:?}");
            assert!(!d.contains("s3cr3t"), "{d}");
            assert!(d.contains("redacted"), "{d}");
        }
    }
}
