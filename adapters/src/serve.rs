//! Listening, TLS handshakes, the per-connection HTTP loop, reload and
//! graceful shutdown.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use futures_rustls::server::TlsStream;
use futures_rustls::TlsAcceptor;
use kes_core::{Caller, Config, Request, RouteTable, Server};
use rand_core::OsRng;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::Executor;

use crate::chunked::{ChunkError, ChunkedDecoder};
use crate::driver::{self, DriverHandle, Input};
use crate::edge::{EdgePoller, EdgeStream};
use crate::http::{self, BodyFraming, HeadError};
use crate::log::LogHub;
use crate::proxy::ProxyConfig;
use crate::store::KeyStore;
use crate::sysinfo::LiveCounters;
use crate::{clock, tls};

/// The longest a connection waits after a 429 before its next request.
const THROTTLE_PAUSE: Duration = Duration::from_secs(1);

/// A new connection must complete its TLS handshake and first request head
/// within this; any later head must complete within this of its first byte.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A keep-alive connection with no request for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Body read limit for routes without a timeout of their own.
const BODY_TIMEOUT: Duration = Duration::from_secs(15);
/// Bodies on routes that take none are drained up to this size, else refused.
const IGNORED_BODY: usize = 4096;

/// Everything needed to run a server.
pub struct ServerOptions {
    /// The validated config.
    pub config: Config,
    /// Where to listen (port 0 picks a free port).
    pub addr: SocketAddr,
    /// TLS configuration.
    pub tls: Arc<rustls::ServerConfig>,
    /// The key store.
    pub store: Arc<dyn KeyStore>,
    /// Executor threads.
    pub threads: usize,
}

/// A running server; dropping it does not stop it, [`RunningServer::stop`]
/// and [`RunningServer::shutdown`] do.
pub struct RunningServer {
    addr: SocketAddr,
    stop: smol::channel::Sender<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
    shared: Arc<Shared>,
}

/// State every connection task shares.
struct Shared {
    acceptor: RwLock<TlsAcceptor>,
    proxy: RwLock<Option<Arc<ProxyConfig>>>,
    driver: DriverHandle,
    routes: RwLock<RouteTable>,
    hub: Arc<LogHub>,
    live: Arc<LiveCounters>,
    /// Full TLS handshakes per client address.
    handshakes: crate::handshakes::Handshakes,
    /// Where client connections wait for bytes (see [`crate::edge`]).
    edge: Arc<EdgePoller>,
    /// Set on shutdown: stop accepting, close connections between requests.
    draining: AtomicBool,
    /// Closed on shutdown, waking idle connections and the accept loop.
    drain_signal: smol::channel::Receiver<()>,
    drain_trigger: smol::channel::Sender<()>,
}

