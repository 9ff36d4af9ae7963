//! The server state machine: requests and store results in; responses, store
//! commands and events out. See the crate docs for the driving loop.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use rand_core::CryptoRngCore;
use serde_json::{json, Map, Value};

use crate::api::route::{self, percent_decode, RouteMatch};
use crate::api::wire::{self, b64, BadBody, LogStream, JSON, NDJSON};
use crate::api::{ApiError, Auth, Op, Request, Response, ROUTES};
use crate::cache::{KeyCache, Tick};
use crate::config::{AdminSetting, ApiCompat, Compat, Config};
use crate::crypto::{keyfile, Algorithm, SecretBytes, SecretKey};
use crate::event::{AuditEvent, ErrorEvent, Event};
use crate::identity::{Caller, Identity};
use crate::keystore::{Command, CommandId, StoreError, StoreReply};
use crate::metrics::{Metrics, SystemInfo};
use crate::name::{valid_name, KeyName, ListPattern, NameError};
use crate::policy::{Binding, Pattern, Policy, PolicySet, Refusal};
use crate::time::{Now, GO_ZERO_TIME};

/// Identifies one request; the adapter picks it and gets it back with the response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Limits the adapter enforces before the body reaches the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteLimits {
    /// Largest body to read; larger ones are refused with 413 unread.
    pub max_body: usize,
    /// The route's timeout (zero: none, for log streams).
    pub timeout: Duration,
}

/// Body limits and effective timeouts of every route.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    timeouts: Vec<Duration>,
}

impl RouteTable {
    /// The table a config defines (route defaults plus `api:` overrides).
    pub fn from_config(config: &Config) -> Self {
        let timeouts = ROUTES
            .iter()
            .map(|r| config.api.get(r.path).and_then(|o| o.timeout).unwrap_or(r.timeout))
            .collect();
        Self { timeouts }
    }

    /// The limits for a request path (percent-encoded), before its body is
    /// read. `None`: not a route (answered 404/301 without reading a body).
    pub fn limits(&self, path: &str) -> Option<RouteLimits> {
        match route::find(path) {
            RouteMatch::Found(i, _) => {
                let timeout = self.timeouts.get(i).copied().unwrap_or(ROUTES[i].timeout);
                Some(RouteLimits { max_body: ROUTES[i].max_body, timeout })
            }
            RouteMatch::Redirect(_) | RouteMatch::NotFound => None,
        }
    }
}

/// Most ciphertexts one bulk decrypt may carry.
const MAX_BULK: usize = 1000;
/// Server version reported by `/version` and `/v1/status`.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Per-request context kept for the response's audit record.
#[derive(Clone, Debug)]
struct Ctx {
    path: String,
    identity: Option<Identity>,
    peer: Option<IpAddr>,
    arrived: Now,
    /// Start of the request for its audit duration (at most `arrived`).
    received: Instant,
    head: bool,
}

/// What a request parked on a key fetch wants done with the key.
enum KeyOp {
    Describe(KeyName),
    Generate { context: Vec<u8> },
    Encrypt { plaintext: SecretBytes, context: Vec<u8> },
    Decrypt { ciphertext: Vec<u8>, context: Vec<u8> },
    Bulk(Vec<(Vec<u8>, Vec<u8>)>),
    Hmac { message: Vec<u8> },
}

/// What to do with the result of a store command other than a key fetch.
enum Pending {
    Create(RequestId),
    Delete(RequestId, KeyName),
    List(RequestId, ListPattern),
    Status(RequestId),
    Ready(RequestId),
    Probe,
    Declared(KeyName),
}

/// A request that may have to wait for the store.
struct Parked<'a> {
    id: RequestId,
    ctx: &'a Ctx,
    deadline: Option<Instant>,
}

struct InFlight {
    ctx: Ctx,
    deadline: Option<Instant>,
}

/// The KES server, without any IO.
pub struct Server {
    admin: AdminSetting,
    overrides: Vec<(bool, Duration)>,
    compat: Compat,
    policies: PolicySet,
    cache: KeyCache,
    started: Now,
    system: SystemInfo,
    audit_all: bool,
    next_command: u64,
    issued: BTreeMap<CommandId, Instant>,
    inflight: BTreeMap<RequestId, InFlight>,
    fetches: BTreeMap<CommandId, KeyName>,
    fetching: BTreeMap<KeyName, Vec<(RequestId, KeyOp)>>,
    pending: BTreeMap<CommandId, Pending>,
    commands: VecDeque<(CommandId, Command)>,
    responses: VecDeque<(RequestId, Response)>,
    events: VecDeque<Event>,
    metrics: Metrics,
    startup_failures: Vec<String>,
    declared_open: usize,
}

