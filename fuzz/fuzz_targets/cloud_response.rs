//! Any status and body as an answer of the GCP, Azure, CipherTrust,
//! Fortanix or Entrust APIs (or their token endpoints): every parser
//! returns a result, never panics.
//! The body is `kes_fuzz::cloud_response` (fuzz/src/bodies.rs), which the workspace's
//! corpus replay test runs too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kes_fuzz::cloud_response(data));
