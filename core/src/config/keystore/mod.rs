//! The `keystore:` section: which store keeps the keys. Each store's
//! section is read by its own module; adding a store is one module and one
//! line in [`SECTIONS`]. Exactly one section may be filled in.

mod aws;
mod azure;
mod entrust;
mod fortanix;
mod fs;
mod gcp;
mod keysecure;
mod vault;

use super::schema::scalar_text;
use super::{ConfigError, KeystoreConfig};

/// How a store's section is read.
enum Section {
    /// Read by a module: `None` when the section is absent or empty.
    Read(fn(&serde_yaml::Value) -> Option<Result<KeystoreConfig, ConfigError>>),
    /// A KES store we do not serve yet, recognised by the key at this path
    /// being set: start-up stops with a clear message instead of silently
    /// keeping keys in memory.
    NotYet(&'static [&'static str]),
}

/// Every keystore section KES knows, by name.
const SECTIONS: &[(&str, Section)] = &[
    ("fs", Section::Read(fs::read)),
    ("vault", Section::Read(vault::read)),
    ("fortanix", Section::Read(fortanix::read)),
    ("aws", Section::Read(aws::read)),
    ("gcp", Section::Read(gcp::read)),
    ("azure", Section::Read(azure::read)),
    ("gemalto", Section::Read(keysecure::read)),
    ("generic", Section::NotYet(&["generic", "endpoint"])),
    ("entrust", Section::Read(entrust::read)),
];

const IN_MEMORY: &str = "no keystore configured: keys live in memory and are lost on exit";

/// The configured store; none at all means memory (as KES v0.19 did).
pub(super) fn select(
    v: Option<&serde_yaml::Value>,
    warnings: &mut Vec<String>,
) -> Result<KeystoreConfig, ConfigError> {
    let chosen: Vec<(&str, Result<KeystoreConfig, ConfigError>)> = match v {
        None => Vec::new(),
        Some(v) => {
            SECTIONS.iter().filter_map(|(name, s)| Some((*name, read(v, name, s)?))).collect()
        }
    };
    match chosen.as_slice() {
        [] => {
            warnings.push(IN_MEMORY.to_owned());
            Ok(KeystoreConfig::Memory)
        }
        [(_, one)] => one.clone(),
        [(a, _), (b, _), ..] => Err(ConfigError::new(format!(
            "ambiguous keystore configuration: '{a}' and '{b}' specified at the same time"
        ))),
    }
}

fn read(
    v: &serde_yaml::Value,
    name: &str,
    section: &Section,
) -> Option<Result<KeystoreConfig, ConfigError>> {
    match section {
        Section::Read(read) => read(v),
        Section::NotYet(path) => {
            let set = lookup(v, path).map(scalar_text).is_some_and(|s| !s.is_empty());
            set.then(|| Err(ConfigError::new(format!("keystore '{name}' is not supported yet"))))
        }
    }
}

/// The value at a path of mapping keys.
fn lookup<'a>(v: &'a serde_yaml::Value, path: &[&str]) -> Option<&'a serde_yaml::Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

/// A store endpoint as a URL: a bare `host[:port]` (as KES's samples
/// write them) gets `https://`; a trailing `/` is dropped.
fn https_endpoint(e: &str) -> String {
    let url = if e.contains("://") { e.to_owned() } else { format!("https://{e}") };
    url.trim_end_matches('/').to_owned()
}

/// `tls.ca` of a store section, if set.
fn tls_ca(text: &dyn Fn(&[&str]) -> String) -> Option<String> {
    Some(text(&["tls", "ca"])).filter(|s| !s.is_empty())
}

/// A config with only an admin and this `keystore:` body, for the section tests.
#[cfg(test)]
fn parse_with_keystore(keystore: &str) -> Result<super::Config, ConfigError> {
    let admin = "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22";
    super::Config::parse(&format!("admin:\n  identity: {admin}\nkeystore:\n{keystore}"), &|_| None)
}
