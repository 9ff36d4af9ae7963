//! End to end through real TLS sockets: a server started in-process, clients
//! with certificates made by the test.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::*;
use kes_core::config::{KeystoreConfig, PolicyConfig};
use serde_json::json;

fn b64(b: &[u8]) -> String {
    STANDARD.encode(b)
}

/// (allow patterns, deny patterns, rows of (method, path, expected status)).
type Table = (
    &'static [&'static str],
    &'static [&'static str],
    &'static [(&'static str, &'static str, u16)],
);

/// The seed's two policy tables, row by row, against a real server.
#[test]
fn seed_policy_tables() {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let app = pki.client("app");
    let tables: [Table; 2] = [
        (
            &["/v1/key/create/my-key", "/v1/key/generate/my-key", "/v1/key/decrypt/my-key"],
            &["/v1/key/*/my-key-internal"],
            &[
                ("POST", "/v1/key/create/my-key", 200),
                ("POST", "/v1/key/generate/my-key", 200),
                ("POST", "/v1/key/create/my-key2", 403),
                ("DELETE", "/v1/key/delete/my-key", 403),
                ("POST", "/v1/policy/write/my-policy", 403),
                // /v0 is no API at all: routing answers before any policy.
                ("POST", "/v0/key/create/my-key", 404),
            ],
        ),
        (
            &[
                "/v1/key/create/my-key*",
                "/v1/key/generate/my-key*",
                "/v1/key/decrypt/my-key*",
                "/v1/key/delete/my-key",
            ],
            &["/v1/key/*/my-key-internal"],
            &[
                ("POST", "/v1/key/create/my-key", 200),
                ("POST", "/v1/key/generate/my-key", 200),
                ("POST", "/v1/key/create/my-key2", 200),
                ("DELETE", "/v1/key/delete/my-key", 200),
                ("DELETE", "/v1/key/delete/my-key2", 403),
                ("POST", "/v1/key/decrypt/my-key-internal", 403),
            ],
        ),
    ];
    for (allow, deny, rows) in tables {
        let mut config = config_with_admin(&admin);
        config.policies.insert(
            "my-policy".into(),
            PolicyConfig {
                limits: None,
                allow: allow.iter().map(|s| s.to_string()).collect(),
                deny: deny.iter().map(|s| s.to_string()).collect(),
                identities: vec![app.identity],
            },
        );
        let server = pki.start(config);
        let client = Client::new(&pki, Some(&app), server.addr());
        let root = Client::new(&pki, Some(&admin), server.addr());
        root.call("POST", "/v1/key/create/my-key-internal", b"").unwrap();
        for (method, path, want) in rows {
            let body = if path.contains("decrypt") { json!({"ciphertext": ""}) } else { json!({}) };
            let r = client.json(method, path, body);
            let got = if r.status == 403 || r.status == 404 { r.status } else { 200 };
            assert_eq!(got, *want, "{method} {path}: {} {}", r.status, r.text());
            if *want == 403 {
                assert_eq!(r.json()["message"], "not authorized: insufficient permissions");
            }
        }
        server.stop();
    }
}

