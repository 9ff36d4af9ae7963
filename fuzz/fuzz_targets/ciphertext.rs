//! Any bytes as a ciphertext, a stored key or a stored key ring: reject,
//! never panic.
//! The body is `kes_fuzz::ciphertext` (fuzz/src/bodies.rs), which the workspace's
//! corpus replay test runs too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kes_fuzz::ciphertext(data));
