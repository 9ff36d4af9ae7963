#![allow(clippy::disallowed_methods)] // tests read the real clock to seed a simulated one
//! Key versions driven through the core: rotate, seal under a version,
//! decrypt old and new ciphertexts in every format, rewrap, retire, purge;
//! a never-rotated key unchanged byte for byte; and the write protocol's
//! recovery from a writer that died at each step.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::{Method, StatusCode};
use kes_core::config::{AdminSetting, Config};
use kes_core::crypto::{CiphertextFormat, KeyRing, SecretBytes};
use kes_core::testing::Harness;
use kes_core::{Caller, Identity, KeyName, Now, Request, Response, UnixTime};
use serde_json::{json, Value};

fn admin() -> Identity {
    Identity::from_spki_der(b"admin")
}

fn start(format: CiphertextFormat) -> Harness {
    start_seeded(format, 11)
}

/// Nodes sharing a store need their own randomness (the same seed would
/// make the same keys).
fn start_seeded(format: CiphertextFormat, seed: u64) -> Harness {
    let mut config = Config::empty();
    config.admin = AdminSetting::Identity(admin());
    config.compat.ciphertext = format;
    let now = Now { instant: Instant::now(), unix: UnixTime::from_parts(1_700_000_000, 0) };
    Harness::new(config, now, seed)
}

fn call(h: &mut Harness, method: Method, path: &str, body: Value) -> Response {
    let body = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
    h.request(Caller::Identified(admin()), Request::new(method, path).with_body(body))
}

