//! HashiCorp Vault (or OpenBao) K/V as the key store (keystore.md §4).
//!
//! Values are stored byte-compatibly with KES, so a Vault that KES filled
//! works with us and the reverse. KV v2 creates are atomic (`cas: 0`); KV v1
//! has none, so a create reads first and then writes, as KES does: two
//! servers creating the same name at the same instant can both succeed and
//! the later write wins (use KV v2 when that matters).
//!
//! The token is renewed at 80 % of its TTL, and replaced by a fresh login
//! when it cannot be renewed or Vault answers 403. Vault's seal status is
//! polled every `status.ping`; while sealed, key calls fail at once.
//! Transient failures (5xx, standby redirects, lost connections) of
//! idempotent calls are retried with backoff for up to [`RETRY_BUDGET`]
//! (a leader election takes seconds). `endpoint` may list several nodes,
//! comma-separated (an extension of KES's single endpoint): a node that
//! cannot be reached, or is sealed, hands over to the next.

pub mod proto;
mod token;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use async_io::Timer;
use kes_core::config::{KvVersion, VaultAuth, VaultConfig};
use kes_core::crypto::SecretBytes;
use kes_core::{Command, StoreError, StoreReply};
use zeroize::Zeroizing;

use super::contract::{Remote, RemoteStore};
use crate::https::{HttpError, HttpRequest, HttpResponse, HttpsClient};
use proto::Paths;
use token::{Action, TokenLife};

/// Deadline of one HTTP request to Vault.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a call keeps retrying transient failures; inside the routes'
/// 15 s deadline, longer than a Vault leader election (~5 s measured).
const RETRY_BUDGET: Duration = Duration::from_secs(10);
/// First pause between attempts; doubles up to [`MAX_BACKOFF`].
const BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Sealed answers from a single configured address before the store is
/// taken as sealed (it may be one node of several behind a balancer).
const SEALED_LOOKS: u32 = 2;
/// How often the background task looks at the token and the seal status.
const TICK: Duration = Duration::from_secs(1);

/// A Vault key store; cheap to clone.
#[derive(Clone)]
pub struct VaultStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// One client per configured node.
    nodes: Vec<Arc<HttpsClient>>,
    /// The node in use (modulo the count); moves on when one fails.
    current: std::sync::atomic::AtomicUsize,
    /// Clients for the nodes standbys redirect to, by `scheme://authority`.
    redirects: Mutex<std::collections::HashMap<String, Arc<HttpsClient>>>,
    config: VaultConfig,
    paths: Paths,
    token: RwLock<Zeroizing<String>>,
    life: Mutex<TokenLife>,
    sealed: AtomicBool,
    /// The last health poll reached no node: calls try once instead of
    /// retrying for seconds, so a long outage fails fast.
    down: AtomicBool,
    /// One login at a time; others wait for it and use its token.
    login: smol::lock::Mutex<()>,
}

