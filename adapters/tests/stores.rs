//! The cloud and vendor key stores end to end: GCP Secret Manager against
//! drongo (a real Secret Manager REST server from PyPI) with a token
//! endpoint that checks the service account's JWT signature; Azure Key
//! Vault, CipherTrust/KeySecure, Fortanix DSM and Entrust KeyControl
//! against fakes of their documented REST APIs (kes-testkit's fakes/stores.py: no
//! emulator of these services installs here).
//!
//! Each store runs the same lifecycle through a kes server: create,
//! import, generate, decrypt, list over several pages, delete and reuse a
//! name, a key rotation, a kes restart, tokens expiring and being revoked, and an outage
//! of the store (a TCP proxy in between refuses connections) with
//! `cache.offline` set.

mod common;

use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::*;
use kes_core::config::{
    AzureAuth, AzureConfig, EntrustConfig, FortanixConfig, GcpConfig, GcpCredentials,
    KeySecureConfig, KeystoreConfig, Secret,
};
use serde_json::{json, Value};

/// A TCP proxy in front of a store that can be taken down (connections
/// refused, open ones cut) and brought back on the same port.
struct Proxy {
    port: u16,
    down: Arc<AtomicBool>,
    quit: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: u16) -> Self {
        let port = free_port();
        let (down, quit) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (d, q, c) = (down.clone(), quit.clone(), conns.clone());
        std::thread::spawn(move || {
            let mut listener: Option<TcpListener> = None;
            while !q.load(Ordering::SeqCst) {
                if d.load(Ordering::SeqCst) {
                    listener = None;
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                let l = listener.get_or_insert_with(|| {
                    let l = loop {
                        match TcpListener::bind(("127.0.0.1", port)) {
                            Ok(l) => break l,
                            Err(_) => std::thread::sleep(Duration::from_millis(10)),
                        }
                    };
                    l.set_nonblocking(true).unwrap();
                    l
                });
                match l.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                            continue;
                        };
                        let mut all = c.lock().unwrap();
                        all.push(client.try_clone().unwrap());
                        all.push(server.try_clone().unwrap());
                        for (mut from, mut to) in [
                            (client.try_clone().unwrap(), server.try_clone().unwrap()),
                            (server, client),
                        ] {
                            std::thread::spawn(move || {
                                let _ = std::io::copy(&mut from, &mut to);
                                let _ = to.shutdown(Shutdown::Write);
                            });
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        wait_port(port);
        Self { port, down, quit, conns }
    }

    fn take_down(&self) {
        self.down.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(started.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn bring_up(&self) {
        self.down.store(false, Ordering::SeqCst);
        wait_port(self.port);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::SeqCst);
        self.take_down();
    }
}

fn b64(b: &[u8]) -> String {
    STANDARD.encode(b)
}

/// The lifecycle every store must pass. `config` is the store's section
/// (pointing at the proxy), `env` what the store reads from the
/// environment, `logins` the number of tokens the store's token issuer
/// has handed out, `revoke` invalidates them all (when the store checks
/// tokens: drongo does not).
fn lifecycle(
    pki: &Pki,
    config: KeystoreConfig,
    env: &dyn Fn(&str) -> Option<String>,
    proxy: &Proxy,
    logins: &dyn Fn() -> u64,
    revoke: Option<&dyn Fn()>,
) {
    let admin = pki.client("admin");
    let start = || {
        let mut cfg = config_with_admin(&admin);
        cfg.keystore = config.clone();
        cfg.cache.any = Duration::from_millis(500);
        cfg.cache.offline = Duration::from_secs(3600);
        let opened = kes_adapters::store::open_with_env(&cfg.keystore, env).unwrap();
        let server = pki.start_with_store(cfg, opened.store);
        let c = Client::new(pki, Some(&admin), server.addr());
        (server, c)
    };
    let (server, c) = start();
    let first_logins = logins();
    assert!(first_logins >= 1, "logged in at start-up");

    // Create, create again, import, generate, decrypt.
    create_import_generate_decrypt(&c, [7; 32]);
    let dek2 = c.json("PUT", "/v1/key/generate/k2", json!({})).json();
    let dec2 = json!({"ciphertext": dek2["ciphertext"]});

    // A listing over several pages (the fakes cap pages at 10 names).
    for i in 0..25 {
        assert_eq!(c.call("PUT", &format!("/v1/key/create/bulk-{i:02}"), b"").unwrap().status, 200);
    }
    let list = c.call("GET", "/v1/key/list/bulk-", b"").unwrap().text();
    assert_eq!(list.lines().count(), 25, "{list}");

    // Delete, then the name is free again; a missing key is 404.
    assert_eq!(c.call("DELETE", "/v1/key/delete/k1", b"").unwrap().status, 200);
    std::thread::sleep(Duration::from_millis(600)); // past cache.any
    assert_eq!(c.json("PUT", "/v1/key/generate/k1", json!({})).status, 404);
    let r = c.call("PUT", "/v1/key/create/k1", b"").unwrap();
    assert_eq!(r.status, 200, "name reusable: {}", r.text());
    assert_eq!(c.call("DELETE", "/v1/key/delete/nope", b"").unwrap().status, 404);

    // Key versions: a rotation rewrites the key's entry through the staging
    // protocol (names the store must accept); old data keeps decrypting.
    let r = c.call("PUT", "/v1/key/rotate/k2", b"").unwrap();
    assert_eq!((r.status, r.json()["version"].clone()), (200, json!(2)), "{}", r.text());
    let dek3 = c.json("PUT", "/v1/key/generate/k2", json!({})).json();
    assert_eq!(dek3["version"], "2");
    let list = c.call("GET", "/v1/key/list/k", b"").unwrap().text();
    assert_eq!(list.lines().count(), 2, "no staged copy is listed: {list}");

    // kes restarts: the keys (and versions) are in the store.
    server.stop();
    let (server, c) = start();
    let r = c.json("PUT", "/v1/key/decrypt/k2", dec2.clone()).json();
    assert_eq!(
        (r["plaintext"].clone(), r["version"].clone()),
        (dek2["plaintext"].clone(), json!("1"))
    );
    let r = c.json("PUT", "/v1/key/decrypt/k2", json!({"ciphertext": dek3["ciphertext"]})).json();
    assert_eq!(
        (r["plaintext"].clone(), r["version"].clone()),
        (dek3["plaintext"].clone(), json!("2"))
    );

    // Tokens expire (the fakes grant TTL seconds) and are refreshed.
    let before = logins();
    std::thread::sleep(Duration::from_secs(TTL + 1));
    assert_eq!(c.json("PUT", "/v1/key/decrypt/k2", dec2.clone()).status, 200);
    assert_eq!(c.call("PUT", "/v1/key/create/after-expiry", b"").unwrap().status, 200);
    assert!(logins() > before, "a new token after expiry");
    // A token the store revokes early is replaced on its 401.
    if let Some(revoke) = revoke {
        revoke();
        let before = logins();
        assert_eq!(c.call("PUT", "/v1/key/create/after-revoke", b"").unwrap().status, 200);
        assert!(logins() > before, "a new token after a revocation");
    }

    // The store goes away: cached keys keep working (cache.offline), new
    // keys fail cleanly, and everything works again once it is back.
    assert_eq!(c.json("PUT", "/v1/key/generate/k2", json!({})).status, 200);
    proxy.take_down();
    std::thread::sleep(Duration::from_millis(600)); // past cache.any
    let r = c.json("PUT", "/v1/key/decrypt/k2", dec2.clone());
    assert_eq!(r.status, 200, "offline cache: {}", r.text());
    let r = c.call("PUT", "/v1/key/create/during-outage", b"").unwrap();
    assert!(r.status >= 500, "{} {}", r.status, r.text());
    assert!(r.json()["message"].is_string());
    proxy.bring_up();
    assert_eq!(c.call("PUT", "/v1/key/create/during-outage", b"").unwrap().status, 200);
    assert_eq!(c.json("PUT", "/v1/key/decrypt/k2", dec2).json()["plaintext"], dek2["plaintext"]);
    server.stop();
}

#[test]
fn gcp_secret_manager_on_drongo() {
    let dir = tempdir("gcp");
    let (key, modulus) = kes_testkit::gcp_service_account_key(&dir);
    let (_drongo, port) = kes_testkit::start_drongo();
    let proxy = Proxy::start(port);
    let email = "kes@project-1.iam.gserviceaccount.com";
    let token_port = free_port();
    let aud = format!("http://127.0.0.1:{token_port}/token");
    // The token endpoint on the port reserved above (its URL is in `aud`).
    let opts = FakeOptions { port: Some(token_port), ttl: Some(TTL), ..Default::default() };
    let args = ["--modulus", &modulus, "--key-id", "key-1", "--email", email, "--aud", &aud];
    let _tokens = Fake::start("gcp-token", opts, &args);
    let stats = || {
        let out = Command::new("curl")
            .args(["-sS", &format!("http://127.0.0.1:{token_port}/_fake/stats")])
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["logins"].as_u64().unwrap()
    };
    let config = |key_pem: String| {
        KeystoreConfig::Gcp(Box::new(GcpConfig {
            endpoint: format!("http://127.0.0.1:{}", proxy.port),
            project_id: "project-1".into(),
            scopes: vec!["https://www.googleapis.com/auth/cloud-platform".into()],
            credentials: Some(GcpCredentials {
                client_email: email.into(),
                client_id: "1234".into(),
                private_key_id: "key-1".into(),
                private_key: Secret::new(key_pem),
                token_uri: aud.clone(),
            }),
        }))
    };
    let pem = std::fs::read_to_string(&key).unwrap();

    // A key the token endpoint does not know is refused at start-up.
    let other = dir.join("other.pem");
    Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-out"])
        .arg(&other)
        .output()
        .unwrap();
    let err = kes_adapters::store::open(&config(std::fs::read_to_string(&other).unwrap()))
        .err()
        .expect("a wrong key must not log in");
    assert!(err.contains("Invalid JWT Signature"), "{err}");
    // Pasted from the JSON key file, with `\n` escapes: accepted.
    let escaped = pem.replace('\n', "\\n");
    assert!(kes_adapters::store::open(&config(escaped)).is_ok());
    // No key in the config: the same key file named by
    // GOOGLE_APPLICATION_CREDENTIALS (Application Default Credentials).
    let key_file = dir.join("sa.json");
    let sa = json!({"type": "service_account", "project_id": "project-1", "private_key_id": "key-1",
        "private_key": pem, "client_email": email, "client_id": "1234", "token_uri": aud});
    std::fs::write(&key_file, sa.to_string()).unwrap();
    let KeystoreConfig::Gcp(mut adc) = config(pem.clone()) else { unreachable!() };
    adc.credentials = None;
    let path = key_file.to_str().unwrap().to_owned();
    let env = move |k: &str| (k == "GOOGLE_APPLICATION_CREDENTIALS").then(|| path.clone());
    let opened = kes_adapters::store::open_with_env(&KeystoreConfig::Gcp(adc), &env).unwrap();
    assert!(opened.label.contains("(service account kes@project-1"), "{}", opened.label);
    assert!(opened.store.execute(kes_core::Command::List).is_ok());

    // drongo accepts any token: no revocation step for GCP.
    let pki = Pki::new();
    let no_env = |_: &str| None;
    lifecycle(&pki, config(pem), &no_env, &proxy, &stats, None);
    // Values live in version 1's payload, base64.
    let out = Command::new("curl")
        .args([
            "-sS",
            &format!("http://127.0.0.1:{port}/v1/projects/project-1/secrets/k2/versions/1:access"),
        ])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let file = STANDARD.decode(v["payload"]["data"].as_str().unwrap()).unwrap();
    // k2 was rotated: a ring that embeds both versions' KES values.
    let ring = kes_core::crypto::KeyRing::decode(&file).unwrap();
    assert!(ring.is_versioned() && ring.versions().len() == 2);
}

#[test]
fn azure_key_vault_on_its_documented_api() {
    let pki = Pki::new();
    let fake = fake(
        "azure",
        Some(&pki),
        &["--tenant", "tenant-1", "--client-id", "app-1", "--client-secret", "s3cret"],
    );
    let proxy = Proxy::start(fake.port);
    let ca = pki.ca_file.to_str().unwrap().to_owned();
    let authority = fake.url();
    let env = move |name: &str| match name {
        "SSL_CERT_FILE" => Some(ca.clone()),
        "AZURE_AUTHORITY_HOST" | "AZURE_POD_IDENTITY_AUTHORITY_HOST" => Some(authority.clone()),
        _ => None,
    };
    let config = |auth: AzureAuth| {
        KeystoreConfig::Azure(Box::new(AzureConfig {
            endpoint: format!("https://localhost:{}", proxy.port),
            auth,
        }))
    };
    let secret = |s: &str| AzureAuth::ClientSecret {
        tenant_id: "tenant-1".into(),
        client_id: "app-1".into(),
        client_secret: Secret::new(s.into()),
    };
    // A wrong client secret stops start-up with Entra ID's reason.
    let err = kes_adapters::store::open_with_env(&config(secret("wrong")), &env).err().unwrap();
    assert!(err.contains("AADSTS7000215"), "{err}");
    // Managed identity (IMDS, here at AZURE_POD_IDENTITY_AUTHORITY_HOST) works too.
    let managed = config(AzureAuth::ManagedIdentity { client_id: "app-1".into() });
    assert!(kes_adapters::store::open_with_env(&managed, &env).is_ok());
    // The vault refuses calls without a token, with Azure's challenge.
    let out = Command::new("curl")
        .args(["-sS", "-i", "--cacert", pki.ca_file.to_str().unwrap()])
        .arg(format!("{}/secrets?api-version=7.4", fake.url()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("HTTP/1.1 401") && text.contains("WWW-Authenticate: Bearer"),
        "{text}"
    );

    let logins = || fake.stats(Some(&pki.ca_file))["logins"].as_u64().unwrap();
    let revoke = || fake.revoke(Some(&pki.ca_file));
    lifecycle(&pki, config(secret("s3cret")), &env, &proxy, &logins, Some(&revoke));
}

#[test]
fn keysecure_on_its_documented_api() {
    let pki = Pki::new();
    let fake = fake("keysecure", Some(&pki), &["--secret", "refresh-1"]);
    let proxy = Proxy::start(fake.port);
    let config = |token: &str| {
        KeystoreConfig::KeySecure(Box::new(KeySecureConfig {
            endpoint: format!("https://localhost:{}", proxy.port),
            token: Secret::new(token.into()),
            domain: String::new(),
            tls_ca: Some(pki.ca_file.to_str().unwrap().into()),
        }))
    };
    let err = kes_adapters::store::open(&config("wrong")).err().unwrap();
    assert!(err.contains("NCERRAuthFailed"), "{err}");
    let logins = || fake.stats(Some(&pki.ca_file))["logins"].as_u64().unwrap();
    let revoke = || fake.revoke(Some(&pki.ca_file));
    lifecycle(&pki, config("refresh-1"), &|_| None, &proxy, &logins, Some(&revoke));
}

#[test]
fn fortanix_on_its_documented_api() {
    let pki = Pki::new();
    let api_key = b64(b"app-1:app-secret");
    let fake = fake("fortanix", Some(&pki), &["--secret", &api_key]);
    let proxy = Proxy::start(fake.port);
    let config = |key: &str| {
        KeystoreConfig::Fortanix(Box::new(FortanixConfig {
            endpoint: format!("https://localhost:{}", proxy.port),
            group_id: "group-1".into(),
            api_key: Secret::new(key.into()),
            tls_ca: Some(pki.ca_file.to_str().unwrap().into()),
        }))
    };
    let err = kes_adapters::store::open(&config("d3Jvbmc=")).err().unwrap();
    assert!(err.contains("invalid API key"), "{err}");
    let logins = || fake.stats(Some(&pki.ca_file))["logins"].as_u64().unwrap();
    let revoke = || fake.revoke(Some(&pki.ca_file));
    lifecycle(&pki, config(&api_key), &|_| None, &proxy, &logins, Some(&revoke));
}

#[test]
fn entrust_keycontrol_on_its_documented_api() {
    let pki = Pki::new();
    let fake = fake(
        "entrust",
        Some(&pki),
        &["--vault-id", "vault-1", "--box-id", "box-1", "--client-id", "kes", "--secret", "pa55"],
    );
    let proxy = Proxy::start(fake.port);
    let config = |password: &str, box_id: &str| {
        KeystoreConfig::Entrust(Box::new(EntrustConfig {
            endpoint: format!("https://localhost:{}", proxy.port),
            vault_id: "vault-1".into(),
            box_id: box_id.into(),
            username: "kes".into(),
            password: Secret::new(password.into()),
            tls_ca: Some(pki.ca_file.to_str().unwrap().into()),
        }))
    };
    let err = kes_adapters::store::open(&config("wrong", "box-1")).err().unwrap();
    assert!(err.contains("Invalid credentials"), "{err}");
    let err = kes_adapters::store::open(&config("pa55", "box-2")).err().unwrap();
    assert!(err.contains("Box not found"), "{err}");
    let logins = || fake.stats(Some(&pki.ca_file))["logins"].as_u64().unwrap();
    let revoke = || fake.revoke(Some(&pki.ca_file));
    lifecycle(&pki, config("pa55", "box-1"), &|_| None, &proxy, &logins, Some(&revoke));
}

/// Application Default Credentials with no key anywhere in a file kes
/// reads: the metadata server (GCE, GKE Workload Identity) and workload
/// identity federation (`external_account`: a subject token from a file,
/// with service account impersonation, or from a URL). The stand-in issues
/// tokens that live 4 s and checks every Secret Manager call's token before
/// passing it to drongo, so a stale or missing token fails the test.
#[test]
fn gcp_application_default_credentials() {
    let (_drongo, port) = kes_testkit::start_drongo();
    let dir = tempdir("gcp-adc");
    let subject = dir.join("subject-token");
    std::fs::write(&subject, "eyJhbGciOiJSUzI1NiJ9.subject-1.sig").unwrap();
    let aud =
        "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/kes/providers/k8s";
    let upstream = format!("http://127.0.0.1:{port}");
    let fake = fake_ttl(
        "gcp-adc",
        4,
        &["--upstream", &upstream, "--aud", aud, "--token-file", subject.to_str().unwrap()],
    );
    let config = |endpoint: String| {
        KeystoreConfig::Gcp(Box::new(GcpConfig {
            endpoint,
            project_id: "project-adc".into(),
            scopes: vec!["https://www.googleapis.com/auth/cloud-platform".into()],
            credentials: None,
        }))
    };
    let stat = |k: &str| fake.stats(None)[k].as_u64().unwrap_or(0);
    // Calls for 6 s across the 4 s token life all succeed (the stand-in
    // refuses expired tokens) and tokens were fetched again on the way.
    let run = |store: &Arc<dyn kes_adapters::store::KeyStore>, what: &str| {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(6) {
            store_list(store).unwrap_or_else(|e| panic!("{what} at {:?}: {e}", start.elapsed()));
            if start.elapsed() > Duration::from_secs(2) {
                std::fs::write(&subject, "eyJhbGciOiJSUzI1NiJ9.subject-2.sig").unwrap();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        std::fs::write(&subject, "eyJhbGciOiJSUzI1NiJ9.subject-1.sig").unwrap();
    };

    // The metadata server refuses a request without Metadata-Flavor.
    let url = format!("{}/computeMetadata/v1/instance/service-accounts/default/token", fake.url());
    assert_eq!(kes_testkit::http_code(&url), "403");

    // 1. The metadata server, at GCE_METADATA_HOST.
    let host = format!("127.0.0.1:{}", fake.port);
    let env = move |k: &str| (k == "GCE_METADATA_HOST").then(|| host.clone());
    let opened = kes_adapters::store::open_with_env(&config(fake.url()), &env).unwrap();
    assert!(opened.label.contains("credentials from the metadata server"), "{}", opened.label);
    let store = opened.store;
    let name = kes_core::KeyName::parse("adc-key").unwrap();
    let value = kes_core::crypto::SecretBytes::new(b"v".to_vec());
    store.execute(kes_core::Command::Create { name, value }).unwrap();
    let before = stat("metadata");
    run(&store, "metadata server");
    assert!(stat("metadata") >= before + 2, "tokens were refreshed");
    // A failing refresh while the token is valid: calls go on; after it
    // expired, they fail cleanly; then it recovers.
    let fresh = opened_at_refresh(&fake, &store);
    fake.admin(None, "POST", "fail?on=1");
    std::thread::sleep(Duration::from_millis(2400)); // past half of the 4 s life
    assert_eq!(store_list(&store), Ok(1), "a valid token keeps working while the refresh fails");
    assert!(stat("failed") > 0);
    while fresh.elapsed() < Duration::from_millis(4300) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let err = store_list(&store).unwrap_err();
    assert!(err.contains("metadata server"), "an expired token is not used: {err}");
    fake.admin(None, "POST", "fail?on=0");
    assert_eq!(store_list(&store), Ok(1));

    // 2. Workload identity federation: the subject token file (read again
    //    at each refresh) exchanged at STS, then a service account's token.
    let impersonate = format!(
        "{}/v1/projects/-/serviceAccounts/kes@project-adc.iam.gserviceaccount.com:generateAccessToken",
        fake.url()
    );
    let ext = json!({"type": "external_account", "audience": aud,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": format!("{}/v1/token", fake.url()),
        "service_account_impersonation_url": impersonate,
        "credential_source": {"file": subject.to_str().unwrap()}});
    let ext_file = dir.join("external.json");
    std::fs::write(&ext_file, ext.to_string()).unwrap();
    let path = ext_file.to_str().unwrap().to_owned();
    let env = move |k: &str| (k == "GOOGLE_APPLICATION_CREDENTIALS").then(|| path.clone());
    let opened = kes_adapters::store::open_with_env(&config(fake.url()), &env).unwrap();
    assert!(opened.label.contains("workload identity federation"), "{}", opened.label);
    let (sts, imp) = (stat("sts"), stat("impersonate"));
    run(&opened.store, "external account");
    assert!(stat("sts") >= sts + 2 && stat("impersonate") >= imp + 2, "both steps refreshed");

    // 3. The same without impersonation, the subject token from a URL
    //    (JSON, with a header), as Azure-hosted workloads get it.
    let ext = json!({"type": "external_account", "audience": aud,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": format!("{}/v1/token", fake.url()),
        "credential_source": {"url": format!("{}/subject", fake.url()),
            "headers": {"Metadata": "True"},
            "format": {"type": "json", "subject_token_field_name": "access_token"}}});
    std::fs::write(&ext_file, ext.to_string()).unwrap();
    let path = ext_file.to_str().unwrap().to_owned();
    let env = move |k: &str| (k == "GOOGLE_APPLICATION_CREDENTIALS").then(|| path.clone());
    let opened = kes_adapters::store::open_with_env(&config(fake.url()), &env).unwrap();
    assert_eq!(store_list(&opened.store), Ok(1));
    // A wrong subject token is refused at start-up with STS's reason.
    std::fs::write(&subject, "someone-else").unwrap();
    let ext = json!({"type": "external_account", "audience": aud,
        "token_url": format!("{}/v1/token", fake.url()),
        "credential_source": {"file": dir.join("nope").to_str().unwrap()}});
    std::fs::write(&ext_file, ext.to_string()).unwrap();
    let err = kes_adapters::store::open_with_env(&config(fake.url()), &env).err().unwrap();
    assert!(err.contains("subject token file"), "{err}");
}

/// Waits for the store's next token fetch and returns when it happened
/// (so a test can time a token's life from there).
fn opened_at_refresh(fake: &Fake, store: &Arc<dyn kes_adapters::store::KeyStore>) -> Instant {
    let n = fake.stats(None)["metadata"].as_u64().unwrap_or(0);
    loop {
        store_list(store).unwrap();
        if fake.stats(None)["metadata"].as_u64().unwrap_or(0) > n {
            return Instant::now();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
