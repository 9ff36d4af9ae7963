//! GCP Secret Manager as the key store: the REST API v1 over HTTPS with a
//! service account's OAuth2 token (a JWT signed RS256 with the account's
//! key, exchanged at the token URI, refreshed at half its lifetime).
//!
//! KES talks gRPC to Google; the REST calls here are the same operations
//! on the same resources, so a project KES wrote is read as is.

pub mod proto;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use kes_core::config::GcpConfig;
use kes_core::{Command, StoreError, StoreReply};
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use zeroize::Zeroizing;

use super::rest::{request, url_origin, url_path, Connected, Grant, Rest, Token};
use super::{Remote, RemoteStore};
use crate::https::HttpRequest;

/// Listing page size and the most pages followed.
const PAGE: usize = 250;
const MAX_PAGES: usize = 10_000;

struct Inner {
    api: Rest,
    oauth: Rest,
    token_path: String,
    token_uri: String,
    project: String,
    scope: String,
    email: String,
    key_id: String,
    key: RsaKeyPair,
    token: Token,
}

/// Loads the account's key and fetches a first token, so wrong
/// credentials stop start-up instead of the first request (KES finds
/// out only then).
/// `env` gives `SSL_CERT_FILE`, the CA file when set (the config has no
/// CA key for GCP).
pub fn connect(
    config: &GcpConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Connected, String> {
    let c = &config.credentials;
    let ca = env("SSL_CERT_FILE").filter(|v| !v.is_empty());
    let key = load_key(c.private_key.expose())?;
    let inner = Arc::new(Inner {
        api: Rest::new("gcp", &config.endpoint, ca.as_deref())?,
        oauth: Rest::new("gcp", &url_origin(&c.token_uri), ca.as_deref())?,
        token_path: url_path(&c.token_uri),
        token_uri: c.token_uri.clone(),
        project: config.project_id.clone(),
        scope: config.scopes.join(" "),
        email: c.client_email.clone(),
        key_id: c.private_key_id.clone(),
        key,
        token: Token::default(),
    });
    smol::block_on(inner.token.get(&|| inner.login()))
        .map_err(|e| format!("gcp: cannot log in as '{}': {e}", c.client_email))?;
    let plaintext = inner.api.http.is_plaintext() || inner.oauth.http.is_plaintext();
    Ok(Connected { store: Arc::new(RemoteStore::new(inner)), plaintext })
}

/// The PKCS#8 RSA key of a service account. Keys pasted from the JSON key
/// file keep their `\n` escapes; those are undone.
fn load_key(pem: &str) -> Result<RsaKeyPair, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivatePkcs8KeyDer;
    let pem =
        Zeroizing::new(if pem.contains('\n') { pem.to_owned() } else { pem.replace("\\n", "\n") });
    let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
        format!("keystore.gcp.secretmanager.credentials.private_key: not a PKCS#8 PEM key: {e}")
    })?;
    RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).map_err(|e| {
        format!("keystore.gcp.secretmanager.credentials.private_key: not a usable RSA key: {e}")
    })
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

    /// Signs a fresh assertion and exchanges it for an access token.
    async fn login(&self) -> Result<Grant, StoreError> {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let input = proto::signing_input(&proto::Assertion {
            issuer: &self.email,
            key_id: &self.key_id,
            scope: &self.scope,
            audience: &self.token_uri,
            now,
        });
        let mut sig = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), input.as_bytes(), &mut sig)
            .map_err(|_| StoreError::Failed("gcp: cannot sign the token request".into()))?;
        let jwt = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig));
        let form = proto::token_form(&jwt);
        let make = || {
            HttpRequest::new("POST", self.token_path.clone())
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(form.clone())
        };
        let r = self.oauth.send(&make, true).await?;
        proto::token_result(&r)
    }
}
