//! Key stores: each executes the core's [`Command`]s.

pub mod aws;
pub mod azure;
pub mod entrust;
pub mod fortanix;
mod fs;
pub mod gcp;
pub mod keysecure;
mod mem;
pub mod rest;
pub mod vault;

pub use aws::AwsStore;
pub use fs::FsStore;
pub use mem::MemStore;
pub use vault::VaultStore;

use std::future::Future;
use std::pin::Pin;

use kes_core::{Command, StoreError, StoreReply};

/// A command in flight to a remote store.
pub type StoreFuture = Pin<Box<dyn Future<Output = Result<StoreReply, StoreError>> + Send>>;

/// What a remote store (Vault, AWS, ...) implements: one command as one
/// async call. [`RemoteStore`] makes it a [`KeyStore`].
pub trait Remote: Send + Sync + 'static {
    /// Runs one command against the remote service.
    fn call(&self, cmd: Command) -> impl Future<Output = Result<StoreReply, StoreError>> + Send;
}

/// A remote store as a [`KeyStore`]: each command runs as its own task
/// (many in flight, none holding a thread); `execute` blocks on one, for
/// start-up and `kes migrate`.
pub struct RemoteStore<T>(std::sync::Arc<T>);

impl<T: Remote> RemoteStore<T> {
    /// Wraps a connected remote store.
    pub fn new(inner: std::sync::Arc<T>) -> Self {
        Self(inner)
    }
}

impl<T: Remote> KeyStore for RemoteStore<T> {
    fn execute(&self, cmd: Command) -> Result<StoreReply, StoreError> {
        smol::block_on(self.0.call(cmd))
    }

    fn blocks(&self) -> bool {
        true
    }

    fn execute_async(&self, cmd: Command) -> Result<StoreFuture, Command> {
        let inner = self.0.clone();
        Ok(Box::pin(async move { inner.call(cmd).await }))
    }
}

/// A key store. `execute` may block (the fs store does); the driver runs
/// blocking stores on smol's blocking pool.
pub trait KeyStore: Send + Sync + 'static {
    /// Executes one command.
    fn execute(&self, cmd: Command) -> Result<StoreReply, StoreError>;

    /// Whether `execute` blocks on IO (then it runs off the driver task).
    fn blocks(&self) -> bool;

    /// Remote stores hand out a command as a future, run as its own task:
    /// many in flight at once, none holding a thread. The default gives the
    /// command back, to be run by `execute`.
    fn execute_async(&self, cmd: Command) -> Result<StoreFuture, Command> {
        Err(cmd)
    }
}

/// A store opened from its config section.
pub struct Opened {
    /// The store, ready to serve.
    pub store: std::sync::Arc<dyn KeyStore>,
    /// What the banner says it is.
    pub label: String,
    /// Things worth a line on stderr (cleaned-up files, warnings).
    pub notes: Vec<String>,
}

/// The store a config selects. The fs store's crash leftovers are cleaned
/// up first (reported in the notes); remote stores log in, and a failed
/// login is an error.
pub fn open(config: &kes_core::config::KeystoreConfig) -> Result<Opened, String> {
    open_with_env(config, &|name| std::env::var(name).ok())
}