impl Server {
    /// Builds a server from a validated config. Declared `keys:` are queued as
    /// create commands at once: drain [`Self::poll_command`] and feed the
    /// results back before serving, then check [`Self::startup_failures`].
    pub fn new(config: Config, now: Now, rng: &mut dyn CryptoRngCore) -> Self {
        let mut server = Self {
            admin: AdminSetting::Unset,
            overrides: Vec::new(),
            compat: Compat::default(),
            policies: PolicySet::default(),
            cache: KeyCache::new(config.cache, now.instant),
            started: now,
            system: SystemInfo::default(),
            audit_all: true,
            next_command: 0,
            issued: BTreeMap::new(),
            inflight: BTreeMap::new(),
            fetches: BTreeMap::new(),
            fetching: BTreeMap::new(),
            pending: BTreeMap::new(),
            commands: VecDeque::new(),
            responses: VecDeque::new(),
            events: VecDeque::new(),
            metrics: Metrics::default(),
            startup_failures: Vec::new(),
            declared_open: 0,
        };
        let keys = config.keys.clone();
        server.apply(config, now);
        for name in keys {
            match KeyName::parse(&name) {
                Ok(name) => {
                    let created_by = server.admin.identity();
                    let key = SecretKey::generate(rng, now.unix, created_by);
                    match keyfile::encode(&key) {
                        Ok(value) => {
                            let id =
                                server.command(Command::Create { name: name.clone(), value }, now);
                            server.pending.insert(id, Pending::Declared(name));
                            server.declared_open += 1;
                        }
                        Err(e) => server
                            .startup_failures
                            .push(format!("failed to create key '{name}': {e}")),
                    }
                }
                Err(e) => server.startup_failures.push(e.to_string()),
            }
        }
        server
    }

    /// Replaces policies, admin, route overrides and compat switches (SIGHUP).
    /// The key cache is kept: keys do not change with the config.
    pub fn reload(&mut self, config: Config, now: Now) {
        self.apply(config, now);
    }

    fn apply(&mut self, config: Config, now: Now) {
        self.admin = config.admin;
        self.compat = config.compat;
        self.overrides = ROUTES
            .iter()
            .map(|r| {
                let o = config.api.get(r.path).copied().unwrap_or_default();
                (o.skip_auth, o.timeout.unwrap_or(r.timeout))
            })
            .collect();
        let mut set = PolicySet::default();
        let admin = self.admin.identity();
        for (name, p) in &config.policies {
            let policy = Policy {
                allow: p.allow.iter().map(|s| Pattern::new(s)).collect(),
                deny: p.deny.iter().map(|s| Pattern::new(s)).collect(),
                created_at: now.unix,
                created_by: admin,
            };
            set.set_policy(name, policy);
            for id in &p.identities {
                set.bind(
                    *id,
                    Binding { policy: name.clone(), created_at: now.unix, created_by: admin },
                );
            }
        }
        self.policies = set;
    }

    /// Whether audit events are produced for every request (default) or
    /// only while someone listens; set false when neither stdout nor a
    /// stream wants them, to save the work.
    pub fn set_audit_enabled(&mut self, on: bool) {
        self.audit_all = on;
    }

    /// Updates the process facts `/v1/status` and `/v1/metrics` report.
    pub fn set_system_info(&mut self, info: SystemInfo) {
        self.system = info;
    }

    /// Errors from creating declared keys; non-empty means "do not serve".
    pub fn startup_failures(&self) -> &[String] {
        &self.startup_failures
    }

    /// Whether declared-key creation is still waiting for store results.
    pub fn starting(&self) -> bool {
        self.declared_open > 0
    }

    /// The per-route limits, as a value connection tasks can hold and consult
    /// before a request reaches the core (it changes only on reload).
    pub fn route_table(&self) -> RouteTable {
        RouteTable { timeouts: self.overrides.iter().map(|(_, t)| *t).collect() }
    }

    /// Handles one request. Its response is in [`Self::poll_response`] at once
    /// unless it needs the key store, in which case a command is queued.
    pub fn handle_request(
        &mut self,
        id: RequestId,
        caller: Caller,
        req: Request,
        now: Now,
        rng: &mut dyn CryptoRngCore,
    ) {
        let ctx = Ctx {
            path: req.path.clone(),
            identity: caller.identity(),
            peer: req.peer,
            arrived: now,
            received: req.received.filter(|r| *r <= now.instant).unwrap_or(now.instant),
            head: req.method == Method::HEAD,
        };
        if let Err(e) = self.dispatch(id, caller, req, &ctx, now, rng) {
            self.finish(id, &ctx, e.response(), now);
        }
    }

