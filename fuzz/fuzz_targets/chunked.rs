//! Any bytes as a chunked request body, fed in two pieces: decoded or
//! refused, never a panic, never more than the limit, never past the input.
//! The body is `kes_fuzz::chunked` (fuzz/src/bodies.rs), which the workspace's
//! corpus replay test runs too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kes_fuzz::chunked(data));
