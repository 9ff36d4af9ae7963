//! What every key store is: a [`KeyStore`] executes the core's
//! [`Command`]s; a remote one implements [`Remote`] and becomes a
//! [`KeyStore`] through [`RemoteStore`]. Every store module imports this,
//! and nothing here imports a store.

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