    /// Hands back the result of a command from [`Self::poll_command`].
    pub fn handle_store_result(
        &mut self,
        id: CommandId,
        result: Result<StoreReply, StoreError>,
        now: Now,
        rng: &mut dyn CryptoRngCore,
    ) {
        if let Some(at) = self.issued.remove(&id) {
            self.metrics.observe_store(now.instant.saturating_duration_since(at));
        }
        if let Err(StoreError::Unreachable(_)) = &result {
            self.cache.set_offline(true, now.instant);
        }
        if let Some(name) = self.fetches.remove(&id) {
            self.finish_fetch(name, result, now, rng);
            return;
        }
        let Some(pending) = self.pending.remove(&id) else {
            return; // a stale or duplicate result: nothing waits for it
        };
        match pending {
            Pending::Declared(name) => {
                self.declared_open = self.declared_open.saturating_sub(1);
                match result {
                    Ok(_) | Err(StoreError::Exists) => {}
                    Err(e) => {
                        self.startup_failures.push(format!("failed to create key '{name}': {e}"))
                    }
                }
            }
            Pending::Probe => {
                let offline = !matches!(result, Ok(StoreReply::Status { .. }));
                self.cache.set_offline(offline, now.instant);
            }
            Pending::Create(req) => {
                let r = match result {
                    Ok(_) => Ok(Response::empty(StatusCode::OK)),
                    Err(StoreError::Exists) => Err(ApiError::KeyExists),
                    Err(e) => self.store_failure(e, ApiError::StoreCreate, now),
                };
                self.complete(req, r, now);
            }
            Pending::Delete(req, name) => {
                let r = match result {
                    Ok(_) => {
                        self.cache.evict(name.as_str());
                        Ok(Response::empty(StatusCode::OK))
                    }
                    Err(StoreError::NotFound) => {
                        self.cache.evict(name.as_str());
                        Err(ApiError::KeyNotFound)
                    }
                    Err(e) => self.store_failure(e, ApiError::StoreDelete, now),
                };
                self.complete(req, r, now);
            }
            Pending::List(req, pattern) => {
                let r = match result {
                    Ok(StoreReply::Names(mut names)) => {
                        names.retain(|n| valid_name(n) && pattern.matches(n));
                        names.sort_unstable();
                        names.dedup();
                        let mut body = Vec::with_capacity(names.len() * 24);
                        for n in names {
                            body.extend_from_slice(json!({ "name": n }).to_string().as_bytes());
                            body.push(b'\n');
                        }
                        Ok(Response::with(StatusCode::OK, NDJSON, body))
                    }
                    Ok(_) => Err(ApiError::StoreList),
                    Err(e) => self.store_failure(e, ApiError::StoreList, now),
                };
                self.complete(req, r, now);
            }
            Pending::Status(req) => {
                let latency = match &result {
                    Ok(StoreReply::Status { latency }) => Some(*latency),
                    _ => None,
                };
                self.cache.set_offline(latency.is_none(), now.instant);
                let r = Ok(self.status_body(latency, now));
                self.complete(req, r, now);
            }
            Pending::Ready(req) => {
                let r = match result {
                    Ok(StoreReply::Status { .. }) => {
                        self.cache.set_offline(false, now.instant);
                        Ok(Response::empty(StatusCode::OK))
                    }
                    Err(StoreError::Unreachable(_)) => Err(ApiError::StoreUnreachable),
                    _ => Err(ApiError::StoreUnavailable),
                };
                self.complete(req, r, now);
            }
        }
    }

