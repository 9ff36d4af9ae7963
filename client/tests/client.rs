//! The client library against a real server over TLS.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kes_adapters::RunningServer;
use kes_client::{ApiKey, ClientBuilder, ClientError, Credentials};
use kes_core::config::{AdminSetting, PolicyConfig};
use kes_core::{Config, Identity};

struct Setup {
    dir: PathBuf,
    server: RunningServer,
    ca: String,
}

fn setup(tag: &str, edit: impl FnOnce(&mut Config)) -> Setup {
    setup_with(tag, &["127.0.0.1", "localhost"], edit)
}

/// A server whose certificate names `sans`, with a fresh admin API key.
fn setup_with(tag: &str, sans: &[&str], edit: impl FnOnce(&mut Config)) -> Setup {
    let dir = kes_testkit::tempdir(&format!("client-{tag}"));
    kes_testkit::cert_with_sans(&dir, "server", sans.iter().map(|s| s.to_string()).collect());
    let admin = ApiKey::generate();
    let mut config = Config::empty();
    config.admin = AdminSetting::Identity(admin.identity().unwrap());
    edit(&mut config);
    let store = Arc::new(kes_adapters::store::MemStore::default());
    let server = kes_testkit::serve(&dir, config, store);
    let ca = dir.join("server.cert").to_str().unwrap().to_owned();
    std::fs::write(dir.join("admin.key.txt"), admin.secret_text().as_str()).unwrap();
    Setup { dir, server, ca }
}

fn admin_key(s: &Setup) -> ApiKey {
    ApiKey::parse(&std::fs::read_to_string(s.dir.join("admin.key.txt")).unwrap()).unwrap()
}

fn url(s: &Setup) -> String {
    format!("https://127.0.0.1:{}", s.server.addr().port())
}

#[test]
fn api_key_client_round_trip_and_typed_errors() {
    let s = setup("roundtrip", |_| {});
    let c = ClientBuilder::new([url(&s)])
        .credentials(Credentials::ApiKey(admin_key(&s)))
        .ca_file(&s.ca)
        .build_blocking()
        .unwrap();
    assert!(!c.version().unwrap().is_empty());
    c.create_key("k1").unwrap();
    assert!(matches!(c.create_key("k1"), Err(ClientError::KeyExists)));
    assert!(matches!(c.describe_key("nope"), Err(ClientError::KeyNotFound)));
    let info = c.describe_key("k1").unwrap();
    assert_eq!(info.algorithm.as_deref(), Some("AES256"));
    let dek = c.generate_key("k1", b"ctx").unwrap();
    assert_eq!(
        c.decrypt("k1", &dek.ciphertext, b"ctx").unwrap().as_slice(),
        dek.plaintext.as_slice()
    );
    assert!(matches!(c.decrypt("k1", &dek.ciphertext, b"other"), Err(ClientError::NotAuthentic)));
    let ct = c.encrypt("k1", b"hello", b"").unwrap();
    assert_eq!(c.decrypt("k1", &ct, b"").unwrap().as_slice(), b"hello");
    assert_eq!(c.hmac("k1", b"m").unwrap().len(), 32);
    c.import_key("imported", &[7u8; 32]).unwrap();
    assert_eq!(c.list_keys("").unwrap(), vec!["imported", "k1"]);
    assert_eq!(c.list_keys("k").unwrap(), vec!["k1"]);
    assert_eq!(c.describe_self().unwrap()["admin"], true);
    c.delete_key("k1").unwrap();
    assert!(matches!(c.delete_key("k1"), Err(ClientError::KeyNotFound)));
    assert!(c.metrics().unwrap().contains("kes_http_request_success"));
    s.server.stop();
}

#[test]
fn policy_denial_is_not_allowed() {
    let app = ApiKey::generate();
    let app_id = app.identity().unwrap();
    let s = setup("policy", |cfg| {
        cfg.policies.insert(
            "app".into(),
            PolicyConfig {
                limits: None,
                allow: vec!["/v1/key/create/app-*".into()],
                deny: vec![],
                identities: vec![app_id],
            },
        );
    });
    let c = ClientBuilder::new([url(&s)])
        .credentials(Credentials::ApiKey(app))
        .insecure(true)
        .build_blocking()
        .unwrap();
    c.create_key("app-1").unwrap();
    assert!(matches!(c.create_key("other"), Err(ClientError::NotAllowed)));
    assert_eq!(c.describe_self().unwrap()["policy"], "app");
    s.server.stop();
}

