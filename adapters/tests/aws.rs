//! The AWS Secrets Manager store against moto (a real server speaking the
//! Secrets Manager API; `pip install 'moto[server]'`, which scripts/test.sh
//! does) with signature checking switched on: the first three calls create
//! an IAM user and its access key, after that every request must carry a
//! valid SigV4 signature, so a signing bug fails these tests.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use kes_core::config::{AwsConfig, AwsCredentials, KeystoreConfig, Secret};
use serde_json::{json, Value};

/// A moto server with SigV4 checking on, and an access key for kes.
struct Moto {
    child: Child,
    url: String,
    access: String,
    secret: String,
}

/// IAM in moto: a user "kes" with an access key, allowed Secrets Manager
/// and to assume the role "kes" (Secrets Manager), which a web identity may
/// assume too: five set-up calls.
const SETUP: &str = r#"
import boto3, json, sys
iam = boto3.client("iam", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="setup", aws_secret_access_key="setup")
iam.create_user(UserName="kes")
iam.put_user_policy(UserName="kes", PolicyName="kes", PolicyDocument=json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["secretsmanager:*", "sts:AssumeRole"], "Resource": "*"}]}))
k = iam.create_access_key(UserName="kes")["AccessKey"]
trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
    "Principal": {"AWS": "arn:aws:iam::123456789012:user/kes",
                  "Federated": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.example"},
    "Action": ["sts:AssumeRole", "sts:AssumeRoleWithWebIdentity"]}]}
r = iam.create_role(RoleName="kes", AssumeRolePolicyDocument=json.dumps(trust))
iam.put_role_policy(RoleName="kes", PolicyName="kes", PolicyDocument=json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["secretsmanager:*"], "Resource": "*"}]}))
print(json.dumps({"id": k["AccessKeyId"], "secret": k["SecretAccessKey"], "role": r["Role"]["Arn"]}))
"#;

impl Moto {
    fn start() -> Self {
        Self::start_with(SETUP, 5).0
    }

    /// moto checking signatures after `free` unsigned calls (the set-up's),
    /// and what the set-up script printed.
    fn start_with(setup: &str, free: u32) -> (Self, Value) {
        let port = free_port();
        let child = Command::new(python())
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", free.to_string())
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
        let out = Command::new(python()).args(["-c", setup, &url]).output().unwrap();
        assert!(out.status.success(), "IAM set-up: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let moto = Self {
            child,
            url,
            access: v["id"].as_str().unwrap().to_owned(),
            secret: v["secret"].as_str().unwrap().to_owned(),
        };
        (moto, v)
    }

