//! One HTTP(S) client for every remote key store: rustls (TLS 1.2+, the
//! server verified against a CA file or directory or the system roots, an
//! optional client certificate), keep-alive connections pooled per store,
//! a deadline per request, and responses framed by Content-Length or
//! chunked (the same strict decoder the server uses for requests).
//!
//! The protocol of each store is plain functions from a command to an
//! [`HttpRequest`] and from an [`HttpResponse`] to a result; this module
//! only moves bytes.

use std::net::TcpStream;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use futures_rustls::client::TlsStream;
use futures_rustls::TlsConnector;
use rustls::pki_types::ServerName;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

use crate::chunked::ChunkedDecoder;

/// Largest response accepted (listings of many keys stay far below).
const MAX_RESPONSE: usize = 16 << 20;
/// Largest response head.
const MAX_HEAD: usize = 64 * 1024;
/// Idle connections kept per store: as many as calls a busy server has in
/// flight (64 connections of load each waiting on one store call), or the
/// calls beyond the pool pay a new connection each (measured: with 16, a
/// fifth of the calls of an uncached listing opened a new connection).
const MAX_IDLE: usize = 128;
/// How long a host name's addresses are reused before it is resolved
/// again (a load balancer's name may move; a lookup per connection is a
/// trip to a thread pool).
const DNS_TTL: Duration = Duration::from_secs(30);

/// A request to the store's endpoint.
pub struct HttpRequest {
    /// `GET`, `PUT`, `POST`, `DELETE`, `LIST`.
    pub method: &'static str,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Extra headers (tokens go here; they are not logged).
    pub headers: Vec<(&'static str, Zeroizing<String>)>,
    /// The body; it may hold a key, so it is wiped.
    pub body: Option<Zeroizing<Vec<u8>>>,
}

impl HttpRequest {
    /// A request without headers or body.
    pub fn new(method: &'static str, path: String) -> Self {
        Self { method, path, headers: Vec::new(), body: None }
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, Zeroizing::new(value.to_owned())));
        self
    }

    /// Sets a JSON body (`Content-Type: application/json`).
    pub fn json(self, body: Vec<u8>) -> Self {
        self.header("Content-Type", "application/json").body(body)
    }

    /// Sets a body; the caller names its type in a header.
    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.body = Some(Zeroizing::new(body));
        self
    }
}

/// A response; the body may hold a key, so it is wiped.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// `Location`, for redirects.
    pub location: Option<String>,
    /// The body.
    pub body: Zeroizing<Vec<u8>>,
}

/// Why a request got no response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// No connection could be made (nothing was sent).
    Connect(String),
    /// The connection failed after the request was (maybe) sent.
    Io(String),
    /// No complete response before the deadline.
    Timeout,
    /// The response was not valid HTTP/1.1.
    Protocol(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(m) => write!(f, "cannot connect: {m}"),
            Self::Io(m) => write!(f, "connection failed: {m}"),
            Self::Timeout => f.write_str("no answer in time"),
            Self::Protocol(m) => write!(f, "invalid response: {m}"),
        }
    }
}

/// Where a store lives.
#[derive(Clone, Debug)]
struct Endpoint {
    tls: bool,
    host: String,
    port: u16,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("'{url}': the endpoint must start with https://"));
        };
        let authority = rest.split('/').next().unwrap_or("");
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                let port = p.parse().map_err(|_| format!("'{url}': invalid port '{p}'"))?;
                (h, port)
            }
            _ => (authority, if tls { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("'{url}': no host"));
        }
        Ok(Self { tls, host: host.to_owned(), port })
    }
}

/// An HTTP(S) client for one endpoint.
pub struct HttpsClient {
    endpoint: Endpoint,
    connector: Option<TlsConnector>,
    idle: Mutex<Vec<Conn>>,
    /// The endpoint's addresses and when they were looked up.
    resolved: Mutex<Option<(Instant, Vec<std::net::SocketAddr>)>>,
}