#[test]
fn key_lifecycle_and_data_keys() {
    let (_pki, admin, server, c) = admin_server(|_| {});
    assert_eq!(c.call("PUT", "/v1/key/create/app-key", b"").unwrap().status, 200);
    let r = c.call("GET", "/v1/key/describe/app-key", b"").unwrap();
    assert_eq!(r.json()["name"], "app-key");
    assert_eq!(r.json()["created_by"], admin.identity.to_string());
    let r = c.call("GET", "/v1/key/list/app-", b"").unwrap();
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(r.text(), "{\"name\":\"app-key\"}\n");

    for context in [None, Some(b"{\"bucket\":\"photos\"}".as_slice())] {
        let body = match context {
            Some(c) => json!({"context": b64(c)}),
            None => json!({}),
        };
        let r = c.json("POST", "/v1/key/generate/app-key", body);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v = r.json();
        let mut dec = json!({"ciphertext": v["ciphertext"]});
        if let Some(cx) = context {
            dec["context"] = b64(cx).into();
        }
        let r = c.json("PUT", "/v1/key/decrypt/app-key", dec.clone());
        assert_eq!(r.json()["plaintext"], v["plaintext"]);
        dec["context"] = b64(b"wrong").into();
        let r = c.json("PUT", "/v1/key/decrypt/app-key", dec);
        assert_eq!(r.status, 400);
        assert_eq!(r.body, br#"{"message":"decryption failed: ciphertext is not authentic"}"#);
    }
    let r = c.json("PUT", "/v1/key/encrypt/app-key", json!({"plaintext": b64(b"hello")}));
    let r = c.json("PUT", "/v1/key/decrypt/app-key", json!({"ciphertext": r.json()["ciphertext"]}));
    assert_eq!(r.json()["plaintext"], b64(b"hello"));
    let r = c.json("PUT", "/v1/key/hmac/app-key", json!({"message": b64(b"m")}));
    assert_eq!(STANDARD.decode(r.json()["hmac"].as_str().unwrap()).unwrap().len(), 32);

    assert_eq!(c.call("DELETE", "/v1/key/delete/app-key", b"").unwrap().status, 200);
    let r = c.json("POST", "/v1/key/generate/app-key", json!({}));
    assert_eq!(r.status, 404);
    assert_eq!(r.body, br#"{"message":"key does not exist"}"#);
    assert_eq!(c.call("DELETE", "/v1/key/delete/app-key", b"").unwrap().status, 404);
    server.stop();
}

#[test]
fn fs_store_survives_restart_and_refuses_bad_input() {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let keys = tempdir("keys");
    let mut config = config_with_admin(&admin);
    config.keystore = KeystoreConfig::Fs { path: keys.to_string_lossy().into_owned() };
    config.keys = vec!["declared".into()];
    let server = pki.start(config.clone());
    let c = Client::new(&pki, Some(&admin), server.addr());
    assert!(keys.join("declared").exists(), "declared keys exist before serving");
    assert_eq!(c.call("POST", "/v1/key/create/k", b"").unwrap().status, 200);
    let dek = c.json("POST", "/v1/key/generate/k", json!({"context": b64(b"ctx")})).json();
    let before = std::fs::read(keys.join("k")).unwrap();

    // Duplicate create: 400, exact message, file unchanged.
    let r = c.call("POST", "/v1/key/create/k", b"").unwrap();
    assert_eq!(
        (r.status, r.body.as_slice()),
        (400, br#"{"message":"key already exists"}"#.as_slice())
    );
    let r = c.json("PUT", "/v1/key/import/k", json!({"key": b64(&[9; 32]), "cipher": "AES256"}));
    assert_eq!(r.status, 400);
    assert_eq!(std::fs::read(keys.join("k")).unwrap(), before);

    // Invalid names: 400 and nothing reaches the disk.
    let long = "k".repeat(300);
    for bad in ["..%2Fx", "a%2Fb", "..%2F..%2Fetc%2Fpasswd", long.as_str(), "a.b", "%2E%2E"] {
        let r = c.call("POST", &format!("/v1/key/create/{bad}"), b"").unwrap();
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(r.json()["message"]
            .as_str()
            .unwrap()
            .contains("is empty, too long or contains invalid characters"));
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, ["declared", "k"]);
    server.stop();

    // Restart on the same directory: the key is still there and decrypts.
    let server = pki.start(config);
    let c = Client::new(&pki, Some(&admin), server.addr());
    let r = c.json(
        "PUT",
        "/v1/key/decrypt/k",
        json!({"ciphertext": dek["ciphertext"], "context": b64(b"ctx")}),
    );
    assert_eq!(r.json()["plaintext"], dek["plaintext"]);
    server.stop();
}

fn vectors(dir: &str, file: &str) {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let keys = tempdir("vectors");
    copy_dir(&vectors_dir().join(dir), &keys);
    let mut config = config_with_admin(&admin);
    config.keystore = KeystoreConfig::Fs { path: keys.to_string_lossy().into_owned() };
    let server = pki.start(config);
    let c = Client::new(&pki, Some(&admin), server.addr());
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vectors_dir().join(file)).unwrap()).unwrap();
    let mut n = 0;
    for d in v["dek"].as_array().unwrap().iter().chain(v["encrypt"].as_array().unwrap()) {
        let key = d["key"].as_str().unwrap();
        let mut body = json!({"ciphertext": d["ciphertext"]});
        if !d["context"].is_null() {
            body["context"] = d["context"].clone();
        }
        let r = c.json("POST", &format!("/v1/key/decrypt/{key}"), body.clone());
        assert_eq!(r.status, 200, "{file} {key}: {}", r.text());
        assert_eq!(r.json()["plaintext"], d["plaintext"]);
        body["context"] = b64(b"not the context").into();
        assert_eq!(c.json("POST", &format!("/v1/key/decrypt/{key}"), body).status, 400);
        n += 1;
    }
    for h in v["hmac"].as_array().into_iter().flatten() {
        let r = c.json(
            "PUT",
            &format!("/v1/key/hmac/{}", h["key"].as_str().unwrap()),
            json!({"message": h["message"]}),
        );
        assert_eq!(r.json()["hmac"], h["hmac"]);
        n += 1;
    }
    assert!(n >= 10, "{file}: {n} vectors");
    // The original's key files were not rewritten.
    for e in std::fs::read_dir(vectors_dir().join(dir)).unwrap() {
        let e = e.unwrap();
        assert_eq!(
            std::fs::read(e.path()).unwrap(),
            std::fs::read(keys.join(e.file_name())).unwrap()
        );
    }

    // Every vector key rotated (key versions): the original's ciphertexts
    // still decrypt, as version 1, here and after a restart on the files.
    let deks: Vec<&serde_json::Value> =
        v["dek"].as_array().unwrap().iter().chain(v["encrypt"].as_array().unwrap()).collect();
    let mut names: Vec<&str> = deks.iter().map(|d| d["key"].as_str().unwrap()).collect();
    names.sort_unstable();
    names.dedup();
    for name in &names {
        let r = c.call("PUT", &format!("/v1/key/rotate/{name}"), b"").unwrap();
        assert_eq!(r.status, 200, "{file} {name}: {}", r.text());
    }
    server.stop();
    let mut config = config_with_admin(&admin);
    config.keystore = KeystoreConfig::Fs { path: keys.to_string_lossy().into_owned() };
    let server = pki.start(config);
    let c = Client::new(&pki, Some(&admin), server.addr());
    for d in deks {
        let mut body = json!({"ciphertext": d["ciphertext"]});
        if !d["context"].is_null() {
            body["context"] = d["context"].clone();
        }
        let r = c.json("POST", &format!("/v1/key/decrypt/{}", d["key"].as_str().unwrap()), body);
        assert_eq!((&r.json()["plaintext"], &r.json()["version"]), (&d["plaintext"], &json!("1")));
    }
    let files = std::fs::read_dir(&keys).unwrap().count();
    assert_eq!(
        files,
        std::fs::read_dir(vectors_dir().join(dir)).unwrap().count(),
        "no staged copies left"
    );
    server.stop();
}

#[test]
fn vectors_v019_over_tls() {
    vectors("keys-v0.19", "vectors-v0.19.json");
}

#[test]
fn vectors_v024_over_tls() {
    vectors("keys-v0.24", "vectors-v0.24.json");
}

#[test]
fn bad_requests_get_clear_errors() {
    let (_pki, _admin, server, c) = admin_server(|_| {});
    c.call("POST", "/v1/key/create/k", b"").unwrap();

    let big = vec![b'a'; (1 << 20) + 1];
    let r = c.call("POST", "/v1/key/encrypt/k", &big).unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["message"], "request body too large");

    let r = c.call("POST", "/v1/key/generate/k", b"{\"context\": ").unwrap();
    assert_eq!((r.status, r.json()["message"].as_str()), (400, Some("invalid request body")));

    let r = c.call("GET", "/v1/no/such/route", b"").unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "404 page not found\n");

    let r = c.call("GET", "/v1/key/create/k", b"").unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("accept"), Some("PUT"));
    server.stop();
}

