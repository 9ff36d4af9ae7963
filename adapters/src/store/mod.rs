//! Key stores: each executes the core's [`Command`]s.

mod fs;
mod mem;

pub use fs::FsStore;
pub use mem::MemStore;

use kes_core::{Command, StoreError, StoreReply};

/// A key store. `execute` may block (the fs store does); the driver runs
/// blocking stores on smol's blocking pool.
pub trait KeyStore: Send + Sync + 'static {
    /// Executes one command.
    fn execute(&self, cmd: Command) -> Result<StoreReply, StoreError>;

    /// Whether `execute` blocks on IO (then it runs off the driver task).
    fn blocks(&self) -> bool;
}
