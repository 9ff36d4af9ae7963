//! Connections: TLS to one of several endpoints, one HTTP/1.1 exchange per
//! connection, failover to the next endpoint when one cannot be reached.

use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_io::{Async, Timer};
use futures_rustls::TlsConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde_json::Value;
use smol::io::{AsyncReadExt, AsyncWriteExt};

use crate::ClientError;

/// Largest answer accepted (metrics and listings are the big ones).
const MAX_ANSWER: usize = 64 << 20;

/// One server address.
pub(crate) struct Endpoint {
    host: String,
    port: u16,
}

impl Endpoint {
    /// `https://host:port`, `host:port` or `host` (port 7373).
    pub(crate) fn parse(s: &str) -> Result<Self, ClientError> {
        let s = s.trim();
        let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")).unwrap_or(s);
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p
                    .parse()
                    .map_err(|_| ClientError::Config(format!("invalid endpoint '{s}'")))?;
                (h.trim_matches(['[', ']']).to_owned(), port)
            }
            _ => (rest.to_owned(), 7373),
        };
        if host.is_empty() {
            return Err(ClientError::Config(format!("invalid endpoint '{s}'")));
        }
        Ok(Self { host, port })
    }
}

/// A raw answer.
pub(crate) struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

type Tls = futures_rustls::client::TlsStream<Async<TcpStream>>;

/// Idle connections kept per endpoint.
const MAX_IDLE: usize = 8;

pub(crate) struct Transport {
    endpoints: Vec<Endpoint>,
    connector: TlsConnector,
    timeout: Duration,
    next: AtomicUsize,
    /// Kept-alive connections by (host, port), so repeated calls skip the
    /// TCP and TLS handshakes.
    idle: std::sync::Mutex<std::collections::HashMap<(String, u16), Vec<Tls>>>,
}

impl Transport {
    pub(crate) fn new(
        endpoints: Vec<Endpoint>,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Self {
        Self {
            endpoints,
            connector: TlsConnector::from(tls),
            timeout,
            next: AtomicUsize::new(0),
            idle: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Sends a request and maps error statuses to [`ClientError`]s. Endpoints
    /// are tried round-robin; an endpoint that cannot be connected to is
    /// skipped for any call, and a failure after sending is retried
    /// elsewhere only for `idempotent` calls.
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        idempotent: bool,
    ) -> Result<Answer, ClientError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = None;
        for i in 0..self.endpoints.len() {
            let ep = &self.endpoints[(start + i) % self.endpoints.len()];
            let attempt = smol::future::or(
                async { Some(self.exchange(ep, method, path, body, idempotent).await) },
                async {
                    Timer::after(self.timeout).await;
                    None
                },
            )
            .await;
            match attempt {
                None => last = Some(ClientError::Timeout),
                Some(Ok(answer)) => return finish(answer),
                Some(Err(Failure::Connect(e))) => {
                    last = Some(ClientError::Connect(format!("{}:{}: {e}", ep.host, ep.port)))
                }
                Some(Err(Failure::AfterSend(e))) if idempotent => {
                    last = Some(ClientError::Connect(format!("{}:{}: {e}", ep.host, ep.port)))
                }
                Some(Err(Failure::AfterSend(e))) => {
                    return Err(ClientError::Connect(format!("{}:{}: {e}", ep.host, ep.port)))
                }
                Some(Err(Failure::Tls(e))) => return Err(ClientError::Certificate(e)),
                Some(Err(Failure::ServerCert(e))) => return Err(ClientError::ServerCertificate(e)),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Connect("no endpoint".into())))
    }

    /// Like [`Self::call`], decoding a JSON body.
    pub(crate) async fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        idempotent: bool,
    ) -> Result<Value, ClientError> {
        let a = self.call(method, path, body, idempotent).await?;
        serde_json::from_slice(&a.body).map_err(|e| ClientError::InvalidResponse(e.to_string()))
    }

