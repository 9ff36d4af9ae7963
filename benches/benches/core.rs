//! Criterion benchmarks of the core, no sockets: the request paths through
//! the state machine with a cached key, the crypto under them, ciphertext
//! decoding, routing and policy checks.

use std::time::Instant;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use http::Method;
use kes_core::config::{AdminSetting, Config};
use kes_core::crypto::{ciphertext, ring, CiphertextFormat, KeyRing, SecretBytes, SecretKey};
use kes_core::policy::{Binding, Pattern, Policy, PolicySet};
use kes_core::testing::{Harness, SeededRng};
use kes_core::{Caller, Identity, Now, Request, UnixTime};

fn harness(format: CiphertextFormat) -> (Harness, Identity) {
    let admin = Identity::from_spki_der(b"bench-admin");
    let mut config = Config::empty();
    config.admin = AdminSetting::Identity(admin);
    config.compat.ciphertext = format;
    let now = Now { instant: Instant::now(), unix: UnixTime::from_parts(1_700_000_000, 0) };
    let mut h = Harness::new(config, now, 1);
    h.server.set_audit_enabled(false);
    let r =
        h.request(Caller::Identified(admin), Request::new(Method::POST, "/v1/key/create/bench"));
    assert_eq!(r.status, 200);
    (h, admin)
}

/// A full request through `Server` (parse, route, authorise, cached key,
/// crypto, response body), as the driver runs it.
fn requests(c: &mut Criterion) {
    for (label, format) in [("json", CiphertextFormat::Json), ("raw", CiphertextFormat::Raw)] {
        let (mut h, admin) = harness(format);
        let caller = Caller::Identified(admin);
        let gen = |h: &mut Harness| {
            let body = &br#"{"context":"Y3R4"}"#[..];
            h.request(caller, Request::new(Method::PUT, "/v1/key/generate/bench").with_body(body))
        };
        let r = gen(&mut h);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let decrypt_body =
            serde_json::json!({"ciphertext": v["ciphertext"], "context": "Y3R4"}).to_string();
        let mut g = c.benchmark_group(format!("request/{label}"));
        g.throughput(Throughput::Elements(1));
        g.bench_function("generate", |b| b.iter(|| black_box(gen(&mut h))));
        g.bench_function("decrypt", |b| {
            b.iter(|| {
                let req = Request::new(Method::PUT, "/v1/key/decrypt/bench")
                    .with_body(decrypt_body.as_bytes());
                black_box(h.request(caller, req))
            })
        });
        g.finish();
    }
}

fn crypto(c: &mut Criterion) {
    let mut rng = SeededRng(3);
    let key = SecretKey::generate(&mut rng, UnixTime::default(), None);
    let dek = [7u8; 32];
    let mut g = c.benchmark_group("crypto");
    g.throughput(Throughput::Elements(1));
    for (label, format) in [("json", CiphertextFormat::Json), ("raw", CiphertextFormat::Raw)] {
        let ct = key.encrypt(&dek, b"ctx", format, &mut rng);
        g.bench_function(format!("seal/{label}"), |b| {
            b.iter(|| black_box(key.encrypt(&dek, b"ctx", format, &mut rng)))
        });
        g.bench_function(format!("open/{label}"), |b| {
            b.iter(|| black_box(key.decrypt(&ct, b"ctx").is_ok()))
        });
        g.bench_function(format!("decode/{label}"), |b| {
            b.iter(|| black_box(ciphertext::decode(&ct).is_some()))
        });
    }
    // The v0.19.1-v0.23 MessagePack format (crypto.md §7.4, AES-V2 under K1).
    let legacy = SecretKey::new(core::array::from_fn(|i| i as u8), None, None, None, None);
    let msgpack = hex(concat!(
        "95a6414553323536d920363330646364323936366334333336363931313235343438626262323562346",
        "6c410a0a1a2a3a4a5a6a7a8a9aaabacadaeafc40cb0b1b2b3b4b5b6b7b8b9babbc41bfc7d5169f998211",
        "be888bda7bea3923b2f16f570f4255ee3e8f693"
    ));
    assert!(legacy.decrypt(&msgpack, b"my-context").is_ok());
    g.bench_function("open/msgpack", |b| {
        b.iter(|| black_box(legacy.decrypt(&msgpack, b"my-context").is_ok()))
    });
    g.bench_function("decode/msgpack", |b| {
        b.iter(|| black_box(ciphertext::decode(&msgpack).is_some()))
    });
    g.bench_function("hmac", |b| b.iter(|| black_box(key.hmac(b"a message to authenticate"))));
    g.finish();
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn routing(c: &mut Criterion) {
    c.bench_function("route/generate", |b| {
        b.iter(|| {
            black_box(kes_core::api::route::find(black_box("/v1/key/generate/my-key")).is_found())
        })
    });
}

fn policy(c: &mut Criterion) {
    let make = |i: usize| Policy {
        allow: vec![
            Pattern::new(&format!("/v1/key/generate/app-{i}-*")),
            Pattern::new("/v1/key/decrypt/app-*"),
        ],
        deny: vec![Pattern::new("/v1/key/*/app-secret*")],
        created_at: UnixTime::default(),
        created_by: None,
    };
    for n in [1usize, 1000] {
        let mut set = PolicySet::default();
        let mut target = Identity::from_spki_der(b"none");
        for i in 0..n {
            let id = Identity::from_spki_der(format!("{i}").as_bytes());
            set.set_policy(&format!("p{i}"), make(i));
            set.bind(
                id,
                Binding {
                    policy: format!("p{i}"),
                    created_at: UnixTime::default(),
                    created_by: None,
                },
            );
            if i == n / 2 {
                target = id;
            }
        }
        let path = format!("/v1/key/generate/app-{}-key", n / 2);
        assert!(set.authorize(&target, &path).is_ok());
        c.bench_function(&format!("policy/{n}-policies"), |b| {
            b.iter(|| black_box(set.authorize(&target, &path)))
        });
    }
}

/// Key versions: decrypting a raw ciphertext sealed under the oldest of n
/// active versions tries every newer one first (the worst case); a JSON
/// ciphertext names its version by key ID and costs one try.
fn versions(c: &mut Criterion) {
    let mut rng = SeededRng(5);
    let first = SecretKey::generate(&mut rng, UnixTime::default(), None);
    let dek = [7u8; 32];
    let raw = first.encrypt(&dek, b"ctx", CiphertextFormat::Raw, &mut rng);
    let json = first.encrypt(&dek, b"ctx", CiphertextFormat::Json, &mut rng);
    let mut ring = KeyRing::single(first, SecretBytes::new(Vec::new()));
    let mut g = c.benchmark_group("versions");
    g.throughput(Throughput::Elements(1));
    for n in 1..=ring::MAX_ACTIVE {
        if [1, 2, 8, 32].contains(&n) {
            assert_eq!(ring.decrypt(&raw, b"ctx").map(|(_, v)| v).ok(), Some(1));
            g.bench_function(format!("open-oldest-raw/{n}"), |b| {
                b.iter(|| black_box(ring.decrypt(&raw, b"ctx").is_ok()))
            });
            g.bench_function(format!("open-oldest-json/{n}"), |b| {
                b.iter(|| black_box(ring.decrypt(&json, b"ctx").is_ok()))
            });
        }
        if n < ring::MAX_ACTIVE {
            let next = SecretKey::generate(&mut rng, UnixTime::default(), None);
            ring = ring.rotated(next).expect("below the bound");
        }
    }
    g.finish();
}

criterion_group!(benches, requests, crypto, versions, routing, policy);
criterion_main!(benches);