/// [`open`], with the environment variables the AWS and Azure stores read
/// (credentials, Azure's token endpoints) coming from `env`.
pub fn open_with_env(
    config: &kes_core::config::KeystoreConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Opened, String> {
    use kes_core::config::KeystoreConfig;
    use std::sync::Arc;
    let remote = |c: rest::Connected, label: String, what: &str| {
        let notes = match c.plaintext {
            true => vec![format!(
                "warning: {what} is plain HTTP: credentials and keys cross the network unencrypted"
            )],
            false => vec![],
        };
        let label = match c.source {
            Some(s) => format!("{label}, credentials from {s}"),
            None => label,
        };
        Ok(Opened { store: c.store, label, notes })
    };
    match config {
        KeystoreConfig::Memory => {
            let label = "in-memory (keys are lost on exit)".into();
            Ok(Opened { store: Arc::new(MemStore::default()), label, notes: vec![] })
        }
        KeystoreConfig::Fs { path } => {
            let s = FsStore::open(path).map_err(|e| format!("keystore.fs.path '{path}': {e}"))?;
            let notes = s.remove_stale_temp_files();
            Ok(Opened { store: Arc::new(s), label: format!("filesystem {path}"), notes })
        }
        KeystoreConfig::Vault(v) => {
            let s = VaultStore::connect(v)?;
            let mut notes = Vec::new();
            if s.is_plaintext() {
                notes.push(format!(
                    "warning: keystore.vault.endpoint '{}' is plain HTTP: the token and every key cross the network unencrypted",
                    v.endpoint
                ));
            }
            let kv = match v.kv {
                kes_core::config::KvVersion::V1 => "v1",
                kes_core::config::KvVersion::V2 => "v2",
            };
            let label = format!("vault {} (K/V {kv} at '{}')", v.endpoint, v.engine);
            Ok(Opened { store: Arc::new(s.into_store()), label, notes })
        }
        KeystoreConfig::Aws(a) => {
            let s = AwsStore::connect(a, env)?;
            let mut notes = Vec::new();
            if s.is_plaintext() {
                notes.push(format!(
                    "warning: keystore.aws.secretsmanager.endpoint '{}' is plain HTTP: keys cross the network unencrypted",
                    a.endpoint
                ));
            }
            let label = format!(
                "AWS Secrets Manager {} ({}), credentials from {}",
                a.endpoint,
                a.region,
                s.credentials_source()
            );
            Ok(Opened { store: Arc::new(s.into_store()), label, notes })
        }
        KeystoreConfig::Gcp(g) => {
            let label = format!("GCP Secret Manager {} (project '{}')", g.endpoint, g.project_id);
            remote(gcp::connect(g, env)?, label, "keystore.gcp.secretmanager")
        }
        KeystoreConfig::Azure(a) => {
            let label = format!("Azure Key Vault {}", a.endpoint);
            remote(azure::connect(a, env)?, label, "keystore.azure.keyvault.endpoint")
        }
        KeystoreConfig::KeySecure(k) => {
            let label = format!("CipherTrust Manager / KeySecure {}", k.endpoint);
            remote(keysecure::connect(k)?, label, "keystore.gemalto.keysecure.endpoint")
        }
        KeystoreConfig::Fortanix(f) => {
            let label = format!("Fortanix DSM {}", f.endpoint);
            remote(fortanix::connect(f)?, label, "keystore.fortanix.sdkms.endpoint")
        }
        KeystoreConfig::Entrust(e) => {
            let label = format!("Entrust KeyControl {} (box '{}')", e.endpoint, e.box_id);
            remote(entrust::connect(e)?, label, "keystore.entrust.keycontrol.endpoint")
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::https::HttpResponse;

    /// JSON-ish bodies built from the fields the parsers look at, so the
    /// random cases reach past the first `serde_json` error.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        let key = prop::sample::select(vec![
            "access_token",
            "expires_in",
            "expires_at",
            "payload",
            "data",
            "secrets",
            "name",
            "nextPageToken",
            "value",
            "nextLink",
            "id",
            "attributes",
            "enabled",
            "created",
            "nbf",
            "exp",
            "material",
            "resources",
            "total",
            "kid",
            "secret_data",
            "next_token",
            "expired",
            "error",
            "status",
            "code",
            "codeDesc",
            "jwt",
            "duration",
        ]);
        let leaf = prop_oneof![
            Just("null".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            "[ -~]{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            Just("\"eyJib3hfaWQiOiJiIiwibmV4dF9jdHgiOiJjIn0=\"".to_owned()),
        ];
        let value = leaf.prop_recursive(3, 24, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((key.clone(), inner), 0..5).prop_map(|kv| {
                    let fields: Vec<String> =
                        kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        });
        prop_oneof![value.prop_map(String::into_bytes), prop::collection::vec(any::<u8>(), 0..64)]
    }

    proptest! {
        /// What fuzz/fuzz_targets/cloud_response.rs runs, on every test run.
        #[test]
        fn cloud_parsers_never_panic(status in prop::sample::select(vec![200u16, 201, 204, 401, 404, 409, 429, 503]), b in body()) {
            use super::{aws, azure, entrust, fortanix, gcp, keysecure, vault};
            let r = HttpResponse { status, location: None, body: zeroize::Zeroizing::new(b) };
            let _ = (gcp::proto::token_result(&r), gcp::proto::access_result(&r), gcp::proto::list_result(&r));
            let _ = azure::proto::versions_result(&r).map(|v| azure::proto::oldest(&v).map(|o| o.created));
            let _ = (azure::proto::token_result(&r), azure::proto::secret_result(&r, 0), azure::proto::list_result(&r));
            let _ = (keysecure::login_result(&r), keysecure::export_result(&r), keysecure::list_result(&r));
            let _ = (fortanix::session_result(&r), fortanix::export_result(&r), fortanix::kid(&r), fortanix::list_result(&r));
            let _ = (entrust::token_result(&r, 0), entrust::checkout_result(&r), entrust::list_result(&r));
            let _ = (aws::proto::get_result(&r), aws::proto::list_result(&r), aws::proto::create_result(&r));
            let _ = (vault::proto::get_result(kes_core::config::KvVersion::V1, "name", &r), vault::proto::token_result(&r));
            let _ = (vault::proto::get_result(kes_core::config::KvVersion::V2, "name", &r), vault::proto::list_result(&r));
        }
    }
}
