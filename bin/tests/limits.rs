//! Per-identity limits and the per-address handshake limit through the
//! binary, with curl as the clients (keep-alive, `--rate` to pace them).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kes_testkit::{cert, tempdir};

mod common;
use common::{kes, Node};

/// Sends `n` generate requests as `who` (paced at `rate` per second if
/// given, else as fast as one keep-alive connection goes), from `from`;
/// extra curl arguments after. The status of each, and the time taken.
fn generate(
    dir: &Path,
    url: &str,
    who: &str,
    n: u32,
    rate: Option<u32>,
    extra: &[&str],
) -> (Vec<String>, Duration) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-X", "PUT", "-d", r#"{"context":""}"#, "-o", "/dev/null"])
        .args(["-w", "%{http_code}\\n"])
        .args(tls_as(dir, who))
        .args(extra);
    if let Some(r) = rate {
        cmd.args(["--rate", &format!("{r}/s")]);
    }
    let start = Instant::now();
    let out = cmd.arg(format!("{url}/v1/key/generate/k?n=[1-{n}]")).output().unwrap();
    let codes = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    (codes, start.elapsed())
}

/// Floods as `who` over `conns` keep-alive connections for `secs`
/// seconds (curl killed then): the status of each request that finished.
fn flood(dir: &Path, url: &str, who: &str, conns: u32, secs: u64) -> (Vec<String>, Duration) {
    // Line-buffered, so the codes of finished requests survive the kill.
    let mut child = Command::new("stdbuf")
        .args(["-oL", "curl", "-s", "-X", "PUT", "-d", r#"{"context":""}"#, "-o", "/dev/null"])
        .args(["-w", "%{http_code}\\n", "-Z", "--parallel-max", &conns.to_string()])
        .args(tls_as(dir, who))
        .arg(format!("{url}/v1/key/generate/k?n=[1-1000000]"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let _ = child.kill();
    let took = start.elapsed();
    let out = child.wait_with_output().unwrap();
    let codes = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    (codes, took)
}

/// curl's TLS arguments: trust the server's certificate, present `who`'s.
fn tls_as(dir: &Path, who: &str) -> Vec<std::path::PathBuf> {
    let f = |s: &str| std::path::PathBuf::from(s);
    vec![
        f("--cacert"),
        dir.join("server.cert"),
        f("--cert"),
        dir.join(format!("{who}.cert")),
        f("--key"),
        dir.join(format!("{who}.key")),
    ]
}

fn count(codes: &[String], code: &str) -> usize {
    codes.iter().filter(|c| *c == code).count()
}

/// A directory with server, admin, `a` and `b` certificates and a config
/// whose policies `a` and `b` (generate on any key) carry `a_limits` and
/// none, plus `extra` at the end.
fn setup(tag: &str, a_limits: &str, extra: &str) -> std::path::PathBuf {
    let dir = tempdir(tag);
    cert(&dir, "server");
    let admin = cert(&dir, "admin");
    let (a, b) = (cert(&dir, "a"), cert(&dir, "b"));
    let config = format!(
        "address: 127.0.0.1:0\nadmin:\n  identity: {admin}\ntls:\n  key: server.key\n  cert: server.cert\npolicy:\n  a:\n    allow: [/v1/key/generate/*]\n    identities: [{a}]\n    limits:\n{a_limits}  b:\n    allow: [/v1/key/generate/*]\n    identities: [{b}]\n{extra}"
    );
    std::fs::write(dir.join("kes.yml"), config).unwrap();
    dir
}

#[test]
fn a_flooding_identity_is_held_to_its_rate_and_another_is_not() {
    let dir = setup(
        "limits-rate",
        "      rate: 20\n      burst: 20\n",
        "keystore:\n  fs:\n    path: keys\n",
    );
    let node = Node::start(&dir, "kes.yml");
    kes(&dir, &node.url, &["key", "create", "k"]);
    // A floods over 10 connections (far over 10x its rate) for 4 s; B at
    // 50/s at the same time.
    let (url, d) = (node.url.clone(), dir.clone());
    let b = std::thread::spawn(move || generate(&d, &url, "b", 150, Some(50), &[]));
    let (a_codes, a_took) = flood(&dir, &node.url, "a", 10, 4);
    let (b_codes, _) = b.join().unwrap();
    let (a_ok, a_429) = (count(&a_codes, "200"), count(&a_codes, "429"));
    assert_eq!(a_ok + a_429, a_codes.len(), "only 200 and 429: {a_codes:?}");
    let most = 20.0 + 20.0 * a_took.as_secs_f64() + 1.0;
    assert!(
        a_ok as f64 <= most && a_ok >= 60 && a_429 > 0,
        "A admitted {a_ok} ({a_429} refused) in {a_took:?}: burst 20 + 20/s allows at most {most:.0}"
    );
    // Refused connections wait out Retry-After (at most 1 s) before their
    // next request: about one refusal per connection per second.
    assert!(a_429 <= 10 * 5 + 10, "{a_429} refusals in {a_took:?} over 10 connections");
    assert_eq!(count(&b_codes, "200"), 150, "B is not limited by A's flood: {b_codes:?}");
    let metrics = Command::new("curl")
        .args(["-s"])
        .args(tls_as(&dir, "admin"))
        .arg(format!("{}/v1/metrics", node.url))
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains(&format!("kes_http_request_throttled{{policy=\"a\"}} {a_429}\n")),
        "{metrics}"
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_handshake_flood_from_one_address_does_not_shut_out_another() {
    let dir =
        setup("limits-handshakes", "      rate: 100000\n", "keystore:\n  fs:\n    path: keys\n");
    let text = std::fs::read_to_string(dir.join("kes.yml")).unwrap();
    let text = text.replace("  cert: server.cert\n", "  cert: server.cert\n  handshake_rate: 20\n");
    std::fs::write(dir.join("kes.yml"), text).unwrap();
    let node = Node::start(&dir, "kes.yml");
    kes(&dir, &node.url, &["key", "create", "k"]);
    // 127.0.0.2 opens a new connection per request, 20 at a time.
    let (url, d) = (node.url.clone(), dir.clone());
    let flood = std::thread::spawn(move || {
        let extra =
            ["--interface", "127.0.0.2", "-H", "Connection: close", "-Z", "--parallel-max", "20"];
        generate(&d, &url, "a", 400, None, &extra)
    });
    // 127.0.0.1 does the same at 5 connections per second meanwhile.
    let (codes, _) = generate(&dir, &node.url, "b", 10, Some(5), &["-H", "Connection: close"]);
    let (flood_codes, _) = flood.join().unwrap();
    assert_eq!(count(&codes, "200"), 10, "the other address is served: {codes:?}");
    let refused = flood_codes.iter().filter(|c| *c == "000").count();
    assert!(refused > 0, "the flood was over 20 handshakes a second: {flood_codes:?}");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `concurrent: 2` while the store (OpenBao, stopped with SIGSTOP) does not
/// answer: two requests wait, the third is refused at once.
#[test]
fn concurrent_holds_while_the_store_is_frozen() {
    let (bao, keystore) = common::openbao_with_approle("limits");
    let dir = setup("limits-concurrent", "      concurrent: 2\n", &keystore);
    let node = Node::start(&dir, "kes.yml");
    for k in ["k1", "k2", "k"] {
        kes(&dir, &node.url, &["key", "create", k]);
    }
    let signal = |sig: &str| {
        let ok = Command::new("kill").args([sig, &bao.0.id().to_string()]).status().unwrap();
        assert!(ok.success());
    };
    signal("-STOP");
    let waiting: Vec<_> = ["k1", "k2"]
        .into_iter()
        .map(|k| {
            let mut cmd = Command::new("curl");
            cmd.args(["-s", "-X", "PUT", "-d", r#"{"context":""}"#, "-o", "/dev/null"])
                .args(["-w", "%{http_code}"])
                .args(tls_as(&dir, "a"))
                .arg(format!("{}/v1/key/generate/{k}", node.url))
                .stdout(Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (codes, took) = generate(&dir, &node.url, "a", 1, None, &[]);
    assert_eq!(codes, ["429"], "the third request in flight is refused");
    assert!(took < Duration::from_secs(2), "at once, not after the store: {took:?}");
    signal("-CONT");
    for w in waiting {
        let out = w.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    }
    let (codes, _) = generate(&dir, &node.url, "a", 1, None, &[]);
    assert_eq!(codes, ["200"]);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
