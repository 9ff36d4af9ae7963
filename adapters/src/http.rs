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
    /// How the body is framed.
    pub body: BodyFraming,
    /// Whether the client asked to close after this request.
    pub close: bool,
    /// Values of the TLS-proxy certificate header (only collected when asked).
    pub forwarded_cert: Vec<String>,
    /// `X-Forwarded-For` (only collected with `forwarded_cert`).
    pub forwarded_for: Option<String>,
}

/// How a request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// `Content-Length` bytes (0 without the header).
    Length(usize),
    /// `Transfer-Encoding: chunked` (see [`crate::chunked`]).
    Chunked,
}

/// Why a head was refused; each maps to a status and closes the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Malformed request line or headers (400).
    Malformed(&'static str),
    /// Head larger than [`MAX_HEAD`] or too many headers (431).
    TooLarge,
    /// A transfer coding other than `chunked` (501).
    UnsupportedCoding,
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
    let mut chunked = false;
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
            let v = parse_content_length(h.value)?;
            if content_length.is_some_and(|a| a != v) {
                return Err(HeadError::Malformed("conflicting Content-Length"));
            }
            content_length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            add_transfer_encoding(h.value, &mut chunked)?;
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.contains("close") {
                close = true;
            } else if v.contains("keep-alive") {
                close = false;
            }
        }
    }
    // Never guess between two framings: that is how requests are smuggled.
    let body = match (chunked, content_length) {
        (true, Some(_)) => {
            return Err(HeadError::Malformed("both Transfer-Encoding and Content-Length"))
        }
        (true, None) if http10 => {
            return Err(HeadError::Malformed("Transfer-Encoding in an HTTP/1.0 request"))
        }
        (true, None) => BodyFraming::Chunked,
        (false, n) => BodyFraming::Length(n.unwrap_or(0)),
    };
    Ok(Some((Head { method, target, body, close, forwarded_cert, forwarded_for }, n)))
}

/// Longest Content-Length accepted, in digits (larger bodies are refused
/// anyway; this keeps the arithmetic in range).
const MAX_LENGTH_DIGITS: usize = 18;

/// `Content-Length = 1*DIGIT` (RFC 9110 §8.6): no sign, no spaces inside,
/// no list. Optional whitespace around the value is allowed.
fn parse_content_length(value: &[u8]) -> Result<usize, HeadError> {
    let v = trim_ows(value);
    if v.is_empty() || v.len() > MAX_LENGTH_DIGITS || !v.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::Malformed("invalid Content-Length"));
    }
    Ok(v.iter().fold(0usize, |n, d| n * 10 + usize::from(d - b'0')))
}

/// Adds one Transfer-Encoding field to what earlier ones said. Only
/// `chunked` is implemented, and only once: any other coding is 501, a
/// second `chunked` (or an empty field) is malformed.
fn add_transfer_encoding(value: &[u8], chunked: &mut bool) -> Result<(), HeadError> {
    let mut any = false;
    for coding in value.split(|&b| b == b',').map(trim_ows).filter(|c| !c.is_empty()) {
        any = true;
        if !coding.eq_ignore_ascii_case(b"chunked") {
            return Err(HeadError::UnsupportedCoding);
        }
        if *chunked {
            return Err(HeadError::Malformed("chunked applied more than once"));
        }
        *chunked = true;
    }
    if !any {
        return Err(HeadError::Malformed("empty Transfer-Encoding"));
    }
    Ok(())
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(v.len());
    let end = v.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |i| i + 1);
    &v[start..end]
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
        HeadError::UnsupportedCoding => Response::error(
            S::NOT_IMPLEMENTED,
            "transfer coding not supported: only chunked is implemented",
        ),
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
        assert_eq!(h.body, BodyFraming::Length(2));
        assert!(!h.close);
        let (h2, _) = parse_head(&buf[n + 2..], None).unwrap().unwrap();
        assert_eq!(h2.target, "/v1/status");
    }

    #[test]
    fn refuses_bad_heads() {
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", None),
            Err(HeadError::Malformed(_))
        ));
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost", None).unwrap().is_none());
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(parse_head(big.as_bytes(), None).unwrap_err(), HeadError::TooLarge);
        assert!(parse_head(b"GET / HTTP/1.0\r\n\r\n", None).unwrap().unwrap().0.close);
    }

    fn framing(head: &str) -> Result<BodyFraming, HeadError> {
        let raw = format!("PUT /v1/key/generate/k HTTP/1.1\r\nHost: x\r\n{head}\r\n");
        parse_head(raw.as_bytes(), None).map(|h| h.unwrap().0.body)
    }

    #[test]
    fn body_framing() {
        use BodyFraming::*;
        assert_eq!(framing(""), Ok(Length(0)));
        assert_eq!(framing("Content-Length: 12\r\n"), Ok(Length(12)));
        assert_eq!(framing("Content-Length:  7 \r\nContent-Length: 7\r\n"), Ok(Length(7)));
        assert_eq!(framing("Transfer-Encoding: chunked\r\n"), Ok(Chunked));
        assert_eq!(framing("Transfer-Encoding: Chunked\r\n"), Ok(Chunked));
        for bad in ["+0", "-1", "0x10", "1 2", "1,1", "", "١", "99999999999999999999", "1e3"] {
            let r = framing(&format!("Content-Length: {bad}\r\n"));
            assert_eq!(r, Err(HeadError::Malformed("invalid Content-Length")), "{bad:?}");
        }
        assert!(matches!(
            framing("Content-Length: 1\r\nContent-Length: 2\r\n"),
            Err(HeadError::Malformed(_))
        ));
        for coding in ["gzip", "gzip, chunked", "identity", "chunked;q=1", "x-custom"] {
            let r = framing(&format!("Transfer-Encoding: {coding}\r\n"));
            assert_eq!(r, Err(HeadError::UnsupportedCoding), "{coding}");
        }
        for bad in [
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked, chunked\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: \r\n",
        ] {
            assert!(matches!(framing(bad), Err(HeadError::Malformed(_))), "{bad:?}");
        }
        let http10 = b"PUT / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(parse_head(http10, None), Err(HeadError::Malformed(_))));
    }
}
