//! The store a config section names, opened: the one place that knows
//! every store.

use super::contract::KeyStore;
use super::{aws, azure, entrust, fortanix, gcp, keysecure, rest, vault, FsStore, MemStore};
use aws::AwsStore;
use vault::VaultStore;

/// A store opened from its config section.
pub struct Opened {
    /// The store, ready to serve.
    pub store: std::sync::Arc<dyn KeyStore>,
    /// What the banner says it is.
    pub label: String,
    /// Things worth a line on stderr (cleaned-up files, warnings).
    pub notes: Vec<String>,
}

/// `opened`, its values sealed by the HSM of an `hsm:` section (if any).
/// Start-up fails when the module, the token, the PIN or the key is wrong.
pub fn with_hsm(
    opened: Opened,
    hsm: Option<&kes_core::config::HsmConfig>,
) -> Result<Opened, String> {
    let Some(cfg) = hsm else { return Ok(opened) };
    let hsm = std::sync::Arc::new(super::hsm::Hsm::open(cfg)?);
    let label = format!("{}, values sealed by {}", opened.label, hsm.describe());
    let store = std::sync::Arc::new(super::hsm::SealedStore::new(opened.store, hsm));
    Ok(Opened { store, label, notes: opened.notes })
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