impl RunningServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Applies a new config (policies, admin, route overrides, proxies) and,
    /// if given, a new TLS configuration for connections accepted from now
    /// on. Open connections are not dropped.
    pub fn reload(
        &self,
        config: Config,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<(), String> {
        let proxy = proxy_config(&config)?;
        if let Some(tls) = tls {
            *write(&self.shared.acceptor) = TlsAcceptor::from(tls);
        }
        *write(&self.shared.proxy) = proxy;
        *write(&self.shared.routes) = RouteTable::from_config(&config);
        self.shared.handshakes.set_rate(config.tls.handshake_rate);
        self.shared.driver.send(Input::Reload(Box::new(config)));
        Ok(())
    }

    /// The log hub (to subscribe in-process).
    pub fn logs(&self) -> &Arc<LogHub> {
        &self.shared.hub
    }

    /// Open client connections right now.
    pub fn open_connections(&self) -> u64 {
        self.shared.live.connections.load(Ordering::Relaxed)
    }

    /// Graceful stop: refuse new connections, let every connection finish the
    /// request it is on (idle keep-alive connections close at once), wait up
    /// to `grace` for them, then stop. True if every connection finished.
    pub fn shutdown(self, grace: Duration) -> bool {
        self.shared.draining.store(true, Ordering::SeqCst);
        self.shared.drain_trigger.close();
        self.shared.edge.drain();
        let until = Instant::now() + grace;
        while self.open_connections() > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        let clean = self.open_connections() == 0;
        // Audit lines of answered requests are written before the exit
        // (if the reader takes them in time).
        self.shared
            .hub
            .flush(until.saturating_duration_since(Instant::now()).max(Duration::from_secs(1)));
        self.stop();
        clean
    }

    /// Stops at once: drops all connections and waits for the threads.
    pub fn stop(self) {
        self.shared.driver.send(Input::Stop);
        self.shared.drain_trigger.close();
        self.shared.edge.drain();
        self.stop.close();
        for t in self.threads {
            let _ = t.join();
        }
    }

    /// Blocks until the server's threads end.
    pub fn wait(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

/// The TLS-proxy settings of a config, if it names any proxy.
fn proxy_config(config: &Config) -> Result<Option<Arc<ProxyConfig>>, String> {
    if config.tls.proxy_identities.is_empty() {
        return Ok(None);
    }
    let verifier = match config.tls.auth {
        Some(true) => {
            Some(tls::chain_verifier(config.tls.ca.as_deref().map(std::path::Path::new))?)
        }
        _ => None,
    };
    Ok(Some(Arc::new(ProxyConfig {
        identities: config.tls.proxy_identities.clone(),
        header: config.tls.proxy_header.clone(),
        verifier,
    })))
}

/// Creates declared keys, binds, and starts serving on background threads.
pub fn start(opts: ServerOptions) -> Result<RunningServer, String> {
    let hub = Arc::new(LogHub::new(opts.config.log.audit, opts.config.log.error));
    let routes = RouteTable::from_config(&opts.config);
    let proxy = proxy_config(&opts.config)?;
    let handshakes = crate::handshakes::Handshakes::new(opts.config.tls.handshake_rate);
    let mut server = Server::new(opts.config, clock::now(), &mut OsRng);
    driver::run_startup(&mut server, opts.store.as_ref(), &hub)?;
    let listener = Async::<TcpListener>::bind(opts.addr)
        .map_err(|e| format!("cannot listen on {}: {e}", opts.addr))?;
    let addr = listener.get_ref().local_addr().map_err(|e| e.to_string())?;
    let ex: Arc<Executor<'static>> = Arc::new(Executor::new());
    let live = Arc::new(LiveCounters::default());
    let (driver, driver_task) = driver::spawn(&ex, server, opts.store, hub.clone(), live.clone());
    driver_task.detach();
    let (drain_trigger, drain_signal) = smol::channel::bounded(1);
    let edge = EdgePoller::new().map_err(|e| format!("cannot create an epoll instance: {e}"))?;
    ex.spawn(edge.clone().sweep()).detach();
    let (pump, pump_hub) = (edge.clone(), hub.clone());
    ex.spawn(async move {
        let e = pump.run().await;
        pump_hub.error(&format!("http: epoll failed, connections get no more events: {e}"));
    })
    .detach();
    let shared = Arc::new(Shared {
        acceptor: RwLock::new(TlsAcceptor::from(opts.tls)),
        proxy: RwLock::new(proxy),
        driver,
        routes: RwLock::new(routes),
        hub,
        live,
        handshakes,
        edge,
        draining: AtomicBool::new(false),
        drain_signal,
        drain_trigger,
    });
    ex.spawn(accept_loop(listener, Arc::downgrade(&ex), shared.clone())).detach();
    let (stop, stop_rx) = smol::channel::bounded::<()>(1);
    let threads = (0..opts.threads.max(1))
        .map(|i| {
            let ex = ex.clone();
            let stop_rx = stop_rx.clone();
            std::thread::Builder::new()
                .name(format!("kes-{i}"))
                .spawn(move || {
                    let _ = smol::block_on(ex.run(stop_rx.recv()));
                })
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RunningServer { addr, stop, threads, shared })
}

/// Holds the executor weakly: tasks must not keep their own executor alive, or
/// stopping the server would leak the listener and every connection.
async fn accept_loop(
    listener: Async<TcpListener>,
    ex: std::sync::Weak<Executor<'static>>,
    shared: Arc<Shared>,
) {
    loop {
        // Accepted as a plain socket: it goes into the edge-triggered set,
        // not async-io's reactor.
        let accepted =
            smol::future::or(async { Some(listener.read_with(|l| l.accept()).await) }, async {
                let _ = shared.drain_signal.recv().await;
                None
            })
            .await;
        let (tcp, peer) = match accepted {
            None => return, // draining: the listener closes with this task
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                shared.hub.error(&format!("http: accept failed: {e}"));
                Timer::after(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !shared.handshakes.admit(peer.ip(), Instant::now()) {
            shared.live.handshakes_refused.fetch_add(1, Ordering::Relaxed);
            continue; // closed before the handshake
        }
        let _ = tcp.set_nodelay(true);
        let tcp = match shared.edge.register(tcp) {
            Ok(t) => t,
            Err(e) => {
                shared.hub.error(&format!("http: cannot watch the connection from {peer}: {e}"));
                continue;
            }
        };
        let Some(ex) = ex.upgrade() else { return };
        let shared = shared.clone();
        shared.live.connections.fetch_add(1, Ordering::Relaxed);
        ex.spawn(async move {
            connection(tcp, peer, &shared).await;
            shared.live.connections.fetch_sub(1, Ordering::Relaxed);
        })
        .detach();
    }
}

async fn deadline<T>(at: Instant, fut: impl Future<Output = T>) -> Option<T> {
    smol::future::or(async { Some(fut.await) }, async {
        Timer::at(at).await;
        None
    })
    .await
}

type Stream = TlsStream<EdgeStream>;

async fn connection(tcp: EdgeStream, peer: SocketAddr, shared: &Shared) {
    let start = Instant::now();
    let acceptor = read(&shared.acceptor).clone();
    // The handshake and the first request head share one deadline.
    tcp.set_deadline(Some(start + HEADER_TIMEOUT));
    let mut stream = match acceptor.accept(tcp).await {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return,
        Err(e) => {
            shared.hub.error(&format!("http: TLS handshake error from {peer}: {e}"));
            return;
        }
    };
    let caller = tls::caller_of(stream.get_ref().1.peer_certificates());
    let mut inbox = Inbox::new();
    let mut served = 0u64;
    loop {
        // When draining, a connection that has served requests closes between
        // them; a fresh one still gets its first request (bounded by the
        // header timeout), so clients that just connected do not fail.
        let idle_ok = served == 0 || !shared.draining.load(Ordering::SeqCst);
        if !idle_ok && inbox.data.is_empty() {
            return;
        }
        let head_deadline =
            if served == 0 { start + HEADER_TIMEOUT } else { Instant::now() + IDLE_TIMEOUT };
        let proxy = read(&shared.proxy).clone().filter(|p| p.is_proxy(&caller));
        let header = proxy.as_ref().map(|p| p.header.as_str());
        let interruptible = served > 0;
        let (head, received) =
            match read_head(&mut stream, &mut inbox, head_deadline, header, interruptible).await {
                Ok(Some(h)) => h,
                Ok(None) => return,
                Err(e) => {
                    let resp = http::framing_error(&e);
                    let _ = write_response(&mut stream, resp, true, &mut inbox.out).await;
                    return;
                }
            };
        served += 1;
        let (caller, ip) = match &proxy {
            Some(p) => p.resolve(&head.forwarded_cert, head.forwarded_for.as_deref(), peer.ip()),
            None => (caller, peer.ip()),
        };
        shared.live.active.fetch_add(1, Ordering::Relaxed);
        let keep = serve_one(&mut stream, &mut inbox, head, received, caller, ip, shared).await;
        shared.live.active.fetch_sub(1, Ordering::Relaxed);
        if !keep || shared.draining.load(Ordering::SeqCst) && inbox.data.is_empty() {
            let _ = stream.close().await;
            return;
        }
    }
}

/// Reads one request head and tells when its first byte arrived (for a
/// pipelined request already buffered: when it was taken up). `Ok(None)`:
/// the client closed, timed out, or the server is draining and no request
/// had started (`interruptible`: a connection that has served one).
///
/// The waits are bounded by the connection's read deadline (see
/// [`crate::edge`]), not a timer per read: this is the wait every
/// keep-alive request starts with.
async fn read_head(
    stream: &mut Stream,
    inbox: &mut Inbox,
    idle_deadline: Instant,
    proxy_header: Option<&str>,
    interruptible: bool,
) -> Result<Option<(http::Head, Instant)>, HeadError> {
    let head = read_head_within(stream, inbox, idle_deadline, proxy_header, interruptible).await;
    let edge = stream.get_ref().0;
    edge.set_idle(false);
    edge.set_deadline(None);
    head
}

async fn read_head_within(
    stream: &mut Stream,
    inbox: &mut Inbox,
    idle_deadline: Instant,
    proxy_header: Option<&str>,
    interruptible: bool,
) -> Result<Option<(http::Head, Instant)>, HeadError> {
    let mut started = (!inbox.data.is_empty()).then(Instant::now);
    let mut until = if started.is_none() { idle_deadline } else { Instant::now() + HEADER_TIMEOUT };
    loop {
        if let Some(at) = started {
            if let Some((head, n)) = http::parse_head(&inbox.data, proxy_header)? {
                inbox.data.drain(..n);
                return Ok(Some((head, at)));
            }
        }
        let was_empty = inbox.data.is_empty();
        let edge = stream.get_ref().0;
        edge.set_idle(interruptible && was_empty);
        edge.set_deadline(Some(until));
        match read_some(stream, inbox).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {
                if was_empty {
                    let at = Instant::now();
                    started = Some(at);
                    until = until.min(at + HEADER_TIMEOUT);
                }
            }
        }
    }
}

/// A connection's buffers, reused for every request on it: unparsed input,
/// the read buffer, the output buffer, and the channel the driver answers on.
/// The byte buffers hold plaintexts and data keys, so they are wiped.
struct Inbox {
    data: zeroize::Zeroizing<Vec<u8>>,
    scratch: zeroize::Zeroizing<Vec<u8>>,
    out: zeroize::Zeroizing<Vec<u8>>,
    reply: (smol::channel::Sender<kes_core::Response>, smol::channel::Receiver<kes_core::Response>),
}

impl Inbox {
    fn new() -> Self {
        Self {
            data: zeroize::Zeroizing::new(Vec::with_capacity(4096)),
            scratch: zeroize::Zeroizing::new(vec![0u8; 16 * 1024]),
            out: zeroize::Zeroizing::new(Vec::with_capacity(1024)),
            reply: smol::channel::bounded(1),
        }
    }
}

/// Reads once from the stream and appends what arrived.
async fn read_some(stream: &mut Stream, inbox: &mut Inbox) -> std::io::Result<usize> {
    let n = stream.read(&mut inbox.scratch).await?;
    inbox.data.extend_from_slice(&inbox.scratch[..n]);
    Ok(n)
}

/// Serves one request; false means close the connection.
async fn serve_one(
    stream: &mut Stream,
    inbox: &mut Inbox,
    head: http::Head,
    received: Instant,
    caller: Caller,
    ip: std::net::IpAddr,
    shared: &Shared,
) -> bool {
    let limits = read(&shared.routes).limits(head.target.split('?').next().unwrap_or(""));
    let max_body = match limits {
        Some(l) if l.max_body > 0 => l.max_body,
        _ => IGNORED_BODY,
    };
    let timeout = limits.map(|l| l.timeout).filter(|t| !t.is_zero()).unwrap_or(BODY_TIMEOUT);
    let mut body = Vec::new();
    let mut skipper = None;
    let too_large =
        match read_body(stream, inbox, head.body, max_body, Instant::now() + timeout, &mut body)
            .await
        {
            BodyRead::Complete => false,
            BodyRead::TooLarge(decoder) => {
                skipper = decoder;
                true
            }
            BodyRead::Closed => return false,
            BodyRead::Malformed(m) => {
                let resp = kes_core::Response::error(::http::StatusCode::BAD_REQUEST, m);
                let _ = write_response(stream, resp, true, &mut inbox.out).await;
                return false;
            }
        };
    if limits.is_some_and(|l| l.max_body == 0) {
        zeroize::Zeroize::zeroize(&mut body);
        body.clear(); // routes without a body ignore it
    }
    let mut req = Request::from_target(head.method, head.target).with_body(body);
    req.body_too_large = too_large;
    req.peer = Some(ip);
    req.received = Some(received);
    let Some(resp) = shared.driver.call_with(&inbox.reply, caller, req).await else {
        return false;
    };
    let close = head.close || too_large;
    // Over its budget: this connection waits out (up to a second of) the
    // Retry-After before its next request is read, so a client that does not
    // wait is slowed to one refusal per connection per second instead of
    // costing a request's work per refusal (what keeps other tenants' latency
    // flat while one floods).
    let pause = (resp.status == ::http::StatusCode::TOO_MANY_REQUESTS).then(|| {
        let secs = resp.header("Retry-After").and_then(|v| v.parse::<u64>().ok()).unwrap_or(1);
        Duration::from_secs(secs).min(THROTTLE_PAUSE)
    });
    if let Some(which) = resp.stream {
        let events = shared.hub.subscribe(which);
        let ok = stream_events(stream, inbox, resp, &events, shared).await;
        drop(events);
        shared.hub.release_closed();
        if ok {
            let _ = stream.write_all(b"0\r\n\r\n").await;
            let _ = stream.flush().await;
        }
        return false;
    }
    let ok = write_response(stream, resp, close, &mut inbox.out).await.is_ok();
    if let (true, Some(p)) = (ok && !close, pause) {
        smol::future::or(Timer::after(p), async {
            let _ = shared.drain_signal.recv().await;
            Instant::now()
        })
        .await;
    }
    if ok && too_large {
        match (head.body, skipper) {
            (BodyFraming::Chunked, Some(decoder)) => drain_chunked(stream, inbox, decoder).await,
            (BodyFraming::Chunked, None) => {}
            (BodyFraming::Length(n), _) => drain_body(stream, inbox, n).await,
        }
    }
    ok && !close
}

/// What woke a log stream.
enum StreamWake {
    Line(std::sync::Arc<str>),
    Stop,
    Peer(std::io::Result<usize>),
}

/// Streams log lines until the server drains or the subscriber goes away.
/// The read side is watched all along: a subscriber that closes its socket
/// is noticed at once, even on a quiet server with nothing to write (else
/// its connection, about 70 KiB and an fd, would stay until the next event).
/// False: the peer is gone, do not write the final chunk.
async fn stream_events(
    stream: &mut Stream,
    inbox: &mut Inbox,
    resp: kes_core::Response,
    events: &smol::channel::Receiver<std::sync::Arc<str>>,
    shared: &Shared,
) -> bool {
    if write_response(stream, resp, false, &mut inbox.out).await.is_err() {
        return false;
    }
    loop {
        let wake = smol::future::or(
            async { events.recv().await.map_or(StreamWake::Stop, StreamWake::Line) },
            smol::future::or(
                async {
                    let _ = shared.drain_signal.recv().await;
                    StreamWake::Stop
                },
                // Cancel-safe: a read that has not completed has taken no bytes.
                async { StreamWake::Peer(read_some(stream, inbox).await) },
            ),
        )
        .await;
        match wake {
            StreamWake::Line(line) => {
                let chunk = format!("{:x}\r\n{line}\n\r\n", line.len() + 1);
                if stream.write_all(chunk.as_bytes()).await.is_err()
                    || stream.flush().await.is_err()
                {
                    return false;
                }
            }
            StreamWake::Stop => return true,
            StreamWake::Peer(Ok(0) | Err(_)) => return false,
            // A stream has no next request: whatever the client sends is dropped.
            StreamWake::Peer(Ok(_)) => {
                let n = inbox.data.len();
                consume(inbox, n);
            }
        }
    }
}

/// How reading a request body ended.
enum BodyRead {
    /// The whole body is in the buffer handed in.
    Complete,
    /// Larger than the route allows (413, then close). A chunked body
    /// comes with its decoder, to skip the rest of it.
    TooLarge(Option<ChunkedDecoder>),
    /// Broken chunked framing (400, then close).
    Malformed(&'static str),
    /// The client went away or was too slow.
    Closed,
}

/// Reads a request body, framed either way, into `body`; consumed input is
/// wiped from the connection buffer. The limit applies to the decoded size.
async fn read_body(
    stream: &mut Stream,
    inbox: &mut Inbox,
    framing: BodyFraming,
    max_body: usize,
    until: Instant,
    body: &mut Vec<u8>,
) -> BodyRead {
    match framing {
        BodyFraming::Length(0) => BodyRead::Complete,
        BodyFraming::Length(n) if n > max_body => BodyRead::TooLarge(None),
        BodyFraming::Length(n) => {
            while inbox.data.len() < n {
                match deadline(until, read_some(stream, inbox)).await {
                    Some(Ok(k)) if k > 0 => {}
                    _ => return BodyRead::Closed,
                }
            }
            body.extend_from_slice(&inbox.data[..n]);
            consume(inbox, n);
            BodyRead::Complete
        }
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            loop {
                match decoder.decode(&inbox.data, body, max_body) {
                    Ok(used) => consume(inbox, used),
                    Err(ChunkError::TooLarge) => return BodyRead::TooLarge(None),
                    Err(ChunkError::Malformed(m)) => return BodyRead::Malformed(m),
                }
                if decoder.over_limit() {
                    return BodyRead::TooLarge(Some(decoder));
                }
                if decoder.is_done() {
                    return BodyRead::Complete;
                }
                match deadline(until, read_some(stream, inbox)).await {
                    Some(Ok(k)) if k > 0 => {}
                    _ => return BodyRead::Closed,
                }
            }
        }
    }
}

/// Drops the first `n` buffered bytes, wiping them before the rest shifts down.
fn consume(inbox: &mut Inbox, n: usize) {
    zeroize::Zeroize::zeroize(&mut inbox.data[..n]);
    inbox.data.drain(..n);
}

/// Reads and discards a refused body (bounded in size and time) before the
/// connection closes, so a client still writing it gets to read the 413
/// instead of a broken pipe.
async fn drain_body(stream: &mut Stream, inbox: &mut Inbox, declared: usize) {
    const MAX_DRAIN: usize = 8 << 20;
    let mut left = declared.min(MAX_DRAIN).saturating_sub(inbox.data.len());
    inbox.data.clear();
    let until = Instant::now() + Duration::from_secs(2);
    while left > 0 {
        match deadline(until, read_some(stream, inbox)).await {
            Some(Ok(n)) if n > 0 => {
                left = left.saturating_sub(n);
                inbox.data.clear();
            }
            _ => return,
        }
    }
}

/// Like [`drain_body`] for a chunked body: skips chunks up to the end of
/// the body (then the connection closes at once), bounded in size and time.
async fn drain_chunked(stream: &mut Stream, inbox: &mut Inbox, mut decoder: ChunkedDecoder) {
    const MAX_DRAIN: usize = 8 << 20;
    let until = Instant::now() + Duration::from_secs(2);
    let mut drained = 0;
    loop {
        match decoder.skip(&inbox.data) {
            Ok(used) => {
                drained += used;
                consume(inbox, used);
            }
            Err(_) => return,
        }
        if decoder.is_done() || drained > MAX_DRAIN {
            return;
        }
        match deadline(until, read_some(stream, inbox)).await {
            Some(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}

async fn write_response(
    stream: &mut Stream,
    mut resp: kes_core::Response,
    close: bool,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    out.clear();
    http::write_head(out, &resp, close);
    out.extend_from_slice(&resp.body);
    let r = async {
        stream.write_all(out).await?;
        stream.flush().await
    }
    .await;
    // Bodies may carry data keys or plaintexts: wipe both copies.
    zeroize::Zeroize::zeroize(out.as_mut_slice());
    out.clear();
    zeroize::Zeroize::zeroize(&mut resp.body);
    r
}
