#![allow(clippy::disallowed_methods)] // tests read spec files and the real clock to seed a simulated one
//! The core driven as a state machine: a model test against a plain map,
//! the spec vectors, cache behaviour under a simulated clock, and API shapes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::{Method, StatusCode};
use kes_core::config::{AdminSetting, CacheConfig, Config};
use kes_core::crypto::SecretBytes;
use kes_core::testing::Harness;
use kes_core::{Caller, Identity, Now, Request, Response, UnixTime};
use proptest::prelude::*;
use serde_json::{json, Value};

fn admin() -> Identity {
    Identity::from_spki_der(b"admin")
}

fn start(mut config: Config) -> Harness {
    config.admin = AdminSetting::Identity(admin());
    let now = Now { instant: Instant::now(), unix: UnixTime::from_parts(1_700_000_000, 0) };
    Harness::new(config, now, 7)
}

fn call(h: &mut Harness, method: Method, path: &str, body: Value) -> Response {
    let body = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
    h.request(Caller::Identified(admin()), Request::new(method, path).with_body(body))
}

fn json_of(r: &Response) -> Value {
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

fn b64(b: &[u8]) -> String {
    STANDARD.encode(b)
}

#[derive(Clone, Debug)]
enum Op {
    Create(u8),
    Import(u8, [u8; 32]),
    Delete(u8),
    List,
    Generate(u8, Option<u8>),
    Decrypt(usize, Option<u8>),
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..4;
    let ctx = proptest::option::of(0u8..3);
    prop_oneof![
        key.clone().prop_map(Op::Create),
        (key.clone(), any::<[u8; 32]>()).prop_map(|(k, b)| Op::Import(k, b)),
        key.clone().prop_map(Op::Delete),
        Just(Op::List),
        (key, ctx.clone()).prop_map(|(k, c)| Op::Generate(k, c)),
        (any::<usize>(), ctx).prop_map(|(i, c)| Op::Decrypt(i, c)),
        (0u16..400).prop_map(Op::Advance),
    ]
}

/// A generated data key: (key name, key incarnation, plaintext, ciphertext, context).
type Dek = (String, u32, Vec<u8>, String, Option<Vec<u8>>);

fn ctx_bytes(c: Option<u8>) -> Option<Vec<u8>> {
    c.map(|c| vec![b'c', c])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random request sequences against a BTreeMap model: same statuses, and
    /// every data key decrypts exactly while its key (incarnation) lives.
    #[test]
    fn model(ops in proptest::collection::vec(op(), 1..40), raw in any::<bool>()) {
        let mut config = Config::empty();
        config.cache = CacheConfig { any: Duration::from_secs(60), unused: Duration::from_secs(20), offline: Duration::ZERO, stale_wait: Duration::ZERO };
        if raw {
            config.compat.ciphertext = kes_core::crypto::CiphertextFormat::Raw;
        }
        let mut h = start(config);
        // name -> incarnation
        let mut model: BTreeMap<String, u32> = BTreeMap::new();
        let mut incarnations = 0u32;
        // (name, incarnation, plaintext, ciphertext, context)
        let mut deks: Vec<Dek> = Vec::new();
        for op in ops {
            match op {
                Op::Create(k) | Op::Import(k, _) => {
                    let name = format!("key-{k}");
                    let r = match &op {
                        Op::Import(_, bytes) => call(&mut h, Method::PUT, &format!("/v1/key/import/{name}"), json!({"key": b64(bytes), "cipher": "AES256"})),
                        _ => call(&mut h, Method::POST, &format!("/v1/key/create/{name}"), Value::Null),
                    };
                    match model.entry(name) {
                        std::collections::btree_map::Entry::Occupied(_) => {
                            prop_assert_eq!(r.status, StatusCode::BAD_REQUEST);
                            prop_assert_eq!(&json_of(&r)["message"], &json!("key already exists"));
                        }
                        std::collections::btree_map::Entry::Vacant(e) => {
                            prop_assert_eq!(r.status, StatusCode::OK);
                            incarnations += 1;
                            e.insert(incarnations);
                        }
                    }
                }
                Op::Delete(k) => {
                    let name = format!("key-{k}");
                    let r = call(&mut h, Method::DELETE, &format!("/v1/key/delete/{name}"), Value::Null);
                    let want = if model.remove(&name).is_some() { StatusCode::OK } else { StatusCode::NOT_FOUND };
                    prop_assert_eq!(r.status, want);
                }
                Op::List => {
                    let r = call(&mut h, Method::GET, "/v1/key/list/", Value::Null);
                    prop_assert_eq!(r.status, StatusCode::OK);
                    let names: Vec<String> = String::from_utf8(r.body.clone()).unwrap().lines()
                        .map(|l| serde_json::from_str::<Value>(l).unwrap()["name"].as_str().unwrap().to_owned())
                        .collect();
                    prop_assert_eq!(names, model.keys().cloned().collect::<Vec<_>>());
                }
                Op::Generate(k, c) => {
                    let name = format!("key-{k}");
                    let ctx = ctx_bytes(c);
                    let body = match &ctx { Some(c) => json!({"context": b64(c)}), None => json!({}) };
                    let r = call(&mut h, Method::PUT, &format!("/v1/key/generate/{name}"), body);
                    match model.get(&name) {
                        Some(inc) => {
                            prop_assert_eq!(r.status, StatusCode::OK);
                            let v = json_of(&r);
                            let pt = STANDARD.decode(v["plaintext"].as_str().unwrap()).unwrap();
                            prop_assert_eq!(pt.len(), 32);
                            deks.push((name, *inc, pt, v["ciphertext"].as_str().unwrap().to_owned(), ctx));
                        }
                        None => prop_assert_eq!(r.status, StatusCode::NOT_FOUND),
                    }
                }
                Op::Decrypt(i, c) => {
                    if deks.is_empty() { continue; }
                    let (name, inc, pt, ct, ctx) = deks[i % deks.len()].clone();
                    let use_ctx = ctx_bytes(c);
                    let mut body = json!({"ciphertext": ct});
                    if let Some(c) = &use_ctx { body["context"] = b64(c).into(); }
                    let r = call(&mut h, Method::PUT, &format!("/v1/key/decrypt/{name}"), body);
                    match model.get(&name) {
                        None => prop_assert_eq!(r.status, StatusCode::NOT_FOUND),
                        Some(cur) if *cur == inc && use_ctx.clone().unwrap_or_default() == ctx.clone().unwrap_or_default() => {
                            prop_assert_eq!(r.status, StatusCode::OK);
                            let got = STANDARD.decode(json_of(&r)["plaintext"].as_str().unwrap()).unwrap();
                            prop_assert_eq!(got, pt);
                        }
                        Some(_) => {
                            prop_assert_eq!(r.status, StatusCode::BAD_REQUEST);
                            prop_assert_eq!(&json_of(&r)["message"], &json!("decryption failed: ciphertext is not authentic"));
                        }
                    }
                }
                Op::Advance(secs) => h.advance(Duration::from_secs(u64::from(secs))),
            }
        }
    }
}

/// Loads a vector key directory into a harness's store.
fn load_vectors(h: &mut Harness, dir: &str) -> Value {
    let base = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/spec/vectors");
    for entry in std::fs::read_dir(format!("{base}/{dir}")).expect("vector key dir") {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        h.store.keys.insert(name, SecretBytes::new(std::fs::read(entry.path()).unwrap()));
    }
    let file = dir.replace("keys-", "vectors-");
    serde_json::from_str(&std::fs::read_to_string(format!("{base}/{file}.json")).unwrap()).unwrap()
}

fn check_vectors(dir: &str) {
    for raw in [false, true] {
        let mut config = Config::empty();
        if raw {
            config.compat.ciphertext = kes_core::crypto::CiphertextFormat::Raw;
        }
        let mut h = start(config);
        let v = load_vectors(&mut h, dir);
        let mut checked = 0;
        for d in v["dek"].as_array().unwrap().iter().chain(v["encrypt"].as_array().unwrap()) {
            let key = d["key"].as_str().unwrap();
            let mut body = json!({"ciphertext": d["ciphertext"]});
            if !d["context"].is_null() {
                body["context"] = d["context"].clone();
            }
            let r = call(&mut h, Method::PUT, &format!("/v1/key/decrypt/{key}"), body.clone());
            assert_eq!(
                r.status,
                StatusCode::OK,
                "{dir} {key}: {}",
                String::from_utf8_lossy(&r.body)
            );
            assert_eq!(json_of(&r)["plaintext"], d["plaintext"], "{dir} {key}");
            body["context"] = b64(b"some other context").into();
            let r = call(&mut h, Method::PUT, &format!("/v1/key/decrypt/{key}"), body);
            assert_eq!(r.status, StatusCode::BAD_REQUEST);
            assert_eq!(json_of(&r)["message"], "decryption failed: ciphertext is not authentic");
            checked += 1;
        }
        for m in v["hmac"].as_array().into_iter().flatten() {
            let key = m["key"].as_str().unwrap();
            let r = call(
                &mut h,
                Method::PUT,
                &format!("/v1/key/hmac/{key}"),
                json!({"message": m["message"]}),
            );
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(json_of(&r)["hmac"], m["hmac"]);
            checked += 1;
        }
        assert!(checked >= 10, "{dir}: only {checked} vectors");
        // New ciphertexts under the original's keys round-trip too.
        for key in ["alpha", "beta-key", "Gamma_3"] {
            let r = call(
                &mut h,
                Method::PUT,
                &format!("/v1/key/encrypt/{key}"),
                json!({"plaintext": b64(b"x"), "context": b64(b"c")}),
            );
            assert_eq!(r.status, StatusCode::OK);
            let r = call(
                &mut h,
                Method::PUT,
                &format!("/v1/key/decrypt/{key}"),
                json!({"ciphertext": json_of(&r)["ciphertext"], "context": b64(b"c")}),
            );
            assert_eq!(json_of(&r)["plaintext"], b64(b"x"));
        }
    }
}

#[test]
fn vectors_v019() {
    check_vectors("keys-v0.19");
}

#[test]
fn vectors_v024() {
    check_vectors("keys-v0.24");
}

#[test]
fn legacy_keys_have_no_hmac() {
    let mut h = start(Config::empty());
    load_vectors(&mut h, "keys-v0.19");
    let r = call(&mut h, Method::PUT, "/v1/key/hmac/alpha", json!({"message": ""}));
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(json_of(&r)["message"], "key does not support HMAC");
}

#[test]
fn offline_cache_serves_while_store_is_down() {
    let mut config = Config::empty();
    config.cache = CacheConfig {
        any: Duration::from_secs(30),
        unused: Duration::from_secs(20),
        offline: Duration::from_secs(300),
        stale_wait: Duration::ZERO,
    };
    let mut h = start(config);
    assert_eq!(call(&mut h, Method::POST, "/v1/key/create/k", Value::Null).status, StatusCode::OK);
    assert_eq!(call(&mut h, Method::POST, "/v1/key/generate/k", json!({})).status, StatusCode::OK);
    h.store.unreachable = true;
    // The 10 s probe notices the outage; keys keep serving past `any`.
    for _ in 0..24 {
        h.advance(Duration::from_secs(5));
        let r = call(&mut h, Method::POST, "/v1/key/generate/k", json!({}));
        assert_eq!(r.status, StatusCode::OK, "at {:?}", h.now);
    }
    // Uncached keys cannot be fetched.
    h.store.keys.insert("other".into(), SecretBytes::new(b"x".to_vec()));
    assert_eq!(
        call(&mut h, Method::POST, "/v1/key/generate/other", json!({})).status,
        StatusCode::BAD_GATEWAY
    );
    // `offline` after the outage was noticed (at the 10 s probe), the cache is dropped.
    h.advance(Duration::from_secs(190));
    assert_eq!(
        call(&mut h, Method::POST, "/v1/key/generate/k", json!({})).status,
        StatusCode::BAD_GATEWAY
    );
    // Recovery: served again from the store.
    h.store.unreachable = false;
    assert_eq!(call(&mut h, Method::POST, "/v1/key/generate/k", json!({})).status, StatusCode::OK);
}

#[test]
fn without_offline_cache_keys_expire_during_outage() {
    let mut config = Config::empty();
    config.cache = CacheConfig {
        any: Duration::from_secs(30),
        unused: Duration::ZERO,
        offline: Duration::ZERO,
        stale_wait: Duration::ZERO,
    };
    let mut h = start(config);
    call(&mut h, Method::POST, "/v1/key/create/k", Value::Null);
    assert_eq!(call(&mut h, Method::POST, "/v1/key/generate/k", json!({})).status, StatusCode::OK);
    h.store.unreachable = true;
    assert_eq!(call(&mut h, Method::POST, "/v1/key/generate/k", json!({})).status, StatusCode::OK);
    h.advance(Duration::from_secs(31));
    assert_eq!(
        call(&mut h, Method::POST, "/v1/key/generate/k", json!({})).status,
        StatusCode::BAD_GATEWAY
    );
}

#[test]
fn cache_hit_does_not_touch_the_store() {
    let mut h = start(Config::empty());
    call(&mut h, Method::POST, "/v1/key/create/k", Value::Null);
    call(&mut h, Method::POST, "/v1/key/generate/k", json!({}));
    let before = h.store.executed;
    for _ in 0..10 {
        call(&mut h, Method::POST, "/v1/key/generate/k", json!({}));
    }
    assert_eq!(h.store.executed, before);
}

#[test]
fn api_shapes_and_errors() {
    let mut h = start(Config::empty());
    let r = call(&mut h, Method::GET, "/v1/key/create/k", Value::Null);
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("Accept"), Some("PUT"));
    let r = call(&mut h, Method::GET, "/v1/key/list", Value::Null);
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.header("Location"), Some("/v1/key/list/"));
    let r = call(&mut h, Method::GET, "/v1/status?enclave=x", Value::Null);
    assert_eq!(json_of(&r)["message"], "enclave does not exist");
    for bad in ["..%2Fx", "a%2Fb", &"k".repeat(300), "a.b"] {
        let r = call(&mut h, Method::POST, &format!("/v1/key/create/{bad}"), Value::Null);
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    assert!(h.store.keys.is_empty());
    call(&mut h, Method::POST, "/v1/key/create/k", Value::Null);
    let r = h.request(
        Caller::Identified(admin()),
        Request::new(Method::PUT, "/v1/key/generate/k").with_body(&b"{not json"[..]),
    );
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(json_of(&r)["message"], "invalid request body");
    let r = call(&mut h, Method::GET, "/v1/key/describe/k", Value::Null);
    assert_eq!(json_of(&r)["algorithm"], "AES256");
    assert_eq!(json_of(&r)["created_by"], admin().to_string());
    let r = call(
        &mut h,
        Method::PUT,
        "/v1/key/import/i",
        json!({"key": b64(&[1; 16]), "cipher": "AES256"}),
    );
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);
    // No body at all is a decode failure (400), not a key of the wrong size.
    for empty in [&b""[..], b"   ", b"\r\n\t "] {
        let r = h.request(
            Caller::Identified(admin()),
            Request::new(Method::PUT, "/v1/key/import/i").with_body(empty),
        );
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{empty:?}");
        assert_eq!(json_of(&r)["message"], "invalid import key request body");
    }
    let r = call(&mut h, Method::PUT, "/v1/key/import/i", json!({"bytes": b64(&[1; 32])}));
    assert_eq!(r.status, StatusCode::OK, "v0.19 import body is accepted");
}

