//! The only way the core touches storage: commands out, results in.
//!
//! The core never calls a store. It emits a [`Command`] with a [`CommandId`];
//! the adapter executes it against the configured store and hands the result
//! back through `Server::handle_store_result`. This keeps every store (memory,
//! fs, Vault, ...) out of the core and lets tests replace it with a map.

use std::fmt;
use std::time::Duration;

use crate::crypto::SecretBytes;
use crate::name::KeyName;

/// Identifies one command so its result can be routed back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommandId(pub u64);

/// A key-store operation.
#[derive(Debug)]
pub enum Command {
    /// Store `value` under `name` iff no entry exists (never overwrite).
    Create {
        /// The key name.
        name: KeyName,
        /// The encoded key (crypto.md §5), secret.
        value: SecretBytes,
    },
    /// Read the value stored under `name`.
    Get {
        /// The key name.
        name: KeyName,
    },
    /// Remove `name`.
    Delete {
        /// The key name.
        name: KeyName,
    },
    /// All key names (the core filters and sorts).
    List,
    /// Is the store reachable, and how fast does it answer?
    Status,
}

/// A successful result.
#[derive(Debug)]
pub enum StoreReply {
    /// Create succeeded.
    Created,
    /// Get succeeded.
    Value(SecretBytes),
    /// Delete succeeded.
    Deleted,
    /// List succeeded.
    Names(Vec<String>),
    /// The store answered a status check.
    Status {
        /// How long the check took.
        latency: Duration,
    },
}

/// A failed result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// Create: the name is taken.
    Exists,
    /// Get/Delete: no such key.
    NotFound,
    /// The store cannot be reached (network, directory gone); switches the
    /// key cache to offline mode.
    Unreachable(String),
    /// Any other failure.
    Failed(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exists => f.write_str("key already exists"),
            Self::NotFound => f.write_str("key does not exist"),
            Self::Unreachable(m) => write!(f, "key store is unreachable: {m}"),
            Self::Failed(m) => write!(f, "key store failed: {m}"),
        }
    }
}

impl std::error::Error for StoreError {}
