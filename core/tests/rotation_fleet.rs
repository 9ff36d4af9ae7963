#![allow(clippy::disallowed_methods)] // tests read the real clock to seed a simulated one
//! Scheduled rotation (`rotation:`) in a fleet, under a simulated clock.
//!
//! Several cores share one store. Every store command and every answer is a
//! message delivered after a random delay and in random order (the adapter
//! runs store calls concurrently, so nothing orders them); nodes crash (their
//! memory, their unsent commands and undelivered answers are lost) and come
//! back; their wall clocks are skewed by up to [`MAX_SKEW`]. Clients keep
//! generating data keys on random nodes. One seed decides everything, so a
//! failure names the seed that replays it (`ROTATION_SEED=n`).
//!
//! Checked: a version number never names two different keys (no lost
//! update); every rotation a node reported (audit) is a distinct version that
//! is still in the final ring; versions of one key are never created less
//! than `every - 2 x MAX_SKEW` apart in fleet time (one per period), and keep
//! coming (no key starves); keys matching no rule are never written; every
//! data key handed out still decrypts at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::{Method, StatusCode};
use kes_core::config::{AdminSetting, RotationRule};
use kes_core::crypto::{keyfile, KeyRing, SecretBytes, SecretKey};
use kes_core::testing::{Harness, MapStore, SeededRng};
use kes_core::{
    Caller, Command, CommandId, Config, Event, Identity, KeyName, Now, Request, RequestId, Server,
    StoreError, StoreReply, UnixTime,
};
use rand_core::RngCore;
use serde_json::{json, Value};

/// Largest wall-clock skew of a node against fleet time, either way.
const MAX_SKEW: Duration = Duration::from_secs(3);
const BASE_UNIX: i64 = 1_700_000_000;

fn admin() -> Identity {
    Identity::from_spki_der(b"admin")
}

fn config(every: Duration) -> Config {
    let mut c = Config::empty();
    c.admin = AdminSetting::Identity(admin());
    c.rotation = vec![
        RotationRule { key: "minio-*".into(), every },
        RotationRule { key: "app".into(), every: every * 2 },
    ];
    c
}

type Answer = Result<StoreReply, StoreError>;

struct Node {
    server: Option<Server>,
    skew_nanos: i128,
    rng: SeededRng,
    /// Commands sent, not yet executed by the store.
    sent: Vec<(CommandId, Command)>,
    /// Answers on their way back.
    answers: Vec<(CommandId, Answer)>,
    /// When a crashed node comes back (fleet time).
    restart_at: Duration,
    /// Generate requests waiting for their answer: key and context.
    asked: BTreeMap<RequestId, (String, String)>,
}

struct Sim {
    seed: u64,
    rng: SeededRng,
    base: Instant,
    /// Fleet time since the start.
    t: Duration,
    store: MapStore,
    nodes: Vec<Node>,
    every: Duration,
    /// Per key and version: the key's ID and when (fleet time) it was
    /// first stored in the key's entry.
    seen: BTreeMap<(String, u32), (String, Duration)>,
    /// Per version (key ID): when, in fleet time, a node decided to make it.
    decided: BTreeMap<String, Duration>,
    /// (key, version) of every scheduled rotation a node audited.
    acked: Vec<(String, u32)>,
    /// Data keys handed out: key, context, ciphertext, plaintext.
    sealed: Vec<(String, String, Value, Value)>,
    next_request: u64,
    trace: Vec<String>,
}

impl Sim {
    /// The failure message: the seed that replays it and what led there.
    /// ROTATION_TRACE=<text> prints every event naming it, not the last 40.
    fn failure(&self, what: &str) -> String {
        let tail: Vec<&String> = match std::env::var("ROTATION_TRACE") {
            Ok(f) => self.trace.iter().filter(|l| f.split('|').any(|f| l.contains(f))).collect(),
            Err(_) => {
                self.trace.iter().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect()
            }
        };
        let lines: Vec<&str> = tail.iter().map(|s| s.as_str()).collect();
        format!(
            "seed {} ({} nodes, every {:?}): {what}\nlast events:\n{}",
            self.seed,
            self.nodes.len(),
            self.every,
            lines.join("\n")
        )
    }