impl HttpsClient {
    /// A client for `url` (`https://host:port`). `ca` is a PEM file or a
    /// directory of them (default: the system roots); `cert` a client
    /// certificate and key for mTLS.
    pub fn new(
        url: &str,
        ca: Option<&Path>,
        cert: Option<(&Path, &Path)>,
    ) -> Result<Arc<Self>, String> {
        let endpoint = Endpoint::parse(url)?;
        let connector = if endpoint.tls {
            let roots = crate::tls::load_roots(ca)?;
            let b = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots);
            let mut config = match cert {
                Some((c, k)) => {
                    let certs = crate::tls::load_certs(c)?;
                    let key = crate::tls::load_key(k, None)?;
                    b.with_client_auth_cert(certs, key)
                        .map_err(|e| format!("{}: {e}", c.display()))?
                }
                None => b.with_no_client_auth(),
            };
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(TlsConnector::from(Arc::new(config)))
        } else {
            None
        };
        Ok(Arc::new(Self {
            endpoint,
            connector,
            idle: Mutex::new(Vec::new()),
            resolved: Mutex::new(None),
        }))
    }

    /// The `Host` header sent: the host, and the port unless it is the
    /// scheme's default (request signatures cover it, so it is exact).
    pub fn host_header(&self) -> String {
        let e = &self.endpoint;
        let host = if e.host.contains(':') { format!("[{}]", e.host) } else { e.host.clone() };
        match (e.tls, e.port) {
            (true, 443) | (false, 80) => host,
            (_, port) => format!("{host}:{port}"),
        }
    }

    /// Whether the endpoint is plain HTTP (tokens and keys in the clear).
    pub fn is_plaintext(&self) -> bool {
        !self.endpoint.tls
    }

    /// Sends a request and reads the response, within `timeout`. A pooled
    /// connection the server has closed meanwhile is replaced once.
    pub async fn send(
        &self,
        req: &HttpRequest,
        timeout: Duration,
    ) -> Result<HttpResponse, HttpError> {
        within(timeout, self.exchange(req)).await
    }

    /// Like [`Self::send`], on a new connection that is not pooled
    /// afterwards: behind a load balancer, a way to ask another backend.
    pub async fn send_fresh(
        &self,
        req: &HttpRequest,
        timeout: Duration,
    ) -> Result<HttpResponse, HttpError> {
        let once = async {
            let mut conn = self.connect().await?;
            match self.on(&mut conn, req).await {
                Ok((resp, _)) => Ok(resp),
                Err(Stale) => Err(HttpError::Io("connection closed before the answer".into())),
                Err(Failed(e)) => Err(e),
            }
        };
        within(timeout, once).await
    }

    async fn exchange(&self, req: &HttpRequest) -> Result<HttpResponse, HttpError> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(mut conn) = pooled {
            match self.on(&mut conn, req).await {
                Ok((resp, keep)) => {
                    self.put_back(conn, keep);
                    return Ok(resp);
                }
                // A stale keep-alive connection fails before any answer:
                // the server never acted on it, so a fresh one may retry.
                Err(Stale) => {}
                Err(Failed(e)) => return Err(e),
            }
        }
        let mut conn = self.connect().await?;
        match self.on(&mut conn, req).await {
            Ok((resp, keep)) => {
                self.put_back(conn, keep);
                Ok(resp)
            }
            Err(Stale) => Err(HttpError::Io("connection closed before the answer".into())),
            Err(Failed(e)) => Err(e),
        }
    }

    fn put_back(&self, conn: Conn, keep: bool) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if keep && idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// The endpoint's addresses: an IP literal as it is, a name looked up
    /// at most every [`DNS_TTL`].
    async fn addresses(&self) -> Result<Vec<std::net::SocketAddr>, HttpError> {
        let e = &self.endpoint;
        if let Ok(ip) = e.host.parse::<std::net::IpAddr>() {
            return Ok(vec![std::net::SocketAddr::new(ip, e.port)]);
        }
        if let Some((at, addrs)) = &*self.resolved.lock().unwrap_or_else(|p| p.into_inner()) {
            if at.elapsed() < DNS_TTL {
                return Ok(addrs.clone());
            }
        }
        let addr = format!("{}:{}", e.host, e.port);
        let addrs: Vec<std::net::SocketAddr> = smol::unblock(move || {
            std::net::ToSocketAddrs::to_socket_addrs(&addr).map(|a| a.collect())
        })
        .await
        .map_err(|e| HttpError::Connect(e.to_string()))?;
        *self.resolved.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), addrs.clone()));
        Ok(addrs)
    }

    async fn connect(&self) -> Result<Conn, HttpError> {
        let addrs = self.addresses().await?;
        let mut last = HttpError::Connect("no address".into());
        for a in addrs {
            match Async::<TcpStream>::connect(a).await {
                Ok(tcp) => {
                    let _ = tcp.get_ref().set_nodelay(true);
                    return match &self.connector {
                        None => Ok(Conn::Plain(tcp)),
                        Some(c) => {
                            let name = ServerName::try_from(self.endpoint.host.clone())
                                .map_err(|e| HttpError::Connect(e.to_string()))?;
                            let tls = c
                                .connect(name, tcp)
                                .await
                                .map_err(|e| HttpError::Connect(format!("TLS: {e}")))?;
                            Ok(Conn::Tls(Box::new(tls)))
                        }
                    };
                }
                Err(e) => last = HttpError::Connect(e.to_string()),
            }
        }
        Err(last)
    }

    /// One request on one connection; the flag says whether the connection
    /// can be reused.
    async fn on(
        &self,
        conn: &mut Conn,
        req: &HttpRequest,
    ) -> Result<(HttpResponse, bool), Outcome> {
        let mut out = Zeroizing::new(Vec::with_capacity(512));
        out.extend_from_slice(
            format!("{} {} HTTP/1.1\r\nHost: {}\r\n", req.method, req.path, self.host_header())
                .as_bytes(),
        );
        for (k, v) in &req.headers {
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let body: &[u8] = req.body.as_deref().map_or(&[], |b| b.as_slice());
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(body);
        conn.write_all(&out).await.map_err(|_| Stale)?;
        conn.flush().await.map_err(|_| Stale)?;
        read_response(conn, req.method == "HEAD").await
    }
}

