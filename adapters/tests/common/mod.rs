//! Shared end-to-end test plumbing: certificates made on the spot, a server
//! started in-process on a free port, and a blocking mTLS HTTP/1.1 client.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kes_adapters::store::KeyStore;
use kes_adapters::tls::{self, ClientAuth};
use kes_adapters::{start, RunningServer, ServerOptions};
use kes_core::config::AdminSetting;
use kes_core::{Config, Identity};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A test CA, the server's certificate, and files for them.
pub struct Pki {
    pub dir: PathBuf,
    ca_cert: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub ca_file: PathBuf,
}

/// A client's certificate and key.
pub struct Id {
    pub identity: Identity,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub certs: Vec<CertificateDer<'static>>,
    pub key_pem: String,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempdir("pki");
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, "kes test CA");
        let ca_cert = p.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
        let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
        let server_cert = dir.join("server.cert");
        let server_key = dir.join("server.key");
        let ca_file = dir.join("ca.cert");
        std::fs::write(&server_cert, cert.pem()).unwrap();
        std::fs::write(&server_key, key.serialize_pem()).unwrap();
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        Self { dir, ca_cert, ca_key, server_cert, server_key, ca_file }
    }

    /// A self-signed client certificate (CA:FALSE, like `kes identity new`).
    pub fn client(&self, name: &str) -> Id {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.self_signed(&key).unwrap();
        let cert_file = self.dir.join(format!("{name}.cert"));
        let key_file = self.dir.join(format!("{name}.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let identity = Identity::from_certificate(cert.der()).unwrap();
        Id {
            identity,
            cert_file,
            key_file,
            certs: vec![cert.der().clone()],
            key_pem: key.serialize_pem(),
        }
    }

    /// A self-signed `CA:TRUE` certificate and its key: what an attacker can
    /// make for themself.
    pub fn own_ca(&self, name: &str) -> Id {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = p.self_signed(&key).unwrap();
        self.id_files(name, vec![cert.der().clone()], &key)
    }

    /// A client certificate issued by an intermediate CA that the test CA
    /// signed; `certs` is the chain [leaf, intermediate].
    pub fn client_via_intermediate(&self, name: &str) -> Id {
        let ikey = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} intermediate"));
        let inter = p.signed_by(&ikey, &self.ca_cert, &self.ca_key).unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let leaf = p.signed_by(&key, &inter, &ikey).unwrap();
        self.id_files(name, vec![leaf.der().clone(), inter.der().clone()], &key)
    }

    /// A client certificate signed directly by the test CA.
    pub fn client_signed(&self, name: &str) -> Id {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &self.ca_cert, &self.ca_key).unwrap();
        self.id_files(name, vec![cert.der().clone()], &key)
    }

    fn id_files(
        &self,
        name: &str,
        certs: Vec<CertificateDer<'static>>,
        key: &rcgen::KeyPair,
    ) -> Id {
        let cert_file = self.dir.join(format!("{name}.cert"));
        let key_file = self.dir.join(format!("{name}.key"));
        let pem: String = certs.iter().map(|c| der_to_pem(c)).collect();
        std::fs::write(&cert_file, pem).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        Id {
            identity: Identity::from_certificate(&certs[0]).unwrap(),
            cert_file,
            key_file,
            certs,
            key_pem: key.serialize_pem(),
        }
    }

    /// Starts a server with `config` (admin is set by the caller).
    pub fn start(&self, config: Config) -> RunningServer {
        let store: Arc<dyn KeyStore> = kes_adapters::store::open(&config.keystore).unwrap().store;
        self.start_with_store(config, store)
    }

    /// Starts a server with `config` on an already opened store.
    pub fn start_with_store(&self, config: Config, store: Arc<dyn KeyStore>) -> RunningServer {
        let auth = ClientAuth {
            verify: config.tls.auth.unwrap_or(false),
            required: !config.any_skip_auth(),
        };
        let ca = config.tls.ca.as_deref().map(Path::new);
        let tls = tls::server_config(&self.server_cert, &self.server_key, None, auth, ca).unwrap();
        start(ServerOptions {
            config,
            addr: "127.0.0.1:0".parse().unwrap(),
            tls,
            store,
            threads: 2,
        })
        .unwrap()
    }

    /// A client config trusting the test CA, presenting `id` if given.
    pub fn client_config(&self, id: Option<&Id>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_cert.der().clone()).unwrap();
        let b = rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        Arc::new(match id {
            Some(id) => b
                .with_client_auth_cert(
                    id.certs.clone(),
                    PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => b.with_no_client_auth(),
        })
    }
}

