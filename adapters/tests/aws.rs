//! The AWS Secrets Manager store against moto (a real server speaking the
//! Secrets Manager API; `pip install 'moto[server]'`, which scripts/test.sh
//! does) with signature checking switched on: the first three calls create
//! an IAM user and its access key, after that every request must carry a
//! valid SigV4 signature, so a signing bug fails these tests.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::*;
use kes_core::config::{AwsConfig, AwsCredentials, KeystoreConfig, Secret};
use serde_json::{json, Value};

fn python() -> String {
    // scripts/test.sh installs moto into its venv and names its python.
    std::env::var("KES_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// A moto server with SigV4 checking on, and an access key for kes.
struct Moto {
    child: Child,
    url: String,
    access: String,
    secret: String,
}

const SETUP: &str = r#"
import boto3, json, sys
iam = boto3.client("iam", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="setup", aws_secret_access_key="setup")
iam.create_user(UserName="kes")
iam.put_user_policy(UserName="kes", PolicyName="kes", PolicyDocument=json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["secretsmanager:*", "kms:*"], "Resource": "*"}]}))
k = iam.create_access_key(UserName="kes")["AccessKey"]
print(json.dumps({"id": k["AccessKeyId"], "secret": k["SecretAccessKey"]}))
"#;

impl Moto {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new(python())
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "moto is required for this test: pip install 'moto[server]' (scripts/test.sh does)",
            );
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "moto did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = Command::new(python()).args(["-c", SETUP, &url]).output().unwrap();
        assert!(out.status.success(), "IAM set-up: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        Self {
            child,
            url,
            access: v["id"].as_str().unwrap().to_owned(),
            secret: v["secret"].as_str().unwrap().to_owned(),
        }
    }

    fn config(&self, secret: &str) -> KeystoreConfig {
        KeystoreConfig::Aws(Box::new(AwsConfig {
            endpoint: self.url.clone(),
            region: "us-east-1".into(),
            kms_key: String::new(),
            credentials: Some(AwsCredentials {
                access_key: self.access.clone(),
                secret_key: Secret::new(secret.into()),
                session_token: None,
            }),
        }))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn b64(b: &[u8]) -> String {
    STANDARD.encode(b)
}

#[test]
fn secrets_manager_with_signature_checking() {
    let moto = Moto::start();
    let (pki, admin, server, c) = admin_server(|cfg| cfg.keystore = moto.config(&moto.secret));
    assert_eq!(c.call("PUT", "/v1/key/create/k1", b"").unwrap().status, 200);
    let r = c.call("PUT", "/v1/key/create/k1", b"").unwrap();
    assert_eq!((r.status, r.json()["message"].clone()), (400, json!("key already exists")));
    let r = c.json("PUT", "/v1/key/import/k2", json!({"key": b64(&[3; 32]), "cipher": "AES256"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let dek = c.json("PUT", "/v1/key/generate/k1", json!({"context": b64(b"ctx")})).json();
    let dec = json!({"ciphertext": dek["ciphertext"], "context": b64(b"ctx")});
    assert_eq!(
        c.json("PUT", "/v1/key/decrypt/k1", dec.clone()).json()["plaintext"],
        dek["plaintext"]
    );

    // More than one page of secrets (100 per page): every page is walked.
    for i in 0..120 {
        assert_eq!(c.call("PUT", &format!("/v1/key/create/bulk-{i:03}"), b"").unwrap().status, 200);
    }
    let list = c.call("GET", "/v1/key/list/bulk-", b"").unwrap().text();
    assert_eq!(list.lines().count(), 120, "all pages listed");

    // A rotation rewrites the secret (forced delete, then create).
    let r = c.call("PUT", "/v1/key/rotate/k1", b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    // A restart keeps everything; deletes are immediate.
    server.stop();
    let mut config = config_with_admin(&admin);
    config.keystore = moto.config(&moto.secret);
    let server = pki.start(config);
    let c = Client::new(&pki, Some(&admin), server.addr());
    let r = c.json("PUT", "/v1/key/decrypt/k1", dec).json();
    assert_eq!((&r["plaintext"], &r["version"]), (&dek["plaintext"], &json!("1")));
    assert_eq!(c.call("DELETE", "/v1/key/delete/k1", b"").unwrap().status, 200);
    assert_eq!(c.json("PUT", "/v1/key/generate/k1", json!({})).status, 404);
    assert_eq!(c.call("PUT", "/v1/key/create/k1", b"").unwrap().status, 200, "name reusable");
    server.stop();
}

/// A wrong secret key fails every call with the signature error, and the
/// status route says the store is there (any HTTP answer) while key calls
/// fail cleanly.
#[test]
fn a_wrong_secret_is_refused_by_signature() {
    let moto = Moto::start();
    let store = kes_adapters::store::open(&moto.config("not-the-secret")).unwrap().store;
    let name = kes_core::KeyName::parse("k").unwrap();
    let value = kes_core::crypto::SecretBytes::new(b"v".to_vec());
    let err = store.execute(kes_core::Command::Create { name, value }).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("SignatureDoesNotMatch"), "{text}");
    // The right one works on the same server.
    let store = kes_adapters::store::open(&moto.config(&moto.secret)).unwrap().store;
    let name = kes_core::KeyName::parse("k").unwrap();
    let value = kes_core::crypto::SecretBytes::new(b"v".to_vec());
    assert!(store.execute(kes_core::Command::Create { name, value }).is_ok());
}
