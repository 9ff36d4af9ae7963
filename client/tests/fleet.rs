//! Scale-out under faults (docs/scale-out.md): three kes nodes over a
//! three-node OpenBao Raft cluster, clients of the Rust library that know
//! all three kes endpoints, and a steady load while, in turn, the OpenBao
//! leader is killed, one kes node is stopped, and the whole OpenBao cluster
//! is stopped and started again. Every request is counted; none may fail
//! except creates while no store is reachable, and no key that got a 200
//! may be lost.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kes_adapters::RunningServer;
use kes_client::{ApiKey, ClientBuilder, ClientError, Credentials};
use kes_core::config::{AdminSetting, KeystoreConfig};
use kes_core::Config;
use kes_testkit::{bao_binary, free_port, wait};
use serde_json::Value;

/// Plain HTTP calls to one OpenBao node (loopback only).
fn http(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, "--max-time", "5"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("X-Vault-Token: {t}")]);
    }
    if let Some(b) = body {
        cmd.args(["-d", b]);
    }
    let out = cmd.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Three OpenBao nodes with Raft storage (retry_join), initialised and
/// unsealed; node 1 is the first leader.
struct Cluster {
    dir: PathBuf,
    ports: [u16; 3],
    nodes: [Option<Child>; 3],
    root: String,
    unseal: String,
}

