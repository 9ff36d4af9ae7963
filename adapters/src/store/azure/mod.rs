//! Azure Key Vault as the key store: the secrets REST API with a bearer
//! token from Microsoft Entra ID (client credentials) or the machine's
//! managed identity (IMDS). Token endpoints follow Azure's SDK conventions:
//! `AZURE_AUTHORITY_HOST` (default the public cloud) and, for managed
//! identity, `AZURE_POD_IDENTITY_AUTHORITY_HOST` in place of IMDS's
//! address; with neither config block, `AZURE_TENANT_ID`/`AZURE_CLIENT_ID`/
//! `AZURE_CLIENT_SECRET` or else the managed identity.

pub mod proto;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_io::Timer;
use kes_core::config::{AzureAuth, AzureConfig};
use kes_core::crypto::SecretBytes;
use kes_core::{Command, StoreError, StoreReply};
use zeroize::Zeroizing;

use super::contract::{Remote, RemoteStore};
use super::rest::{encode, request, url_origin, url_path, Connected, Grant, Rest, Token};
use crate::https::{HttpRequest, HttpResponse};

const AUTHORITY: &str = "https://login.microsoftonline.com/";
const IMDS: &str = "http://169.254.169.254";
/// Listing pages followed at most.
const MAX_PAGES: usize = 10_000;
/// How long a delete waits for Azure to finish soft-deleting before purging.
const PURGE_TRIES: u32 = 20;
const PURGE_WAIT: Duration = Duration::from_millis(500);
/// How long a create waits for a purge to complete before it gives up:
/// inside the create route's 15 s deadline, so the caller hears why.
const PURGE_BOUND: Duration = Duration::from_secs(10);

/// How tokens are obtained.
enum Credential {
    Secret { path: String, client_id: String, secret: Zeroizing<String> },
    Managed { path: String },
}

struct Inner {
    api: Rest,
    login: Rest,
    credential: Credential,
    token: Token,
}