/// `call`'s answer, or [`HttpError::Timeout`] when it takes longer.
async fn within<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, HttpError>>,
) -> Result<T, HttpError> {
    let until = Instant::now() + timeout;
    smol::future::or(call, async {
        Timer::at(until).await;
        Err(HttpError::Timeout)
    })
    .await
}

/// How one attempt on a connection failed.
enum Outcome {
    /// Nothing came back at all (a closed keep-alive connection).
    Stale,
    /// A real failure.
    Failed(HttpError),
}
use Outcome::{Failed, Stale};

/// First size of a response buffer; store answers are a few hundred bytes.
const READ_CHUNK: usize = 2048;

/// Makes room for `more` bytes without leaving a copy behind: a `Vec` that
/// grows frees its old allocation unwiped, and these buffers hold keys.
fn reserve_wiped(buf: &mut Zeroizing<Vec<u8>>, more: usize) {
    if buf.capacity() - buf.len() >= more {
        return;
    }
    let cap = (buf.capacity() * 2).max(buf.len() + more);
    let mut bigger = Vec::with_capacity(cap);
    bigger.extend_from_slice(buf);
    // The old buffer is wiped as it drops.
    drop(std::mem::replace(buf, Zeroizing::new(bigger)));
}

/// Reads what is available into `buf`'s spare room (made when there is
/// little): no scratch buffer, so only bytes that arrived are copied and
/// wiped.
async fn read_more(conn: &mut Conn, buf: &mut Zeroizing<Vec<u8>>) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        reserve_wiped(buf, READ_CHUNK);
    }
    let len = buf.len();
    let room = buf.capacity() - len;
    buf.resize(len + room, 0);
    let r = conn.read(&mut buf[len..]).await;
    buf.truncate(len + *r.as_ref().unwrap_or(&0));
    r
}

