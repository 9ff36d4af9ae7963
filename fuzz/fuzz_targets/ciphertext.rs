//! Any bytes as a ciphertext, a stored key or a stored key ring: reject,
//! never panic.
#![no_main]

use kes_core::crypto::{ciphertext, keyfile, KeyRing, SecretBytes, SecretKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = SecretKey::new([1; 32], None, None, None, None);
    let _ = key.decrypt(data, b"");
    let _ = ciphertext::key_id(data);
    let _ = keyfile::decode(data);
    if let Ok(ring) = KeyRing::decode(data) {
        let _ = ring.decrypt(b"{\"id\":\"x\"}", b"");
        let _ = ring.sealing(Some(2));
        let _ = ring.retired_below(2).map(|r| r.purged());
    }
    let single = KeyRing::single(key, SecretBytes::new(Vec::new()));
    let _ = single.decrypt(data, b"");
});
