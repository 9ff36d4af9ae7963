//! The files in examples/ work as shipped: the config starts a server that
//! does what its comments say, and the systemd unit passes
//! `systemd-analyze verify`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kes-example-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn cert(dir: &Path, name: &str, sans: Vec<String>) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(sans).unwrap().self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{name}.cert")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    kes_core::Identity::from_certificate(cert.der()).unwrap().to_string()
}

fn curl(dir: &Path, who: &str, method: &str, url: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", method, "--cacert"])
        .arg(dir.join("etc/server.cert"))
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
fn example_config_starts_a_working_server() {
    let dir = tempdir("config");
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    cert(&dir.join("etc"), "server", vec!["localhost".into(), "127.0.0.1".into()]);
    let admin = cert(&dir, "admin", vec![]);
    let minio = cert(&dir, "minio", vec![]);
    // The shipped file, with its absolute paths moved into the temp dir and
    // a free port.
    let text = std::fs::read_to_string(examples().join("config.yml"))
        .unwrap()
        .replace("/etc/kes/", &format!("{}/etc/", dir.display()))
        .replace("/var/lib/kes/", &format!("{}/var/", dir.display()))
        .replace("0.0.0.0:7373", "127.0.0.1:0");
    std::fs::write(dir.join("config.yml"), text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kes"))
        .args(["server", "--config"])
        .arg(dir.join("config.yml"))
        .env("KES_ADMIN_IDENTITY", &admin)
        .env("MINIO_IDENTITY", &minio)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Keep draining stderr: a closed pipe would stop the server's logging.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut url = None;
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(30)) {
        if let Some(u) = line.strip_prefix("kes: listening on ") {
            url = Some(u.replace("127.0.0.1", "localhost"));
            break;
        }
        seen.push(line);
    }
    let url = url.unwrap_or_else(|| panic!("no listening line: {seen:#?}"));
    assert!(seen.iter().all(|l| !l.contains("unknown key")), "{seen:#?}");
    // MinIO's calls are allowed, anything else is not; the admin may do all.
    assert_eq!(curl(&dir, "minio", "POST", &format!("{url}/v1/key/create/minio-key")), "200");
    assert_eq!(curl(&dir, "minio", "GET", &format!("{url}/v1/status")), "200");
    assert_eq!(curl(&dir, "minio", "GET", &format!("{url}/v1/metrics")), "200");
    assert_eq!(curl(&dir, "minio", "DELETE", &format!("{url}/v1/key/delete/minio-key")), "403");
    assert_eq!(curl(&dir, "admin", "DELETE", &format!("{url}/v1/key/delete/minio-key")), "200");
    assert!(dir.join("var/keys").is_dir());
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    // audit: on writes one JSON line per request to stdout.
    let audit = String::from_utf8_lossy(&out.stdout);
    assert!(audit.lines().count() >= 5, "{audit}");
    assert!(audit.contains(r#""path":"/v1/key/delete/minio-key""#), "{audit}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn example_systemd_unit_verifies() {
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("systemd-analyze is required for this test (the test script installs systemd)");
    let dir = tempdir("unit");
    // verify checks that ExecStart exists: point it at the binary under test.
    let unit = std::fs::read_to_string(examples().join("kes.service"))
        .unwrap()
        .replace("/usr/local/bin/kes", env!("CARGO_BIN_EXE_kes"));
    let path = dir.join("kes.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new(analyze).arg("verify").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let own: Vec<&str> = err.lines().filter(|l| l.contains("kes.service")).collect();
    assert!(own.is_empty(), "systemd-analyze complains about the unit: {own:#?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
