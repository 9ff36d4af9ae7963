//! `kes_core::Server` in a second runtime: plain std threads and blocking
//! rustls streams, no async. It serves the same API from the same config
//! file (in-memory or fs key store) and is the reference for embedding the
//! core in something else (a proxy, a storage node, a test harness).
//!
//! ```sh
//! cargo run -p kes-core --example blocking_server -- --config kes.yml
//! ```
//!
//! What an embedder provides, all of it here:
//! 1. **Framing**: parse a request head and body into a [`Request`] (the
//!    body limit per route is [`RouteTable::limits`]), write [`Response`]s.
//! 2. **Identity**: the TLS peer's certificate chain turned into a
//!    [`Caller`] ([`Identity::from_chain`]); the TLS verifier accepts any
//!    client certificate, since policies pin identities (public-key hashes).
//! 3. **Time and randomness**: [`Now`] from the real clocks at each input, a
//!    CSPRNG (the OS's here).
//! 4. **The store**: execute each [`Command`] from `poll_command` and hand
//!    the result back; here synchronously, under the same lock, so a request
//!    is complete when its own lock is released.
//! 5. **Timers**: call `handle_timeout` when `poll_timeout` says (a thread).
//! 6. **Events**: print what `poll_event` gives (audit to stdout, errors to
//!    stderr).
//!
//! Not here (the smol adapter has them): log streaming, chunked bodies,
//! pipelined requests, TLS proxies, remote stores, graceful reload, limits
//! on connections and header sizes beyond the basics.

// An adapter, not the core: it owns the IO, clocks and threads the core's
// lints (clippy.toml) keep out of core/src.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use kes_core::config::KeystoreConfig;
use kes_core::crypto::SecretBytes;
use kes_core::{
    Caller, Command, Config, Event, Identity, Now, Request, RequestId, Response, RouteTable,
    Server, StoreError, StoreReply, UnixTime,
};
use rand_core::OsRng;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The key store: a map, or one file per key (created with `create_new`,
/// so never overwritten; written to a temporary name, synced, then linked
/// into place, so never half-written).
enum Store {
    Memory(BTreeMap<String, SecretBytes>),
    Fs(PathBuf),
}

impl Store {
    fn execute(&mut self, cmd: Command) -> Result<StoreReply, StoreError> {
        let failed = |e: std::io::Error| StoreError::Failed(e.to_string());
        match (self, cmd) {
            (Store::Memory(m), Command::Create { name, value }) => {
                if m.contains_key(name.as_str()) {
                    return Err(StoreError::Exists);
                }
                m.insert(name.as_str().to_owned(), value);
                Ok(StoreReply::Created)
            }
            (Store::Memory(m), Command::Get { name }) => {
                m.get(name.as_str()).cloned().map(StoreReply::Value).ok_or(StoreError::NotFound)
            }
            (Store::Memory(m), Command::Delete { name }) => {
                m.remove(name.as_str()).map(|_| StoreReply::Deleted).ok_or(StoreError::NotFound)
            }
            (Store::Memory(m), Command::List) => Ok(StoreReply::Names(m.keys().cloned().collect())),
            (Store::Fs(dir), Command::Create { name, value }) => {
                let tmp = dir.join(format!(".{}.tmp", name.as_str()));
                let mut f = std::fs::File::create(&tmp).map_err(failed)?;
                f.write_all(value.expose()).and_then(|()| f.sync_all()).map_err(failed)?;
                let linked = std::fs::hard_link(&tmp, dir.join(name.as_str()));
                let _ = std::fs::remove_file(&tmp);
                match linked {
                    Ok(()) => Ok(StoreReply::Created),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Err(StoreError::Exists)
                    }
                    Err(e) => Err(failed(e)),
                }
            }
            (Store::Fs(dir), Command::Get { name }) => match std::fs::read(dir.join(name.as_str()))
            {
                Ok(v) => Ok(StoreReply::Value(SecretBytes::new(v))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::NotFound),
                Err(e) => Err(failed(e)),
            },
            (Store::Fs(dir), Command::Delete { name }) => {
                match std::fs::remove_file(dir.join(name.as_str())) {
                    Ok(()) => Ok(StoreReply::Deleted),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::NotFound),
                    Err(e) => Err(failed(e)),
                }
            }
            (Store::Fs(dir), Command::List) => {
                let names = std::fs::read_dir(dir).map_err(failed)?;
                let names = names.filter_map(|e| e.ok()?.file_name().into_string().ok());
                Ok(StoreReply::Names(names.filter(|n| !n.starts_with('.')).collect()))
            }
            (_, Command::Status) => Ok(StoreReply::Status { latency: Duration::ZERO }),
        }
    }
}

/// The core, its store and a request counter, shared by every thread.
struct Shared {
    core: Mutex<(Server, Store)>,
    routes: RouteTable,
    next_id: AtomicU64,
}

fn now() -> Now {
    let wall = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Now { instant: Instant::now(), unix: UnixTime::from_nanos(wall.as_nanos() as i128) }
}

/// Runs store commands until none is left, then prints events. Called with
/// the lock held, after every input.
fn drive(server: &mut Server, store: &mut Store) {
    while let Some((id, cmd)) = server.poll_command() {
        let result = store.execute(cmd);
        server.handle_store_result(id, result, now(), &mut OsRng);
    }
    while let Some(event) = server.poll_event() {
        match event {
            Event::Audit(a) => println!("{}", a.to_json()),
            Event::Error(e) => eprintln!("{}", e.to_json()),
        }
    }
}

