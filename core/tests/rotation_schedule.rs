#![allow(clippy::disallowed_methods)] // tests read the real clock to seed a simulated one
//! The rotation schedule on one node, under the simulated clock: what it
//! rotates and when, what it leaves alone, how it fails (once in the error
//! log, retried) and how a reload changes it. The fleet is
//! `rotation_fleet.rs`.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use kes_core::config::{AdminSetting, Config, RotationRule};
use kes_core::crypto::KeyRing;
use kes_core::testing::Harness;
use kes_core::{Caller, Event, Identity, Now, Request, UnixTime};

fn admin() -> Identity {
    Identity::from_spki_der(b"admin")
}

fn config(rules: &[(&str, u64)]) -> Config {
    let mut c = Config::empty();
    c.admin = AdminSetting::Identity(admin());
    c.rotation = rules
        .iter()
        .map(|(k, s)| RotationRule { key: (*k).into(), every: Duration::from_secs(*s) })
        .collect();
    c
}

fn start(rules: &[(&str, u64)]) -> Harness {
    let now = Now { instant: Instant::now(), unix: UnixTime::from_parts(1_700_000_000, 0) };
    Harness::new(config(rules), now, 7)
}

fn create(h: &mut Harness, name: &str) {
    let r = h.request(
        Caller::Identified(admin()),
        Request::new(Method::PUT, &format!("/v1/key/create/{name}")),
    );
    assert_eq!(r.status, StatusCode::OK);
}

/// The newest version of a stored key (1 for a plain KES key).
fn newest(h: &Harness, name: &str) -> u32 {
    KeyRing::decode(h.store.keys[name].expose()).unwrap().latest().number
}

fn errors(h: &Harness) -> Vec<String> {
    h.events
        .iter()
        .filter_map(|e| match e {
            Event::Error(e) => Some(e.message.clone()),
            Event::Audit(_) => None,
        })
        .collect()
}

#[test]
fn matching_keys_rotate_each_period_others_are_untouched() {
    let mut h = start(&[("minio-*", 3600), ("app", 7200)]);
    for k in ["minio-a", "minio-b", "app", "other"] {
        create(&mut h, k);
    }
    let other = h.store.keys["other"].expose().to_vec();
    h.advance(Duration::from_secs(3500));
    assert_eq!((newest(&h, "minio-a"), newest(&h, "app")), (1, 1), "not due yet");
    h.advance(Duration::from_secs(200));
    assert_eq!((newest(&h, "minio-a"), newest(&h, "minio-b")), (2, 2));
    assert_eq!(newest(&h, "app"), 1, "its own period");
    h.advance(Duration::from_secs(10 * 3600));
    assert_eq!(newest(&h, "minio-a"), 12, "once per hour over 11.03 h: 11 new versions");
    assert_eq!(newest(&h, "app"), 6);
    assert_eq!(h.store.keys["other"].expose(), &other[..]);
    // Each rotation is audited as a rotate without a caller, naming the version.
    let audited: Vec<(String, Option<u32>)> = h
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Audit(a) if a.path.starts_with("/v1/key/rotate/") => {
                assert_eq!((a.identity, a.code), (None, 200));
                Some((a.path.clone(), a.key_version))
            }
            _ => None,
        })
        .collect();
    assert_eq!(audited.len(), 11 + 11 + 5, "{audited:?}");
    let m = h.server.metrics().render(0, Duration::ZERO, &Default::default());
    assert!(m.contains("kes_key_rotations_scheduled 27\n"), "{m}");
}

#[test]
fn a_store_outage_is_logged_once_and_the_rotation_happens_after() {
    let mut h = start(&[("k*", 60)]);
    create(&mut h, "k1");
    create(&mut h, "k2");
    h.store.unreachable = true;
    h.advance(Duration::from_secs(600));
    let logged: Vec<String> =
        errors(&h).into_iter().filter(|m| m.contains("scheduled rotation")).collect();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(logged[0].contains("retried at the next check"), "{logged:?}");
    h.store.unreachable = false;
    h.advance(Duration::from_secs(10));
    assert_eq!((newest(&h, "k1"), newest(&h, "k2")), (2, 2), "overdue keys rotate at once");
    let m = h.server.metrics().render(0, Duration::ZERO, &Default::default());
    assert!(!m.contains("kes_key_rotation_failures 0\n"), "failures are counted: {m}");
}

#[test]
fn a_key_with_too_many_versions_is_reported_once_not_retried_into_the_log() {
    let mut h = start(&[("k", 1)]);
    create(&mut h, "k");
    h.advance(Duration::from_secs(120));
    assert_eq!(newest(&h, "k"), 32, "the ring holds at most 32 active versions");
    let logged: Vec<String> =
        errors(&h).into_iter().filter(|m| m.contains("scheduled rotation")).collect();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(logged[0].contains("retire old versions"), "{logged:?}");
    // Retiring unblocks it.
    let r = h.request(
        Caller::Identified(admin()),
        Request::new(Method::PUT, "/v1/key/retire/k").with_body(r#"{"min_version":30}"#),
    );
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    h.advance(Duration::from_secs(3));
    assert!(newest(&h, "k") > 32);
}

#[test]
fn a_reload_changes_the_schedule() {
    let mut h = start(&[("k", 60)]);
    create(&mut h, "k");
    h.advance(Duration::from_secs(125));
    let before = newest(&h, "k");
    assert!(before >= 2);
    h.server.reload(config(&[]), h.now);
    h.advance(Duration::from_secs(600));
    assert_eq!(newest(&h, "k"), before, "no rules, no rotation");
    // The newest version is ~10 min old: due under 1 h in ~50 min.
    h.server.reload(config(&[("k", 3600)]), h.now);
    h.advance(Duration::from_secs(2400));
    assert_eq!(newest(&h, "k"), before, "the new period counts from the newest version");
    h.advance(Duration::from_secs(1200));
    assert_eq!(newest(&h, "k"), before + 1);
}
