//! A Rust client for KES-compatible key servers.
//!
//! Connects over mutual TLS with a certificate and key, or with a KES API key
//! (from which it derives its own client certificate); spreads calls over
//! several endpoints and fails over on connection errors; maps the server's
//! answers to typed [`ClientError`]s, so callers match on variants, not strings.
//!
//! ```
//! # // Hidden set-up: a server on a free port with fresh certificates.
//! # use std::sync::Arc;
//! # let dir = std::env::temp_dir().join(format!("kes-client-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! # let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
//! # let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()]).unwrap().self_signed(&key).unwrap();
//! # std::fs::write(dir.join("server.cert"), cert.pem()).unwrap();
//! # std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
//! # let ckey = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
//! # let ccert = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap().self_signed(&ckey).unwrap();
//! # std::fs::write(dir.join("client.cert"), ccert.pem()).unwrap();
//! # std::fs::write(dir.join("client.key"), ckey.serialize_pem()).unwrap();
//! # let mut config = kes_core::Config::empty();
//! # config.admin = kes_core::config::AdminSetting::Identity(kes_core::Identity::from_certificate(ccert.der()).unwrap());
//! # let auth = kes_adapters::tls::ClientAuth { verify: false, required: true };
//! # let tls = kes_adapters::tls::server_config(&dir.join("server.cert"), &dir.join("server.key"), None, auth, None).unwrap();
//! # let store = Arc::new(kes_adapters::store::MemStore::default());
//! # let server = kes_adapters::start(kes_adapters::ServerOptions { config, addr: "127.0.0.1:0".parse().unwrap(), tls, store, threads: 1 }).unwrap();
//! # let endpoint = format!("https://127.0.0.1:{}", server.addr().port());
//! # let (cert_file, key_file) = (dir.join("client.cert"), dir.join("client.key"));
//! # let (cert_file, key_file) = (cert_file.to_str().unwrap(), key_file.to_str().unwrap());
//! # let ca_file = dir.join("server.cert").to_str().unwrap().to_owned();
//! use kes_client::{ClientBuilder, ClientError, Credentials};
//!
//! let client = ClientBuilder::new([endpoint.as_str()])
//!     .credentials(Credentials::from_files(cert_file, key_file, None)?)
//!     .ca_file(ca_file)
//!     .build_blocking()?;
//! client.create_key("my-app")?;
//! let dek = client.generate_key("my-app", b"bucket/object")?;
//! let plaintext = client.decrypt("my-app", &dek.ciphertext, b"bucket/object")?;
//! assert_eq!(plaintext.as_slice(), dek.plaintext.as_slice());
//! // Errors are variants, not strings:
//! assert!(matches!(client.create_key("my-app"), Err(ClientError::KeyExists)));
//! # server.stop();
//! # Ok::<(), ClientError>(())
//! ```

#![forbid(unsafe_code)]

mod apikey;
pub mod blocking;
mod error;
mod transport;

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use zeroize::Zeroizing;

pub use apikey::{ApiKey, CertificateOptions};
pub use error::ClientError;
pub use transport::LogLines;
use transport::{Endpoint, Transport};

/// How the client authenticates.
pub enum Credentials {
    /// A certificate chain and its private key.
    Certificate {
        /// Leaf first.
        chain: Vec<rustls::pki_types::CertificateDer<'static>>,
        /// The private key.
        key: rustls::pki_types::PrivateKeyDer<'static>,
    },
    /// A KES API key.
    ApiKey(ApiKey),
}

impl Credentials {
    /// Reads PEM certificate and key files (`password` for legacy-encrypted keys).
    pub fn from_files(cert: &str, key: &str, password: Option<&str>) -> Result<Self, ClientError> {
        let chain = kes_adapters::tls::load_certs(std::path::Path::new(cert))
            .map_err(ClientError::Certificate)?;
        let key = kes_adapters::tls::load_key(std::path::Path::new(key), password)
            .map_err(ClientError::Certificate)?;
        Ok(Self::Certificate { chain, key })
    }
}

/// Builds a [`Client`].
pub struct ClientBuilder {
    endpoints: Vec<String>,
    credentials: Option<Credentials>,
    insecure: bool,
    ca: Option<String>,
    timeout: Duration,
}

