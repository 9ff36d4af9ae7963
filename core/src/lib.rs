//! The IO-free core of a KES-compatible key server.
//!
//! Everything here is a pure function of its inputs: the adapter passes in the
//! parsed request, the caller's identity, the time ([`Now`]) and a CSPRNG, and
//! gets back responses, key-store commands and events. Nothing in this crate
//! opens a socket or a file, reads a clock or the environment, or spawns.
//!
//! # Driving the [`Server`]
//!
//! 1. Build it with [`Server::new`]; drain its commands (declared keys) and
//!    feed results back until [`Server::starting`] is false; refuse to serve
//!    if [`Server::startup_failures`] is non-empty.
//! 2. Wait for the next input: a request, a store result, or the instant
//!    returned by [`Server::poll_timeout`].
//! 3. Apply exactly one input: [`Server::handle_request`],
//!    [`Server::handle_store_result`] or [`Server::handle_timeout`].
//! 4. Drain [`Server::poll_command`] (execute each against the key store),
//!    [`Server::poll_response`] (write each to its connection) and
//!    [`Server::poll_event`] (log or stream each) until all return `None`.
//! 5. Re-arm the timer from [`Server::poll_timeout`] and go to 2.
//!
//! A request whose key is cached is answered within its `handle_request`
//! call; a miss parks it and emits one `Get` per key name however many
//! requests wait for it (single flight).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod cache;
pub mod config;
pub mod crypto;
mod der;
pub mod event;
pub mod identity;
pub mod keystore;
pub mod limits;
pub mod metrics;
pub mod name;
pub mod policy;
pub mod server;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod time;

pub use api::{Request, Response};
pub use config::Config;
pub use event::Event;
pub use identity::{Caller, Identity, IdentityError};
pub use keystore::{Command, CommandId, StoreError, StoreReply};
pub use name::KeyName;
pub use server::{RequestId, RouteLimits, RouteTable, Server};
pub use time::{Now, UnixTime};
