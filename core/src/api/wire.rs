//! Requests and responses as the core sees them, and the JSON helpers that
//! mirror Go's decoder (case-insensitive field names, std base64 bytes).

use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::{Method, StatusCode};
use serde_json::{Map, Value};

/// A parsed HTTP request; the adapter owns framing and limits.
#[derive(Debug)]
pub struct Request {
    /// The request method.
    pub method: Method,
    /// The request target's path, still percent-encoded.
    pub path: String,
    /// The query string without `?`, if any.
    pub query: Option<String>,
    /// The body. Empty when the route takes none.
    pub body: Vec<u8>,
    /// True when the declared body exceeded the route's limit and was not read.
    pub body_too_large: bool,
    /// The client's IP, for audit events.
    pub peer: Option<IpAddr>,
    /// When the adapter began receiving the request (its head's first
    /// byte). Audit durations count from here, as KES's do from the start
    /// of the request; without it they count from `handle_request`.
    pub received: Option<std::time::Instant>,
}

impl Request {
    /// A request with no body.
    pub fn new(method: Method, target: &str) -> Self {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (target.to_owned(), None),
        };
        Self {
            method,
            path,
            query,
            body: Vec::new(),
            body_too_large: false,
            peer: None,
            received: None,
        }
    }

    /// A request from an owned target (path and query), reusing its buffer.
    pub fn from_target(method: Method, mut target: String) -> Self {
        let query = target.find('?').map(|i| {
            let q = target[i + 1..].to_owned();
            target.truncate(i);
            q
        });
        Self {
            method,
            path: target,
            query,
            body: Vec::new(),
            body_too_large: false,
            peer: None,
            received: None,
        }
    }

    /// The same request with a body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

/// What a log-stream response subscribes to; the adapter does the streaming.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStream {
    /// `/v1/log/audit`.
    Audit,
    /// `/v1/log/error`.
    Error,
}

/// A complete HTTP response (or the head of a log stream).
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: StatusCode,
    /// Headers besides Content-Length (Content-Type, Location, Accept, ...).
    pub headers: Vec<(&'static str, std::borrow::Cow<'static, str>)>,
    /// The body; may hold secrets (data keys), so adapters drop it promptly.
    pub body: Vec<u8>,
    /// Set for log streams: after the head, the adapter streams events.
    pub stream: Option<LogStream>,
    /// The version of a rotated key an operation sealed or opened under
    /// (for its audit record; never sent).
    pub key_version: Option<u32>,
}

pub(crate) const JSON: &str = "application/json";
pub(crate) const NDJSON: &str = "application/x-ndjson";

impl Response {
    /// A response with a body and content type.
    pub fn with(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: vec![("Content-Type", std::borrow::Cow::Borrowed(content_type))],
            body,
            stream: None,
            key_version: None,
        }
    }

    /// A 200 JSON response.
    pub fn json(value: &Value) -> Self {
        Self::with(StatusCode::OK, JSON, value.to_string().into_bytes())
    }

    /// A response with no body.
    pub fn empty(status: StatusCode) -> Self {
        Self { status, headers: Vec::new(), body: Vec::new(), stream: None, key_version: None }
    }

    /// The `{"message": ...}` error body every KES client understands.
    pub fn error(status: StatusCode, message: &str) -> Self {
        let body = serde_json::json!({ "message": message }).to_string().into_bytes();
        Self::with(status, JSON, body)
    }

    /// The value of a header, if set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_ref())
    }
}

/// Looks up a JSON object field the way Go's decoder does: an exact match
/// first, then a case-insensitive one (the seed-era client sends `Allow`).
pub fn field_ci<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

/// Why a JSON body was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadBody;

/// Parses a body as a JSON object; an empty body is an empty object.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, BadBody> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    // Go reads only the first JSON value and ignores what follows.
    let mut stream = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    match stream.next() {
        Some(Ok(Value::Object(map))) => Ok(map),
        _ => Err(BadBody),
    }
}

/// A base64 `[]byte` field: absent or null is empty; CR/LF are tolerated.
pub fn bytes_field(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, BadBody> {
    match field_ci(obj, name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => decode_b64(s),
        Some(_) => Err(BadBody),
    }
}

/// A string field: absent or null is empty.
pub fn str_field<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a str, BadBody> {
    match field_ci(obj, name) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(BadBody),
    }
}

