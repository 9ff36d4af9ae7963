//! Any text as a config file: an error with a message, never a panic.
//! The body is `kes_fuzz::config` (fuzz/src/bodies.rs), which the workspace's
//! corpus replay test runs too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kes_fuzz::config(data));
