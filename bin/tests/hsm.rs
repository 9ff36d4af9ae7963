//! Keys sealed at rest by an HSM (`hsm.pkcs11`), through the binary, on
//! SoftHSM2 (a token per test in its own directory, named by
//! `SOFTHSM2_CONF` in the server's environment) and OpenSC's `pkcs11-tool`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use kes_core::crypto::sealed::{is_envelope, Envelope};
use kes_testkit::{cert, tempdir, wait};
use serde_json::Value;

mod common;
use common::{kes, kes_try, Node};

const MODULE: &str = kes_testkit::SOFTHSM_MODULE;

/// A SoftHSM2 token `kes` (user PIN 1234) with an AES-256 key `kes-wrap`.
struct Token {
    conf: PathBuf,
    dir: PathBuf,
}

impl Token {
    fn new(dir: &Path) -> Self {
        assert!(
            Path::new(MODULE).exists(),
            "SoftHSM2 is required for this test: apt-get install softhsm2 opensc (scripts/test.sh does)"
        );
        let conf = kes_testkit::softhsm_token(dir).unwrap();
        Self { conf, dir: dir.join("tokens") }
    }

    fn env(&self) -> Vec<(&str, &str)> {
        vec![("SOFTHSM2_CONF", self.conf.to_str().unwrap())]
    }
}

fn hsm_section(pin: &str, key: &str, module: &str) -> String {
    format!("hsm:\n  pkcs11:\n    module: {module}\n    token: kes\n    pin: \"{pin}\"\n    key: {key}\n")
}

/// A directory with certificates and two configs on the store `keystore`:
/// `plain.yml` (no HSM) and `hsm.yml`.
fn setup(tag: &str, keystore: &str) -> (PathBuf, Token) {
    let dir = tempdir(tag);
    cert(&dir, "server");
    let admin = cert(&dir, "admin");
    let base = format!(
        "address: 127.0.0.1:0\nadmin:\n  identity: {admin}\ntls:\n  key: server.key\n  cert: server.cert\nlog:\n  error: on\n{keystore}"
    );
    std::fs::write(dir.join("plain.yml"), &base).unwrap();
    std::fs::write(
        dir.join("hsm.yml"),
        format!("{base}{}", hsm_section("1234", "kes-wrap", MODULE)),
    )
    .unwrap();
    let token = Token::new(&dir);
    (dir, token)
}

fn dek(dir: &Path, url: &str, key: &str) -> Value {
    serde_json::from_str(&kes(dir, url, &["key", "dek", key, "Y3R4"])).unwrap()
}

fn opens(dir: &Path, url: &str, key: &str, dek: &Value) -> bool {
    let ct = dek["ciphertext"].as_str().unwrap();
    let (ok, out, _) = kes_try(dir, url, &["key", "decrypt", key, ct, "Y3R4"]);
    ok && serde_json::from_str::<Value>(&out).is_ok_and(|v| v["plaintext"] == dek["plaintext"])
}

fn stored(dir: &Path, key: &str) -> Vec<u8> {
    std::fs::read(dir.join("keys").join(key)).unwrap()
}

