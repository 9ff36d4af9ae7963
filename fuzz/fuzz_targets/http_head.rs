//! Any bytes as an HTTP request head: parsed or refused, never a panic.
//! The body is `kes_fuzz::http_head` (fuzz/src/bodies.rs), which the workspace's
//! corpus replay test runs too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kes_fuzz::http_head(data));
