//! The bodies of the fuzz targets, one function each: cargo-fuzz runs them
//! (fuzz/fuzz_targets/*.rs) and an ordinary `cargo test` replays the kept
//! corpus through them on stable Rust (adapters/tests/fuzz_corpus.rs
//! includes this file), so an input that once crashed a target stays fixed.
//! Each function must return on any input; a panic is the finding.

use std::time::Instant;

use http::Method;
use kes_adapters::chunked::ChunkedDecoder;
use kes_adapters::https::HttpResponse;
use kes_adapters::store::{aws, azure, entrust, fortanix, gcp, keysecure, vault};
use kes_core::config::{AdminSetting, Config, KvVersion};
use kes_core::crypto::{ciphertext, keyfile, KeyRing, SecretBytes, SecretKey};
use kes_core::testing::Harness;
use kes_core::{Caller, Identity, Now, Request, UnixTime};

const METHODS: [Method; 5] = [Method::GET, Method::PUT, Method::POST, Method::DELETE, Method::HEAD];

/// A target's body: any input, never a panic.
pub type Body = fn(&[u8]);

/// Every target by name, for replaying a corpus directory per target.
pub const TARGETS: [(&str, Body); 8] = [
    ("aws_response", aws_response),
    ("chunked", chunked),
    ("ciphertext", ciphertext),
    ("cloud_response", cloud_response),
    ("config", config),
    ("http_head", http_head),
    ("request", request),
    ("vault_response", vault_response),
];

/// Any status and body as a Secrets Manager answer: every parser returns a
/// result, never panics.
pub fn aws_response(data: &[u8]) {
    let Some((&s, body)) = data.split_first() else { return };
    let status = [200, 400, 403, 404, 429, 500, 503][usize::from(s) % 7];
    let r = HttpResponse { status, location: None, body: zeroize::Zeroizing::new(body.to_vec()) };
    let _ = aws::proto::create_result(&r);
    let _ = aws::proto::get_result(&r);
    let _ = aws::proto::delete_result(&r);
    let _ = aws::proto::list_result(&r);
    let _ = aws::proto::transient(&r);
}

/// Any bytes as a chunked request body, fed in two pieces: decoded or
/// refused, never a panic, never more than the limit, never past the input.
pub fn chunked(data: &[u8]) {
    let Some((&split, data)) = data.split_first() else { return };
    let split = usize::from(split).min(data.len());
    let limit = 4096;
    let mut d = ChunkedDecoder::new();
    let mut out = Vec::new();
    let mut buf = data[..split].to_vec();
    let Ok(n) = d.decode(&buf, &mut out, limit) else { return };
    assert!(n <= buf.len());
    buf.drain(..n);
    buf.extend_from_slice(&data[split..]);
    if let Ok(n) = d.decode(&buf, &mut out, limit) {
        assert!(n <= buf.len());
        if d.over_limit() {
            // A refused body is skipped to its end without keeping it.
            if let Ok(m) = d.skip(&buf[n..]) {
                assert!(m <= buf.len() - n);
            }
        }
    }
    assert!(out.len() <= limit);
}

/// Any bytes as a ciphertext, a stored key or a stored key ring: reject,
/// never panic.
pub fn ciphertext(data: &[u8]) {
    let key = SecretKey::new([1; 32], None, None, None, None);
    let _ = key.decrypt(data, b"");
    let _ = ciphertext::key_id(data);
    let _ = keyfile::decode(data);
    if let Ok(ring) = KeyRing::decode(data) {
        let _ = ring.decrypt(b"{\"id\":\"x\"}", b"");
        let _ = ring.sealing(Some(2));
        let _ = ring.retired_below(2).map(|r| r.purged());
    }
    let single = KeyRing::single(key, SecretBytes::new(Vec::new()));
    let _ = single.decrypt(data, b"");
}