    /// Opens a streaming GET (the log routes) on the first endpoint that
    /// answers; lines arrive through [`LogLines::next_line`].
    pub(crate) async fn stream(&self, path: &str) -> Result<LogLines, ClientError> {
        let mut last = None;
        for ep in &self.endpoints {
            let mut tls = match self.open(ep).await {
                Ok(t) => t,
                Err(Failure::Tls(e)) => return Err(ClientError::Certificate(e)),
                Err(Failure::ServerCert(e)) => return Err(ClientError::ServerCertificate(e)),
                Err(Failure::Connect(e) | Failure::AfterSend(e)) => {
                    last = Some(ClientError::Connect(format!("{}:{}: {e}", ep.host, ep.port)));
                    continue;
                }
            };
            let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", ep.host);
            let io = |e: std::io::Error| ClientError::Connect(e.to_string());
            tls.write_all(req.as_bytes()).await.map_err(io)?;
            tls.flush().await.map_err(io)?;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let end = loop {
                if let Some(end) = head_end(&buf) {
                    break end;
                }
                let n = tls.read(&mut chunk).await.map_err(io)?;
                if n == 0 {
                    return Err(ClientError::InvalidResponse(
                        "stream closed before its head".into(),
                    ));
                }
                buf.extend_from_slice(&chunk[..n]);
            };
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let status: u16 =
                head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            if status != 200 {
                let answer = parse_answer(&buf).unwrap_or(Answer {
                    status,
                    content_type: String::new(),
                    body: Vec::new(),
                });
                return Err(finish(answer)
                    .err()
                    .unwrap_or_else(|| ClientError::InvalidResponse(format!("status {status}"))));
            }
            buf.drain(..end);
            return Ok(LogLines { tls, raw: buf, lines: Vec::new() });
        }
        Err(last.unwrap_or_else(|| ClientError::Connect("no endpoint".into())))
    }

    async fn open(
        &self,
        ep: &Endpoint,
    ) -> Result<futures_rustls::client::TlsStream<Async<TcpStream>>, Failure> {
        let addr = format!("{}:{}", ep.host, ep.port);
        let addrs: Vec<std::net::SocketAddr> = smol::unblock(move || {
            std::net::ToSocketAddrs::to_socket_addrs(&addr).map(|a| a.collect())
        })
        .await
        .map_err(Failure::Connect)?;
        let mut tcp = None;
        let mut err = None;
        for a in addrs {
            match Async::<TcpStream>::connect(a).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => err = Some(e),
            }
        }
        let tcp = tcp.ok_or_else(|| {
            Failure::Connect(err.unwrap_or_else(|| std::io::Error::other("no address")))
        })?;
        let name =
            ServerName::try_from(ep.host.clone()).map_err(|e| Failure::Tls(e.to_string()))?;
        self.connector.connect(name, tcp).await.map_err(|e| {
            // A rejected certificate is a TLS error worth reporting as such;
            // our own verdict on the server's certificate is told apart from
            // the server refusing ours.
            match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                Some(rustls::Error::InvalidCertificate(c)) => Failure::ServerCert(reason(c)),
                Some(_) => Failure::Tls(e.to_string()),
                None => Failure::Connect(e),
            }
        })
    }

    /// One request/response on a kept-alive connection to `ep` (reused from
    /// the pool for idempotent calls; a reused connection the server has
    /// meanwhile closed is replaced by a fresh one, once).
    async fn exchange(
        &self,
        ep: &Endpoint,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        idempotent: bool,
    ) -> Result<Answer, Failure> {
        if idempotent {
            if let Some(tls) = self.take_idle(ep) {
                if let Ok(a) = self.roundtrip(ep, tls, method, path, body).await {
                    return Ok(a);
                }
            }
        }
        let tls = self.open(ep).await?;
        self.roundtrip(ep, tls, method, path, body).await
    }

    fn take_idle(&self, ep: &Endpoint) -> Option<Tls> {
        let key = (ep.host.clone(), ep.port);
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&key)?.pop()
    }

    fn put_idle(&self, ep: &Endpoint, tls: Tls) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry((ep.host.clone(), ep.port)).or_default();
        if list.len() < MAX_IDLE {
            list.push(tls);
        }
    }

    async fn roundtrip(
        &self,
        ep: &Endpoint,
        mut tls: Tls,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Answer, Failure> {
        let body = body.unwrap_or(&[]);
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            ep.host,
            body.len()
        )
        .into_bytes();
        if !body.is_empty() {
            req.extend_from_slice(b"Content-Type: application/json\r\n");
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(body);
        tls.write_all(&req).await.map_err(Failure::AfterSend)?;
        tls.flush().await.map_err(Failure::AfterSend)?;
        zeroize::Zeroize::zeroize(&mut req);
        let mut raw = zeroize::Zeroizing::new(Vec::new());
        let mut chunk = [0u8; 16 * 1024];
        let mut eof = false;
        loop {
            match tls.read(&mut chunk).await {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
                // Servers may close without close_notify after Connection: close.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {
                    eof = true;
                    break;
                }
                Err(e) => return Err(Failure::AfterSend(e)),
            }
            if raw.len() > MAX_ANSWER {
                return Err(Failure::AfterSend(std::io::Error::other("answer too large")));
            }
            if complete(&raw) {
                break;
            }
        }
        zeroize::Zeroize::zeroize(&mut chunk);
        let answer =
            parse_answer(&raw).map_err(|e| Failure::AfterSend(std::io::Error::other(e)))?;
        let head =
            String::from_utf8_lossy(&raw[..head_end(&raw).unwrap_or(0)]).to_ascii_lowercase();
        if !eof && !head.contains("connection: close") {
            self.put_idle(ep, tls);
        }
        Ok(answer)
    }
}

