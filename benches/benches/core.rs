//! Criterion benchmarks of the core, no sockets: the generate and decrypt
//! request paths through the state machine with a cached key, the raw
//! crypto under them, and a policy check.

use std::time::Instant;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use http::Method;
use kes_core::config::{AdminSetting, Config};
use kes_core::crypto::{CiphertextFormat, SecretKey};
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

fn requests(c: &mut Criterion) {
    for (label, format) in [("json", CiphertextFormat::Json), ("raw", CiphertextFormat::Raw)] {
        let (mut h, admin) = harness(format);
        let caller = Caller::Identified(admin);
        let gen = |h: &mut Harness| {
            h.request(
                caller,
                Request::new(Method::PUT, "/v1/key/generate/bench")
                    .with_body(&br#"{"context":"Y3R4"}"#[..]),
            )
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
                black_box(
                    h.request(
                        caller,
                        Request::new(Method::PUT, "/v1/key/decrypt/bench")
                            .with_body(decrypt_body.as_bytes()),
                    ),
                )
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
    g.throughput(Throughput::Bytes(32));
    for (label, format) in [("json", CiphertextFormat::Json), ("raw", CiphertextFormat::Raw)] {
        let ct = key.encrypt(&dek, b"ctx", format, &mut rng);
        g.bench_function(format!("seal/{label}"), |b| {
            b.iter(|| black_box(key.encrypt(&dek, b"ctx", format, &mut rng)))
        });
        g.bench_function(format!("open/{label}"), |b| {
            b.iter(|| black_box(key.decrypt(&ct, b"ctx").is_ok()))
        });
    }
    g.finish();
}

fn policy(c: &mut Criterion) {
    let mut set = PolicySet::default();
    let mut target = Identity::from_spki_der(b"0");
    for i in 0..1000 {
        let id = Identity::from_spki_der(format!("{i}").as_bytes());
        let policy = Policy {
            allow: vec![
                Pattern::new(&format!("/v1/key/generate/app-{i}-*")),
                Pattern::new("/v1/key/decrypt/app-*"),
            ],
            deny: vec![Pattern::new("/v1/key/*/app-secret*")],
            created_at: UnixTime::default(),
            created_by: None,
        };
        set.set_policy(&format!("p{i}"), policy);
        set.bind(
            id,
            Binding { policy: format!("p{i}"), created_at: UnixTime::default(), created_by: None },
        );
        if i == 500 {
            target = id;
        }
    }
    c.bench_function("policy/1000-policies", |b| {
        b.iter(|| black_box(set.authorize(&target, "/v1/key/generate/app-500-key")))
    });
}

criterion_group!(benches, requests, crypto, policy);
criterion_main!(benches);
