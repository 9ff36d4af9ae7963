//! Resource and bookkeeping holes an attack run found: abandoned log
//! streams, audit durations, whitespace import bodies.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kes_adapters::log::LogStream;
use serde_json::{json, Value};

/// Waits (bounded) until the server has `n` open connections.
fn wait_for_connections(server: &kes_adapters::RunningServer, n: u64, what: &str) {
    let start = Instant::now();
    while server.open_connections() != n {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: {} connections open, want {n}",
            server.open_connections()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A subscriber that closes its socket is released at once, even on a quiet
/// server where no event would ever be written to it.
#[test]
fn abandoned_log_streams_are_released() {
    let (_pki, _admin, server, c) = admin_server(|_| {});
    for path in ["/v1/log/error", "/v1/log/audit", "/v1/log/audit/trace"] {
        let mut streams = Vec::new();
        for _ in 0..3 {
            let mut s = c.connect().unwrap();
            send(&mut s, "GET", path, b"", false).unwrap();
            assert_eq!(read_stream_head(&mut s).unwrap(), 200);
            streams.push(s);
        }
        wait_for_connections(&server, 3, path);
        // One leaves politely (TLS close_notify), one half-closes, one just
        // drops its TCP socket: all three are gone from the server while the
        // first two sockets are still held open here.
        let mut polite = streams.pop().unwrap();
        polite.conn.send_close_notify();
        let _ = std::io::Write::flush(&mut polite);
        let half = streams.pop().unwrap();
        half.sock.shutdown(std::net::Shutdown::Write).unwrap();
        drop(streams);
        wait_for_connections(&server, 0, path);
        drop((polite, half));
        // Nobody listens to the audit stream any more: audit work stops.
        assert!(!server.logs().wants_audit(), "{path}");
    }
    server.stop();
}

/// `response.time` is the real duration for answers the core gives at once
/// (refusals, generate, decrypt, metrics), not 0.
#[test]
fn audit_times_are_real_durations() {
    let (pki, _admin, server, c) = admin_server(|_| {});
    assert_eq!(c.call("PUT", "/v1/key/create/k", b"").unwrap().status, 200);
    let audit = server.logs().subscribe(LogStream::Audit);
    let stranger = Client::new(&pki, Some(&pki.client("stranger")), server.addr());
    let mut s = stranger.connect().unwrap();
    send(&mut s, "PUT", "/v1/key/create/x", b"", false).unwrap();
    assert_eq!(read_reply(&mut s).unwrap().status, 403);
    let mut s = c.connect().unwrap();
    send(&mut s, "PUT", "/v1/key/generate/k", b"{}", false).unwrap();
    let dek = read_reply(&mut s).unwrap().json();
    let body = json!({"ciphertext": dek["ciphertext"]}).to_string();
    send(&mut s, "PUT", "/v1/key/decrypt/k", body.as_bytes(), false).unwrap();
    assert_eq!(read_reply(&mut s).unwrap().status, 200);
    send(&mut s, "GET", "/v1/metrics", b"", false).unwrap();
    assert_eq!(read_reply(&mut s).unwrap().status, 200);
    for path in ["/v1/key/create/x", "/v1/key/generate/k", "/v1/key/decrypt/k", "/v1/metrics"] {
        let v: Value = serde_json::from_str(&audit.recv_blocking().unwrap()).unwrap();
        assert_eq!(v["request"]["path"], path);
        let t = v["response"]["time"].as_u64().unwrap();
        assert!(t > 0, "{path}: response.time is {t}");
        assert_eq!(t % 1000, 0, "{path}: nanoseconds truncated to microseconds");
    }
    server.stop();
}

/// An import body of only whitespace is a decode error, over the wire too.
#[test]
fn whitespace_import_body_is_a_bad_request() {
    let (_pki, _admin, server, c) = admin_server(|_| {});
    for body in [&b""[..], b"  \r\n\t"] {
        let r = c.call("PUT", "/v1/key/import/i", body).unwrap();
        assert_eq!(r.status, 400, "{body:?}: {}", r.text());
        assert_eq!(r.json()["message"], "invalid import key request body");
    }
    assert_eq!(c.call("GET", "/v1/key/describe/i", b"").unwrap().status, 404);
    server.stop();
}
