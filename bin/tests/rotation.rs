//! Scheduled rotation (`rotation:`) through the binary: two `kes server`
//! processes with the same config share one store (an fs directory, then
//! one OpenBao) and rotate every matching key once per period between
//! them; a key matching no rule is never touched. What each node did is
//! read from its audit log, what the store holds from a third node.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use kes_core::UnixTime;
use kes_testkit::{cert, free_port, tempdir, wait, Proc};
use serde_json::Value;

const EVERY: Duration = Duration::from_secs(4);

/// A `kes server` with its audit lines collected.
struct Node {
    child: Child,
    url: String,
    audit: Arc<Mutex<Vec<String>>>,
}

impl Node {
    fn start(dir: &Path, config: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kes"))
            .args(["server", "--config", config])
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let audit = Arc::new(Mutex::new(Vec::new()));
        let sink = audit.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("ROTATION_DEBUG").is_some() {
                    eprintln!("kes: {l}");
                }
                let _ = tx.send(l);
            }
        });
        let url = loop {
            let l = rx.recv_timeout(Duration::from_secs(30)).expect("kes starts");
            if let Some(u) = l.split("listening on ").nth(1) {
                break u.trim().to_owned();
            }
        };
        Self { child, url, audit }
    }

    /// The versions this node's audit log says the schedule made, per key.
    fn rotations(&self) -> Vec<(String, u64)> {
        let lines = self.audit.lock().unwrap();
        lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| {
                let path = v["request"]["path"].as_str()?;
                let name = path.strip_prefix("/v1/key/rotate/")?;
                assert!(v["request"].get("identity").is_none(), "the schedule has no caller: {v}");
                Some((name.to_owned(), v["response"]["key_version"].as_u64()?))
            })
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kes(dir: &Path, url: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kes"))
        .args(args)
        .env("KES_SERVER", url)
        .env("KES_CLIENT_CERT", dir.join("admin.cert"))
        .env("KES_CLIENT_KEY", dir.join("admin.key"))
        .env("KES_CAPATH", dir.join("server.cert"))
        .output()
        .unwrap();
    assert!(out.status.success(), "kes {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

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

/// A Vault policy for kes on the dev server's K/V v2 at `secret/`.
const BAO_POLICY: &str = r#"{"policy":"path \"secret/*\" { capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\"] }"}"#;

fn bao(url: &str, method: &str, path: &str, body: &str) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", method])
        .args(["-H", "X-Vault-Token: root", "-d", body])
        .arg(format!("{url}{path}"))
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(code == "200" || code == "204", "{method} {path}: {code}");
}

#[test]
fn two_nodes_on_one_openbao_rotate_each_key_once_per_period() {
    let port = free_port();
    let _bao = Proc(
        Command::new(kes_testkit::bao_binary())
            .args(["server", "-dev", "-dev-root-token-id=root"])
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}");
    wait("OpenBao", Duration::from_secs(30), || {
        kes_testkit::http_code(&format!("{url}/v1/sys/health")) == "200"
    });
    bao(&url, "POST", "/v1/sys/auth/approle", r#"{"type":"approle"}"#);
    bao(&url, "PUT", "/v1/sys/policies/acl/kes", BAO_POLICY);
    bao(&url, "POST", "/v1/auth/approle/role/kes", r#"{"token_policies":["kes"]}"#);
    bao(&url, "POST", "/v1/auth/approle/role/kes/role-id", r#"{"role_id":"kes-role"}"#);
    bao(
        &url,
        "POST",
        "/v1/auth/approle/role/kes/custom-secret-id",
        r#"{"secret_id":"kes-secret"}"#,
    );
    let keystore = format!(
        "keystore:\n  vault:\n    endpoint: {url}\n    engine: secret\n    version: v2\n    prefix: rotation\n    approle:\n      id: kes-role\n      secret: kes-secret\n"
    );
    two_nodes_rotate_once_per_period("rotation-bao", &keystore);
}