    fn now(&self, skew: i128) -> Now {
        let unix = BASE_UNIX as i128 * 1_000_000_000 + self.t.as_nanos() as i128 + skew;
        Now { instant: self.base + self.t, unix: UnixTime::from_nanos(unix) }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    fn start_node(&mut self, i: usize) {
        let now = self.now(self.nodes[i].skew_nanos);
        let node = &mut self.nodes[i];
        node.server = Some(Server::new(config(self.every), now, &mut node.rng));
        self.trace.push(format!("{:?} node {i} starts", self.t));
    }

    /// Moves everything a node produced out of it.
    fn collect(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let Some(server) = node.server.as_mut() else { return };
        while let Some(c) = server.poll_command() {
            node.sent.push(c);
        }
        while let Some(e) = server.poll_event() {
            if let Event::Audit(a) = e {
                if let (Some(name), Some(v), None) =
                    (a.path.strip_prefix("/v1/key/rotate/"), a.key_version, a.identity)
                {
                    self.trace.push(format!("{:?} node {i} rotated {name} to v{v}", self.t));
                    self.acked.push((name.to_owned(), v));
                }
            }
        }
        let mut done = Vec::new();
        let server = self.nodes[i].server.as_mut().expect("collected above");
        while let Some(r) = server.poll_response() {
            done.push(r);
        }
        for (id, resp) in done {
            let Some((key, ctx)) = self.nodes[i].asked.remove(&id) else { continue };
            if resp.status == StatusCode::OK {
                let v: Value = serde_json::from_slice(&resp.body).unwrap();
                let version = resp.key_version.map_or(String::new(), |n| format!(" v{n}"));
                self.trace.push(format!("{:?} node {i} sealed {ctx} under {key}{version}", self.t));
                self.sealed.push((key, ctx, v["ciphertext"].clone(), v["plaintext"].clone()));
            }
        }
    }

    /// The store executes one command; its stored rings are recorded.
    fn execute(&mut self, i: usize, k: usize) {
        let (id, cmd) = self.nodes[i].sent.swap_remove(k);
        // Creates of a key's entry or staged copy (not of a lock breaker's
        // claim) are checked.
        let written = match &cmd {
            Command::Create { name, value }
                if name.as_str().len() <= 80 || KeyName::of_staging(name.as_str()).is_some() =>
            {
                Some((name.as_str().to_owned(), value.clone()))
            }
            _ => None,
        };
        let what = describe(&cmd);
        let answer = self.store.execute(cmd);
        let outcome = match &answer {
            Ok(StoreReply::Value(v)) => match KeyRing::decode(v.expose()) {
                Ok(r) => format!("v{} ({})", r.latest().number, &r.latest().key.key_id()[..6]),
                Err(_) => "malformed".into(),
            },
            Ok(StoreReply::Names(_)) => "names".into(),
            Ok(_) => "ok".into(),
            Err(e) => format!("{e:?}"),
        };
        let staged = match &written {
            Some((_, v)) => match KeyRing::decode(v.expose()) {
                Ok(r) => format!(" v{} ({})", r.latest().number, &r.latest().key.key_id()[..6]),
                Err(_) => String::new(),
            },
            None => String::new(),
        };
        self.trace.push(format!("{:?} store runs node {i}'s {what}{staged}: {outcome}", self.t));
        if let (Some((name, value)), Ok(_)) = (written, &answer) {
            let key = base_name(&name);
            if !(key.starts_with("minio-") || key == "app") {
                panic!("{}", self.failure(&format!("a key matching no rule was written: {name}")));
            }
            let ring = KeyRing::decode(value.expose()).expect("stored values decode");
            // A staged copy may be abandoned (its writer found the entry
            // changed): only the entry's states are committed.
            let committed = name == key;
            // A version is first stored by the node that made it, whose
            // clock wrote its created_at: in fleet time, when it decided.
            for v in ring.versions() {
                let Some(c) = v.key.created_at else { continue };
                let base = BASE_UNIX as i128 * 1_000_000_000 + self.nodes[i].skew_nanos;
                let fleet = Duration::from_nanos((c.as_nanos() - base).max(0) as u64);
                self.decided.entry(v.key.key_id().to_owned()).or_insert(fleet);
            }
            for v in ring.versions().iter().filter(|_| committed) {
                let id = v.key.key_id().to_owned();
                let entry =
                    self.seen.entry((key.clone(), v.number)).or_insert((id.clone(), self.t));
                if entry.0 != id {
                    let n = v.number;
                    panic!("{}", self.failure(&format!("version {n} of {key} names two keys")));
                }
            }
        }
        self.nodes[i].answers.push((id, answer));
    }

    fn deliver(&mut self, i: usize, k: usize) {
        let (id, answer) = self.nodes[i].answers.swap_remove(k);
        let now = self.now(self.nodes[i].skew_nanos);
        let node = &mut self.nodes[i];
        if let Some(s) = node.server.as_mut() {
            s.handle_store_result(id, answer, now, &mut node.rng);
        }
        self.collect(i);
    }

    fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.server = None;
        node.sent.clear();
        node.answers.clear();
        node.asked.clear();
        let back = Duration::from_millis(self.rng.next_u64() % 90_000);
        self.nodes[i].restart_at = self.t + back;
        self.trace.push(format!("{:?} node {i} crashes", self.t));
    }