/// One certificate as PEM.
pub fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// A config with `admin` as admin and everything else default.
pub fn config_with_admin(admin: &Id) -> Config {
    let mut c = Config::empty();
    c.admin = AdminSetting::Identity(admin.identity);
    c.log.error = std::env::var_os("KES_TEST_LOG").is_some();
    c
}

/// One HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A blocking mTLS client for one identity.
pub struct Client {
    pub cfg: Arc<rustls::ClientConfig>,
    pub addr: SocketAddr,
}

pub type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

impl Client {
    pub fn new(pki: &Pki, id: Option<&Id>, addr: SocketAddr) -> Self {
        Self { cfg: pki.client_config(id), addr }
    }

    /// Opens a TLS connection (handshake completes on first IO).
    pub fn connect(&self) -> std::io::Result<Tls> {
        let tcp = TcpStream::connect(self.addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
        let conn = rustls::ClientConnection::new(
            self.cfg.clone(),
            ServerName::try_from("localhost").unwrap(),
        )
        .map_err(std::io::Error::other)?;
        Ok(rustls::StreamOwned::new(conn, tcp))
    }

    /// One request on a fresh connection.
    pub fn call(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<Reply> {
        let mut s = self.connect()?;
        send(&mut s, method, path, body, true)?;
        read_reply(&mut s)
    }

    pub fn json(&self, method: &str, path: &str, body: serde_json::Value) -> Reply {
        self.call(method, path, body.to_string().as_bytes()).unwrap()
    }
}

pub fn send(
    s: &mut Tls,
    method: &str,
    path: &str,
    body: &[u8],
    close: bool,
) -> std::io::Result<()> {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    if close {
        req.extend_from_slice(b"Connection: close\r\n");
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    s.write_all(&req)?;
    s.flush()
}

/// Reads one response (Content-Length framed).
pub fn read_reply(s: &mut Tls) -> std::io::Result<Reply> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok(Reply { status, headers, body })
}

/// Copies a read-only vector directory (shared/ is read-only in CI).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        std::fs::write(&dst, std::fs::read(e.path()).unwrap()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

pub fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/vectors")
}

/// The usual setup: a PKI, an admin identity, a server with `config` (admin
/// set), and an admin client for it.
pub fn admin_server(edit: impl FnOnce(&mut Config)) -> (Pki, Id, RunningServer, Client) {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let mut config = config_with_admin(&admin);
    edit(&mut config);
    let server = pki.start(config);
    let client = Client::new(&pki, Some(&admin), server.addr());
    (pki, admin, server, client)
}

/// Reads one chunk of a chunked (streaming) response body.
pub fn read_chunk(s: &mut Tls) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "stream ended"));
        }
        line.push(byte[0]);
    }
    let len = usize::from_str_radix(String::from_utf8_lossy(&line).trim(), 16).unwrap();
    let mut data = vec![0u8; len + 2];
    s.read_exact(&mut data)?;
    data.truncate(len);
    Ok(String::from_utf8(data).unwrap())
}

/// Reads the head of a streaming response (no Content-Length).
pub fn read_stream_head(s: &mut Tls) -> std::io::Result<u16> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed"));
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf);
    Ok(head.split(' ').nth(1).unwrap().parse().unwrap())
}

/// A real nginx (Debian's nginx-light) terminating client TLS in front of a
/// kes server and forwarding the client certificate as `X-Tls-Client-Cert`,
/// authenticated to kes as `proxy`. Stopped on drop.
pub struct Nginx {
    child: std::process::Child,
    port: u16,
    pub dir: PathBuf,
}