fn migrate(dir: &Path, token: &Token, flag: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kes"))
        .args(["migrate", "--from", "hsm.yml", flag])
        .envs(token.env())
        .current_dir(dir)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn fs_values_are_sealed_old_ones_still_read_and_migration_seals_in_place() {
    let (dir, token) = setup("hsm-fs", "keystore:\n  fs:\n    path: keys\n");
    // Before the HSM: a key and a data key under it.
    let plain = Node::start(&dir, "plain.yml");
    kes(&dir, &plain.url, &["key", "create", "legacy"]);
    let legacy_dek = dek(&dir, &plain.url, "legacy");
    let legacy_value = stored(&dir, "legacy");
    drop(plain);

    let node = Node::start_with(&dir, "hsm.yml", &token.env());
    kes(&dir, &node.url, &["key", "create", "sealed"]);
    let sealed_dek = dek(&dir, &node.url, "sealed");
    assert!(opens(&dir, &node.url, "sealed", &sealed_dek));
    assert!(opens(&dir, &node.url, "legacy", &legacy_dek), "values from before hsm: still read");
    let envelope = stored(&dir, "sealed");
    let e = Envelope::decode(&envelope).expect("an envelope").unwrap();
    assert_eq!(e.key, "kes-wrap");
    assert_eq!(stored(&dir, "legacy"), legacy_value, "reading does not rewrite");

    // A sealed value copied to another name does not open there.
    std::fs::write(dir.join("keys").join("copied"), &envelope).unwrap();
    let (ok, _, _) = kes_try(&dir, &node.url, &["key", "dek", "copied", "Y3R4"]);
    assert!(!ok);
    wait("the error log", Duration::from_secs(5), || {
        node.errors.lock().unwrap().iter().any(|l| l.contains("does not open under its name"))
    });
    std::fs::remove_file(dir.join("keys").join("copied")).unwrap();
    drop(node);

    // A server without hsm: says why it cannot use a sealed key.
    let plain = Node::start(&dir, "plain.yml");
    assert!(!kes_try(&dir, &plain.url, &["key", "dek", "sealed", "Y3R4"]).0);
    wait("the error log", Duration::from_secs(5), || {
        plain.errors.lock().unwrap().iter().any(|l| {
            l.contains("sealed by the HSM key 'kes-wrap' and this server has no hsm: section")
        })
    });
    drop(plain);

    // Seal everything in place; a second run changes nothing.
    let (ok, out) = migrate(&dir, &token, "--to-hsm");
    assert!(ok, "{out}");
    assert!(out.contains("Sealed 1 keys (1 already were)"), "{out}");
    assert!(is_envelope(&stored(&dir, "legacy")));
    let (ok, out) = migrate(&dir, &token, "--to-hsm");
    assert!(ok && out.contains("Sealed 0 keys (2 already were)"), "{out}");
    let node = Node::start_with(&dir, "hsm.yml", &token.env());
    assert!(opens(&dir, &node.url, "legacy", &legacy_dek));
    assert!(opens(&dir, &node.url, "sealed", &sealed_dek));
    drop(node);

    // And back: the plain values are what they were, and the sealed form
    // held none of them.
    let (ok, out) = migrate(&dir, &token, "--from-hsm");
    assert!(ok && out.contains("Unsealed 2 keys"), "{out}");
    assert_eq!(stored(&dir, "legacy"), legacy_value);
    let plain_sealed = stored(&dir, "sealed");
    assert!(!is_envelope(&plain_sealed));
    let text = String::from_utf8_lossy(&plain_sealed);
    assert!(
        !String::from_utf8_lossy(&envelope).contains(text.trim()),
        "the key is not in the envelope"
    );
    let plain = Node::start(&dir, "plain.yml");
    assert!(opens(&dir, &plain.url, "sealed", &sealed_dek));
    drop(plain);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A crash between the steps of a migration: the next run finishes it.
#[test]
fn an_interrupted_migration_is_finished_by_the_next_run() {
    let (dir, token) = setup("hsm-crash", "keystore:\n  fs:\n    path: keys\n");
    let plain = Node::start(&dir, "plain.yml");
    kes(&dir, &plain.url, &["key", "create", "k"]);
    let d = dek(&dir, &plain.url, "k");
    drop(plain);
    // As if a run died after staging and deleting the entry: the staged
    // copy (here the plain value) is all there is.
    let staging = kes_core::KeyName::parse("k").unwrap().staging();
    std::fs::rename(dir.join("keys/k"), dir.join("keys").join(staging.as_str())).unwrap();
    let (ok, out) = migrate(&dir, &token, "--to-hsm");
    assert!(ok && out.contains("Sealed 1 keys"), "{out}");
    assert!(is_envelope(&stored(&dir, "k")));
    assert!(!dir.join("keys").join(staging.as_str()).exists());
    let node = Node::start_with(&dir, "hsm.yml", &token.env());
    assert!(opens(&dir, &node.url, "k", &d));
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each wrong setting stops start-up and names itself.
#[test]
fn start_up_names_what_is_wrong_with_the_hsm() {
    let (dir, token) = setup("hsm-errors", "keystore:\n  fs:\n    path: keys\n");
    let base = std::fs::read_to_string(dir.join("plain.yml")).unwrap();
    for (section, says) in [
        (
            hsm_section("9999", "kes-wrap", MODULE),
            "hsm.pkcs11.pin: the token 'kes' refused the PIN",
        ),
        (
            hsm_section("1234", "nope", MODULE),
            "hsm.pkcs11.key 'nope': no secret key with this label",
        ),
        (
            hsm_section("1234", "kes-wrap", "/usr/lib/nope.so"),
            "hsm.pkcs11.module '/usr/lib/nope.so': cannot load the PKCS#11 module",
        ),
        (
            hsm_section("1234", "kes-wrap", MODULE).replace("token: kes", "token: other"),
            "hsm.pkcs11.token 'other': no such token",
        ),
        (
            "hsm:\n  pkcs11:\n    module: x\n    token: kes\n    key: k\n".into(),
            "hsm.pkcs11: no 'pin' specified",
        ),
    ] {
        std::fs::write(dir.join("bad.yml"), format!("{base}{section}")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_kes"))
            .args(["server", "--config", "bad.yml"])
            .envs(token.env())
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{section}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The token goes away while the server runs: cached keys keep serving,
/// creates fail with a 5xx; when it is back, everything works again.
#[test]
fn a_lost_token_fails_creates_and_recovers() {
    let (dir, token) = setup("hsm-lost", "keystore:\n  fs:\n    path: keys\n");
    let node = Node::start_with(&dir, "hsm.yml", &token.env());
    kes(&dir, &node.url, &["key", "create", "k"]);
    let d = dek(&dir, &node.url, "k");
    let away = token.dir.with_extension("away");
    std::fs::rename(&token.dir, &away).unwrap();
    assert!(opens(&dir, &node.url, "k", &d), "a cached key serves");
    let (ok, _, err) = kes_try(&dir, &node.url, &["key", "create", "k2"]);
    assert!(!ok, "{err}");
    assert!(!stored_exists(&dir, "k2"), "nothing half-written");
    std::fs::rename(&away, &token.dir).unwrap();
    kes(&dir, &node.url, &["key", "create", "k3"]);
    assert!(is_envelope(&stored(&dir, "k3")));
    let d3 = dek(&dir, &node.url, "k3");
    assert!(opens(&dir, &node.url, "k3", &d3));
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

fn stored_exists(dir: &Path, key: &str) -> bool {
    dir.join("keys").join(key).exists()
}

/// The same on OpenBao: what Vault holds is the envelope.
#[test]
fn openbao_values_are_sealed() {
    let (_bao, keystore) = common::openbao_with_approle("hsm");
    let (dir, token) = setup("hsm-bao", &keystore);
    let node = Node::start_with(&dir, "hsm.yml", &token.env());
    kes(&dir, &node.url, &["key", "create", "k"]);
    let d = dek(&dir, &node.url, "k");
    drop(node);
    let node = Node::start_with(&dir, "hsm.yml", &token.env());
    assert!(opens(&dir, &node.url, "k", &d), "after a restart, read from Vault and unsealed");
    drop(node);
    let v = common::openbao_get(&keystore, "/v1/secret/data/hsm/k");
    let data = v["data"]["data"].to_string();
    assert!(data.contains("kes-rs.hsm") && data.contains("kes-wrap"), "{v}");
    let _ = std::fs::remove_dir_all(&dir);
}