#[test]
fn seed_era_policy_apis() {
    let mut h = start(Config::empty());
    let user = Identity::from_spki_der(b"user");
    let as_user = |h: &mut Harness, m: Method, p: &str| {
        h.request(Caller::Identified(user), Request::new(m, p))
    };
    assert_eq!(as_user(&mut h, Method::GET, "/v1/status").status, StatusCode::FORBIDDEN);
    let r = call(
        &mut h,
        Method::POST,
        "/v1/policy/write/p",
        json!({"Allow": ["/v1/key/create/app-*"], "Deny": []}),
    );
    assert_eq!(r.status, StatusCode::OK);
    let r =
        call(&mut h, Method::POST, "/v1/policy/assign/p", json!({"identity": user.to_string()}));
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(as_user(&mut h, Method::POST, "/v1/key/create/app-1").status, StatusCode::OK);
    assert_eq!(as_user(&mut h, Method::POST, "/v1/key/create/other").status, StatusCode::FORBIDDEN);
    let r = call(&mut h, Method::GET, "/v1/policy/read/p", Value::Null);
    assert_eq!(json_of(&r)["allow"], json!({"/v1/key/create/app-*": {}}));
    let r = as_user(&mut h, Method::GET, "/v1/identity/self/describe");
    assert_eq!(json_of(&r)["policy"], "p");
    call(&mut h, Method::DELETE, "/v1/policy/delete/p", Value::Null);
    let r = as_user(&mut h, Method::POST, "/v1/key/create/app-2");
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(json_of(&r)["message"], "policy does not exist");
    call(&mut h, Method::DELETE, "/v1/identity/forget/".to_owned().as_str(), Value::Null);
    let r = call(&mut h, Method::DELETE, &format!("/v1/identity/delete/{user}"), Value::Null);
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(as_user(&mut h, Method::POST, "/v1/key/create/app-2").status, StatusCode::FORBIDDEN);
}

