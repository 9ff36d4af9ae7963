//! Any bytes as a ciphertext or a stored key: reject, never panic.
#![no_main]

use kes_core::crypto::{keyfile, SecretKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = SecretKey::new([1; 32], None, None, None, None);
    let _ = key.decrypt(data, b"");
    let _ = keyfile::decode(data);
});
