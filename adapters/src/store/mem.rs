//! The in-memory store: keys live as long as the process.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use kes_core::crypto::SecretBytes;
use kes_core::{Command, StoreError, StoreReply};

use super::contract::KeyStore;

/// Keys in a map; the default when no store is configured, and `--dev`.
#[derive(Default)]
pub struct MemStore {
    keys: Mutex<BTreeMap<String, SecretBytes>>,
}

impl KeyStore for MemStore {
    fn execute(&self, cmd: Command) -> Result<StoreReply, StoreError> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        match cmd {
            Command::Create { name, value } => {
                if keys.contains_key(name.as_str()) {
                    return Err(StoreError::Exists);
                }
                keys.insert(name.as_str().to_owned(), value);
                Ok(StoreReply::Created)
            }
            Command::Get { name } => {
                keys.get(name.as_str()).cloned().map(StoreReply::Value).ok_or(StoreError::NotFound)
            }
            Command::Delete { name } => {
                keys.remove(name.as_str()).map(|_| StoreReply::Deleted).ok_or(StoreError::NotFound)
            }
            Command::List => Ok(StoreReply::Names(keys.keys().cloned().collect())),
            Command::Status => Ok(StoreReply::Status { latency: Duration::from_millis(1) }),
        }
    }

    fn blocks(&self) -> bool {
        false
    }
}