    fn generate(&mut self, i: usize) {
        let keys = ["minio-a", "minio-b", "app", "other"];
        let key = keys[self.below(keys.len() as u64) as usize].to_owned();
        let ctx = format!("c{}", self.next_request);
        self.next_request += 1;
        let id = RequestId(self.next_request);
        let body = json!({"context": STANDARD.encode(&ctx)}).to_string();
        let req = Request::new(Method::PUT, &format!("/v1/key/generate/{key}")).with_body(body);
        let now = self.now(self.nodes[i].skew_nanos);
        let node = &mut self.nodes[i];
        let Some(s) = node.server.as_mut() else { return };
        node.asked.insert(id, (key, ctx));
        s.handle_request(id, Caller::Identified(admin()), req, now, &mut node.rng);
        self.collect(i);
    }

    /// Runs every node's timers due by fleet time `t`.
    fn timers(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].server.is_none() && self.nodes[i].restart_at <= self.t {
                self.start_node(i);
            }
            let now = self.now(self.nodes[i].skew_nanos);
            let node = &mut self.nodes[i];
            let Some(s) = node.server.as_mut() else { continue };
            if s.poll_timeout().is_some_and(|(d, _)| d <= now.instant) {
                s.handle_timeout(now, &mut node.rng);
            }
            self.collect(i);
        }
    }

    /// The next timer of any node, or a crashed node's restart.
    fn next_timer(&self) -> Option<Duration> {
        self.nodes
            .iter()
            .filter_map(|n| match &n.server {
                Some(s) => s.poll_timeout().map(|(d, _)| d.saturating_duration_since(self.base)),
                None => Some(n.restart_at),
            })
            .min()
    }
}

/// The key a stored name belongs to.
fn base_name(stored: &str) -> String {
    KeyName::of_staging(stored).map_or_else(|| stored.to_owned(), |k| k.as_str().to_owned())
}

fn describe(cmd: &Command) -> String {
    match cmd {
        Command::Create { name, .. } => format!("create {}", short(name)),
        Command::Get { name } => format!("get {}", short(name)),
        Command::Delete { name } => format!("delete {}", short(name)),
        Command::List => "list".into(),
        Command::Status => "status".into(),
    }
}

fn short(name: &KeyName) -> String {
    let s = name.as_str();
    match KeyName::of_staging(s) {
        Some(k) => format!("{k}(staged)"),
        None if s.len() > 80 => format!("{}(breaker)", &s[..s.find('x').unwrap_or(0)]),
        None => s.to_owned(),
    }
}

