//! A real Go net/http client (Debian's golang-go, standard library only; see
//! go/kmsclient.go) runs MinIO's SSE-KMS call sequence against the server:
//! every body streamed through Go's JSON encoder and so sent chunked, over
//! keep-alive connections. Our own client frames requests differently; this
//! is how MinIO's do.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::json;

#[test]
fn go_net_http_client_runs_the_minio_sequence() {
    let go = find_go().expect(
        "Go is required for this test: on PATH, or /usr/lib/go, /usr/local/go (scripts/test.sh installs golang-go when there is none)",
    );
    let (pki, admin, server, c) = admin_server(|_| {});
    let work = tempdir("go");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go/kmsclient.go");
    let out = Command::new(go)
        .arg("run")
        .arg(&src)
        .env("KES_ENDPOINT", format!("https://localhost:{}", server.addr().port()))
        .env("KES_CLIENT_CERT", &admin.cert_file)
        .env("KES_CLIENT_KEY", &admin.key_file)
        .env("KES_CA", &pki.ca_file)
        .env("KES_KEY", "minio-key")
        // No network and nothing outside the test's own directory.
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GO111MODULE", "off")
        .env("GOCACHE", work.join("cache"))
        .env("GOPATH", work.join("gopath"))
        .env("HOME", &work)
        .output()
        .expect("go run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the Go client failed:\n{stdout}\n{stderr}");
    for step in [
        "create",
        "generate",
        "decrypt",
        "decrypt-wrong-context",
        "encrypt",
        "import",
        "hmac",
        "rotate",
        "list",
        "delete",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l == format!("ok {step}") || l.starts_with(&format!("ok {step} "))),
            "no 'ok {step}' in:\n{stdout}"
        );
    }
    let reused: u32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("reused "))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(reused >= 10, "Go kept its connections alive ({reused} reused): {stdout}");
    // Go's HMAC of the key it created is the one our framing gets.
    let ours = c.json("PUT", "/v1/key/hmac/minio-key", json!({"message": base64_of(b"m")}));
    let go_hmac = stdout.lines().find_map(|l| l.strip_prefix("ok hmac ")).unwrap();
    assert_eq!(ours.json()["hmac"], go_hmac);
    // The key Go created is there for everyone.
    assert_eq!(c.call("GET", "/v1/key/describe/minio-key", b"").unwrap().status, 200);
    server.stop();
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Go where scripts/test.sh looks for it: on `PATH` first (any installer),
/// then the places Debian's package and Go's own tarball put it.
fn find_go() -> Option<std::path::PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("go")).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(["/usr/bin/go", "/usr/lib/go/bin/go", "/usr/local/go/bin/go"].map(Into::into))
        .find(|p| p.is_file())
}
