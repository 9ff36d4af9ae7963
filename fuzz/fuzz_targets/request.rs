//! Any request bytes against the full core: never panic, and every response
//! that claims JSON is valid JSON.
//! The body is `kes_fuzz::request` (fuzz/src/bodies.rs), which the workspace's
//! corpus replay test runs too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kes_fuzz::request(data));
