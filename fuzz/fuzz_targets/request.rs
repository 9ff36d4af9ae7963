//! Any request bytes against the full core: never panic, and every response
//! that claims JSON is valid JSON.
#![no_main]

use std::time::Instant;

use http::Method;
use kes_core::config::{AdminSetting, Config};
use kes_core::testing::Harness;
use kes_core::{Caller, Identity, Now, Request, UnixTime};
use libfuzzer_sys::fuzz_target;

const METHODS: [Method; 5] = [Method::GET, Method::PUT, Method::POST, Method::DELETE, Method::HEAD];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let (target, body) = text.split_once('\n').unwrap_or((&text, ""));
    let admin = Identity::from_spki_der(b"admin");
    let mut config = Config::empty();
    config.admin = AdminSetting::Identity(admin);
    let now = Now { instant: Instant::now(), unix: UnixTime::from_parts(1_700_000_000, 0) };
    let mut h = Harness::new(config, now, u64::from(sel));
    let caller = if sel & 0x80 == 0 { Caller::Identified(admin) } else { Caller::Identified(Identity::from_spki_der(b"x")) };
    let _ = h.request(caller, Request::new(Method::POST, "/v1/key/create/k"));
    let target = if target.starts_with('/') { target.to_owned() } else { format!("/{target}") };
    let req = Request::new(METHODS[usize::from(sel) % METHODS.len()].clone(), &target).with_body(body.as_bytes());
    let r = h.request(caller, req);
    if r.header("Content-Type").is_some_and(|c| c.starts_with("application/json")) && !r.body.is_empty() {
        assert!(serde_json::from_slice::<serde_json::Value>(&r.body).is_ok(), "invalid JSON from {target}");
    }
});
