//! A blocking wrapper: the async client driven by `smol::block_on`.

use serde_json::Value;
use zeroize::Zeroizing;

use crate::{ClientError, Dek, KeyInfo};

/// The blocking client; same methods as [`crate::Client`].
#[derive(Clone)]
pub struct Client {
    inner: crate::Client,
}

macro_rules! blocking {
    ($( $(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty; )*) => {
        impl Client {
            $( $(#[$doc])* pub fn $name(&self, $($arg: $ty),*) -> Result<$ret, ClientError> {
                smol::block_on(self.inner.$name($($arg),*))
            } )*
        }
    };
}

impl Client {
    /// Wraps an async client.
    pub fn new(inner: crate::Client) -> Self {
        Self { inner }
    }

    /// Follows a log stream; iterate the returned lines.
    pub fn log(
        &self,
        audit: bool,
    ) -> Result<impl Iterator<Item = Result<String, ClientError>>, ClientError> {
        let mut lines = smol::block_on(self.inner.log(audit))?;
        Ok(std::iter::from_fn(move || smol::block_on(lines.next_line())))
    }

    /// The async client underneath.
    pub fn inner(&self) -> &crate::Client {
        &self.inner
    }
}

blocking! {
    /// See [`crate::Client::version`].
    fn version() -> String;
    /// See [`crate::Client::status`].
    fn status() -> Value;
    /// See [`crate::Client::metrics`].
    fn metrics() -> String;
    /// See [`crate::Client::create_key`].
    fn create_key(name: &str) -> ();
    /// See [`crate::Client::import_key`].
    fn import_key(name: &str, key: &[u8]) -> ();
    /// See [`crate::Client::describe_key`].
    fn describe_key(name: &str) -> KeyInfo;
    /// See [`crate::Client::describe_key_json`].
    fn describe_key_json(name: &str) -> Value;
    /// See [`crate::Client::delete_key`].
    fn delete_key(name: &str) -> ();
    /// See [`crate::Client::rotate_key`].
    fn rotate_key(name: &str) -> u32;
    /// See [`crate::Client::retire_key_versions`].
    fn retire_key_versions(name: &str, min: u32) -> ();
    /// See [`crate::Client::purge_key_versions`].
    fn purge_key_versions(name: &str) -> Vec<u32>;
    /// See [`crate::Client::rewrap`].
    fn rewrap(name: &str, ciphertext: &[u8], context: &[u8]) -> Vec<u8>;
    /// See [`crate::Client::list_keys`].
    fn list_keys(prefix: &str) -> Vec<String>;
    /// See [`crate::Client::generate_key`].
    fn generate_key(name: &str, context: &[u8]) -> Dek;
    /// See [`crate::Client::encrypt`].
    fn encrypt(name: &str, plaintext: &[u8], context: &[u8]) -> Vec<u8>;
    /// See [`crate::Client::decrypt`].
    fn decrypt(name: &str, ciphertext: &[u8], context: &[u8]) -> Zeroizing<Vec<u8>>;
    /// See [`crate::Client::hmac`].
    fn hmac(name: &str, message: &[u8]) -> Vec<u8>;
    /// See [`crate::Client::describe_policy`].
    fn describe_policy(name: &str) -> Value;
    /// See [`crate::Client::read_policy`].
    fn read_policy(name: &str) -> Value;
    /// See [`crate::Client::list_policies`].
    fn list_policies(prefix: &str) -> Vec<String>;
    /// See [`crate::Client::describe_identity`].
    fn describe_identity(identity: &str) -> Value;
    /// See [`crate::Client::describe_self`].
    fn describe_self() -> Value;
    /// See [`crate::Client::list_identities`].
    fn list_identities(prefix: &str) -> Vec<String>;
}
