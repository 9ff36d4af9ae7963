//! Operating the server: audit and error streams, metrics, TLS proxies (with a
//! real nginx), reload under load and graceful shutdown.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::*;
use kes_adapters::log::LogStream;
use kes_core::config::{ApiOverride, PolicyConfig};
use serde_json::{json, Value};

fn b64(b: &[u8]) -> String {
    STANDARD.encode(b)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Every request of a scripted session, refused ones included, yields one
/// audit line with its path and status; no secret appears in any event.
#[test]
fn audit_every_request_and_never_a_secret() {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let other = pki.client("other");
    let server = pki.start(config_with_admin(&admin));
    let events = server.logs().subscribe(LogStream::Audit);
    let errors = server.logs().subscribe(LogStream::Error);
    let c = Client::new(&pki, Some(&admin), server.addr());
    let o = Client::new(&pki, Some(&other), server.addr());
    let imported = [0x42u8; 32];
    let plaintext = b"attack at dawn, bring the cake";
    let mut script: Vec<(String, u16)> = Vec::new();
    let mut secrets: Vec<String> =
        vec![hex(&imported), b64(&imported), b64(plaintext), hex(plaintext)];
    let mut run = |client: &Client, method: &str, path: &str, body: Value, want: u16| -> Value {
        let r = client.json(method, path, body);
        assert_eq!(r.status, want, "{method} {path}: {}", r.text());
        script.push((path.to_owned(), want));
        r.json()
    };
    run(
        &c,
        "PUT",
        "/v1/key/import/imported",
        json!({"key": b64(&imported), "cipher": "AES256"}),
        200,
    );
    let dek = run(&c, "PUT", "/v1/key/generate/imported", json!({"context": b64(b"ctx")}), 200);
    let ct = run(&c, "PUT", "/v1/key/encrypt/imported", json!({"plaintext": b64(plaintext)}), 200);
    run(&c, "PUT", "/v1/key/decrypt/imported", json!({"ciphertext": ct["ciphertext"]}), 200);
    run(
        &c,
        "PUT",
        "/v1/key/decrypt/imported",
        json!({"ciphertext": ct["ciphertext"], "context": b64(b"x")}),
        400,
    );
    run(&o, "PUT", "/v1/key/generate/imported", json!({}), 403);
    run(&c, "PUT", "/v1/key/create/bad.name", json!({}), 400);
    run(&c, "GET", "/v1/key/describe/missing", json!({}), 404);
    let dek_pt = dek["plaintext"].as_str().unwrap().to_owned();
    secrets.push(hex(&STANDARD.decode(&dek_pt).unwrap()));
    secrets.push(dek_pt);
    let mut lines = Vec::new();
    for (path, code) in &script {
        let line = events.recv_blocking().unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["request"]["path"], path.as_str());
        assert_eq!(v["response"]["code"], *code);
        assert!(
            v["response"]["time"].as_u64().unwrap().is_multiple_of(1000),
            "nanoseconds, truncated to µs"
        );
        lines.push(line.to_string());
    }
    while let Ok(e) = errors.try_recv() {
        lines.push(e.to_string());
    }
    for line in &lines {
        for s in &secrets {
            assert!(!line.contains(s.as_str()), "secret {s} in {line}");
        }
    }
    server.stop();
}

