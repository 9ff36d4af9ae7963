//! Decoding `Transfer-Encoding: chunked` request bodies (RFC 9112 §7.1).
//!
//! Go's net/http sends every body whose length it does not know up front
//! this way (kms-go, and so MinIO, does for import, generate, encrypt,
//! decrypt and HMAC), so the server must accept it. It is also the classic
//! place for request smuggling, so the decoder is strict: sizes are hex
//! digits only and bounded, lines end in CRLF, data is followed by CRLF,
//! and size lines, extensions and trailers have limits. Anything else is an
//! error and the connection is closed.
//!
//! Pure over byte slices: the connection loop feeds it what it has read, so
//! it can be fuzzed and tested without sockets.

use zeroize::Zeroize;

/// Longest chunk-size line (size, extensions and CRLF).
pub const MAX_SIZE_LINE: usize = 1024;
/// Most hex digits in a chunk size (16 fill a u64; leading zeros included).
const MAX_SIZE_DIGITS: usize = 16;
/// Most bytes of trailer fields, CRLFs included.
pub const MAX_TRAILERS: usize = 8 * 1024;

/// Why a chunked body was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkError {
    /// Broken framing (400, close).
    Malformed(&'static str),
    /// A chunk size too large to represent (413, close; nothing to skip).
    TooLarge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, with this many bytes to go.
    Data(u64),
    /// Expecting the CRLF that ends chunk data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
    /// The body is complete.
    Done,
}

/// The state of one chunked body being read.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    decoded: u64,
    trailer_bytes: usize,
    over_limit: bool,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        Self { state: State::Size, decoded: 0, trailer_bytes: 0, over_limit: false }
    }

    /// Whether decoding stopped before a chunk that would take the body
    /// past its limit (413). [`Self::skip`] can then read past the rest.
    pub fn over_limit(&self) -> bool {
        self.over_limit
    }

    /// Reads on through the body without keeping it and without a limit (to
    /// drain a refused body up to its end, so the connection can close as
    /// soon as the client has sent it). Returns the input bytes consumed.
    pub fn skip(&mut self, input: &[u8]) -> Result<usize, ChunkError> {
        self.over_limit = false;
        self.run(input, None, u64::MAX)
    }

    /// Whether the final chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes as much of `input` as possible, appending body bytes to `out`
    /// (never past `limit` bytes in all), and returns how many input bytes
    /// were consumed. Bytes after the end of the body (a pipelined request)
    /// are left unconsumed. Call again with more input until [`is_done`], or
    /// until [`over_limit`] says the body is too large.
    ///
    /// [`is_done`]: Self::is_done
    /// [`over_limit`]: Self::over_limit
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<usize, ChunkError> {
        self.run(input, Some(out), limit as u64)
    }

    fn run(
        &mut self,
        input: &[u8],
        mut out: Option<&mut Vec<u8>>,
        limit: u64,
    ) -> Result<usize, ChunkError> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match self.state {
                State::Done => return Ok(pos),
                State::Size if self.over_limit => return Ok(pos),
                State::Size => {
                    let Some(line) = line(rest, MAX_SIZE_LINE, "chunk size line too long")? else {
                        return Ok(pos);
                    };
                    let size = parse_size_line(line)?;
                    let total = self.decoded.checked_add(size).ok_or(ChunkError::TooLarge)?;
                    if total > limit {
                        // Stop before the line, so that `skip` can go on.
                        self.over_limit = true;
                        return Ok(pos);
                    }
                    pos += line.len() + 2;
                    self.state = if size == 0 { State::Trailers } else { State::Data(size) };
                }
                State::Data(left) => {
                    if rest.is_empty() {
                        return Ok(pos);
                    }
                    let n = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    if let Some(out) = out.as_deref_mut() {
                        append_secret(out, &rest[..n]);
                    }
                    pos += n;
                    self.decoded += n as u64;
                    let left = left - n as u64;
                    self.state = if left == 0 { State::DataEnd } else { State::Data(left) };
                }
                State::DataEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        pos += 2;
                        self.state = State::Size;
                    }
                    [] | [b'\r'] => return Ok(pos),
                    _ => return Err(ChunkError::Malformed("chunk data not followed by CRLF")),
                },
                State::Trailers => {
                    let room = MAX_TRAILERS - self.trailer_bytes;
                    let Some(line) = line(rest, room, "trailers too long")? else {
                        return Ok(pos);
                    };
                    pos += line.len() + 2;
                    self.trailer_bytes += line.len() + 2;
                    if line.is_empty() {
                        self.state = State::Done;
                    } else {
                        check_trailer(line)?;
                    }
                }
            }
        }
    }
}