fn ok(h: &mut Harness, method: Method, path: &str, body: Value) -> Value {
    let r = call(h, method, path, body);
    assert_eq!(r.status, StatusCode::OK, "{path}: {}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

fn err(h: &mut Harness, method: Method, path: &str, body: Value) -> (StatusCode, String) {
    let r = call(h, method, path, body);
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v["message"].as_str().unwrap_or("").to_owned())
}

fn stored(h: &Harness, name: &str) -> Vec<u8> {
    h.store.keys.get(name).map(|v| v.expose().to_vec()).unwrap_or_default()
}

fn staging(name: &str) -> String {
    KeyName::parse(name).unwrap().staging().as_str().to_owned()
}

fn decrypt(h: &mut Harness, ct: &Value, ctx: &str) -> Response {
    let body = json!({"ciphertext": ct, "context": STANDARD.encode(ctx)});
    call(h, Method::PUT, "/v1/key/decrypt/k", body)
}

#[test]
fn rotation_keeps_old_data_readable_in_every_format() {
    for format in [CiphertextFormat::Json, CiphertextFormat::Raw] {
        let mut h = start(format);
        ok(&mut h, Method::PUT, "/v1/key/create/k", Value::Null);
        let before = stored(&h, "k");
        let ctx = json!({"context": STANDARD.encode("c")});
        let old = ok(&mut h, Method::PUT, "/v1/key/generate/k", ctx.clone());
        assert!(old.get("version").is_none(), "a never-rotated key answers as KES: {old}");
        let described = ok(&mut h, Method::GET, "/v1/key/describe/k", Value::Null);
        assert!(described.get("versions").is_none(), "{described}");
        assert_eq!(stored(&h, "k"), before, "nothing rewritten before a rotation");

        let r = ok(&mut h, Method::PUT, "/v1/key/rotate/k", Value::Null);
        assert_eq!(r, json!({"name": "k", "version": 2}));
        assert!(!h.store.keys.contains_key(&staging("k")), "staged copy removed");
        assert!(KeyRing::decode(&stored(&h, "k")).unwrap().is_versioned());
        let new = ok(&mut h, Method::PUT, "/v1/key/generate/k", ctx.clone());
        assert_eq!(new["version"], "2");

        // Both decrypt, each naming its version.
        for (dek, version) in [(&old, 1), (&new, 2)] {
            let r = decrypt(&mut h, &dek["ciphertext"], "c");
            assert_eq!(r.status, StatusCode::OK, "{format:?} v{version}");
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(
                (v["plaintext"].clone(), v["version"].clone()),
                (dek["plaintext"].clone(), json!(version.to_string()))
            );
        }
        assert_eq!(decrypt(&mut h, &old["ciphertext"], "wrong").status, StatusCode::BAD_REQUEST);

        // The cache is not what makes it work: a fresh server reads the ring.
        let mut h2 = start_seeded(format, 24);
        h2.store.keys = h.store.keys.clone();
        let r = decrypt(&mut h2, &old["ciphertext"], "c");
        assert_eq!(r.status, StatusCode::OK);

        // Seal under a chosen version (kms-go's field), then move data forward.
        let v1 = ok(&mut h, Method::PUT, "/v1/key/generate/k", json!({"version": "1"}));
        assert_eq!(v1["version"], "1");
        let same = ok(&mut h, Method::PUT, "/v1/key/generate/k", json!({"version": 1}));
        assert_eq!(same["version"], "1", "a number works too");
        let newest = ok(&mut h, Method::PUT, "/v1/key/generate/k", json!({"version": ""}));
        assert_eq!(newest["version"], "2", "empty: the newest");
        let rewrapped =
            ok(&mut h, Method::PUT, "/v1/key/rewrap/k", json!({"ciphertext": v1["ciphertext"]}));
        assert_eq!(rewrapped["version"], "2");
        let back = ok(
            &mut h,
            Method::PUT,
            "/v1/key/decrypt/k",
            json!({"ciphertext": rewrapped["ciphertext"]}),
        );
        assert_eq!(
            (back["plaintext"].clone(), back["version"].clone()),
            (v1["plaintext"].clone(), json!("2"))
        );
        let (s, m) = err(&mut h, Method::PUT, "/v1/key/generate/k", json!({"version": "v9"}));
        assert_eq!((s, m.as_str()), (StatusCode::NOT_FOUND, "key version 9 does not exist"));

        // Retire version 1: it neither seals nor opens; nothing is deleted.
        let r = ok(&mut h, Method::PUT, "/v1/key/retire/k", json!({"min_version": 2}));
        assert_eq!(r, json!({"name": "k", "min_version": 2}));
        let (s, m) = err(&mut h, Method::PUT, "/v1/key/generate/k", json!({"version": 1}));
        assert_eq!((s, m.as_str()), (StatusCode::BAD_REQUEST, "key version 1 is retired"));
        let r = decrypt(&mut h, &old["ciphertext"], "c");
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "a retired version opens nothing");
        assert_eq!(decrypt(&mut h, &new["ciphertext"], "c").status, StatusCode::OK);
        let d = ok(&mut h, Method::GET, "/v1/key/describe/k", Value::Null);
        assert_eq!(d["versions"][0]["state"], "retired");
        assert_eq!(d["versions"][1]["state"], "active");
        assert_eq!((d["version"].clone(), d["min_version"].clone()), (json!(2), json!(2)));
        for bad in [
            json!({"min_version": 1}),
            json!({"min_version": 3}),
            json!({}),
            json!({"min_version": "2"}),
        ] {
            assert_eq!(
                call(&mut h, Method::PUT, "/v1/key/retire/k", bad.clone()).status,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }

        // Purge: the retired material is gone from the store.
        let r = ok(&mut h, Method::PUT, "/v1/key/purge/k", Value::Null);
        assert_eq!(r, json!({"name": "k", "purged": [1]}));
        let ring = KeyRing::decode(&stored(&h, "k")).unwrap();
        assert_eq!(ring.versions().len(), 1);
        let d = ok(&mut h, Method::GET, "/v1/key/describe/k", Value::Null);
        assert_eq!(d["versions"].as_array().unwrap().len(), 1);
        let (s, _) = err(&mut h, Method::PUT, "/v1/key/generate/k", json!({"version": 1}));
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = err(&mut h, Method::PUT, "/v1/key/generate/k", json!({"version": "two"}));
        assert_eq!(s, StatusCode::BAD_REQUEST);
    }
}

#[test]
fn version_changes_need_a_key_and_the_right_policy() {
    let mut h = start(CiphertextFormat::Json);
    let (s, m) = err(&mut h, Method::PUT, "/v1/key/rotate/nope", Value::Null);
    assert_eq!((s, m.as_str()), (StatusCode::NOT_FOUND, "key does not exist"));
    assert!(h.store.keys.is_empty(), "nothing left behind");
    let other = Identity::from_spki_der(b"app");
    let r = h.request(Caller::Identified(other), Request::new(Method::PUT, "/v1/key/rotate/k"));
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The active-version bound: retire before rotating further.
    ok(&mut h, Method::PUT, "/v1/key/create/k", Value::Null);
    for _ in 1..kes_core::crypto::ring::MAX_ACTIVE {
        ok(&mut h, Method::PUT, "/v1/key/rotate/k", Value::Null);
    }
    let (s, _) = err(&mut h, Method::PUT, "/v1/key/rotate/k", Value::Null);
    assert_eq!(s, StatusCode::CONFLICT);
    ok(&mut h, Method::PUT, "/v1/key/retire/k", json!({"min_version": 30}));
    assert_eq!(ok(&mut h, Method::PUT, "/v1/key/rotate/k", Value::Null)["version"], 33);
}

/// A writer that died after deleting the key's entry: readers use the
/// staged copy, and the next change finishes the dead writer's work.
#[test]
fn a_change_interrupted_after_the_delete_is_finished() {
    let mut h = start(CiphertextFormat::Raw);
    ok(&mut h, Method::PUT, "/v1/key/create/k", Value::Null);
    let old = ok(&mut h, Method::PUT, "/v1/key/generate/k", Value::Null);
    ok(&mut h, Method::PUT, "/v1/key/rotate/k", Value::Null);
    let ring = h.store.keys.remove("k").unwrap();
    h.store.keys.insert(staging("k"), ring);
    // Another node (empty cache) reads the staged copy.
    let mut reader = start_seeded(CiphertextFormat::Raw, 21);
    reader.store.keys = h.store.keys.clone();
    let r = decrypt(&mut reader, &old["ciphertext"], "");
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    // The next change repairs the entry first; the staged copy is left to
    // its writer while that may be alive (409), and broken once stale.
    let mut writer = start_seeded(CiphertextFormat::Raw, 22);
    writer.store.keys = h.store.keys.clone();
    let (s, _) = err(&mut writer, Method::PUT, "/v1/key/rotate/k", Value::Null);
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(writer.store.keys.contains_key("k"), "the entry is back at once");
    assert_eq!(decrypt(&mut writer, &old["ciphertext"], "").status, StatusCode::OK);
    writer.advance(Duration::from_secs(61));
    assert_eq!(ok(&mut writer, Method::PUT, "/v1/key/rotate/k", Value::Null)["version"], 3);
    assert!(!writer.store.keys.contains_key(&staging("k")));
    assert_eq!(
        writer.store.keys.len(),
        1,
        "no lock or claim is left: {:?}",
        writer.store.keys.keys()
    );
    assert_eq!(decrypt(&mut writer, &old["ciphertext"], "").status, StatusCode::OK);
}

/// A staged copy next to the entry: a writer at work elsewhere (refused
/// with 409), or one that died before finishing (discarded once stale;
/// the entry still holds the last completed state).
#[test]
fn a_staged_copy_is_respected_then_discarded_when_stale() {
    let mut h = start(CiphertextFormat::Json);
    ok(&mut h, Method::PUT, "/v1/key/create/k", Value::Null);
    let mut other = start_seeded(CiphertextFormat::Json, 23);
    other.store.keys = h.store.keys.clone();
    ok(&mut other, Method::PUT, "/v1/key/rotate/k", Value::Null);
    let staged = other.store.keys.get("k").unwrap().clone();
    h.store.keys.insert(staging("k"), staged);
    let (s, m) = err(&mut h, Method::PUT, "/v1/key/rotate/k", Value::Null);
    assert_eq!(
        (s, m.as_str()),
        (StatusCode::CONFLICT, "key versions are being changed: try again")
    );
    h.advance(Duration::from_secs(61));
    assert_eq!(ok(&mut h, Method::PUT, "/v1/key/rotate/k", Value::Null)["version"], 2);
    assert!(!h.store.keys.contains_key(&staging("k")));
    assert!(h.events.iter().any(|e| format!("{e:?}").contains("unfinished change")));
}

/// Deleting a key removes a staged copy too, and listings never show one.
#[test]
fn delete_and_list_ignore_staged_copies() {
    let mut h = start(CiphertextFormat::Json);
    ok(&mut h, Method::PUT, "/v1/key/create/k", Value::Null);
    h.store.keys.insert(staging("k"), SecretBytes::new(b"x".to_vec()));
    let r = call(&mut h, Method::GET, "/v1/key/list/*", Value::Null);
    assert_eq!(String::from_utf8_lossy(&r.body).lines().count(), 1);
    ok(&mut h, Method::DELETE, "/v1/key/delete/k", Value::Null);
    assert!(h.store.keys.is_empty(), "{:?}", h.store.keys.keys().collect::<Vec<_>>());
    assert_eq!(
        call(&mut h, Method::PUT, "/v1/key/generate/k", Value::Null).status,
        StatusCode::NOT_FOUND
    );
}

/// Another node rotated the key: this node's cached key lacks the new
/// version, so a ciphertext it cannot open makes it read the key again
/// (once a second at most), instead of failing until the cache expires.
#[test]
fn a_version_added_elsewhere_is_found_by_reading_the_key_again() {
    let mut a = start(CiphertextFormat::Raw);
    ok(&mut a, Method::PUT, "/v1/key/create/k", Value::Null);
    ok(&mut a, Method::PUT, "/v1/key/generate/k", Value::Null); // cached on a
    let mut b = start_seeded(CiphertextFormat::Raw, 12);
    b.store.keys = a.store.keys.clone();
    ok(&mut b, Method::PUT, "/v1/key/rotate/k", Value::Null);
    let new = ok(&mut b, Method::PUT, "/v1/key/generate/k", Value::Null);
    a.store.keys = b.store.keys.clone(); // one shared store
    a.advance(Duration::from_secs(2));
    let reads = a.store.executed;
    let r = ok(&mut a, Method::PUT, "/v1/key/decrypt/k", json!({"ciphertext": new["ciphertext"]}));
    assert_eq!((&r["plaintext"], &r["version"]), (&new["plaintext"], &json!("2")));
    assert_eq!(a.store.executed, reads + 1, "one read");
    // Garbage right after: no new read within the refresh interval.
    let garbage = json!({"ciphertext": STANDARD.encode([0u8; 64])});
    assert_eq!(
        call(&mut a, Method::PUT, "/v1/key/decrypt/k", garbage.clone()).status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(a.store.executed, reads + 1, "no read for garbage within a second");
    // With the store down, a re-read fails but the cached key still
    // answers what it opens; what it does not open may be of a version it
    // cannot learn of now, so that is the store's failure (retry), not 400.
    a.advance(Duration::from_secs(2));
    a.store.unreachable = true;
    assert!(call(&mut a, Method::PUT, "/v1/key/decrypt/k", garbage).status.is_server_error());
    let r = ok(&mut a, Method::PUT, "/v1/key/decrypt/k", json!({"ciphertext": new["ciphertext"]}));
    assert_eq!(r["version"], "2");
}

/// Two nodes rotate at once: B reads the key, then A's whole rotation
/// lands before B stages. B must not overwrite A's version (a lost update
/// would orphan every data key A's node sealed under it): it sees the entry
/// changed, starts over and adds version 3 on top.
#[test]
fn concurrent_rotations_lose_no_version() {
    let mut a = start_seeded(CiphertextFormat::Raw, 31);
    ok(&mut a, Method::PUT, "/v1/key/create/k", Value::Null);
    let mut b = start_seeded(CiphertextFormat::Raw, 32);
    b.store.keys = a.store.keys.clone();
    // B begins: its first command reads the key.
    let id = kes_core::RequestId(77);
    let req = Request::new(Method::PUT, "/v1/key/rotate/k");
    b.server.handle_request(id, Caller::Identified(admin()), req, b.now, &mut b.rng);
    let (cid, cmd) = b.server.poll_command().expect("B reads the key");
    let stale = b.store.execute(cmd);
    // A rotates completely meanwhile, on the same store.
    a.store.keys = b.store.keys.clone();
    ok(&mut a, Method::PUT, "/v1/key/rotate/k", Value::Null);
    let sealed_by_a = ok(&mut a, Method::PUT, "/v1/key/generate/k", Value::Null);
    b.store.keys = a.store.keys.clone();
    // B goes on from its stale read.
    b.server.handle_store_result(cid, stale, b.now, &mut b.rng);
    let mut answer = None;
    for _ in 0..100 {
        while let Some((cid, cmd)) = b.server.poll_command() {
            let r = b.store.execute(cmd);
            b.server.handle_store_result(cid, r, b.now, &mut b.rng);
        }
        if let Some((rid, r)) = b.server.poll_response() {
            assert_eq!(rid, id);
            answer = Some(r);
            break;
        }
    }
    let answer = answer.expect("B finished");
    let v: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(v["version"], 3, "B started over on A's state: {v}");
    let ring = KeyRing::decode(&stored(&b, "k")).unwrap();
    assert_eq!(ring.versions().len(), 3);
    assert!(!b.store.keys.contains_key(&staging("k")));
    // A's data key still opens, everywhere.
    let mut c = start_seeded(CiphertextFormat::Raw, 33);
    c.store.keys = b.store.keys.clone();
    let r = ok(
        &mut c,
        Method::PUT,
        "/v1/key/decrypt/k",
        json!({"ciphertext": sealed_by_a["ciphertext"]}),
    );
    assert_eq!((&r["plaintext"], &r["version"]), (&sealed_by_a["plaintext"], &json!("2")));
}

/// Operators can see which versions are still used: audit records of
/// crypto calls on a rotated key name the version, describe counts this
/// node's unseals per version (and when the last was), and a metric counts
/// unseals under versions older than the newest.
#[test]
fn version_use_is_audited_counted_and_described() {
    let mut h = start(CiphertextFormat::Json);
    ok(&mut h, Method::PUT, "/v1/key/create/k", Value::Null);
    let old = ok(&mut h, Method::PUT, "/v1/key/generate/k", json!({}));
    h.events.clear();
    assert_eq!(decrypt(&mut h, &old["ciphertext"], "").status, StatusCode::OK);
    let audit = |h: &Harness| -> Vec<String> {
        h.events
            .iter()
            .filter_map(|e| match e {
                kes_core::Event::Audit(a) => Some(a.to_json()),
                _ => None,
            })
            .collect()
    };
    assert!(!audit(&h)[0].contains("key_version"), "never rotated: KES's record");
    ok(&mut h, Method::PUT, "/v1/key/rotate/k", Value::Null);
    let new = ok(&mut h, Method::PUT, "/v1/key/generate/k", json!({}));
    h.events.clear();
    for _ in 0..3 {
        assert_eq!(decrypt(&mut h, &old["ciphertext"], "").status, StatusCode::OK);
    }
    assert_eq!(decrypt(&mut h, &new["ciphertext"], "").status, StatusCode::OK);
    let lines = audit(&h);
    assert!(lines[0].ends_with(r#""key_version":1}}"#), "{}", lines[0]);
    assert!(lines[3].ends_with(r#""key_version":2}}"#), "{}", lines[3]);
    let d = ok(&mut h, Method::GET, "/v1/key/describe/k", Value::Null);
    let uses: Vec<(u64, u64)> = d["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["version"].as_u64().unwrap(), v["unseals"].as_u64().unwrap()))
        .collect();
    assert_eq!(uses, [(1, 3), (2, 1)], "{d}");
    assert!(d["versions"][0]["last_unseal"].is_string(), "{d}");
    let m = call(&mut h, Method::GET, "/v1/metrics", Value::Null);
    let text = String::from_utf8_lossy(&m.body);
    assert!(text.contains("\nkes_key_unseals_older_version 3\n"), "{text}");
    // Deleted and created again: counts start over.
    ok(&mut h, Method::DELETE, "/v1/key/delete/k", Value::Null);
    ok(&mut h, Method::PUT, "/v1/key/create/k", Value::Null);
    ok(&mut h, Method::PUT, "/v1/key/rotate/k", Value::Null);
    let d = ok(&mut h, Method::GET, "/v1/key/describe/k", Value::Null);
    assert_eq!(d["versions"][0]["unseals"], 0, "{d}");
}
