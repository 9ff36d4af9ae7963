//! Runtime adapters for the KES core: TLS sockets (rustls), HTTP/1.1 framing
//! (httparse), the clock, key stores and logs, on smol.
//!
//! The adapters own all IO and none of the policy: every decision is the
//! core's. One task owns the core's [`kes_core::Server`]; connections talk
//! to it over channels ([`driver`]).

#![forbid(unsafe_code)]

pub mod chunked;
pub mod clock;
pub mod driver;
pub mod edge;
pub mod handshakes;
pub mod heap;
pub mod http;
pub mod https;
pub mod log;
pub mod logwriter;
pub mod proxy;
pub mod rng;
pub mod serve;
pub mod store;
pub mod sysinfo;
pub mod tls;
mod tls_pem;

pub use serve::{start, RunningServer, ServerOptions};