impl VaultStore {
    /// Connects and logs in; a failed login stops start-up with the reason.
    /// Starts the task that renews the token and polls the seal status.
    pub fn connect(config: &VaultConfig) -> Result<Self, String> {
        let ca = config.tls_ca.as_deref().map(std::path::Path::new);
        let cert = config
            .tls_cert
            .as_ref()
            .map(|(c, k)| (std::path::Path::new(c.as_str()), std::path::Path::new(k.as_str())));
        let nodes = config
            .endpoint
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| HttpsClient::new(e, ca, cert).map_err(|e| format!("keystore.vault: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if nodes.is_empty() {
            return Err("keystore.vault: no endpoint".into());
        }
        let inner = Arc::new(Inner {
            nodes,
            current: std::sync::atomic::AtomicUsize::new(0),
            redirects: Mutex::new(std::collections::HashMap::new()),
            paths: Paths::new(config),
            config: config.clone(),
            token: RwLock::new(Zeroizing::new(String::new())),
            life: Mutex::new(TokenLife::obtained(Instant::now(), Duration::ZERO, false)),
            sealed: AtomicBool::new(false),
            down: AtomicBool::new(false),
            login: smol::lock::Mutex::new(()),
        });
        smol::block_on(inner.login())
            .map_err(|e| format!("vault: cannot log in to {}: {e}", config.endpoint))?;
        let _ = smol::block_on(inner.ping());
        smol::spawn(background(Arc::downgrade(&inner))).detach();
        Ok(Self { inner })
    }

    /// The store, ready for the server.
    pub fn into_store(self) -> RemoteStore<impl Remote> {
        RemoteStore::new(self.inner)
    }

    /// Whether the endpoint is plain HTTP (worth a start-up warning).
    pub fn is_plaintext(&self) -> bool {
        self.inner.nodes.iter().any(|n| n.is_plaintext())
    }
}

/// Renews or replaces the token when due and polls the seal status, until
/// the store is dropped.
async fn background(store: Weak<Inner>) {
    let mut next_ping = Instant::now();
    loop {
        Timer::after(TICK).await;
        let Some(inner) = store.upgrade() else { return };
        let now = Instant::now();
        let action = inner.life.lock().unwrap_or_else(|p| p.into_inner()).action(now);
        match action {
            Action::Renew => inner.renew().await,
            Action::Login => {
                let _ = inner.login().await;
            }
            Action::Wait(_) => {}
        }
        if now >= next_ping {
            let _ = inner.ping().await;
            next_ping = now + inner.config.ping;
        }
    }
}

/// Why one exchange got no answer: the configured node failed, or the node
/// a standby redirected to did. Only the first says anything about the
/// configured address: behind a load balancer, a standby's redirect names
/// a node by its own address, which may be the leader that just died.
enum Failure {
    Node(HttpError),
    Redirected(HttpError),
}

fn unreachable(e: HttpError) -> StoreError {
    StoreError::Unreachable(format!("vault: {e}"))
}

impl Remote for Inner {
    async fn call(&self, cmd: Command) -> Result<StoreReply, StoreError> {
        self.run(cmd).await
    }
}

impl Inner {
    async fn run(&self, cmd: Command) -> Result<StoreReply, StoreError> {
        // Key calls fail at once while sealed; the status call looks again.
        if !matches!(cmd, Command::Status) && self.sealed.load(Ordering::Relaxed) {
            return Err(StoreError::Unreachable("vault: key store is sealed".into()));
        }
        match cmd {
            Command::Create { name, value } => self.create(name.as_str(), &value).await,
            Command::Get { name } => self.get(name.as_str()).await,
            Command::Delete { name } => {
                let path = self.paths.delete(name.as_str());
                let r = self.send(|| HttpRequest::new("DELETE", path.clone()), true).await?;
                proto::delete_result(&r)
            }
            Command::List => {
                let r = self.send(|| HttpRequest::new("GET", self.paths.list()), true).await?;
                proto::list_result(&r)
            }
            Command::Status => self.status().await,
        }
    }

