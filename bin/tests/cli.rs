//! The `kes` binary as a user runs it: config files, flags, `--dev`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kes-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes `<name>.cert`/`<name>.key` (self-signed, SAN localhost/127.0.0.1)
/// and returns the identity.
fn cert(dir: &Path, name: &str) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{name}.cert")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    kes_core::Identity::from_certificate(cert.der()).unwrap().to_string()
}

struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Self { child, lines, seen: Vec::new() }
    }

    /// Waits for a stderr line containing `needle`.
    fn wait_for(&mut self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!("no '{needle}' on stderr; saw {:#?}", self.seen),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn curl(dir: &Path, who: &str, ca: &Path, method: &str, url: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", method])
        .arg("--cacert")
        .arg(ca)
        .arg("--cert")
        .arg(dir.join(format!("{who}.cert")))
        .arg("--key")
        .arg(dir.join(format!("{who}.key")))
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn seed_style_config_file() {
    let dir = tempdir("seed");
    cert(&dir, "server");
    let admin = cert(&dir, "admin");
    let app = cert(&dir, "app");
    let config = r#"
address: 127.0.0.1:0
root: ${ADMIN_IDENTITY}
tls:
  key: server.key
  cert: server.cert
cache:
  expiry:
    any: 5m0s
    unused: 20s
log:
  error: on
  audit: off
policy:
  my-policy:
    paths:
    - /v1/key/create/my-key
    - /v1/key/generate/my-key
    identities:
    - ${APP_IDENTITY}
    - ${NOT_SET_ANYWHERE}
keys:
  - name: "my-key-0"
keystore:
  fs:
    path: ./keys
"#;
    std::fs::write(dir.join("config.yml"), config).unwrap();
    let mut kes = Running::spawn(
        Command::new(env!("CARGO_BIN_EXE_kes"))
            .args(["server", "--config", "config.yml"])
            .current_dir(&dir)
            .env("ADMIN_IDENTITY", &admin)
            .env("APP_IDENTITY", &app),
    );
    let line = kes.wait_for("listening on");
    let url = line.rsplit(' ').next().unwrap().replace("127.0.0.1", "localhost");
    assert!(
        kes.seen.iter().any(|l| l.contains("NOT_SET_ANYWHERE")),
        "warning for the unset variable"
    );
    let ca = dir.join("server.cert");
    assert_eq!(curl(&dir, "app", &ca, "POST", &format!("{url}/v1/key/create/my-key")), "200");
    assert_eq!(curl(&dir, "app", &ca, "POST", &format!("{url}/v1/key/create/other")), "403");
    assert_eq!(curl(&dir, "admin", &ca, "DELETE", &format!("{url}/v1/key/delete/my-key-0")), "200");
    assert!(dir.join("keys/my-key").exists());
    assert!(!dir.join("keys/my-key-0").exists());
}

#[test]
fn config_errors_name_file_and_line() {
    let dir = tempdir("bad");
    std::fs::write(
        dir.join("config.yml"),
        "admin:\n  identity: disabled\ncache:\n  expiry:\n    any: five minutes\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kes"))
        .args(["server", "--config", "config.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config.yml: line 5:"), "{err}");

    std::fs::write(
        dir.join("vault.yml"),
        "admin:\n  identity: disabled\nkeystore:\n  vault:\n    endpoint: https://127.0.0.1:8200\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kes"))
        .args(["server", "--config", "vault.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("keystore 'vault' is not supported yet"));

    let out = Command::new(env!("CARGO_BIN_EXE_kes"))
        .args(["server", "--auth", "maybe", "--root", "x"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--auth"));
    let out = Command::new(env!("CARGO_BIN_EXE_kes"))
        .args(["server", "--config", "missing.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.yml"));
}

#[test]
fn dev_mode_prints_a_working_client_setup() {
    let mut kes = Running::spawn(Command::new(env!("CARGO_BIN_EXE_kes")).args([
        "server",
        "--dev",
        "--addr",
        "127.0.0.1:0",
    ]));
    let url = kes.wait_for("export KES_SERVER=").rsplit('=').next().unwrap().to_owned();
    let cert = kes.wait_for("export KES_CLIENT_CERT=").rsplit('=').next().unwrap().to_owned();
    let key = kes.wait_for("export KES_CLIENT_KEY=").rsplit('=').next().unwrap().to_owned();
    let ca = Path::new(&cert).with_file_name("server.cert");
    let out = Command::new("curl")
        .args(["-sS", "-w", " %{http_code}"])
        .arg("--cacert")
        .arg(&ca)
        .args(["--cert", &cert, "--key", &key])
        .arg(format!("{url}/v1/status"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with(" 200"), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("\"keystore_latency\""));
}

#[test]
fn identity_of_matches_the_server() {
    let dir = tempdir("idof");
    let id = cert(&dir, "c");
    let out = Command::new(env!("CARGO_BIN_EXE_kes"))
        .args(["identity", "of"])
        .arg(dir.join("c.cert"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), id);
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig}");
}

/// SIGHUP re-reads the config: a new policy applies at once, a broken file is
/// refused with a message and the running configuration stays. SIGTERM exits 0.
#[test]
fn sighup_reloads_and_sigterm_exits_cleanly() {
    let dir = tempdir("hup");
    cert(&dir, "server");
    let admin = cert(&dir, "admin");
    let app = cert(&dir, "app");
    let config = |allow: &str| {
        format!(
            "address: 127.0.0.1:0\nadmin:\n  identity: {admin}\ntls:\n  key: server.key\n  cert: server.cert\npolicy:\n  app:\n    allow:\n    - {allow}\n    identities:\n    - {app}\n"
        )
    };
    std::fs::write(dir.join("config.yml"), config("/v1/key/create/app-*")).unwrap();
    let mut kes = Running::spawn(
        Command::new(env!("CARGO_BIN_EXE_kes"))
            .args(["server", "--config", "config.yml"])
            .current_dir(&dir),
    );
    let url =
        kes.wait_for("listening on").rsplit(' ').next().unwrap().replace("127.0.0.1", "localhost");
    let ca = dir.join("server.cert");
    assert_eq!(curl(&dir, "app", &ca, "POST", &format!("{url}/v1/key/create/other-1")), "403");

    std::fs::write(dir.join("config.yml"), config("/v1/key/create/*")).unwrap();
    signal(&kes.child, "-HUP");
    kes.wait_for("configuration reloaded");
    assert_eq!(curl(&dir, "app", &ca, "POST", &format!("{url}/v1/key/create/other-1")), "200");

    std::fs::write(dir.join("config.yml"), "admin: [this is not\n").unwrap();
    signal(&kes.child, "-HUP");
    let line = kes.wait_for("reload failed");
    assert!(line.contains("config.yml"), "{line}");
    assert_eq!(curl(&dir, "app", &ca, "POST", &format!("{url}/v1/key/create/other-2")), "200");

    signal(&kes.child, "-TERM");
    let status = kes.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}
