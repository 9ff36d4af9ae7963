//! What `hsm:` costs: a store read and a write on the fs store with and
//! without HSM sealing (SoftHSM2, a software token: a hardware HSM is
//! slower per call). Cached keys never reach the store, so the request
//! path is not measured here: it does not change.
//!
//! Needs SoftHSM2 and OpenSC (`apt-get install softhsm2 opensc`); without
//! them the bench says so and measures nothing.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use kes_adapters::store::hsm::{Hsm, SealedStore};
use kes_adapters::store::{FsStore, KeyStore};
use kes_core::config::{HsmConfig, Secret};
use kes_core::crypto::SecretBytes;
use kes_core::{Command as StoreCommand, KeyName};

const MODULE: &str = kes_testkit::SOFTHSM_MODULE;

fn store_calls(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("kes-bench-hsm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    match kes_testkit::softhsm_token(&dir) {
        Ok(conf) => std::env::set_var("SOFTHSM2_CONF", conf),
        Err(e) => {
            eprintln!("hsm bench: no SoftHSM2 token ({e}); nothing measured");
            return;
        }
    }
    let cfg = HsmConfig {
        module: MODULE.into(),
        token: "kes".into(),
        pin: Secret::new("1234".into()),
        key: "kes-wrap".into(),
    };
    let hsm = Arc::new(Hsm::open(&cfg).unwrap());
    let plain: Arc<dyn KeyStore> =
        Arc::new(FsStore::open(dir.join("plain").to_str().unwrap()).unwrap());
    let fs: Arc<dyn KeyStore> =
        Arc::new(FsStore::open(dir.join("sealed").to_str().unwrap()).unwrap());
    let sealed = SealedStore::new(fs, hsm);
    let name = KeyName::parse("k").unwrap();
    // A v0.24 key value's size.
    let value = SecretBytes::new(vec![b'A'; 120]);
    for s in [plain.as_ref(), &sealed as &dyn KeyStore] {
        s.execute(StoreCommand::Create { name: name.clone(), value: value.clone() }).unwrap();
    }
    let mut g = c.benchmark_group("hsm");
    g.bench_function("fs_read", |b| {
        b.iter(|| plain.execute(StoreCommand::Get { name: name.clone() }).unwrap())
    });
    g.bench_function("fs_read_unsealed_by_softhsm", |b| {
        b.iter(|| sealed.execute(StoreCommand::Get { name: name.clone() }).unwrap())
    });
    let other = KeyName::parse("w").unwrap();
    g.bench_function("fs_create_delete", |b| {
        b.iter(|| {
            plain
                .execute(StoreCommand::Create { name: other.clone(), value: value.clone() })
                .unwrap();
            plain.execute(StoreCommand::Delete { name: other.clone() }).unwrap();
        })
    });
    g.bench_function("fs_create_delete_sealed_by_softhsm", |b| {
        b.iter(|| {
            sealed
                .execute(StoreCommand::Create { name: other.clone(), value: value.clone() })
                .unwrap();
            sealed.execute(StoreCommand::Delete { name: other.clone() }).unwrap();
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, store_calls);
criterion_main!(benches);
