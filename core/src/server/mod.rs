//! The server state machine: requests and store results in; responses, store
//! commands and events out. See the crate docs for the driving loop.
//!
//! This module holds the shared state and the driving contract
//! (`handle_*`/`poll_*`); the behaviour is split by concern:
//! - [`dispatch`]: routing, authentication, authorization, the handler table;
//! - one module per API family with its handlers: [`keys`] (and [`keyops`]
//!   for single-flight fetches and the operations on a key), [`policies`],
//!   [`identities`], [`logs`], [`status`], [`enclaves`];
//! - [`args`]: reading names and body fields.

mod args;
mod budgets;
mod call;
mod dispatch;
mod enclaves;
mod identities;
mod keyops;
mod keys;
mod logs;
mod policies;
mod rotation;
mod schedule;
mod status;

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use http::Method;
use rand_core::CryptoRngCore;

use crate::api::route::{self, RouteMatch};
use crate::api::{ApiError, Request, Response, ROUTES};
use crate::cache::{KeyCache, Tick};
use crate::config::{AdminSetting, Compat, Config};
use crate::crypto::{keyfile, SecretKey};
use crate::event::{AuditEvent, ErrorEvent, Event};
use crate::identity::{Caller, Identity};
use crate::keystore::{Command, CommandId, StoreError, StoreReply};
use crate::metrics::{Metrics, SystemInfo};
use crate::name::{KeyName, ListPattern};
use crate::policy::{Binding, Pattern, Policy, PolicySet};
use crate::time::Now;
use keyops::{Fetch, KeyOp};

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

/// What to do with the result of a store command other than a key fetch.
enum Pending {
    Create(RequestId),
    Delete(RequestId, KeyName),
    List(RequestId, ListPattern),
    Status(RequestId),
    Ready(RequestId),
    Probe,
    Declared(KeyName),
    Ring(Box<rotation::RingWrite>),
    /// The rotation schedule's listing.
    Sweep,
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
    fetches: BTreeMap<CommandId, (KeyName, Fetch)>,
    fetching: BTreeMap<KeyName, Vec<(RequestId, KeyOp)>>,
    /// When the fetch in flight for a key was sent (see `keyops`).
    fetch_started: BTreeMap<KeyName, Instant>,
    /// Fetches of keys that have a stale copy: when their waiters get the
    /// stale copy (`None`: that time has passed, later requests get it at
    /// once). See [`keyops`].
    revalidating: BTreeMap<KeyName, Option<Instant>>,
    /// Per key and version, the ciphertexts this node opened (describe
    /// shows them); dropped with the key.
    unseals: BTreeMap<KeyName, keyops::Unseals>,
    pending: BTreeMap<CommandId, Pending>,
    commands: VecDeque<(CommandId, Command)>,
    responses: VecDeque<(RequestId, Response)>,
    events: VecDeque<Event>,
    metrics: Metrics,
    startup_failures: Vec<String>,
    declared_open: usize,
    schedule: schedule::Schedule,
    budgets: budgets::Budgets,
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
            fetch_started: BTreeMap::new(),
            revalidating: BTreeMap::new(),
            unseals: BTreeMap::new(),
            pending: BTreeMap::new(),
            commands: VecDeque::new(),
            responses: VecDeque::new(),
            events: VecDeque::new(),
            metrics: Metrics::default(),
            startup_failures: Vec::new(),
            declared_open: 0,
            schedule: schedule::Schedule::default(),
            budgets: budgets::Budgets::default(),
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

    /// Replaces policies, admin, route overrides, compat switches and the
    /// rotation schedule (SIGHUP).
    /// The key cache is kept: keys do not change with the config.
    pub fn reload(&mut self, config: Config, now: Now) {
        self.apply(config, now);
    }

    fn apply(&mut self, config: Config, now: Now) {
        self.set_rotation(&config.rotation, now);
        self.budgets.configure(&config);
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

    /// Whether the audit log cannot be written (its reader stopped): then a
    /// request is not served unless it is one that reports on the server
    /// (`/v1/status`, `/v1/metrics`, `/version`), which answer and say so,
    /// and `/v1/ready` answers 503 so load balancers go elsewhere. The
    /// adapter that owns the log decides and sets it before each request.
    pub fn set_audit_stalled(&mut self, stalled: bool) {
        self.metrics.audit_stalled = stalled;
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
        if let Some(fetch) = self.fetches.remove(&id) {
            self.finish_fetch(fetch, result, now, rng);
            return;
        }
        let Some(pending) = self.pending.remove(&id) else {
            return; // a stale or duplicate result: nothing waits for it
        };
        match pending {
            Pending::Declared(name) => self.declared_result(name, result),
            Pending::Probe => self.probe_result(result, now),
            Pending::Create(req) => self.created(req, result, now),
            Pending::Delete(req, name) => self.deleted(req, name, result, now),
            Pending::List(req, pattern) => self.listed(req, pattern, result, now),
            Pending::Status(req) => self.status_result(req, result, now),
            Pending::Ready(req) => self.ready_result(req, result, now),
            Pending::Ring(w) => self.ring_write_result(w, result, now, rng),
            Pending::Sweep => self.sweep_listed(result, now),
        }
    }

    /// A declared key (`keys:` in the config) was created, or already was.
    fn declared_result(&mut self, name: KeyName, result: Result<StoreReply, StoreError>) {
        self.declared_open = self.declared_open.saturating_sub(1);
        match result {
            Ok(_) | Err(StoreError::Exists) => {}
            Err(e) => self.startup_failures.push(format!("failed to create key '{name}': {e}")),
        }
    }

    /// Runs expiries and request timeouts that are due. Spurious calls are safe.
    pub fn handle_timeout(&mut self, now: Now, rng: &mut dyn CryptoRngCore) {
        if self.cache.handle_timeout(now.instant) == Tick::Probe {
            let id = self.command(Command::Status, now);
            self.pending.insert(id, Pending::Probe);
        }
        self.serve_stale_due(now, rng);
        self.schedule_timeout(now);
        self.budgets.prune(now.instant);
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
        let stale = self.revalidating.values().flatten().min().map(|d| (*d, "stale"));
        let rotation = self.schedule.poll_timeout().map(|d| (d, "rotation"));
        let budgets = self.budgets.poll_timeout().map(|d| (d, "limits"));
        [requests, cache, stale, rotation, budgets].into_iter().flatten().min_by_key(|(d, _)| *d)
    }

    /// Requests waiting for the key store.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// The request and cache counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Parks a request on a store command; `p` says what its result means.
    fn issue(&mut self, parked: Parked<'_>, cmd: Command, p: Pending) {
        let Parked { id, ctx, deadline } = parked;
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
        self.release(id);
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
                key_version: resp.key_version,
            }));
        }
        if ctx.head {
            resp.body.clear();
        }
        self.responses.push_back((id, resp));
    }
}