#[test]
fn audit_events_never_carry_secrets() {
    let mut h = start(Config::empty());
    call(&mut h, Method::POST, "/v1/key/create/k", Value::Null);
    let r = call(&mut h, Method::POST, "/v1/key/generate/k", json!({"context": b64(b"ctx")}));
    let v = json_of(&r);
    let pt = v["plaintext"].as_str().unwrap().to_owned();
    let key_file = String::from_utf8(h.store.keys["k"].expose().to_vec()).unwrap();
    let lines: Vec<String> = h
        .events
        .iter()
        .map(|e| match e {
            kes_core::Event::Audit(a) => a.to_json(),
            kes_core::Event::Error(e) => e.to_json(),
        })
        .collect();
    assert!(lines.len() >= 2);
    let pt_hex: String = STANDARD.decode(&pt).unwrap().iter().map(|b| format!("{b:02x}")).collect();
    for l in &lines {
        assert!(!l.contains(&pt) && !l.contains(&pt_hex) && !l.contains(&key_file), "{l}");
    }
}

/// The audit duration counts from when the adapter began receiving the
/// request, for answers the core gives at once (403s, generate, metrics) as
/// well as for those parked on the store.
#[test]
fn audit_time_counts_from_the_request_start() {
    let mut h = start(Config::empty());
    call(&mut h, Method::POST, "/v1/key/create/k", Value::Null);
    let stranger = Identity::from_spki_der(b"stranger");
    let cases = [
        (Caller::Identified(stranger), Method::POST, "/v1/key/create/x", 403),
        (Caller::Identified(admin()), Method::POST, "/v1/key/generate/k", 200),
        (Caller::Identified(admin()), Method::GET, "/v1/metrics", 200),
    ];
    for (caller, method, path, status) in cases {
        let mut req = Request::new(method, path);
        req.received = Some(h.now.instant - Duration::from_micros(1500));
        h.events.clear();
        assert_eq!(h.request(caller, req).status.as_u16(), status);
        let audit = h
            .events
            .iter()
            .find_map(|e| match e {
                kes_core::Event::Audit(a) if a.path == path => Some(a.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(audit.elapsed, Duration::from_micros(1500), "{path}");
        assert!(audit.to_json().ends_with(r#""time":1500000}}"#), "{}", audit.to_json());
    }
}

mod direct {
    //! The state machine without the harness: parked requests, single
    //! flight, timeouts and start-up failures.

    use super::*;
    use kes_core::testing::SeededRng;
    use kes_core::{Command, RequestId, Server, StoreError, StoreReply};

    fn server(keys: Vec<String>) -> (Server, Now, SeededRng) {
        let mut config = Config::empty();
        config.admin = AdminSetting::Identity(admin());
        config.keys = keys;
        let now = Now { instant: Instant::now(), unix: UnixTime::from_parts(1_700_000_000, 0) };
        let mut rng = SeededRng(1);
        (Server::new(config, now, &mut rng), now, rng)
    }

    fn gen(s: &mut Server, id: u64, now: Now, rng: &mut SeededRng) {
        let req = Request::new(Method::PUT, "/v1/key/generate/k").with_body(&b"{}"[..]);
        s.handle_request(RequestId(id), Caller::Identified(admin()), req, now, rng);
    }

    #[test]
    fn concurrent_misses_share_one_fetch_and_time_out_together() {
        let (mut s, now, mut rng) = server(vec![]);
        for id in 1..=3 {
            gen(&mut s, id, now, &mut rng);
        }
        let cmds: Vec<_> = std::iter::from_fn(|| s.poll_command()).collect();
        assert_eq!(cmds.len(), 1, "one Get for three waiting requests");
        assert!(matches!(cmds[0].1, Command::Get { .. }));
        assert!(s.poll_response().is_none());
        let (deadline, who) = s.poll_timeout().unwrap();
        assert_eq!(who, "request");
        assert_eq!(deadline, now.instant + Duration::from_secs(15));
        s.handle_timeout(now.advanced(Duration::from_secs(15)), &mut rng);
        let resps: Vec<_> = std::iter::from_fn(|| s.poll_response()).collect();
        assert_eq!(resps.len(), 3);
        for (_, r) in &resps {
            assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        }
        // The late store result is absorbed without answering anyone twice.
        s.handle_store_result(cmds[0].0, Err(StoreError::NotFound), now, &mut rng);
        assert!(s.poll_response().is_none());
    }

    #[test]
    fn store_failures_map_to_gateway_errors_and_events() {
        let (mut s, now, mut rng) = server(vec![]);
        gen(&mut s, 1, now, &mut rng);
        let (cid, _) = s.poll_command().unwrap();
        s.handle_store_result(cid, Err(StoreError::Failed("disk on fire".into())), now, &mut rng);
        let (_, r) = s.poll_response().unwrap();
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);
        assert_eq!(json_of(&r)["message"], "failed to read key");
        let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
        assert!(events
            .iter()
            .any(|e| matches!(e, kes_core::Event::Error(e) if e.message.contains("disk on fire"))));
        // A malformed key file is a 500 and an error event, never a panic.
        gen(&mut s, 2, now, &mut rng);
        let (cid, _) = s.poll_command().unwrap();
        s.handle_store_result(
            cid,
            Ok(StoreReply::Value(SecretBytes::new(b"garbage".to_vec()))),
            now,
            &mut rng,
        );
        let (_, r) = s.poll_response().unwrap();
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    /// Stale-while-revalidate: with offline caching, a request for a key
    /// whose entry expired waits at most `stale_wait` for a slow store, then
    /// the expired copy answers; later requests get it at once; one re-read
    /// serves them all, and its answer replaces the copy.
    #[test]
    fn slow_store_answers_hot_keys_from_the_stale_copy() {
        let mut config = Config::empty();
        config.admin = AdminSetting::Identity(admin());
        config.cache = CacheConfig {
            any: Duration::from_secs(2),
            unused: Duration::ZERO,
            offline: Duration::from_secs(3600),
            stale_wait: Duration::from_millis(250),
        };
        let t0 = Now { instant: Instant::now(), unix: UnixTime::from_parts(1_700_000_000, 0) };
        let mut rng = SeededRng(1);
        let mut s = Server::new(config, t0, &mut rng);
        let key = kes_core::crypto::SecretKey::generate(&mut rng, t0.unix, None);
        let value = kes_core::crypto::keyfile::encode(&key).unwrap();
        let ms = |n| t0.advanced(Duration::from_millis(n));
        let answers = |s: &mut Server| -> Vec<(u64, u16)> {
            std::iter::from_fn(|| s.poll_response())
                .map(|(id, r)| (id.0, r.status.as_u16()))
                .collect()
        };
        gen(&mut s, 1, t0, &mut rng);
        let (cid, _) = s.poll_command().unwrap();
        s.handle_store_result(cid, Ok(StoreReply::Value(value.clone())), t0, &mut rng);
        assert_eq!(answers(&mut s), [(1, 200)]);
        // `any` empties the cache: the key is kept aside as a stale copy.
        s.handle_timeout(ms(2000), &mut rng);
        gen(&mut s, 2, ms(2100), &mut rng);
        gen(&mut s, 3, ms(2200), &mut rng);
        let cmds: Vec<_> = std::iter::from_fn(|| s.poll_command()).collect();
        assert_eq!(cmds.len(), 1, "one re-read for both");
        assert!(answers(&mut s).is_empty(), "a healthy store gets its chance first");
        assert_eq!(s.poll_timeout(), Some((ms(2350).instant, "stale")));
        s.handle_timeout(ms(2349), &mut rng);
        assert!(answers(&mut s).is_empty());
        s.handle_timeout(ms(2350), &mut rng);
        assert_eq!(answers(&mut s), [(2, 200), (3, 200)]);
        let slow = std::iter::from_fn(|| s.poll_event())
            .any(|e| matches!(e, kes_core::Event::Error(e) if e.message.contains("slow")));
        assert!(slow, "the operator hears of the slow store");
        // The re-read is still out: later requests do not queue behind it.
        gen(&mut s, 4, ms(3000), &mut rng);
        assert_eq!(answers(&mut s), [(4, 200)]);
        assert!(s.poll_command().is_none(), "still one re-read");
        // Its answer replaces the copy; cached again.
        s.handle_store_result(cmds[0].0, Ok(StoreReply::Value(value.clone())), ms(5000), &mut rng);
        gen(&mut s, 5, ms(5001), &mut rng);
        assert_eq!(answers(&mut s), [(5, 200)]);
        assert!(s.poll_command().is_none());
        // A store that answers within `stale_wait` answers the request
        // itself: here, that the key was deleted, which drops the copy.
        s.handle_timeout(ms(6000), &mut rng);
        gen(&mut s, 6, ms(6010), &mut rng);
        let (cid, _) = s.poll_command().unwrap();
        s.handle_store_result(cid, Err(StoreError::NotFound), ms(6050), &mut rng);
        let (cid, cmd) = s.poll_command().unwrap();
        assert!(matches!(cmd, Command::Get { .. }), "then its staged state");
        s.handle_store_result(cid, Err(StoreError::NotFound), ms(6060), &mut rng);
        let (cid, cmd) = s.poll_command().unwrap();
        assert!(matches!(cmd, Command::Get { .. }), "and the entry once more");
        s.handle_store_result(cid, Err(StoreError::NotFound), ms(6070), &mut rng);
        assert_eq!(answers(&mut s), [(6, 404)]);
        gen(&mut s, 7, ms(6100), &mut rng);
        assert!(s.poll_command().is_some(), "no copy left: the store is asked");
        s.handle_timeout(ms(6500), &mut rng);
        assert!(answers(&mut s).is_empty(), "and nothing stale answers");
    }

    #[test]
    fn declared_keys_are_created_and_failures_reported() {
        let (mut s, now, mut rng) = server(vec!["a".into(), "b".into(), "c".into()]);
        assert!(s.starting());
        let cmds: Vec<_> = std::iter::from_fn(|| s.poll_command()).collect();
        assert_eq!(cmds.len(), 3);
        s.handle_store_result(cmds[0].0, Ok(StoreReply::Created), now, &mut rng);
        s.handle_store_result(cmds[1].0, Err(StoreError::Exists), now, &mut rng);
        assert!(s.startup_failures().is_empty(), "existing keys are kept, not an error");
        s.handle_store_result(
            cmds[2].0,
            Err(StoreError::Failed("read-only".into())),
            now,
            &mut rng,
        );
        assert!(!s.starting());
        assert_eq!(s.startup_failures().len(), 1);
        assert!(s.startup_failures()[0].contains("'c'"));
    }
}

#[test]
fn status_and_ready_follow_the_store() {
    let mut h = start(Config::empty());
    let r = call(&mut h, Method::GET, "/v1/ready", Value::Null);
    assert_eq!(r.status, StatusCode::OK);
    let r = call(&mut h, Method::GET, "/v1/status", Value::Null);
    assert_eq!(json_of(&r)["keystore_latency"], 1);
    h.store.unreachable = true;
    let r = call(&mut h, Method::GET, "/v1/ready", Value::Null);
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(json_of(&r)["message"], "key store is not reachable");
    let r = call(&mut h, Method::GET, "/v1/status", Value::Null);
    assert_eq!(r.status, StatusCode::OK);
    let v = json_of(&r);
    assert_eq!(
        (v["keystore_unreachable"].clone(), v["keystore_unavailable"].clone()),
        (json!(true), json!(true))
    );
    assert!(v.get("keystore_latency").is_none());
}

/// With offline caching and keys in the cache, a node whose store is down
/// can still serve, so it stays ready; an empty cache cannot.
#[test]
fn ready_while_the_cache_can_serve_offline() {
    let mut config = Config::empty();
    config.cache.offline = Duration::from_secs(600);
    let mut h = start(config);
    h.store.unreachable = true;
    let r = call(&mut h, Method::GET, "/v1/ready", Value::Null);
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "nothing cached: cannot serve");
    h.store.unreachable = false;
    call(&mut h, Method::POST, "/v1/key/create/k", Value::Null);
    call(&mut h, Method::POST, "/v1/key/generate/k", Value::Null);
    h.store.unreachable = true;
    let r = call(&mut h, Method::GET, "/v1/ready", Value::Null);
    assert_eq!(r.status, StatusCode::OK, "cached keys serve while the store is down");
    let r = call(&mut h, Method::POST, "/v1/key/generate/k", Value::Null);
    assert_eq!(r.status, StatusCode::OK);
}

/// While the audit log cannot be written, requests that need an audit record
/// get 503 before any work; status and metrics answer and say why; ready is
/// 503 so load balancers go elsewhere; all recovers when it is written again.
#[test]
fn a_stalled_audit_log_refuses_requests_visibly() {
    let mut h = start(Config::empty());
    assert_eq!(call(&mut h, Method::POST, "/v1/key/create/k", Value::Null).status, StatusCode::OK);
    h.server.set_audit_stalled(true);
    let executed = h.store.executed;
    let r = call(&mut h, Method::POST, "/v1/key/generate/k", json!({}));
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json_of(&r)["message"], "audit log is not being written");
    let r = call(&mut h, Method::POST, "/v1/key/create/other", Value::Null);
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.store.executed, executed, "nothing reached the store");
    assert_eq!(
        call(&mut h, Method::GET, "/v1/ready", Value::Null).status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let r = call(&mut h, Method::GET, "/v1/status", Value::Null);
    assert_eq!((r.status, json_of(&r)["audit_log_stalled"].clone()), (StatusCode::OK, json!(true)));
    let r = call(&mut h, Method::GET, "/v1/metrics", Value::Null);
    assert_eq!(r.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&r.body).contains("\nkes_log_audit_stalled 1\n"));
    h.server.set_audit_stalled(false);
    assert_eq!(call(&mut h, Method::POST, "/v1/key/generate/k", json!({})).status, StatusCode::OK);
    assert_eq!(call(&mut h, Method::GET, "/v1/ready", Value::Null).status, StatusCode::OK);
    let r = call(&mut h, Method::GET, "/v1/status", Value::Null);
    assert!(json_of(&r).get("audit_log_stalled").is_none());
}