    /// Runs expiries and request timeouts that are due. Spurious calls are safe.
    pub fn handle_timeout(&mut self, now: Now) {
        if self.cache.handle_timeout(now.instant) == Tick::Probe {
            let id = self.command(Command::Status, now);
            self.pending.insert(id, Pending::Probe);
        }
        let expired: Vec<RequestId> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.deadline.is_some_and(|d| d <= now.instant))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            for waiters in self.fetching.values_mut() {
                waiters.retain(|(r, _)| *r != id);
            }
            self.complete(id, Err(ApiError::Timeout), now);
        }
    }

    /// The next store command to execute. Poll again after every `handle_*`.
    #[must_use]
    pub fn poll_command(&mut self) -> Option<(CommandId, Command)> {
        self.commands.pop_front()
    }

    /// The next finished response. Poll again after every `handle_*`.
    #[must_use]
    pub fn poll_response(&mut self) -> Option<(RequestId, Response)> {
        self.responses.pop_front()
    }

    /// The next audit or error event. Poll again after every `handle_*`.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] next has work, and who wants it.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        let requests =
            self.inflight.values().filter_map(|f| f.deadline).min().map(|d| (d, "request"));
        let cache = self.cache.poll_timeout().map(|d| (d, "cache"));
        [requests, cache].into_iter().flatten().min_by_key(|(d, _)| *d)
    }

    /// Requests waiting for the key store.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// The request and cache counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    // -- dispatch ----------------------------------------------------------

    fn dispatch(
        &mut self,
        id: RequestId,
        caller: Caller,
        req: Request,
        ctx: &Ctx,
        now: Now,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<(), ApiError> {
        // Route on the raw path, then decode: an encoded `/` or `..` inside a
        // resource must fail name validation, never change the route.
        let (index, raw_resource) = match route::find(&req.path) {
            RouteMatch::Found(i, rest) => (i, rest),
            RouteMatch::Redirect(to) => {
                let location = match &req.query {
                    Some(q) => format!("{to}?{q}"),
                    None => to,
                };
                let mut r = Response::empty(StatusCode::MOVED_PERMANENTLY);
                r.headers.push(("Location", location.into()));
                self.finish(id, ctx, r, now);
                return Ok(());
            }
            RouteMatch::NotFound => {
                let mut r = Response::with(
                    StatusCode::NOT_FOUND,
                    "text/plain; charset=utf-8",
                    b"404 page not found\n".to_vec(),
                );
                r.headers.push(("X-Content-Type-Options", "nosniff".into()));
                self.finish(id, ctx, r, now);
                return Ok(());
            }
        };
        let path = percent_decode(&req.path).ok_or(ApiError::BadPath)?;
        let resource = percent_decode(raw_resource).ok_or(ApiError::BadPath)?;
        let route = &ROUTES[index];
        if !route.accepts(&req.method) {
            return Err(ApiError::MethodNotAllowed {
                got: req.method.to_string(),
                want: route.method.as_str(),
            });
        }
        if let Some(q) = &req.query {
            let enclave = q.split('&').find_map(|kv| kv.strip_prefix("enclave="));
            if enclave.is_some_and(|e| !e.is_empty()) {
                return Err(ApiError::EnclaveNotFound);
            }
        }
        let (skip_auth, timeout) = self.overrides.get(index).copied().unwrap_or_default();
        self.authorize(route.auth, skip_auth, caller, &path)?;
        if req.body_too_large {
            return Err(ApiError::BodyTooLarge);
        }
        let deadline = (!timeout.is_zero()).then(|| now.instant + timeout);
        // The body may hold a plaintext (encrypt) or key (import): wiped on drop.
        let body = zeroize::Zeroizing::new(req.body);
        let key = |r: &str| KeyName::parse(r).map_err(ApiError::InvalidName);
        let object = |b: &[u8]| wire::parse_object(b).map_err(|BadBody| ApiError::InvalidBody);
        match route.op {
            Op::Version => {
                let r = Response::json(&json!({ "version": VERSION, "commit": "" }));
                self.finish(id, ctx, r, now);
            }
            Op::Status => self.issue(id, ctx, deadline, Command::Status, Pending::Status(id)),
            Op::Ready => self.issue(id, ctx, deadline, Command::Status, Pending::Ready(id)),
            Op::Metrics => {
                let text = self.metrics.render(
                    self.inflight.len() + 1,
                    now.instant - self.started.instant,
                    &self.system,
                );
                let r = Response::with(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    text.into_bytes(),
                );
                self.finish(id, ctx, r, now);
            }
            Op::Api => {
                let routes: Vec<Value> = ROUTES
                    .iter()
                    .zip(&self.overrides)
                    .filter(|(r, _)| r.listed)
                    .map(|(r, (_, t))| json!({"method": r.method.as_str(), "path": r.path, "max_body": r.max_body, "timeout": t.as_secs()}))
                    .collect();
                self.finish(id, ctx, Response::json(&Value::Array(routes)), now);
            }
            Op::KeyCreate => {
                let name = key(&resource)?;
                let k = SecretKey::generate(rng, now.unix, ctx.identity);
                self.create(id, ctx, deadline, name, &k)?;
            }
            Op::KeyImport => {
                let name = key(&resource)?;
                // An import needs a key: no body at all is a decode error
                // (Go's json decoder says EOF), not a key of size zero.
                if body.iter().all(u8::is_ascii_whitespace) {
                    return Err(ApiError::InvalidImportBody);
                }
                let obj = wire::parse_object(&body).map_err(|_| ApiError::InvalidImportBody)?;
                let mut bytes =
                    wire::bytes_field(&obj, "key").map_err(|_| ApiError::InvalidImportBody)?;
                if bytes.is_empty() {
                    bytes = wire::bytes_field(&obj, "bytes")
                        .map_err(|_| ApiError::InvalidImportBody)?;
                }
                let bytes = SecretBytes::new(bytes);
                let cipher =
                    wire::str_field(&obj, "cipher").map_err(|_| ApiError::InvalidImportBody)?;
                let alg = if cipher.is_empty() {
                    Algorithm::Aes256
                } else {
                    Algorithm::from_name(cipher)
                        .ok_or_else(|| ApiError::UnsupportedAlgorithm(cipher.to_owned()))?
                };
                let label = if cipher.is_empty() { "AES256" } else { cipher };
                let raw: [u8; 32] = bytes
                    .expose()
                    .try_into()
                    .map_err(|_| ApiError::InvalidKeySize(label.to_owned()))?;
                let mut hmac = [0u8; 32];
                rng.fill_bytes(&mut hmac);
                let k = SecretKey::new(
                    raw,
                    Some(alg),
                    Some(hmac),
                    Some(now.unix),
                    ctx.identity.map(|i| i.to_string()),
                );
                self.create(id, ctx, deadline, name, &k)?;
            }
            Op::KeyDelete => {
                let name = key(&resource)?;
                self.issue(
                    id,
                    ctx,
                    deadline,
                    Command::Delete { name: name.clone() },
                    Pending::Delete(id, name),
                );
            }
            Op::KeyList => {
                let pattern = ListPattern::parse(&resource).map_err(ApiError::InvalidName)?;
                self.issue(id, ctx, deadline, Command::List, Pending::List(id, pattern));
            }
            Op::KeyDescribe => {
                let name = key(&resource)?;
                let lookup = name.as_str().to_owned();
                self.with_key(
                    Parked { id, ctx, deadline },
                    &lookup,
                    KeyOp::Describe(name),
                    now,
                    rng,
                );
            }
            Op::KeyGenerate => {
                let name = key_ref(&resource)?;
                let [context] = fields(&body, ["context"])?;
                let context = unb64(context)?;
                self.with_key(
                    Parked { id, ctx, deadline },
                    name,
                    KeyOp::Generate { context },
                    now,
                    rng,
                );
            }
            Op::KeyEncrypt => {
                let name = key_ref(&resource)?;
                let [plaintext, context] = fields(&body, ["plaintext", "context"])?;
                let plaintext = SecretBytes::new(unb64(plaintext)?);
                let context = unb64(context)?;
                self.with_key(
                    Parked { id, ctx, deadline },
                    name,
                    KeyOp::Encrypt { plaintext, context },
                    now,
                    rng,
                );
            }
            Op::KeyDecrypt => {
                let name = key_ref(&resource)?;
                let [ciphertext, context] = fields(&body, ["ciphertext", "context"])?;
                let ciphertext = unb64(ciphertext)?;
                let context = unb64(context)?;
                self.with_key(
                    Parked { id, ctx, deadline },
                    name,
                    KeyOp::Decrypt { ciphertext, context },
                    now,
                    rng,
                );
            }
            Op::KeyBulkDecrypt => {
                let name = key_ref(&resource)?;
                let items: Vec<Value> =
                    serde_json::from_slice(&body).map_err(|_| ApiError::InvalidBody)?;
                if items.len() > MAX_BULK {
                    return Err(ApiError::TooManyCiphertexts);
                }
                let mut list = Vec::with_capacity(items.len());
                for item in &items {
                    let obj = item.as_object().ok_or(ApiError::InvalidBody)?;
                    let ct = bytes(obj, "ciphertext")?;
                    let cx = bytes(obj, "context")?;
                    list.push((ct, cx));
                }
                self.with_key(Parked { id, ctx, deadline }, name, KeyOp::Bulk(list), now, rng);
            }
            Op::KeyHmac => {
                let name = key_ref(&resource)?;
                let [message] = fields(&body, ["message"])?;
                let message = unb64(message)?;
                self.with_key(
                    Parked { id, ctx, deadline },
                    name,
                    KeyOp::Hmac { message },
                    now,
                    rng,
                );
            }
            Op::PolicyDescribe | Op::PolicyRead => {
                let name = policy_name(&resource)?;
                let p = self.policies.policy(&name).ok_or(ApiError::PolicyNotFound)?;
                let mut v = Map::new();
                if route.op == Op::PolicyRead {
                    match self.compat.api {
                        ApiCompat::V024 => {
                            v.insert("name".into(), name.clone().into());
                            insert_pattern_objects(&mut v, p, "allow", "deny");
                        }
                        ApiCompat::V019 => {
                            if !p.allow.is_empty() {
                                v.insert("allow".into(), patterns(&p.allow));
                            }
                            if !p.deny.is_empty() {
                                v.insert("deny".into(), patterns(&p.deny));
                            }
                        }
                    }
                } else {
                    v.insert("name".into(), name.clone().into());
                }
                v.insert("created_at".into(), p.created_at.to_string().into());
                if let Some(by) = p.created_by {
                    v.insert("created_by".into(), by.to_string().into());
                }
                self.finish(id, ctx, Response::json(&Value::Object(v)), now);
            }
            Op::PolicyWrite => {
                let name = policy_name(&resource)?;
                let obj = object(&body)?;
                let list = |field: &str| -> Result<Vec<Pattern>, ApiError> {
                    match wire::field_ci(&obj, field) {
                        None | Some(Value::Null) => Ok(Vec::new()),
                        Some(Value::Array(a)) => a
                            .iter()
                            .map(|v| v.as_str().map(Pattern::new).ok_or(ApiError::InvalidBody))
                            .collect(),
                        Some(_) => Err(ApiError::InvalidBody),
                    }
                };
                let policy = Policy {
                    allow: list("allow")?,
                    deny: list("deny")?,
                    created_at: now.unix,
                    created_by: ctx.identity,
                };
                self.policies.set_policy(&name, policy);
                self.finish(id, ctx, Response::empty(StatusCode::OK), now);
            }
            Op::PolicyAssign => {
                let name = policy_name(&resource)?;
                let obj = object(&body)?;
                let text = wire::str_field(&obj, "identity").map_err(|_| ApiError::InvalidBody)?;
                if text.is_empty() {
                    return Err(ApiError::IdentityUnknown);
                }
                let target = Identity::parse(text)
                    .ok_or_else(|| ApiError::InvalidName(NameError::Identity(text.to_owned())))?;
                if Some(target) == ctx.identity {
                    return Err(ApiError::SelfAssign);
                }
                if Some(target) == self.admin.identity() {
                    return Err(ApiError::IdentityIsRoot);
                }
                self.policies.bind(
                    target,
                    Binding { policy: name, created_at: now.unix, created_by: ctx.identity },
                );
                self.finish(id, ctx, Response::empty(StatusCode::OK), now);
            }
            Op::PolicyDelete => {
                let name = policy_name(&resource)?;
                self.policies.remove_policy(&name);
                self.finish(id, ctx, Response::empty(StatusCode::OK), now);
            }
            Op::PolicyList => {
                let pattern = ListPattern::parse(&resource).map_err(ApiError::InvalidName)?;
                let mut body = Vec::new();
                for (name, p) in self.policies.policies().filter(|(n, _)| pattern.matches(n)) {
                    let mut v = json!({ "name": name, "created_at": p.created_at.to_string() });
                    if let Some(by) = p.created_by {
                        v["created_by"] = by.to_string().into();
                    }
                    body.extend_from_slice(v.to_string().as_bytes());
                    body.push(b'\n');
                }
                self.finish(id, ctx, Response::with(StatusCode::OK, NDJSON, body), now);
            }
            Op::IdentityDescribe => {
                let target = identity_arg(&resource)?;
                let r = self.describe_identity(target)?;
                self.finish(id, ctx, r, now);
            }
            Op::IdentitySelfDescribe => {
                let r = self.describe_self(ctx.identity)?;
                self.finish(id, ctx, r, now);
            }
            Op::IdentityList => {
                let pattern = ListPattern::parse(&resource).map_err(ApiError::InvalidName)?;
                let mut lines: BTreeMap<String, Value> = BTreeMap::new();
                if let Some(admin) = self.admin.identity() {
                    let s = admin.to_string();
                    if pattern.matches(&s) {
                        lines.insert(s.clone(), json!({"identity": s, "admin": true, "created_at": self.started.unix.to_string()}));
                    }
                }
                for (ident, b) in self.policies.bindings() {
                    let s = ident.to_string();
                    if pattern.matches(&s) {
                        let mut v = json!({"identity": s, "admin": false, "policy": b.policy, "created_at": b.created_at.to_string()});
                        if let Some(by) = b.created_by {
                            v["created_by"] = by.to_string().into();
                        }
                        lines.insert(s, v);
                    }
                }
                let mut body = Vec::new();
                for v in lines.values() {
                    body.extend_from_slice(v.to_string().as_bytes());
                    body.push(b'\n');
                }
                self.finish(id, ctx, Response::with(StatusCode::OK, NDJSON, body), now);
            }
            Op::IdentityForget => {
                let target = identity_arg(&resource)?;
                if let Some(t) = Identity::parse(&target) {
                    self.policies.forget(&t);
                }
                self.finish(id, ctx, Response::empty(StatusCode::OK), now);
            }
            Op::LogError | Op::LogAudit => {
                let mut r = Response::with(StatusCode::OK, NDJSON, Vec::new());
                r.stream = Some(if route.op == Op::LogAudit {
                    LogStream::Audit
                } else {
                    LogStream::Error
                });
                self.finish(id, ctx, r, now);
            }
            Op::EnclaveCreate | Op::EnclaveDelete => {
                if !valid_name(&resource) {
                    return Err(ApiError::InvalidName(NameError::Key(resource.into_owned())));
                }
                return Err(ApiError::EnclaveUnsupported(if route.op == Op::EnclaveCreate {
                    "creating encalves is not supported"
                } else {
                    "deleting encalves is not supported"
                }));
            }
        }
        Ok(())
    }

    fn authorize(
        &self,
        auth: Auth,
        skip: bool,
        caller: Caller,
        path: &str,
    ) -> Result<(), ApiError> {
        let admin = self.admin.identity();
        match (auth, skip) {
            (Auth::None, _) | (Auth::Policy, true) => Ok(()),
            (Auth::Identity, _) => caller.identity().map(|_| ()).ok_or(match caller {
                Caller::Anonymous(e) => ApiError::NoIdentity(e),
                Caller::Identified(_) => ApiError::NotAllowed,
            }),
            (Auth::Admin, _) => match caller {
                Caller::Anonymous(e) => Err(ApiError::NoIdentity(e)),
                Caller::Identified(id) if Some(id) == admin => Ok(()),
                Caller::Identified(_) => Err(ApiError::AdminOnly),
            },
            (Auth::Policy, false) => match caller {
                Caller::Anonymous(e) => Err(ApiError::NoIdentity(e)),
                Caller::Identified(id) if Some(id) == admin => Ok(()),
                Caller::Identified(id) => self.policies.authorize(&id, path).map_err(|r| match r {
                    Refusal::NotAllowed => ApiError::NotAllowed,
                    Refusal::PolicyMissing => ApiError::PolicyNotFound,
                }),
            },
        }
    }

    fn create(
        &mut self,
        id: RequestId,
        ctx: &Ctx,
        deadline: Option<Instant>,
        name: KeyName,
        key: &SecretKey,
    ) -> Result<(), ApiError> {
        let value = keyfile::encode(key).map_err(|_| ApiError::StoreCreate)?;
        self.issue(id, ctx, deadline, Command::Create { name, value }, Pending::Create(id));
        Ok(())
    }

    fn issue(
        &mut self,
        id: RequestId,
        ctx: &Ctx,
        deadline: Option<Instant>,
        cmd: Command,
        p: Pending,
    ) {
        let cid = self.command(cmd, ctx.arrived);
        self.pending.insert(cid, p);
        self.inflight.insert(id, InFlight { ctx: ctx.clone(), deadline });
    }

    fn command(&mut self, cmd: Command, now: Now) -> CommandId {
        self.next_command += 1;
        let id = CommandId(self.next_command);
        self.issued.insert(id, now.instant);
        self.commands.push_back((id, cmd));
        id
    }

    /// Runs `op` with the named key now if cached, else parks the request
    /// and fetches the key (once, however many requests wait for it).
    /// `name` is validated already; a `KeyName` is only built on a miss, so a
    /// cache hit allocates nothing for the name.
    fn with_key(
        &mut self,
        parked: Parked<'_>,
        name: &str,
        op: KeyOp,
        now: Now,
        rng: &mut dyn CryptoRngCore,
    ) {
        let Parked { id, ctx, deadline } = parked;
        let format = self.compat.ciphertext;
        if let Some(key) = self.cache.get(name) {
            let r = run_key_op(key, op, format, rng);
            self.metrics.cache_hits += 1;
            self.finish_result(id, ctx, r, now);
            return;
        }
        self.metrics.cache_misses += 1;
        let name = match KeyName::parse(name) {
            Ok(n) => n,
            Err(e) => return self.finish_result(id, ctx, Err(ApiError::InvalidName(e)), now),
        };
        self.inflight.insert(id, InFlight { ctx: ctx.clone(), deadline });
        let waiters = self.fetching.entry(name.clone()).or_default();
        waiters.push((id, op));
        if waiters.len() == 1 {
            let cid = self.command(Command::Get { name: name.clone() }, now);
            self.fetches.insert(cid, name);
        }
    }

    fn finish_fetch(
        &mut self,
        name: KeyName,
        result: Result<StoreReply, StoreError>,
        now: Now,
        rng: &mut dyn CryptoRngCore,
    ) {
        let waiters = self.fetching.remove(&name).unwrap_or_default();
        let outcome: Result<(), ApiError> = match result {
            Ok(StoreReply::Value(v)) => match keyfile::decode(v.expose()) {
                Ok(key) => {
                    self.cache.set_offline(false, now.instant);
                    self.cache.insert(name.clone(), key);
                    Ok(())
                }
                Err(e) => {
                    self.error_event(format!("key '{name}': {e}"), now);
                    Err(ApiError::KeyMalformed)
                }
            },
            Ok(_) => Err(ApiError::StoreRead),
            Err(StoreError::NotFound) => Err(ApiError::KeyNotFound),
            Err(e) => self.store_failure::<()>(e, ApiError::StoreRead, now).map(|_| ()),
        };
        let format = self.compat.ciphertext;
        for (req, op) in waiters {
            let r = match &outcome {
                Ok(()) => match self.cache.get(name.as_str()) {
                    Some(key) => run_key_op(key, op, format, rng),
                    None => Err(ApiError::StoreRead),
                },
                Err(e) => Err(e.clone()),
            };
            self.complete(req, r, now);
        }
    }

    fn store_failure<T>(&mut self, e: StoreError, api: ApiError, now: Now) -> Result<T, ApiError> {
        self.error_event(e.to_string(), now);
        Err(api)
    }

    fn error_event(&mut self, message: String, now: Now) {
        self.metrics.error_events += 1;
        self.events.push_back(Event::Error(ErrorEvent { time: now.unix, message }));
    }

    /// Finishes a parked request, if it is still waiting.
    fn complete(&mut self, id: RequestId, r: Result<Response, ApiError>, now: Now) {
        if let Some(f) = self.inflight.remove(&id) {
            self.finish_result(id, &f.ctx, r, now);
        }
    }

    fn finish_result(&mut self, id: RequestId, ctx: &Ctx, r: Result<Response, ApiError>, now: Now) {
        let resp = r.unwrap_or_else(|e| e.response());
        self.finish(id, ctx, resp, now);
    }

    fn finish(&mut self, id: RequestId, ctx: &Ctx, mut resp: Response, now: Now) {
        let elapsed = now.instant.saturating_duration_since(ctx.received);
        let code = resp.status.as_u16();
        self.metrics.observe(code, elapsed);
        if self.audit_all {
            self.metrics.audit_events += 1;
            self.events.push_back(Event::Audit(AuditEvent {
                time: ctx.arrived.unix,
                ip: ctx.peer,
                path: ctx.path.clone(),
                identity: ctx.identity,
                code,
                elapsed,
            }));
        }
        if ctx.head {
            resp.body.clear();
        }
        self.responses.push_back((id, resp));
    }

    // -- response bodies ---------------------------------------------------

    fn status_body(&self, latency: Option<Duration>, now: Now) -> Response {
        let uptime = now.instant.saturating_duration_since(self.started.instant);
        match self.compat.api {
            ApiCompat::V019 => Response::json(&json!({
                "version": VERSION,
                "uptime": uptime.as_secs() * 1_000_000_000,
            })),
            ApiCompat::V024 => {
                let s = &self.system;
                let mut v = json!({
                    "version": VERSION, "os": s.os, "arch": s.arch, "uptime": uptime.as_secs(),
                    "num_cpu": s.num_cpu, "num_cpu_used": s.num_cpu_used,
                    "mem_heap_used": s.mem_heap_used, "mem_stack_used": s.mem_stack_used,
                });
                match latency {
                    Some(l) => v["keystore_latency"] = (l.as_millis().max(1) as u64).into(),
                    None => {
                        v["keystore_unreachable"] = true.into();
                        v["keystore_unavailable"] = true.into();
                    }
                }
                Response::json(&v)
            }
        }
    }

    fn describe_identity(&self, target: String) -> Result<Response, ApiError> {
        let ident = Identity::parse(&target).ok_or(ApiError::IdentityNotFound)?;
        let start = self.started.unix.to_string();
        let v019 = self.compat.api == ApiCompat::V019;
        if Some(ident) == self.admin.identity() {
            return Ok(Response::json(&if v019 {
                json!({"identity": target, "policy": "", "created_at": start})
            } else {
                json!({"admin": true, "created_at": start})
            }));
        }
        let b = self.policies.binding(&ident).ok_or(ApiError::IdentityNotFound)?;
        let mut v = json!({"policy": b.policy, "created_at": b.created_at.to_string()});
        if v019 {
            v["identity"] = target.into();
        }
        if let Some(by) = b.created_by {
            v["created_by"] = by.to_string().into();
        }
        Ok(Response::json(&v))
    }

    fn describe_self(&self, caller: Option<Identity>) -> Result<Response, ApiError> {
        let ident = caller.ok_or(ApiError::IdentityNotFound)?;
        let start = self.started.unix.to_string();
        let v019 = self.compat.api == ApiCompat::V019;
        if Some(ident) == self.admin.identity() {
            let mut v = json!({"identity": ident.to_string(), "admin": true, "created_at": start});
            if v019 {
                v["policy"] = json!({"Allow": null, "Deny": null});
            }
            return Ok(Response::json(&v));
        }
        let b = self.policies.binding(&ident).ok_or(ApiError::IdentityNotFound)?;
        let p = self.policies.policy(&b.policy).ok_or(ApiError::PolicyNotFound)?;
        let mut v = Map::new();
        v.insert("identity".into(), ident.to_string().into());
        v.insert("admin".into(), false.into());
        v.insert("created_at".into(), b.created_at.to_string().into());
        if let Some(by) = b.created_by {
            v.insert("created_by".into(), by.to_string().into());
        }
        if v019 {
            v.insert("policy_name".into(), b.policy.clone().into());
            let list = |ps: &[Pattern]| {
                if ps.is_empty() {
                    Value::Null
                } else {
                    patterns(ps)
                }
            };
            v.insert("policy".into(), json!({"Allow": list(&p.allow), "Deny": list(&p.deny)}));
        } else {
            v.insert("policy".into(), b.policy.clone().into());
            insert_pattern_objects(&mut v, p, "allow", "deny");
        }
        let mut r = Response::json(&Value::Object(v));
        r.headers = vec![("Content-Type", JSON.into())];
        Ok(r)
    }
}

