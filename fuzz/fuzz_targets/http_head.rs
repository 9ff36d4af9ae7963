//! Any bytes as an HTTP request head: parsed or refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kes_adapters::http::parse_head(data, Some("X-Tls-Client-Cert"));
});
