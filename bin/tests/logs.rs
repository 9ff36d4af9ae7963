//! The log streams of the real binary as operators break them: stdout (the
//! audit log) a pipe nobody reads, and stdout and stderr pipes whose readers
//! are gone. The server must neither freeze nor panic: requests that need an
//! audit record are refused with 503 while it cannot be written, what reports
//! on the server keeps answering, and when the reader resumes, service
//! resumes with every served request's audit line written exactly once.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use kes_testkit::{cert, tempdir};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A kes server with audit and error logs on, stdout and stderr piped to
/// the test; and an mTLS client for it.
struct Kes {
    child: Child,
    addr: String,
    tls: Arc<rustls::ClientConfig>,
    conn: Option<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
}

impl Kes {
    fn start(dir: &Path) -> (Self, std::process::ChildStdout, mpsc::Receiver<String>) {
        let admin = cert(dir, "admin");
        cert(dir, "server");
        let config = format!(
            "address: 127.0.0.1:0\nadmin:\n  identity: {admin}\ntls:\n  key: {d}/server.key\n  cert: {d}/server.cert\nlog:\n  audit: on\n  error: on\n",
            d = dir.display()
        );
        std::fs::write(dir.join("kes.yml"), config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_kes"))
            .args(["server", "--config"])
            .arg(dir.join("kes.yml"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let addr = loop {
            let l = lines.recv_timeout(Duration::from_secs(30)).expect("kes starts");
            if let Some(a) = l.split("listening on https://").nth(1) {
                break a.trim().to_owned();
            }
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(dir.join("server.cert")).unwrap()).unwrap();
        let tls = Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_file(dir.join("admin.cert")).unwrap()],
                    PrivateKeyDer::from_pem_file(dir.join("admin.key")).unwrap(),
                )
                .unwrap(),
        );
        let stdout = child.stdout.take().unwrap();
        (Self { child, addr, tls, conn: None }, stdout, lines)
    }

