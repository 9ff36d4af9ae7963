//! After a connection flood the server gives memory back: RSS falls from its
//! peak once the connections are gone, instead of staying there (glibc keeps
//! freed arena memory unless trimmed). Measured on the real binary from
//! /proc, never by timing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Connections in the flood: enough for tens of MiB, few enough for the
/// default file limit of a CI runner (both ends hold one fd each).
const FLOOD: usize = 900;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// The server, stopped with SIGTERM so that it removes its --dev directory,
/// and the private TMPDIR it ran with, removed after it.
struct Kill(std::process::Child, std::path::PathBuf);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

#[test]
fn rss_falls_back_after_a_connection_flood() {
    let tmp = std::env::temp_dir().join(format!("kes-memory-test-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kes"))
        .args(["server", "--dev", "--addr", "127.0.0.1:0"])
        .env("TMPDIR", &tmp)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let kes = Kill(child, tmp);
    let (mut url, mut cert, mut key) = (String::new(), String::new(), String::new());
    for line in stderr.lines().map_while(Result::ok) {
        let value = || line.rsplit('=').next().unwrap().to_owned();
        if line.contains("export KES_SERVER=") {
            url = value();
        } else if line.contains("export KES_CLIENT_CERT=") {
            cert = value();
        } else if line.contains("export KES_CLIENT_KEY=") {
            key = value();
            break;
        }
    }
    let addr = url.trim_start_matches("https://").replace("localhost", "127.0.0.1");
    let server_cert = Path::new(&cert).with_file_name("server.cert");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(&server_cert).unwrap()).unwrap();
    let config = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(&cert).unwrap().map(Result::unwrap).collect(),
                PrivateKeyDer::from_pem_file(&key).unwrap(),
            )
            .unwrap(),
    );
    let connect = || {
        let tcp = TcpStream::connect(&addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let conn = rustls::ClientConnection::new(
            config.clone(),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        s.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        s.flush().unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        assert_eq!(&head[9..12], b"200");
        s
    };
    drop(connect());
    std::thread::sleep(Duration::from_millis(200));
    let base = rss_kib(kes.0.id());

    let flood: Vec<_> = (0..FLOOD).map(|_| connect()).collect();
    let peak = rss_kib(kes.0.id());
    drop(flood);

    // Bounded wait for the server to notice the closes and trim.
    let started = Instant::now();
    let target = base + (peak - base) / 2;
    let mut after = rss_kib(kes.0.id());
    while after > target && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
        after = rss_kib(kes.0.id());
    }
    eprintln!("RSS KiB: before {base}, with {FLOOD} connections {peak}, after {after}");
    assert!(peak > base + 8 * 1024, "the flood should cost memory: {base} -> {peak} KiB");
    assert!(
        after <= target,
        "RSS stays near its peak after the flood: before {base}, peak {peak}, after {after} KiB"
    );
    // And the server still serves.
    drop(connect());
}
