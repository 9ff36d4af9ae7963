//! The stored form of a key value sealed at rest by an HSM (`hsm:` in the
//! config, an extension of KES): one JSON object naming the HSM key that
//! sealed it, the nonce, and the AES-256-GCM output (ciphertext and tag).
//!
//! ```json
//! {"kes-rs.hsm":1,"key":"kes-wrap","iv":"<base64, 12 bytes>","sealed":"<base64>"}
//! ```
//!
//! The associated data is the key's store name, so a value copied to
//! another name does not open. Sealing and unsealing happen in the HSM
//! (the adapters); the core only reads envelopes to say clearly why one
//! cannot be used when no HSM is configured.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// The field that marks an envelope (no KES value or ring has it).
pub const MARK: &str = "kes-rs.hsm";

/// A sealed value, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The label of the HSM key that sealed it.
    pub key: String,
    /// The GCM nonce.
    pub iv: [u8; 12],
    /// Ciphertext and 16-byte tag.
    pub sealed: Vec<u8>,
}

impl Envelope {
    /// The stored bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::json!({
            MARK: 1,
            "key": self.key,
            "iv": STANDARD.encode(self.iv),
            "sealed": STANDARD.encode(&self.sealed),
        })
        .to_string()
        .into_bytes()
    }

    /// `None` when `value` is not an envelope (a KES key value or a ring,
    /// written before `hsm:` was set); `Some(Err)` when it is one but
    /// damaged.
    pub fn decode(value: &[u8]) -> Option<Result<Self, &'static str>> {
        if !is_envelope(value) {
            return None;
        }
        let v: serde_json::Value = match serde_json::from_slice(value.trim_ascii()) {
            Ok(v) => v,
            Err(_) => return Some(Err("sealed value is not valid JSON")),
        };
        let b64 = |f: &str| v.get(f).and_then(|s| s.as_str()).and_then(|s| STANDARD.decode(s).ok());
        Some((|| {
            if v.get(MARK).and_then(|m| m.as_u64()) != Some(1) {
                return Err("sealed value of an unknown format version");
            }
            let key = v.get("key").and_then(|k| k.as_str()).ok_or("sealed value names no key")?;
            let iv = b64("iv").and_then(|iv| <[u8; 12]>::try_from(iv).ok()).ok_or("bad nonce")?;
            let sealed = b64("sealed").filter(|s| s.len() >= 16).ok_or("bad sealed bytes")?;
            Ok(Self { key: key.to_owned(), iv, sealed })
        })())
    }
}

/// Whether a stored value is an envelope (cheap: no parsing).
pub fn is_envelope(value: &[u8]) -> bool {
    let t = value.trim_ascii();
    const QUOTED: &[u8] = b"\"kes-rs.hsm\"";
    t.first() == Some(&b'{') && t.windows(QUOTED.len()).any(|w| w == QUOTED)
}

/// The associated data binding a sealed value to its store name.
pub fn aad(name: &str) -> Vec<u8> {
    let mut a = b"kes-rs.hsm/1\n".to_vec();
    a.extend_from_slice(name.as_bytes());
    a
}

/// Why a stored value that does not decode as a key cannot be used, when
/// it is an envelope read by a server without `hsm:` (else `None`).
pub fn explain(value: &[u8]) -> Option<String> {
    match Envelope::decode(value)? {
        Ok(e) => Some(format!(
            "it is sealed by the HSM key '{}' and this server has no hsm: section",
            e.key
        )),
        Err(why) => Some(why.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_detection() {
        let e = Envelope { key: "kes-wrap".into(), iv: [7; 12], sealed: vec![1; 48] };
        let bytes = e.encode();
        assert!(is_envelope(&bytes));
        assert_eq!(Envelope::decode(&bytes), Some(Ok(e)));
        assert_eq!(Envelope::decode(br#"{"bytes":"AAAA"}"#), None);
        assert_eq!(Envelope::decode(b"CgRhYmNk"), None);
        assert!(!is_envelope(br#"{"kes-rs.key-ring":1}"#));
        assert!(matches!(Envelope::decode(br#"{"kes-rs.hsm":2}"#), Some(Err(_))));
        assert!(explain(&bytes).unwrap().contains("'kes-wrap'"));
        assert_ne!(aad("a"), aad("b"));
    }
}