#[test]
fn client_without_certificate_is_refused() {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let server = pki.start(config_with_admin(&admin));
    let anon = Client::new(&pki, None, server.addr());
    assert!(
        anon.call("GET", "/version", b"").is_err(),
        "handshake must fail without a certificate"
    );
    server.stop();

    // With a skip_auth route, the handshake accepts and protected routes say why.
    let mut config = config_with_admin(&admin);
    config.api.insert(
        "/v1/status".into(),
        kes_core::config::ApiOverride { skip_auth: true, timeout: None },
    );
    let server = pki.start(config);
    let anon = Client::new(&pki, None, server.addr());
    assert_eq!(anon.call("GET", "/v1/status", b"").unwrap().status, 200);
    let r = anon.call("POST", "/v1/key/create/x", b"").unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["message"], "tls: client certificate is required");
    server.stop();
}

#[test]
fn slow_client_is_closed_after_header_timeout() {
    let (_pki, _admin, server, c) = admin_server(|_| {});
    let mut s = c.connect().unwrap();
    s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n").unwrap();
    s.flush().unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the server must close, not answer a half-sent head");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "closed by the header timeout, not the test's read timeout"
    );
    server.stop();
}

#[test]
fn keep_alive_and_pipelining() {
    let (_pki, _admin, server, c) = admin_server(|_| {});
    let mut s = c.connect().unwrap();
    send(&mut s, "POST", "/v1/key/create/p", b"", false).unwrap();
    assert_eq!(read_reply(&mut s).unwrap().status, 200);
    // Three requests in one write; three answers in order on one connection.
    let mut batch = Vec::new();
    for path in ["/v1/key/describe/p", "/v1/key/describe/missing", "/version"] {
        batch.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    }
    s.write_all(&batch).unwrap();
    s.flush().unwrap();
    assert_eq!(read_reply(&mut s).unwrap().status, 200);
    assert_eq!(read_reply(&mut s).unwrap().status, 404);
    assert_eq!(read_reply(&mut s).unwrap().status, 200);
    server.stop();
}

