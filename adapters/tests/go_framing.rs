//! Requests framed as Go's net/http frames them, the way MinIO (through
//! kms-go) talks to KES: bodies of unknown length go out with
//! `Transfer-Encoding: chunked` and no Content-Length. Go's transport first
//! probes the body for one byte, so the first chunk holds one byte, then the
//! rest follows as the JSON encoder wrote it, then the zero chunk. And the
//! framing errors that must close the connection instead of being guessed.

mod common;

use std::io::{Read, Write};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::*;
use serde_json::{json, Value};

fn b64(b: &[u8]) -> String {
    STANDARD.encode(b)
}

/// One request as Go writes it: head with `Transfer-Encoding: chunked`, a
/// one-byte chunk (the transport's probe), the rest in chunks cut where the
/// encoder flushed (`cuts`), and the last chunk.
fn go_request(method: &str, path: &str, body: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:7373\r\nUser-Agent: Go-http-client/1.1\r\n\
         Transfer-Encoding: chunked\r\nContent-Type: application/json\r\nAccept-Encoding: gzip\r\n\r\n"
    );
    let mut writes = vec![head.into_bytes()];
    let mut bounds = vec![0, 1.min(body.len())];
    bounds.extend(cuts.iter().copied().filter(|&c| c > 1 && c < body.len()));
    bounds.push(body.len());
    bounds.dedup();
    for w in bounds.windows(2) {
        let piece = &body[w[0]..w[1]];
        let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
        chunk.extend_from_slice(piece);
        chunk.extend_from_slice(b"\r\n");
        writes.push(chunk);
    }
    writes.push(b"0\r\n\r\n".to_vec());
    writes
}

/// Sends a Go-framed request, each piece in its own TLS record (as Go's
/// writer flushes), and reads the reply.
fn go_call(s: &mut Tls, method: &str, path: &str, body: &Value) -> Reply {
    let mut body = serde_json::to_vec(body).unwrap();
    body.push(b'\n'); // json.Encoder ends every value with a newline
    let cut = body.len() / 2;
    for piece in go_request(method, path, &body, &[cut]) {
        s.write_all(&piece).unwrap();
        s.flush().unwrap();
    }
    read_reply(s).unwrap()
}

/// Every API that takes a body, on one keep-alive connection, framed as Go
/// does; results checked against the same calls with a Content-Length.
#[test]
fn every_body_api_accepts_go_chunked_bodies_over_keep_alive() {
    let (_pki, admin, server, c) = admin_server(|_| {});
    let mut s = c.connect().unwrap();
    let key = [7u8; 32];
    let r = go_call(
        &mut s,
        "PUT",
        "/v1/key/import/go-key",
        &json!({"key": b64(&key), "cipher": "AES256"}),
    );
    assert_eq!(r.status, 200, "import: {}", r.text());

    let ctx = b64(b"{\"bucket\":\"b\"}");
    let r = go_call(&mut s, "PUT", "/v1/key/generate/go-key", &json!({"context": ctx}));
    assert_eq!(r.status, 200, "generate: {}", r.text());
    let dek = r.json();
    let r = go_call(
        &mut s,
        "PUT",
        "/v1/key/decrypt/go-key",
        &json!({"ciphertext": dek["ciphertext"], "context": ctx}),
    );
    assert_eq!((r.status, r.json()["plaintext"].clone()), (200, dek["plaintext"].clone()));

    let r = go_call(&mut s, "PUT", "/v1/key/encrypt/go-key", &json!({"plaintext": b64(b"hello")}));
    assert_eq!(r.status, 200, "encrypt: {}", r.text());
    let sealed = r.json()["ciphertext"].clone();
    let r = go_call(
        &mut s,
        "POST",
        "/v1/key/bulk/decrypt/go-key",
        &json!([{"ciphertext": sealed}, {"ciphertext": dek["ciphertext"], "context": ctx}]),
    );
    assert_eq!(r.status, 200, "bulk decrypt: {}", r.text());
    assert_eq!(r.json(), json!([{"plaintext": b64(b"hello")}, {"plaintext": dek["plaintext"]}]));

    let r = go_call(&mut s, "PUT", "/v1/key/hmac/go-key", &json!({"message": b64(b"m")}));
    assert_eq!(r.status, 200, "hmac: {}", r.text());
    let with_length = c.json("PUT", "/v1/key/hmac/go-key", json!({"message": b64(b"m")}));
    assert_eq!(r.json(), with_length.json(), "same HMAC whichever framing");

    let r = go_call(
        &mut s,
        "POST",
        "/v1/policy/write/go-policy",
        &json!({"allow": ["/v1/key/generate/go-*"], "deny": []}),
    );
    assert_eq!(r.status, 200, "policy write: {}", r.text());
    let r = go_call(
        &mut s,
        "POST",
        "/v1/policy/assign/go-policy",
        &json!({"identity": "a".repeat(64)}),
    );
    assert_eq!(r.status, 200, "policy assign: {}", r.text());
    let r = c.call("GET", "/v1/policy/read/go-policy", b"").unwrap();
    assert!(r.text().contains("/v1/key/generate/go-*"), "{}", r.text());

    // The server decrypts what Go's framing imported, byte for byte.
    let r = c.json("PUT", "/v1/key/decrypt/go-key", json!({"ciphertext": sealed}));
    assert_eq!(r.json()["plaintext"], b64(b"hello"));
    let _ = admin;
    server.stop();
}