impl ClientBuilder {
    /// Endpoints such as `https://kes-1:7373` (scheme optional).
    pub fn new<S: AsRef<str>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(|s| s.as_ref().to_owned()).collect(),
            credentials: None,
            insecure: false,
            ca: None,
            timeout: Duration::from_secs(15),
        }
    }

    /// Authenticate with these credentials (required).
    pub fn credentials(mut self, c: Credentials) -> Self {
        self.credentials = Some(c);
        self
    }

    /// Do not verify the server's certificate (development only).
    pub fn insecure(mut self, yes: bool) -> Self {
        self.insecure = yes;
        self
    }

    /// Trust this CA file for the server's certificate (default: system roots).
    pub fn ca_file(mut self, path: impl Into<String>) -> Self {
        self.ca = Some(path.into());
        self
    }

    /// Per-request timeout (connect, send, receive).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// The async client.
    pub fn build(self) -> Result<Client, ClientError> {
        let endpoints =
            self.endpoints.iter().map(|e| Endpoint::parse(e)).collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(ClientError::Config("no server endpoint".into()));
        }
        let creds = self.credentials.ok_or_else(|| ClientError::Config("no credentials".into()))?;
        let (chain, key) = match creds {
            Credentials::Certificate { chain, key } => (chain, key),
            Credentials::ApiKey(k) => {
                let (cert, key) = k.certificate()?;
                (vec![cert], key)
            }
        };
        let tls = transport::client_config(chain, key, self.insecure, self.ca.as_deref())?;
        Ok(Client { transport: Arc::new(Transport::new(endpoints, tls, self.timeout)) })
    }

    /// The blocking client.
    pub fn build_blocking(self) -> Result<blocking::Client, ClientError> {
        self.build().map(blocking::Client::new)
    }
}

/// A data key: use `plaintext` to encrypt, store `ciphertext` with the data.
pub struct Dek {
    /// The 32-byte key; wiped on drop.
    pub plaintext: Zeroizing<Vec<u8>>,
    /// The key encrypted under the master key (opaque).
    pub ciphertext: Vec<u8>,
}

/// Metadata of a key (`/v1/key/describe`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// Key name.
    pub name: String,
    /// `AES256` or `ChaCha20`, if known.
    pub algorithm: Option<String>,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// Creator identity, if recorded.
    pub created_by: Option<String>,
    /// For a rotated key (key versions, an extension of KES): the newest
    /// version and the lowest one not retired.
    pub version: Option<(u32, u32)>,
    /// For a rotated key: each version, oldest first.
    pub versions: Vec<KeyVersion>,
}

/// One version of a rotated key, as the server describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVersion {
    /// Its number (1 is the key as created).
    pub version: u32,
    /// `active`, `retired` or `purged`.
    pub state: String,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// Creator identity, if recorded.
    pub created_by: Option<String>,
    /// Ciphertexts the answering node opened under it since it started.
    pub unseals: u64,
}

/// An async KES client; cheap to clone.
#[derive(Clone)]
pub struct Client {
    transport: Arc<Transport>,
}

fn b64(b: &[u8]) -> String {
    STANDARD.encode(b)
}

fn unb64(v: &Value, field: &str) -> Result<Vec<u8>, ClientError> {
    let s = v[field]
        .as_str()
        .ok_or_else(|| ClientError::InvalidResponse(format!("missing '{field}'")))?;
    STANDARD.decode(s).map_err(|e| ClientError::InvalidResponse(format!("'{field}': {e}")))
}

fn names(body: &[u8], field: &str) -> Result<Vec<String>, ClientError> {
    let text =
        std::str::from_utf8(body).map_err(|e| ClientError::InvalidResponse(e.to_string()))?;
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value =
            serde_json::from_str(line).map_err(|e| ClientError::InvalidResponse(e.to_string()))?;
        if let Some(e) = v["error"].as_str() {
            return Err(ClientError::Api { status: 500, message: e.to_owned() });
        }
        if let Some(n) = v[field].as_str() {
            out.push(n.to_owned());
        }
    }
    Ok(out)
}

