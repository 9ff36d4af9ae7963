//! `keystore.fs`: one file per key in a directory (`path`).

use super::super::schema::scalar_text;
use super::super::{ConfigError, KeystoreConfig};
use super::lookup;

pub(super) fn read(v: &serde_yaml::Value) -> Option<Result<KeystoreConfig, ConfigError>> {
    let path = lookup(v, &["fs", "path"]).map(scalar_text).unwrap_or_default();
    (!path.is_empty()).then_some(Ok(KeystoreConfig::Fs { path }))
}