/// One run: `nodes` cores for `span` of fleet time; panics with the seed.
fn run(seed: u64, nodes: usize, every: Duration, span: Duration, crashes: bool) {
    let mut sim = Sim {
        seed,
        rng: SeededRng(seed),
        base: Instant::now(),
        t: Duration::ZERO,
        store: MapStore::default(),
        nodes: Vec::new(),
        every,
        seen: BTreeMap::new(),
        decided: BTreeMap::new(),
        acked: Vec::new(),
        sealed: Vec::new(),
        next_request: 0,
        trace: Vec::new(),
    };
    // Keys of every age, one from an old KES without created_at.
    let now0 = sim.now(0);
    for (name, age) in
        [("minio-a", every / 3), ("minio-b", every * 5), ("app", every), ("other", every * 9)]
    {
        let created = UnixTime::from_nanos(now0.unix.as_nanos() - age.as_nanos() as i128);
        let key = SecretKey::generate(&mut sim.rng, created, None);
        sim.store.keys.insert(name.into(), keyfile::encode(&key).unwrap());
    }
    let mut bytes = [0u8; 32];
    sim.rng.fill_bytes(&mut bytes);
    let legacy = format!(r#"{{"bytes":"{}"}}"#, STANDARD.encode(bytes));
    sim.store.keys.insert("minio-legacy".into(), SecretBytes::new(legacy.into_bytes()));
    let other_before = sim.store.keys["other"].expose().to_vec();

    for i in 0..nodes {
        let skew = (sim.rng.next_u64() % (2 * MAX_SKEW.as_nanos() as u64)) as i128
            - MAX_SKEW.as_nanos() as i128;
        let rng = SeededRng(seed.wrapping_mul(31).wrapping_add(i as u64 + 1));
        sim.nodes.push(Node {
            server: None,
            skew_nanos: skew,
            rng,
            sent: Vec::new(),
            answers: Vec::new(),
            restart_at: Duration::ZERO,
            asked: BTreeMap::new(),
        });
        sim.start_node(i);
    }

    while sim.t < span {
        let busy: Vec<usize> = (0..nodes)
            .filter(|&i| !sim.nodes[i].sent.is_empty() || !sim.nodes[i].answers.is_empty())
            .collect();
        match sim.below(100) {
            // A store command runs, or an answer arrives, in random order.
            0..=69 if !busy.is_empty() => {
                let i = busy[sim.below(busy.len() as u64) as usize];
                let (s, a) = (sim.nodes[i].sent.len(), sim.nodes[i].answers.len());
                let k = sim.below((s + a) as u64) as usize;
                if k < s {
                    sim.execute(i, k);
                } else {
                    sim.deliver(i, k - s);
                }
            }
            70..=74 => {
                let i = sim.below(nodes as u64) as usize;
                sim.generate(i);
            }
            75 if crashes => {
                let i = sim.below(nodes as u64) as usize;
                if sim.nodes[i].server.is_some() && sim.below(20) == 0 {
                    sim.crash(i);
                }
            }
            _ => {
                // Time passes: a little while messages are out (store
                // latency), else straight to the next timer.
                let step = if busy.is_empty() {
                    sim.next_timer().map_or(Duration::from_secs(1), |d| d.saturating_sub(sim.t))
                } else {
                    Duration::from_millis(sim.below(300))
                };
                sim.t += step.max(Duration::from_millis(1));
                sim.timers();
            }
        }
    }

    // Quiesce: everything in flight lands, no more crashes, then every check
    // ends and a stale staged copy is cleaned up.
    for _ in 0..200_000 {
        let busy: Vec<usize> = (0..nodes)
            .filter(|&i| !sim.nodes[i].sent.is_empty() || !sim.nodes[i].answers.is_empty())
            .collect();
        if busy.is_empty() {
            break;
        }
        let i = busy[0];
        if !sim.nodes[i].sent.is_empty() {
            sim.execute(i, 0);
        } else {
            sim.deliver(i, 0);
        }
    }

    // The stored state: one entry per key, decodable.
    let mut final_rings = BTreeMap::new();
    for key in ["minio-a", "minio-b", "minio-legacy", "app"] {
        let name = KeyName::parse(key).unwrap();
        let value = sim
            .store
            .keys
            .get(key)
            .or_else(|| sim.store.keys.get(name.staging().as_str()))
            .unwrap_or_else(|| panic!("{}", sim.failure(&format!("{key} has no stored entry"))));
        let ring = KeyRing::decode(value.expose()).unwrap();
        let numbers: Vec<u32> = ring.versions().iter().map(|v| v.number).collect();
        let expected: Vec<u32> = (1..=ring.latest().number).collect();
        assert_eq!(
            numbers,
            expected,
            "{}",
            sim.failure(&format!("{key}: versions not contiguous"))
        );
        // Versions above 1 were all stored in the entry, unchanged, except
        // the newest when only its staged copy is left (its writer died).
        let staged_only = !sim.store.keys.contains_key(key);
        for v in ring.versions().iter().filter(|v| v.number > 1) {
            let newest = v.number == ring.latest().number;
            match sim.seen.get(&(key.to_owned(), v.number)) {
                Some((id, _)) => assert_eq!(
                    id,
                    v.key.key_id(),
                    "{}",
                    sim.failure(&format!("{key} v{} changed", v.number))
                ),
                None => assert!(
                    staged_only && newest,
                    "{}",
                    sim.failure(&format!("{key} v{} was never stored in the entry", v.number))
                ),
            }
        }
        final_rings.insert(key, ring);
    }
    assert_eq!(
        sim.store.keys["other"].expose(),
        &other_before[..],
        "a key matching no rule changed"
    );

    // Every reported rotation is its own version, and it is stored.
    let mut distinct = BTreeSet::new();
    for (key, v) in &sim.acked {
        assert!(
            distinct.insert((key.clone(), *v)),
            "{}",
            sim.failure(&format!("{key} v{v} reported twice"))
        );
        let latest = final_rings[key.as_str()].latest().number;
        assert!(
            *v <= latest,
            "{}",
            sim.failure(&format!("{key} v{v} reported, newest stored is v{latest}"))
        );
    }

    // One version per period, and the periods keep coming.
    for key in ["minio-a", "minio-b", "minio-legacy", "app"] {
        let period = if key == "app" { every * 2 } else { every };
        let ring = &final_rings[key];
        let times: Vec<Duration> = ring.versions()[1..]
            .iter()
            .filter_map(|v| sim.decided.get(v.key.key_id()).copied())
            .collect();
        for w in times.windows(2) {
            let gap = w[1].saturating_sub(w[0]);
            assert!(
                gap + 2 * MAX_SKEW >= period,
                "{}",
                sim.failure(&format!("{key}: two versions {gap:?} apart, period {period:?}"))
            );
        }
        // Slack: a sweep interval, a crashed writer's stale lock (60 s), a
        // given-up check (30 s) and a restart (up to 90 s), per period.
        let slack = (period / 8).max(Duration::from_secs(1))
            + Duration::from_secs(if crashes { 200 } else { 5 });
        let least = (span.as_nanos() / (period + slack).as_nanos()) as u32;
        let rotations = ring.latest().number - 1;
        assert!(
            rotations + 1 >= least,
            "{}",
            sim.failure(&format!(
                "{key}: {rotations} rotations in {span:?}, expected at least {}",
                least.saturating_sub(1)
            ))
        );
    }

    // Every data key handed out opens on a fresh node over the final store.
    let mut h = Harness::new(config(every), sim.now(0), seed ^ 0x5eed);
    h.store.keys = sim.store.keys.clone();
    for (key, ctx, ct, pt) in &sim.sealed {
        let body = json!({"ciphertext": ct, "context": STANDARD.encode(ctx)}).to_string();
        let r = h.request(
            Caller::Identified(admin()),
            Request::new(Method::PUT, &format!("/v1/key/decrypt/{key}")).with_body(body),
        );
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{}",
            sim.failure(&format!(
                "a data key of {key} ({ctx}) no longer opens: {}",
                String::from_utf8_lossy(&r.body)
            ))
        );
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(&v["plaintext"], pt);
    }
}

fn seeds(default: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("ROTATION_SEED") {
        return vec![s.parse().expect("ROTATION_SEED is a number")];
    }
    let n = std::env::var("ROTATION_SEEDS").ok().and_then(|n| n.parse().ok()).unwrap_or(default);
    (0..n).collect()
}

/// Hours of fleet time, monthly-style periods scaled down to an hour.
#[test]
fn fleet_rotates_each_key_once_per_period_through_crashes() {
    for seed in seeds(30) {
        let nodes = 2 + (seed % 4) as usize;
        run(seed, nodes, Duration::from_secs(3600), Duration::from_secs(12 * 3600), true);
    }
}

/// Short periods: every sweep of every node races for the same keys.
#[test]
fn fleet_races_on_short_periods_without_double_rotation() {
    for seed in seeds(30) {
        let nodes = 2 + (seed % 4) as usize;
        run(
            seed + 1_000_000,
            nodes,
            Duration::from_secs(10),
            Duration::from_secs(290),
            seed % 2 == 0,
        );
    }
}
