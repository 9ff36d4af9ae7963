//! The core in a second runtime: `kes-core`'s `blocking_server` example
//! (std threads, blocking rustls, no async) serves the key lifecycle to our
//! CLI from the same kind of config file.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use kes_testkit::{cert, tempdir, Proc};

mod common;
use common::{kes, kes_try};

/// The example's binary, built if `cargo test` did not build it already.
fn example() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_kes"));
    let path = bin.parent().unwrap().join("examples/blocking_server");
    if !path.exists() {
        let ok = Command::new(env!("CARGO"))
            .args(["build", "-p", "kes-core", "--example", "blocking_server"])
            .status()
            .unwrap();
        assert!(ok.success());
    }
    path
}

#[test]
fn the_cli_runs_the_key_lifecycle_against_the_blocking_example() {
    let dir = tempdir("embedded");
    cert(&dir, "server");
    let admin = cert(&dir, "admin");
    let config = format!(
        "address: 127.0.0.1:0\nadmin:\n  identity: {admin}\ntls:\n  key: server.key\n  cert: server.cert\nkeystore:\n  fs:\n    path: keys\n"
    );
    std::fs::write(dir.join("kes.yml"), config).unwrap();
    let mut child = Command::new(example())
        .args(["--config", dir.join("kes.yml").to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let _server = Proc(child);
    let url = loop {
        let line = lines.next().expect("the example starts").unwrap();
        if let Some(u) = line.split("listening on ").nth(1) {
            break u.trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    kes(&dir, &url, &["key", "create", "app-key", "other"]);
    assert_eq!(kes(&dir, &url, &["key", "ls"]), "app-key\nother\n");
    let dek: serde_json::Value =
        serde_json::from_str(&kes(&dir, &url, &["key", "dek", "app-key", "Y3R4"])).unwrap();
    let ct = dek["ciphertext"].as_str().unwrap();
    let pt: serde_json::Value =
        serde_json::from_str(&kes(&dir, &url, &["key", "decrypt", "app-key", ct, "Y3R4"])).unwrap();
    assert_eq!(pt["plaintext"], dek["plaintext"]);
    assert!(dir.join("keys/app-key").exists(), "a key file in the fs store");
    // Refusals come back as from the real server.
    let (ok, _, err) = kes_try(&dir, &url, &["key", "create", "app-key"]);
    assert!(!ok && err.contains("key already exists"), "{err}");
    kes(&dir, &url, &["key", "rm", "other"]);
    assert_eq!(kes(&dir, &url, &["key", "ls"]), "app-key\n");
    let status = kes(&dir, &url, &["status", "--json"]);
    assert!(status.contains("\"version\""), "{status}");
    std::thread::sleep(Duration::from_millis(10));
    let _ = std::fs::remove_dir_all(&dir);
}