fn patterns(ps: &[Pattern]) -> Value {
    Value::Array(ps.iter().map(|p| Value::from(p.as_str())).collect())
}

fn insert_pattern_objects(v: &mut Map<String, Value>, p: &Policy, allow: &str, deny: &str) {
    let obj = |ps: &[Pattern]| {
        Value::Object(ps.iter().map(|p| (p.as_str().to_owned(), json!({}))).collect())
    };
    if !p.allow.is_empty() {
        v.insert(allow.into(), obj(&p.allow));
    }
    if !p.deny.is_empty() {
        v.insert(deny.into(), obj(&p.deny));
    }
}

/// Reads string fields of a request body in one pass; any problem is a 400.
fn fields<'a, const N: usize>(
    body: &'a [u8],
    names: [&str; N],
) -> Result<[Option<std::borrow::Cow<'a, str>>; N], ApiError> {
    wire::string_fields(body, names).map_err(|_| ApiError::InvalidBody)
}

/// Decodes a base64 field from [`fields`]; any problem is a 400.
fn unb64(v: Option<std::borrow::Cow<'_, str>>) -> Result<Vec<u8>, ApiError> {
    wire::b64_field(v.as_deref()).map_err(|_| ApiError::InvalidBody)
}

/// A base64 field of a request body; any decoding problem is a 400.
fn bytes(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, ApiError> {
    wire::bytes_field(obj, name).map_err(|_| ApiError::InvalidBody)
}

/// Validates a key name without allocating (the cached-key hot path).
fn key_ref(r: &str) -> Result<&str, ApiError> {
    if valid_name(r) {
        Ok(r)
    } else {
        Err(ApiError::InvalidName(NameError::Key(r.to_owned())))
    }
}

fn policy_name(r: &str) -> Result<String, ApiError> {
    if valid_name(r) {
        Ok(r.to_owned())
    } else {
        Err(ApiError::InvalidName(NameError::Policy(r.to_owned())))
    }
}

fn identity_arg(r: &str) -> Result<String, ApiError> {
    if valid_name(r) {
        Ok(r.to_owned())
    } else {
        Err(ApiError::InvalidName(NameError::Identity(r.to_owned())))
    }
}

fn run_key_op(
    key: &SecretKey,
    op: KeyOp,
    format: crate::crypto::CiphertextFormat,
    rng: &mut dyn CryptoRngCore,
) -> Result<Response, ApiError> {
    match op {
        KeyOp::Describe(name) => {
            let mut v = json!({
                "name": name.as_str(),
                "created_at": key.created_at.unwrap_or(GO_ZERO_TIME).to_string(),
            });
            if let Some(a) = key.algorithm() {
                v["algorithm"] = a.v24_name().into();
            }
            if let Some(by) = &key.created_by {
                v["created_by"] = by.clone().into();
            }
            Ok(Response::json(&v))
        }
        KeyOp::Generate { context } => {
            let mut dek = zeroize::Zeroizing::new([0u8; 32]);
            rng.fill_bytes(dek.as_mut());
            let ct = key.encrypt(dek.as_slice(), &context, format, rng);
            Ok(secret_json(&[("plaintext", dek.as_slice()), ("ciphertext", &ct)]))
        }
        KeyOp::Encrypt { plaintext, context } => {
            let ct = key.encrypt(plaintext.expose(), &context, format, rng);
            Ok(secret_json(&[("ciphertext", &ct)]))
        }
        KeyOp::Decrypt { ciphertext, context } => {
            let pt = key.decrypt(&ciphertext, &context).map_err(|_| ApiError::NotAuthentic)?;
            Ok(secret_json(&[("plaintext", pt.expose())]))
        }
        KeyOp::Bulk(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (ct, cx) in items {
                let pt = key.decrypt(&ct, &cx).map_err(|_| ApiError::NotAuthentic)?;
                out.push(b64(pt.expose()));
            }
            let mut body = b"[".to_vec();
            for (i, p) in out.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(br#"{"plaintext":""#);
                body.extend_from_slice(p.as_bytes());
                body.extend_from_slice(br#""}"#);
            }
            body.push(b']');
            zeroize::Zeroize::zeroize(&mut out);
            Ok(Response::with(StatusCode::OK, JSON, body))
        }
        KeyOp::Hmac { message } => {
            let mac = key.hmac(&message).ok_or(ApiError::NoHmacKey)?;
            Ok(secret_json(&[("hmac", &mac)]))
        }
    }
}

/// A JSON object of base64 fields, built without intermediate `Value`s that
/// would leave copies of secrets on the heap.
fn secret_json(fields: &[(&str, &[u8])]) -> Response {
    let mut body =
        Vec::with_capacity(fields.iter().map(|(_, v)| v.len() * 4 / 3 + 24).sum::<usize>() + 2);
    body.push(b'{');
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.push(b'"');
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(b"\":\"");
        let start = body.len();
        body.resize(start + base64::encoded_len(value.len(), true).unwrap_or(0), 0);
        let n = base64::Engine::encode_slice(
            &base64::engine::general_purpose::STANDARD,
            value,
            &mut body[start..],
        )
        .unwrap_or(0);
        body.truncate(start + n);
        body.push(b'"');
    }
    body.push(b'}');
    Response::with(StatusCode::OK, JSON, body)
}
