//! Any text as a config file: an error with a message, never a panic.
#![no_main]

use kes_core::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text, &|name| (name == "SET").then(|| "value".to_owned()));
    }
});
