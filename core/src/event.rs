//! Audit and error events, and their JSON encodings (observability.md).
//!
//! Events never carry key material, plaintexts or request bodies: only the
//! path, the caller's identity, the status and the duration.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use crate::identity::Identity;
use crate::time::UnixTime;

/// Something the adapter should log or stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// One request and its outcome.
    Audit(AuditEvent),
    /// An operational problem (key store failure, malformed key, ...).
    Error(ErrorEvent),
}

/// An audit record: who asked for what, and what they got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// When the request arrived.
    pub time: UnixTime,
    /// The client's IP, if known.
    pub ip: Option<IpAddr>,
    /// The request path (no query).
    pub path: String,
    /// The caller, if identified.
    pub identity: Option<Identity>,
    /// The HTTP status.
    pub code: u16,
    /// Time from arrival to response.
    pub elapsed: Duration,
    /// The version of a rotated key the request sealed or opened under (an
    /// addition to KES's record, `response.key_version`; absent for keys
    /// never rotated, so their records are KES's byte for byte).
    pub key_version: Option<u32>,
}

impl AuditEvent {
    /// One JSON line (without newline). `response.time` is nanoseconds
    /// truncated to microseconds, which both Go SDKs decode correctly.
    pub fn to_json(&self) -> String {
        let mut s = String::with_capacity(200);
        let _ = write!(s, r#"{{"time":"{}","request":{{"#, self.time);
        if let Some(ip) = self.ip {
            let _ = write!(s, r#""ip":"{ip}","#);
        }
        s.push_str(r#""path":"#);
        s.push_str(&serde_json::Value::from(self.path.as_str()).to_string());
        if let Some(id) = self.identity {
            let _ = write!(s, r#","identity":"{id}""#);
        }
        let nanos = (self.elapsed.as_micros() as u64).saturating_mul(1000);
        let _ = write!(s, r#"}},"response":{{"code":{},"time":{}"#, self.code, nanos);
        if let Some(v) = self.key_version {
            let _ = write!(s, r#","key_version":{v}"#);
        }
        s.push_str("}}");
        s
    }
}

/// An error record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorEvent {
    /// When it happened.
    pub time: UnixTime,
    /// What happened; never contains secrets.
    pub message: String,
}

impl ErrorEvent {
    /// One JSON line (without newline): `{"message":"..."}` as KES streams it.
    pub fn to_json(&self) -> String {
        serde_json::json!({ "message": format!("{} {}", self.time, self.message) }).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_json_shape() {
        let e = AuditEvent {
            time: UnixTime::from_parts(1_648_030_633, 261_541_000),
            ip: Some("10.1.2.3".parse().unwrap()),
            path: "/v1/key/generate/my-key".into(),
            identity: None,
            code: 200,
            key_version: None,
            elapsed: Duration::from_nanos(1_245_678),
        };
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["request"]["ip"], "10.1.2.3");
        assert_eq!(v["response"]["time"], 1_245_000);
        assert_eq!(v["time"], "2022-03-23T10:17:13.261541Z");
        assert!(v["request"].get("identity").is_none());
    }
}