/// `/v1/log/audit` streams to several subscribers at once (and its seed-era
/// `/trace` alias works too).
#[test]
fn audit_stream_to_two_subscribers() {
    let (pki, admin, server, c) = admin_server(|_| {});
    let sub = Client::new(&pki, Some(&admin), server.addr());
    let mut streams = Vec::new();
    for path in ["/v1/log/audit", "/v1/log/audit/trace"] {
        let mut s = sub.connect().unwrap();
        send(&mut s, "GET", path, b"", false).unwrap();
        assert_eq!(read_stream_head(&mut s).unwrap(), 200);
        streams.push(s);
    }
    // The subscription is registered by the time the head arrives.
    c.call("POST", "/v1/key/create/streamed", b"").unwrap();
    for s in &mut streams {
        // Earlier lines are the audit events of the subscriptions themselves.
        let v = loop {
            let line = read_chunk(s).unwrap();
            let v: Value = serde_json::from_str(line.trim_end()).unwrap();
            if v["request"]["path"] == "/v1/key/create/streamed" {
                break v;
            }
            assert!(v["request"]["path"].as_str().unwrap().starts_with("/v1/log/audit"));
        };
        assert_eq!(v["request"]["identity"], admin.identity.to_string());
        assert_eq!(v["response"]["code"], 200);
    }
    let mut errs = sub.connect().unwrap();
    send(&mut errs, "GET", "/v1/log/error", b"", false).unwrap();
    assert_eq!(read_stream_head(&mut errs).unwrap(), 200);
    server.stop();
}

