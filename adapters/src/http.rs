//! HTTP/1.1 framing: request heads in (httparse), response heads out.
//! Pure functions over bytes, so they can be fuzzed without sockets.

use std::io::Write as _;

use http::Method;
use kes_core::Response;

/// Largest request head accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most headers accepted.
const MAX_HEADERS: usize = 64;

/// The parts of a request head the server uses.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    /// Method.
    pub method: Method,
    /// Request target (path and query).
    pub target: String,
    /// Declared body length.
    pub content_length: usize,
    /// Whether the client asked to close after this request.
    pub close: bool,
    /// Values of the TLS-proxy certificate header (only collected when asked).
    pub forwarded_cert: Vec<String>,
    /// `X-Forwarded-For` (only collected with `forwarded_cert`).
    pub forwarded_for: Option<String>,
}

/// Why a head was refused; each maps to a status and closes the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Malformed request line or headers (400).
    Malformed(&'static str),
    /// Head larger than [`MAX_HEAD`] or too many headers (431).
    TooLarge,
    /// Chunked or otherwise unsupported body framing (411).
    LengthRequired,
}

/// Parses a head at the start of `buf`. `Ok(None)`: incomplete, read more.
/// `proxy_header` names the forwarded-certificate header to collect, if any.
pub fn parse_head(
    buf: &[u8],
    proxy_header: Option<&str>,
) -> Result<Option<(Head, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > MAX_HEAD { Err(HeadError::TooLarge) } else { Ok(None) };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed("malformed request head")),
    };
    if n > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| HeadError::Malformed("invalid method"))?;
    let target = req.path.unwrap_or("").to_owned();
    if !target.starts_with('/') {
        return Err(HeadError::Malformed("request target must be a path"));
    }
    let http10 = req.version == Some(0);
    let mut close = http10;
    let mut content_length = None;
    let mut forwarded_cert = Vec::new();
    let mut forwarded_for = None;
    for h in req.headers.iter() {
        if let Some(name) = proxy_header {
            if h.name.eq_ignore_ascii_case(name) {
                forwarded_cert.push(String::from_utf8_lossy(h.value).into_owned());
                continue;
            }
            if h.name.eq_ignore_ascii_case("x-forwarded-for") {
                forwarded_for = Some(String::from_utf8_lossy(h.value).into_owned());
                continue;
            }
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<usize>().ok());
            match (content_length, v) {
                (_, None) => return Err(HeadError::Malformed("invalid Content-Length")),
                (Some(a), Some(b)) if a != b => {
                    return Err(HeadError::Malformed("conflicting Content-Length"))
                }
                (_, Some(b)) => content_length = Some(b),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HeadError::LengthRequired);
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.contains("close") {
                close = true;
            } else if v.contains("keep-alive") {
                close = false;
            }
        }
    }
    let content_length = content_length.unwrap_or(0);
    Ok(Some((Head { method, target, content_length, close, forwarded_cert, forwarded_for }, n)))
}

/// Appends the head of a response to `out`.
pub fn write_head(out: &mut Vec<u8>, resp: &Response, close: bool) {
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        resp.status.as_u16(),
        resp.status.canonical_reason().unwrap_or("")
    );
    for (k, v) in &resp.headers {
        let _ = write!(out, "{k}: {v}\r\n");
    }
    if resp.stream.is_some() {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    } else {
        let _ = write!(out, "Content-Length: {}\r\n", resp.body.len());
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A simple error response for framing failures (before the core sees anything).
pub fn framing_error(e: &HeadError) -> Response {
    use http::StatusCode as S;
    match e {
        HeadError::Malformed(m) => Response::error(S::BAD_REQUEST, m),
        HeadError::TooLarge => {
            Response::error(S::REQUEST_HEADER_FIELDS_TOO_LARGE, "request header too large")
        }
        HeadError::LengthRequired => {
            Response::error(S::LENGTH_REQUIRED, "request body must have a Content-Length")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_detects_pipelining() {
        let buf = b"PUT /v1/key/generate/k HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}GET /v1/status HTTP/1.1\r\n\r\n";
        let (h, n) = parse_head(buf, None).unwrap().unwrap();
        assert_eq!(h.method, Method::PUT);
        assert_eq!(h.content_length, 2);
        assert!(!h.close);
        let (h2, _) = parse_head(&buf[n + 2..], None).unwrap().unwrap();
        assert_eq!(h2.target, "/v1/status");
    }

    #[test]
    fn refuses_bad_heads() {
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", None).unwrap_err(),
            HeadError::LengthRequired
        );
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", None),
            Err(HeadError::Malformed(_))
        ));
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost", None).unwrap().is_none());
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(parse_head(big.as_bytes(), None).unwrap_err(), HeadError::TooLarge);
        assert!(parse_head(b"GET / HTTP/1.0\r\n\r\n", None).unwrap().unwrap().0.close);
    }
}