/// One request in, its response out.
fn handle(shared: &Shared, caller: Caller, req: Request) -> Response {
    let id = RequestId(shared.next_id.fetch_add(1, Ordering::Relaxed));
    let mut guard = shared.core.lock().unwrap_or_else(|p| p.into_inner());
    let (server, store) = &mut *guard;
    server.handle_request(id, caller, req, now(), &mut OsRng);
    drive(server, store);
    let mut mine = None;
    while let Some((rid, resp)) = server.poll_response() {
        if rid == id {
            mine = Some(resp);
        }
    }
    mine.unwrap_or_else(|| Response::error(http::StatusCode::INTERNAL_SERVER_ERROR, "no response"))
}

/// Reads one request (head, then a `Content-Length` body) from a stream.
/// `None`: the peer closed, or sent something this example does not take.
fn read_request(stream: &mut impl Read, routes: &RouteTable) -> Option<(Request, bool)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let (head_len, method, target, length, close) = loop {
        let n = stream.read(&mut chunk).ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(len) = parsed.parse(&buf).ok()? {
            let header = |name: &str| {
                parsed.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
            };
            let length = header("content-length")
                .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
            let method = http::Method::from_bytes(parsed.method?.as_bytes()).ok()?;
            break (len, method, parsed.path?.to_owned(), length, close);
        }
        if buf.len() > 16 * 1024 {
            return None;
        }
    };
    let mut req = Request::from_target(method, target);
    let max = routes.limits(&req.path).map_or(0, |l| l.max_body);
    if length > max {
        req.body_too_large = true;
        return Some((req, true)); // the body stays unread: close afterwards
    }
    let mut body = buf.split_off(head_len);
    if body.len() < length {
        let missing = length - body.len();
        let mut rest = vec![0u8; missing];
        stream.read_exact(&mut rest).ok()?;
        body.extend_from_slice(&rest);
    }
    body.truncate(length);
    Some((req.with_body(body), close))
}

fn write_response(stream: &mut impl Write, resp: &Response) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {}\r\n", resp.status);
    for (name, value) in &resp.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", resp.body.len()));
    stream.write_all(out.as_bytes())?;
    stream.write_all(&resp.body)?;
    stream.flush()
}

fn connection(shared: Arc<Shared>, tls: Arc<rustls::ServerConfig>, tcp: TcpStream) {
    let peer = tcp.peer_addr().ok().map(|a| a.ip());
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(conn) = rustls::ServerConnection::new(tls) else { return };
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    // The handshake happens on first use; the chain is known after it.
    if stream.conn.complete_io(&mut stream.sock).is_err() {
        return;
    }
    let caller = match stream.conn.peer_certificates() {
        Some(chain) => {
            Identity::from_chain(chain).map_or_else(Caller::Anonymous, Caller::Identified)
        }
        None => Caller::Anonymous(kes_core::IdentityError::Missing),
    };
    let mut reader = BufReader::new(stream);
    while let Some((mut req, close)) = read_request(&mut reader, &shared.routes) {
        req.peer = peer;
        let resp = handle(&shared, caller, req);
        if write_response(reader.get_mut(), &resp).is_err() || close {
            return;
        }
    }
}

/// Accepts any client certificate (policies pin identities), checking
/// only that the peer holds its key.
#[derive(Debug)]
struct AnyClient(rustls::crypto::WebPkiSupportedAlgorithms);

impl rustls::server::danger::ClientCertVerifier for AnyClient {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

fn tls_config(config: &Config, base: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let file = |p: &Option<String>, what: &str| {
        let p = p.as_deref().ok_or(format!("tls.{what} is not set"))?;
        Ok::<_, String>(base.join(p))
    };
    let (cert, key) = (file(&config.tls.cert, "cert")?, file(&config.tls.key, "key")?);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .and_then(|i| i.collect())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let verifier = Arc::new(AnyClient(provider.signature_verification_algorithms));
    rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_client_cert_verifier(verifier).with_single_cert(chain, key))
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let path = match args.as_slice() {
        [_, flag, path] if flag == "--config" => PathBuf::from(path),
        _ => return Err("usage: blocking_server --config <file>".into()),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let config = Config::parse(&text, &|n| std::env::var(n).ok())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let store = match &config.keystore {
        KeystoreConfig::Memory => Store::Memory(BTreeMap::new()),
        KeystoreConfig::Fs { path } => {
            let dir = base.join(path);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            Store::Fs(dir)
        }
        _ => return Err("this example serves the in-memory and fs stores only".into()),
    };
    let tls = tls_config(&config, base)?;
    let addr = config.address.clone().unwrap_or_else(|| "127.0.0.1:7373".into());
    let listener = TcpListener::bind(&addr).map_err(|e| format!("{addr}: {e}"))?;
    let routes = RouteTable::from_config(&config);
    let mut server = Server::new(config, now(), &mut OsRng);
    let mut store = store;
    drive(&mut server, &mut store); // declared keys are created first
    if let Some(e) = server.startup_failures().first() {
        return Err(e.clone());
    }
    let shared =
        Arc::new(Shared { core: Mutex::new((server, store)), routes, next_id: AtomicU64::new(1) });
    let timers = shared.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(100));
        let mut guard = timers.core.lock().unwrap_or_else(|p| p.into_inner());
        let (server, store) = &mut *guard;
        if server.poll_timeout().is_some_and(|(t, _)| t <= Instant::now()) {
            server.handle_timeout(now(), &mut OsRng);
            drive(server, store);
        }
    });
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    eprintln!("blocking_server: listening on https://{local}");
    for tcp in listener.incoming().flatten() {
        let (shared, tls) = (shared.clone(), tls.clone());
        std::thread::spawn(move || connection(shared, tls, tcp));
    }
    Ok(())
}