/// A store for the config; `env` reads Azure's variables. A first
/// token is fetched now, so wrong credentials stop start-up.
pub fn connect(
    config: &AzureConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Connected, String> {
    let var = |n: &str| env(n).filter(|v| !v.is_empty());
    // The config has no CA key for Azure: OpenSSL's convention.
    let ca = var("SSL_CERT_FILE");
    let authority = var("AZURE_AUTHORITY_HOST").unwrap_or_else(|| AUTHORITY.into());
    let authority = format!("{}/", authority.trim_end_matches('/'));
    let secret_login = |tenant: &str, client_id: &str, secret: &str| {
        let url = format!("{authority}{}/oauth2/v2.0/token", encode(tenant));
        let credential = Credential::Secret {
            path: url_path(&url),
            client_id: client_id.to_owned(),
            secret: Zeroizing::new(secret.to_owned()),
        };
        (url_origin(&url), credential)
    };
    let managed = |client_id: Option<String>| {
        let base = var("AZURE_POD_IDENTITY_AUTHORITY_HOST").unwrap_or_else(|| IMDS.into());
        let mut path = format!(
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource={}",
            encode(proto::RESOURCE)
        );
        if let Some(id) = client_id {
            path.push_str(&format!("&client_id={}", encode(&id)));
        }
        (url_origin(&base), Credential::Managed { path })
    };
    let (origin, credential) = match &config.auth {
        AzureAuth::ClientSecret { tenant_id, client_id, client_secret } => {
            secret_login(tenant_id, client_id, client_secret.expose())
        }
        AzureAuth::ManagedIdentity { client_id } => managed(Some(client_id.clone())),
        AzureAuth::Default => {
            match (var("AZURE_TENANT_ID"), var("AZURE_CLIENT_ID"), var("AZURE_CLIENT_SECRET")) {
                (Some(t), Some(c), Some(s)) => secret_login(&t, &c, &s),
                (_, c, _) => managed(c),
            }
        }
    };
    let inner = Arc::new(Inner {
        api: Rest::new("azure", &config.endpoint, ca.as_deref())?,
        login: Rest::new("azure", &origin, ca.as_deref())?,
        credential,
        token: Token::default(),
    });
    smol::block_on(inner.token.get(&|| inner.fetch_token()))
        .map_err(|e| format!("azure: cannot get a token for {}: {e}", config.endpoint))?;
    let plaintext = inner.api.http.is_plaintext();
    Ok(Connected { store: Arc::new(RemoteStore::new(inner)), plaintext, source: None })
}

impl Remote for Inner {
    async fn call(&self, cmd: Command) -> Result<StoreReply, StoreError> {
        match cmd {
            Command::Create { name, value } => self.create(name.as_str(), &value).await,
            Command::Get { name } => self.get(name.as_str()).await,
            Command::Delete { name } => self.delete(name.as_str()).await,
            Command::List => self.list().await,
            Command::Status => Ok(StoreReply::Status { latency: self.api.probe("/").await? }),
        }
    }
}

impl Inner {
    /// Create-if-absent: a secret that exists wins; a deleted one that
    /// still holds the name is purged first. Concurrent creators can both
    /// write a version; the oldest is the key for every reader, so the
    /// value is read back and a creator that lost hears "exists".
    async fn create(&self, name: &str, value: &SecretBytes) -> Result<StoreReply, StoreError> {
        let r = self.call("GET", &format!("/secrets/{name}/"), None, true).await?;
        match (r.status, proto::error_code(&r).as_str()) {
            (200, _) => return Err(StoreError::Exists),
            (404, _) => {}
            _ => return Err(self.failure("failed to create key", &r)),
        }
        let body = proto::set_body(value)?;
        let mut purged = false;
        let until = std::time::Instant::now() + PURGE_BOUND;
        loop {
            let r = self.call("PUT", &format!("/secrets/{name}"), Some(&body), false).await?;
            match (r.status, proto::error_code(&r).as_str()) {
                (200, _) => break,
                (409, "ObjectIsDeletedButRecoverable") if !purged => {
                    self.purge(name).await?;
                    purged = true;
                }
                // Azure purges asynchronously: after the purge (ours or a
                // deleting node's) was accepted, the name stays taken for
                // seconds. Nothing was written; wait and write again.
                (409, "ObjectIsBeingDeleted") if std::time::Instant::now() < until => {
                    if !purged {
                        self.purge(name).await?;
                        purged = true;
                    }
                    Timer::after(PURGE_WAIT).await;
                }
                _ => return Err(self.failure("failed to create key", &r)),
            }
        }
        match self.get(name).await? {
            StoreReply::Value(stored) if same(&stored, value) => Ok(StoreReply::Created),
            _ => Err(StoreError::Exists),
        }
    }

    async fn get(&self, name: &str) -> Result<StoreReply, StoreError> {
        let r = self.call("GET", &format!("/secrets/{name}/versions"), None, true).await?;
        match r.status {
            200 => {}
            404 => return Err(StoreError::NotFound),
            _ => return Err(self.failure("failed to read key", &r)),
        }
        let versions = proto::versions_result(&r)?;
        let Some(v) = proto::oldest(&versions) else { return Err(StoreError::NotFound) };
        let r = self.call("GET", &format!("/secrets/{name}/{}", v.id), None, true).await?;
        match r.status {
            200 => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                proto::secret_result(&r, now as i64)
            }
            404 => Err(StoreError::NotFound),
            _ => Err(self.failure("failed to read key", &r)),
        }
    }

    async fn delete(&self, name: &str) -> Result<StoreReply, StoreError> {
        let r = self.call("DELETE", &format!("/secrets/{name}"), None, true).await?;
        match r.status {
            200 => {}
            404 => return Err(StoreError::NotFound),
            _ => return Err(self.failure("failed to delete key", &r)),
        }
        self.purge(name).await?;
        Ok(StoreReply::Deleted)
    }

    /// Purges a deleted secret so its name can be used again, waiting
    /// while Azure is still deleting it. No soft delete (404) is fine.
    async fn purge(&self, name: &str) -> Result<(), StoreError> {
        for _ in 0..PURGE_TRIES {
            let r = self.call("DELETE", &format!("/deletedsecrets/{name}"), None, true).await?;
            match (r.status, proto::error_code(&r).as_str()) {
                (200 | 204 | 404, _) => return Ok(()),
                (409, "ObjectIsBeingDeleted") => Timer::after(PURGE_WAIT).await,
                _ => return Err(self.failure("failed to purge deleted key", &r)),
            };
        }
        Err(StoreError::Failed(format!("azure: '{name}' is still being deleted; try again later")))
    }

    async fn list(&self) -> Result<StoreReply, StoreError> {
        let mut names = Vec::new();
        let mut path = "/secrets?maxresults=25".to_owned();
        for _ in 0..MAX_PAGES {
            let r = self.call("GET", &path, None, true).await?;
            if r.status != 200 {
                return Err(self.failure("failed to list keys", &r));
            }
            let (page, next) = proto::list_result(&r)?;
            names.extend(page);
            match next {
                // nextLink is absolute; only the vault's own links are followed.
                Some(link) if same_origin(&link, &self.api_url()) => path = url_path(&link),
                Some(link) => {
                    return Err(StoreError::Failed(format!(
                        "azure: listing points elsewhere ({})",
                        url_origin(&link)
                    )))
                }
                None => return Ok(StoreReply::Names(names)),
            }
        }
        Err(StoreError::Failed("azure: listing has too many pages".into()))
    }

    fn api_url(&self) -> String {
        let h = &self.api.http;
        format!("{}://{}", if h.is_plaintext() { "http" } else { "https" }, h.host_header())
    }

    /// One vault call with the bearer token; `api-version` is added.
    async fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&Zeroizing<Vec<u8>>>,
        idempotent: bool,
    ) -> Result<HttpResponse, StoreError> {
        // A nextLink carries its own api-version.
        let path = match (path.contains("api-version="), path.contains('?')) {
            (true, _) => path.to_owned(),
            (false, true) => format!("{path}&api-version={}", proto::API_VERSION),
            (false, false) => format!("{path}?api-version={}", proto::API_VERSION),
        };
        let make =
            |auth: &str| request(method, &path, "Authorization", auth, body.map(|b| b.as_slice()));
        self.api.send_authed(&self.token, &|| self.fetch_token(), &make, idempotent).await
    }

    fn failure(&self, what: &str, r: &HttpResponse) -> StoreError {
        let detail = format!("{} {}", proto::error_code(r), proto::error_message(r));
        self.api.failure(what, r, detail.trim())
    }

    async fn fetch_token(&self) -> Result<Grant, StoreError> {
        let r = match &self.credential {
            Credential::Secret { path, client_id, secret } => {
                let form = proto::client_credentials_form(client_id, secret);
                let make = || {
                    HttpRequest::new("POST", path.clone())
                        .header("Content-Type", "application/x-www-form-urlencoded")
                        .body(form.to_vec())
                };
                self.login.send(&make, true).await?
            }
            Credential::Managed { path } => {
                let make = || HttpRequest::new("GET", path.clone()).header("Metadata", "true");
                self.login.send(&make, true).await?
            }
        };
        proto::token_result(&r)
    }
}

