//! KES cryptography, byte-exact with the original (see `shared/spec/crypto.md`).
//!
//! Layers, each using only the ones above it in this list:
//! - [`secret`]: bytes that zeroize and never print.
//! - [`aead`]: the two sealing constructions (AES-256-GCM keyed by
//!   HMAC-SHA-256, ChaCha20-Poly1305 keyed by HChaCha20).
//! - [`ciphertext`]: the three ciphertext formats (v0.19.0 JSON, v0.19.1-v0.23
//!   MessagePack, v0.24 raw).
//! - [`key`]: master keys, sealing and opening in those formats.
//! - [`keyfile`]: the stored key encodings of every KES generation.
//! - [`ring`]: key versions (an extension): a rotated key's versions.

pub mod aead;
pub mod ciphertext;
pub mod key;
pub mod keyfile;
pub mod ring;
pub mod sealed;
pub mod secret;

pub use aead::{Algorithm, NotAuthentic};
pub use ciphertext::CiphertextFormat;
pub use key::SecretKey;
pub use ring::{KeyRing, RingError};
pub use secret::SecretBytes;
