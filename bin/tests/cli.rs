//! The `kes` binary as a user runs it: config files, flags, `--dev`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use kes_testkit::{cert, tempdir};

struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Self { child, lines, seen: Vec::new() }
    }

    /// Waits for a stderr line containing `needle`.
    fn wait_for(&mut self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!("no '{needle}' on stderr; saw {:#?}", self.seen),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn curl(dir: &Path, who: &str, ca: &Path, method: &str, url: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", method])
        .arg("--cacert")
        .arg(ca)
        .arg("--cert")
        .arg(dir.join(format!("{who}.cert")))
        .arg("--key")
        .arg(dir.join(format!("{who}.key")))
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn seed_style_config_file() {
    let dir = tempdir("seed");
    cert(&dir, "server");
    let admin = cert(&dir, "admin");
    let app = cert(&dir, "app");
    let config = r#"
address: 127.0.0.1:0
root: ${ADMIN_IDENTITY}
tls:
  key: server.key
  cert: server.cert
cache:
  expiry:
    any: 5m0s
    unused: 20s
log:
  error: on
  audit: off
policy:
  my-policy:
    paths:
    - /v1/key/create/my-key
    - /v1/key/generate/my-key
    identities:
    - ${APP_IDENTITY}
    - ${NOT_SET_ANYWHERE}
keys:
  - name: "my-key-0"
keystore:
  fs:
    path: ./keys
"#;
    std::fs::write(dir.join("config.yml"), config).unwrap();
    // What a crash in the middle of a create leaves: a temp file with key bytes.
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    let stale = dir.join("keys/.my-key-0.tmp-4194305-0");
    std::fs::write(&stale, b"half a key").unwrap();
    let mut kes = Running::spawn(
        Command::new(env!("CARGO_BIN_EXE_kes"))
            .args(["server", "--config", "config.yml"])
            .current_dir(&dir)
            .env("ADMIN_IDENTITY", &admin)
            .env("APP_IDENTITY", &app),
    );
    kes.wait_for("removed stale temp file");
    assert!(!stale.exists(), "the stale temp file is removed at start-up");
    let line = kes.wait_for("listening on");
    let url = line.rsplit(' ').next().unwrap().replace("127.0.0.1", "localhost");
    assert!(
        kes.seen.iter().any(|l| l.contains("NOT_SET_ANYWHERE")),
        "warning for the unset variable"
    );
    let ca = dir.join("server.cert");
    assert_eq!(curl(&dir, "app", &ca, "POST", &format!("{url}/v1/key/create/my-key")), "200");
    assert_eq!(curl(&dir, "app", &ca, "POST", &format!("{url}/v1/key/create/other")), "403");
    assert_eq!(curl(&dir, "admin", &ca, "DELETE", &format!("{url}/v1/key/delete/my-key-0")), "200");
    assert!(dir.join("keys/my-key").exists());
    assert!(!dir.join("keys/my-key-0").exists());
}

#[test]
fn config_errors_name_file_and_line() {
    let dir = tempdir("bad");
    // Writes `text` as `name` and runs `kes server --config name`: (exit code, stderr).
    let serve = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_kes"))
            .args(["server", "--config", name])
            .current_dir(&dir)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = serve(
        "config.yml",
        "admin:\n  identity: disabled\ncache:\n  expiry:\n    any: five minutes\n",
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("config.yml: line 5:"), "{err}");

    let gcp = "admin:\n  identity: disabled\nkeystore:\n  gcp:\n    secretmanager:\n      project_id: p\n      credentials:\n        private_key: k\n";
    let (code, err) = serve("gcp.yml", gcp);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("gcp.yml") && err.contains("credentials.client_email is required"),
        "{err}"
    );
    let generic = "admin:\n  identity: disabled\nkeystore:\n  generic:\n    endpoint: https://p\n";
    let (code, err) = serve("generic.yml", generic);
    assert_eq!(code, Some(1));
    assert!(err.contains("keystore 'generic' is not supported yet"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_kes"))
        .args(["server", "--auth", "maybe", "--root", "x"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--auth"));
    let out = Command::new(env!("CARGO_BIN_EXE_kes"))
        .args(["server", "--config", "missing.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.yml"));
}

/// The lines `--dev` prints work when pasted: our own CLI (with the API key
/// and KES_CAPATH) and curl (with the certificate files). The certificate
/// directory is private and gone after the server stops; a failed start
/// leaves nothing behind either.
#[test]
fn dev_mode_prints_a_working_client_setup() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempdir("devtmp");
    let mut kes = Running::spawn(
        Command::new(env!("CARGO_BIN_EXE_kes"))
            .args(["server", "--dev", "--addr", "127.0.0.1:0"])
            .env("TMPDIR", &tmp),
    );
    let banner = kes.wait_for("client certificates:");
    assert!(banner.contains("not chain-verified"), "{banner}");
    let value = |kes: &mut Running, name: &str| {
        kes.wait_for(&format!("export {name}=")).split_once('=').unwrap().1.to_owned()
    };
    let url = value(&mut kes, "KES_SERVER");
    let capath = value(&mut kes, "KES_CAPATH");
    let api_key = value(&mut kes, "KES_API_KEY");
    let cert = value(&mut kes, "KES_CLIENT_CERT");
    let key = value(&mut kes, "KES_CLIENT_KEY");
    assert!(api_key.starts_with("kes:v1:"), "{api_key}");
    let dir = Path::new(&capath).parent().unwrap().to_owned();
    assert!(dir.starts_with(&tmp));
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);

    let pasted = [
        ("KES_SERVER", url.clone()),
        ("KES_CAPATH", capath.clone()),
        ("KES_API_KEY", api_key.clone()),
    ];
    let (code, _, err) = kes_client(&pasted, &["key", "create", "dev-key"]);
    assert_eq!(code, 0, "the pasted lines work with kes itself: {err}");
    let (code, out, err) = kes_client(&pasted, &["identity", "info", "--json"]);
    assert_eq!(code, 0, "{err}");
    let id = kes_client(&[], &["identity", "of", &api_key]).1;
    assert!(out.contains(id.trim()), "the API key is the admin: {out} vs {id}");

    // `kes metric` piped: one JSON object per interval, with KES's keys.
    let mut metric = Command::new(env!("CARGO_BIN_EXE_kes"))
        .args(["metric", "--rate", "200ms"])
        .envs(pasted.iter().map(|(k, v)| (*k, v.as_str())))
        .env_remove("KES_CLIENT_CERT")
        .env_remove("KES_CLIENT_KEY")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(metric.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let second: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let _ = metric.kill();
    let _ = metric.wait();
    assert!(first["kes_http_request_success"].as_u64().unwrap() >= 2, "{first}");
    assert!(first["kes_http_response_time"].is_object(), "{first}");
    assert!(
        second["kes_system_up_time"].as_u64() >= first["kes_system_up_time"].as_u64(),
        "{first} {second}"
    );

    let out = Command::new("curl")
        .args(["-sS", "-w", " %{http_code}"])
        .arg("--cacert")
        .arg(&capath)
        .args(["--cert", &cert, "--key", &key])
        .arg(format!("{url}/v1/status"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with(" 200"), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("\"keystore_latency\""));

    signal(&kes.child, "-TERM");
    assert_eq!(kes.child.wait().unwrap().code(), Some(0));
    assert!(!dir.exists(), "the certificate directory is removed on exit");

    // A port that is taken: start-up fails and removes its directory too.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kes"))
        .args(["server", "--dev", "--addr", &taken.local_addr().unwrap().to_string()])
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "nothing left in TMPDIR");
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// `kes --version`, `kes server` without a mode, `kes identity` alone.
#[test]
fn version_missing_mode_and_bare_identity() {
    for flag in ["-v", "--version"] {
        let out = Command::new(env!("CARGO_BIN_EXE_kes")).arg(flag).output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_kes")).arg("server").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--config") && err.contains("--dev"), "{err}");
    let (code, out, _) = kes_client(&[], &["identity"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["api_key"].as_str().unwrap().starts_with("kes:v1:"), "{out}");
}

#[test]
fn identity_of_matches_the_server() {
    let dir = tempdir("idof");
    let id = cert(&dir, "c");
    let out = Command::new(env!("CARGO_BIN_EXE_kes"))
        .args(["identity", "of"])
        .arg(dir.join("c.cert"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), id);
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig}");
}

/// SIGHUP re-reads the config: a new policy applies at once, a broken file is
/// refused with a message and the running configuration stays. SIGTERM exits 0.
#[test]
fn sighup_reloads_and_sigterm_exits_cleanly() {
    let dir = tempdir("hup");
    cert(&dir, "server");
    let admin = cert(&dir, "admin");
    let app = cert(&dir, "app");
    let config = |allow: &str| {
        format!(
            "address: 127.0.0.1:0\nadmin:\n  identity: {admin}\ntls:\n  key: server.key\n  cert: server.cert\npolicy:\n  app:\n    allow:\n    - {allow}\n    identities:\n    - {app}\n"
        )
    };
    std::fs::write(dir.join("config.yml"), config("/v1/key/create/app-*")).unwrap();
    let mut kes = Running::spawn(
        Command::new(env!("CARGO_BIN_EXE_kes"))
            .args(["server", "--config", "config.yml"])
            .current_dir(&dir),
    );
    let url =
        kes.wait_for("listening on").rsplit(' ').next().unwrap().replace("127.0.0.1", "localhost");
    let ca = dir.join("server.cert");
    assert_eq!(curl(&dir, "app", &ca, "POST", &format!("{url}/v1/key/create/other-1")), "403");

    std::fs::write(dir.join("config.yml"), config("/v1/key/create/*")).unwrap();
    signal(&kes.child, "-HUP");
    kes.wait_for("configuration reloaded");
    assert_eq!(curl(&dir, "app", &ca, "POST", &format!("{url}/v1/key/create/other-1")), "200");

    std::fs::write(dir.join("config.yml"), "admin: [this is not\n").unwrap();
    signal(&kes.child, "-HUP");
    let line = kes.wait_for("reload failed");
    assert!(line.contains("config.yml"), "{line}");
    assert_eq!(curl(&dir, "app", &ca, "POST", &format!("{url}/v1/key/create/other-2")), "200");

    signal(&kes.child, "-TERM");
    let status = kes.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Runs `kes <args>` with the client environment; returns (exit code, stdout, stderr).
fn kes_client(env: &[(&str, String)], args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kes"));
    cmd.args(args)
        .env_remove("KES_API_KEY")
        .env_remove("KES_SERVER")
        .env_remove("KES_CLIENT_CERT")
        .env_remove("KES_CLIENT_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The seed's client example: export the three variables, then create, list
/// and use a key; plus every client command's output and exit code.
#[test]
fn client_commands_against_a_real_server() {
    let dir = tempdir("client");
    cert(&dir, "server");
    let admin = cert(&dir, "admin");
    let app = cert(&dir, "app");
    let config = format!(
        "address: 127.0.0.1:0\nadmin:\n  identity: {admin}\ntls:\n  key: server.key\n  cert: server.cert\npolicy:\n  app:\n    allow:\n    - /v1/key/generate/app-*\n    identities:\n    - {app}\n"
    );
    std::fs::write(dir.join("config.yml"), config).unwrap();
    let mut kes = Running::spawn(
        Command::new(env!("CARGO_BIN_EXE_kes"))
            .args(["server", "--config", "config.yml"])
            .current_dir(&dir),
    );
    let url = kes.wait_for("listening on").rsplit(' ').next().unwrap().to_owned();
    let path = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    let env = vec![
        ("KES_SERVER", url.clone()),
        ("KES_CLIENT_CERT", path("admin.cert")),
        ("KES_CLIENT_KEY", path("admin.key")),
        ("KES_CAPATH", path("server.cert")),
    ];
    let ok = |args: &[&str]| {
        let (code, out, err) = kes_client(&env, args);
        assert_eq!(code, 0, "kes {args:?}: {err}");
        out
    };
    ok(&["key", "create", "my-key", "app-key"]);
    assert_eq!(ok(&["key", "ls"]), "app-key\nmy-key\n");
    assert_eq!(ok(&["key", "ls", "--json", "my"]), "[\"my-key\"]\n");
    assert_eq!(ok(&["ls"]), "app-key\nmy-key\n");
    let dek: serde_json::Value =
        serde_json::from_str(&ok(&["key", "dek", "my-key", "Y3R4"])).unwrap();
    let ct = dek["ciphertext"].as_str().unwrap();
    let pt: serde_json::Value =
        serde_json::from_str(&ok(&["key", "decrypt", "my-key", ct, "Y3R4"])).unwrap();
    assert_eq!(pt["plaintext"], dek["plaintext"]);
    let enc: serde_json::Value =
        serde_json::from_str(&ok(&["key", "encrypt", "my-key", "hello"])).unwrap();
    let dec: serde_json::Value = serde_json::from_str(&ok(&[
        "key",
        "decrypt",
        "my-key",
        enc["ciphertext"].as_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(dec["plaintext"], "aGVsbG8=");
    let info: serde_json::Value = serde_json::from_str(&ok(&["key", "info", "my-key"])).unwrap();
    assert_eq!(info["algorithm"], "AES256");
    assert!(info.get("version").is_none(), "never rotated: {info}");
    // Key versions: rotate, old data still decrypts, retire, purge.
    assert_eq!(ok(&["key", "rotate", "my-key"]), "my-key: version 2\n");
    let pt: serde_json::Value =
        serde_json::from_str(&ok(&["key", "decrypt", "my-key", ct, "Y3R4"])).unwrap();
    assert_eq!(pt["plaintext"], dek["plaintext"], "sealed under version 1");
    let info: serde_json::Value = serde_json::from_str(&ok(&["key", "info", "my-key"])).unwrap();
    assert_eq!(
        (&info["version"], &info["min_version"]),
        (&serde_json::json!(2), &serde_json::json!(1))
    );
    // Piped, the server's description passes through, versions included.
    let versions: Vec<(u64, &str)> = info["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["version"].as_u64().unwrap(), v["state"].as_str().unwrap()))
        .collect();
    assert_eq!(versions, [(1, "active"), (2, "active")], "{info}");
    assert!(info["versions"][1]["created_at"].is_string(), "{info}");
    // Rewrap: the ciphertext sealed under version 1, sealed again under 2.
    let rewrapped: serde_json::Value =
        serde_json::from_str(&ok(&["key", "rewrap", "my-key", ct, "Y3R4"])).unwrap();
    let new_ct = rewrapped["ciphertext"].as_str().unwrap().to_owned();
    assert_ne!(new_ct, ct);
    ok(&["key", "retire", "my-key", "2"]);
    let (code, _, err) = kes_client(&env, &["key", "decrypt", "my-key", ct, "Y3R4"]);
    assert_ne!(code, 0, "a retired version opens nothing");
    assert!(err.contains("failed to decrypt ciphertext"), "{err}");
    let pt: serde_json::Value =
        serde_json::from_str(&ok(&["key", "decrypt", "my-key", &new_ct, "Y3R4"])).unwrap();
    assert_eq!(pt["plaintext"], dek["plaintext"], "the rewrapped ciphertext opens under version 2");
    let info: serde_json::Value = serde_json::from_str(&ok(&["key", "info", "my-key"])).unwrap();
    assert_eq!(info["versions"][0]["state"], "retired", "{info}");
    let (code, _, err) = kes_client(&env, &["key", "rewrap", "my-key", "bm90IGEgY2lwaGVydGV4dA=="]);
    assert_ne!(code, 0);
    assert!(err.contains("failed to rewrap ciphertext"), "{err}");
    assert_eq!(ok(&["key", "purge", "my-key"]), "my-key: purged versions [1]\n");
    let (code, _, err) = kes_client(&env, &["key", "retire", "my-key", "1"]);
    assert_ne!(code, 0);
    assert!(err.contains("invalid minimum version 1"), "{err}");
    let hmac: serde_json::Value =
        serde_json::from_str(&ok(&["key", "hmac", "my-key", "m"])).unwrap();
    assert_eq!(hmac["hmac"].as_str().unwrap().len(), 64);
    ok(&["key", "import", "imported", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="]);
    let status: serde_json::Value = serde_json::from_str(&ok(&["status", "--json"])).unwrap();
    assert!(status["keystore_latency"].as_u64().is_some());
    // `kes metric` streams until stopped; its piped form is tested with --dev.
    // `kes ls` takes the server and an API key as flags (KES v0.24).
    let (code, _, err) = kes_client(&[], &["ls", "-s", &env[0].1, "-a", "kes:v1:not-a-key"]);
    assert_eq!(code, 1);
    assert!(err.contains("parsing API key"), "-a reaches the client: {err}");
    assert_eq!(ok(&["policy", "ls"]), "app\n");
    let show: serde_json::Value = serde_json::from_str(&ok(&["policy", "show", "app"])).unwrap();
    assert!(show["allow"].get("/v1/key/generate/app-*").is_some());
    assert!(ok(&["identity", "ls"]).contains(&app));
    let me: serde_json::Value = serde_json::from_str(&ok(&["identity", "info"])).unwrap();
    assert_eq!(me["identity"], admin.as_str());
    ok(&["key", "rm", "imported"]);

    // Errors: one clear line on stderr, exit 1.
    let fail = |env: &[(&str, String)], args: &[&str], needle: &str| {
        let (code, _, err) = kes_client(env, args);
        assert_eq!(code, 1, "kes {args:?}");
        assert!(
            err.starts_with("Error: ") && err.contains(needle) && err.lines().count() == 1,
            "kes {args:?}: {err}"
        );
    };
    fail(&env, &["key", "create", "my-key"], "failed to create key \"my-key\": key already exists");
    fail(&env, &["key", "info", "nope"], "key does not exist");
    let as_app = vec![
        env[0].clone(),
        ("KES_CLIENT_CERT", path("app.cert")),
        ("KES_CLIENT_KEY", path("app.key")),
        env[3].clone(),
    ];
    fail(&as_app, &["key", "create", "x"], "not authorized: insufficient permissions");
    let mut bad_cert = env.clone();
    bad_cert[1].1 = path("missing.cert");
    fail(&bad_cert, &["key", "ls"], "missing.cert");
    let mut mismatched = env.clone();
    mismatched[2].1 = path("app.key");
    fail(&mismatched, &["key", "ls"], "do not match");
    let mut unreachable = env.clone();
    unreachable[0].1 = "https://127.0.0.1:1".into();
    fail(&unreachable, &["key", "ls"], "cannot reach the server");
    // A server whose certificate the client does not trust.
    let mut untrusted = env.clone();
    untrusted[3].1 = path("app.cert");
    fail(
        &untrusted,
        &["key", "ls"],
        "the server's certificate is not trusted: set KES_CAPATH or use -k (insecure)",
    );
    fail(&[], &["key", "ls"], "no API key specified");
}

#[test]
fn identities_of_api_keys_and_new_ones() {
    let (code, out, _) =
        kes_client(&[], &["identity", "of", "kes:v1:AGaV6VXHasF0FnaB60WdCOeTZ8eTIDikL4zlN16c8NAs"]);
    assert_eq!(
        (code, out.trim()),
        (0, "ea9826089311fe44d7590408ede9150f7c637b6cab0a91ee6fe1aa5d9fb366f6")
    );
    let dir = tempdir("idnew");
    let (k, c) = (dir.join("id.key"), dir.join("id.cert"));
    let (code, out, err) = kes_client(
        &[],
        &["identity", "new", "--key", k.to_str().unwrap(), "--cert", c.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let (_, of_key, _) = kes_client(&[], &["identity", "of", v["api_key"].as_str().unwrap()]);
    let (_, of_cert, _) = kes_client(&[], &["identity", "of", c.to_str().unwrap()]);
    assert_eq!(of_key.trim(), v["identity"].as_str().unwrap());
    assert_eq!(of_cert.trim(), v["identity"].as_str().unwrap());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&k).unwrap().permissions().mode() & 0o777, 0o600);
    let (code, _, err) = kes_client(
        &[],
        &["identity", "new", "--key", k.to_str().unwrap(), "--cert", c.to_str().unwrap()],
    );
    assert_eq!(code, 1);
    assert!(err.contains("already exists"));
}

#[test]
fn log_follows_the_audit_stream() {
    let dir = tempdir("log");
    cert(&dir, "server");
    let admin = cert(&dir, "admin");
    std::fs::write(dir.join("config.yml"), format!("address: 127.0.0.1:0\nadmin:\n  identity: {admin}\ntls:\n  key: server.key\n  cert: server.cert\n")).unwrap();
    let mut kes = Running::spawn(
        Command::new(env!("CARGO_BIN_EXE_kes"))
            .args(["server", "--config", "config.yml"])
            .current_dir(&dir),
    );
    let url = kes.wait_for("listening on").rsplit(' ').next().unwrap().to_owned();
    let path = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    let mut log = Command::new(env!("CARGO_BIN_EXE_kes"))
        .args(["log", "--json"])
        .env("KES_SERVER", &url)
        .env("KES_CLIENT_CERT", path("admin.cert"))
        .env("KES_CLIENT_KEY", path("admin.key"))
        .env("KES_CAPATH", path("server.cert"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = log.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    // Keep creating keys until the subscription shows one (it may start late).
    let env = vec![
        ("KES_SERVER", url.clone()),
        ("KES_CLIENT_CERT", path("admin.cert")),
        ("KES_CLIENT_KEY", path("admin.key")),
        ("KES_CAPATH", path("server.cert")),
    ];
    let mut seen = None;
    for i in 0..50 {
        kes_client(&env, &["key", "create", &format!("logged-{i}")]);
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen = Some(line);
            break;
        }
    }
    let _ = log.kill();
    let _ = log.wait();
    let v: serde_json::Value = serde_json::from_str(&seen.expect("an audit line")).unwrap();
    assert!(v["request"]["path"].as_str().unwrap().starts_with("/v1/"));
    assert_eq!(v["request"]["identity"], admin.as_str());
}

#[test]
fn migrate_copies_key_files_verbatim() {
    let dir = tempdir("migrate");
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let vectors =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/vectors/keys-v0.19");
    for e in std::fs::read_dir(&vectors).unwrap() {
        let e = e.unwrap();
        std::fs::write(src.join(e.file_name()), std::fs::read(e.path()).unwrap()).unwrap();
    }
    std::fs::write(
        dir.join("from.yml"),
        format!("keystore:\n  fs:\n    path: {}\n", src.display()),
    )
    .unwrap();
    std::fs::write(
        dir.join("to.yml"),
        format!("keystore:\n  fs:\n    path: {}\n", dir.join("dst").display()),
    )
    .unwrap();
    let migrate = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_kes"))
            .arg("migrate")
            .args(["--from", "from.yml", "--to", "to.yml"])
            .args(extra)
            .current_dir(&dir)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = migrate(&["[aG]*"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("Migrated 2 keys successfully"), "{err}");
    for k in ["alpha", "Gamma_3"] {
        assert_eq!(
            std::fs::read(src.join(k)).unwrap(),
            std::fs::read(dir.join("dst").join(k)).unwrap()
        );
    }
    assert!(!dir.join("dst/beta-key").exists(), "the pattern selects alpha and Gamma_3 only");
    let (code, err) = migrate(&[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("already exists at the target"), "{err}");
    let (code, err) = migrate(&["--merge"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("Migrated 1 keys successfully! (2 already present"), "{err}");
    let (code, err) = migrate(&["--force", "--merge"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("mutually exclusive"));
}

/// `kes migrate` between store kinds: fs -> AWS Secrets Manager (a real
/// moto server) -> fs again, key files unchanged on the round trip.
#[test]
fn migrate_between_fs_and_aws() {
    let python = std::env::var("KES_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut moto = Command::new(python)
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect(
            "moto is required for this test: pip install 'moto[server]' (scripts/test.sh does)",
        );
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "moto did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let dir = tempdir("migrate-aws");
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let vectors =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/vectors/keys-v0.24");
    for e in std::fs::read_dir(&vectors).unwrap() {
        let e = e.unwrap();
        std::fs::write(src.join(e.file_name()), std::fs::read(e.path()).unwrap()).unwrap();
    }
    let fs = |name: &str, path: &Path| {
        std::fs::write(dir.join(name), format!("keystore:\n  fs:\n    path: {}\n", path.display()))
            .unwrap()
    };
    fs("src.yml", &src);
    fs("back.yml", &dir.join("back"));
    std::fs::write(
        dir.join("aws.yml"),
        format!("keystore:\n  aws:\n    secretsmanager:\n      endpoint: http://127.0.0.1:{port}\n      region: us-east-1\n      credentials:\n        accesskey: test\n        secretkey: test\n"),
    )
    .unwrap();
    let migrate = |from: &str, to: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_kes"))
            .args(["migrate", "--from", from, "--to", to])
            .current_dir(&dir)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = migrate("src.yml", "aws.yml");
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("Migrated 3 keys successfully"), "{err}");
    let (code, err) = migrate("aws.yml", "back.yml");
    assert_eq!(code, Some(0), "{err}");
    for e in std::fs::read_dir(&src).unwrap() {
        let name = e.unwrap().file_name();
        assert_eq!(
            std::fs::read(src.join(&name)).unwrap(),
            std::fs::read(dir.join("back").join(&name)).unwrap(),
            "{name:?} survives fs -> AWS -> fs byte for byte"
        );
    }
    let _ = moto.kill();
    let _ = moto.wait();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `kes identity of` agrees with the server's computation (and openssl's)
/// for RSA, ECDSA and Ed25519 certificates; `identity new` takes SANs.
#[test]
fn identity_of_rsa_ecdsa_ed25519_and_new_with_sans() {
    let dir = tempdir("idkinds");
    let sh = |cmd: &str| {
        let out = Command::new("sh").arg("-c").arg(cmd).current_dir(&dir).output().unwrap();
        assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for (kind, gen) in [
        ("rsa", "openssl genrsa -out rsa.key 2048"),
        ("ec", "openssl ecparam -genkey -name prime256v1 -noout -out ec.key"),
        ("ed", "openssl genpkey -algorithm ed25519 -out ed.key"),
    ] {
        sh(gen);
        sh(&format!(
            "openssl req -new -x509 -key {kind}.key -subj /CN={kind} -days 1 -out {kind}.cert"
        ));
        let want = sh(&format!("openssl x509 -in {kind}.cert -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum"));
        let (code, out, err) = kes_client(
            &[],
            &["identity", "of", dir.join(format!("{kind}.cert")).to_str().unwrap()],
        );
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.trim(), want.split_whitespace().next().unwrap(), "{kind}");
        let der = std::fs::read_to_string(dir.join(format!("{kind}.cert"))).unwrap();
        let certs = rustls_pem(&der);
        assert_eq!(
            kes_core::Identity::from_certificate(&certs).unwrap().to_string(),
            out.trim(),
            "server view of {kind}"
        );
    }
    let (k, c) = (dir.join("srv.key"), dir.join("srv.cert"));
    let (code, _, err) = kes_client(
        &[],
        &[
            "identity",
            "new",
            "--key",
            k.to_str().unwrap(),
            "--cert",
            c.to_str().unwrap(),
            "--ip",
            "127.0.0.1",
            "--dns",
            "kes.local",
            "--expiry",
            "720h",
            "my-server",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let text = sh("openssl x509 -in srv.cert -noout -text");
    assert!(text.contains("IP Address:127.0.0.1") && text.contains("DNS:kes.local"), "{text}");
    assert!(text.contains("CN = my-server") || text.contains("CN=my-server"), "{text}");
}

fn rustls_pem(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
}