async fn read_response(conn: &mut Conn, head_only: bool) -> Result<(HttpResponse, bool), Outcome> {
    let mut buf = Zeroizing::new(Vec::with_capacity(READ_CHUNK));
    let (status, location, framing, close, head_len) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let status = resp.code.unwrap_or(0);
                let mut location = None;
                let mut length = None;
                let mut chunked = false;
                let mut close = resp.version == Some(0);
                for h in resp.headers.iter() {
                    let v = String::from_utf8_lossy(h.value);
                    if h.name.eq_ignore_ascii_case("content-length") {
                        length = Some(v.trim().parse::<usize>().map_err(|_| {
                            Failed(HttpError::Protocol("invalid Content-Length".into()))
                        })?);
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        chunked = v.to_ascii_lowercase().contains("chunked");
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        close |= v.eq_ignore_ascii_case("close");
                    } else if h.name.eq_ignore_ascii_case("location") {
                        location = Some(v.into_owned());
                    }
                }
                let no_body =
                    head_only || status == 204 || status == 304 || (100..200).contains(&status);
                let framing = match (no_body, chunked, length) {
                    (true, _, _) => Framing::Length(0),
                    (false, true, _) => Framing::Chunked,
                    (false, false, Some(n)) => Framing::Length(n),
                    (false, false, None) => Framing::UntilClose,
                };
                break (status, location, framing, close, n);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => {
                return Err(Failed(HttpError::Protocol("response head too large".into())))
            }
            Err(e) => return Err(Failed(HttpError::Protocol(e.to_string()))),
        }
        let n = read_more(conn, &mut buf).await.map_err(|e| {
            if buf.is_empty() {
                Stale
            } else {
                Failed(HttpError::Io(e.to_string()))
            }
        })?;
        if n == 0 {
            return Err(if buf.is_empty() {
                Stale
            } else {
                Failed(HttpError::Io("connection closed mid-answer".into()))
            });
        }
    };
    // From here on `buf` holds the body read so far (moved down in place).
    buf.copy_within(head_len.., 0);
    let body_start = buf.len() - head_len;
    buf.truncate(body_start);
    let io = |e: std::io::Error| Failed(HttpError::Io(e.to_string()));
    let body = match framing {
        Framing::Length(n) => {
            if n > MAX_RESPONSE {
                return Err(Failed(HttpError::Protocol("response too large".into())));
            }
            let missing = n.saturating_sub(buf.len());
            reserve_wiped(&mut buf, missing);
            while buf.len() < n {
                if read_more(conn, &mut buf).await.map_err(io)? == 0 {
                    return Err(Failed(HttpError::Io("connection closed mid-body".into())));
                }
            }
            buf.truncate(n);
            buf
        }
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            let mut body = Zeroizing::new(Vec::new());
            loop {
                // Decoded bytes never outnumber the input: with this much
                // room the decoder's pushes never reallocate.
                reserve_wiped(&mut body, buf.len());
                let used = decoder
                    .decode(&buf, &mut body, MAX_RESPONSE)
                    .map_err(|e| Failed(HttpError::Protocol(format!("{e:?}"))))?;
                buf.copy_within(used.., 0);
                let left = buf.len() - used;
                buf.truncate(left);
                if decoder.over_limit() {
                    return Err(Failed(HttpError::Protocol("response too large".into())));
                }
                if decoder.is_done() {
                    break body;
                }
                if read_more(conn, &mut buf).await.map_err(io)? == 0 {
                    return Err(Failed(HttpError::Io("connection closed mid-body".into())));
                }
            }
        }
        Framing::UntilClose => {
            while read_more(conn, &mut buf).await.map_err(io)? > 0 {
                if buf.len() > MAX_RESPONSE {
                    return Err(Failed(HttpError::Protocol("response too large".into())));
                }
            }
            buf
        }
    };
    let keep = !close && !matches!(framing, Framing::UntilClose) && !moves_on(status);
    Ok((HttpResponse { status, location, body }, keep))
}

/// Whether an answer says "ask elsewhere": a server error, throttling or a
/// redirect. Its connection is not kept: behind an L4 load balancer each
/// connection is pinned to one backend, so a retry on the same connection
/// would reach the same failing node (a standby during an election, a
/// deposed leader after a freeze), and a fresh one may reach a healthy one.
/// Connections that answer directly are the ones that stay pooled.
fn moves_on(status: u16) -> bool {
    status == 307 || status == 429 || status >= 500
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// A connection, with or without TLS.
enum Conn {
    Plain(Async<TcpStream>),
    Tls(Box<TlsStream<Async<TcpStream>>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_close(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("https://127.0.0.1:8200").unwrap();
        assert_eq!((e.tls, e.host.as_str(), e.port), (true, "127.0.0.1", 8200));
        let e = Endpoint::parse("http://vault.example/").unwrap();
        assert_eq!((e.tls, e.host.as_str(), e.port), (false, "vault.example", 80));
        let e = Endpoint::parse("https://[::1]:8200").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 8200));
        assert!(Endpoint::parse("vault:8200").is_err());
        assert!(Endpoint::parse("https://:8200").is_err());
    }
}