/// A path argument, escaped as a URL path segment.
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// The server's version.
    pub async fn version(&self) -> Result<String, ClientError> {
        let v = self.transport.json("GET", "/version", None, true).await?;
        Ok(v["version"].as_str().unwrap_or_default().to_owned())
    }

    /// `/v1/status` as JSON.
    pub async fn status(&self) -> Result<Value, ClientError> {
        self.transport.json("GET", "/v1/status", None, true).await
    }

    /// Prometheus metrics text.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let r = self.transport.call("GET", "/v1/metrics", None, true).await?;
        String::from_utf8(r.body).map_err(|e| ClientError::InvalidResponse(e.to_string()))
    }

    /// Creates a key; [`ClientError::KeyExists`] if the name is taken.
    pub async fn create_key(&self, name: &str) -> Result<(), ClientError> {
        self.transport
            .call("PUT", &format!("/v1/key/create/{}", seg(name)), None, false)
            .await
            .map(|_| ())
    }

    /// Imports 32 raw key bytes as an AES256 key.
    pub async fn import_key(&self, name: &str, key: &[u8]) -> Result<(), ClientError> {
        let body = Zeroizing::new(json!({"key": b64(key), "cipher": "AES256"}).to_string());
        self.transport
            .call("PUT", &format!("/v1/key/import/{}", seg(name)), Some(body.as_bytes()), false)
            .await
            .map(|_| ())
    }

    /// A key's metadata.
    pub async fn describe_key(&self, name: &str) -> Result<KeyInfo, ClientError> {
        let v = self.describe_key_json(name).await?;
        let versions = v["versions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| KeyVersion {
                        version: e["version"].as_u64().unwrap_or(0) as u32,
                        state: e["state"].as_str().unwrap_or_default().to_owned(),
                        created_at: e["created_at"].as_str().unwrap_or_default().to_owned(),
                        created_by: e["created_by"].as_str().map(str::to_owned),
                        unseals: e["unseals"].as_u64().unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(KeyInfo {
            name: v["name"].as_str().unwrap_or(name).to_owned(),
            algorithm: v["algorithm"].as_str().map(str::to_owned),
            created_at: v["created_at"].as_str().unwrap_or_default().to_owned(),
            created_by: v["created_by"].as_str().map(str::to_owned),
            version: match (v["version"].as_u64(), v["min_version"].as_u64()) {
                (Some(n), Some(m)) => Some((n as u32, m as u32)),
                _ => None,
            },
            versions,
        })
    }

    /// A key's description as the server answers it (for tools that pass
    /// it on unchanged).
    pub async fn describe_key_json(&self, name: &str) -> Result<Value, ClientError> {
        self.transport.json("GET", &format!("/v1/key/describe/{}", seg(name)), None, true).await
    }

    /// Rotates a key: a new version seals from now on; its number.
    pub async fn rotate_key(&self, name: &str) -> Result<u32, ClientError> {
        let v = self
            .transport
            .json("PUT", &format!("/v1/key/rotate/{}", seg(name)), None, false)
            .await?;
        version_of(&v, "version")
    }

    /// Retires a key's versions below `min`: they no longer seal or open.
    pub async fn retire_key_versions(&self, name: &str, min: u32) -> Result<(), ClientError> {
        let body = json!({ "min_version": min }).to_string();
        self.transport
            .call("PUT", &format!("/v1/key/retire/{}", seg(name)), Some(body.as_bytes()), false)
            .await
            .map(|_| ())
    }

    /// Deletes retired versions' material; the versions purged.
    pub async fn purge_key_versions(&self, name: &str) -> Result<Vec<u32>, ClientError> {
        let v = self
            .transport
            .json("PUT", &format!("/v1/key/purge/{}", seg(name)), None, false)
            .await?;
        Ok(v["purged"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_u64())
            .map(|n| n as u32)
            .collect())
    }

    /// Re-seals a ciphertext under the key's newest version.
    pub async fn rewrap(
        &self,
        name: &str,
        ciphertext: &[u8],
        context: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        let body = json!({"ciphertext": b64(ciphertext), "context": b64(context)}).to_string();
        let v = self
            .transport
            .json("PUT", &format!("/v1/key/rewrap/{}", seg(name)), Some(body.as_bytes()), true)
            .await?;
        unb64(&v, "ciphertext")
    }

    /// Deletes a key.
    pub async fn delete_key(&self, name: &str) -> Result<(), ClientError> {
        self.transport
            .call("DELETE", &format!("/v1/key/delete/{}", seg(name)), None, false)
            .await
            .map(|_| ())
    }

    /// Key names starting with `prefix` (a `*` pattern is a glob), sorted.
    pub async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, ClientError> {
        let r = self
            .transport
            .call("GET", &format!("/v1/key/list/{}", seg(prefix)), None, true)
            .await?;
        names(&r.body, "name")
    }

    /// A new data key bound to `context`.
    pub async fn generate_key(&self, name: &str, context: &[u8]) -> Result<Dek, ClientError> {
        let body = json!({"context": b64(context)}).to_string();
        let v = self
            .transport
            .json("PUT", &format!("/v1/key/generate/{}", seg(name)), Some(body.as_bytes()), true)
            .await?;
        Ok(Dek {
            plaintext: Zeroizing::new(unb64(&v, "plaintext")?),
            ciphertext: unb64(&v, "ciphertext")?,
        })
    }

    /// Encrypts a (small) plaintext under the key.
    pub async fn encrypt(
        &self,
        name: &str,
        plaintext: &[u8],
        context: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        let body = Zeroizing::new(
            json!({"plaintext": b64(plaintext), "context": b64(context)}).to_string(),
        );
        let v = self
            .transport
            .json("PUT", &format!("/v1/key/encrypt/{}", seg(name)), Some(body.as_bytes()), true)
            .await?;
        unb64(&v, "ciphertext")
    }

    /// Decrypts a ciphertext; [`ClientError::NotAuthentic`] on a wrong context or tampering.
    pub async fn decrypt(
        &self,
        name: &str,
        ciphertext: &[u8],
        context: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        let body = json!({"ciphertext": b64(ciphertext), "context": b64(context)}).to_string();
        let v = self
            .transport
            .json("PUT", &format!("/v1/key/decrypt/{}", seg(name)), Some(body.as_bytes()), true)
            .await?;
        Ok(Zeroizing::new(unb64(&v, "plaintext")?))
    }

    /// HMAC-SHA-256 of `message` under the key's HMAC key.
    pub async fn hmac(&self, name: &str, message: &[u8]) -> Result<Vec<u8>, ClientError> {
        let body = json!({"message": b64(message)}).to_string();
        let v = self
            .transport
            .json("PUT", &format!("/v1/key/hmac/{}", seg(name)), Some(body.as_bytes()), true)
            .await?;
        unb64(&v, "hmac")
    }

    /// `/v1/policy/describe`.
    pub async fn describe_policy(&self, name: &str) -> Result<Value, ClientError> {
        self.transport.json("GET", &format!("/v1/policy/describe/{}", seg(name)), None, true).await
    }

    /// `/v1/policy/read`: allow/deny patterns and metadata.
    pub async fn read_policy(&self, name: &str) -> Result<Value, ClientError> {
        self.transport.json("GET", &format!("/v1/policy/read/{}", seg(name)), None, true).await
    }

    /// Policy names matching `prefix`, sorted.
    pub async fn list_policies(&self, prefix: &str) -> Result<Vec<String>, ClientError> {
        let r = self
            .transport
            .call("GET", &format!("/v1/policy/list/{}", seg(prefix)), None, true)
            .await?;
        names(&r.body, "name")
    }

    /// `/v1/identity/describe`.
    pub async fn describe_identity(&self, identity: &str) -> Result<Value, ClientError> {
        self.transport
            .json("GET", &format!("/v1/identity/describe/{}", seg(identity)), None, true)
            .await
    }

    /// Who the server thinks this client is.
    pub async fn describe_self(&self) -> Result<Value, ClientError> {
        self.transport.json("GET", "/v1/identity/self/describe", None, true).await
    }

    /// Follows the audit log (`audit`) or the error log: one JSON line per event.
    pub async fn log(&self, audit: bool) -> Result<LogLines, ClientError> {
        self.transport.stream(if audit { "/v1/log/audit" } else { "/v1/log/error" }).await
    }

    /// Identities matching `prefix`, sorted.
    pub async fn list_identities(&self, prefix: &str) -> Result<Vec<String>, ClientError> {
        let r = self
            .transport
            .call("GET", &format!("/v1/identity/list/{}", seg(prefix)), None, true)
            .await?;
        names(&r.body, "identity")
    }
}

/// A version number from an answer (a number, or a string as in the
/// crypto answers).
fn version_of(v: &Value, field: &str) -> Result<u32, ClientError> {
    match &v[field] {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| ClientError::InvalidResponse(format!("no '{field}' in the answer")))
}