impl Nginx {
    pub fn start(pki: &Pki, kes: SocketAddr, proxy: &Id) -> Self {
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nginx is required for this test (.ci/run installs it)");
        let port = free_port();
        let dir = tempdir("nginx");
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ }}
http {{
  access_log off;
  client_body_temp_path {dir}/tmp;
  proxy_temp_path {dir}/tmp;
  fastcgi_temp_path {dir}/tmp;
  uwsgi_temp_path {dir}/tmp;
  scgi_temp_path {dir}/tmp;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_verify_client optional_no_ca;
    location / {{
      proxy_pass https://127.0.0.1:{kes};
      proxy_http_version 1.1;
      proxy_ssl_certificate {pcert};
      proxy_ssl_certificate_key {pkey};
      proxy_set_header X-Tls-Client-Cert $ssl_client_escaped_cert;
      proxy_set_header X-Forwarded-For 192.0.2.7;
    }}
  }}
}}
"#,
            dir = dir.display(),
            cert = pki.server_cert.display(),
            key = pki.server_key.display(),
            kes = kes.port(),
            pcert = proxy.cert_file.display(),
            pkey = proxy.key_file.display(),
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = std::process::Command::new(bin)
            .args(["-p", dir.to_str().unwrap(), "-c", dir.join("nginx.conf").to_str().unwrap()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let nginx = Self { child, port, dir };
        let started = std::time::Instant::now();
        while TcpStream::connect(nginx.addr()).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nginx did not come up: {}",
                std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --- Store stand-ins and launchers: kes-testkit --------------------------

#[allow(unused_imports)] // each test crate uses some
pub use kes_testkit::{free_port, python, tempdir, wait, wait_port, Fake, FakeOptions, Proc};

/// Lifetime of the tokens the stand-ins grant: short, so the tests see
/// refreshes.
pub const TTL: u64 = 3;

/// A stand-in from kes-testkit's fakes/stores.py, speaking HTTPS with the
/// test CA when `pki` is given.
pub fn fake(kind: &str, pki: Option<&Pki>, args: &[&str]) -> Fake {
    let tls = pki.map(|p| (p.server_cert.as_path(), p.server_key.as_path()));
    Fake::start(kind, FakeOptions { tls, ttl: Some(TTL), ..Default::default() }, args)
}

/// A plain-HTTP stand-in whose tokens or keys live `ttl` seconds.
pub fn fake_ttl(kind: &str, ttl: u64, args: &[&str]) -> Fake {
    Fake::start(kind, FakeOptions { ttl: Some(ttl), ..Default::default() }, args)
}

/// A store's listing: how many names, or the error as text.
pub fn store_list(store: &Arc<dyn KeyStore>) -> Result<usize, String> {
    match store.execute(kes_core::Command::List) {
        Ok(kes_core::StoreReply::Names(n)) => Ok(n.len()),
        Ok(_) => Err("not a listing".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The first steps every store's test takes through a server: create,
/// create again (400 "key already exists"), import k2 from `imported`,
/// generate with k1 and decrypt that. Returns the data key and its decrypt
/// request body.
pub fn create_import_generate_decrypt(
    c: &Client,
    imported: [u8; 32],
) -> (serde_json::Value, serde_json::Value) {
    use base64::Engine as _;
    use serde_json::json;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    assert_eq!(c.call("PUT", "/v1/key/create/k1", b"").unwrap().status, 200);
    let r = c.call("PUT", "/v1/key/create/k1", b"").unwrap();
    assert_eq!((r.status, r.json()["message"].clone()), (400, json!("key already exists")));
    let r = c.json("PUT", "/v1/key/import/k2", json!({"key": b64(&imported), "cipher": "AES256"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let dek = c.json("PUT", "/v1/key/generate/k1", json!({"context": b64(b"ctx")})).json();
    let dec = json!({"ciphertext": dek["ciphertext"], "context": b64(b"ctx")});
    assert_eq!(
        c.json("PUT", "/v1/key/decrypt/k1", dec.clone()).json()["plaintext"],
        dek["plaintext"]
    );
    (dek, dec)
}