fn decode_b64(s: &str) -> Result<Vec<u8>, BadBody> {
    if s.contains(['\r', '\n']) {
        let cleaned: String = s.chars().filter(|c| *c != '\r' && *c != '\n').collect();
        return STANDARD.decode(cleaned).map_err(|_| BadBody);
    }
    STANDARD.decode(s).map_err(|_| BadBody)
}

/// Reads the named string fields of a JSON object body in one pass, without
/// building a `Value` tree: the hot path of generate/encrypt/decrypt/hmac.
/// Names match case-insensitively and the last occurrence wins, as in Go's
/// decoder; unknown fields are skipped; an empty body has no fields; bytes
/// after the object are ignored. `null` counts as absent.
pub fn string_fields<'a, const N: usize>(
    body: &'a [u8],
    names: [&str; N],
) -> Result<[Option<std::borrow::Cow<'a, str>>; N], BadBody> {
    use serde::de::Deserializer as _;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(std::array::from_fn(|_| None));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    de.deserialize_map(fields::ObjectVisitor { names }).map_err(|_| BadBody)
}

/// Decodes a base64 field read by [`string_fields`] (absent: empty).
pub fn b64_field(v: Option<&str>) -> Result<Vec<u8>, BadBody> {
    match v {
        None => Ok(Vec::new()),
        Some(s) => decode_b64(s),
    }
}

mod fields {
    use std::borrow::Cow;
    use std::fmt;

    use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

    pub(super) struct ObjectVisitor<'n, const N: usize> {
        pub names: [&'n str; N],
    }

    impl<'de, const N: usize> Visitor<'de> for ObjectVisitor<'_, N> {
        type Value = [Option<Cow<'de, str>>; N];

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out: Self::Value = std::array::from_fn(|_| None);
            while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                match self.names.iter().position(|n| n.eq_ignore_ascii_case(&key)) {
                    Some(i) => out[i] = map.next_value::<Option<Text<'de>>>()?.map(|t| t.0),
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(out)
        }
    }

    /// A JSON string, borrowed from the input when it has no escapes.
    struct Text<'a>(Cow<'a, str>);

    impl<'de> Deserialize<'de> for Text<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Text<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string")
                }
                fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                    Ok(Text(Cow::Borrowed(v)))
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                    Ok(Text(Cow::Owned(v.to_owned())))
                }
            }
            d.deserialize_str(V)
        }
    }
}

/// Standard base64 with padding.
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_fields_agree_with_the_value_path() {
        let body = br#"{"Context":"aGk=","x":{"deep":[1,2]},"plaintext":null} trailing"#;
        let [ctx, pt, missing] = string_fields(body, ["context", "plaintext", "nope"]).unwrap();
        assert_eq!(b64_field(ctx.as_deref()).unwrap(), b"hi");
        assert!(pt.is_none() && missing.is_none());
        assert!(string_fields(b"[1]", ["a"]).is_err());
        assert!(string_fields(br#"{"a":1}"#, ["a"]).is_err(), "a number is not bytes");
        assert!(string_fields(b"  ", ["a"]).unwrap()[0].is_none());
        let [last] = string_fields(br#"{"a":"eA==","A":"eQ=="}"#, ["a"]).unwrap();
        assert_eq!(last.as_deref(), Some("eQ=="), "the last occurrence wins, as in Go");
    }

    #[test]
    fn go_style_decoding() {
        let obj = parse_object(br#"{"Context":"aGk=","x":1} trailing"#).unwrap();
        assert_eq!(bytes_field(&obj, "context").unwrap(), b"hi");
        assert_eq!(bytes_field(&obj, "missing").unwrap(), b"");
        assert!(parse_object(b"[1]").is_err());
        assert!(parse_object(b"{").is_err());
        assert!(parse_object(b"").unwrap().is_empty());
        let obj = parse_object(br#"{"context":"aG\nk="}"#).unwrap();
        assert_eq!(bytes_field(&obj, "context").unwrap(), b"hi");
        let obj = parse_object(br#"{"context":"aGk-"}"#).unwrap();
        assert!(bytes_field(&obj, "context").is_err());
    }
}
