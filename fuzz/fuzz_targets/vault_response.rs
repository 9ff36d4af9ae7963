//! Any status and body as a Vault answer: every parser returns a result,
//! never panics.
//! The body is `kes_fuzz::vault_response` (fuzz/src/bodies.rs), which the workspace's
//! corpus replay test runs too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kes_fuzz::vault_response(data));