#[test]
fn curl_with_client_certificate() {
    if std::process::Command::new("curl").arg("--version").output().is_err() {
        panic!("curl is required for this test (.ci/run installs it)");
    }
    let pki = Pki::new();
    let admin = pki.client("admin");
    let server = pki.start(config_with_admin(&admin));
    let url = format!("https://localhost:{}", server.addr().port());
    let out = std::process::Command::new("curl")
        .args(["-sS", "--resolve", &format!("localhost:{}:127.0.0.1", server.addr().port())])
        .arg("--cacert")
        .arg(&pki.ca_file)
        .arg("--cert")
        .arg(&admin.cert_file)
        .arg("--key")
        .arg(&admin.key_file)
        .args(["-X", "PUT", &format!("{url}/v1/key/create/from-curl"), "-w", "%{http_code}"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new("curl")
        .args(["-sS", "--resolve", &format!("localhost:{}:127.0.0.1", server.addr().port())])
        .arg("--cacert")
        .arg(&pki.ca_file)
        .arg("--cert")
        .arg(&admin.cert_file)
        .arg("--key")
        .arg(&admin.key_file)
        .args(["-L", &format!("{url}/v1/key/list")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "{\"name\":\"from-curl\"}\n");
    // Without a client certificate curl cannot even complete the handshake.
    let out = std::process::Command::new("curl")
        .args(["-sS", "--resolve", &format!("localhost:{}:127.0.0.1", server.addr().port())])
        .arg("--cacert")
        .arg(&pki.ca_file)
        .arg(format!("{url}/version"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    server.stop();
}

#[test]
fn identities_from_certificates_match_openssl() {
    let pki = Pki::new();
    let app = pki.client("app");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in {} -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum",
            app.cert_file.display()
        ))
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.split_whitespace().next(), Some(app.identity.to_string().as_str()));
}

/// `tls.password`: legacy OpenSSL-encrypted PEM keys (RFC 1423), as KES reads them.
#[test]
fn password_protected_server_keys() {
    let dir = tempdir("pem");
    let sh = |cmd: &str| {
        let out =
            std::process::Command::new("sh").arg("-c").arg(cmd).current_dir(&dir).output().unwrap();
        assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    };
    sh("openssl ecparam -genkey -name prime256v1 -noout -out plain.key");
    sh("openssl ec -in plain.key -aes-256-cbc -passout pass:s3cret -out aes.key");
    sh("openssl ec -in plain.key -des3 -passout pass:s3cret -out des3.key");
    sh("openssl genrsa -traditional -aes128 -passout pass:s3cret -out rsa.key 2048");
    sh("openssl req -new -x509 -key plain.key -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 -days 1 -out ec.cert");
    sh("openssl req -new -x509 -key rsa.key -passin pass:s3cret -subj /CN=localhost -days 1 -out rsa.cert");
    let auth = kes_adapters::tls::ClientAuth { verify: false, required: true };
    let load = |cert: &str, key: &str, pw: Option<&str>| {
        kes_adapters::tls::server_config(&dir.join(cert), &dir.join(key), pw, auth, None)
    };
    assert!(std::fs::read_to_string(dir.join("aes.key"))
        .unwrap()
        .contains("Proc-Type: 4,ENCRYPTED"));
    load("ec.cert", "aes.key", Some("s3cret")).unwrap();
    load("ec.cert", "des3.key", Some("s3cret")).unwrap();
    load("rsa.cert", "rsa.key", Some("s3cret")).unwrap();
    let e = load("ec.cert", "aes.key", None).unwrap_err();
    assert!(e.contains("password required"), "{e}");
    assert!(load("ec.cert", "aes.key", Some("wrong")).is_err());
    assert!(load("rsa.cert", "plain.key", None).unwrap_err().contains("do not fit"));
}