/// The lines of a chunked NDJSON stream.
pub struct LogLines {
    tls: futures_rustls::client::TlsStream<Async<TcpStream>>,
    raw: Vec<u8>,
    lines: Vec<String>,
}

impl LogLines {
    /// The next line (one JSON event), or None when the server ends the stream.
    pub async fn next_line(&mut self) -> Option<Result<String, ClientError>> {
        loop {
            if !self.lines.is_empty() {
                return Some(Ok(self.lines.remove(0)));
            }
            // Decode complete chunks from `raw`.
            let mut progressed = false;
            while let Some(pos) = self.raw.windows(2).position(|w| w == b"\r\n") {
                let size_text = String::from_utf8_lossy(&self.raw[..pos]).trim().to_owned();
                let Ok(size) = usize::from_str_radix(&size_text, 16) else {
                    return Some(Err(ClientError::InvalidResponse("bad chunk size".into())));
                };
                if size == 0 {
                    return None;
                }
                if self.raw.len() < pos + 2 + size + 2 {
                    break;
                }
                let data = String::from_utf8_lossy(&self.raw[pos + 2..pos + 2 + size]).into_owned();
                self.raw.drain(..pos + 2 + size + 2);
                self.lines.extend(data.lines().filter(|l| !l.is_empty()).map(str::to_owned));
                progressed = true;
            }
            if progressed {
                continue;
            }
            let mut chunk = [0u8; 4096];
            match self.tls.read(&mut chunk).await {
                Ok(0) => return None,
                Ok(n) => self.raw.extend_from_slice(&chunk[..n]),
                Err(e) => return Some(Err(ClientError::Connect(e.to_string()))),
            }
        }
    }
}

enum Failure {
    Connect(std::io::Error),
    AfterSend(std::io::Error),
    /// The handshake failed over the client certificate or TLS itself.
    Tls(String),
    /// We do not trust the server's certificate.
    ServerCert(String),
}