#[test]
fn fails_over_to_a_live_endpoint() {
    let s = setup("failover", |_| {});
    // Nothing listens on the first endpoint (a port just released).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let c = ClientBuilder::new([format!("https://{dead}"), url(&s)])
        .credentials(Credentials::ApiKey(admin_key(&s)))
        .ca_file(&s.ca)
        .build_blocking()
        .unwrap();
    for i in 0..4 {
        c.create_key(&format!("f{i}")).unwrap();
    }
    assert_eq!(c.list_keys("f").unwrap().len(), 4);
    let only_dead = ClientBuilder::new([format!("https://{dead}")])
        .credentials(Credentials::ApiKey(admin_key(&s)))
        .timeout(Duration::from_secs(2))
        .insecure(true)
        .build_blocking()
        .unwrap();
    assert!(matches!(only_dead.version(), Err(ClientError::Connect(_))));
    s.server.stop();
}

#[test]
fn wrong_server_certificate_is_refused() {
    let s = setup("verify", |_| {});
    // System roots do not know the test server's self-signed certificate.
    let c = ClientBuilder::new([url(&s)])
        .credentials(Credentials::ApiKey(admin_key(&s)))
        .build_blocking()
        .unwrap();
    match c.version() {
        Err(e @ ClientError::ServerCertificate(_)) => {
            let m = e.to_string();
            assert!(m.contains("set KES_CAPATH or use -k"), "{m}");
            assert!(m.contains("not issued by a trusted CA"), "{m}");
        }
        other => panic!("expected a server certificate error, got {other:?}"),
    }
    s.server.stop();
}

#[test]
fn identity_matches_server_view() {
    let key = ApiKey::generate();
    let id: Identity = key.identity().unwrap();
    let s = setup("ident", |_| {});
    let admin = ClientBuilder::new([url(&s)])
        .credentials(Credentials::ApiKey(admin_key(&s)))
        .ca_file(&s.ca)
        .build_blocking()
        .unwrap();
    assert_eq!(
        admin.describe_self().unwrap()["identity"],
        admin_key(&s).identity().unwrap().to_string()
    );
    let other = ClientBuilder::new([url(&s)])
        .credentials(Credentials::ApiKey(key))
        .ca_file(&s.ca)
        .build_blocking()
        .unwrap();
    // Not assigned to any policy: the server knows the identity but not its policy.
    assert!(matches!(other.describe_self(), Err(ClientError::IdentityNotFound)));
    let _ = id;
    s.server.stop();
}

#[test]
fn wrong_server_name_is_refused() {
    // The certificate names only kes.example, not the address we dial.
    let s = setup_with("name", &["kes.example"], |_| {});
    let c = ClientBuilder::new([url(&s)])
        .credentials(Credentials::ApiKey(admin_key(&s)))
        .ca_file(&s.ca)
        .build_blocking()
        .unwrap();
    match c.version() {
        Err(ClientError::ServerCertificate(m)) => {
            assert!(m.contains("not valid for this server name"), "{m}")
        }
        other => panic!("expected a certificate error, got {other:?}"),
    }
    s.server.stop();
}

#[test]
fn idempotent_calls_reuse_one_connection() {
    let s = setup("pool", |_| {});
    let c = ClientBuilder::new([url(&s)])
        .credentials(Credentials::ApiKey(admin_key(&s)))
        .ca_file(&s.ca)
        .build_blocking()
        .unwrap();
    c.create_key("pooled").unwrap();
    for _ in 0..20 {
        c.generate_key("pooled", b"").unwrap();
    }
    // Twenty fresh connections would leave up to eight idle; reuse leaves one.
    assert_eq!(s.server.open_connections(), 1);
    s.server.stop();
}