impl Cluster {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("kes-fleet-bao-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ports = [free_port(), free_port(), free_port()];
        for (i, port) in ports.iter().enumerate() {
            let n = i + 1;
            std::fs::create_dir_all(dir.join(format!("n{n}"))).unwrap();
            let joins: String = ports
                .iter()
                .map(|p| format!("  retry_join {{ leader_api_addr = \"http://127.0.0.1:{p}\" }}\n"))
                .collect();
            let cluster = free_port();
            let hcl = format!(
                "storage \"raft\" {{\n  path = \"{d}/n{n}\"\n  node_id = \"n{n}\"\n  performance_multiplier = 1\n{joins}}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{cluster}\"\n  tls_disable = true\n}}\napi_addr = \"http://127.0.0.1:{port}\"\ncluster_addr = \"https://127.0.0.1:{cluster}\"\ndisable_standby_reads = true\n",
                d = dir.display()
            );
            std::fs::write(dir.join(format!("n{n}.hcl")), hcl).unwrap();
        }
        let mut c = Cluster {
            dir,
            ports,
            nodes: [None, None, None],
            root: String::new(),
            unseal: String::new(),
        };
        for i in 0..3 {
            c.spawn(i);
        }
        let n1 = c.url(0);
        wait("node 1 listening", Duration::from_secs(20), || {
            http("GET", &format!("{n1}/v1/sys/health"), None, None).0 == 501
        });
        let (_, init) = http(
            "PUT",
            &format!("{n1}/v1/sys/init"),
            None,
            Some(r#"{"secret_shares":1,"secret_threshold":1}"#),
        );
        c.root = init["root_token"].as_str().unwrap().to_owned();
        c.unseal = init["keys_base64"][0].as_str().unwrap().to_owned();
        c.unseal_all();
        wait("a leader", Duration::from_secs(30), || c.leader().is_some());
        c
    }

    fn spawn(&mut self, i: usize) {
        let child = Command::new(bao_binary())
            .args(["server", "-config"])
            .arg(self.dir.join(format!("n{}.hcl", i + 1)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.nodes[i] = Some(child);
    }

    fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[i])
    }

    fn unseal_all(&self) {
        let body = format!(r#"{{"key":"{}"}}"#, self.unseal);
        for i in 0..3 {
            if self.nodes[i].is_none() {
                continue;
            }
            let url = format!("{}/v1/sys/unseal", self.url(i));
            wait("unseal", Duration::from_secs(30), || {
                http("PUT", &url, None, Some(&body)).1["sealed"] == false
            });
        }
    }

    /// The node that answers health with 200 (active).
    fn leader(&self) -> Option<usize> {
        (0..3).find(|&i| {
            self.nodes[i].is_some()
                && http("GET", &format!("{}/v1/sys/health", self.url(i)), None, None).0 == 200
        })
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn api(&self, method: &str, path: &str, body: &str) {
        let leader = self.leader().expect("a leader");
        let (code, v) =
            http(method, &format!("{}{path}", self.url(leader)), Some(&self.root), Some(body));
        assert!(matches!(code, 200 | 204), "{method} {path}: {code} {v}");
    }

    /// Raft followers become voters only after autopilot's stabilisation
    /// time (~10 s); before that, killing the leader loses quorum.
    fn wait_for_voters(&self) {
        wait("three voters", Duration::from_secs(40), || {
            let leader = self.leader().unwrap_or(0);
            let (_, v) = http(
                "GET",
                &format!("{}/v1/sys/storage/raft/autopilot/state", self.url(leader)),
                Some(&self.root),
                None,
            );
            v["data"]["voters"].as_array().map_or(0, |a| a.len()) == 3
        });
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..3 {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The Vault store listing all three nodes, starting at a different one
/// per kes node.
fn node_list(cluster: &Cluster, first: usize) -> String {
    let nodes: Vec<String> = (0..3).map(|i| cluster.url((first + i) % 3)).collect();
    nodes.join(",")
}

/// One kes node on the cluster, reaching Vault at `endpoint`, its cache
/// emptied every `any`.
fn kes_node(dir: &Path, admin: &ApiKey, endpoint: String, any: Duration) -> RunningServer {
    let mut config = Config::empty();
    config.admin = AdminSetting::Identity(admin.identity().unwrap());
    config.log.error = std::env::var_os("FLEET_DEBUG").is_some();
    config.cache.offline = Duration::from_secs(3600);
    config.cache.any = any;
    config.keystore =
        KeystoreConfig::Vault(Box::new(kes_testkit::vault_approle(&endpoint, "fleet", "fleet")));
    let store = kes_adapters::store::open(&config.keystore).unwrap().store;
    kes_testkit::serve(dir, config, store)
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU32,
    /// Failures that must not happen, with what they were.
    failed: Mutex<Vec<String>>,
    /// Creates refused while no store could be reached (expected then).
    refused_creates: AtomicU32,
    /// Keys whose create got a 200: none may be lost.
    created: Mutex<Vec<String>>,
    /// (when it started, how long it took) of every cached-key request.
    latencies: Mutex<Vec<(Instant, Duration)>>,
    /// The same for creates, which need Vault.
    create_latencies: Mutex<Vec<(Instant, Duration)>>,
}

/// The 99th percentile of the latencies that started in [from, to).
fn p99(all: &[(Instant, Duration)], from: Instant, to: Instant) -> (usize, Duration) {
    let mut d: Vec<Duration> =
        all.iter().filter(|(t, _)| *t >= from && *t < to).map(|(_, d)| *d).collect();
    d.sort();
    let n = d.len();
    (n, d.get((n * 99 / 100).min(n.saturating_sub(1))).copied().unwrap_or_default())
}

impl Cluster {
    /// K/V v2 at kv/, AppRole login for kes, and three voters.
    fn prepare(&self) {
        let cluster = self;
        cluster.api("POST", "/v1/sys/mounts/kv", r#"{"type":"kv","options":{"version":"2"}}"#);
        cluster.api("POST", "/v1/sys/auth/approle", r#"{"type":"approle"}"#);
        cluster.api("PUT", "/v1/sys/policies/acl/kes", r#"{"policy":"path \"kv/*\" { capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\"] }"}"#);
        cluster.api(
            "POST",
            "/v1/auth/approle/role/kes",
            r#"{"token_policies":["kes"],"token_ttl":"1h"}"#,
        );
        cluster.api("POST", "/v1/auth/approle/role/kes/role-id", r#"{"role_id":"fleet"}"#);
        cluster.api(
            "POST",
            "/v1/auth/approle/role/kes/custom-secret-id",
            r#"{"secret_id":"fleet"}"#,
        );
        let leader = cluster.leader().unwrap();
        let probe = format!("{}/v1/kv/data/probe", cluster.url(leader));
        wait("kv writable", Duration::from_secs(20), || {
            http("PUT", &probe, Some(&cluster.root), Some(r#"{"data":{"a":"b"}}"#)).0 == 200
        });
        cluster.wait_for_voters();
    }
}

/// A directory with the kes nodes' server certificate.
fn kes_dir(name: &str) -> PathBuf {
    let dir = kes_testkit::tempdir(name);
    kes_testkit::cert(&dir, "server");
    dir
}

/// One fleet test at a time: each runs three OpenBao and three kes nodes
/// on a 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn fleet_survives_leader_kill_node_loss_and_store_outage() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut cluster = Cluster::start();
    cluster.prepare();
    let dir = kes_dir("fleet");
    let admin = ApiKey::generate();
    let mut kes: Vec<Option<RunningServer>> = (0..3)
        .map(|i| Some(kes_node(&dir, &admin, node_list(&cluster, i), Duration::from_secs(300))))
        .collect();
    let endpoints: Vec<String> = kes
        .iter()
        .map(|k| format!("https://127.0.0.1:{}", k.as_ref().unwrap().addr().port()))
        .collect();
    let client = || {
        ClientBuilder::new(endpoints.clone())
            .credentials(Credentials::ApiKey(ApiKey::parse(&admin.secret_text()).unwrap()))
            .ca_file(dir.join("server.cert").to_str().unwrap())
            .timeout(Duration::from_secs(20))
            .build_blocking()
            .unwrap()
    };
    // A key created through one node is usable through the others at once.
    let c = client();
    c.create_key("shared").unwrap();
    let dek = c.generate_key("shared", b"").unwrap();
    let tally = Arc::new(Tally::default());
    let store_down = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let (tally, stop, store_down) = (tally.clone(), stop.clone(), store_down.clone());
            let c = client();
            let ciphertext = dek.ciphertext.clone();
            let plaintext = dek.plaintext.to_vec();
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    // Cached key: must always work.
                    let began = Instant::now();
                    let answer = c.decrypt("shared", &ciphertext, b"");
                    tally.latencies.lock().unwrap().push((began, began.elapsed()));
                    match answer {
                        Ok(p) if p.as_slice() == plaintext.as_slice() => {
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => tally.failed.lock().unwrap().push(format!("decrypt: {other:?}")),
                    }
                    // A new key every few rounds: needs the store.
                    if i % 5 == 0 {
                        let name = format!("w{w}-{i}");
                        let down = store_down.load(Ordering::Relaxed);
                        let began = Instant::now();
                        let answer = c.create_key(&name);
                        tally.create_latencies.lock().unwrap().push((began, began.elapsed()));
                        match answer {
                            Ok(()) => {
                                tally.ok.fetch_add(1, Ordering::Relaxed);
                                tally.created.lock().unwrap().push(name);
                            }
                            Err(_) if down || store_down.load(Ordering::Relaxed) => {
                                tally.refused_creates.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                tally.failed.lock().unwrap().push(format!("create {name}: {e}"))
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();

    // 1. The OpenBao leader dies.
    let load_began = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let leader = cluster.leader().unwrap();
    let killed = Instant::now();
    cluster.kill(leader);
    wait("a new leader", Duration::from_secs(30), || cluster.leader().is_some());
    let elected = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    // 2. One kes node goes away; clients fail over to the others.
    kes[0].take().unwrap().stop();
    std::thread::sleep(Duration::from_secs(2));
    // 3. The whole OpenBao cluster stops: cached keys keep serving,
    //    creates fail cleanly; then it comes back (sealed) and is unsealed.
    store_down.store(true, Ordering::Relaxed);
    for i in 0..3 {
        cluster.kill(i);
    }
    std::thread::sleep(Duration::from_secs(3));
    for i in 0..3 {
        cluster.spawn(i);
    }
    cluster.unseal_all();
    wait("a leader after the restart", Duration::from_secs(60), || cluster.leader().is_some());
    // Give kes one health poll to notice, then every create must work again.
    std::thread::sleep(Duration::from_secs(3));
    store_down.store(false, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }

    let lat = tally.latencies.lock().unwrap().clone();
    let (n0, before) = p99(&lat, load_began, killed);
    let (n1, during) = p99(&lat, killed, elected + Duration::from_secs(1));
    eprintln!(
        "fleet: cached-key p99 {before:?} over {n0} requests before the leader was killed, {during:?} over {n1} during the election ({:?})",
        elected - killed
    );
    let lat = tally.create_latencies.lock().unwrap().clone();
    let (n0, before) = p99(&lat, load_began, killed);
    let (n1, during) = p99(&lat, killed, elected + Duration::from_secs(1));
    eprintln!(
        "fleet: create p99 {before:?} over {n0} before, {during:?} over {n1} during the election"
    );
    let failed = tally.failed.lock().unwrap().clone();
    let ok = tally.ok.load(Ordering::Relaxed);
    let refused = tally.refused_creates.load(Ordering::Relaxed);
    eprintln!("fleet: {ok} requests succeeded, {refused} creates refused while the store was down, {} failed", failed.len());
    assert!(failed.is_empty(), "requests that should have succeeded failed: {failed:#?}");
    assert!(ok > 300, "the load ran ({ok})");
    // No key that got a 200 is lost: every one is there, through any node.
    let c = client();
    for name in tally.created.lock().unwrap().iter() {
        c.describe_key(name)
            .unwrap_or_else(|e| panic!("key {name} was created but is gone: {e:?}"));
    }
    assert!(matches!(c.describe_key("never-created"), Err(ClientError::KeyNotFound)));
    for k in kes.iter_mut() {
        if let Some(k) = k.take() {
            k.stop();
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

impl Cluster {
    /// SIGSTOP (or SIGCONT) every running node: connections are still
    /// accepted by the kernel, nothing answers.
    fn signal_all(&self, sig: &str) {
        for c in self.nodes.iter().flatten() {
            let ok = Command::new("kill").args([sig, &c.id().to_string()]).status().unwrap();
            assert!(ok.success(), "kill {sig}");
        }
    }
}

/// A plain L4 load balancer in front of the OpenBao nodes, as operators
/// put Vault behind one address: each accepted connection goes to the
/// next node, round robin, that accepts a TCP connection; no health
/// checks, nothing HTTP-aware. kes sees one endpoint.
struct Balancer {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Balancer {
    fn start(backends: Vec<u16>) -> Self {
        use std::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let next = Arc::new(AtomicU32::new(0));
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                };
                let (backends, next) = (backends.clone(), next.clone());
                std::thread::spawn(move || {
                    let _ = client.set_nonblocking(false);
                    for _ in 0..backends.len() {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize % backends.len();
                        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], backends[i]));
                        if let Ok(backend) =
                            TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                        {
                            splice(client, backend);
                            return;
                        }
                    }
                    // No node accepts: the connection is closed.
                });
            }
        });
        Self { port, stop }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies both ways until either side closes, then closes the other.
fn splice(a: std::net::TcpStream, b: std::net::TcpStream) {
    let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let t = std::thread::spawn(move || {
        let _ = std::io::copy(&mut a2, &mut b2);
        let _ = b2.shutdown(std::net::Shutdown::Both);
    });
    let (mut a, mut b) = (a, b);
    let _ = std::io::copy(&mut b, &mut a);
    let _ = a.shutdown(std::net::Shutdown::Both);
    let _ = t.join();
}

/// When a create began, through which kes node, and the key it made (or
/// why not).
type Create = (Instant, usize, Result<String, String>);

/// What the single-address load saw.
#[derive(Default)]
struct Seen {
    ok: AtomicU32,
    /// Reads of existing keys that failed: none may.
    failed: Mutex<Vec<String>>,
    /// (started, took) of every request for a hot key.
    hot: Mutex<Vec<(Instant, Duration)>>,
    /// Every create.
    creates: Mutex<Vec<Create>>,
    cold_reads: AtomicU32,
}

/// The topology most sites deploy: Vault behind one address. Three kes
/// nodes reach a three-node OpenBao Raft cluster through one L4 balancer.
/// Under load (hot keys re-read every `cache.any`, existing keys read for
/// the first time, creates through every node), the OpenBao leader is
/// killed, a kes node is stopped, and every OpenBao node is frozen for 8 s
/// (SIGSTOP: connections open, nothing answers). No read of an existing
/// key may fail; hot keys are answered within 250 ms throughout the
/// freeze; creates work on every node within 2 s of the store taking
/// writes again.
#[test]
fn fleet_behind_one_vault_address_loses_no_request() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut cluster = Cluster::start();
    cluster.prepare();
    let lb = Balancer::start(cluster.ports.to_vec());
    let dir = kes_dir("fleet-lb");
    let admin = ApiKey::generate();
    let any = Duration::from_secs(3);
    let mut kes: Vec<Option<RunningServer>> =
        (0..3).map(|_| Some(kes_node(&dir, &admin, lb.url(), any))).collect();
    let endpoint = |k: &RunningServer| format!("https://127.0.0.1:{}", k.addr().port());
    let endpoints: Vec<String> = kes.iter().flatten().map(endpoint).collect();
    let client = |eps: Vec<String>| {
        ClientBuilder::new(eps)
            .credentials(Credentials::ApiKey(ApiKey::parse(&admin.secret_text()).unwrap()))
            .ca_file(dir.join("server.cert").to_str().unwrap())
            .timeout(Duration::from_secs(30))
            .build_blocking()
            .unwrap()
    };
    // Hot keys, and a pool of existing keys that no kes node has read yet.
    let c = client(endpoints.clone());
    let hot: Vec<String> = (0..4).map(|i| format!("hot-{i}")).collect();
    for h in &hot {
        c.create_key(h).unwrap();
    }
    const COLD: usize = 1500;
    let makers: Vec<_> = (0..6)
        .map(|t| {
            let c = client(endpoints.clone());
            std::thread::spawn(move || {
                for i in (t..COLD).step_by(6) {
                    c.create_key(&format!("cold-{i}")).unwrap();
                }
            })
        })
        .collect();
    for m in makers {
        m.join().unwrap();
    }
    let deks: Vec<(Vec<u8>, Vec<u8>)> = hot
        .iter()
        .map(|h| c.generate_key(h, b"").unwrap())
        .map(|d| (d.plaintext.to_vec(), d.ciphertext.clone()))
        .collect();

    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let next_cold = Arc::new(AtomicU32::new(0));
    // Two threads ask for hot keys, two read existing keys for the first
    // time (store reads), and one per surviving kes node creates keys
    // through that node only, so every node is shown to work.
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let (seen, stop, next_cold) = (seen.clone(), stop.clone(), next_cold.clone());
            let c = client(endpoints.clone());
            let node = 1 + w % 2;
            let one = client(vec![endpoints[node].clone()]);
            let (hot, deks) = (hot.clone(), deks.clone());
            std::thread::spawn(move || {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let began = Instant::now();
                    match w / 2 {
                        0 => {
                            let h = (w + i) % hot.len();
                            let answer = c.decrypt(&hot[h], &deks[h].1, b"");
                            seen.hot.lock().unwrap().push((began, began.elapsed()));
                            match answer {
                                Ok(p) if p.as_slice() == deks[h].0.as_slice() => {
                                    seen.ok.fetch_add(1, Ordering::Relaxed);
                                }
                                other => seen.failed.lock().unwrap().push(format!(
                                    "{:?} decrypt {}: {other:?}",
                                    began.elapsed(),
                                    hot[h]
                                )),
                            }
                        }
                        1 => {
                            let n = next_cold.fetch_add(1, Ordering::Relaxed) as usize % COLD;
                            match c.generate_key(&format!("cold-{n}"), b"") {
                                Ok(_) => {
                                    seen.ok.fetch_add(1, Ordering::Relaxed);
                                    seen.cold_reads.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => seen.failed.lock().unwrap().push(format!(
                                    "{:?} generate cold-{n}: {e:?}",
                                    began.elapsed()
                                )),
                            }
                        }
                        _ => {
                            let name = format!("new-{w}-{i}");
                            let r =
                                one.create_key(&name).map(|()| name).map_err(|e| format!("{e:?}"));
                            seen.creates.lock().unwrap().push((began, node, r));
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        })
        .collect();

    // 1. The OpenBao leader dies; the balancer keeps sending connections
    //    to the others (its connects to the dead node are refused).
    std::thread::sleep(Duration::from_secs(3));
    let leader = cluster.leader().unwrap();
    let killed = Instant::now();
    cluster.kill(leader);
    wait("a new leader", Duration::from_secs(30), || cluster.leader().is_some());
    let elected = killed.elapsed();
    std::thread::sleep(Duration::from_secs(4));
    // 2. A kes node goes away; clients fail over to the others.
    kes[0].take().unwrap().stop();
    std::thread::sleep(Duration::from_secs(3));
    // 3. Every OpenBao node freezes for 8 s, then resumes.
    let frozen = Instant::now();
    cluster.signal_all("-STOP");
    std::thread::sleep(Duration::from_secs(8));
    cluster.signal_all("-CONT");
    let thawed = Instant::now();
    // The store takes writes again when a write through the balancer
    // (fresh connections, so any node) succeeds.
    let probe = format!("{}/v1/kv/data/probe", lb.url());
    wait("writes after the freeze", Duration::from_secs(60), || {
        http("PUT", &probe, Some(&cluster.root), Some(r#"{"data":{"a":"c"}}"#)).0 == 200
    });
    let writable = Instant::now();
    std::thread::sleep(Duration::from_secs(8));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }

    let ok = seen.ok.load(Ordering::Relaxed);
    let failed = seen.failed.lock().unwrap().clone();
    let hot_lat = seen.hot.lock().unwrap().clone();
    let (n, p99_freeze) = p99(&hot_lat, frozen, thawed);
    let worst = hot_lat
        .iter()
        .filter(|(t, _)| *t >= frozen && *t < thawed)
        .map(|(_, d)| *d)
        .max()
        .unwrap_or_default();
    let creates = seen.creates.lock().unwrap().clone();
    let refused: Vec<_> = creates.iter().filter(|(_, _, r)| r.is_err()).collect();
    let late: Vec<String> = refused
        .iter()
        .filter(|(t, _, _)| *t >= writable + Duration::from_secs(2))
        .map(|(t, node, r)| format!("node {node}, {:?} after writable: {r:?}", *t - writable))
        .collect();
    let last_refused = refused.iter().map(|(t, _, _)| *t).max();
    eprintln!(
        "fleet-lb: {ok} requests succeeded ({} first reads of existing keys), {} failed; election {elected:?}; \
         hot keys during the freeze: {n} requests, p99 {p99_freeze:?}, worst {worst:?}; \
         creates: {} made, {} refused, store writable {:?} after the thaw, last refusal began {:?} after that",
        seen.cold_reads.load(Ordering::Relaxed),
        failed.len(),
        creates.len() - refused.len(),
        refused.len(),
        writable - thawed,
        last_refused.map(|t| t.saturating_duration_since(writable)),
    );
    for l in &late {
        eprintln!("fleet-lb: late refusal: {l}");
    }
    assert!(failed.is_empty(), "reads of existing keys failed: {failed:#?}");
    assert!(ok > 1000, "the load ran ({ok})");
    assert!(n > 50, "hot keys were asked for during the freeze ({n})");
    assert!(worst <= Duration::from_millis(250), "a hot key waited {worst:?} during the freeze");
    assert!(late.is_empty(), "creates refused 2 s after the store took writes: {late:#?}");
    // Every node created keys after the freeze.
    for node in 1..3 {
        assert!(
            creates.iter().any(|(t, n, r)| *n == node && *t >= writable && r.is_ok()),
            "node {node} created nothing after the freeze"
        );
    }
    // No created key is lost.
    let c = client(endpoints[1..].to_vec());
    for (_, _, r) in &creates {
        if let Ok(name) = r {
            c.describe_key(name)
                .unwrap_or_else(|e| panic!("{name} was created but is gone: {e:?}"));
        }
    }
    for k in kes.iter_mut() {
        if let Some(k) = k.take() {
            k.stop();
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