fn parse_metrics(text: &str) -> Value {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        key = s.name + "".join("{%s=%s}" % kv for kv in sorted(s.labels.items()))
        out[key] = s.value
    out["TYPE " + fam.name] = fam.type
print(json.dumps(out))
"#;
    use std::io::Write;
    // scripts/test.sh points this at a venv with prometheus-client.
    let python = std::env::var("KES_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (run the tests with scripts/test.sh, which sets up the parser)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser rejected the metrics (run the tests with scripts/test.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn metrics_parse_and_count_requests() {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let other = pki.client("other");
    let server = pki.start(config_with_admin(&admin));
    let c = Client::new(&pki, Some(&admin), server.addr());
    let o = Client::new(&pki, Some(&other), server.addr());
    c.call("POST", "/v1/key/create/m", b"").unwrap();
    for _ in 0..4 {
        assert_eq!(c.json("POST", "/v1/key/generate/m", json!({})).status, 200);
    }
    for _ in 0..2 {
        assert_eq!(c.call("GET", "/v1/key/describe/none", b"").unwrap().status, 404);
    }
    for _ in 0..3 {
        assert_eq!(o.call("GET", "/v1/status", b"").unwrap().status, 403);
    }
    let r = c.call("GET", "/v1/metrics", b"").unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    let m = parse_metrics(&r.text());
    assert_eq!(m["kes_http_request_success_total{code=200}"], 5.0, "{m}");
    assert_eq!(m["kes_http_request_error_total{code=404}"], 2.0);
    assert_eq!(m["kes_http_request_error_total{code=403}"], 3.0);
    assert_eq!(m["kes_http_response_time_count"], 10.0);
    assert_eq!(m["TYPE kes_http_response_time"], "histogram");
    assert!(m["kes_http_request_active"].as_f64().unwrap() >= 1.0, "at least the scrape itself");
    assert_eq!(m["kes_cache_hits_total"], 3.0);
    assert_eq!(m["kes_cache_misses_total"], 3.0, "one for the key, two for the missing one");
    assert!(m["kes_system_up_time"].as_f64().unwrap() >= 0.0);
    assert!(m["kes_system_mem_resident"].as_f64().unwrap() > 0.0);
    assert!(m["kes_http_connections_open"].as_f64().unwrap() >= 1.0);
    assert!(m["kes_keystore_latency_seconds_count"].as_f64().unwrap() >= 2.0);
    server.stop();
}

#[test]
fn api_overrides_show_in_api_listing() {
    let (_pki, _admin, server, c) = admin_server(|cfg| {
        cfg.api.insert(
            "/v1/key/generate/".into(),
            ApiOverride { skip_auth: false, timeout: Some(Duration::from_secs(3)) },
        );
    });
    let r = c.call("GET", "/v1/api", b"").unwrap();
    let routes = r.json();
    let gen = routes.as_array().unwrap().iter().find(|r| r["path"] == "/v1/key/generate/").unwrap();
    assert_eq!(gen["timeout"], 3);
    assert_eq!(gen["method"], "PUT");
    assert_eq!(gen["max_body"], 1 << 20);
    server.stop();
}

/// A real nginx terminates client TLS and forwards the client certificate;
/// only a listed proxy may speak for another identity.
#[test]
fn tls_proxy_with_nginx() {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let proxy = pki.client("nginx");
    let app = pki.client("app");
    let mut config = config_with_admin(&admin);
    config.log.audit = false;
    config.tls.proxy_identities = vec![proxy.identity];
    config.policies.insert(
        "app".into(),
        PolicyConfig {
            limits: None,
            allow: vec!["/v1/key/create/app-*".into()],
            deny: vec![],
            identities: vec![app.identity],
        },
    );
    let server = pki.start(config);
    let audit = server.logs().subscribe(LogStream::Audit);
    let nginx = Nginx::start(&pki, server.addr(), &proxy);
    let via_nginx = Client::new(&pki, Some(&app), nginx.addr());
    let r = via_nginx.call("POST", "/v1/key/create/app-1", b"").unwrap();
    assert_eq!(r.status, 200, "the forwarded identity is the app's: {}", r.text());
    let v: Value = serde_json::from_str(&audit.recv_blocking().unwrap()).unwrap();
    assert_eq!(v["request"]["identity"], app.identity.to_string());
    assert_eq!(v["request"]["ip"], "192.0.2.7", "X-Forwarded-For from a proxy is the client IP");
    assert_eq!(via_nginx.call("POST", "/v1/key/create/other", b"").unwrap().status, 403);

    // A client that is not a listed proxy cannot claim another identity.
    let escaped: String =
        std::fs::read_to_string(&app.cert_file)
            .unwrap()
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
    let direct_other = pki.client("intruder");
    let mut s = Client::new(&pki, Some(&direct_other), server.addr()).connect().unwrap();
    let req = format!("POST /v1/key/create/app-2 HTTP/1.1\r\nHost: x\r\nX-Tls-Client-Cert: {escaped}\r\nContent-Length: 0\r\n\r\n");
    std::io::Write::write_all(&mut s, req.as_bytes()).unwrap();
    assert_eq!(read_reply(&mut s).unwrap().status, 403);
    // The proxy itself must always forward a certificate.
    let as_proxy = Client::new(&pki, Some(&proxy), server.addr());
    let r = as_proxy.call("POST", "/v1/key/create/app-3", b"").unwrap();
    assert_eq!(
        (r.status, r.json()["message"].as_str()),
        (400, Some("no client certificate is present"))
    );
    server.stop();
}

/// Reloading config and TLS certificates while clients hammer the server
/// fails no request and drops no connection.
#[test]
fn reload_under_load_fails_nothing() {
    let pki = Pki::new();
    let admin = pki.client("admin");
    let app = pki.client("app");
    let mut config = config_with_admin(&admin);
    config.policies.insert(
        "app".into(),
        PolicyConfig {
            limits: None,
            allow: vec!["/v1/key/generate/*".into()],
            deny: vec![],
            identities: vec![app.identity],
        },
    );
    let server = pki.start(config.clone());
    Client::new(&pki, Some(&admin), server.addr())
        .call("POST", "/v1/key/create/load", b"")
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let client = Client::new(&pki, Some(&app), server.addr());
            let (stop, ok) = (stop.clone(), ok.clone());
            std::thread::spawn(move || -> Result<(), String> {
                // Half keep one connection open throughout; half reconnect each time.
                let mut conn = client.connect().map_err(|e| e.to_string())?;
                while !stop.load(Ordering::Relaxed) {
                    let r = if i % 2 == 0 {
                        send(&mut conn, "PUT", "/v1/key/generate/load", b"{}", false)
                            .map_err(|e| e.to_string())?;
                        read_reply(&mut conn).map_err(|e| format!("keep-alive: {e}"))?
                    } else {
                        client
                            .call("PUT", "/v1/key/generate/load", b"{}")
                            .map_err(|e| format!("new conn: {e}"))?
                    };
                    if r.status != 200 {
                        return Err(format!("status {}: {}", r.status, r.text()));
                    }
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    for round in 0..6 {
        std::thread::sleep(Duration::from_millis(150));
        let mut cfg = config.clone();
        cfg.policies.insert(format!("extra-{round}"), PolicyConfig::default());
        let auth = kes_adapters::tls::ClientAuth { verify: false, required: true };
        let tls =
            kes_adapters::tls::server_config(&pki.server_cert, &pki.server_key, None, auth, None)
                .unwrap();
        server.reload(cfg, Some(tls)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(150));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap().unwrap();
    }
    assert!(ok.load(Ordering::Relaxed) > 20, "load actually ran");
    server.stop();
}

/// A keep-alive connection waiting for its next request is closed at once
/// by a graceful shutdown (its wait is not a timer of its own any more, but
/// the connection's read deadline, which the drain ends), and one with a
/// request head half-sent is let finish it.
#[test]
fn graceful_shutdown_closes_idle_connections_and_finishes_started_requests() {
    let (_pki, _admin, server, c) = admin_server(|_| {});
    let mut idle = c.connect().unwrap();
    send(&mut idle, "GET", "/version", b"", false).unwrap();
    assert_eq!(read_reply(&mut idle).unwrap().status, 200);
    let mut started = c.connect().unwrap();
    send(&mut started, "GET", "/version", b"", false).unwrap();
    assert_eq!(read_reply(&mut started).unwrap().status, 200);
    let head = b"GET /version HTTP/1.1\r\nHost: x\r\n";
    started.write_all(head).unwrap();
    started.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (done_tx, done) = std::sync::mpsc::channel();
    let shutdown = std::thread::spawn(move || {
        let clean = server.shutdown(Duration::from_secs(60));
        let _ = done_tx.send(());
        clean
    });
    // The idle connection ends without an answer (the idle timeout is 90 s,
    // the grace 60 s: only the drain ends it this soon).
    let mut buf = [0u8; 16];
    let r = idle.read(&mut buf);
    let closed = match &r {
        Ok(n) => *n == 0,
        // Not the client's own read timeout: that would mean still open.
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    };
    assert!(closed, "the idle connection must be closed at once: {r:?}");
    assert!(done.try_recv().is_err(), "shutdown waits for the started request");
    // The started request is completed and answered, then the connection closes.
    started.write_all(b"\r\n").unwrap();
    started.flush().unwrap();
    let r = read_reply(&mut started).unwrap();
    assert_eq!(r.status, 200);
    assert!(shutdown.join().unwrap(), "every connection finished within the grace period");
}

/// Graceful shutdown: every request the server accepted is answered; only new
/// connections are refused.
#[test]
fn graceful_shutdown_fails_no_in_flight_request() {
    let (pki, admin, server, c) = admin_server(|_| {});
    c.call("POST", "/v1/key/create/g", b"").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let client = Client::new(&pki, Some(&admin), server.addr());
            let (stop, answered) = (stop.clone(), answered.clone());
            std::thread::spawn(move || -> Result<(), String> {
                while !stop.load(Ordering::Relaxed) {
                    // Connection refused or a failed handshake: not in flight.
                    let Ok(mut s) = client.connect() else { return Ok(()) };
                    if s.conn.complete_io(&mut s.sock).is_err() {
                        return Ok(());
                    }
                    send(&mut s, "PUT", "/v1/key/generate/g", b"{}", true)
                        .map_err(|e| format!("send: {e}"))?;
                    let r =
                        read_reply(&mut s).map_err(|e| format!("in-flight request failed: {e}"))?;
                    if r.status != 200 {
                        return Err(format!("status {}", r.status));
                    }
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        server.shutdown(Duration::from_secs(10)),
        "all connections finished within the grace period"
    );
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap().unwrap();
    }
    assert!(answered.load(Ordering::Relaxed) > 10);
}