/// The next CRLF-terminated line of `input` (without the CRLF), `None` if
/// it is not complete yet. A line longer than `max` (CRLF included), or a
/// bare CR or LF in it, is an error.
fn line<'a>(
    input: &'a [u8],
    max: usize,
    too_long: &'static str,
) -> Result<Option<&'a [u8]>, ChunkError> {
    let window = &input[..input.len().min(max)];
    match window.iter().position(|&b| b == b'\n') {
        Some(0) => Err(ChunkError::Malformed("bare LF in chunked body")),
        Some(i) if window[i - 1] == b'\r' => {
            let line = &window[..i - 1];
            if line.contains(&b'\r') {
                return Err(ChunkError::Malformed("bare CR in chunked body"));
            }
            Ok(Some(line))
        }
        Some(_) => Err(ChunkError::Malformed("bare LF in chunked body")),
        None if window.len() >= max => Err(ChunkError::Malformed(too_long)),
        None => Ok(None),
    }
}

/// `1*HEXDIG [ BWS ";" ext ]`: the size, extensions ignored but checked to
/// be visible characters, spaces or tabs.
fn parse_size_line(line: &[u8]) -> Result<u64, ChunkError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(ChunkError::Malformed("invalid chunk size"));
    }
    if digits > MAX_SIZE_DIGITS {
        return Err(ChunkError::TooLarge);
    }
    let mut size = 0u64;
    for &b in &line[..digits] {
        let d = (b as char).to_digit(16).unwrap_or(0);
        size = size << 4 | u64::from(d);
    }
    let ext = &line[digits..];
    let ext_start = ext.iter().position(|&b| b != b' ' && b != b'\t');
    match ext_start {
        None if ext.is_empty() => {}
        Some(i) if ext[i] == b';' => {
            if ext.iter().any(|&b| b != b'\t' && !(0x20..0x7f).contains(&b)) {
                return Err(ChunkError::Malformed("invalid chunk extension"));
            }
        }
        _ => return Err(ChunkError::Malformed("invalid chunk size")),
    }
    Ok(size)
}

