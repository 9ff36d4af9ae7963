//! The identity is the first certificate's, never a later one's: an attacker
//! who sends [own CA certificate, victim's certificate] with their own key
//! must not become the victim (policy-identity.md §1.1), with `tls.auth` on
//! or off, directly or through a TLS proxy (a real nginx).

mod common;

use common::*;
use kes_core::config::PolicyConfig;
use kes_core::Config;

/// What the server makes of a chain: refused in the handshake, or a reply.
fn call_with_chain(
    pki: &Pki,
    chain_of: &[&Id],
    key_of: &Id,
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
) -> std::io::Result<Reply> {
    let id = Id {
        identity: key_of.identity,
        cert_file: key_of.cert_file.clone(),
        key_file: key_of.key_file.clone(),
        certs: chain_of.iter().flat_map(|i| i.certs.iter().cloned()).collect(),
        key_pem: key_of.key_pem.clone(),
    };
    Client::new(pki, Some(&id), addr).call(method, path, b"")
}

struct Setup {
    pki: Pki,
    admin: Id,
    app: Id,
    chained: Id,
    proxy: Id,
    attacker: Id,
    /// A self-signed CA:TRUE client certificate with a policy of its own.
    lone_ca: Id,
}

fn setup() -> Setup {
    let pki = Pki::new();
    Setup {
        admin: pki.client_signed("admin"),
        app: pki.client_signed("app"),
        chained: pki.client_via_intermediate("chained"),
        proxy: pki.client_signed("proxy"),
        attacker: pki.own_ca("attacker"),
        lone_ca: pki.own_ca("lone-ca"),
        pki,
    }
}

fn config(s: &Setup, auth: bool) -> Config {
    let mut c = config_with_admin(&s.admin);
    c.tls.auth = Some(auth);
    c.tls.ca = Some(s.pki.ca_file.display().to_string());
    c.tls.proxy_identities = vec![s.proxy.identity];
    c.policies.insert(
        "app".into(),
        PolicyConfig {
            limits: None,
            allow: vec!["/v1/key/create/app-*".into(), "/v1/identity/self/describe".into()],
            deny: vec![],
            identities: vec![s.app.identity, s.chained.identity, s.lone_ca.identity],
        },
    );
    c
}

/// The attack through `addr` must not act as `victim`: either the handshake
/// fails or the request is refused, the server never names the victim as
/// the caller, and no key is created.
fn assert_attack_fails(s: &Setup, addr: std::net::SocketAddr, victim: &Id, key: &str, what: &str) {
    let chain = [&s.attacker, victim];
    if let Ok(r) =
        call_with_chain(&s.pki, &chain, &s.attacker, addr, "PUT", &format!("/v1/key/create/{key}"))
    {
        assert_ne!(r.status, 200, "{what}: the attack created a key: {}", r.text());
    }
    if let Ok(r) =
        call_with_chain(&s.pki, &chain, &s.attacker, addr, "GET", "/v1/identity/self/describe")
    {
        assert!(
            !r.text().contains(&victim.identity.to_string()),
            "{what}: the server took the attacker for the victim: {}",
            r.text()
        );
    }
}

fn assert_no_key(s: &Setup, addr: std::net::SocketAddr, key: &str) {
    let admin = Client::new(&s.pki, Some(&s.admin), addr);
    let r = admin.call("GET", &format!("/v1/key/describe/{key}"), b"").unwrap();
    assert_eq!(r.status, 404, "key '{key}' must not exist: {}", r.text());
}

fn direct(auth: bool) {
    let s = setup();
    let server = s.pki.start(config(&s, auth));
    let addr = server.addr();
    let what = format!("direct, tls.auth {auth}");
    assert_attack_fails(&s, addr, &s.admin, "admin-x", &format!("{what}, as admin"));
    assert_attack_fails(&s, addr, &s.app, "app-x", &format!("{what}, as app"));
    assert_no_key(&s, addr, "admin-x");
    assert_no_key(&s, addr, "app-x");
    if !auth {
        // Without chain verification the handshake succeeds; the server must
        // say why it refuses rather than pick the later certificate.
        let r = call_with_chain(
            &s.pki,
            &[&s.attacker, &s.admin],
            &s.attacker,
            addr,
            "PUT",
            "/v1/key/create/y",
        )
        .unwrap();
        assert_eq!(r.status, 400);
        assert!(r.json()["message"].as_str().unwrap().contains("first client certificate"));
    }

    // Legitimate callers still work: the admin, a CA-signed leaf, and a
    // [leaf, intermediate CA] chain (identity: the leaf).
    let admin = Client::new(&s.pki, Some(&s.admin), addr);
    assert_eq!(admin.call("PUT", "/v1/key/create/by-admin", b"").unwrap().status, 200);
    let app = Client::new(&s.pki, Some(&s.app), addr);
    assert_eq!(app.call("PUT", "/v1/key/create/app-1", b"").unwrap().status, 200);
    let chained = Client::new(&s.pki, Some(&s.chained), addr);
    let r = chained.call("PUT", "/v1/key/create/app-2", b"").unwrap();
    assert_eq!(r.status, 200, "{what}: [leaf, intermediate] chain: {}", r.text());
    let r = chained.call("GET", "/v1/identity/self/describe", b"").unwrap();
    assert!(r.text().contains(&s.chained.identity.to_string()), "{}", r.text());
    // A lone self-signed CA:TRUE certificate is still its own identity
    // (without verification; with it, it is not issued by the CA).
    if !auth {
        let own = Client::new(&s.pki, Some(&s.lone_ca), addr);
        let r = own.call("GET", "/v1/identity/self/describe", b"").unwrap();
        assert!(r.text().contains(&s.lone_ca.identity.to_string()), "{}", r.text());
    }
    server.stop();
}

#[test]
fn attack_chain_never_yields_another_identity_without_verification() {
    direct(false);
}

#[test]
fn attack_chain_never_yields_another_identity_with_verification() {
    direct(true);
}

fn through_proxy(auth: bool) {
    let s = setup();
    let server = s.pki.start(config(&s, auth));
    let nginx = Nginx::start(&s.pki, server.addr(), &s.proxy);
    let what = format!("through nginx, tls.auth {auth}");
    assert_attack_fails(&s, nginx.addr(), &s.admin, "admin-x", &format!("{what}, as admin"));
    assert_attack_fails(&s, nginx.addr(), &s.app, "app-x", &format!("{what}, as app"));
    assert_no_key(&s, server.addr(), "admin-x");
    assert_no_key(&s, server.addr(), "app-x");
    let app = Client::new(&s.pki, Some(&s.app), nginx.addr());
    let r = app.call("PUT", "/v1/key/create/app-1", b"").unwrap();
    assert_eq!(r.status, 200, "{what}: a legitimate client: {}", r.text());
    server.stop();
}

#[test]
fn attack_chain_through_a_proxy_without_verification() {
    through_proxy(false);
}

#[test]
fn attack_chain_through_a_proxy_with_verification() {
    through_proxy(true);
}
