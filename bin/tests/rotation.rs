//! Scheduled rotation (`rotation:`) through the binary: two `kes server`
//! processes with the same config share one store (an fs directory, then
//! one OpenBao) and rotate every matching key once per period between
//! them; a key matching no rule is never touched. What each node did is
//! read from its audit log, what the store holds from a third node.

use std::time::Duration;

use kes_core::UnixTime;
use kes_testkit::{cert, tempdir};
use serde_json::Value;

mod common;
use common::{kes, Node};

const EVERY: Duration = Duration::from_secs(4);

/// Two nodes with `rotation:` on the store `keystore`; keys created, time
/// passes, then a third node (no schedule) says what the store holds.
fn two_nodes_rotate_once_per_period(tag: &str, keystore: &str) {
    let dir = tempdir(tag);
    cert(&dir, "server");
    let admin = cert(&dir, "admin");
    let base = format!(
        "address: 127.0.0.1:0\nadmin:\n  identity: {admin}\ntls:\n  key: server.key\n  cert: server.cert\nlog:\n  audit: on\n  error: on\n{keystore}"
    );
    let scheduled = format!("{base}rotation:\n  - key: \"minio-*\"\n    every: 4s\n");
    std::fs::write(dir.join("kes.yml"), &scheduled).unwrap();
    std::fs::write(dir.join("plain.yml"), &base).unwrap();

    let a = Node::start(&dir, "kes.yml");
    let b = Node::start(&dir, "kes.yml");
    kes(&dir, &a.url, &["key", "create", "minio-a", "minio-b", "other"]);
    let other_before = kes(&dir, &b.url, &["key", "info", "other", "--json"]);
    std::thread::sleep(EVERY * 3 + Duration::from_secs(2));
    let (ra, rb) = (a.rotations(), b.rotations());
    drop((a, b));

    let c = Node::start(&dir, "plain.yml");
    assert_eq!(kes(&dir, &c.url, &["key", "info", "other", "--json"]), other_before);
    for key in ["minio-a", "minio-b"] {
        let info: Value =
            serde_json::from_str(&kes(&dir, &c.url, &["key", "info", key, "--json"])).unwrap();
        let versions = info["versions"].as_array().unwrap_or_else(|| panic!("{key}: {info}"));
        let newest = info["version"].as_u64().unwrap();
        // 14 s: the first period ends at 4 s, each check comes within ~1 s.
        assert!((3..=4).contains(&newest), "{key}: {info}");
        let created: Vec<UnixTime> = versions
            .iter()
            .map(|v| UnixTime::parse_rfc3339(v["created_at"].as_str().unwrap()).unwrap())
            .collect();
        for w in created.windows(2) {
            let gap = w[1].as_nanos() - w[0].as_nanos();
            assert!(gap >= EVERY.as_nanos() as i128, "{key}: versions {gap} ns apart: {info}");
        }
        for v in &versions[1..] {
            assert_eq!(v["created_by"], "rotation: minio-* every 4s", "{key}: {info}");
        }
        // Every new version was made, and audited, by exactly one node.
        let mut made: Vec<u64> =
            ra.iter().chain(&rb).filter(|(k, _)| k == key).map(|(_, v)| *v).collect();
        made.sort_unstable();
        assert_eq!(made, (2..=newest).collect::<Vec<_>>(), "{key}: a: {ra:?} b: {rb:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_nodes_on_one_fs_directory_rotate_each_key_once_per_period() {
    two_nodes_rotate_once_per_period("rotation-fs", "keystore:\n  fs:\n    path: keys\n");
}

#[test]
fn two_nodes_on_one_openbao_rotate_each_key_once_per_period() {
    let (_bao, keystore) = common::openbao_with_approle("rotation");
    two_nodes_rotate_once_per_period("rotation-bao", &keystore);
}
