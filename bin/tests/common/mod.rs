//! Shared by the binary's tests: a `kes server` process and the `kes`
//! client, run as a user runs them.
#![allow(dead_code)] // each test file uses a part

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// A `kes server` with its audit lines collected.
pub struct Node {
    pub child: Child,
    pub url: String,
    pub audit: Arc<Mutex<Vec<String>>>,
    /// Error log lines, once start-up is over.
    pub errors: Arc<Mutex<Vec<String>>>,
}

impl Node {
    pub fn start(dir: &Path, config: &str) -> Self {
        Self::start_with(dir, config, &[])
    }

    /// Started with extra environment variables.
    pub fn start_with(dir: &Path, config: &str, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kes"))
            .args(["server", "--config", config])
            .envs(env.iter().copied())
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
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("KES_TEST_DEBUG").is_some() {
                    eprintln!("kes: {l}");
                }
                sink.lock().unwrap().push(l.clone());
                let _ = tx.send(l);
            }
        });
        let url = loop {
            let l = rx.recv_timeout(Duration::from_secs(30)).expect("kes starts");
            if let Some(u) = l.split("listening on ").nth(1) {
                break u.trim().to_owned();
            }
        };
        Self { child, url, audit, errors }
    }

    /// The versions this node's audit log says the schedule made, per key.
    pub fn rotations(&self) -> Vec<(String, u64)> {
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

/// Runs a `kes` client command against `url` as the admin of `dir`.
pub fn kes(dir: &Path, url: &str, args: &[&str]) -> String {
    let (ok, out, err) = kes_try(dir, url, args);
    assert!(ok, "kes {args:?}: {err}");
    out
}

/// [`kes`] without asserting success: (success, stdout, stderr).
pub fn kes_try(dir: &Path, url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kes"))
        .args(args)
        .env("KES_SERVER", url)
        .env("KES_CLIENT_CERT", dir.join("admin.cert"))
        .env("KES_CLIENT_KEY", dir.join("admin.key"))
        .env("KES_CAPATH", dir.join("server.cert"))
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// An OpenBao dev server (K/V v2 at `secret/`) with an AppRole login for
/// kes (`kes-role`/`kes-secret`) allowed there; and the `keystore:` section
/// that uses it with `prefix`. The server stops when the handle drops.
pub fn openbao_with_approle(prefix: &str) -> (kes_testkit::Proc, String) {
    let port = kes_testkit::free_port();
    let bao = kes_testkit::Proc(
        Command::new(kes_testkit::bao_binary())
            .args(["server", "-dev", "-dev-root-token-id=root"])
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}");
    kes_testkit::wait("OpenBao", Duration::from_secs(30), || {
        kes_testkit::http_code(&format!("{url}/v1/sys/health")) == "200"
    });
    let policy = r#"{"policy":"path \"secret/*\" { capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\"] }"}"#;
    for (method, path, body) in [
        ("POST", "/v1/sys/auth/approle", r#"{"type":"approle"}"#),
        ("PUT", "/v1/sys/policies/acl/kes", policy),
        ("POST", "/v1/auth/approle/role/kes", r#"{"token_policies":["kes"]}"#),
        ("POST", "/v1/auth/approle/role/kes/role-id", r#"{"role_id":"kes-role"}"#),
        ("POST", "/v1/auth/approle/role/kes/custom-secret-id", r#"{"secret_id":"kes-secret"}"#),
    ] {
        let out = Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", method])
            .args(["-H", "X-Vault-Token: root", "-d", body, &format!("{url}{path}")])
            .output()
            .unwrap();
        let code = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(code == "200" || code == "204", "{method} {path}: {code}");
    }
    let keystore = format!(
        "keystore:\n  vault:\n    endpoint: {url}\n    engine: secret\n    version: v2\n    prefix: {prefix}\n    approle:\n      id: kes-role\n      secret: kes-secret\n"
    );
    (bao, keystore)
}

/// A root-token GET on the OpenBao of a `keystore:` section.
pub fn openbao_get(keystore: &str, path: &str) -> Value {
    let url = keystore.split("endpoint: ").nth(1).and_then(|s| s.lines().next()).unwrap();
    let out = Command::new("curl")
        .args(["-sS", "-H", "X-Vault-Token: root", &format!("{url}{path}")])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}
