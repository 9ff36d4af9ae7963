//! GCP Secret Manager as the key store: the REST API v1 over HTTPS with a
//! service account's OAuth2 token (a JWT signed RS256 with the account's
//! key, exchanged at the token URI, refreshed at half its lifetime).
//!
//! KES talks gRPC to Google; the REST calls here are the same operations
//! on the same resources, so a project KES wrote is read as is.

mod adc;
pub mod proto;

use std::sync::Arc;

use kes_core::config::GcpConfig;
use kes_core::{Command, StoreError, StoreReply};
use zeroize::Zeroizing;

use super::contract::{Remote, RemoteStore};
use super::rest::{request, Connected, Grant, Rest, Token};

/// Listing page size and the most pages followed.
const PAGE: usize = 250;
const MAX_PAGES: usize = 10_000;

struct Inner {
    api: Rest,
    auth: adc::Auth,
    project: String,
    scope: String,
    token: Token,
}

/// Finds the credentials (the config's service account, else Application
/// Default Credentials, [`adc`]) and fetches a first token, so wrong
/// credentials stop start-up instead of the first request (KES finds out
/// only then). `env` gives `SSL_CERT_FILE` (the CA file when set: the
/// config has no CA key for GCP), `GOOGLE_APPLICATION_CREDENTIALS` and
/// `GCE_METADATA_HOST`.
pub fn connect(
    config: &GcpConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Connected, String> {
    let ca = env("SSL_CERT_FILE").filter(|v| !v.is_empty());
    let (auth, source) = adc::Auth::discover(config.credentials.as_ref(), ca.as_deref(), env)?;
    let inner = Arc::new(Inner {
        api: Rest::new("gcp", &config.endpoint, ca.as_deref())?,
        auth,
        project: config.project_id.clone(),
        scope: config.scopes.join(" "),
        token: Token::default(),
    });
    smol::block_on(inner.token.get(&|| inner.login()))
        .map_err(|e| format!("gcp: no access token from {source}: {e}"))?;
    let plaintext = inner.api.http.is_plaintext() || inner.auth.is_plaintext();
    Ok(Connected { store: Arc::new(RemoteStore::new(inner)), plaintext, source: Some(source) })
}

impl Remote for Inner {
    async fn call(&self, cmd: Command) -> Result<StoreReply, StoreError> {
        match cmd {
            Command::Create { name, value } => self.create(name.as_str(), &value).await,
            Command::Get { name } => {
                let path = format!("{}/{}/versions/1:access", self.secrets(), name.as_str());
                let r = self.call_api("GET", &path, None, true).await?;
                match (r.status, proto::error(&r).0.as_str()) {
                    (200, _) => proto::access_result(&r),
                    (404, _) | (_, "NOT_FOUND") => Err(StoreError::NotFound),
                    _ => Err(self.failure("failed to read key", &r)),
                }
            }
            Command::Delete { name } => {
                let path = format!("{}/{}", self.secrets(), name.as_str());
                let r = self.call_api("DELETE", &path, None, true).await?;
                match r.status {
                    200 => Ok(StoreReply::Deleted),
                    404 => Err(StoreError::NotFound),
                    _ => Err(self.failure("failed to delete key", &r)),
                }
            }
            Command::List => {
                let mut names = Vec::new();
                let mut next: Option<String> = None;
                for _ in 0..MAX_PAGES {
                    let mut path = format!("{}?pageSize={PAGE}", self.secrets());
                    if let Some(t) = &next {
                        path.push_str(&format!("&pageToken={}", super::rest::encode(t)));
                    }
                    let r = self.call_api("GET", &path, None, true).await?;
                    if r.status != 200 {
                        return Err(self.failure("failed to list keys", &r));
                    }
                    let (page, token) = proto::list_result(&r)?;
                    names.extend(page);
                    match token {
                        Some(t) => next = Some(t),
                        None => return Ok(StoreReply::Names(names)),
                    }
                }
                Err(StoreError::Failed("gcp: listing has too many pages".into()))
            }
            Command::Status => Ok(StoreReply::Status { latency: self.api.probe("/").await? }),
        }
    }
}

impl Inner {
    fn secrets(&self) -> String {
        proto::secrets_path(&self.project)
    }

    /// Creates the secret, then its version 1. If the version cannot be
    /// added the empty secret is removed again, so the name stays usable.
    async fn create(
        &self,
        name: &str,
        value: &kes_core::crypto::SecretBytes,
    ) -> Result<StoreReply, StoreError> {
        let path = format!("{}?secretId={name}", self.secrets());
        let r = self.call_api("POST", &path, Some(proto::create_body()), false).await?;
        match (r.status, proto::error(&r).0.as_str()) {
            (200, _) => {}
            (409, _) | (_, "ALREADY_EXISTS") => return Err(StoreError::Exists),
            _ => return Err(self.failure("failed to create key", &r)),
        }
        let path = format!("{}/{name}:addVersion", self.secrets());
        let body = proto::add_version_body(value);
        let added = self.call_api("POST", &path, Some(body.to_vec()), false).await;
        match added {
            Ok(r) if r.status == 200 => Ok(StoreReply::Created),
            other => {
                let _ = self
                    .call_api("DELETE", &format!("{}/{name}", self.secrets()), None, true)
                    .await;
                match other {
                    Ok(r) => Err(self.failure("failed to store key", &r)),
                    Err(e) => Err(e),
                }
            }
        }
    }

    async fn call_api(
        &self,
        method: &'static str,
        path: &str,
        body: Option<Vec<u8>>,
        idempotent: bool,
    ) -> Result<crate::https::HttpResponse, StoreError> {
        let body = body.map(Zeroizing::new);
        let make = |auth: &str| {
            request(method, path, "Authorization", auth, body.as_ref().map(|b| b.as_slice()))
        };
        self.api.send_authed(&self.token, &|| self.login(), &make, idempotent).await
    }

    fn failure(&self, what: &str, r: &crate::https::HttpResponse) -> StoreError {
        let (status, message) = proto::error(r);
        self.api.failure(what, r, format!("{status} {message}").trim())
    }

    /// A fresh access token from wherever the credentials are.
    async fn login(&self) -> Result<Grant, StoreError> {
        self.auth.token(&self.scope).await
    }
}