    /// One request on a kept-alive connection: (status, body).
    fn call(&mut self, method: &str, path: &str) -> (u16, String) {
        if self.conn.is_none() {
            let tcp = TcpStream::connect(&self.addr).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let c = rustls::ClientConnection::new(
                self.tls.clone(),
                ServerName::try_from("localhost").unwrap(),
            )
            .unwrap();
            self.conn = Some(rustls::StreamOwned::new(c, tcp));
        }
        let s = self.conn.as_mut().unwrap();
        let req = format!("{method} {path} HTTP/1.1\r\nHost: kes\r\nContent-Length: 0\r\n\r\n");
        s.write_all(req.as_bytes()).unwrap();
        s.flush().unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).expect("an answer before the read timeout");
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let status = head[9..12].parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        s.read_exact(&mut body).unwrap();
        if head.to_ascii_lowercase().contains("connection: close") {
            self.conn = None;
        }
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Kes {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_stuck_audit_reader_refuses_visibly_and_recovers_losing_nothing() {
    let dir = tempdir("stuck");
    let (mut kes, stdout, stderr) = Kes::start(&dir);
    // Nobody reads stdout: its pipe fills, the writer blocks, and within
    // the bound requests are refused instead of hanging.
    let mut answers: Vec<(String, u16)> = Vec::new();
    let started = Instant::now();
    let first_refusal = loop {
        assert!(started.elapsed() < Duration::from_secs(60), "never refused");
        let path = format!("/v1/key/describe/k-{}", answers.len());
        let began = Instant::now();
        let (status, body) = kes.call("GET", &path);
        assert!(began.elapsed() < Duration::from_secs(3), "a request hung {:?}", began.elapsed());
        answers.push((path, status));
        if status == 503 {
            assert!(body.contains("audit log is not being written"), "{body}");
            break answers.len();
        }
        assert_eq!(status, 404, "{body}");
    };
    // Refusing is quick, and what reports on the server still answers.
    let began = Instant::now();
    for i in 0..20 {
        let path = format!("/v1/key/describe/r-{i}");
        let (status, _) = kes.call("GET", &path);
        answers.push((path, status));
        assert_eq!(status, 503);
    }
    assert!(began.elapsed() < Duration::from_secs(2), "refusals took {:?}", began.elapsed());
    assert_eq!(kes.call("GET", "/v1/ready").0, 503, "load balancers go elsewhere");
    let (code, metrics) = kes.call("GET", "/v1/metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("\nkes_log_audit_stalled 1\n"), "{metrics}");
    let (code, status) = kes.call("GET", "/v1/status");
    assert_eq!(code, 200);
    assert!(status.contains(r#""audit_log_stalled":true"#), "{status}");

    // The reader resumes: service resumes without a restart.
    let out = Arc::new(Mutex::new(String::new()));
    let reader = {
        let out = out.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut o = out.lock().unwrap();
                o.push_str(&l);
                o.push('\n');
            }
        })
    };
    let began = Instant::now();
    loop {
        let path = format!("/v1/key/describe/after-{}", answers.len());
        let (status, _) = kes.call("GET", &path);
        answers.push((path, status));
        if status == 404 {
            break;
        }
        assert!(began.elapsed() < Duration::from_secs(10), "service never resumed");
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 0..50 {
        let path = format!("/v1/key/describe/late-{i}");
        let (status, _) = kes.call("GET", &path);
        assert_eq!(status, 404);
        answers.push((path, status));
    }
    // Every served request's audit line is there exactly once (refused ones
    // at most once).
    let last = answers.last().unwrap().0.clone();
    let began = Instant::now();
    while !out.lock().unwrap().contains(&format!("\"{last}\"")) {
        assert!(began.elapsed() < Duration::from_secs(10), "the last audit line never came");
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = out.lock().unwrap().clone();
    let mut lines: HashMap<String, usize> = HashMap::new();
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        *lines.entry(v["request"]["path"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    let served = answers.iter().filter(|(_, s)| *s != 503).count();
    for (path, status) in &answers {
        let n = lines.get(path).copied().unwrap_or(0);
        if *status == 503 {
            assert!(n <= 1, "{path}: {n} lines");
        } else {
            assert_eq!(n, 1, "{path} ({status}): {n} audit lines");
        }
    }
    eprintln!(
        "logs: {} requests, first refusal after {first_refusal}, {served} served and audited once each",
        answers.len()
    );
    assert!(kes.alive());
    // The error log said so once when it stalled and once when it resumed.
    let _ = Command::new("kill").args(["-TERM", &kes.child.id().to_string()]).status();
    let _ = kes.child.wait();
    let _ = reader.join();
    let errors: Vec<String> = stderr.try_iter().collect();
    let count = |s: &str| errors.iter().filter(|l| l.contains(s)).count();
    assert_eq!(count("audit log: stdout is not being read"), 1, "{errors:#?}");
    assert_eq!(count("audit log: written again"), 1, "{errors:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn log_writes_never_panic_when_their_readers_are_gone() {
    let dir = tempdir("gone");
    let (mut kes, stdout, stderr) = Kes::start(&dir);
    // Both readers go away.
    drop(stdout);
    drop(stderr);
    std::thread::sleep(Duration::from_millis(100));
    // Requests that need an audit record are refused (it cannot be
    // written); the process stays up and reports why.
    let mut refused = false;
    for i in 0..50 {
        let (status, _) = kes.call("GET", &format!("/v1/key/describe/k-{i}"));
        assert!(matches!(status, 404 | 503), "{status}");
        refused |= status == 503;
    }
    assert!(refused, "a closed audit log stops service");
    let (code, status) = kes.call("GET", "/v1/status");
    assert_eq!(code, 200);
    assert!(status.contains(r#""audit_log_stalled":true"#), "{status}");
    // A reload writes to the closed stderr: no panic either.
    let _ = Command::new("kill").args(["-HUP", &kes.child.id().to_string()]).status();
    std::thread::sleep(Duration::from_millis(300));
    assert!(kes.alive(), "a write to a closed stderr must not stop the server");
    assert_eq!(kes.call("GET", "/v1/metrics").0, 200);
    let _ = std::fs::remove_dir_all(&dir);
}