/// Any status and body as an answer of the GCP, Azure, CipherTrust,
/// Fortanix or Entrust APIs (or their token endpoints): every parser
/// returns a result, never panics.
pub fn cloud_response(data: &[u8]) {
    let Some((&s, body)) = data.split_first() else { return };
    let status = [200, 201, 204, 400, 401, 404, 409, 429, 500, 503][usize::from(s) % 10];
    let r = HttpResponse { status, location: None, body: zeroize::Zeroizing::new(body.to_vec()) };
    let _ = gcp::proto::token_result(&r);
    let _ = gcp::proto::access_result(&r);
    let _ = gcp::proto::list_result(&r);
    let _ = gcp::proto::error(&r);
    let _ = azure::proto::token_result(&r);
    let _ = azure::proto::versions_result(&r).map(|v| azure::proto::oldest(&v).map(|o| o.created));
    let _ = azure::proto::secret_result(&r, i64::from(s) << 24);
    let _ = azure::proto::list_result(&r);
    let _ = (azure::proto::error_code(&r), azure::proto::error_message(&r));
    let _ = keysecure::login_result(&r);
    let _ = keysecure::export_result(&r);
    let _ = keysecure::list_result(&r);
    let _ = keysecure::failure("x", &r);
    let _ = fortanix::session_result(&r);
    let _ = fortanix::export_result(&r);
    let _ = fortanix::kid(&r);
    let _ = fortanix::list_result(&r);
    let _ = fortanix::failure("x", &r);
    let _ = entrust::token_result(&r, i64::from(s));
    let _ = entrust::checkout_result(&r);
    let _ = entrust::list_result(&r);
    let _ = entrust::failure("x", &r);
}

/// Any text as a config file: an error with a message, never a panic.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text, &|name| (name == "SET").then(|| "value".to_owned()));
    }
}

/// Any bytes as an HTTP request head: parsed or refused, never a panic.
pub fn http_head(data: &[u8]) {
    let _ = kes_adapters::http::parse_head(data, Some("X-Tls-Client-Cert"));
}

/// Any request bytes against the full core: never panic, and every response
/// that claims JSON is valid JSON.
pub fn request(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let (target, body) = text.split_once('\n').unwrap_or((&text, ""));
    let admin = Identity::from_spki_der(b"admin");
    let mut config = Config::empty();
    config.admin = AdminSetting::Identity(admin);
    let now = Now { instant: Instant::now(), unix: UnixTime::from_parts(1_700_000_000, 0) };
    let mut h = Harness::new(config, now, u64::from(sel));
    let caller = if sel & 0x80 == 0 {
        Caller::Identified(admin)
    } else {
        Caller::Identified(Identity::from_spki_der(b"x"))
    };
    let _ = h.request(caller, Request::new(Method::POST, "/v1/key/create/k"));
    let target = if target.starts_with('/') { target.to_owned() } else { format!("/{target}") };
    let req = Request::new(METHODS[usize::from(sel) % METHODS.len()].clone(), &target)
        .with_body(body.as_bytes());
    let r = h.request(caller, req);
    if r.header("Content-Type").is_some_and(|c| c.starts_with("application/json"))
        && !r.body.is_empty()
    {
        assert!(
            serde_json::from_slice::<serde_json::Value>(&r.body).is_ok(),
            "invalid JSON from {target}"
        );
    }
}

/// Any status and body as a Vault answer: every parser returns a result,
/// never panics.
pub fn vault_response(data: &[u8]) {
    let Some((&s, body)) = data.split_first() else { return };
    let status = [200, 204, 299, 307, 400, 403, 404, 429, 500, 503][usize::from(s) % 10];
    let r = HttpResponse { status, location: None, body: zeroize::Zeroizing::new(body.to_vec()) };
    let _ = vault::proto::create_result(&r);
    let _ = vault::proto::get_result(KvVersion::V1, "k", &r);
    let _ = vault::proto::get_result(KvVersion::V2, "k", &r);
    let _ = vault::proto::delete_result(&r);
    let _ = vault::proto::list_result(&r);
    let _ = vault::proto::health_result(&r);
    let _ = vault::proto::token_result(&r);
}