/// Whether two URLs name the same server: Azure's nextLinks spell out the
/// default port (`https://v.vault.azure.net:443/...`).
fn same_origin(a: &str, b: &str) -> bool {
    let norm = |u: &str| {
        let o = url_origin(u).to_ascii_lowercase();
        let o =
            o.strip_suffix(":443").filter(|_| o.starts_with("https://")).unwrap_or(&o).to_owned();
        o.strip_suffix(":80").filter(|_| o.starts_with("http://")).unwrap_or(&o).to_owned()
    };
    norm(a) == norm(b)
}

/// Whether two key values are equal, in constant time.
fn same(a: &SecretBytes, b: &SecretBytes) -> bool {
    use subtle::ConstantTimeEq;
    a.expose().ct_eq(b.expose()).into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn next_links_with_the_default_port_are_the_vault_itself() {
        use super::same_origin;
        assert!(same_origin(
            "https://v.vault.azure.net:443/secrets?x",
            "https://v.vault.azure.net"
        ));
        assert!(same_origin("https://V.vault.azure.net/secrets", "https://v.vault.azure.net"));
        assert!(same_origin("https://localhost:8443/s", "https://localhost:8443"));
        assert!(!same_origin("https://evil.example/secrets", "https://v.vault.azure.net"));
        assert!(!same_origin("http://v.vault.azure.net/secrets", "https://v.vault.azure.net"));
    }
}