/// Why the server's certificate was not accepted, in words.
fn reason(c: &rustls::CertificateError) -> String {
    use rustls::CertificateError as E;
    match c {
        E::UnknownIssuer => "it is not issued by a trusted CA".into(),
        E::NotValidForName | E::NotValidForNameContext { .. } => {
            "it is not valid for this server name".into()
        }
        E::Expired | E::ExpiredContext { .. } => "it has expired".into(),
        E::NotValidYet | E::NotValidYetContext { .. } => "it is not valid yet".into(),
        E::BadSignature => "its signature is invalid".into(),
        other => format!("{other:?}"),
    }
}

fn head_end(raw: &[u8]) -> Option<usize> {
    raw.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
    })
}

fn complete(raw: &[u8]) -> bool {
    let Some(end) = head_end(raw) else { return false };
    let head = String::from_utf8_lossy(&raw[..end]);
    content_length(&head).is_some_and(|n| raw.len() >= end + n)
}

fn parse_answer(raw: &[u8]) -> Result<Answer, String> {
    let end = head_end(raw).ok_or("truncated answer")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("malformed status line")?;
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case("content-type").then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    let len = content_length(&head).unwrap_or(raw.len() - end);
    let body = raw.get(end..end + len).ok_or("truncated body")?.to_vec();
    Ok(Answer { status, content_type, body })
}

fn finish(a: Answer) -> Result<Answer, ClientError> {
    if (200..300).contains(&a.status) {
        return Ok(a);
    }
    let message = if a.content_type.starts_with("application/json") {
        serde_json::from_slice::<Value>(&a.body)
            .ok()
            .and_then(|v| {
                let e = v["error"].as_str().filter(|s| !s.is_empty()).or(v["message"].as_str())?;
                Some(e.to_owned())
            })
            .unwrap_or_default()
    } else {
        String::from_utf8_lossy(&a.body).trim().to_owned()
    };
    Err(ClientError::from_answer(a.status, message))
}

/// The rustls client configuration: our certificate always offered, the
/// server verified against `ca` (or system roots) unless `insecure`.
pub(crate) fn client_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    insecure: bool,
    ca: Option<&str>,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let provider = kes_adapters::tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Config(e.to_string()))?;
    let builder = if insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        let file = ca.map(str::to_owned).unwrap_or_else(|| {
            std::env::var("SSL_CERT_FILE")
                .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".into())
        });
        for c in kes_adapters::tls::load_certs(std::path::Path::new(&file))
            .map_err(ClientError::Certificate)?
        {
            roots.add(c).map_err(|e| ClientError::Certificate(format!("{file}: {e}")))?;
        }
        builder.with_root_certificates(roots)
    };
    let cfg = builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| ClientError::Certificate(format!("certificate and key do not match: {e}")))?;
    Ok(Arc::new(cfg))
}

/// `--insecure`: any server certificate, but the handshake signature is still
/// checked so the connection is at least to the holder of that certificate.
#[derive(Debug)]
struct AcceptAnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("https://kes.example:7000/").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("kes.example", 7000));
        let e = Endpoint::parse("127.0.0.1").unwrap();
        assert_eq!(e.port, 7373);
        assert!(Endpoint::parse("https://h:notaport").is_err());
        assert!(Endpoint::parse("").is_err());
    }

    #[test]
    fn error_mapping() {
        let a = |status, ct: &str, body: &str| Answer {
            status,
            content_type: ct.into(),
            body: body.as_bytes().to_vec(),
        };
        assert!(matches!(
            finish(a(400, "application/json", r#"{"message":"key already exists"}"#)),
            Err(ClientError::KeyExists)
        ));
        assert!(matches!(
            finish(a(
                400,
                "application/json; charset=utf-8",
                r#"{"message":"key does already exist"}"#
            )),
            Err(ClientError::KeyExists)
        ));
        assert!(matches!(
            finish(a(403, "application/json", r#"{"message":"prohibited by policy"}"#)),
            Err(ClientError::NotAllowed)
        ));
        assert!(matches!(
            finish(a(404, "text/plain", "404 page not found\n")),
            Err(ClientError::Api { status: 404, .. })
        ));
        assert!(finish(a(200, "", "")).is_ok());
    }
}