    /// The store section with no credentials: the chain finds them.
    fn config_from_chain(&self) -> KeystoreConfig {
        KeystoreConfig::Aws(Box::new(AwsConfig {
            endpoint: self.url.clone(),
            region: "us-east-1".into(),
            kms_key: String::new(),
            credentials: None,
        }))
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

#[test]
fn secrets_manager_with_signature_checking() {
    let moto = Moto::start();
    let (pki, admin, server, c) = admin_server(|cfg| cfg.keystore = moto.config(&moto.secret));
    let (dek, dec) = create_import_generate_decrypt(&c, [3; 32]);

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

/// Environment variables for the credential chain.
type Env = Vec<(&'static str, String)>;

/// An environment for the credential chain: only `vars`, with a HOME that
/// has no ~/.aws, and instance metadata off unless a test points it
/// somewhere.
fn chain_env(vars: Env) -> impl Fn(&str) -> Option<String> {
    let home = tempdir("aws-home");
    let mut all: Env = vec![
        ("HOME", home.to_str().unwrap().to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ];
    all.extend(vars);
    move |name| all.iter().rev().find(|(k, _)| *k == name).map(|(_, v)| v.clone())
}

fn create(store: &std::sync::Arc<dyn kes_adapters::store::KeyStore>, name: &str) {
    let name = kes_core::KeyName::parse(name).unwrap();
    let value = kes_core::crypto::SecretBytes::new(b"v".to_vec());
    store.execute(kes_core::Command::Create { name, value }).unwrap();
}

/// EKS IRSA with nothing in any file: kes reads the projected token,
/// exchanges it at moto's STS (AssumeRoleWithWebIdentity) and signs every
/// Secrets Manager call with the temporary keys; moto checks each
/// signature, so a broken chain fails here.
#[test]
fn web_identity_through_moto_sts() {
    // Five set-up calls, then kes's STS exchange is the last unsigned one.
    let (moto, v) = Moto::start_with(SETUP, 6);
    let dir = tempdir("aws-irsa");
    let token = dir.join("token");
    std::fs::write(
        &token,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6a2VzIn0.sig\n",
    )
    .unwrap();
    let env = chain_env(vec![
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token.to_str().unwrap().to_owned()),
        ("AWS_ROLE_ARN", v["role"].as_str().unwrap().to_owned()),
        ("AWS_ROLE_SESSION_NAME", "kes-test".into()),
        ("AWS_ENDPOINT_URL_STS", moto.url.clone()),
    ]);
    let opened = kes_adapters::store::open_with_env(&moto.config_from_chain(), &env).unwrap();
    assert!(opened.label.contains("credentials from web identity"), "{}", opened.label);
    let pki = Pki::new();
    let admin = pki.client("admin");
    let server = pki.start_with_store(config_with_admin(&admin), opened.store);
    let c = Client::new(&pki, Some(&admin), server.addr());
    assert_eq!(c.call("PUT", "/v1/key/create/irsa", b"").unwrap().status, 200);
    let dek = c.json("PUT", "/v1/key/generate/irsa", json!({})).json();
    let r = c.json("PUT", "/v1/key/decrypt/irsa", json!({"ciphertext": dek["ciphertext"]}));
    assert_eq!(r.json()["plaintext"], dek["plaintext"]);
    assert_eq!(c.call("GET", "/v1/key/list/*", b"").unwrap().text().lines().count(), 1);
    server.stop();
    // A made-up key on the same moto is refused: signatures are checked.
    let bad = kes_adapters::store::open(&moto.config("wrong")).unwrap().store;
    let err = store_list(&bad).unwrap_err();
    assert!(err.contains("SignatureDoesNotMatch"), "{err}");
}

/// Static keys from the environment and from a shared credentials file
/// (named profile); the config file's `[profile x]` syntax too.
#[test]
fn environment_and_shared_files() {
    let moto = Moto::start();
    let env = chain_env(vec![
        ("AWS_ACCESS_KEY_ID", moto.access.clone()),
        ("AWS_SECRET_ACCESS_KEY", moto.secret.clone()),
    ]);
    let opened = kes_adapters::store::open_with_env(&moto.config_from_chain(), &env).unwrap();
    assert!(opened.label.contains("credentials from the environment"), "{}", opened.label);
    create(&opened.store, "from-env");
    assert!(!opened.label.contains(&moto.secret));

    let dir = tempdir("aws-files");
    let creds = dir.join("credentials");
    std::fs::write(
        &creds,
        format!("[default]\naws_access_key_id = AKIAWRONG\naws_secret_access_key = wrong\n\n[kes]\naws_access_key_id = {}\naws_secret_access_key = {}\n", moto.access, moto.secret),
    )
    .unwrap();
    let env = chain_env(vec![
        ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap().to_owned()),
        ("AWS_PROFILE", "kes".into()),
    ]);
    let opened = kes_adapters::store::open_with_env(&moto.config_from_chain(), &env).unwrap();
    assert!(opened.label.contains("profile 'kes'"), "{}", opened.label);
    assert_eq!(store_list(&opened.store), Ok(1));
    // The same keys in the config file, under `[profile kes]`.
    let config = dir.join("config");
    std::fs::write(
        &config,
        format!("[profile kes]\nregion = us-east-1\naws_access_key_id = {}\naws_secret_access_key = {}\n", moto.access, moto.secret),
    )
    .unwrap();
    let env = chain_env(vec![
        ("AWS_SHARED_CREDENTIALS_FILE", dir.join("none").to_str().unwrap().to_owned()),
        ("AWS_CONFIG_FILE", config.to_str().unwrap().to_owned()),
        ("AWS_PROFILE", "kes".into()),
    ]);
    let opened = kes_adapters::store::open_with_env(&moto.config_from_chain(), &env).unwrap();
    assert_eq!(store_list(&opened.store), Ok(1));
    // A profile asked for by name that no file has stops start-up.
    let env = chain_env(vec![
        ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap().to_owned()),
        ("AWS_PROFILE", "nope".into()),
    ]);
    let err = kes_adapters::store::open_with_env(&moto.config_from_chain(), &env).err().unwrap();
    assert!(err.contains("'nope'"), "{err}");
}

/// Temporary keys from instance metadata (IMDSv2), the container endpoint
/// and STS web identity, each handed out by the stand-in with a 6 s
/// Expiration (real moto STS keys underneath, so moto checks every
/// signature): kes fetches them again before they expire, re-reads rotated
/// token files, keeps using valid keys while a refresh fails, and never
/// signs with expired ones.
#[test]
fn temporary_credentials_are_refreshed() {
    let (moto, v) = Moto::start_with(SETUP, 5);
    let dir = tempdir("aws-temp");
    let auth_file = dir.join("container-token");
    std::fs::write(&auth_file, "pod-identity-1").unwrap();
    let web_file = dir.join("web-token");
    std::fs::write(&web_file, "web-token-1").unwrap();
    let role = v["role"].as_str().unwrap().to_owned();
    let fake = fake_ttl(
        "aws-creds",
        6,
        &[
            "--moto",
            &moto.url,
            "--access",
            &moto.access,
            "--secret",
            &moto.secret,
            "--role",
            &role,
            "--token-file",
            auth_file.to_str().unwrap(),
        ],
    );
    // IMDSv2 only: a GET without the session token is refused.
    let url = format!("{}/latest/meta-data/iam/security-credentials/", fake.url());
    assert_eq!(kes_testkit::http_code(&url), "401");

    // (the stand-in's counter, the environment, what the start-up log says)
    let sources: Vec<(&str, Env, &str)> = vec![
        (
            "imds",
            vec![
                ("AWS_EC2_METADATA_DISABLED", "false".into()),
                ("AWS_EC2_METADATA_SERVICE_ENDPOINT", fake.url()),
            ],
            "EC2 instance metadata",
        ),
        (
            "container",
            vec![
                ("AWS_CONTAINER_CREDENTIALS_FULL_URI", format!("{}/v1/credentials", fake.url())),
                ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", auth_file.to_str().unwrap().into()),
            ],
            "container credentials",
        ),
        (
            "sts",
            vec![
                ("AWS_WEB_IDENTITY_TOKEN_FILE", web_file.to_str().unwrap().into()),
                ("AWS_ROLE_ARN", role.clone()),
                ("AWS_ENDPOINT_URL_STS", fake.url()),
            ],
            "web identity",
        ),
    ];
    let stat = |k: &str| fake.stats(None)[k].as_u64().unwrap_or(0);
    for (kind, vars, label) in sources {
        let env = chain_env(vars);
        let opened = kes_adapters::store::open_with_env(&moto.config_from_chain(), &env).unwrap();
        assert!(opened.label.contains(label), "{}", opened.label);
        let store = opened.store;
        let before = stat(kind);
        // 8 s of calls across the 6 s lifetime: all succeed, and the keys
        // were fetched again on the way (at half their life).
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(8) {
            store_list(&store).unwrap_or_else(|e| panic!("{kind} at {:?}: {e}", start.elapsed()));
            if start.elapsed() > Duration::from_secs(2) {
                // Rotated token files are read at the next fetch.
                std::fs::write(&auth_file, "pod-identity-2").unwrap();
                std::fs::write(&web_file, "web-token-2").unwrap();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(stat(kind) >= before + 2, "{kind}: fetched {} times", stat(kind) - before);
        std::fs::write(&auth_file, "pod-identity-1").unwrap();
        std::fs::write(&web_file, "web-token-1").unwrap();
    }
    let tokens = fake.stats(None)["web_tokens"].clone();
    assert!(tokens.as_array().unwrap().contains(&json!("web-token-2")), "{tokens}");

    // A refresh that fails while the keys are still valid: they keep
    // signing; once they have expired, calls fail instead of using them.
    let env = chain_env(vec![
        ("AWS_EC2_METADATA_DISABLED", "false".into()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", fake.url()),
    ]);
    let store = kes_adapters::store::open_with_env(&moto.config_from_chain(), &env).unwrap().store;
    let fetched = Instant::now();
    fake.admin(None, "POST", "fail?on=1");
    let failed = stat("failed");
    std::thread::sleep(Duration::from_millis(3500)); // past half of the 6 s life
    assert_eq!(store_list(&store), Ok(0), "valid keys keep working while the refresh fails");
    assert!(stat("failed") > failed, "a refresh was tried");
    while fetched.elapsed() < Duration::from_millis(6200) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let err = store_list(&store).unwrap_err();
    assert!(err.contains("instance metadata"), "expired keys are not used: {err}");
    fake.admin(None, "POST", "fail?on=0");
    assert_eq!(store_list(&store), Ok(0), "a working service again: new keys");
}