/// A trailer field must look like a header field; its value is ignored.
fn check_trailer(line: &[u8]) -> Result<(), ChunkError> {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return Err(ChunkError::Malformed("invalid trailer field"));
    };
    let name_ok = colon > 0 && line[..colon].iter().all(|&b| is_tchar(b));
    let value_ok = line[colon + 1..].iter().all(|&b| b == b'\t' || b >= 0x20 && b != 0x7f);
    if name_ok && value_ok {
        Ok(())
    } else {
        Err(ChunkError::Malformed("invalid trailer field"))
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Appends to a body that may hold plaintexts or keys: when `out` must grow,
/// the old buffer is wiped before it is freed, so no copy is left behind.
fn append_secret(out: &mut Vec<u8>, data: &[u8]) {
    let needed = out.len() + data.len();
    if needed > out.capacity() {
        let mut bigger = Vec::with_capacity(needed.max(out.capacity() * 2).max(256));
        bigger.extend_from_slice(out);
        out.zeroize();
        *out = bigger;
    }
    out.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes, as a socket delivers
    /// them. Returns the body and the unconsumed rest.
    fn feed(input: &[u8], step: usize, limit: usize) -> Result<(Vec<u8>, Vec<u8>), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut consumed = 0;
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            let n = d.decode(&buf, &mut out, limit)?;
            buf.drain(..n);
            consumed += n;
            if d.over_limit() {
                return Err(ChunkError::TooLarge);
            }
            if d.is_done() {
                break;
            }
        }
        assert!(d.is_done(), "incomplete");
        Ok((out, input[consumed..].to_vec()))
    }

    #[test]
    fn go_style_bodies_in_any_split() {
        let body = b"18\r\n{\"plaintext\":\"aGVsbG8=\",\r\n10\r\n\"context\":null}\n\r\n0\r\n\r\nGET /next";
        for step in 1..body.len() {
            let (out, rest) = feed(body, step, 1 << 20).unwrap();
            assert_eq!(out, b"{\"plaintext\":\"aGVsbG8=\",\"context\":null}\n");
            assert_eq!(rest, b"GET /next");
        }
    }

    #[test]
    fn extensions_trailers_and_leading_zeros() {
        let body = b"0004;name=value ; x\r\nabcd\r\n000\r\nX-Sum: 1\r\nY: \r\n\r\n";
        assert_eq!(feed(body, 3, 100).unwrap().0, b"abcd");
        assert_eq!(feed(b"A\r\n0123456789\r\n0\r\n\r\n", 64, 100).unwrap().0, b"0123456789");
    }

    #[test]
    fn limit_is_on_the_decoded_size() {
        let ok = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(feed(ok, 64, 5).unwrap().0, b"abcde");
        assert_eq!(feed(ok, 64, 4), Err(ChunkError::TooLarge));
        // Refused when the size line arrives, before any of its data; the
        // rest can then be skipped to the end of the body.
        let mut d = ChunkedDecoder::new();
        let body = b"3\r\nabc\r\nffffff\r\n";
        let mut out = Vec::new();
        assert_eq!(d.decode(body, &mut out, 1 << 20), Ok(8));
        assert!(d.over_limit() && out == b"abc");
        let mut rest = body[8..].to_vec();
        rest.extend(vec![b'x'; 0xffffff]);
        rest.extend_from_slice(b"\r\n0\r\n\r\nGET");
        assert_eq!(d.skip(&rest), Ok(rest.len() - 3));
        assert!(d.is_done() && !d.over_limit());
        let mut d = ChunkedDecoder::new();
        let huge = b"ffffffffffffffffff\r\n";
        assert_eq!(d.decode(huge, &mut Vec::new(), usize::MAX), Err(ChunkError::TooLarge));
    }

    #[test]
    fn malformed_framing() {
        let bad: &[&[u8]] = &[
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"5;a\x01\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\nno colon\r\n\r\n",
            b"5\r\nhello\r\n0\r\n folded: x\r\n\r\n",
            b"5\r\nhello\r\n0\r\n: x\r\n\r\n",
            b"5\r\r\nhello\r\n0\r\n\r\n",
        ];
        for b in bad {
            let mut d = ChunkedDecoder::new();
            let r = d.decode(b, &mut Vec::new(), 1 << 20);
            assert!(
                matches!(r, Err(ChunkError::Malformed(_))),
                "{:?}: {r:?}",
                String::from_utf8_lossy(b)
            );
        }
    }

    #[test]
    fn lines_and_trailers_are_bounded() {
        let mut d = ChunkedDecoder::new();
        let long_ext = format!("5;{}", "a".repeat(MAX_SIZE_LINE));
        let r = d.decode(long_ext.as_bytes(), &mut Vec::new(), 1 << 20);
        assert_eq!(r, Err(ChunkError::Malformed("chunk size line too long")));
        let mut d = ChunkedDecoder::new();
        let mut body = b"0\r\n".to_vec();
        for i in 0..1000 {
            body.extend_from_slice(format!("X-{i}: {}\r\n", "v".repeat(20)).as_bytes());
        }
        let r = d.decode(&body, &mut Vec::new(), 1 << 20);
        assert_eq!(r, Err(ChunkError::Malformed("trailers too long")));
    }

    #[test]
    fn growth_keeps_content() {
        let mut out = Vec::new();
        for i in 0..1000u32 {
            append_secret(&mut out, &i.to_le_bytes());
        }
        assert_eq!(out.len(), 4000);
        assert_eq!(&out[3996..], &999u32.to_le_bytes());
    }
}