/// Several Go-framed requests in one write: answered in order, and a
/// Content-Length request after them still works.
#[test]
fn pipelined_chunked_requests() {
    let (_pki, _admin, server, c) = admin_server(|_| {});
    assert_eq!(c.call("PUT", "/v1/key/create/p", b"").unwrap().status, 200);
    let mut s = c.connect().unwrap();
    let mut batch = Vec::new();
    for i in 0..5 {
        let body = format!("{}\n", json!({"message": b64(format!("m{i}").as_bytes())}));
        for piece in go_request("PUT", "/v1/key/hmac/p", body.as_bytes(), &[3, 9]) {
            batch.extend_from_slice(&piece);
        }
    }
    batch.extend_from_slice(b"GET /version HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    s.write_all(&batch).unwrap();
    s.flush().unwrap();
    for i in 0..5 {
        let r = read_reply(&mut s).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let want =
            c.json("PUT", "/v1/key/hmac/p", json!({"message": b64(format!("m{i}").as_bytes())}));
        assert_eq!(r.json(), want.json(), "answer {i} is for request {i}");
    }
    assert_eq!(read_reply(&mut s).unwrap().status, 200);
    server.stop();
}

/// Sends raw bytes and returns the reply and whether the server then closed.
fn raw(c: &Client, bytes: &[u8]) -> (Reply, bool) {
    let mut s = c.connect().unwrap();
    s.write_all(bytes).unwrap();
    s.flush().unwrap();
    let r = read_reply(&mut s).unwrap();
    // The server closes right after answering; an open connection just
    // has nothing more to say (the read times out).
    s.sock.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
    let mut rest = [0u8; 64];
    let closed = match s.read(&mut rest) {
        Ok(n) => n == 0,
        Err(e) => {
            !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
        }
    };
    (r, closed)
}

#[test]
fn framing_errors_close_the_connection() {
    let (_pki, _admin, server, c) = admin_server(|_| {});
    assert_eq!(c.call("PUT", "/v1/key/create/k", b"").unwrap().status, 200);
    let head =
        |extra: &str| format!("PUT /v1/key/hmac/k HTTP/1.1\r\nHost: x\r\n{extra}\r\n").into_bytes();
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (head("Content-Length: +0\r\n"), 400, "invalid Content-Length"),
        (head("Content-Length: 0x10\r\n"), 400, "invalid Content-Length"),
        (head("Content-Length: -1\r\n"), 400, "invalid Content-Length"),
        (head("Transfer-Encoding: gzip\r\n"), 501, "transfer coding not supported"),
        (head("Transfer-Encoding: gzip, chunked\r\n"), 501, "transfer coding not supported"),
        (
            head("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n"),
            400,
            "both Transfer-Encoding and Content-Length",
        ),
        (
            [head("Transfer-Encoding: chunked\r\n"), b"+3\r\nabc\r\n0\r\n\r\n".to_vec()].concat(),
            400,
            "invalid chunk size",
        ),
        (
            [head("Transfer-Encoding: chunked\r\n"), b"3\r\nabcd\r\n0\r\n\r\n".to_vec()].concat(),
            400,
            "chunk data not followed by CRLF",
        ),
        (
            [head("Transfer-Encoding: chunked\r\n"), b"3\nabc\r\n0\r\n\r\n".to_vec()].concat(),
            400,
            "bare LF in chunked body",
        ),
        (
            [
                head("Transfer-Encoding: chunked\r\n"),
                format!("3;{}\r\nabc\r\n0\r\n\r\n", "x".repeat(4096)).into_bytes(),
            ]
            .concat(),
            400,
            "chunk size line too long",
        ),
    ];
    for (bytes, status, message) in cases {
        let (r, closed) = raw(&c, &bytes);
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned();
        assert_eq!(r.status, status, "{shown}: {}", r.text());
        assert!(
            r.json()["message"].as_str().unwrap_or("").contains(message),
            "{shown}: {}",
            r.text()
        );
        assert!(closed, "{shown}: the connection must be closed");
    }
    // The limit is on the decoded size: a 2 MiB chunked body to a 1 MiB route.
    let mut big = head("Transfer-Encoding: chunked\r\n");
    for _ in 0..32 {
        big.extend_from_slice(format!("10000\r\n{}\r\n", "a".repeat(0x10000)).as_bytes());
    }
    big.extend_from_slice(b"0\r\n\r\n");
    let (r, closed) = raw(&c, &big);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(closed);
    // Trailers are read and ignored.
    let mut ok = head("Transfer-Encoding: chunked\r\n");
    let body = json!({"message": b64(b"m")}).to_string();
    ok.extend_from_slice(
        format!("{:x}\r\n{body}\r\n0\r\nX-Checksum: 1\r\n\r\n", body.len()).as_bytes(),
    );
    let (r, closed) = raw(&c, &ok);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!closed, "a good request keeps the connection");
    server.stop();
}