    /// Create-if-absent. After a lost connection the request may have
    /// reached Vault: the retry then meets "exists", and reading the value
    /// back tells whether it is ours (then the create did succeed).
    async fn create(&self, name: &str, value: &SecretBytes) -> Result<StoreReply, StoreError> {
        let kv = self.paths.kv();
        if kv == KvVersion::V1 {
            match self.get(name).await {
                Ok(_) => return Err(StoreError::Exists),
                Err(StoreError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        let wrapped;
        let stored = match &self.config.transit {
            Some((engine, key)) => {
                let r = self.send(|| proto::wrap_request(engine, key, value), false).await?;
                wrapped = proto::wrap_result(&r)?;
                &wrapped
            }
            None => value,
        };
        let body = Zeroizing::new(proto::create_body(kv, name, stored)?);
        let put = || HttpRequest::new("PUT", self.paths.data(name)).json(body.to_vec());
        if kv == KvVersion::V2 {
            // cas: 0 makes a repeated write harmless, so v2 creates are
            // retried like reads; "exists" after that may be our own
            // earlier attempt, which reading back tells (key values are
            // random, so equal means ours).
            let r = self.send(put, true).await?;
            return match proto::create_result(&r) {
                Err(StoreError::Exists) => match self.get_stored(name).await {
                    Ok(StoreReply::Value(v)) if v == *stored => Ok(StoreReply::Created),
                    _ => Err(StoreError::Exists),
                },
                other => other,
            };
        }
        match self.send(put, false).await {
            Ok(r) => proto::create_result(&r),
            Err(first) => match self.get_stored(name).await {
                Ok(StoreReply::Value(v)) if v == *stored => Ok(StoreReply::Created),
                Ok(_) => Err(StoreError::Exists),
                Err(StoreError::NotFound) => {
                    let r = self.send(put, false).await.map_err(|_| first)?;
                    proto::create_result(&r)
                }
                Err(_) => Err(first),
            },
        }
    }

    /// A key's value as stored (transit-wrapped, if it was).
    async fn get_stored(&self, name: &str) -> Result<StoreReply, StoreError> {
        let r = self.send(|| HttpRequest::new("GET", self.paths.read(name)), true).await?;
        proto::get_result(self.paths.kv(), name, &r)
    }

    /// A key's value, unwrapped by transit when it was wrapped. A wrapped
    /// value without transit configured cannot be read.
    async fn get(&self, name: &str) -> Result<StoreReply, StoreError> {
        let StoreReply::Value(v) = self.get_stored(name).await? else {
            return Err(StoreError::Failed("vault: unexpected answer".into()));
        };
        if !proto::is_wrapped(v.expose()) {
            return Ok(StoreReply::Value(v));
        }
        let Some((engine, key)) = &self.config.transit else {
            return Err(StoreError::Failed(format!(
                "vault: key '{name}' is wrapped by transit, but keystore.vault.transit is not configured"
            )));
        };
        let r = self.send(|| proto::unwrap_request(engine, key, v.expose()), true).await?;
        proto::unwrap_result(&r).map(StoreReply::Value)
    }

    /// A data call with the token and namespace. A 403 (an expired token)
    /// gets one fresh login and one more try; transient failures of
    /// idempotent calls, and failures to connect at all, are retried with
    /// backoff.
    async fn send(
        &self,
        make: impl Fn() -> HttpRequest + Sync,
        idempotent: bool,
    ) -> Result<HttpResponse, StoreError> {
        let mut relogged = false;
        let budget = if self.down.load(Ordering::Relaxed) { Duration::ZERO } else { RETRY_BUDGET };
        let until = Instant::now() + budget;
        let mut pause = BACKOFF;
        // Every node refusing connections is an outage, not an election:
        // give up at once instead of retrying for the whole budget. Each
        // node is tried once even when the last poll found none.
        let mut refused = vec![false; self.nodes.len()];
        let mut sealed_answers = 0;
        loop {
            let last = Instant::now() + pause >= until;
            let i = self.current.load(Ordering::Relaxed);
            let answer = self.exchange(i, &|| self.with_token(make())).await;
            match answer {
                Ok(r) if r.status == 403 && !relogged => {
                    relogged = true;
                    self.life.lock().unwrap_or_else(|p| p.into_inner()).rejected(Instant::now());
                    self.login().await?;
                    continue;
                }
                Ok(r) if r.status == 503 && proto::errors(&r.body).contains("sealed") => {
                    // Another node may serve. One configured address may
                    // still be several nodes behind a load balancer: its
                    // connection was dropped (a server error), so one more
                    // try may reach another; a second sealed answer fails
                    // fast.
                    sealed_answers += 1;
                    let single = self.nodes.len() == 1;
                    if last || (single && sealed_answers >= SEALED_LOOKS) {
                        self.sealed.store(single, Ordering::Relaxed);
                        return Ok(r);
                    }
                    self.next_node();
                    continue;
                }
                Ok(r) if idempotent && !last && proto::transient(&r) => {}
                Ok(r) => return Ok(r),
                // Nothing was sent: safe to try again, whatever the call.
                Err(Failure::Node(e @ HttpError::Connect(_))) => {
                    refused[i % self.nodes.len()] = true;
                    if refused.iter().all(|r| *r) {
                        self.down.store(true, Ordering::Relaxed);
                        return Err(unreachable(e));
                    }
                    continue;
                }
                // The node a standby named is gone (a dead leader, before
                // the standbys learnt of the new one): an election, not an
                // outage. Nothing was sent, so any call may go again
                // through the configured address, within the budget.
                Err(Failure::Redirected(e @ HttpError::Connect(_))) if last => {
                    return Err(unreachable(e))
                }
                Err(Failure::Redirected(HttpError::Connect(_))) => {}
                Err(_) if idempotent && !last => {}
                Err(Failure::Node(e) | Failure::Redirected(e)) => return Err(unreachable(e)),
            }
            Timer::after(pause).await;
            pause = (pause * 2).min(MAX_BACKOFF);
        }
    }

    /// The node in use.
    fn node(&self) -> Arc<HttpsClient> {
        let i = self.current.load(Ordering::Relaxed);
        self.nodes[i % self.nodes.len()].clone()
    }

    /// Moves on to the next node (no effect with one).
    fn next_node(&self) {
        self.advance_from(self.current.load(Ordering::Relaxed));
    }

    /// Moves past node `i` if it is still the one in use, so concurrent
    /// failures of one node move on once, not once each.
    fn advance_from(&self, i: usize) {
        if self.nodes.len() > 1 {
            let _ = self.current.compare_exchange(i, i + 1, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// One request; a standby's 307 is followed once to the node it names,
    /// as Vault's own client does.
    async fn exchange(
        &self,
        i: usize,
        make: &(dyn Fn() -> HttpRequest + Sync),
    ) -> Result<HttpResponse, Failure> {
        let node = self.nodes[i % self.nodes.len()].clone();
        let r = match node.send(&make(), REQUEST_TIMEOUT).await {
            Ok(r) => {
                self.down.store(false, Ordering::Relaxed);
                r
            }
            Err(e) => {
                // This node failed: move on, unless another call already did.
                self.advance_from(i);
                return Err(Failure::Node(e));
            }
        };
        if r.status != 307 {
            return Ok(r);
        }
        let Some((base, path)) = r.location.as_deref().and_then(proto::split_location) else {
            return Ok(r);
        };
        let Ok(client) = self.client_for(base) else { return Ok(r) };
        let mut again = make();
        again.path = path.to_owned();
        client.send(&again, REQUEST_TIMEOUT).await.map_err(Failure::Redirected)
    }

    /// A client for another node of the cluster, with the same TLS setup.
    fn client_for(&self, base: &str) -> Result<Arc<HttpsClient>, String> {
        let mut map = self.redirects.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(base) {
            return Ok(c.clone());
        }
        let ca = self.config.tls_ca.as_deref().map(std::path::Path::new);
        let cert = self
            .config
            .tls_cert
            .as_ref()
            .map(|(c, k)| (std::path::Path::new(c.as_str()), std::path::Path::new(k.as_str())));
        let client = HttpsClient::new(base, ca, cert)?;
        map.insert(base.to_owned(), client.clone());
        Ok(client)
    }

    fn with_token(&self, mut req: HttpRequest) -> HttpRequest {
        let token = self.token.read().unwrap_or_else(|p| p.into_inner());
        req = req.header("X-Vault-Token", &token);
        if !self.config.namespace.is_empty() {
            req = req.header("X-Vault-Namespace", &self.config.namespace);
        }
        req
    }

    /// Logs in (once, however many callers ask at the same time).
    async fn login(&self) -> Result<(), StoreError> {
        let before = self.token.read().unwrap_or_else(|p| p.into_inner()).clone();
        let _guard = self.login.lock().await;
        {
            let now = self.token.read().unwrap_or_else(|p| p.into_inner());
            let life = *self.life.lock().unwrap_or_else(|p| p.into_inner());
            if **now != *before && !now.is_empty() && !life.expired(Instant::now()) {
                return Ok(()); // someone else logged in meanwhile
            }
        }
        let jwt = self.kubernetes_jwt()?;
        let jwt = jwt.as_deref().map(|s| s.as_str());
        let login = || proto::login_request(&self.config.auth, &self.config.namespace, jwt);
        let result = match self.exchange(self.current.load(Ordering::Relaxed), &login).await {
            Ok(r) => proto::token_result(&r),
            Err(Failure::Node(e) | Failure::Redirected(e)) => Err(unreachable(e)),
        };
        let now = Instant::now();
        match result {
            Ok(t) => {
                *self.token.write().unwrap_or_else(|p| p.into_inner()) = t.token;
                *self.life.lock().unwrap_or_else(|p| p.into_inner()) =
                    TokenLife::obtained(now, t.ttl, t.renewable);
                Ok(())
            }
            Err(e) => {
                self.life.lock().unwrap_or_else(|p| p.into_inner()).login_failed(now);
                Err(e)
            }
        }
    }

    /// A Kubernetes JWT configured as a path is read at every login.
    fn kubernetes_jwt(&self) -> Result<Option<Zeroizing<String>>, StoreError> {
        match &self.config.auth {
            VaultAuth::Kubernetes { jwt, .. } if jwt.expose().contains('/') => {
                let text = std::fs::read_to_string(jwt.expose()).map_err(|e| {
                    StoreError::Failed(format!(
                        "vault: Kubernetes JWT file '{}': {e}",
                        jwt.expose()
                    ))
                })?;
                Ok(Some(Zeroizing::new(text.trim().to_owned())))
            }
            _ => Ok(None),
        }
    }

    /// renew-self; a failure or a non-renewable answer means a fresh login.
    async fn renew(&self) {
        let req = self.with_token(
            HttpRequest::new("PUT", "/v1/auth/token/renew-self".into())
                .json(br#"{"increment":0}"#.to_vec()),
        );
        let now = Instant::now();
        match self.node().send(&req, REQUEST_TIMEOUT).await.map(|r| proto::token_result(&r)) {
            Ok(Ok(t)) => {
                *self.token.write().unwrap_or_else(|p| p.into_inner()) = t.token;
                self.life.lock().unwrap_or_else(|p| p.into_inner()).renewed(
                    now,
                    t.ttl,
                    t.renewable,
                );
            }
            _ => {
                self.life.lock().unwrap_or_else(|p| p.into_inner()).rejected(now);
                let _ = self.login().await;
            }
        }
    }

    /// Polls health (never with the namespace header: Vault refuses it
    /// there) and records whether Vault is sealed.
    async fn ping(&self) -> Result<proto::Health, StoreError> {
        // Look at each node at most once, starting with the one in use,
        // until one serves; sealed means none does.
        // A single address may be a balancer in front of several nodes:
        // a node that does not serve is looked past on fresh connections.
        let mut last = Err(StoreError::Unreachable("vault: no endpoint".into()));
        let looks = if self.nodes.len() == 1 { SEALED_LOOKS as usize } else { self.nodes.len() };
        for look in 0..looks {
            let health = HttpRequest::new("GET", proto::HEALTH.into());
            let node = self.node();
            let sent = match look {
                0 => node.send(&health, REQUEST_TIMEOUT).await,
                _ => node.send_fresh(&health, REQUEST_TIMEOUT).await,
            };
            let answer = sent.map_err(unreachable).and_then(|r| proto::health_result(&r));
            match answer {
                Ok(h) if h.serving() => {
                    self.sealed.store(false, Ordering::Relaxed);
                    self.down.store(false, Ordering::Relaxed);
                    return Ok(h);
                }
                other => last = other,
            }
            self.next_node();
        }
        match &last {
            Ok(h) => self.sealed.store(!h.serving(), Ordering::Relaxed),
            Err(_) => self.down.store(true, Ordering::Relaxed),
        }
        last
    }

    async fn status(&self) -> Result<StoreReply, StoreError> {
        let start = Instant::now();
        let health = self.ping().await?;
        if !health.initialized {
            return Err(StoreError::Unreachable("vault: not initialized".into()));
        }
        if health.sealed {
            return Err(StoreError::Unreachable("vault: key store is sealed".into()));
        }
        Ok(StoreReply::Status { latency: start.elapsed() })
    }
}
