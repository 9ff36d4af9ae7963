//! Test helpers shared by unit tests, benches and fuzz targets.

/// A deterministic RNG (splitmix64). It is NOT cryptographically secure: it
/// exists so tests, benches and fuzzing replay byte-identical runs.
#[derive(Clone, Debug)]
pub struct SeededRng(pub u64);

impl rand_core::RngCore for SeededRng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

// Deliberately marked: only test code may pass this where a CSPRNG is expected.
impl rand_core::CryptoRng for SeededRng {}

use std::collections::BTreeMap;
use std::time::Duration;

use crate::crypto::SecretBytes;
use crate::{
    Caller, Command, Config, Event, Now, Request, RequestId, Response, Server, StoreError,
    StoreReply,
};

/// A key store in a map, executing commands synchronously; it can be made
/// unreachable to exercise the offline cache.
#[derive(Default)]
pub struct MapStore {
    /// Stored values by name.
    pub keys: BTreeMap<String, SecretBytes>,
    /// When true, every command fails with `Unreachable`.
    pub unreachable: bool,
    /// Commands executed, for single-flight checks.
    pub executed: usize,
}

impl MapStore {
    /// Executes one command.
    pub fn execute(&mut self, cmd: Command) -> Result<StoreReply, StoreError> {
        self.executed += 1;
        if self.unreachable {
            return Err(StoreError::Unreachable("simulated outage".into()));
        }
        match cmd {
            Command::Create { name, value } => {
                if self.keys.contains_key(name.as_str()) {
                    return Err(StoreError::Exists);
                }
                self.keys.insert(name.as_str().to_owned(), value);
                Ok(StoreReply::Created)
            }
            Command::Get { name } => self
                .keys
                .get(name.as_str())
                .cloned()
                .map(StoreReply::Value)
                .ok_or(StoreError::NotFound),
            Command::Delete { name } => self
                .keys
                .remove(name.as_str())
                .map(|_| StoreReply::Deleted)
                .ok_or(StoreError::NotFound),
            Command::List => Ok(StoreReply::Names(self.keys.keys().cloned().collect())),
            Command::Status => Ok(StoreReply::Status { latency: Duration::from_millis(1) }),
        }
    }
}

/// A server, a map store and a simulated clock, driven to completion after
/// every input (quinn's `Pair`, for one endpoint).
pub struct Harness {
    /// The system under test.
    pub server: Server,
    /// Its store.
    pub store: MapStore,
    /// The simulated time.
    pub now: Now,
    /// Seeded randomness.
    pub rng: SeededRng,
    /// Every event produced so far.
    pub events: Vec<Event>,
    next: u64,
}

impl Harness {
    /// Starts a server at `now` and completes its startup.
    pub fn new(config: Config, now: Now, seed: u64) -> Self {
        let mut rng = SeededRng(seed);
        let server = Server::new(config, now, &mut rng);
        let mut h =
            Self { server, store: MapStore::default(), now, rng, events: Vec::new(), next: 0 };
        h.drain(&mut Vec::new());
        h
    }

    /// Sends a request and returns its response (driving store commands).
    pub fn request(&mut self, caller: Caller, req: Request) -> Response {
        self.next += 1;
        let id = RequestId(self.next);
        self.server.handle_request(id, caller, req, self.now, &mut self.rng);
        let mut done = Vec::new();
        self.drain(&mut done);
        done.into_iter().find(|(rid, _)| *rid == id).map(|(_, r)| r).unwrap_or_else(|| {
            Response::error(http::StatusCode::INTERNAL_SERVER_ERROR, "harness: no response")
        })
    }

    /// Advances the clock, running every timer that falls due on the way.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now.instant + d;
        while let Some((t, _)) = self.server.poll_timeout() {
            if t > end {
                break;
            }
            let step = t.saturating_duration_since(self.now.instant);
            self.now = self.now.advanced(step);
            self.server.handle_timeout(self.now, &mut self.rng);
            self.drain(&mut Vec::new());
        }
        let rest = end.saturating_duration_since(self.now.instant);
        self.now = self.now.advanced(rest);
        self.server.handle_timeout(self.now, &mut self.rng);
        self.drain(&mut Vec::new());
    }

    fn drain(&mut self, done: &mut Vec<(RequestId, Response)>) {
        loop {
            let mut progress = false;
            while let Some((id, cmd)) = self.server.poll_command() {
                progress = true;
                let r = self.store.execute(cmd);
                self.server.handle_store_result(id, r, self.now, &mut self.rng);
            }
            while let Some(r) = self.server.poll_response() {
                progress = true;
                done.push(r);
            }
            while let Some(e) = self.server.poll_event() {
                progress = true;
                self.events.push(e);
            }
            if !progress {
                return;
            }
        }
    }
}
